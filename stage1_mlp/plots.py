"""Figures shared by evaluate.py and visualize.ipynb."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_confusion(cm, label_names: list[str], title: str = "", path: str | Path | None = None, ax=None):
    """Confusion matrix (rows = true class, columns = predicted), counts and row-normalised colour."""
    import matplotlib
    if path is not None and ax is None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    cm = np.asarray(cm)
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.2 * len(label_names) + 2, 1.2 * len(label_names) + 1.5))
    frac = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(label_names)), label_names, rotation=30, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.1%}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title)
    if fig is not None:
        fig.tight_layout()
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=120)
            plt.close(fig)
    return ax
