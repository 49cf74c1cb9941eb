"""The Transformer's building blocks (Vaswani et al. 2017, §3.1-§3.5), in reading order:

LayerNorm -> positional encodings -> position-wise feed-forward -> residual sub-layer -> encoder layer -> decoder layer.

Shapes: ``(B, T, C)`` with C = d_model; masks are boolean *keep* masks (see :mod:`.attention`).
Dropout sits where PyTorch's ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` put it
(on the attention weights, after the FFN's ReLU, and on each sub-layer's output before the residual sum, §5.4),
so with copied weights the two implementations compute the same function. The paper (§5.4) drops only the
sub-layer outputs and the embeddings; the other two rates can be set apart (``attn_dropout``, ``act_dropout``, as
fairseq's ``--attention-dropout`` / ``--activation-dropout``): on a CPU each dropout mask costs time to draw.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from scripts.cli import UserError
from stage4_transformer.models.attention import MultiHeadAttention


class SequenceTooLong(UserError, ValueError):
    """An input longer than the positional table (``max_len``): a one-line error, never an index error."""


class EmptyInput(UserError, ValueError):
    """A text with no tokens at all: attention over zero keys has no softmax (it would give NaN)."""


def check_not_empty(keep: torch.Tensor, what: str = "input") -> None:
    """keep (B, T) bool: every row needs at least one real token."""
    if not bool(keep.any(dim=1).all()):
        rows = (~keep.any(dim=1)).nonzero()[:, 0].tolist()
        raise EmptyInput(f"empty {what}: row(s) {rows} of the batch have no tokens")


# ----- LayerNorm (Ba et al. 2016; used after/before every sub-layer, §3.1) ---------------------------

class LayerNorm(nn.Module):
    """``LN(x) = gamma * (x - mean(x)) / sqrt(var(x) + eps) + beta`` over the last dimension (C).

    ``var`` is the biased variance (divide by C), as in ``nn.LayerNorm``; ``weight`` = gamma, ``bias`` = beta.
    """

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))  # gamma (C,)
        self.bias = nn.Parameter(torch.zeros(d_model))  # beta (C,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)  # (B, T, 1)
        var = (x - mean).pow(2).mean(dim=-1, keepdim=True)  # (B, T, 1) biased
        return self.weight * (x - mean) / torch.sqrt(var + self.eps) + self.bias  # (B, T, C)


# ----- positional encodings (§3.5) ---------------------------------------------------------------

def check_length(T: int, offset: int, max_len: int) -> None:
    if offset + T > max_len:
        raise SequenceTooLong(f"sequence of {offset + T} tokens is longer than max_len={max_len} "
                              f"(the positional table); shorten the input or train with a larger --max_len")


def sinusoid_table(max_len: int, d_model: int) -> torch.Tensor:
    """``PE(pos, 2i) = sin(pos / 10000^(2i/d_model))``, ``PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))``."""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (L, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (C/2,) the even dimensions 2i
    angle = pos / 10000.0 ** (two_i / d_model)  # (L, C/2)
    table = torch.zeros(max_len, d_model, dtype=torch.float64)  # (L, C)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])  # odd d_model: one cos column fewer
    return table


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed table (not a parameter, not saved in checkpoints: it is recomputed from max_len and d_model)."""

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.max_len = max_len
        self.register_buffer("table", sinusoid_table(max_len, d_model).to(torch.get_default_dtype()),
                             persistent=False)  # (L, C)

    def forward(self, T: int, offset: int = 0) -> torch.Tensor:
        """Encodings of positions offset .. offset+T-1 -> (T, C)."""
        check_length(T, offset, self.max_len)
        return self.table[offset:offset + T]  # (T, C)


class LearnedPositionalEncoding(nn.Module):
    """One trained vector per position (the paper's alternative in §3.5 / Table 3 row E)."""

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.max_len = max_len
        self.embed = nn.Embedding(max_len, d_model)  # (L, C)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, T: int, offset: int = 0) -> torch.Tensor:
        check_length(T, offset, self.max_len)
        return self.embed.weight[offset:offset + T]  # (T, C)


def positional_encoding(kind: str, max_len: int, d_model: int) -> nn.Module:
    return {"sinusoidal": SinusoidalPositionalEncoding, "learned": LearnedPositionalEncoding}[kind](max_len, d_model)


# ----- position-wise feed-forward (§3.3) -------------------------------------------------------------

class PositionwiseFeedForward(nn.Module):
    """Eq. (2): ``FFN(x) = max(0, x W_1 + b_1) W_2 + b_2``, the same two-layer MLP at every position."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)  # W_1, b_1
        self.linear2 = nn.Linear(d_ff, d_model)  # W_2, b_2
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.drop(torch.relu(self.linear1(x))))  # (B, T, C) -> (B, T, d_ff) -> (B, T, C)


# ----- residual sub-layer (§3.1, §5.4) -------------------------------------------------------------------

class Residual(nn.Module):
    """One sub-layer with its residual connection and LayerNorm.

    * post-LN (the paper, §3.1): ``x = LayerNorm(x + Dropout(Sublayer(x)))``
    * pre-LN (``norm_first=True``; Xiong et al. 2020): ``x = x + Dropout(Sublayer(LayerNorm(x)))``; the residual path
      stays an identity, so gradients reach early layers unscaled and training needs little or no warm-up. A pre-LN
      stack ends with one more LayerNorm (see :class:`Encoder` in transformer.py).
    """

    def __init__(self, d_model: int, dropout: float, norm_first: bool):
        super().__init__()
        self.norm = LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: torch.Tensor, sublayer) -> torch.Tensor:
        if self.norm_first:
            return x + self.drop(sublayer(self.norm(x)))  # (B, T, C)
        return self.norm(x + self.drop(sublayer(x)))  # (B, T, C)


# ----- encoder and decoder layers (§3.1) ---------------------------------------------------------------

def _rate(p: float | None, default: float) -> float:
    """A sub-module's dropout rate: ``p``, or ``default`` when ``p`` is None or negative (``-1`` = "same")."""
    return default if p is None or p < 0 else p


