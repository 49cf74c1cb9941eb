"""Adaptive input embeddings and an adaptive softmax that share one set of weights.

Weight tying (Press & Wolf 2017) and an adaptive softmax (Grave et al. 2017) both help a
33k-word model, but ``nn.AdaptiveLogSoftmaxWithLoss`` has its own weights, so the two do not
combine. Here they do, as in Baevski & Auli (2019, "adaptive input representations") and
Transformer-XL's tied adaptive softmax:

* words are sorted by frequency and split at ``cutoffs`` into clusters: ``[0, c1)`` is the head,
  ``[c1, c2)``, ``[c2, V)`` ... are tails;
* cluster ``i`` has an embedding table ``E_i`` of width ``d_i = dim // div_value**i`` (rare words
  get fewer dimensions) and, for tails, a projection ``P_i`` between ``d_i`` and ``dim``;
* input: ``embed(w) = E_i[w]`` for head words, ``E_i[w] @ P_i^T`` for tail words;
* output: the head scores ``h @ E_0^T`` plus one logit per tail cluster; a tail word's
  probability is ``p(cluster | h) * softmax((h @ P_i) @ E_i^T)[w]``, computed only for the
  positions whose target lies in that cluster.

The output side is the same function as ``nn.AdaptiveLogSoftmaxWithLoss(dim, V, cutoffs,
div_value, head_bias=False)``; ``tests/test_models.py`` copies the weights across and checks
that losses, log-probabilities and gradients agree.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class TiedAdaptiveEmbedding(nn.Module):
    def __init__(self, vocab_size: int, dim: int, cutoffs: tuple[int, ...], div_value: float = 4.0):
        super().__init__()
        if list(cutoffs) != sorted(set(cutoffs)) or not (0 < min(cutoffs) and max(cutoffs) < vocab_size):
            raise ValueError(f"cutoffs must increase strictly and lie between 0 and the vocabulary size {vocab_size}")
        self.dim = dim
        self.bounds = [0, *cutoffs, vocab_size]
        n_clusters = len(self.bounds) - 1
        self.dims = [int(dim // div_value ** i) for i in range(n_clusters)]
        if min(self.dims) < 1:
            raise ValueError(f"div_value {div_value} leaves a cluster with no dimensions (dims {self.dims})")
        self.tables = nn.ModuleList(nn.Embedding(hi - lo, d)
                                    for lo, hi, d in zip(self.bounds, self.bounds[1:], self.dims))
        self.projs = nn.ModuleList(nn.Linear(d, dim, bias=False) for d in self.dims[1:])  # weight: (dim, d_i)
        self.cluster = nn.Linear(dim, n_clusters - 1, bias=False)  # one head logit per tail cluster
        for table in self.tables:
            nn.init.uniform_(table.weight, -0.1, 0.1)

    @property
    def shortlist(self) -> int:
        return self.bounds[1]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (any shape) -> embeddings (..., dim)."""
        out = torch.zeros(*idx.shape, self.dim, dtype=self.tables[0].weight.dtype, device=idx.device)
        for i, (lo, hi) in enumerate(zip(self.bounds, self.bounds[1:])):
            mask = (idx >= lo) & (idx < hi)
            if mask.any():
                e = self.tables[i](idx[mask] - lo)
                out[mask] = e if i == 0 else self.projs[i - 1](e)
        return out

    def _head_log_probs(self, h: torch.Tensor) -> torch.Tensor:
        """(N, dim) -> (N, shortlist + tails): log p of each head word and of each tail cluster."""
        return F.log_softmax(torch.cat([h @ self.tables[0].weight.t(), self.cluster(h)], dim=-1), dim=-1)

    def _tail_log_probs(self, h: torch.Tensor, i: int) -> torch.Tensor:
        """(n, dim) -> (n, size of cluster i): log p(word | cluster i, h)."""
        return F.log_softmax((h @ self.projs[i - 1].weight) @ self.tables[i].weight.t(), dim=-1)

    def loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of ``targets`` (N,) given hidden states ``h`` (N, dim)."""
        head = self._head_log_probs(h)
        logp = torch.zeros(len(targets), dtype=head.dtype, device=h.device)
        in_head = targets < self.shortlist
        logp[in_head] = head[in_head].gather(1, targets[in_head, None]).squeeze(1)
        for i, (lo, hi) in enumerate(zip(self.bounds[1:], self.bounds[2:]), start=1):
            mask = (targets >= lo) & (targets < hi)
            if mask.any():
                tail = self._tail_log_probs(h[mask], i).gather(1, (targets[mask] - lo)[:, None]).squeeze(1)
                logp[mask] = head[mask, self.shortlist + i - 1] + tail
        return -logp.mean()

    def log_prob(self, h: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of every word, (N, dim) -> (N, V) (for evaluation and sampling)."""
        head = self._head_log_probs(h)
        parts = [head[:, :self.shortlist]]
        for i in range(1, len(self.tables)):
            parts.append(head[:, self.shortlist + i - 1, None] + self._tail_log_probs(h, i))
        return torch.cat(parts, dim=-1)
