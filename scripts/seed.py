"""Seeding: one call makes a run reproducible (docs/CONTRIBUTING.md)."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python's ``random``, NumPy, torch (CPU and CUDA).

    Returns a fresh ``torch.Generator`` seeded with ``seed``: pass it to anything that
    draws data order or initial weights, so those streams do not depend on how many
    random numbers other code consumed.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def get_rng_state(generator: torch.Generator | None = None) -> dict:
    """Every RNG's state as plain data/tensors, loadable with ``torch.load(weights_only=True)``."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    """Restore what :func:`get_rng_state` captured (a resumed run draws the same numbers)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])
