"""Stage-5 data: prepare.py's .bin + meta.json, their one-line errors, word counts, random-window batches."""
import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts import REPO_ROOT
from scripts.cli import UserError, run_cli
from scripts.data import DataFileError, DataNotFoundError
from stage5_gpt import prepare
from stage5_gpt.tokenizer import EOT, tokenizer_from_dict
from stage5_gpt.utils.data import (
    count_words,
    get_batch,
    load_meta,
    load_split,
    prepare_dataset,
    read_splits,
    source_files,
)

SHAKESPEARE = REPO_ROOT / "stage2_rnn_lstm" / "data" / "tinyshakespeare" / "input.txt"


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory):
    return prepare_dataset("shakespeare_char", out_dir=tmp_path_factory.mktemp("char"))


@pytest.fixture()
def tiny_ptb(tmp_path):
    """A PTB-shaped folder: a word that occurs only in val/test must not become a BPE token."""
    folder = tmp_path / "ptb"
    folder.mkdir()
    train = SHAKESPEARE.read_text(encoding="utf-8")[:20_000].lower() + " the cat sat on the mat \n\n" * 20
    (folder / "ptb.train.txt").write_text(train, encoding="utf-8")
    with gzip.open(folder / "ptb.valid.txt.gz", "wt", encoding="utf-8") as f:  # .gz is read too
        f.write(" zyxwv zyxwv zyxwv cat \n" * 600)
    (folder / "ptb.test.txt").write_text(" the zyxwv sat \n" * 20, encoding="utf-8")
    return folder


def test_shakespeare_char_is_nanogpts_split_and_decodes_back(char_dir):
    text = SHAKESPEARE.read_text(encoding="utf-8")
    n = int(0.9 * len(text))
    meta = load_meta(char_dir)
    tok = tokenizer_from_dict(meta["tokenizer"])
    train, val = load_split(char_dir, "train"), load_split(char_dir, "val")
    assert isinstance(train, np.memmap) and train.dtype == np.uint16
    assert tok.decode(train) == text[:n] and tok.decode(val) == text[n:]
    assert meta["vocab_size"] == tok.vocab_size == len(set(text[:n]))
    assert meta["splits"]["val"] == {"tokens": len(text) - n, "chars": len(text) - n, "bytes": len(text) - n,
                                     "words": count_words(text[n:])}
    assert meta["source_sha256"] == {"input.txt": hashlib.sha256(SHAKESPEARE.read_bytes()).hexdigest()}
    assert "test" not in meta["splits"] and not (char_dir / "test.bin").exists()
    assert meta["bundled"] == (source_files("shakespeare_char")["all"] == SHAKESPEARE)


def test_words_are_counted_as_stage_2_does():
    """Whitespace tokens + one <eos> per line, empty lines included (stage 2's word-level stream)."""
    assert count_words(" a b \n\nc\n") == 3 + 1 + 2
    assert count_words("") == 0


def _full_data(*names) -> bool:
    root = os.environ.get("MY_LLM_DATA")
    return bool(root) and all((Path(root) / n).is_dir() for n in names)


@pytest.mark.skipif(not _full_data("ptb", "wikitext2"), reason="PTB / WikiText-2 not available (set MY_LLM_DATA)")
def test_real_ptb_and_wikitext_word_counts_match_stage_2():
    """The numbers stage 2's data/README.md reports (its tokens incl. <eos>), so word-level perplexities compare."""
    ptb = read_splits("ptb", source_files("ptb"))
    assert [count_words(ptb[s][0]) for s in ("train", "val", "test")] == [929_589, 73_760, 82_430]
    wiki = read_splits("wikitext2", source_files("wikitext2"))
    assert count_words(wiki["val"][0]) == 217_646


