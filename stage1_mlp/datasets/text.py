"""Tokenization and n-grams (docs/stage1_mlp.md §3.1).

    >>> tokenize("A <br />GREAT film... isn't it?")
    ['a', 'great', 'film', '...', "isn't", 'it', '?']
    >>> add_ngrams(['a', 'great', 'film'], 2)
    ['a', 'great', 'film', 'a great', 'great film']
"""
from __future__ import annotations

import re

# IMDb reviews keep the site's HTML line breaks; AG News writes " #36;" for "$" and "\" for joins.
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_AG_ENTITY = re.compile(r" ?#(\d+);")
# a token is a word (letters/digits, with an inner apostrophe: "isn't"), a run of dots / "!" / "?",
# or any other single non-space symbol: punctuation is kept, it carries signal ("!!!", ":)").
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*|\.{2,}|[!?]+|[^\w\s]", re.UNICODE)


def clean(text: str) -> str:
    """Undo dataset markup: ``<br />`` → space, AG News ``#36;`` → ``$``, ``\\`` joins → space."""
    text = _HTML_BREAK.sub(" ", text)
    text = _AG_ENTITY.sub(lambda m: chr(int(m.group(1))) if int(m.group(1)) < 0x110000 else " ", text)
    return text.replace("\\", " ")


def tokenize(text: str) -> list[str]:
    """Lower-case, remove markup, split words from punctuation."""
    return _TOKEN.findall(clean(text).lower())


def add_ngrams(tokens: list[str], n: int) -> list[str]:
    """``tokens`` followed by every 2..n-gram (joined with a space) of them."""
    out = list(tokens)
    for k in range(2, n + 1):
        out += map(" ".join, zip(*(tokens[j:] for j in range(k))))  # k-grams: (t0..tk-1), (t1..tk), ...
    return out
