"""A multi-layer perceptron written by hand in NumPy: forward, backward, AdamW (docs/stage1_mlp.md §2).

    h_1 = ReLU(x W_1 + b_1)                 x: sparse (B, V), W_1: (V, H_1)
    h_k = ReLU(dropout(h_{k-1}) W_k + b_k)  k = 2..L
    z   = dropout(h_L) W_out + b_out        (B, C) logits
    loss = mean_i [ -log softmax(z_i)[y_i] ]

Backward (the chain rule, layer by layer, docs §2.2-2.3):

    dL/dz = (softmax(z) - onehot(y)) / B        (softmax + cross-entropy together, eq. 2.4)
    dL/dW = h_in^T dL/dout,  dL/db = sum_rows dL/dout,  dL/dh_in = dL/dout W^T
    ReLU:    dL/dh = dL/dout * (pre-activation > 0)
    dropout: dL/dh = dL/dout * mask / (1 - p)    (inverted dropout, Srivastava et al. 2014)

The first layer's input is sparse, so ``x W_1`` is a weighted sum of the rows of ``W_1`` picked by
the document's n-gram ids (:func:`sparse_matmul`) and its gradient touches only those rows
(:func:`sparse_matmul_grad`). The optimizer (:class:`AdamWNumpy`) is AdamW for the dense layers and
lazy Adam for ``W_1``, the same updates as ``torch.optim.AdamW`` + ``torch.optim.SparseAdam``.

Both classes follow the same contract as their PyTorch twins (:mod:`.mlp_torch`), so the training
loop never asks which one it has: ``model(x, labels) -> (logits, loss)`` with ``loss.backward()``,
``parameters()``, ``state_dict()`` / ``load_state_dict()``, ``train()`` / ``eval()``; the optimizer has
``zero_grad()``, ``step()``, ``clip_grad_norm()``, ``param_groups`` and ``state_dict()``. State dicts hold
``torch`` tensors only because checkpoints are torch files; every computation here is NumPy. Dropout
masks come from NumPy's global RNG, as ``nn.Dropout``'s come from torch's: ``scripts.seed`` seeds and
saves both.
"""
from __future__ import annotations

import numpy as np

from stage1_mlp.datasets.vectorizer import SparseRows


def sparse_matmul(x: SparseRows, W: np.ndarray) -> np.ndarray:
    """``x @ W`` for sparse ``x`` (B, V) and dense ``W`` (V, H) → (B, H)."""
    contrib = W[x.indices] * x.values[:, None]           # (nnz, H) one scaled row of W per entry
    out = np.zeros((len(x), W.shape[1]), dtype=W.dtype)   # (B, H)
    nonempty = np.diff(x.indptr) > 0                     # reduceat misbehaves on empty segments
    if contrib.shape[0]:
        out[nonempty] = np.add.reduceat(contrib, x.indptr[:-1][nonempty], axis=0)
    return out


