"""Stage-4 data: Multi30k sentence pairs, IMDb reviews, token-based length-bucketed batches.

* **Multi30k** (task 1, Elliott et al. 2016): ``multi30k/{train,val,test_2016_flickr,test_2017_flickr,
  test_2017_mscoco}.{en,fr,de}.gz``, 29,000 / 1,014 / 1,000 / 1,000 / 461 lines. Found by
  :func:`scripts.data.find_dataset` (``--data_dir`` → ``$MY_LLM_DATA`` → the English/French copy the
  repository bundles under ``stage3_attention_seq2seq/data/multi30k/``, read by path only; see
  ``stage4_transformer/data/README.md``). ``train`` and ``val`` train and select models; the three
  test sets are only for the final BLEU.
* **IMDb** (Maas et al. 2011): ``imdb/{train,test}.jsonl.gz`` (``{"text", "label"}``, 1 = positive).
  Validation is carved from train (stratified, seeded); the bundled 4,000-review train sample
  (``stage1_mlp/data/imdb/train.jsonl.gz``, read by path) serves the quick start and tests.

Batches hold about ``max_tokens`` tokens (the paper §5.1: "approximately 25000 source tokens and
25000 target tokens"): sentences are sorted by length inside shuffled pools so a batch has little
padding, and the batch order is shuffled with a generator seeded by ``seed + epoch`` (reproducible,
and a resumed run rebuilds the same batches).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scripts import REPO_ROOT
from scripts.cli import UserError
from scripts.data import data_file, find_dataset, read_errors, read_text
from stage4_transformer.utils.tokenizer import BOS_ID, EOS_ID, PAD_ID

MULTI30K_BUNDLED = REPO_ROOT / "stage3_attention_seq2seq" / "data" / "multi30k"
IMDB_BUNDLED = REPO_ROOT / "stage1_mlp" / "data" / "imdb"
MULTI30K_SPLITS = ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco")
MULTI30K_TESTS = MULTI30K_SPLITS[2:]
MULTI30K_LANGS = ("en", "fr", "de")


@dataclass
class ParallelCorpus:
    """Raw sentence pairs per split, plus the files read (for the result file's ``data_sha256``)."""

    src_lang: str
    tgt_lang: str
    splits: dict  # split -> (list[str] source, list[str] target)
    files: list = field(default_factory=list)
    bundled: bool = False


def _lines(path: Path) -> list[str]:
    text = read_text(path)
    return text.rstrip("\n").split("\n") if text else []


def load_multi30k(src_lang: str = "en", tgt_lang: str = "fr", data_dir: str | None = None) -> ParallelCorpus:
    """Every split of Multi30k for ``src_lang → tgt_lang``; one-line errors for bad choices or files."""
    for lang in (src_lang, tgt_lang):
        if lang not in MULTI30K_LANGS:
            raise UserError(f"Multi30k has no language {lang!r}; choose from {', '.join(MULTI30K_LANGS)}")
    if src_lang == tgt_lang:
        raise UserError("--src_lang and --tgt_lang must differ")
    names = [f"{s}.{lang}.gz" for s in MULTI30K_SPLITS for lang in (src_lang, tgt_lang)]
    bundled = MULTI30K_BUNDLED if {src_lang, tgt_lang} <= {"en", "fr"} else None
    folder = find_dataset("multi30k", names, data_dir=data_dir, bundled=bundled, allow_hub=False)
    splits, files = {}, []
    for split in MULTI30K_SPLITS:
        src_path, tgt_path = data_file(folder, f"{split}.{src_lang}.gz"), data_file(folder, f"{split}.{tgt_lang}.gz")
        src, tgt = _lines(src_path), _lines(tgt_path)
        if len(src) != len(tgt):
            raise UserError(f"{src_path} and {tgt_path} have {len(src)} vs {len(tgt)} lines (not parallel)")
        splits[split] = (src, tgt)
        files += [src_path, tgt_path]
    return ParallelCorpus(src_lang, tgt_lang, splits, files, bundled=bundled is not None and folder == bundled)


@dataclass
class TextClassData:
    texts: list[str]
    labels: list[int]
    label_names: list[str]
    files: list = field(default_factory=list)


def _read_jsonl(path: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with read_errors(path):
        for n, line in enumerate(read_text(path).splitlines(), start=1):
            try:
                row = json.loads(line)
                texts.append(str(row["text"]))
                labels.append(int(row["label"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise UserError(f"{path}:{n}: expected a JSON object with 'text' and 'label'") from None
    return texts, labels


def stratified_split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(keep, held_out)`` with ``fraction`` of every class held out (seeded, deterministic)."""
    rng = random.Random(seed)
    keep, held = [], []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        rng.shuffle(idx)
        k = max(1, round(fraction * len(idx)))
        held += idx[:k]
        keep += idx[k:]
    return sorted(keep), sorted(held)


def load_imdb(data_dir: str | None = None, val_fraction: float = 0.05, seed: int = 1337,
              need_test: bool = True) -> dict[str, TextClassData]:
    """``{"train", "val"[, "test"]}``: validation carved from train; test only when available/needed."""
    names = ["train.jsonl.gz", "test.jsonl.gz"] if need_test else ["train.jsonl.gz"]
    folder = find_dataset("imdb", names, data_dir=data_dir, bundled=IMDB_BUNDLED if not need_test else None,
                          allow_hub=False)
    label_names = ["neg", "pos"]
    texts, labels = _read_jsonl(data_file(folder, "train.jsonl.gz"))
    keep, held = stratified_split(labels, val_fraction, seed)
    train_file = data_file(folder, "train.jsonl.gz")
    out = {"train": TextClassData([texts[i] for i in keep], [labels[i] for i in keep], label_names, [train_file]),
           "val": TextClassData([texts[i] for i in held], [labels[i] for i in held], label_names, [train_file])}
    if need_test:
        test_file = data_file(folder, "test.jsonl.gz")
        t, y = _read_jsonl(test_file)
        out["test"] = TextClassData(t, y, label_names, [test_file])
    return out


# ----- batches -----------------------------------------------------------------------------------

def token_batches(src_lens: list[int], tgt_lens: list[int], max_tokens: int, seed: int, epoch: int,
                  pool_factor: int = 100) -> list[list[int]]:
    """Index batches of at most ``max_tokens`` (padded) source or target tokens each.

    Shuffle (seeded by ``seed + epoch``), cut into pools of ~``pool_factor`` batches, sort each pool
    by length, cut it into batches, shuffle the batch order. The same arguments give the same batches.
    """
    n = len(src_lens)
    if n == 0:
        return []
    longest = max(max(src_lens), max(tgt_lens))
    if max_tokens < longest:
        raise UserError(f"--max_tokens {max_tokens} is smaller than the longest sentence ({longest} tokens)")
    rng = random.Random(seed * 1000 + epoch)
    order = list(range(n))
    rng.shuffle(order)
    avg = max(1, sum(max(s, t) for s, t in zip(src_lens, tgt_lens)) // n)
    pool = max(1, pool_factor * max_tokens // avg)
    batches = []
    for start in range(0, n, pool):
        chunk = sorted(order[start:start + pool], key=lambda i: (src_lens[i], tgt_lens[i]))
        batch, width = [], 0
        for i in chunk:
            w = max(width, src_lens[i], tgt_lens[i])
            if batch and w * (len(batch) + 1) > max_tokens:
                batches.append(batch)
                batch, w = [], max(src_lens[i], tgt_lens[i])
            batch.append(i)
            width = w
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches


def collate_translation(src_ids: list[list[int]], tgt_ids: list[list[int]]) -> dict[str, torch.Tensor]:
    """Pad a batch: ``src`` (B, S), ``src_mask`` (B, S) True at real tokens, ``tgt_in`` = <bos> y,
    ``tgt_out`` = y <eos> (B, T), padded with ``PAD_ID``."""
    B = len(src_ids)
    S = max(len(s) for s in src_ids)
    T = max(len(t) for t in tgt_ids) + 1
    src = torch.full((B, S), PAD_ID, dtype=torch.long)
    tgt_in = torch.full((B, T), PAD_ID, dtype=torch.long)
    tgt_out = torch.full((B, T), PAD_ID, dtype=torch.long)
    for b, (s, t) in enumerate(zip(src_ids, tgt_ids)):
        src[b, :len(s)] = torch.tensor(s)
        tgt_in[b, :len(t) + 1] = torch.tensor([BOS_ID, *t])
        tgt_out[b, :len(t) + 1] = torch.tensor([*t, EOS_ID])
    return {"src": src, "src_mask": src != PAD_ID, "tgt_in": tgt_in, "tgt_out": tgt_out}


def train_joint_tokenizer(corpus: ParallelCorpus, vocab_size: int):
    """One BPE over the source and target sides of the **training split only**."""
    from stage4_transformer.utils.tokenizer import SubwordTokenizer

    src, tgt = corpus.splits["train"]
    return SubwordTokenizer.train(src + tgt, vocab_size)
