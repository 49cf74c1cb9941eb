"""Attention scores: Bahdanau (additive) and Luong (dot / general / concat).

Every module maps a decoder query ``q`` (B, Hd) and the encoder outputs ``keys`` (B, S, He) to
attention weights ``a`` (B, S) and a context vector ``c = sum_j a_j h_j`` (B, He):

* Bahdanau et al. 2015, "Neural Machine Translation by Jointly Learning to Align and
  Translate", eq. (6): ``e_tj = v^T tanh(W s_{t-1} + U h_j)``
* Luong et al. 2015, "Effective Approaches to Attention-based NMT", eq. (8):
  ``dot: h_t^T h_j``, ``general: h_t^T W h_j``, ``concat: v^T tanh(W [h_t; h_j])``

then ``a_t = softmax(e_t)`` over the *real* source positions only: padding gets ``-inf`` before
the softmax (:func:`masked_softmax`), so a padded batch gives the same weights as one sentence
alone. The part of each score that depends only on the keys (``U h_j``, ``W h_j``) is computed once
per sentence by :meth:`precompute` instead of once per decoder step.
Theory: docs/stage3_attention.md, sections "Bahdanau" and "Luong".
"""
from __future__ import annotations

import torch
import torch.nn as nn


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim where ``mask`` is True; padded positions get exactly 0."""
    scores = scores.masked_fill(~mask, float("-inf"))  # (B, S)
    return torch.softmax(scores, dim=-1)


class Attention(nn.Module):
    """Base class: ``score(q, pre) -> (B, S)``; ``forward`` adds mask, softmax and context."""

    def precompute(self, keys: torch.Tensor) -> torch.Tensor:
        """Key-only part of the score, computed once per batch. (B, S, He) -> (B, S, *)"""
        return keys

    def score(self, query: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, query, keys, pre, mask):
        # query (B, Hd), keys (B, S, He), pre (B, S, *), mask (B, S) bool
        weights = masked_softmax(self.score(query, pre), mask)  # (B, S)
        context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)  # (B, He)
        return context, weights


class BahdanauAttention(Attention):
    """Additive attention, Bahdanau eq. (6): ``v^T tanh(W q + U h_j)``."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.W = nn.Linear(query_dim, attn_dim, bias=False)
        self.U = nn.Linear(key_dim, attn_dim, bias=True)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def precompute(self, keys):
        return self.U(keys)  # (B, S, A)

    def score(self, query, pre):
        return self.v(torch.tanh(pre + self.W(query).unsqueeze(1))).squeeze(-1)  # (B, S)


class LuongDotAttention(Attention):
    """Luong eq. (8) "dot": ``h_t^T h_j`` (query and key sizes must match)."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int = 0):
        super().__init__()
        if query_dim != key_dim:
            raise ValueError(f"luong_dot needs query_dim == key_dim, got {query_dim} != {key_dim}")

    def score(self, query, pre):
        return torch.bmm(pre, query.unsqueeze(-1)).squeeze(-1)  # (B, S, He) @ (B, He, 1) -> (B, S)


class LuongGeneralAttention(Attention):
    """Luong eq. (8) "general": ``h_t^T W_a h_j``; ``W_a h_j`` is precomputed."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int = 0):
        super().__init__()
        self.W = nn.Linear(key_dim, query_dim, bias=False)

    def precompute(self, keys):
        return self.W(keys)  # (B, S, Hd)

    def score(self, query, pre):
        return torch.bmm(pre, query.unsqueeze(-1)).squeeze(-1)  # (B, S)


class LuongConcatAttention(BahdanauAttention):
    """Luong eq. (8) "concat": ``v^T tanh(W_a [h_t; h_j])`` = ``v^T tanh(W1 h_t + W2 h_j)``.

    The same formula as Bahdanau's additive score; what differs is *where* the decoder uses it
    (query ``h_t`` after the RNN step, see models/seq2seq.py). Splitting ``W_a`` into two blocks
    lets the key half be precomputed.
    """


ATTENTIONS = {
    "bahdanau": BahdanauAttention,
    "luong_dot": LuongDotAttention,
    "luong_general": LuongGeneralAttention,
    "luong_concat": LuongConcatAttention,
}
