"""Byte-level BPE written from scratch: GPT-2's tokenizer (docs/stage5_gpt.md, the BPE section).

Byte-pair encoding (Sennrich, Haddow & Birch 2016, after Gage 1994) starts from single symbols and
repeatedly merges the most frequent adjacent pair into a new symbol. GPT-2 (Radford et al. 2019, §2.2)
runs it on **bytes** (so every string encodes, no ``<unk>``), and first cuts the text into pre-tokens
with a regex (:data:`GPT2_SPLIT_PATTERN`) so merges never cross a word/number/punctuation boundary;
a leading space stays with its word (`` the``). The byte <-> printable-character table of
:func:`bytes_to_unicode` only serves to write byte tokens as readable strings (``Ġthe`` for `` the``),
the form Hugging Face ``tokenizers`` and GPT-2's ``merges.txt`` use.

Training, two ways (they learn the same merges; ``tests/test_tokenizer.py`` checks it):

* :meth:`ByteLevelBPE.train_naive` recounts every pair of every word before each merge (what
  karpathy/minbpe does): cost ~ merges x corpus size.
* :meth:`ByteLevelBPE.train` counts once, then **updates the counts incrementally**: the distinct
  pre-tokens are kept with their frequencies, an index ``pair -> words containing it`` says which
  words a merge touches, only those words are re-counted, and a heap with lazy deletion yields the
  most frequent pair. Cost ~ the words each merge touches.

Ties (equal counts) go to the smallest ``(left id, right id)`` pair, in both trainers.
Ids: 0..255 are the single bytes, then one id per merge, then the special tokens
(``<|endoftext|>`` last), as in GPT-2. A tokenizer loaded from Hugging Face keeps that library's ids.
The pre-tokenizer is the ``regex`` package; ``tokenizers`` uses Oniguruma, whose Unicode tables may be of
another version, so the two can split differently around very recent code points (e.g. CJK extension H,
Unicode 15); on ordinary text (the tests use all of tiny Shakespeare's validation text) the ids are identical.
"""
from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import regex

from scripts.cli import UserError

EOT = "<|endoftext|>"
# GPT-2's pre-tokenizer (openai/gpt-2 src/encoder.py; the same string as tokenizers' ByteLevel).
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
FORMAT = 1
_CACHE_LIMIT = 500_000  # distinct pre-tokens remembered by encode()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table byte -> printable character: printable Latin-1 bytes map to themselves, the other
    68 (control bytes, space, ...) to the characters from U+0100 on (space -> ``Ġ``, newline -> ``Ċ``)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def token_str(token: bytes) -> str:
    """A byte token written with the printable table (``b" the"`` -> ``"Ġthe"``)."""
    return "".join(BYTE_TO_CHAR[b] for b in token)


