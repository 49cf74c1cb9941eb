"""Character-level tokenizer: one id per character of the training text (nanoGPT's ``shakespeare_char``).

The vocabulary is the sorted set of characters of the **training split** (as in stage 2; nanoGPT builds it
on the whole file, which for tiny Shakespeare gives the same 65 characters). Encoding a character the
vocabulary never saw is a one-line :class:`UnknownCharactersError` naming it; decoding never fails
(an id outside the vocabulary becomes U+FFFD).
"""
from __future__ import annotations

from typing import Iterable, Sequence

from scripts.cli import UserError

SHOWN = 10  # unknown characters named in the error message


class UnknownCharactersError(UserError):
    """The text has characters that are not in the character vocabulary."""


class CharTokenizer:
    kind = "char"
    eot_id = None  # a character model has no end-of-text token

    def __init__(self, chars: Sequence[str]):
        self.chars = list(chars)
        if not self.chars or any(not isinstance(c, str) or len(c) != 1 for c in self.chars) \
                or len(set(self.chars)) != len(self.chars):
            raise UserError("a character vocabulary must be a non-empty list of distinct single characters")
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        if not text:
            raise UserError("cannot build a character vocabulary from empty text")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown_chars(self, text: str) -> list[str]:
        return sorted(set(text) - self.stoi.keys())

    def encode(self, text: str) -> list[int]:
        unknown = self.unknown_chars(text)
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:SHOWN]) + (" ..." if len(unknown) > SHOWN else "")
            raise UnknownCharactersError(
                f"{len(unknown)} character(s) not in the {self.vocab_size}-character vocabulary of the training text: "
                f"{shown}; remove them, or use a byte-level BPE model (it encodes any text)")
        stoi = self.stoi
        return [stoi[c] for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        n = len(self.chars)
        return "".join(self.chars[i] if 0 <= i < n else "\ufffd" for i in map(int, ids))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": list(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        if not isinstance(d, dict) or d.get("kind") != cls.kind or not isinstance(d.get("chars"), list):
            raise UserError("not a stage-5 character tokenizer (expected kind 'char' and a list 'chars')")
        return cls(d["chars"])
