"""What train.py, evaluate.py, benchmark.py and the notebook share: features, models, checkpoints,
prediction and metrics — written once, for both ``--impl numpy`` and ``--impl torch``."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from scripts.checkpoint import load_checkpoint, save_checkpoint
from scripts.cli import UserError
from scripts.config import config_from_dict
from scripts.data import sha256_files
from scripts.device import autocast
from scripts.results import make_result
from stage1_mlp.config import TrainConfig
from stage1_mlp.datasets.sources import TextData, load_for_training, stratified_split
from stage1_mlp.datasets.text import tokenize
from stage1_mlp.datasets.vectorizer import NgramVectorizer, SparseRows
from stage1_mlp.models.mlp_numpy import AdamWNumpy, NumpyMLP, softmax, sparse_matmul
from stage1_mlp.models.mlp_torch import MLPOptimizer, TorchMLP

KIND = "stage1_mlp"
CV_NOTE = ("5-fold stratified cross-validation inside the 7,600-row AG News TEST split (the train split is "
           "not available offline); not comparable with the official train→test figure")


# ----- data ----------------------------------------------------------------------------------
def train_val_data(cfg: TrainConfig) -> tuple[TextData, TextData, TextData | None]:
    """``(train, val, held_out)`` exactly as ``cfg`` defines them (evaluate.py rebuilds val the same way).

    Validation is carved from the whole training pool first; ``--limit_train`` then keeps a stratified
    subset of the *rest*, so a smoke run is scored on the same validation split as a full run.
    """
    pool, held_out = load_for_training(cfg.dataset, cfg.protocol, cfg.fold, cfg.data_dir or None)
    tr, va = stratified_split(pool.labels, cfg.val_fraction, cfg.seed)
    if len(va) == 0 or len(tr) == 0:
        raise UserError(f"too few examples ({len(pool.texts)}) to carve a validation split")
    if cfg.limit_train and cfg.limit_train < len(tr):
        _, keep = stratified_split(pool.labels[tr], cfg.limit_train / len(tr), cfg.seed + 1)
        tr = tr[keep]
    return pool.subset(tr), pool.subset(va), held_out


def make_vectorizer(cfg: TrainConfig, n_classes: int) -> NgramVectorizer:
    return NgramVectorizer(cfg.ngram, cfg.max_features, cfg.min_df, cfg.weighting,
                           nb_scale=cfg.nb_scale and n_classes == 2)


def featurize(vectorizer: NgramVectorizer, texts: list[str]) -> SparseRows:
    """Raw texts → sparse feature rows."""
    return vectorizer.transform([tokenize(t) for t in texts])


# ----- models --------------------------------------------------------------------------------
# The one place that looks at --impl: after this, both models and both optimizers are used through
# the same methods (model(x, y) -> (logits, loss), loss.backward(), opt.step(), state_dict() ...).
def model_device(cfg: TrainConfig, device: torch.device) -> torch.device:
    """The NumPy MLP runs on the CPU whatever --device says."""
    return torch.device("cpu") if cfg.impl == "numpy" else device


def make_model(cfg: TrainConfig, vocab_size: int, n_classes: int, device: torch.device | None = None):
    if cfg.impl == "numpy":
        return NumpyMLP(vocab_size, cfg.hidden, n_classes, cfg.dropout, seed=cfg.seed)
    return TorchMLP(vocab_size, cfg.hidden, n_classes, cfg.dropout).to(device or "cpu")


def make_optimizer(cfg: TrainConfig, model):
    """Lazy Adam for the sparse first layer + AdamW for the rest, by hand or with torch.optim."""
    if cfg.impl == "numpy":
        return AdamWNumpy(model.params, model.grads, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return MLPOptimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)


def count_params(model) -> int:
    return sum(int(np.prod(p.shape)) for p in model.parameters())


def _numpy(z) -> np.ndarray:
    return z if isinstance(z, np.ndarray) else z.float().cpu().numpy()


def predict_logits(model, x: SparseRows, batch_size: int = 4096, device: torch.device | None = None,
                   dtype: str = "float32") -> np.ndarray:
    """(N, C) logits, in eval mode, in batches; the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode(), autocast(device or torch.device("cpu"), dtype):
            for s in range(0, len(x), batch_size):
                out.append(_numpy(model(x.take(np.arange(s, min(s + batch_size, len(x)))))[0]))
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def predict_proba(model, x: SparseRows, device=None, dtype: str = "float32") -> np.ndarray:
    return softmax(predict_logits(model, x, device=device, dtype=dtype).astype(np.float64))