def str_token(text: str) -> bytes:
    """Inverse of :func:`token_str`."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in text)
    except KeyError as e:
        raise UserError(f"{text!r} is not a byte-level token (character {e.args[0]!r} is outside the byte table)") \
            from None


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, left to right (``aaa`` -> ``Z a``)."""
    a, b = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _word_counts(text: str, special_tokens: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Distinct pre-tokens of ``text`` as byte lists, with their frequencies. Special-token strings in the
    training text are cut out first, so no merge learns them (or crosses them)."""
    pat = regex.compile(GPT2_SPLIT_PATTERN)
    chunks = _special_splitter(special_tokens).split(text)[::2] if special_tokens else [text]
    counts: Counter = Counter()
    for chunk in chunks:
        counts.update(pat.findall(chunk))
    return [list(w.encode("utf-8")) for w in counts], list(counts.values())


def _special_splitter(special_tokens: Iterable[str]):
    """A regex whose ``split`` keeps the special tokens (longest first) at the odd positions."""
    alternatives = "|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True))
    return regex.compile(f"({alternatives})")


class ByteLevelBPE:
    """``encode(text) -> ids``, ``decode(ids) -> text``; trained with :meth:`train` (or :meth:`train_naive`).

    ``tokens[i]`` is the byte string of id ``i`` (``None`` at the ids of special tokens), ``merges`` the
    learned pairs ``(left id, right id)`` in the order they were learned (= their priority when encoding),
    ``special_tokens`` maps each special string to its id.
    """

    kind = "bpe"

    def __init__(self, tokens: Sequence[bytes | None], merges: Sequence[tuple[int, int]],
                 special_tokens: dict[str, int] | None = None, pattern: str = GPT2_SPLIT_PATTERN):
        self.tokens = list(tokens)
        self.merges = [tuple(m) for m in merges]
        self.special_tokens = dict(special_tokens or {})
        self.pattern = pattern
        for s, i in self.special_tokens.items():
            if not 0 <= i < len(self.tokens) or self.tokens[i] is not None:
                raise UserError(f"special token {s!r} has id {i}, which is not a free slot of the vocabulary")
        self.token_to_id = {t: i for i, t in enumerate(self.tokens) if t is not None}
        if len(self.token_to_id) + len(self.special_tokens) != len(self.tokens):
            raise UserError("the vocabulary has duplicate tokens or ids that are neither tokens nor special tokens")
        missing = [b for b in range(256) if bytes([b]) not in self.token_to_id]
        if missing:
            raise UserError(f"the vocabulary lacks {len(missing)} of the 256 single bytes (e.g. {missing[0]}), "
                            f"so some text could not be encoded")
        self._byte_ids = [self.token_to_id[bytes([b])] for b in range(256)]
        self._ranks: dict[tuple[int, int], tuple[int, int]] = {}  # pair -> (priority, merged id)
        for rank, (a, b) in enumerate(self.merges):
            if not (0 <= a < len(self.tokens) and 0 <= b < len(self.tokens)) or None in (self.tokens[a],
                                                                                    self.tokens[b]):
                raise UserError(f"merge {rank} ({a}, {b}) refers to ids that are not ordinary tokens")
            new = self.token_to_id.get(self.tokens[a] + self.tokens[b])
            if new is None:
                raise UserError(f"merge {rank} ({token_str(self.tokens[a])} {token_str(self.tokens[b])}) makes a "
                                f"token that is not in the vocabulary")
            self._ranks.setdefault((a, b), (rank, new))
        self._pat = regex.compile(pattern)
        self._special_re = _special_splitter(self.special_tokens) if self.special_tokens else None
        self._cache: dict[str, tuple[int, ...]] = {}

    # ----- the contract every stage-5 tokenizer follows --------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def eot_id(self) -> int | None:
        return self.special_tokens.get(EOT)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; a special-token string in it (``<|endoftext|>``) becomes that token's id."""
        if self._special_re is None:
            return self.encode_ordinary(text)
        ids: list[int] = []
        for i, part in enumerate(self._special_re.split(text)):
            if i % 2:
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with special-token strings treated as ordinary text."""
        ids: list[int] = []
        cache = self._cache
        for piece in self._pat.findall(text):
            piece_ids = cache.get(piece)
            if piece_ids is None:
                piece_ids = self._encode_piece(piece.encode("utf-8"))
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[piece] = piece_ids
            ids.extend(piece_ids)
        return ids

    def _encode_piece(self, data: bytes) -> tuple[int, ...]:
        """One pre-token: start from its bytes, apply the earliest-learned merge present, repeat."""
        ids = [self._byte_ids[b] for b in data]
        ranks = self._ranks
        while len(ids) > 1:
            best, best_rank = None, None
            for pair in zip(ids, ids[1:]):
                r = ranks.get(pair)
                if r is not None and (best_rank is None or r[0] < best_rank):
                    best, best_rank = pair, r[0]
            if best is None:
                break
            ids = merge_pair(ids, best, ranks[best][1])
        return tuple(ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; byte sequences that are not UTF-8 (a cut multi-byte character) become U+FFFD."""
        special = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        out = []
        for i in ids:
            i = int(i)
            tok = self.tokens[i] if 0 <= i < len(self.tokens) else b"\xef\xbf\xbd"  # U+FFFD for unknown ids
            out.append(special[i] if tok is None else tok)
        return b"".join(out).decode("utf-8", errors="replace")

    def id_to_str(self, i: int) -> str:
        """A readable form of one token (``Ġthe``; special tokens as themselves)."""
        tok = self.tokens[i]
        return next(s for s, j in self.special_tokens.items() if j == i) if tok is None else token_str(tok)

    # ----- training ----------------------------------------------------------------------------------

    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens: Sequence[str] = (EOT,)) -> "ByteLevelBPE":
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges on ``text``, updating pair counts incrementally."""
        return cls._train(text, vocab_size, special_tokens, _learn_incremental)

    @classmethod
    def train_naive(cls, text: str, vocab_size: int, special_tokens: Sequence[str] = (EOT,)) -> "ByteLevelBPE":
        """The same merges as :meth:`train`, recounting every pair before each merge (the slow baseline)."""
        return cls._train(text, vocab_size, special_tokens, _learn_naive)

    @classmethod
    def _train(cls, text, vocab_size, special_tokens, learn) -> "ByteLevelBPE":
        special_tokens = list(dict.fromkeys(special_tokens))
        smallest = 256 + len(special_tokens)
        if vocab_size < smallest:
            raise UserError(f"--vocab_size must be at least {smallest} (256 bytes + {len(special_tokens)} special "
                            f"token(s)), got {vocab_size}")
        words, freqs = _word_counts(text, special_tokens)
        tokens: list[bytes | None] = [bytes([b]) for b in range(256)]
        merges = learn(words, freqs, tokens, vocab_size - len(special_tokens))
        special = {}
        for s in special_tokens:
            special[s] = len(tokens)
            tokens.append(None)
        return cls(tokens, merges, special)

    # ----- saving -------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Plain JSON data: the vocabulary and merges written as GPT-2 writes them (``Ġ t``)."""
        return {"kind": self.kind, "format": FORMAT, "pattern": self.pattern,
                "vocab": [self.id_to_str(i) for i in range(len(self.tokens))],
                "merges": [f"{token_str(self.tokens[a])} {token_str(self.tokens[b])}" for a, b in self.merges],
                "special_tokens": dict(self.special_tokens)}

    @classmethod
    def from_dict(cls, d: dict) -> "ByteLevelBPE":
        try:
            if d.get("kind") != cls.kind or d.get("format") != FORMAT:
                raise ValueError("kind/format")
            special = {str(s): int(i) for s, i in d["special_tokens"].items()}
            special_ids = set(special.values())
            tokens = [None if i in special_ids else str_token(t) for i, t in enumerate(d["vocab"])]
            ids = {t: i for i, t in enumerate(tokens) if t is not None}
            merges = []
            for m in d["merges"]:
                a, b = m.split(" ")
                merges.append((ids[str_token(a)], ids[str_token(b)]))
            return cls(tokens, merges, special, pattern=d["pattern"])
        except UserError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError):
            raise UserError(f"not a stage-5 byte-level BPE tokenizer (expected kind 'bpe', format {FORMAT}, "
                            f"'vocab', 'merges', 'special_tokens')") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ByteLevelBPE":
        from scripts.data import read_text

        try:
            d = json.loads(read_text(path))
        except FileNotFoundError:
            raise UserError(f"{path}: no such tokenizer file") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
        return cls.from_dict(d)

    # ----- Hugging Face tokenizers interop -------------------------------------------------------------

    @classmethod
    def from_hf(cls, data: dict | str) -> "ByteLevelBPE":
        """Our encoder with the vocabulary and merges of a Hugging Face ``tokenizer.json`` (dict or JSON string)
        of a ByteLevel BPE; its ids are kept, so both give the same ids for the same text."""
        d = json.loads(data) if isinstance(data, str) else data
        model, pre = d.get("model") or {}, d.get("pre_tokenizer") or {}
        if model.get("type") != "BPE" or pre.get("type") != "ByteLevel":
            raise UserError("not a byte-level BPE tokenizer.json (need model BPE and pre_tokenizer ByteLevel)")
        if pre.get("add_prefix_space") or not pre.get("use_regex", True):
            raise UserError("tokenizer.json's ByteLevel pre-tokenizer must have add_prefix_space=false and "
                            "use_regex=true (GPT-2's settings)")
        special = {t["content"]: t["id"] for t in d.get("added_tokens", [])}
        vocab = model["vocab"]
        tokens: list[bytes | None] = [None] * (max([*vocab.values(), *special.values()]) + 1)
        for s, i in vocab.items():
            if s not in special:
                tokens[i] = str_token(s)
        ids = {t: i for i, t in enumerate(tokens) if t is not None}
        merges = []
        for m in model["merges"]:
            a, b = m.split(" ") if isinstance(m, str) else m
            merges.append((ids[str_token(a)], ids[str_token(b)]))
        return cls(tokens, merges, special)

    def to_hf_tokenizer_json(self) -> str:
        """A Hugging Face ``tokenizer.json`` (ByteLevel BPE, GPT-2 settings) with our vocabulary and merges:
        ``tokenizers.Tokenizer.from_str`` of it (or ``transformers`` with ``tokenizer_file=``) encodes as we do."""
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        vocab = {self.id_to_str(i): i for i in range(len(self.tokens))}
        merges = [(token_str(self.tokens[a]), token_str(self.tokens[b])) for a, b in self.merges]
        tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tk.decoder = decoders.ByteLevel()
        tk.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in self.special_tokens])
        return tk.to_str()

    def save_hf_tokenizer_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_hf_tokenizer_json(), encoding="utf-8")
        return path


