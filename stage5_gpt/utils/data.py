"""Stage-5 data: token ids in ``uint16`` memmaps + ``meta.json``, and random-window batches (nanoGPT's layout).

``prepare_dataset(name)`` reads a corpus, trains the tokenizer on its **training split only**, and writes
``train.bin`` / ``val.bin`` (/ ``test.bin``) -- the token ids as ``uint16`` -- and ``meta.json`` (the
tokenizer, counts, the sha256 of every source file) into ``stage5_gpt/data/prepared/<name>/``. Training
reads the ``.bin`` files as ``np.memmap`` (nothing is loaded into memory) and draws ``batch_size``
random windows of ``block_size + 1`` tokens with a ``torch.Generator`` (:func:`get_batch`), so a resumed
run that restores the generator state draws the same batches.

Datasets (files found by :func:`scripts.data.find_dataset`: ``--data_dir`` -> ``$MY_LLM_DATA`` -> bundled copy;
layout and provenance in ``stage5_gpt/data/README.md``):

- ``shakespeare_char`` / ``shakespeare_bpe``: ``tinyshakespeare/input.txt`` (bundled in stage 2's
  ``data/`` folder, read by path); nanoGPT's split, the first 90% of the characters train, the rest val.
- ``ptb``: ``ptb/ptb.{train,valid,test}.txt``; ``wikitext2``: ``wikitext2/wiki.{train,valid,test}.tokens``.
- ``imdb_text``: the texts of IMDb's *train* reviews (``imdb/train.jsonl.gz``; labels unused; the test
  reviews are kept for classification); 5% of the reviews (seeded shuffle) are val; each review ends
  with ``<|endoftext|>``. Without ``$MY_LLM_DATA``: stage 1's bundled 4,000-review sample.

``words`` in ``meta.json`` counts as stage 2 does (whitespace tokens plus one ``<eos>`` per line; for IMDb one
per review), so word-level perplexity = exp(total nats of a split / its words) sits beside stage 2's.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from scripts import REPO_ROOT
from scripts.cli import UserError
from scripts.data import DataFileError, data_file, find_dataset, read_errors, read_text
from stage5_gpt.tokenizer import EOT, ByteLevelBPE, CharTokenizer

STAGE_DIR = Path(__file__).resolve().parent.parent
PREPARED_DIR = STAGE_DIR / "data" / "prepared"
META_NAME = "meta.json"
FORMAT = 1
DTYPE = np.uint16
MAX_VOCAB = int(np.iinfo(DTYPE).max) + 1  # 65,536 ids fit in uint16
IMDB_VAL_FRACTION, IMDB_SEED = 0.05, 1337

# dataset -> (folder under the data dir, files, bundled copy, tokenizer kind, default BPE vocabulary size)
DATASETS = {
    "shakespeare_char": ("tinyshakespeare", {"all": "input.txt"},
                         REPO_ROOT / "stage2_rnn_lstm" / "data" / "tinyshakespeare", "char", None),
    "shakespeare_bpe": ("tinyshakespeare", {"all": "input.txt"},
                        REPO_ROOT / "stage2_rnn_lstm" / "data" / "tinyshakespeare", "bpe", 4096),
    "ptb": ("ptb", {"train": "ptb.train.txt", "val": "ptb.valid.txt", "test": "ptb.test.txt"}, None, "bpe", 4096),
    "wikitext2": ("wikitext2", {"train": "wiki.train.tokens", "val": "wiki.valid.tokens", "test": "wiki.test.tokens"},
                  None, "bpe", 8192),
    "imdb_text": ("imdb", {"all": "train.jsonl.gz"}, REPO_ROOT / "stage1_mlp" / "data" / "imdb", "bpe", 8192),
    # the pre-training corpus of finetune.py: imdb_text's train/val reviews + WikiText-2's train/valid (never a test)
    "imdb_wikitext2": ("", {}, None, "bpe", 8192),
}
PER_DOCUMENT_EOT = ("imdb_text", "imdb_wikitext2")  # several documents per split: each ends with <|endoftext|>
COMPOSITES = {"imdb_wikitext2": {"imdb_text": ("all",), "wikitext2": ("train", "val")}}
SPLIT_RULES = {
    "shakespeare_char": "nanoGPT: first 90% of the characters train, last 10% val; characters of train only",
    "shakespeare_bpe": "nanoGPT: first 90% of the characters train, last 10% val; BPE learned on train only",
    "ptb": "the official ptb.train/valid/test files; BPE learned on train only",
    "wikitext2": "the official wiki.train/valid/test files; BPE learned on train only",
    "imdb_text": f"IMDb train reviews, {IMDB_VAL_FRACTION:.0%} val by a shuffle seeded {IMDB_SEED}; each review "
                 f"ends with {EOT}; BPE learned on train only",
    "imdb_wikitext2": f"imdb_text's train reviews + WikiText-2 train, val: imdb_text's val reviews + WikiText-2 valid; "
                      f"no test texts of either; every document ends with {EOT}; BPE learned on train only",
}


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def count_words(text: str) -> int:
    """Words as stage 2 counts them: each line's whitespace tokens plus one ``<eos>``."""
    return sum(len(line.split()) + 1 for line in text.splitlines())


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_dir(name: str) -> Path:
    return PREPARED_DIR / name


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose {', '.join(DATASETS)}")


