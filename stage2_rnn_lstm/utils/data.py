"""Corpora, vocabularies and truncated-BPTT batches (docs/stage2_rnn_lstm.md, section 7).

Datasets (found by :func:`scripts.data.find_dataset`: ``--data_dir`` -> ``$MY_LLM_DATA`` -> bundled -> hub):

- ``tinyshakespeare``: ``input.txt``, bundled in ``stage2_rnn_lstm/data/tinyshakespeare/``; split as
  nanoGPT does (first 90% of the characters train, last 10% val; there is no test split).
- ``ptb``: ``ptb.{train,valid,test}.txt`` (Mikolov's version: already lower-cased, rare words are ``<unk>``).
- ``wikitext2``: ``wiki.{train,valid,test}.tokens`` (the tokenized v1 version, rare words are ``<unk>``).

Word level: each line's whitespace tokens plus one ``<eos>`` (as Zaremba et al. and pytorch/examples
do). Char level: every character, newline included. The vocabulary is built on the whole train split
only (also under ``--limit_train``, which then keeps the first N training tokens; val/test are never
cut); a val/test token outside it becomes ``<unk>`` (word level) or is an error (char level; tiny
Shakespeare's val characters all occur in train). Files are read with :func:`scripts.data.read_text`:
a file that is not UTF-8, a truncated or fake ``.gz`` is a one-line error naming the file.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from scripts.checkpoint import vocab_fingerprint
from scripts.cli import UserError
from scripts.data import HubSource, data_file, find_dataset, load_hub_dataset, read_text

STAGE_DIR = Path(__file__).resolve().parent.parent
BUNDLED = {"tinyshakespeare": STAGE_DIR / "data" / "tinyshakespeare"}
FILES = {
    "tinyshakespeare": {"all": "input.txt"},
    "ptb": {"train": "ptb.train.txt", "val": "ptb.valid.txt", "test": "ptb.test.txt"},
    "wikitext2": {"train": "wiki.train.tokens", "val": "wiki.valid.tokens", "test": "wiki.test.tokens"},
}
HUB = {"ptb": (None, "sentence", {"val": "validation"}), "wikitext2": ("wikitext-2-v1", "text", {"val": "validation"})}
DEFAULT_DATASET = {"char": "tinyshakespeare", "word": "ptb"}
EOS, UNK = "<eos>", "<unk>"


class Vocab:
    """Token <-> id. ``tokens`` is the ordered list; saved as plain data (:meth:`to_dict`)."""

    def __init__(self, tokens: list[str], vocab_type: str):
        if vocab_type not in ("char", "word"):
            raise ValueError(f"vocab_type must be char or word, not {vocab_type!r}")
        self.tokens, self.vocab_type = list(tokens), vocab_type
        self.stoi = {t: i for i, t in enumerate(self.tokens)}
        self.unk = self.stoi.get(UNK) if vocab_type == "word" else None

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def fingerprint(self) -> str:
        return vocab_fingerprint(self.tokens)

    @classmethod
    def build(cls, train_tokens: list[str], vocab_type: str) -> "Vocab":
        """Char: sorted characters. Word: by descending train frequency (ties by first use), plus <unk>."""
        counts = Counter(train_tokens)
        if vocab_type == "char":
            return cls(sorted(counts), "char")
        tokens = [t for t, _ in counts.most_common()]
        if UNK not in counts:
            tokens.append(UNK)
        return cls(tokens, "word")

    def split(self, text: str) -> list[str]:
        """A piece of user text as tokens (words: whitespace split, a newline ends a sentence)."""
        if self.vocab_type == "char":
            return list(text)
        return [tok for line in text.split("\n") for tok in line.split() + [EOS]][:-1] if text else []

    def encode(self, tokens: list[str], strict: bool = True) -> list[int]:
        """Ids; unknown tokens are ``<unk>`` for word vocabularies, a :class:`UserError` for char ones."""
        unknown = sorted({t for t in tokens if t not in self.stoi})
        if unknown and (strict or self.unk is None):
            shown = ", ".join(repr(t) for t in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise UserError(f"{len(unknown)} token(s) not in the {self.vocab_type} vocabulary: {shown}")
        return [self.stoi.get(t, self.unk) for t in tokens]

    def decode(self, ids) -> str:
        sep = "" if self.vocab_type == "char" else " "
        return sep.join(self.tokens[int(i)] for i in ids)

    def to_dict(self) -> dict:
        return {"vocab_type": self.vocab_type, "tokens": list(self.tokens), "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        if not isinstance(d, dict) or not isinstance(d.get("tokens"), list) or \
                d.get("vocab_type") not in ("char", "word"):
            raise UserError("not a stage-2 vocabulary (expected a dict with 'vocab_type' and 'tokens')")
        return cls(d["tokens"], d["vocab_type"])


@dataclass
class Corpus:
    """Token-id streams of each split, the vocabulary, and the files read (for ``data_sha256``)."""

    name: str
    vocab: Vocab
    splits: dict[str, torch.Tensor]   # split -> (N,) int64
    files: list[Path]


def _tokenize(text: str, vocab_type: str) -> list[str]:
    if vocab_type == "char":
        return list(text)
    return [tok for line in text.splitlines() for tok in line.split() + [EOS]]


def _read(folder: Path, name: str) -> tuple[str, Path]:
    path = data_file(folder, name)
    text = read_text(path)  # one-line DataFileError for bad encodings, truncated or fake .gz files
    if not text.strip():
        raise UserError(f"corpus file is empty: {path}")
    return text, path


def load_corpus(vocab_type: str, dataset: str | None = None, data_dir: str | Path | None = None,
                limit_train: int = 0) -> Corpus:
    """Read ``dataset`` (default: tiny Shakespeare for char, PTB for word) and encode every split.

    ``limit_train`` (> 0) keeps only the first N tokens of the training split (smoke runs); the
    vocabulary is still built on the whole training split, and val/test are never cut.
    """
    dataset = dataset or DEFAULT_DATASET[vocab_type]
    if dataset not in FILES:
        raise UserError(f"unknown dataset {dataset!r}; choose {', '.join(FILES)}")
    names = FILES[dataset]
    where = find_dataset(dataset, list(names.values()), data_dir=data_dir, bundled=BUNDLED.get(dataset))
    texts, files = {}, []
    if isinstance(where, HubSource):
        config, column, rename = HUB[dataset]
        for split in ("train", "val", "test"):
            rows = load_hub_dataset(where, rename.get(split, split), config)
            texts[split] = "".join(r if r.endswith("\n") else r + "\n" for r in rows[column])  # one line per row
    elif dataset == "tinyshakespeare":
        text, path = _read(where, names["all"])
        files.append(path)
        n = int(0.9 * len(text))  # nanoGPT's split
        texts = {"train": text[:n], "val": text[n:]}
    else:
        for split, name in names.items():
            texts[split], path = _read(where, name)
            files.append(path)
    tokens = {k: _tokenize(v, vocab_type) for k, v in texts.items()}
    vocab = Vocab.build(tokens["train"], vocab_type)
    if limit_train:
        tokens["train"] = tokens["train"][:limit_train]
    splits = {k: torch.tensor(vocab.encode(v, strict=False), dtype=torch.long) for k, v in tokens.items()}
    return Corpus(dataset, vocab, splits, files)


def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N,) -> (B, N // B): B parallel streams, each a contiguous slice of the corpus.

    Row b continues where it left off from one batch to the next, which is what lets truncated
    BPTT carry the hidden state across batches.
    """
    n = data.numel() // batch_size
    if n < 2:
        raise UserError(f"corpus split of {data.numel()} tokens is too short for batch_size {batch_size}")
    return data[: n * batch_size].view(batch_size, n)


def num_batches(stream: torch.Tensor, seq_len: int) -> int:
    """Number of BPTT segments in a (B, N) stream (the last may be shorter than ``seq_len``)."""
    return (stream.size(1) - 1 + seq_len - 1) // seq_len


def get_batch(stream: torch.Tensor, i: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The i-th segment: inputs (B, T) and targets shifted by one (B, T), T <= seq_len."""
    start = i * seq_len
    t = min(seq_len, stream.size(1) - 1 - start)
    return stream[:, start:start + t], stream[:, start + 1:start + 1 + t]
