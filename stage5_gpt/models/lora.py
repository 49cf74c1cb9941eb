"""LoRA: low-rank adaptation of a frozen model (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

Fine-tuning changes a pre-trained weight W (d_out x d_in) by some ΔW. LoRA's bet (§4.1): the useful ΔW has a low
"intrinsic rank", so write it as a product of two thin matrices and train only those:

    h = W x + ΔW x = W x + (alpha / r) · B (A x),     A: (r, d_in),  B: (d_out, r),  r << min(d_in, d_out)

* W stays frozen (``requires_grad = False``): no gradient, no optimizer state for it.
* A starts random (Kaiming-uniform, as ``nn.Linear`` initialises its weight) and **B starts at zero**, so
  ΔW = B A = 0 and the adapted model computes exactly the pre-trained function at step 0 (§4.1).
* ``alpha / r`` scales the update, so changing r does not change the size of the initial steps much
  (§4.1: "we simply set α to the first r we try and do not tune it").
* Trainable numbers per adapted matrix: r (d_in + d_out) instead of d_in · d_out.
* After training, ΔW can be **merged**: W' = W + (alpha / r) B A is an ordinary matrix, so inference costs
  nothing extra (:meth:`LoRALinear.merge`); :meth:`LoRALinear.unmerge` subtracts it again.

:func:`apply_lora` wraps chosen ``nn.Linear`` layers of a model (by default every attention and MLP matrix of
the GPT blocks: ``c_attn``, ``c_proj``, ``c_fc``, ``c_gate``) and freezes every other parameter of the model;
the caller then unfreezes what it trains besides the adapters (e.g. a classification head).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_TARGETS = ("c_attn", "c_proj", "c_fc", "c_gate")


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) · B(A(dropout(x)))`` with ``base`` frozen. ``merged``: ΔW is inside base.weight."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        d_out, d_in = base.weight.shape
        check_rank(rank, d_in, d_out)
        self.base = base
        for p in self.base.parameters():
            p.requires_grad = False
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.lora_A = nn.Parameter(base.weight.new_empty(rank, d_in))  # (r, d_in)
        self.lora_B = nn.Parameter(base.weight.new_zeros(d_out, rank))  # (d_out, r): ΔW = 0 at the start
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # what nn.Linear does to its weight
        self.dropout = nn.Dropout(dropout)
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """ΔW = (alpha / r) B A, (d_out, d_in)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (..., d_out), W x + b
        if self.merged:
            return y
        # B (A x): two thin products, never the full d_out x d_in matrix
        return y + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + ΔW: the layer becomes a plain linear layer (same outputs, no extra cost)."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - ΔW: back to frozen W plus the separate adapter (to train it further)."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        d_out, d_in = self.base.weight.shape
        return f"d_in={d_in}, d_out={d_out}, rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


def check_rank(rank: int, d_in: int, d_out: int) -> None:
    """A rank must be 1..min(d_in, d_out): 0 adapts nothing, a larger one is no longer low-rank."""
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank!r}")
    if rank > min(d_in, d_out):
        raise ValueError(f"LoRA rank {rank} is larger than the layer ({d_out} x {d_in}): at most {min(d_in, d_out)}")


def apply_lora(model: nn.Module, rank: int, alpha: float, dropout: float = 0.0,
               targets: tuple[str, ...] = DEFAULT_TARGETS) -> list[str]:
    """Freeze every parameter of ``model`` and wrap each ``nn.Linear`` whose attribute name is in ``targets`` in a
    :class:`LoRALinear` (in place). Returns the wrapped modules' names. Checks every rank before changing anything."""
    found = [(name, module) for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets]
    if not found:
        raise ValueError(f"no nn.Linear named {', '.join(targets)} in the model")
    for _, module in found:
        check_rank(rank, module.in_features, module.out_features)
    for p in model.parameters():
        p.requires_grad = False
    for name, module in found:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, LoRALinear(module, rank, alpha, dropout))
    return [name for name, _ in found]


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> None:
    for m in lora_layers(model):
        m.merge()


def unmerge_lora(model: nn.Module) -> None:
    for m in lora_layers(model):
        m.unmerge()


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