def hf_reference_tokenizer(text: str, vocab_size: int, special_tokens: Sequence[str] = (EOT,)):
    """The peer implementation: Hugging Face ``tokenizers`` ByteLevel BPE trained on ``text`` with the settings
    ours uses (GPT-2 regex, no prefix space, all 256 bytes in the alphabet, the same vocabulary size)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator([text], trainer=trainer)
    return tk


# ----- the two trainers: ``learn(words, freqs, tokens, target)`` appends to ``tokens``, returns the merges ----

def _new_token(tokens: list, token_to_id: dict, pair: tuple[int, int]) -> int:
    """Id of the merged token; a byte string already in the vocabulary (reached by other merges) keeps its id."""
    merged = tokens[pair[0]] + tokens[pair[1]]
    new = token_to_id.get(merged)
    if new is None:
        new = token_to_id[merged] = len(tokens)
        tokens.append(merged)
    return new


def _learn_naive(words, freqs, tokens, target) -> list[tuple[int, int]]:
    words = [list(w) for w in words]
    token_to_id = {t: i for i, t in enumerate(tokens)}
    merges = []
    while len(tokens) < target:
        counts: dict[tuple[int, int], int] = {}
        for w, f in zip(words, freqs):  # the full recount, before every merge
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + f
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        new = _new_token(tokens, token_to_id, best)
        merges.append(best)
        words = [merge_pair(w, best, new) for w in words]
    return merges


def _learn_incremental(words, freqs, tokens, target) -> list[tuple[int, int]]:
    words = [list(w) for w in words]
    token_to_id = {t: i for i, t in enumerate(tokens)}
    counts: dict[tuple[int, int], int] = defaultdict(int)  # pair -> occurrences in the corpus
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> words that (may) contain it
    for i, (w, f) in enumerate(zip(words, freqs)):
        for pair in zip(w, w[1:]):
            counts[pair] += f
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in counts.items()]  # max-heap by count, ties to the smallest pair
    heapq.heapify(heap)
    merges = []
    while len(tokens) < target and heap:
        neg, best = heapq.heappop(heap)
        if counts.get(best) != -neg:  # stale entry: the count changed since it was pushed
            continue
        new = _new_token(tokens, token_to_id, best)
        merges.append(best)
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for i in where.pop(best):
            w = words[i]
            merged = merge_pair(w, best, new)
            if len(merged) == len(w):  # an earlier merge already removed the pair from this word
                continue
            f = freqs[i]
            for pair in zip(w, w[1:]):
                delta[pair] -= f
            for pair in zip(merged, merged[1:]):
                delta[pair] += f
                if new in pair:
                    where[pair].add(i)
            words[i] = merged
        for pair, d in delta.items():
            if d:
                c = counts[pair] + d
                if c > 0:
                    counts[pair] = c
                    heapq.heappush(heap, (-c, pair))
                else:
                    del counts[pair]
    return merges
