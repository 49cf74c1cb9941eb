"""Scaled dot-product attention and multi-head attention ("Attention Is All You Need", Vaswani et al. 2017, §3.2).

Shapes (batch first everywhere in this stage):
  B batch, T query positions, S key positions, C = d_model, h heads, d_k = C / h per head.
  Model tensors are ``(B, T, C)``; inside attention they are split into heads ``(B, h, T, d_k)``.

Mask convention (one for the whole stage): a **boolean keep mask**, ``True`` = this query may attend to
this key, ``False`` = blocked. It broadcasts against the scores ``(B, h, T, S)``:
  * key padding: :func:`padding_mask` turns ``(B, S)`` into ``(B, 1, 1, S)``;
  * causal (a decoder position sees itself and the past only, §3.2.3): :func:`causal_mask` -> ``(1, 1, T, T)``;
  * combine them with ``&``.
This is the meaning of the boolean ``attn_mask`` of ``F.scaled_dot_product_attention``, and the *opposite* of
``nn.MultiheadAttention``'s ``key_padding_mask`` / boolean ``attn_mask`` (True = blocked): code that calls
PyTorch's modules passes ``~mask``. Every query must keep at least one key (a fully blocked row has no softmax).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ATTN_IMPLS = ("manual", "sdpa")


def padding_mask(keep: torch.Tensor) -> torch.Tensor:
    """``keep`` (B, S) bool, True at real tokens -> (B, 1, 1, S), broadcast over heads and queries."""
    return keep[:, None, None, :]  # (B, 1, 1, S)


def causal_mask(T: int, device=None) -> torch.Tensor:
    """(1, 1, T, T) bool, True on and below the diagonal: query t keeps keys 0..t (§3.2.3, "masking out")."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()[None, None]  # (1, 1, T, T)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                                 dropout_p: float = 0.0, training: bool = False):
    """Eq. (1): ``Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V`` (§3.2.1), written out.

    q (..., T, d_k), k (..., S, d_k), v (..., S, d_v); ``mask`` a boolean keep mask broadcastable to (..., T, S).
    Dividing by sqrt(d_k) keeps the scores' variance near 1 when q and k have unit-variance entries
    (their dot product sums d_k such terms), so the softmax does not saturate.
    Returns ``(output (..., T, d_v), weights (..., T, S))``; dropout (if any) acts on the weights, as in PyTorch.
    """
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # (..., T, S) blocked keys get weight exactly 0
    weights = scores.softmax(dim=-1)  # (..., T, S) each row sums to 1 over the kept keys
    dropped = F.dropout(weights, dropout_p, training) if dropout_p > 0 else weights  # (..., T, S)
    return dropped @ v, weights  # (..., T, d_v), (..., T, S)


