"""Joint subword BPE for translation, trained with Hugging Face ``tokenizers`` (docs/stage4_transformer.md).

The lesson of this stage is the Transformer, so the subword segmentation comes from the well-kept
library (stage 5 writes byte-level BPE by hand and checks it against the same library). One BPE is
learned on the source *and* target sides of the **training split only** (a joint vocabulary, so the
source and target embeddings can be shared and tied to the output projection, as in the paper §3.4).

Pre-tokenisation is ``Metaspace`` (SentencePiece-style): a word-initial space becomes ``▁``, so tokens
read as ``▁un ▁hom me`` in attention maps and decoding back to ordinary text is exact. The tokenizer
is saved inside every checkpoint as its JSON string.
"""
from __future__ import annotations

import unicodedata
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from scripts.cli import UserError

PAD, UNK, BOS, EOS, CLS = "<pad>", "<unk>", "<bos>", "<eos>", "<cls>"
SPECIALS = [PAD, UNK, BOS, EOS, CLS]
PAD_ID, UNK_ID, BOS_ID, EOS_ID, CLS_ID = range(len(SPECIALS))
MIN_VOCAB = 64


class SubwordTokenizer:
    """A thin wrapper: ``encode(text) -> ids`` (no BOS/EOS), ``decode(ids) -> text``, ``tokens(text)``."""

    def __init__(self, tokenizer: Tokenizer):
        self.tk = tokenizer
        for i, special in enumerate(SPECIALS):
            if tokenizer.token_to_id(special) != i:
                raise UserError(f"tokenizer lacks special token {special} at id {i} (not a stage-4 tokenizer)")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2, lowercase: bool = False,
              split_punctuation: bool = False) -> "SubwordTokenizer":
        """BPE on ``texts``. ``lowercase``: fold case before everything (``Great`` and ``great`` share a token);
        ``split_punctuation``: every punctuation mark is its own piece (``film.`` and ``film`` share one). Both
        are saved in the tokenizer JSON, so the checkpoint encodes new text the same way; translation keeps
        them off (its output must be decoded back to cased, punctuated text)."""
        if vocab_size < MIN_VOCAB:
            raise UserError(f"--vocab_size must be at least {MIN_VOCAB}, got {vocab_size}")
        tk = Tokenizer(models.BPE(unk_token=UNK))
        tk.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()]) if lowercase \
            else normalizers.NFC()
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()]) \
            if split_punctuation else pre_tokenizers.Metaspace()
        tk.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIALS,
                                      show_progress=False)
        tk.train_from_iterator(texts, trainer=trainer)
        return cls(tk)

    @classmethod
    def from_str(cls, text: str) -> "SubwordTokenizer":
        try:
            return cls(Tokenizer.from_str(text))
        except Exception as e:  # noqa: BLE001 - a damaged tokenizer JSON is one user error
            raise UserError(f"the saved tokenizer cannot be read ({type(e).__name__})") from None

    def to_str(self) -> str:
        return self.tk.to_str()

    def __len__(self) -> int:
        return self.tk.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tk.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tk.encode_batch(texts)]

    def tokens(self, text: str) -> list[str]:
        return self.tk.encode(text).tokens

    def id_to_token(self, i: int) -> str:
        return self.tk.id_to_token(i)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids → text; specials are dropped and decoding stops at the first ``<eos>``."""
        out = []
        for i in ids:
            if i == EOS_ID:
                break
            if i >= len(SPECIALS):
                out.append(int(i))
        return unicodedata.normalize("NFC", self.tk.decode(out))

    def unknown_chars(self, text: str) -> list[str]:
        """Characters of ``text`` that map to ``<unk>`` (the model never saw them in training)."""
        enc = self.tk.encode(text)
        return sorted({text[a:b] for i, (a, b) in zip(enc.ids, enc.offsets) if i == UNK_ID})
