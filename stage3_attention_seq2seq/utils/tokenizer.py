"""A reversible word tokenizer and a vocabulary built on the training split only.

BLEU must be computed on ordinary, detokenised, cased text (docs/stage3_attention.md, "BLEU").
So the tokenizer has to be *reversible*: ``detokenize(tokenize(s)) == s`` up to whitespace.
We borrow SentencePiece's trick: a token that follows a space starts with ``▁`` (U+2581)::

    "Un homme, l'air fatigué."  ->  ['▁Un', '▁homme', ',', "▁l'", 'air', '▁fatigué', '.']

Words are split from punctuation, French elisions keep their apostrophe (``l'``, ``d'``,
``qu'``), case is kept (the output must be cased). Joining the tokens and turning ``▁`` back
into spaces restores the sentence.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Iterable, Sequence

from scripts.checkpoint import vocab_fingerprint
from scripts.cli import UserError

SPACE = "\u2581"  # "▁": this token was preceded by whitespace
PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

# a word with a trailing apostrophe (elision), a word, or one punctuation character
_PIECE = re.compile(r"(\s*)(\w+['’]|\w+|[^\w\s])")


def normalize(text: str) -> str:
    """NFC-normalise and collapse every kind of whitespace (incl. U+202F) into one space."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def tokenize(text: str) -> list[str]:
    """Split ``text`` into reversible word/punctuation tokens (see the module docstring)."""
    text = normalize(text)
    tokens = []
    for m in _PIECE.finditer(text):
        space, piece = m.groups()
        tokens.append((SPACE if space or m.start() == 0 else "") + piece)
    return tokens


def detokenize(tokens: Iterable[str]) -> str:
    """Inverse of :func:`tokenize`: ordinary text (special tokens are dropped)."""
    return "".join(t for t in tokens if t not in SPECIALS).replace(SPACE, " ").strip()


class Vocab:
    """token <-> id. Ids 0-3 are ``<pad> <bos> <eos> <unk>``. Saved as a plain list of tokens."""

    def __init__(self, itos: Sequence[str]):
        if tuple(itos[:4]) != SPECIALS:
            raise UserError("vocabulary does not start with <pad> <bos> <eos> <unk>")
        self.itos = list(itos)
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 2, max_size: int | None = None) -> "Vocab":
        """Vocabulary of tokens seen ``min_freq`` times in ``sentences`` (the TRAIN split only)."""
        counts = Counter(t for s in sentences for t in s)
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls(list(SPECIALS) + kept[:max_size])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.stoi.get(t, UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens up to (not including) the first ``<eos>``; padding and ``<bos>`` skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                out.append(self.itos[i])
        return out

    def fingerprint(self) -> str:
        return vocab_fingerprint(self.itos)
