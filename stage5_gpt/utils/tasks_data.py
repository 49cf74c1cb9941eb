"""Data of the fine-tuning tasks (``finetune.py``), encoded with the pre-trained model's own tokenizer.

* **classify**: IMDb / AG News exactly as stage 1 splits them (``scripts/textclass.py``, shared by the
  classifiers of stages 2, 4 and 5). A text becomes ``ids(text) + [<|endoftext|>]``, at most ``max_len`` tokens:
  a longer one keeps its first quarter and its end (``head_tail``; Sun et al. 2019, "How to Fine-Tune BERT for
  Text Classification", found head + tail truncation best on IMDb), or only its ``head`` / ``tail``.
* **translate**: Multi30k en→fr (``multi30k/{train,val,test_2016_flickr,test_2017_flickr,test_2017_mscoco}``;
  found like every dataset, the English/French copy bundled in ``stage3_attention_seq2seq/data/multi30k`` is read
  by path). A pair becomes ``prompt + target``: ``English: <en>\\nFrench:`` and `` <fr><|endoftext|>``.
* **lm**: windows of the pre-training corpus (a prepared folder of ``prepare.py``, e.g. ``imdb_wikitext2``).

Batches are functions of ``(seed, epoch)`` or ``(seed, draw number)`` only (no generator state), so a resumed run
draws exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from scripts import REPO_ROOT
from scripts.cli import UserError
from scripts.data import data_file, find_dataset, read_text

MULTI30K_BUNDLED = REPO_ROOT / "stage3_attention_seq2seq" / "data" / "multi30k"
MULTI30K_SPLITS = ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco")
MULTI30K_TESTS = MULTI30K_SPLITS[2:]
TRUNCATIONS = ("head_tail", "head", "tail")
SRC_PREFIX, TGT_PREFIX = "English: ", "\nFrench:"


def clean_text(text: str) -> str:
    """IMDb reviews hold HTML line breaks (``<br />``); they become spaces."""
    return text.replace("<br />", " ").replace("<br/>", " ")


def truncate(ids: list[int], max_len: int, how: str = "head_tail") -> list[int]:
    """At most ``max_len`` ids: the first quarter and the last three quarters (head_tail), the head or the tail."""
    if len(ids) <= max_len:
        return ids
    if how == "head":
        return ids[:max_len]
    if how == "tail":
        return ids[-max_len:]
    head = max_len // 4
    return ids[:head] + ids[len(ids) - (max_len - head):]


def encode_for_classification(tok, texts: list[str], max_len: int, how: str = "head_tail") -> list[list[int]]:
    """``truncate(ids(text), max_len - 1) + [<|endoftext|>]`` for every text (the last token is the one classified)."""
    return [truncate(tok.encode(clean_text(t)), max_len - 1, how) + [tok.eot_id] for t in texts]


def pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x (B, T) padded on the right with pad_id, lengths (B,))``."""
    T = max(len(r) for r in rows)
    x = torch.full((len(rows), T), pad_id, dtype=torch.long)
    for b, r in enumerate(rows):
        x[b, :len(r)] = torch.tensor(r, dtype=torch.long)
    return x, torch.tensor([len(r) for r in rows], dtype=torch.long)


# ----- translation -------------------------------------------------------------------------------------------

@dataclass
class Pairs:
    """Sentence pairs of one split and their encodings: ``prompt`` ids, ``target`` ids (ending with eot)."""

    src: list[str]
    tgt: list[str]
    prompt: list[list[int]] = field(default_factory=list)
    target: list[list[int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.src)


def prompt_text(src: str) -> str:
    return f"{SRC_PREFIX}{src.strip()}{TGT_PREFIX}"


def load_multi30k(data_dir: str | None = None) -> tuple[dict[str, tuple[list[str], list[str]]], list[Path]]:
    """``({split: (English sentences, French sentences)}, files read)``; one-line errors for bad files."""
    names = [f"{s}.{lang}.gz" for s in MULTI30K_SPLITS for lang in ("en", "fr")]
    folder = find_dataset("multi30k", names, data_dir=data_dir, bundled=MULTI30K_BUNDLED, allow_hub=False)
    splits, files = {}, []
    for split in MULTI30K_SPLITS:
        paths = [data_file(folder, f"{split}.{lang}.gz") for lang in ("en", "fr")]
        en, fr = (read_text(p).rstrip("\n").split("\n") for p in paths)
        if len(en) != len(fr):
            raise UserError(f"{paths[0]} and {paths[1]} have {len(en)} vs {len(fr)} lines (not parallel)")
        splits[split] = (en, fr)
        files += paths
    return splits, files


def max_new_tokens(prompt_len: int) -> int:
    """How many tokens a translation may take: twice the prompt plus 10 (Multi30k's French is about as long as
    the English; the bound only matters for a model that never says <|endoftext|>)."""
    return 2 * prompt_len + 10


def encode_pairs(tok, src: list[str], tgt: list[str]) -> Pairs:
    pairs = Pairs(src, tgt)
    pairs.prompt = [tok.encode(prompt_text(s)) for s in src]
    pairs.target = [tok.encode(" " + t.strip()) + [tok.eot_id] for t in tgt]
    return pairs


def translation_batch(pairs: Pairs, idx: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (B, T) = (prompt + target)[:-1], ``y`` (B, T) = (prompt + target)[1:] with -1 wherever the next token
    is part of the prompt (or padding): the loss counts the target tokens (and the final eot) only."""
    rows = [pairs.prompt[i] + pairs.target[i] for i in idx]
    T = max(len(r) for r in rows) - 1
    x = torch.full((len(rows), T), pad_id, dtype=torch.long)
    y = torch.full((len(rows), T), -1, dtype=torch.long)
    for b, (i, r) in enumerate(zip(idx, rows)):
        n = len(r) - 1
        x[b, :n] = torch.tensor(r[:-1])
        p = len(pairs.prompt[i])
        y[b, p - 1:n] = torch.tensor(r[p:])  # position p-1 (the last prompt token) predicts the first target token
    return x, y


# ----- language modelling windows ----------------------------------------------------------------------------

def lm_batch(data: np.ndarray, batch_size: int, block_size: int, seed: int, draw: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of the token stream ``data``, a function of ``(seed, draw)`` only."""
    if len(data) <= block_size + 1:
        raise UserError(f"the language-modelling split has {len(data):,} tokens, too few for windows of {block_size}")
    starts = np.random.default_rng([seed, 11, draw]).integers(0, len(data) - block_size - 1, size=batch_size)
    x = torch.from_numpy(np.stack([data[s:s + block_size] for s in starts]).astype(np.int64))  # (B, T)
    y = torch.from_numpy(np.stack([data[s + 1:s + 1 + block_size] for s in starts]).astype(np.int64))  # (B, T)
    return x, y


def task_of_step(seed: int, step: int, tasks: list[str], weights: list[float]) -> str:
    """The task of multi-task step ``step``: drawn with probabilities ``weights``, a function of (seed, step)."""
    u = np.random.default_rng([seed, 13, step]).random()
    cum = np.cumsum(np.asarray(weights, dtype=np.float64) / sum(weights))
    return tasks[min(int(np.searchsorted(cum, u, side="right")), len(tasks) - 1)]
