"""Stage 1 in the web showcase (``python scripts/demo.py``): the MLP's class probabilities for a typed sentence.

The registry in ``scripts/showcase.py`` finds this file, loads the first checkpoint that exists (a full run's
``checkpoints/best_model.pt`` before the quick start's) with this stage's own loader, and calls :func:`classify`.
"""
from __future__ import annotations

from scripts.showcase import Servable
from stage1_mlp import engine
from stage1_mlp.evaluate import classify_text


def load(path):
    cfg, model, vec, names, _ = engine.load_model_checkpoint(path)
    return cfg, model, vec, names


def classify(loaded, text: str) -> dict:
    """``{"labels": [...], "probs": [...]}`` in the checkpoint's label order (UserError: no known n-gram)."""
    _, model, vec, names = loaded
    probs = classify_text(model, vec, names, text)
    return {"labels": list(probs), "probs": list(probs.values())}


def describe(loaded) -> str:
    cfg, model, vec, names = loaded
    return f"{cfg.dataset}, {cfg.impl} MLP, {engine.count_params(model):,} parameters, classes {', '.join(names)}"


MODELS = [
    Servable(name="mlp", task="classify", title="阶段 1 · MLP（n-gram TF-IDF）",
             checkpoints=("checkpoints/best_model.pt", "checkpoints/quickstart/best_model.pt"),
             command="cd stage1_mlp && python quickstart.py", load=load, run=classify, describe=describe),
]
