"""The stage-1 MLP twice: by hand in NumPy (:mod:`.mlp_numpy`) and with autograd in PyTorch
(:mod:`.mlp_torch`). Both follow the classifier contract ``forward(x, labels=None) -> (logits, loss)``
where ``x`` is a :class:`stage1_mlp.datasets.vectorizer.SparseRows` batch, and share the layout of
their parameters (``W1`` is stored as (V, H1), one row per n-gram), so weights copy across.
"""
from stage1_mlp.models.mlp_numpy import AdamWNumpy, NumpyMLP
from stage1_mlp.models.mlp_torch import TorchMLP

__all__ = ["NumpyMLP", "AdamWNumpy", "TorchMLP"]