def sparse_matmul_grad(x: SparseRows, grad_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of ``x @ W`` w.r.t. ``W`` given ``grad_out`` (B, H), as rows: ``(ids, rows)``.

    ``dW = x^T grad_out`` is zero except on the n-grams present in the batch, so we return
    ``ids`` (U,) and ``rows`` (U, H) with ``dW[ids] = rows`` (``ids`` unique and sorted).
    """
    contrib = grad_out[x.row_ids()] * x.values[:, None]  # (nnz, H)
    order = np.argsort(x.indices, kind="stable")
    ids, starts = np.unique(x.indices[order], return_index=True)
    if len(order) == 0:
        return ids, np.zeros((0, grad_out.shape[1]), dtype=grad_out.dtype)
    return ids, np.add.reduceat(contrib[order], starts, axis=0)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row max so exp never overflows."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy and its gradient ``(softmax(z) - onehot(y)) / B`` (docs eq. 2.4)."""
    B = z.shape[0]
    zs = z - z.max(axis=1, keepdims=True)
    log_p = zs - np.log(np.exp(zs).sum(axis=1, keepdims=True))  # log-softmax, (B, C)
    loss = -log_p[np.arange(B), y].mean()
    grad = np.exp(log_p)
    grad[np.arange(B), y] -= 1.0
    return float(loss), grad / B


class Loss(float):
    """The batch loss: a plain float that, like a torch loss tensor, has ``.item()`` and ``.backward()``
    (which runs :meth:`NumpyMLP.backward`, the hand-written chain rule)."""

    def __new__(cls, value: float, model: "NumpyMLP"):
        obj = super().__new__(cls, value)
        obj._model = model
        return obj

    def item(self) -> float:
        return float(self)

    def backward(self) -> None:
        self._model.backward()


def _tensor(a: np.ndarray):
    """A copy of ``a`` as a torch tensor (checkpoints are torch files loaded with ``weights_only=True``)."""
    import torch

    return torch.from_numpy(np.array(a, copy=True))


def _array(t, dtype=None) -> np.ndarray:
    """A torch tensor (or array) from a checkpoint back as a NumPy array."""
    a = t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
    return np.array(a, dtype=dtype or a.dtype, copy=True)


class NumpyMLP:
    """Sparse-input MLP with ReLU and dropout; parameters in ``self.params`` (name → array).

    Names and shapes: ``W1`` (V, H1), ``b1`` (H1,), ``W2`` (H1, H2) ... ``W{L+1}`` (H_L, C).
    Dense layers store W as (in, out), i.e. the transpose of ``nn.Linear.weight``.
    """

    def __init__(self, vocab_size: int, hidden_dims: tuple[int, ...], n_classes: int,
                 dropout: float = 0.0, seed: int = 0):
        self.dims = [vocab_size, *hidden_dims, n_classes]
        self.dropout = dropout
        self.training = True
        rng = np.random.default_rng(seed)  # initial weights (dropout masks: NumPy's global RNG)
        self.params: dict[str, np.ndarray] = {}
        for k, (fan_in, fan_out) in enumerate(zip(self.dims[:-1], self.dims[1:]), start=1):
            bound = 1.0 / np.sqrt(fan_in)  # nn.Linear's default range U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            self.params[f"W{k}"] = rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32)
            self.params[f"b{k}"] = rng.uniform(-bound, bound, fan_out).astype(np.float32)
        self.grads: dict[str, np.ndarray | tuple] = {}  # filled by backward(), emptied by zero_grad()
        self._cache = None

    @property
    def n_layers(self) -> int:
        return len(self.dims) - 1

    # ----- the nn.Module-like contract ---------------------------------------------------
    def train(self, mode: bool = True) -> "NumpyMLP":
        self.training = mode
        return self

    def eval(self) -> "NumpyMLP":
        return self.train(False)

    def to(self, device) -> "NumpyMLP":
        """The NumPy MLP lives on the CPU; any other device is a mistake of the caller."""
        if str(device) != "cpu":
            raise ValueError(f"the NumPy MLP runs on the CPU only, not {device}")
        return self

    def parameters(self) -> list[np.ndarray]:
        return list(self.params.values())

    def state_dict(self) -> dict:
        """Name → weight copy, as torch tensors (the checkpoint format); ``W`` in (in, out) layout."""
        return {k: _tensor(v) for k, v in self.params.items()}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.params) - set(state)
        if missing:
            raise KeyError(f"state dict lacks {sorted(missing)}")
        for k in self.params:
            w = _array(state[k], np.float32)
            if w.shape != self.params[k].shape:
                raise ValueError(f"{k}: shape {w.shape} in the state dict, {self.params[k].shape} in the model")
            self.params[k] = w

    def as_numpy(self) -> dict[str, np.ndarray]:
        """The weights as NumPy arrays, ``W`` as (in, out) (what :meth:`TorchMLP.as_numpy` also returns)."""
        return self.params

    def __call__(self, x: SparseRows, labels: np.ndarray | None = None):
        return self.forward(x, labels)

    # ----- forward and backward ------------------------------------------------------------
    def forward(self, x: SparseRows, labels: np.ndarray | None = None) -> tuple[np.ndarray, Loss | None]:
        """``(logits (B, C), loss or None)``; keeps what :meth:`backward` needs."""
        p = self.params
        a = sparse_matmul(x, p["W1"]) + p["b1"]               # (B, H1) pre-activation of layer 1
        cache = {"x": x, "pre": [a], "inputs": [], "masks": []}
        h = a
        for k in range(2, self.n_layers + 1):
            h = np.maximum(h, 0)                              # ReLU
            mask = None
            if self.training and self.dropout > 0:
                mask = (np.random.random(h.shape) >= self.dropout).astype(h.dtype) / (1 - self.dropout)
                h = h * mask
            cache["masks"].append(mask)
            cache["inputs"].append(h)                         # input of layer k
            h = h @ p[f"W{k}"] + p[f"b{k}"]                   # (B, H_k), or (B, C) for the last layer
            if k < self.n_layers:
                cache["pre"].append(h)                        # pre-activation of hidden layer k
        logits = h
        loss = None
        if labels is not None:
            value, cache["dlogits"] = cross_entropy(logits, np.asarray(labels))
            loss = Loss(value, self)
        self._cache = cache
        return logits, loss

    def backward(self) -> dict:
        """Fill ``self.grads`` from the last forward with labels; ``W1``'s gradient is ``(ids, rows)``."""
        c, p = self._cache, self.params
        g = c["dlogits"]                                       # (B, C)
        for k in range(self.n_layers, 1, -1):
            self.grads[f"W{k}"] = c["inputs"][k - 2].T @ g     # h_in^T dL/dout
            self.grads[f"b{k}"] = g.sum(axis=0)
            g = g @ p[f"W{k}"].T                               # dL/d(input of layer k)
            if c["masks"][k - 2] is not None:
                g = g * c["masks"][k - 2]                      # through dropout
            g = g * (c["pre"][k - 2] > 0)                      # through ReLU: 1[a > 0]
        self.grads["W1"] = sparse_matmul_grad(c["x"], g)
        self.grads["b1"] = g.sum(axis=0)
        return self.grads

    def dense_grad(self, name: str) -> np.ndarray:
        """The gradient of ``name`` as a dense array (expands ``W1``'s sparse rows; for tests)."""
        g = self.grads[name]
        if isinstance(g, tuple):
            ids, rows = g
            dense = np.zeros_like(self.params[name])
            dense[ids] = rows
            return dense
        return g


