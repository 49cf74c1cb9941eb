"""A Transformer encoder for text classification (IMDb, AG News): ``forward(x, mask, labels=None) -> (logits, loss)``.

tokens (B, T) -> sqrt(C) * E + PE -> N encoder layers (the same as the translation model's) -> one vector per
text -> Dropout -> Linear -> class logits (B, K). ``pooling``:
  * ``"cls"``: a learned [CLS] vector is put in front of every text (position 0) and its final state is the
    summary (BERT, Devlin et al. 2019): attention decides what to collect;
  * ``"mean"``: the average of the final states of the real (non-padding) tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from scripts.cli import UserError
from stage4_transformer.models.attention import ATTN_IMPLS, padding_mask
from stage4_transformer.models.layers import check_not_empty, init_xavier, positional_encoding, scaled_embedding
from stage4_transformer.models.transformer import IMPLS, POS_KINDS, Encoder, torch_encoder, validate

POOLINGS = ("cls", "mean")


@dataclass
class ClassifierConfig:
    vocab_size: int = field(default=8000, metadata={"help": "subword vocabulary size"})
    n_classes: int = field(default=2, metadata={"help": "number of labels"})
    d_model: int = field(default=128, metadata={"help": "model width C"})
    n_heads: int = field(default=4, metadata={"help": "attention heads h (d_model must be divisible by it)"})
    n_layers: int = field(default=2, metadata={"help": "encoder layers N"})
    d_ff: int = field(default=512, metadata={"help": "inner size of the position-wise feed-forward network"})
    dropout: float = field(default=0.1, metadata={"help": "dropout (residual, attention weights, FFN, classifier)"})
    max_len: int = field(default=512, metadata={"help": "longest input in tokens (with [CLS]); longer is an error"})
    norm_first: bool = field(default=True, metadata={"help": "pre-LN (--no-norm_first: the paper's post-LN)"})
    pos: str = field(default="sinusoidal", metadata={"choices": list(POS_KINDS), "help": "positional encoding"})
    impl: str = field(default="scratch", metadata={"choices": list(IMPLS), "help": "our layers or nn.Transformer*"})
    attn_impl: str = field(default="manual", metadata={"choices": list(ATTN_IMPLS),
                                                       "help": "attention kernel of the scratch implementation"})
    fused_qkv: bool = field(default=False, metadata={"help": "one 3C x C projection for Q, K, V (scratch impl)"})
    pooling: str = field(default="cls", metadata={"choices": list(POOLINGS), "help": "[CLS] vector or mean pooling"})
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing epsilon of the loss"})
    pad_id: int = field(default=0, metadata={"help": "id of <pad>"})

    def __post_init__(self):
        validate(self, layers=("n_layers",), special=("pad_id",))
        if self.n_classes < 2:
            raise UserError(f"impossible model config: n_classes must be >= 2, got {self.n_classes}")
        if self.pooling not in POOLINGS:
            raise UserError(f"impossible model config: pooling must be one of {', '.join(POOLINGS)}, "
                            f"got {self.pooling!r}")


class TransformerClassifier(nn.Module):
    TORCH_PREFIXES = {"encoder.": "core."}  # see convert.py

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, C)
        self.pos = positional_encoding(cfg.pos, cfg.max_len, C)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.impl == "scratch":
            self.encoder = Encoder(C, cfg.n_heads, cfg.d_ff, cfg.n_layers, cfg.dropout, cfg.norm_first,
                                   cfg.fused_qkv, cfg.attn_impl)
        else:
            self.core = torch_encoder(C, cfg.n_heads, cfg.d_ff, cfg.n_layers, cfg.dropout, cfg.norm_first)
        self.cls = nn.Parameter(torch.randn(1, 1, C) * 0.02) if cfg.pooling == "cls" else None  # (1, 1, C)
        self.head = nn.Linear(C, cfg.n_classes)
        init_xavier(self, skip=(self.embed, self.pos))
        nn.init.normal_(self.embed.weight, std=C ** -0.5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        """x (B, T) ids, mask (B, T) keep (None: ``x != pad_id``), labels (B,) -> ``(logits (B, K), loss or None)``."""
        keep = (x != self.cfg.pad_id) if mask is None else mask.bool()  # (B, T)
        if self.cls is None:
            check_not_empty(keep, "text")  # mean pooling over no tokens (with [CLS] an empty text is fine)
        h = scaled_embedding(self.embed, x)  # (B, T, C)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.size(0), 1, -1), h], dim=1)  # (B, 1+T, C) [CLS] first
            keep = torch.cat([keep.new_ones(keep.size(0), 1), keep], dim=1)  # (B, 1+T)
        h = self.drop(h + self.pos(h.size(1)))  # (B, T', C)
        if self.cfg.impl == "torch":
            h = self.core(h, src_key_padding_mask=~keep)  # (B, T', C)
        else:
            h = self.encoder(h, padding_mask(keep))  # (B, T', C)
        if self.cls is not None:
            pooled = h[:, 0]  # (B, C) the [CLS] state
        else:
            w = keep.to(h.dtype)[..., None]  # (B, T, 1)
            pooled = (h * w).sum(1) / w.sum(1).clamp(min=1)  # (B, C) mean over real tokens
        logits = self.head(self.drop(pooled))  # (B, K)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.label_smoothing)
        return logits, loss

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