class EncoderLayer(nn.Module):
    """Self-attention over the source, then the FFN; each wrapped in :class:`Residual`."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, norm_first: bool = False,
                 fused_qkv: bool = False, attn_impl: str = "manual", attn_dropout: float | None = None,
                 act_dropout: float | None = None):
        """``dropout``: the residual branches; ``attn_dropout`` / ``act_dropout`` (None = ``dropout``): the
        attention weights and the FFN's hidden activations."""
        super().__init__()
        attn_p, act_p = _rate(attn_dropout, dropout), _rate(act_dropout, dropout)
        self.self_attn = MultiHeadAttention(d_model, n_heads, attn_p, fused_qkv, attn_impl)
        self.ffn = PositionwiseFeedForward(d_model, d_ff, act_p)
        self.res1 = Residual(d_model, dropout, norm_first)
        self.res2 = Residual(d_model, dropout, norm_first)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, S, C); ``mask`` keep mask (B, 1, 1, S) of real source tokens."""
        x = self.res1(x, lambda h: self.self_attn(h, mask=mask)[0])  # (B, S, C)
        return self.res2(x, self.ffn)  # (B, S, C)


class DecoderLayer(nn.Module):
    """Masked self-attention over the target prefix, cross-attention to the encoder output ("memory"), FFN.

    Incremental decoding (``cache`` given, x is the newest position only, (B, 1, C)):
      * self-attention: this position's keys/values are appended to ``cache["self_k"/"self_v"]`` (B, h, t, d_k);
        the query attends to all of them, so no causal mask is needed (the future is not computed yet);
      * cross-attention: the memory's keys/values are computed on the first step and kept in
        ``cache["cross_k"/"cross_v"]`` (B, h, S, d_k): once per sentence, not once per generated token.
    This is exact because every layer's input at position t depends on positions <= t only.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, norm_first: bool = False,
                 fused_qkv: bool = False, attn_impl: str = "manual", attn_dropout: float | None = None,
                 act_dropout: float | None = None):
        super().__init__()
        attn_p, act_p = _rate(attn_dropout, dropout), _rate(act_dropout, dropout)
        self.self_attn = MultiHeadAttention(d_model, n_heads, attn_p, fused_qkv, attn_impl)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, attn_p, fused_qkv, attn_impl)
        self.ffn = PositionwiseFeedForward(d_model, d_ff, act_p)
        self.res1 = Residual(d_model, dropout, norm_first)
        self.res2 = Residual(d_model, dropout, norm_first)
        self.res3 = Residual(d_model, dropout, norm_first)

    def _self_attention(self, h: torch.Tensor, mask, cache: dict | None) -> torch.Tensor:
        if cache is None:
            return self.self_attn(h, mask=mask)[0]  # (B, T, C)
        q, k, v = self.self_attn.project_qkv(h)  # 3 x (B, h, 1, d_k) the newest position
        if cache.get("self_k") is not None:
            k = torch.cat([cache["self_k"], k], dim=2)  # (B, h, t+1, d_k)
            v = torch.cat([cache["self_v"], v], dim=2)  # (B, h, t+1, d_k)
        cache["self_k"], cache["self_v"] = k, v
        return self.self_attn.attend(q, k, v, mask)[0]  # (B, 1, C)

    def _cross_attention(self, h: torch.Tensor, memory: torch.Tensor, mem_mask, cache: dict | None) -> torch.Tensor:
        if cache is None:
            return self.cross_attn(h, memory, memory, mem_mask)[0]  # (B, T, C)
        if cache.get("cross_k") is None:
            cache["cross_k"], cache["cross_v"] = self.cross_attn.project_kv(memory)  # 2 x (B, h, S, d_k)
        q = self.cross_attn.project_q(h)  # (B, h, 1, d_k)
        return self.cross_attn.attend(q, cache["cross_k"], cache["cross_v"], mem_mask)[0]  # (B, 1, C)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor | None = None,
                mem_mask: torch.Tensor | None = None, cache: dict | None = None) -> torch.Tensor:
        """x (B, T, C) target side; memory (B, S, C); self_mask keep mask (B|1, 1, T, T) (causal & target padding);
        mem_mask (B, 1, 1, S) real source tokens; ``cache`` a dict for incremental decoding (see class doc)."""
        x = self.res1(x, lambda h: self._self_attention(h, self_mask, cache))  # (B, T, C)
        x = self.res2(x, lambda h: self._cross_attention(h, memory, mem_mask, cache))  # (B, T, C)
        return self.res3(x, self.ffn)  # (B, T, C)


def init_xavier(module: nn.Module, skip: tuple = ()) -> None:
    """Xavier-uniform for every matrix (as ``nn.Transformer._reset_parameters``), except the modules in ``skip``."""
    skipped = {id(p) for m in skip for p in m.parameters()}
    for p in module.parameters():
        if p.dim() > 1 and id(p) not in skipped:
            nn.init.xavier_uniform_(p)


def scaled_embedding(embed: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """§3.4: the embedding weights are multiplied by sqrt(d_model) (they are shared with the pre-softmax layer)."""
    return embed(ids) * math.sqrt(embed.embedding_dim)  # (B, T) -> (B, T, C)