def test_bpe_dataset_learns_on_train_only_and_has_a_test_split(tiny_ptb, tmp_path):
    out = prepare_dataset("ptb", out_dir=tmp_path / "out", data_dir=tiny_ptb, vocab_size=300)
    meta = load_meta(out)
    tok = tokenizer_from_dict(meta["tokenizer"])
    assert set(meta["splits"]) == {"train", "val", "test"} and meta["vocab_size"] == 300
    assert not any(b"zy" in t for t in tok.tokens if t)  # val/test text never shaped the vocabulary
    assert b" the" in tok.tokens
    assert tok.decode(load_split(out, "val")) == " zyxwv zyxwv zyxwv cat \n" * 600
    assert meta["splits"]["val"]["words"] == 600 * 5 and meta["splits"]["test"]["words"] == 20 * 4
    assert set(meta["source_sha256"]) == {"ptb.train.txt", "ptb.valid.txt.gz", "ptb.test.txt"}


def test_a_prepared_folder_is_reused_only_when_sources_and_settings_match(tiny_ptb, tmp_path, capsys):
    out = prepare_dataset("ptb", out_dir=tmp_path / "out", data_dir=tiny_ptb, vocab_size=300)
    stamp = (out / "train.bin").stat().st_mtime_ns
    prepare_dataset("ptb", out_dir=out, data_dir=tiny_ptb, vocab_size=300)
    assert "reusing" in capsys.readouterr().err and (out / "train.bin").stat().st_mtime_ns == stamp
    prepare_dataset("ptb", out_dir=out, data_dir=tiny_ptb, vocab_size=310)  # other settings: rebuilt
    assert load_meta(out)["vocab_size"] == 310
    (tiny_ptb / "ptb.train.txt").write_text(" a new train text \n" * 50, encoding="utf-8")  # other source
    prepare_dataset("ptb", out_dir=out, data_dir=tiny_ptb, vocab_size=310)
    assert "reusing" not in capsys.readouterr().err
    tok = tokenizer_from_dict(load_meta(out)["tokenizer"])
    assert tok.decode(load_split(out, "train")) == " a new train text \n" * 50


def test_imdb_text_ends_every_review_with_endoftext(tmp_path):
    folder = tmp_path / "imdb"
    folder.mkdir()
    reviews = [f"Review number {i} was {'great' if i % 2 else 'awful'}." for i in range(40)]
    with gzip.open(folder / "train.jsonl.gz", "wt", encoding="utf-8") as f:
        for i, r in enumerate(reviews):
            f.write(json.dumps({"text": r, "label": i % 2}) + "\n")
    out = prepare_dataset("imdb_text", out_dir=tmp_path / "out", data_dir=folder, vocab_size=300)
    meta = load_meta(out)
    tok = tokenizer_from_dict(meta["tokenizer"])
    assert meta["splits"]["val"]["documents"] == 2 and meta["splits"]["train"]["documents"] == 38
    val = load_split(out, "val").tolist()
    assert val.count(tok.eot_id) == 2 and val[-1] == tok.eot_id
    texts = tok.decode(val).split(EOT)[:-1]
    assert set(texts) <= set(reviews) and len(set(texts)) == 2
    train_texts = tok.decode(load_split(out, "train")).split(EOT)[:-1]
    assert sorted(train_texts + texts) == sorted(reviews)  # every review in exactly one split


def test_imdb_wikitext2_joins_both_train_texts_and_never_a_test_text(tmp_path):
    (tmp_path / "imdb").mkdir()
    (tmp_path / "wikitext2").mkdir()
    reviews = [f"Review {i} says the film was {'great' if i % 2 else 'awful'}." for i in range(40)]
    with gzip.open(tmp_path / "imdb" / "train.jsonl.gz", "wt", encoding="utf-8") as f:
        for i, r in enumerate(reviews):
            f.write(json.dumps({"text": r, "label": i % 2}) + "\n")
    wiki = {"train": " = Train article = \n words of the train file \n" * 20, "valid": " = Valid article = \n",
            "test": " = SECRET TEST = \n"}
    for split, text in wiki.items():
        (tmp_path / "wikitext2" / f"wiki.{split}.tokens").write_text(text, encoding="utf-8")
    out = prepare_dataset("imdb_wikitext2", out_dir=tmp_path / "out", data_dir=tmp_path, vocab_size=300)
    meta = load_meta(out)
    tok = tokenizer_from_dict(meta["tokenizer"])
    assert set(meta["splits"]) == {"train", "val"}  # no test split: the test texts are kept for evaluation
    assert meta["splits"]["train"]["documents"] == 38 + 1 and meta["splits"]["val"]["documents"] == 2 + 1
    train, val = tok.decode(load_split(out, "train")), tok.decode(load_split(out, "val"))
    assert wiki["train"] + EOT in train and wiki["valid"] + EOT in val
    assert "SECRET" not in train + val and "wiki.test.tokens" not in meta["source_sha256"]
    assert sorted(train.split(EOT)[:-1] + val.split(EOT)[:-1]) == sorted(reviews + [wiki["train"], wiki["valid"]])


