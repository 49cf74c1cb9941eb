"""Tokenizer, vectorizer, data readers and splits, on real bundled rows."""
import shutil

import numpy as np
import pytest

from scripts.cli import UserError
from stage1_mlp.datasets.sources import BUNDLED, load_for_training, load_split, stratified_folds, stratified_split
from stage1_mlp.datasets.text import add_ngrams, tokenize
from stage1_mlp.datasets.vectorizer import NgramVectorizer

AG_FIXTURE = BUNDLED / "ag_news_format_fixture" / "test_rows.csv"


def test_tokenize_cleans_markup_and_splits_punctuation():
    assert tokenize("Great<br /><br />FILM!! Isn't it... 10/10") == \
        ["great", "film", "!!", "isn't", "it", "...", "10", "/", "10"]
    assert tokenize("costs  #36;10 million") == ["costs", "$", "10", "million"]
    assert add_ngrams(["a", "b", "c"], 2) == ["a", "b", "c", "a b", "b c"]


def test_vocabulary_comes_from_the_fitted_documents_only():
    train = [tokenize("good movie"), tokenize("bad movie"), tokenize("good plot")]
    vec = NgramVectorizer(ngram=2, max_features=100, min_df=1).fit(train)
    assert "zebra" not in vec.index and "good movie" in vec.index
    x = vec.transform([tokenize("zebra good movie zebra")])
    assert set(x.indices) == {vec.index["good"], vec.index["movie"], vec.index["good movie"]}
    # min_df and max_features: the most frequent n-grams survive, ties alphabetically
    vec2 = NgramVectorizer(ngram=1, max_features=2, min_df=2).fit(train)
    assert vec2.vocab == ["good", "movie"]


@pytest.mark.parametrize("weighting", ["tfidf", "count", "binary", "mean"])
def test_weightings(weighting):
    docs = [tokenize(t) for t in ["a a b c", "b c d", "a d d d", "unknownword"]]
    vec = NgramVectorizer(ngram=1, max_features=10, min_df=1, weighting=weighting).fit(docs[:3])
    x = vec.transform(docs)
    dense = x.to_dense()
    assert dense[3].sum() == 0  # no known token: an empty row
    if weighting == "mean":
        np.testing.assert_allclose(dense[:3].sum(1), 1.0, rtol=1e-6)
    else:
        np.testing.assert_allclose(np.linalg.norm(dense[:3], axis=1), 1.0, rtol=1e-6)
    if weighting == "tfidf":  # "a" twice in doc 0 weighs more than "b" once (same df)
        assert dense[0, vec.index["a"]] > dense[0, vec.index["b"]]


def test_nb_scaling_signs_and_state_round_trip():
    docs = [tokenize(t) for t in ["great fun", "great acting", "awful plot", "awful boring"]]
    labels = np.array([1, 1, 0, 0])
    vec = NgramVectorizer(ngram=1, max_features=10, min_df=1, nb_scale=True).fit(docs, labels)
    assert vec.scale[vec.index["great"]] > 0 > vec.scale[vec.index["awful"]]
    again = NgramVectorizer.from_state_dict(vec.state_dict())
    a, b = vec.transform(docs), again.transform(docs)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.values, b.values)
    with pytest.raises(ValueError):
        NgramVectorizer(nb_scale=True, min_df=1).fit(docs, np.array([0, 1, 2, 0]))


def test_bundled_imdb_sample_is_real_and_balanced(monkeypatch):
    monkeypatch.delenv("MY_LLM_DATA", raising=False)  # CI sets it; the bundled sample comes after it
    data = load_split("imdb", "train")
    assert data.sample and len(data.texts) == 4000
    assert np.bincount(data.labels).tolist() == [2000, 2000]
    assert any("<br />" in t for t in data.texts)  # unmodified IMDb text


def test_ag_news_csv_format(tmp_path):
    """The original AG News CSV layout (real rows from the TEST split, see data/README.md)."""
    shutil.copy(AG_FIXTURE, tmp_path / "train.csv")
    (tmp_path / "classes.txt").write_text("World\nSports\nBusiness\nSci/Tech\n")
    data = load_split("ag_news", "train", data_dir=tmp_path)
    assert data.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert np.bincount(data.labels).tolist() == [5, 5, 5, 5]  # labels 1..4 in the file → 0..3
    assert data.texts[0].startswith("Sister of man who died in Vancouver police custody slams chief")
    assert "#36;" in data.texts[1] and "$" in " ".join(tokenize(data.texts[1]))
    (tmp_path / "train.csv").write_text('"5","x","y"\n')
    with pytest.raises(UserError, match="class 1..4"):
        load_split("ag_news", "train", data_dir=tmp_path)


def test_ag_news_without_train_split_points_to_the_cv_protocol(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    (tmp_path / "ag_news").mkdir()
    shutil.copy(AG_FIXTURE, tmp_path / "ag_news" / "test.csv")
    monkeypatch.setenv("MY_LLM_DATA", str(tmp_path))
    with pytest.raises(UserError, match="ag_news_test_cv"):
        load_for_training("ag_news", "standard", 0)
    pool, held = load_for_training("ag_news", "ag_news_test_cv", 2)
    assert len(pool.texts) == 16 and len(held.texts) == 4
    assert not set(pool.texts) & set(held.texts)
    assert sorted(held.labels.tolist()) == [0, 1, 2, 3]


def test_splits_are_stratified_seeded_and_disjoint():
    labels = np.repeat([0, 1, 2, 3], [100, 100, 50, 250])
    tr, va = stratified_split(labels, 0.1, seed=5)
    assert not set(tr) & set(va) and len(tr) + len(va) == len(labels)
    assert np.bincount(labels[va]).tolist() == [10, 10, 5, 25]
    np.testing.assert_array_equal(va, stratified_split(labels, 0.1, seed=5)[1])
    assert not np.array_equal(va, stratified_split(labels, 0.1, seed=6)[1])
    folds = stratified_folds(labels, 5)
    for f in range(5):
        assert np.bincount(labels[folds == f]).tolist() == [20, 20, 10, 50]


@pytest.mark.parametrize("weighting, nb", [("tfidf", True), ("mean", False), ("count", False)])
def test_fit_transform_equals_fit_then_transform_and_reference_vocabulary(weighting, nb):
    data = load_split("imdb", "train")
    docs = [tokenize(t) for t in data.texts[:300]]
    labels = data.labels[:300]
    vec = NgramVectorizer(ngram=2, max_features=3000, min_df=2, weighting=weighting, nb_scale=nb)
    x = vec.fit_transform(docs, labels)
    y = vec.transform(docs)
    np.testing.assert_array_equal(x.indptr, y.indptr)
    np.testing.assert_array_equal(x.indices, y.indices)
    np.testing.assert_array_equal(x.values, y.values)
    # the vocabulary a plain Counter gives: df >= min_df, most frequent first, ties alphabetically
    from collections import Counter
    df = Counter(g for d in docs for g in set(add_ngrams(d, 2)))
    ref = sorted((g for g, c in df.items() if c >= 2), key=lambda g: (-df[g], g))[:3000]
    assert vec.vocab == ref
    np.testing.assert_allclose(vec.idf, np.log(301 / (1 + np.array([df[g] for g in ref]))) + 1, rtol=1e-6)