# ----- metrics -------------------------------------------------------------------------------
def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (rows = truth)."""
    C = len(label_names)
    cm = np.bincount(y_true * C + y_pred, minlength=C * C).reshape(C, C)
    tp = np.diag(cm).astype(np.float64)
    precision = np.divide(tp, cm.sum(0), out=np.zeros(C), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros(C), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(C), where=(precision + recall) > 0)
    return {"accuracy": float(tp.sum() / max(cm.sum(), 1)), "macro_f1": float(f1.mean()),
            "per_class": {n: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                          for n, p, r, f, s in zip(label_names, precision, recall, f1, cm.sum(1))},
            "confusion_matrix": cm.tolist()}


def mean_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def throughput(model, x: SparseRows, batch_size: int = 4096, repeats: int = 3, device=None,
               dtype: str = "float32") -> float:
    """Samples/s of batched inference on already-featurized rows (best of ``repeats``)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        predict_logits(model, x, batch_size, device, dtype)
        best = min(best, time.perf_counter() - t)
    return len(x) / best


# ----- checkpoints ---------------------------------------------------------------------------
def vectorizer_payload(vec: NgramVectorizer) -> dict:
    state = vec.state_dict()
    state["idf"] = torch.from_numpy(vec.idf.copy())
    state["scale"] = None if vec.scale is None else torch.from_numpy(vec.scale.copy())
    return state


def vectorizer_from_payload(state: dict) -> NgramVectorizer:
    state = dict(state)
    state["idf"] = state["idf"].numpy()
    state["scale"] = None if state["scale"] is None else state["scale"].numpy()
    return NgramVectorizer.from_state_dict(state)


def save_model_checkpoint(path: Path, cfg: TrainConfig, model, vec: NgramVectorizer, label_names: list[str],
                          **extra) -> Path:
    payload = {"model": model.state_dict(), "config": dataclasses.asdict(cfg), "vocab": vectorizer_payload(vec),
               "label_names": list(label_names), **extra}
    return save_checkpoint(path, payload, KIND)


def load_model_checkpoint(path: str | Path):
    """``(cfg, model, vectorizer, label_names, raw checkpoint)``; one-line errors for bad files."""
    ckpt = load_checkpoint(path, kind=KIND)
    try:
        cfg = config_from_dict(TrainConfig, ckpt["config"])
        vec = vectorizer_from_payload(ckpt["vocab"])
        names = list(ckpt["label_names"])
        model = make_model(cfg, len(vec.vocab), len(names))
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"{path}: stage1_mlp checkpoint is incomplete or does not match its config "
                        f"({type(e).__name__}: {first})") from None
    model.eval()
    return cfg, model, vec, names, ckpt


def make_stage_result(cfg: TrainConfig, split: str, y_true: np.ndarray, logits: np.ndarray, label_names: list[str],
                      params: int, train_wall_s: float | None, device: str, files, sample: bool,
                      samples_per_s: float, extra: dict | None = None) -> dict:
    """A :func:`scripts.results.make_result` record for stage 1 (metrics flat; details beside them)."""
    m = classification_metrics(y_true, logits.argmax(1), label_names)
    metrics = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "loss": mean_loss(logits, y_true)}
    protocol = {"protocol": cfg.protocol}
    if cfg.protocol == "ag_news_test_cv":
        protocol.update(fold=cfg.fold, protocol_note=CV_NOTE)
    return make_result(
        KIND, "classification", cfg.dataset + ("_sample" if sample else ""), split, metrics,
        params=params, train_wall_s=train_wall_s, device=device, seed=cfg.seed,
        data_sha256=sha256_files(files) if files else None, primary_metric="accuracy",
        samples_per_s=samples_per_s, n_examples=int(len(y_true)), **protocol, impl=cfg.impl,
        model=f"MLP {'NumPy' if cfg.impl == 'numpy' else 'PyTorch'} {list(cfg.hidden)}",
        per_class=m["per_class"], confusion_matrix=m["confusion_matrix"], label_names=list(label_names),
        config=dataclasses.asdict(cfg), **(extra or {}))


def to_json(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


# ----- inspection (visualize.ipynb) -----------------------------------------------------------
def first_layer_weights(model) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(W1 (V, H1), [W2 (H1, H2), ..., W_out (H_L, C)])`` in (in, out) layout, for either impl."""
    p = model.as_numpy()
    return p["W1"], [p[f"W{k}"] for k in range(2, len(p) // 2 + 1)]


def ngram_class_scores(model, vec: NgramVectorizer) -> np.ndarray:
    """(V, C) how much one unit of each n-gram's feature pushes each class logit, ignoring the ReLUs:
    ``scale_j * (W1 W2 ... W_out)[j]``. A linear reading of the network, good for ranking n-grams."""
    W1, rest = first_layer_weights(model)
    scores = W1
    for W in rest:
        scores = scores @ W
    if vec.scale is not None:
        scores = scores * vec.scale[:, None]
    return scores


def hidden_activations(model, x: SparseRows) -> np.ndarray:
    """(N, H1) first hidden layer after ReLU, in eval mode."""
    p = model.as_numpy()
    return np.maximum(sparse_matmul(x, p["W1"]) + p["b1"], 0)