class AdamWNumpy:
    """Adam (Kingma & Ba 2015, Algorithm 1) with decoupled weight decay (AdamW, Loshchilov & Hutter 2019).

    Dense parameters follow ``torch.optim.AdamW``:

        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        w = w - lr * wd * w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    A sparse gradient ``(ids, rows)`` (the first layer: only the batch's n-grams have one) gets the
    *lazy* update of ``torch.optim.SparseAdam``: m, v and w change only on the rows in ``ids``, with
    ``w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`` and no weight decay. Touching
    ~25k of 200k rows instead of all of them is what makes a step cheap.

    Like a torch optimizer it works on the model's parameters and gradients in place:
    ``AdamWNumpy(model.params, model.grads, ...)``, then ``zero_grad()``, ``loss.backward()``, ``step()``.
    """

    def __init__(self, params: dict, grads: dict, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        self.params, self.grads = params, grads  # the model's own dicts (backward() fills grads)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.param_groups = [{"lr": lr}]  # as in torch: scripts.schedule.set_lr writes the lr here
        self.t = 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    @property
    def lr(self) -> float:
        return self.param_groups[0]["lr"]

    def zero_grad(self) -> None:
        self.grads.clear()

    def clip_grad_norm(self, max_norm: float) -> float:
        """Scale all gradients so that their global L2 norm is at most ``max_norm`` (what
        ``torch.nn.utils.clip_grad_norm_`` does); returns the norm before clipping.
        ``W1``'s sparse rows are unique (summed in :func:`sparse_matmul_grad`), so they count once."""
        blocks = [g[1] if isinstance(g, tuple) else g for g in self.grads.values()]
        total = float(np.sqrt(sum(float(np.sum(b.astype(np.float64) ** 2)) for b in blocks)))
        if total > max_norm:
            scale = np.float32(max_norm / (total + 1e-6))
            for k, g in self.grads.items():
                self.grads[k] = (g[0], g[1] * scale) if isinstance(g, tuple) else g * scale
        return total

    def step(self) -> None:
        b1, b2 = self.betas
        lr = self.lr
        self.t += 1
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for k, w in self.params.items():
            if k not in self.grads:  # no gradient (like p.grad is None): no update
                continue
            g, m, v = self.grads[k], self.m[k], self.v[k]
            if isinstance(g, tuple):  # lazy (SparseAdam) update of the touched rows only
                ids, rows = g
                m_new = b1 * m[ids] + (1 - b1) * rows
                v_new = b2 * v[ids] + (1 - b2) * rows * rows
                m[ids], v[ids] = m_new, v_new
                w[ids] -= (lr * np.sqrt(c2) / c1) * m_new / (np.sqrt(v_new) + self.eps)
                continue
            w *= 1 - lr * self.weight_decay
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            w -= (lr / c1) * m / (np.sqrt(v / c2) + self.eps)

    def state_dict(self) -> dict:
        """Step count, lr and both moments (as torch tensors: ready for a checkpoint)."""
        return {"t": self.t, "lr": self.lr, "m": {k: _tensor(v) for k, v in self.m.items()},
                "v": {k: _tensor(v) for k, v in self.v.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        self.param_groups[0]["lr"] = float(state["lr"])
        for k in self.m:
            self.m[k][...] = _array(state["m"][k])
            self.v[k][...] = _array(state["v"][k])
