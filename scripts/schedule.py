"""Learning-rate schedules shared by every stage, as plain functions of the optimizer step.

Each schedule is ``lr(step)`` for the *optimizer* step about to be taken (0-based), so it is the same
whether a run is resumed or not and never depends on the wall clock (see ``scripts/budget.py`` for
how a time budget becomes a fixed step count). All start with an optional linear warm-up.

- ``constant``: ``lr`` after warm-up.
- ``cosine``: cosine from ``lr`` to ``min_lr`` at ``total_steps`` (Loshchilov & Hutter 2017, SGDR).
- ``wsd``: warm-up, stable at ``lr``, then linear decay to ``min_lr`` over the last ``decay_frac``
  of ``total_steps`` (Hu et al. 2024, MiniCPM).
- ``linear``: linear from ``lr`` to ``min_lr`` at ``total_steps``.
- ``noam``: "Attention Is All You Need" eq. (3), ``lr * min(step^-0.5, step * warmup^-1.5) * sqrt(warmup)``,
  scaled so that the peak (at the end of warm-up) equals ``lr``; then inverse square root decay.
"""
from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "wsd", "linear", "noam")


def lr_at(step: int, *, schedule: str, lr: float, total_steps: int, warmup_steps: int = 0,
          min_lr: float = 0.0, decay_frac: float = 0.2) -> float:
    """The learning rate of optimizer step ``step`` (0-based) under ``schedule``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if schedule == "noam":
        s, w = step + 1, max(1, warmup_steps)
        return lr * min(s ** -0.5, s * w ** -1.5) * math.sqrt(w)
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    span = max(1, total_steps - warmup_steps)
    frac = min(1.0, max(0.0, (step - warmup_steps) / span))
    if schedule == "cosine":
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))
    if schedule == "linear":
        return lr + (min_lr - lr) * frac
    start = 1.0 - decay_frac  # wsd
    if frac <= start:
        return lr
    return lr + (min_lr - lr) * min(1.0, (frac - start) / decay_frac)


def set_lr(optimizer, lr: float) -> None:
    """Write ``lr`` into every parameter group (the schedule is applied before each step)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