def _settings(name: str, vocab_size: int | None) -> dict:
    """What decides the prepared files besides the sources (a prepared dir is reused only when these match)."""
    _check_name(name)
    kind, default_vocab = DATASETS[name][3], DATASETS[name][4]
    if kind == "char":
        if vocab_size:
            raise UserError(f"--vocab_size applies to BPE datasets; {name}'s vocabulary is the characters of its "
                            f"training split")
        return {"dataset": name, "tokenizer": "char", "vocab_size": None, "format": FORMAT}
    vocab_size = vocab_size or default_vocab
    if not 257 <= vocab_size <= MAX_VOCAB:
        raise UserError(f"--vocab_size must be between 257 and {MAX_VOCAB} (ids are stored as uint16), "
                        f"got {vocab_size}")
    return {"dataset": name, "tokenizer": "bpe", "vocab_size": vocab_size, "format": FORMAT}


def source_files(name: str, data_dir: str | Path | None = None) -> dict[str, Path]:
    """``{role: path}`` of the files ``name`` is made from (``all`` for single-file datasets)."""
    _check_name(name)
    if name in COMPOSITES:  # role "<part>:<role>" for each file of each part it takes
        return {f"{part}:{role}": path for part, roles in COMPOSITES[name].items()
                for role, path in source_files(part, data_dir).items() if role in roles}
    folder_name, files, bundled, _, _ = DATASETS[name]
    where = find_dataset(folder_name, list(files.values()), data_dir=data_dir, bundled=bundled, allow_hub=False)
    return {role: data_file(where, f) for role, f in files.items()}