def test_truncated_or_mismatched_bin_and_bad_meta_are_one_line_errors(char_dir, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(char_dir, d)
    data = (d / "val.bin").read_bytes()
    (d / "val.bin").write_bytes(data[:-1])  # odd size: a cut uint16
    with pytest.raises(DataFileError, match=r"val.bin: 223,079 bytes, but meta.json says 111,540 uint16 tokens"):
        load_split(d, "val")
    (d / "val.bin").write_bytes(data[:-2])  # one token short: not the run meta.json describes
    with pytest.raises(DataFileError, match="truncated or from another run"):
        load_split(d, "val")
    (d / "val.bin").unlink()
    with pytest.raises(DataFileError, match="val.bin not found"):
        load_split(d, "val")
    with pytest.raises(UserError, match="shakespeare_char has no test split"):
        load_split(d, "test")
    (d / "meta.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataFileError, match="meta.json: not JSON"):
        load_meta(d)
    (d / "meta.json").write_text(json.dumps({"format": 1, "dtype": "uint32", "splits": {}, "tokenizer": {}}))
    with pytest.raises(DataFileError, match="not a stage-5 meta.json"):
        load_meta(d)
    with pytest.raises(DataFileError, match="meta.json not found; prepare the data first"):
        load_meta(tmp_path / "nowhere")


def test_prepare_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    for argv, expected in [
        (["--dataset", "ptb", "--data_dir", str(tmp_path)], "ptb: --data_dir"),
        (["--dataset", "shakespeare_bpe", "--vocab_size", "100"], "--vocab_size must be between 257 and 65536"),
        (["--dataset", "shakespeare_char", "--vocab_size", "300"], "--vocab_size applies to BPE datasets"),
    ]:
        with pytest.raises(SystemExit) as e:
            run_cli(prepare.main, argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith("error: ") and expected in err and "\n" not in err, err
    with pytest.raises(DataNotFoundError):
        prepare_dataset("wikitext2", data_dir=tmp_path)


def test_prepare_cli_writes_the_files(tmp_path, capsys):
    out = prepare.main(["--dataset", "shakespeare_char", "--prepared_dir", str(tmp_path / "p")])
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]
    assert "val" in capsys.readouterr().out


def test_get_batch_windows_targets_and_generator_state():
    data = np.arange(1000, dtype=np.uint16)
    g = torch.Generator().manual_seed(7)
    x, y = get_batch(data, 4, 16, g)
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y, x + 1)  # the targets are the next tokens
    assert all(torch.equal(row, torch.arange(row[0], row[0] + 16)) for row in x)  # real contiguous windows
    state = g.get_state()
    a = get_batch(data, 4, 16, g)
    g2 = torch.Generator()
    g2.set_state(state)
    b = get_batch(data, 4, 16, g2)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], x)
    starts = torch.cat([get_batch(data[:100], 64, 16, g)[0][:, 0] for _ in range(30)])
    assert starts.min() == 0 and starts.max() == 100 - 16 - 1  # the last window still has its target
    with pytest.raises(UserError, match="too few for --block_size 16"):
        get_batch(np.arange(16, dtype=np.uint16), 2, 16, g)