class MultiHeadAttention(nn.Module):
    """§3.2.2: ``MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O``,
    with ``head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)`` (eq. (1) per head, the h heads in parallel).

    The h per-head projections W_i^Q (C x d_k) are stored side by side as one C x C matrix per role:
    ``q_proj``, ``k_proj``, ``v_proj`` (separate), or with ``fused_qkv=True`` one ``in_proj`` of 3C x C holding
    [W^Q; W^K; W^V] (PyTorch's ``in_proj_weight`` layout), so self-attention does one matrix product instead of three.

    ``attn_impl``: ``"manual"`` = :func:`scaled_dot_product_attention` above (the lesson; returns the weights);
    ``"sdpa"`` = ``F.scaled_dot_product_attention`` (fused kernel, no weights). A call that asks for the weights
    (``need_weights=True``, or ``keep_weights`` set on the module) takes the manual path whatever ``attn_impl`` says.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, fused_qkv: bool = False,
                 attn_impl: str = "manual", bias: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
        self.d_model, self.n_heads, self.d_k = d_model, n_heads, d_model // n_heads
        self.dropout, self.fused_qkv, self.attn_impl = dropout, fused_qkv, attn_impl
        if fused_qkv:
            self.in_proj = nn.Linear(d_model, 3 * d_model, bias=bias)  # [W^Q; W^K; W^V]
        else:
            self.q_proj = nn.Linear(d_model, d_model, bias=bias)  # W^Q of all heads
            self.k_proj = nn.Linear(d_model, d_model, bias=bias)  # W^K
            self.v_proj = nn.Linear(d_model, d_model, bias=bias)  # W^V
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # W^O
        self.keep_weights = False  # set True to keep the last weights in self.weights (attention maps)
        self.weights: torch.Tensor | None = None

    # ----- heads -----------------------------------------------------------------------------------

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.d_k).transpose(1, 2)  # (B, T, C) -> (B, h, T, d_k)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, _, T, _ = x.shape
        return x.transpose(1, 2).reshape(B, T, self.d_model)  # (B, h, T, d_k) -> (B, T, C) = Concat(heads)

    def _proj(self, x: torch.Tensor, role: int) -> torch.Tensor:
        """Project with W^Q (role 0), W^K (1) or W^V (2)."""
        if self.fused_qkv:
            rows = slice(role * self.d_model, (role + 1) * self.d_model)
            bias = None if self.in_proj.bias is None else self.in_proj.bias[rows]
            return F.linear(x, self.in_proj.weight[rows], bias)  # (B, T, C)
        return (self.q_proj, self.k_proj, self.v_proj)[role](x)  # (B, T, C)

    def project_q(self, query: torch.Tensor) -> torch.Tensor:
        return self.split_heads(self._proj(query, 0))  # (B, T, C) -> (B, h, T, d_k)

    def project_kv(self, key: torch.Tensor, value: torch.Tensor | None = None):
        """Keys and values of the memory to attend to (computed once per sentence for cross-attention)."""
        value = key if value is None else value
        return self.split_heads(self._proj(key, 1)), self.split_heads(self._proj(value, 2))  # 2 x (B, h, S, d_k)

    def project_qkv(self, x: torch.Tensor):
        """Self-attention: Q, K, V of the same sequence (one matrix product when fused)."""
        if self.fused_qkv:
            q, k, v = self.in_proj(x).chunk(3, dim=-1)  # 3 x (B, T, C)
            return self.split_heads(q), self.split_heads(k), self.split_heads(v)  # 3 x (B, h, T, d_k)
        return self.project_q(x), *self.project_kv(x)  # 3 x (B, h, T, d_k)

    # ----- attention ---------------------------------------------------------------------------------

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
               need_weights: bool = False):
        """Heads already projected: q (B, h, T, d_k), k/v (B, h, S, d_k) -> ``(out (B, T, C), weights or None)``.

        ``weights`` is (B, h, T, S) on the manual path, None on the SDPA path.
        """
        p = self.dropout if self.training else 0.0
        if self.attn_impl == "manual" or need_weights or self.keep_weights:
            heads, weights = scaled_dot_product_attention(q, k, v, mask, p, self.training)  # (B,h,T,d_k), (B,h,T,S)
        else:
            heads, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p), None  # (B,h,T,d_k)
        if self.keep_weights:
            self.weights = weights.detach()  # (B, h, T, S)
        return self.out_proj(self.merge_heads(heads)), weights  # (B, T, C)

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, need_weights: bool = False):
        """query (B, T, C), key/value (B, S, C) (default: the query, i.e. self-attention); ``mask`` a keep mask
        broadcastable to (B, h, T, S). Returns ``(out (B, T, C), weights (B, h, T, S) or None)``."""
        if key is None or (key is query and (value is None or value is query)):
            q, k, v = self.project_qkv(query)  # 3 x (B, h, T, d_k)
        else:
            q, (k, v) = self.project_q(query), self.project_kv(key, value)  # (B, h, T, d_k), 2 x (B, h, S, d_k)
        return self.attend(q, k, v, mask, need_weights)