def _read_imdb_texts(path: Path) -> list[str]:
    texts = []
    with read_errors(path):
        for n, line in enumerate(read_text(path).splitlines(), start=1):
            try:
                texts.append(str(json.loads(line)["text"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataFileError(f"{path}:{n}: expected a JSON object with a 'text' field") from None
    return texts


def read_splits(name: str, files: dict[str, Path]) -> dict[str, list[str]]:
    """``{split: documents}``: one document per split except IMDb (one per review)."""
    if name in COMPOSITES:  # the parts' splits, concatenated document lists (IMDb's reviews, WikiText-2's files)
        texts = {}
        for part in COMPOSITES[name]:
            part_files = {role.split(":", 1)[1]: p for role, p in files.items() if role.split(":", 1)[0] == part}
            for split, docs in read_splits(part, part_files).items():
                texts.setdefault(split, []).extend(docs)
        return texts
    if "all" not in files:
        texts = {split: [read_text(p)] for split, p in files.items()}
    elif name == "imdb_text":
        reviews = _read_imdb_texts(files["all"])
        order = list(range(len(reviews)))
        random.Random(IMDB_SEED).shuffle(order)
        n_val = max(1, round(IMDB_VAL_FRACTION * len(reviews)))
        val = set(order[:n_val])
        texts = {"train": [r for i, r in enumerate(reviews) if i not in val],
                 "val": [r for i, r in enumerate(reviews) if i in val]}
    else:
        text = read_text(files["all"])
        n = int(0.9 * len(text))  # nanoGPT's split
        texts = {"train": [text[:n]], "val": [text[n:]]}
    for split, docs in texts.items():
        if not any(d.strip() for d in docs):
            raise DataFileError(f"{name}: the {split} split is empty (check {', '.join(map(str, files.values()))})")
    return texts


def _train_tokenizer(settings: dict, train_docs: list[str]):
    if settings["tokenizer"] == "char":
        return CharTokenizer.from_text("".join(train_docs))
    return ByteLevelBPE.train(EOT.join(train_docs), settings["vocab_size"])  # EOT: no merge crosses two documents


def _encode(tok, docs: list[str], per_document_eot: bool) -> np.ndarray:
    parts = []
    for doc in docs:
        ids = tok.encode(doc)
        if per_document_eot:
            ids.append(tok.eot_id)
        parts.append(np.asarray(ids, dtype=np.int64))
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if ids.size and ids.max() >= MAX_VOCAB:
        raise UserError(f"token id {ids.max()} does not fit in uint16")
    return ids.astype(DTYPE)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _reusable(out_dir: Path, settings: dict, shas: dict) -> bool:
    if not (out_dir / META_NAME).is_file():
        return False
    try:
        meta = load_meta(out_dir)
        if meta.get("settings") != settings or meta.get("source_sha256") != shas:
            return False
        for split in meta["splits"]:
            load_split(out_dir, split, meta)
        return True
    except UserError:
        return False


def prepare_dataset(name: str, out_dir: str | Path | None = None, data_dir: str | Path | None = None,
                    vocab_size: int | None = None, force: bool = False) -> Path:
    """Write ``<out_dir>/{train,val[,test]}.bin`` + ``meta.json`` for ``name``; return ``out_dir``.

    An existing prepared folder made from the same source files (sha256) with the same tokenizer settings is
    reused as it is (``force`` rebuilds it). The tokenizer is trained on the training split only.
    """
    settings = _settings(name, vocab_size)
    out_dir = Path(out_dir) if out_dir is not None else default_dir(name)
    files = source_files(name, data_dir)
    shas = {p.name: file_sha256(p) for p in files.values()}
    if not force and _reusable(out_dir, settings, shas):
        _note(f"note: reusing {out_dir} (same source files and tokenizer settings)")
        return out_dir
    docs = read_splits(name, files)
    what = "characters" if settings["tokenizer"] == "char" else f"a {settings['vocab_size']}-token byte-level BPE"
    _note(f"{name}: learning {what} on the train split ({sum(map(len, docs['train'])):,} characters)")
    tok = _train_tokenizer(settings, docs["train"])
    if settings["vocab_size"] and tok.vocab_size < settings["vocab_size"]:
        _note(f"note: the train split ran out of pairs to merge: the vocabulary has {tok.vocab_size} tokens, "
              f"not {settings['vocab_size']}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META_NAME).unlink(missing_ok=True)  # a half-written folder is never taken for a prepared one
    splits = {}
    for split, split_docs in docs.items():
        ids = _encode(tok, split_docs, per_document_eot=name in PER_DOCUMENT_EOT)
        _write_atomic(out_dir / f"{split}.bin", ids.tobytes())
        splits[split] = {"tokens": int(ids.size), "chars": sum(map(len, split_docs)),
                         "words": sum(count_words(d) for d in split_docs),
                         "bytes": sum(len(d.encode("utf-8")) for d in split_docs)}
        if name in PER_DOCUMENT_EOT:
            splits[split]["documents"] = len(split_docs)
    for stale in {"train", "val", "test"} - splits.keys():
        (out_dir / f"{stale}.bin").unlink(missing_ok=True)
    meta = {"dataset": name, "tokenizer": tok.to_dict(), "vocab_size": tok.vocab_size, "dtype": np.dtype(DTYPE).name,
            "splits": splits, "source_sha256": shas, "split_rule": SPLIT_RULES[name], "settings": settings,
            "bundled": DATASETS[name][2] is not None and next(iter(files.values())).parent == DATASETS[name][2],
            "format": FORMAT}
    _write_atomic(out_dir / META_NAME, json.dumps(meta, ensure_ascii=False).encode("utf-8"))
    counts = ", ".join(f"{s} {c['tokens']:,} tokens" for s, c in splits.items())
    _note(f"{name}: vocab {tok.vocab_size:,}; {counts} -> {out_dir}")
    return out_dir


def load_meta(prepared_dir: str | Path) -> dict:
    """``meta.json`` of a prepared folder; one-line errors when it is missing or not ours."""
    path = Path(prepared_dir) / META_NAME
    if not path.is_file():
        raise DataFileError(f"{path} not found; prepare the data first: python stage5_gpt/prepare.py "
                            f"--dataset <name> --out_dir {prepared_dir}")
    try:
        meta = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataFileError(f"{path}: not JSON ({e.msg} at line {e.lineno}); run prepare.py again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("dtype") != np.dtype(DTYPE).name \
            or not isinstance(meta.get("splits"), dict) or not isinstance(meta.get("tokenizer"), dict):
        raise DataFileError(f"{path}: not a stage-5 meta.json (format {FORMAT}, dtype uint16); run prepare.py again")
    return meta


def load_split(prepared_dir: str | Path, split: str, meta: dict | None = None) -> np.memmap:
    """The ``uint16`` token ids of ``split`` as a read-only memmap, checked against ``meta.json``'s count."""
    meta = meta if meta is not None else load_meta(prepared_dir)
    if split not in meta["splits"]:
        raise UserError(f"{meta.get('dataset')} has no {split} split (it has {', '.join(meta['splits'])})")
    path = Path(prepared_dir) / f"{split}.bin"
    if not path.is_file():
        raise DataFileError(f"{path} not found; run prepare.py again for {meta.get('dataset')}")
    size, itemsize = path.stat().st_size, np.dtype(DTYPE).itemsize
    expected = meta["splits"][split]["tokens"]
    if size % itemsize or size // itemsize != expected:
        raise DataFileError(f"{path}: {size:,} bytes, but meta.json says {expected:,} uint16 tokens "
                            f"({expected * itemsize:,} bytes): the file is truncated or from another run; "
                            f"run prepare.py again")
    if expected == 0:
        return np.zeros(0, dtype=DTYPE)
    return np.memmap(path, dtype=DTYPE, mode="r")


def get_batch(data: np.ndarray, batch_size: int, block_size: int, generator: torch.Generator,
              device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows: inputs ``x`` (B, T) and next-token targets ``y`` (B, T), int64.

    The window starts come from ``torch.randint(..., generator=generator)``, nothing else draws from it.
    """
    n = len(data)
    if n <= block_size:
        raise UserError(f"the split has {n:,} tokens, too few for --block_size {block_size} (need more than that)")
    starts = torch.randint(n - block_size, (batch_size,), generator=generator).tolist()
    x = torch.from_numpy(np.stack([data[i:i + block_size] for i in starts]).astype(np.int64))  # (B, T)
    y = torch.from_numpy(np.stack([data[i + 1:i + 1 + block_size] for i in starts]).astype(np.int64))  # (B, T)
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)
