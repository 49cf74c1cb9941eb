"""Parallel corpora, tensors and length-bucketed batches.

* ``multi30k`` (default): WMT16/17 multimodal task-1 sentences, English/French copies bundled in
  ``stage3_attention_seq2seq/data/multi30k/`` (train 29,000 / val 1,014 / test_2016_flickr 1,000 /
  test_2017_flickr 1,000 / test_2017_mscoco 461); German too when read from a data dir.
* ``eng_fra``: the Tatoeba pairs of the PyTorch tutorial (``eng_fra/eng-fra.txt.zip`` in a data
  dir only). It has no official split, so we split the *distinct English sentences* with a seeded
  shuffle (a sentence and its alternative translations stay in the same split): val 2,000 and
  test 2,000 English sentences, the rest train.

Locations are resolved by :func:`scripts.data.find_dataset` (--data_dir, $MY_LLM_DATA, bundled).
"""
from __future__ import annotations

import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from scripts.cli import UserError
from scripts.data import DataNotFoundError, HubSource, data_file, find_dataset, read_text
from stage3_attention_seq2seq.utils.tokenizer import BOS_ID, EOS_ID, PAD_ID, Vocab, tokenize

BUNDLED = Path(__file__).resolve().parent.parent / "data" / "multi30k"
MULTI30K_TESTS = ("test_2016_flickr", "test_2017_flickr", "test_2017_mscoco")
LANGS = {"multi30k": ("en", "fr", "de"), "eng_fra": ("en", "fr")}
ENG_FRA_HELD_OUT = 2000


@dataclass
class Corpus:
    """Raw sentence pairs per split, plus the files read (for ``data_sha256``)."""

    name: str
    src_lang: str
    tgt_lang: str
    splits: dict  # split -> (list[src str], list[tgt str])
    files: list

    @property
    def test_splits(self) -> list[str]:
        return [s for s in self.splits if s.startswith("test")]


def _read_lines(path: Path) -> list[str]:
    """One sentence per line; a file in another encoding, a truncated or fake ``.gz`` is a one-line error."""
    return read_text(path).rstrip("\n").split("\n")


def load_corpus(dataset: str = "multi30k", src_lang: str = "en", tgt_lang: str = "fr",
                data_dir: str | None = None, seed: int = 0) -> Corpus:
    """Load every split of ``dataset`` as raw text; clear one-line errors for bad choices."""
    if dataset not in LANGS:
        raise UserError(f"unknown dataset {dataset!r}; choose multi30k or eng_fra")
    for lang in (src_lang, tgt_lang):
        if lang not in LANGS[dataset]:
            raise UserError(f"{dataset} has no language {lang!r}; available: {', '.join(LANGS[dataset])}")
    if src_lang == tgt_lang:
        raise UserError("--src_lang and --tgt_lang must differ")
    if dataset == "multi30k":
        splits = ("train", "val") + MULTI30K_TESTS
        files = [f"{s}.{lang}.gz" for s in splits for lang in (src_lang, tgt_lang)]
        bundled = BUNDLED if {src_lang, tgt_lang} <= {"en", "fr"} else None
        try:
            folder = find_dataset("multi30k", files, data_dir=data_dir, bundled=bundled, allow_hub=False)
        except DataNotFoundError as e:
            if bundled is None:  # say why the bundled copy does not count
                raise DataNotFoundError(f"{e}. Only en and fr are bundled with the repository; German (de) needs "
                                        f"the full Multi30k in --data_dir or $MY_LLM_DATA") from None
            raise
        paths = [data_file(folder, f) for f in files]
        out = {}
        for s in splits:
            src = _read_lines(data_file(folder, f"{s}.{src_lang}.gz"))
            tgt = _read_lines(data_file(folder, f"{s}.{tgt_lang}.gz"))
            if len(src) != len(tgt):
                raise UserError(f"{folder}: {s}.{src_lang} and {s}.{tgt_lang} have {len(src)} vs {len(tgt)} lines")
            out[s] = (src, tgt)
        return Corpus(dataset, src_lang, tgt_lang, out, paths)
    folder = find_dataset("eng_fra", ["eng-fra.txt.zip"], data_dir=data_dir, allow_hub=False)
    assert not isinstance(folder, HubSource)
    path = folder / "eng-fra.txt.zip"
    try:
        text = zipfile.ZipFile(path).read("eng-fra.txt").decode("utf-8")
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not the expected zip with eng-fra.txt ({e})") from None
    pairs = [ln.split("\t") for ln in text.strip().split("\n")]
    pairs = [p for p in pairs if len(p) == 2]
    english = sorted({p[0] for p in pairs})
    random.Random(seed).shuffle(english)
    part = {e: ("val" if i < ENG_FRA_HELD_OUT else "test" if i < 2 * ENG_FRA_HELD_OUT else "train")
            for i, e in enumerate(english)}
    out = {s: ([], []) for s in ("train", "val", "test")}
    for en, fr in pairs:
        src, tgt = (en, fr) if src_lang == "en" else (fr, en)
        out[part[en]][0].append(src)
        out[part[en]][1].append(tgt)
    return Corpus(dataset, src_lang, tgt_lang, out, [path])


def encode_pairs(src_sents, tgt_sents, src_vocab: Vocab, tgt_vocab: Vocab, max_len: int | None = None):
    """Token-id lists; pairs longer than ``max_len`` tokens on either side are dropped (train only)."""
    out = []
    for s, t in zip(src_sents, tgt_sents):
        s_ids, t_ids = src_vocab.encode(tokenize(s)), tgt_vocab.encode(tokenize(t))
        if not s_ids or not t_ids or (max_len and (len(s_ids) > max_len or len(t_ids) > max_len)):
            continue
        out.append((s_ids, t_ids))
    return out


def pad_batch(seqs, bos_eos: bool = False):
    """Pad id lists to (B, L) with PAD_ID; returns (tensor, lengths)."""
    if bos_eos:
        seqs = [[BOS_ID] + list(s) + [EOS_ID] for s in seqs]
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lens.max())), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out, lens


def collate(pairs):
    """A batch dict: src (B, S), src_len (B,), tgt_in (B, T) = <bos> y, tgt_out (B, T) = y <eos>."""
    src, src_len = pad_batch([p[0] for p in pairs])
    tgt, _ = pad_batch([p[1] for p in pairs], bos_eos=True)
    return {"src": src, "src_len": src_len, "tgt_in": tgt[:, :-1], "tgt_out": tgt[:, 1:]}


def epoch_batches(n_pairs: int, lengths, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches (index lists) of one epoch, a pure function of (seed, epoch) so --resume can replay it.

    Sentences are shuffled, grouped in pools of 50 batches, sorted by length inside a pool (little
    padding, fewer wasted GRU steps), cut into batches, and the batch order is shuffled again.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_pairs, generator=g).tolist()
    pool = batch_size * 50
    batches = []
    for i in range(0, n_pairs, pool):
        chunk = sorted(order[i:i + pool], key=lambda j: lengths[j])
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    perm = torch.randperm(len(batches), generator=g).tolist()
    return [batches[p] for p in perm]
