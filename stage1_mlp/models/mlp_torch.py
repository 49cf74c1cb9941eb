"""The same MLP as :mod:`stage1_mlp.models.mlp_numpy`, with ``torch.nn`` and autograd (docs/stage1_mlp.md §2).

The first layer multiplies a sparse document vector by ``W1`` (V, H1). ``nn.EmbeddingBag`` with
``mode="sum"`` and ``per_sample_weights`` computes exactly that, ``sum_j x_j W1[j]``, without ever
building the (B, V) dense matrix: it *is* ``nn.Linear(V, H1, bias=False)`` on sparse input, with the
weight stored transposed. With ``weighting="mean"`` features and no hidden layer this is
fastText's model (Joulin et al. 2017).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from stage1_mlp.datasets.vectorizer import SparseRows


class TorchMLP(nn.Module):
    """``forward(x, labels=None) -> (logits, loss)`` with ``x`` a :class:`SparseRows` batch
    or the ``(indices, offsets, weights)`` triple of ``nn.EmbeddingBag``."""

    def __init__(self, vocab_size: int, hidden_dims: tuple[int, ...], n_classes: int, dropout: float = 0.0):
        super().__init__()
        dims = [vocab_size, *hidden_dims, n_classes]
        # sparse=True: the gradient of W1 holds only the batch's rows (see make_optimizer)
        self.embed = nn.EmbeddingBag(vocab_size, dims[1], mode="sum", sparse=True)  # W1, (V, H1)
        self.b1 = nn.Parameter(torch.empty(dims[1]))
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[1:-1], dims[2:]))
        self.dropout = nn.Dropout(dropout)
        bound = 1.0 / math.sqrt(vocab_size)  # the range nn.Linear(V, H1) would use
        nn.init.uniform_(self.embed.weight, -bound, bound)
        nn.init.uniform_(self.b1, -bound, bound)

    def forward(self, x, labels: torch.Tensor | np.ndarray | None = None):
        if isinstance(x, SparseRows):
            x = x.to_torch(self.b1.device)
        if isinstance(labels, np.ndarray):
            labels = torch.from_numpy(labels).to(self.b1.device)
        indices, offsets, weights = x
        h = self.embed(indices, offsets, per_sample_weights=weights) + self.b1  # (B, H1)
        for layer in self.layers:
            h = layer(self.dropout(F.relu(h)))                                  # (B, H_k) ... (B, C)
        loss = None if labels is None else F.cross_entropy(h, labels)
        return h, loss

    def as_numpy(self) -> dict[str, np.ndarray]:
        """The weights as NumPy arrays in :class:`NumpyMLP`'s layout (``W`` as (in, out))."""
        return numpy_params(self)


class LazyAdam(torch.optim.Optimizer):
    """``torch.optim.SparseAdam``'s update (lazy Adam: only the rows present in the sparse gradient
    move), written with ``index_select`` / ``index_copy_`` / ``index_add_`` on dense state.

    Same numbers as ``SparseAdam`` (a test checks it), but several times faster on CPU, where
    ``SparseAdam``'s sparse-tensor arithmetic dominates a training step:

        m[r] = b1 m[r] + (1 - b1) g[r];  v[r] = b2 v[r] + (1 - b2) g[r]^2     (rows r in the batch)
        w[r] -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m[r] / (sqrt(v[r]) + eps)
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                # Sum the gradient rows of repeated n-grams. np.unique does the sort that
                # grad.coalesce() would do, several times faster on CPU.
                idx = p.grad._indices()[0]                                             # (nnz,)
                if idx.device.type == "cpu":
                    ids, inverse = np.unique(idx.numpy(), return_inverse=True)
                    rows, inverse = torch.from_numpy(ids), torch.from_numpy(inverse.reshape(-1))
                else:
                    rows, inverse = torch.unique(idx, return_inverse=True)
                g = p.grad._values().new_zeros(len(rows), p.shape[1]).index_add_(
                    0, inverse, p.grad._values())                                     # (U, H), U = rows.numel()
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                m = state["exp_avg"].index_select(0, rows).mul_(b1).add_(g, alpha=1 - b1)
                v = state["exp_avg_sq"].index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                step_size = group["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                p.index_add_(0, rows, m.div_(v.sqrt_().add_(group["eps"])), alpha=-step_size)


class MLPOptimizer:
    """Lazy Adam (:class:`LazyAdam` = ``SparseAdam``) for the sparse first layer + ``AdamW`` for the rest.

    Behaves like one optimizer (``zero_grad`` / ``step`` / ``state_dict`` / ``load_state_dict``);
    :class:`stage1_mlp.models.mlp_numpy.AdamWNumpy` performs the same two updates by hand.
    """

    def __init__(self, model: TorchMLP, lr: float = 1e-3, weight_decay: float = 0.0):
        dense = [p for n, p in model.named_parameters() if n != "embed.weight"]
        self.sparse = LazyAdam([model.embed.weight], lr=lr)
        self.dense = torch.optim.AdamW(dense, lr=lr, weight_decay=weight_decay)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sparse.zero_grad(set_to_none)
        self.dense.zero_grad(set_to_none)

    @property
    def param_groups(self) -> list[dict]:
        """Both optimizers' groups (``scripts.schedule.set_lr`` writes the scheduled lr into each)."""
        return self.sparse.param_groups + self.dense.param_groups

    @torch.no_grad()
    def clip_grad_norm(self, max_norm: float) -> float:
        """``torch.nn.utils.clip_grad_norm_`` for a model with a sparse gradient (which that function
        cannot take): the global L2 norm over every gradient, ``W1``'s duplicate rows summed first;
        if it exceeds ``max_norm`` all gradients are scaled by ``max_norm / norm``. Returns the norm."""
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        for p in params:
            if p.grad.is_sparse:
                p.grad = p.grad.coalesce()
        norms = [(p.grad._values() if p.grad.is_sparse else p.grad).double().norm() for p in params]
        total = float(torch.stack(norms).norm()) if norms else 0.0
        if total > max_norm:
            scale = max_norm / (total + 1e-6)
            for p in params:
                p.grad.mul_(scale)
        return total

    def step(self) -> None:
        self.sparse.step()
        self.dense.step()

    def state_dict(self) -> dict:
        return {"sparse": self.sparse.state_dict(), "dense": self.dense.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sparse.load_state_dict(state["sparse"])
        self.dense.load_state_dict(state["dense"])


def numpy_params(model: TorchMLP) -> dict[str, np.ndarray]:
    """The model's weights in :class:`NumpyMLP`'s layout (``W`` as (in, out))."""
    out = {"W1": model.embed.weight.detach().cpu().numpy().copy(), "b1": model.b1.detach().cpu().numpy().copy()}
    for k, layer in enumerate(model.layers, start=2):
        out[f"W{k}"] = layer.weight.detach().cpu().numpy().T.copy()
        out[f"b{k}"] = layer.bias.detach().cpu().numpy().copy()
    return out


@torch.no_grad()
def load_numpy_params(model: TorchMLP, params: dict[str, np.ndarray]) -> None:
    """Copy :class:`NumpyMLP` weights into ``model`` (the inverse of :func:`numpy_params`)."""
    model.embed.weight.copy_(torch.from_numpy(np.asarray(params["W1"])))
    model.b1.copy_(torch.from_numpy(np.asarray(params["b1"])))
    for k, layer in enumerate(model.layers, start=2):
        layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(np.asarray(params[f"W{k}"]).T)))
        layer.bias.copy_(torch.from_numpy(np.asarray(params[f"b{k}"])))
