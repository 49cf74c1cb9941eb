"""Stage-5 tokenizers: characters (:mod:`.char`) and byte-level BPE written from scratch (:mod:`.bpe`).

Both follow one contract: ``kind``, ``vocab_size``, ``eot_id`` (``None`` for characters),
``encode(text) -> list[int]``, ``decode(ids) -> str`` and ``to_dict()`` (plain JSON data, saved in
``meta.json`` and in every checkpoint); :func:`tokenizer_from_dict` rebuilds either one.
"""
from __future__ import annotations

from scripts.cli import UserError
from stage5_gpt.tokenizer.bpe import EOT, ByteLevelBPE
from stage5_gpt.tokenizer.char import CharTokenizer, UnknownCharactersError

KINDS = {"char": CharTokenizer, "bpe": ByteLevelBPE}

__all__ = ["EOT", "KINDS", "ByteLevelBPE", "CharTokenizer", "UnknownCharactersError", "tokenizer_from_dict"]


def tokenizer_from_dict(d: dict):
    """The tokenizer that ``tok.to_dict()`` describes (one-line :class:`UserError` for anything else)."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in KINDS:
        raise UserError(f"not a stage-5 tokenizer (kind {kind!r}; expected one of {', '.join(KINDS)})")
    return KINDS[kind].from_dict(d)
