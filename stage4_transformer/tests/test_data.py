"""Stage-4 data utilities: Multi30k loading, the joint BPE, token-based batches, padding."""
import gzip

import pytest
import torch

from scripts.cli import UserError
from scripts.data import DataFileError
from stage4_transformer.utils.data import (
    MULTI30K_SPLITS,
    ParallelCorpus,
    collate_translation,
    load_multi30k,
    token_batches,
    train_joint_tokenizer,
)
from stage4_transformer.utils.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, SubwordTokenizer


@pytest.fixture(scope="module")
def corpus():
    return load_multi30k("en", "fr")


@pytest.fixture(scope="module")
def tok(corpus):
    return train_joint_tokenizer(corpus, 2000)


def test_multi30k_splits_have_the_published_sizes(corpus):
    sizes = {s: len(corpus.splits[s][0]) for s in MULTI30K_SPLITS}
    assert sizes == {"train": 29000, "val": 1014, "test_2016_flickr": 1000, "test_2017_flickr": 1000,
                     "test_2017_mscoco": 461}
    assert all(len(a) == len(b) for a, b in corpus.splits.values())
    assert corpus.splits["val"][1][0].startswith("Un groupe d'hommes")  # French target side


def test_bpe_round_trips_ordinary_french_and_keeps_specials_first(corpus, tok):
    assert [tok.id_to_token(i) for i in range(len(SPECIALS))] == SPECIALS
    sents = [s.strip() for s in corpus.splits["val"][1][:200]]
    assert all(tok.decode(tok.encode(s)) == s for s in sents)
    assert tok.decode([BOS_ID, *tok.encode("Un homme âgé."), EOS_ID, *tok.encode("ignored")]) == "Un homme âgé."
    assert tok.unknown_chars("a 你 b") == ["你"]
    again = SubwordTokenizer.from_str(tok.to_str())
    assert again.encode("Deux chiens jouent.") == tok.encode("Deux chiens jouent.")


def test_the_tokenizer_learns_from_the_training_split_only():
    """Vocab built on val/test data would leak them into the model: a word seen only in val is not a token."""
    train = (["a man rides a horse ."] * 50, ["un homme monte à cheval ."] * 50)
    val = (["zyxwv zyxwv zyxwv"] * 500, ["qpqpq qpqpq"] * 500)
    c = ParallelCorpus("en", "fr", {"train": train, "val": val})
    vocab = train_joint_tokenizer(c, 64).tk.get_vocab()
    assert "▁cheval" in vocab or "▁homme" in vocab
    assert not any("zyx" in t or "qpq" in t for t in vocab)


def test_vocab_size_too_small_is_a_one_line_error(corpus):
    with pytest.raises(UserError, match="--vocab_size must be at least"):
        train_joint_tokenizer(corpus, 10)


def test_token_batches_cover_every_sentence_once_within_the_budget():
    src = [3, 9, 4, 12, 7, 5, 5, 30, 2, 8] * 20
    tgt = [4, 8, 5, 10, 9, 6, 4, 25, 3, 7] * 20
    batches = token_batches(src, tgt, max_tokens=60, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(src)))
    assert all(max(max(src[i], tgt[i]) for i in b) * len(b) <= 60 for b in batches)
    assert batches == token_batches(src, tgt, max_tokens=60, seed=1, epoch=0)  # reproducible
    assert batches != token_batches(src, tgt, max_tokens=60, seed=1, epoch=1)  # reshuffled per epoch
    with pytest.raises(UserError, match="--max_tokens 20 is smaller than the longest sentence"):
        token_batches(src, tgt, max_tokens=20, seed=1, epoch=0)


def test_collate_shifts_targets_and_masks_padding():
    b = collate_translation([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]])
    assert b["src"].tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID]]
    assert b["src_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert b["tgt_in"].tolist() == [[BOS_ID, 9, 10, PAD_ID], [BOS_ID, 11, 12, 13]]
    assert b["tgt_out"].tolist() == [[9, 10, EOS_ID, PAD_ID], [11, 12, 13, EOS_ID]]
    assert b["src"].dtype == torch.long and UNK_ID not in b["src"]


@pytest.mark.parametrize("bad", ["latin1", "truncated"])
def test_unreadable_multi30k_files_are_one_line_errors(tmp_path, corpus, bad):
    folder = tmp_path / "multi30k"
    folder.mkdir()
    for s in MULTI30K_SPLITS:
        for lang, side in (("en", 0), ("fr", 1)):
            data = "\n".join(corpus.splits[s][side][:5]) + "\n"
            (folder / f"{s}.{lang}.gz").write_bytes(gzip.compress(data.encode("utf-8")))
    target = folder / "val.fr.gz"
    if bad == "latin1":
        target.write_bytes(gzip.compress("Un café à côté.\n".encode("latin-1")))
    else:
        target.write_bytes(target.read_bytes()[:-12])
    with pytest.raises(DataFileError, match="val.fr.gz"):
        load_multi30k("en", "fr", data_dir=str(tmp_path))
