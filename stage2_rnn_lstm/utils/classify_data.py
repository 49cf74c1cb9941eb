"""Words, a word vocabulary and padded batches for the LSTM classifier (``classify.py``).

The splits, the AG News CV folds and the metrics are stage 1's protocols, shared by every classifier in
:mod:`scripts.textclass` (IMDb: 25k train with 5% of every class carved for validation, 25k test; AG News:
train -> test, or ``ag_news_test_cv``). This module adds what is the LSTM's own:

* :func:`tokenize`: stage 1's word rule (``stage1_mlp/datasets/text.py``, read as a specification):
  lower-case, ``<br />`` and AG News ``#36;`` markup undone, words (with inner apostrophes) split from
  punctuation, runs of ``...``/``!``/``?`` kept as one token;
* :class:`WordVocab`: built on the **training part only**: words seen at least ``min_freq`` times, the
  ``max_size`` most frequent (ties: first seen first), after ``<pad>`` = 0 and ``<unk>`` = 1;
* :func:`encode_texts` (first ``max_len`` words; an empty text is one ``<unk>``) and :func:`collate`
  (pad at the end with ``<pad>``: the model finds every text's length from it).
"""
from __future__ import annotations

import re
from collections import Counter

import torch

from scripts.checkpoint import vocab_fingerprint
from scripts.cli import UserError

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1

_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_AG_ENTITY = re.compile(r" ?#(\d+);")
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*|\.{2,}|[!?]+|[^\w\s]", re.UNICODE)


def clean(text: str) -> str:
    """Undo dataset markup: ``<br />`` -> space, AG News ``#36;`` -> ``$``, ``\\`` joins -> space."""
    text = _HTML_BREAK.sub(" ", text)
    text = _AG_ENTITY.sub(lambda m: chr(int(m.group(1))) if int(m.group(1)) < 0x110000 else " ", text)
    return text.replace("\\", " ")


def tokenize(text: str) -> list[str]:
    """Lower-case words and punctuation: ``"A <br />GREAT film... isn't it?"`` ->
    ``['a', 'great', 'film', '...', "isn't", 'it', '?']``."""
    return _TOKEN.findall(clean(text).lower())


class WordVocab:
    """Word <-> id; ``<pad>`` = 0, ``<unk>`` = 1. Saved in checkpoints as plain data (:meth:`to_dict`)."""

    def __init__(self, tokens: list[str]):
        if tokens[:2] != [PAD, UNK]:
            raise ValueError("a word vocabulary starts with <pad>, <unk>")
        self.tokens = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def fingerprint(self) -> str:
        return vocab_fingerprint(self.tokens)

    @classmethod
    def build(cls, token_lists: list[list[str]], min_freq: int = 2, max_size: int = 0) -> "WordVocab":
        """From the training texts' tokens: words with count >= ``min_freq``, most frequent first (ties: first
        seen first), at most ``max_size`` words in all (0 = no cap), the two specials included."""
        counts = Counter(t for toks in token_lists for t in toks)
        words = [w for w, c in counts.most_common() if c >= min_freq and w not in (PAD, UNK)]
        if max_size:
            words = words[:max(max_size - 2, 0)]
        return cls([PAD, UNK, *words])

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.stoi.get(t, UNK_ID) for t in tokens]

    def known(self, tokens: list[str]) -> int:
        """How many of ``tokens`` are in the vocabulary."""
        return sum(t in self.stoi for t in tokens)

    def to_dict(self) -> dict:
        return {"vocab_type": "word_classification", "tokens": list(self.tokens), "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, d: dict) -> "WordVocab":
        if not isinstance(d, dict) or d.get("vocab_type") != "word_classification" or \
                not isinstance(d.get("tokens"), list):
            raise UserError("not a stage-2 classifier vocabulary (expected vocab_type 'word_classification')")
        return cls(d["tokens"])


def encode_texts(vocab: WordVocab, texts: list[str], max_len: int) -> list[list[int]]:
    """Ids of the first ``max_len`` words of every text; a text without a single token becomes ``[<unk>]``."""
    return [vocab.encode(tokenize(t)[:max_len]) or [UNK_ID] for t in texts]


def collate(ids: list[list[int]], idx) -> torch.Tensor:
    """``x`` (B, T): the texts ``idx`` padded at the end with ``<pad>`` to the longest of them."""
    rows = [ids[i] for i in idx]
    x = torch.full((len(rows), max(len(r) for r in rows)), PAD_ID, dtype=torch.long)
    for b, r in enumerate(rows):
        x[b, :len(r)] = torch.tensor(r, dtype=torch.long)
    return x
