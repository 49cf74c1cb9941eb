"""Text classification data shared by every classifier after stage 1: IMDb and AG News under stage 1's protocols.

The rows of the "MLP / LSTM / Transformer / GPT" comparison must be measured on exactly the data stage 1
uses, so this one module reproduces stage 1's protocols (``stage1_mlp/datasets/sources.py``, read as a
specification only) for stage 2's LSTM, stage 4's Transformer and stage 5's GPT classifiers: one
implementation of the splits and the metrics, so the stages cannot drift apart.

* **IMDb** (Maas et al. 2011): ``imdb/{train,test}.jsonl.gz`` (``{"text", "label"}``, 1 = positive).
  Validation = ``val_fraction`` of every class of the train split (NumPy ``default_rng(seed)``, the same
  split stage 1 carves with the same seed); the 25,000-review test split is the test set. The bundled
  4,000-review train sample (``stage1_mlp/data/imdb/``, read by path) has no test split: runs on it are
  scored on validation.
* **AG News** (Zhang et al. 2015): ``ag_news/{train,test}.csv`` (``"class","title","description"``, class
  1..4; text = title + " " + description), ``classes.txt`` for the names.
  ``standard``: train split (validation carved from it) → test split.
  ``ag_news_test_cv``: for machines without the train split: 5-fold stratified cross-validation inside
  the 7,600-row *test* split, fold assignment fixed (``CV_SEED``, independent of ``--seed``), fold ``K``
  held out as the test set. These figures are **not** the official AG News figure.
* ``--limit_train N`` keeps a stratified subset (seed + 1) of the training part only, after validation
  has been carved, so a smoke run is scored on the same validation split as a full run.

Metrics (:func:`classification_metrics`): accuracy, macro-F1, per-class precision/recall/F1, confusion
matrix (rows = truth), the same definitions as stage 1.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scripts import REPO_ROOT
from scripts.cli import UserError
from scripts.data import DataFileError, data_file, find_dataset, open_text, read_errors, read_text

IMDB_BUNDLED = REPO_ROOT / "stage1_mlp" / "data" / "imdb"
DATASET_NAMES = ("imdb", "ag_news")
PROTOCOLS = ("standard", "ag_news_test_cv")
CV_FOLDS = 5
CV_SEED = 0  # part of the protocol (as in stage 1): the folds never depend on --seed
LABEL_NAMES = {"imdb": ["neg", "pos"], "ag_news": ["World", "Sports", "Business", "Sci/Tech"]}
FILES = {"imdb": {"train": "train.jsonl.gz", "test": "test.jsonl.gz"},
         "ag_news": {"train": "train.csv", "test": "test.csv"}}
CV_NOTE = ("5-fold stratified cross-validation inside the 7,600-row AG News TEST split (the train split is "
           "not available offline); not comparable with the official train→test figure")


@dataclass
class TextSplit:
    """One split: raw texts, labels 0..K-1 (int64 array), class names, the files read."""

    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    files: list = field(default_factory=list)
    sample: bool = False  # the bundled sample, not the full dataset

    def subset(self, idx) -> "TextSplit":
        idx = np.asarray(idx, dtype=np.int64)
        return TextSplit([self.texts[i] for i in idx], self.labels[idx], self.label_names, self.files, self.sample)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class ClassificationData:
    train: TextSplit
    val: TextSplit
    test: TextSplit | None  # None: no test split here (the bundled IMDb sample)
    test_name: str          # "test" or "test_cv_fold<K>"
    protocol_note: str | None = None


# ----- readers -----------------------------------------------------------------------------------

def read_imdb(path: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with read_errors(path), open_text(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                texts.append(str(row["text"]))
                labels.append(int(row["label"]))
            except (ValueError, KeyError, TypeError) as e:
                raise DataFileError(f"{path}:{n}: expected one JSON object {{\"text\": ..., \"label\": 0 or 1}} "
                                    f"per line ({type(e).__name__})") from None
            if labels[-1] not in (0, 1):
                raise DataFileError(f"{path}:{n}: IMDb label must be 0 or 1, got {labels[-1]}")
    return texts, labels


def read_ag_news(path: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with read_errors(path), open_text(path) as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if len(row) != 3 or not row[0].strip().isdigit() or not 1 <= int(row[0]) <= 4:
                got = repr(row[:3])
                got = got if len(got) <= 100 else got[:100] + "..."
                raise UserError(f"{path}:{n}: expected '\"class\",\"title\",\"description\"' with class 1..4, "
                                f"got {got}")
            labels.append(int(row[0]) - 1)
            texts.append(f"{row[1]} {row[2]}")
    return texts, labels


def _ag_news_classes(folder: Path) -> list[str]:
    path = Path(folder) / "classes.txt"
    if path.is_file():
        names = [ln.strip() for ln in read_text(path).splitlines() if ln.strip()]
        if len(names) == 4:
            return names
    return list(LABEL_NAMES["ag_news"])


def load_split(name: str, split: str, data_dir: str | None = None) -> TextSplit:
    """Split ``train`` or ``test`` of ``name`` from ``--data_dir`` → ``$MY_LLM_DATA`` → the bundled IMDb sample."""
    if name not in DATASET_NAMES:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    fname = FILES[name][split]
    bundled = IMDB_BUNDLED if name == "imdb" and split == "train" else None
    try:
        folder = find_dataset(name, [fname], data_dir=data_dir, bundled=bundled, allow_hub=False)
    except UserError as e:
        if name == "ag_news" and split == "train":
            raise UserError(f"{e}. With only the AG News test split, run --protocol ag_news_test_cv --fold K "
                            f"(5-fold CV inside the 7,600-row test split; not the official figure)") from None
        raise
    path = data_file(folder, fname)
    if name == "imdb":
        texts, labels = read_imdb(path)
        names = list(LABEL_NAMES["imdb"])
    else:
        texts, labels = read_ag_news(path)
        names = _ag_news_classes(folder)
    if not texts:
        raise UserError(f"{path} holds no examples")
    sample = bundled is not None and Path(folder).resolve() == bundled.resolve()
    return TextSplit(texts, np.asarray(labels, dtype=np.int64), names, [path], sample)


def imdb_test_beside(train: TextSplit) -> TextSplit | None:
    """The IMDb test split next to the train file that was read (``None`` for the bundled sample)."""
    path = data_file(Path(train.files[0]).parent, FILES["imdb"]["test"])
    if path is None:
        return None
    texts, labels = read_imdb(path)
    return TextSplit(texts, np.asarray(labels, dtype=np.int64), list(train.label_names), [path], train.sample)


# ----- the protocols (identical to stage 1's) ----------------------------------------------------

def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)``: ``val_fraction`` of every class goes to validation (stage 1's exact rule)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(val_fraction * len(idx)))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def stratified_folds(labels: np.ndarray, k: int = CV_FOLDS, seed: int = CV_SEED) -> np.ndarray:
    """(N,) fold id 0..k-1 per example, each class spread evenly over the folds (stage 1's assignment)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold[idx] = np.arange(len(idx)) % k
    return fold


def load_classification(dataset: str, protocol: str, fold: int, *, val_fraction: float, seed: int,
                        limit_train: int = 0, data_dir: str | None = None, need_test: bool = True
                        ) -> ClassificationData:
    """Train / validation / test exactly as the protocol defines them (see the module docstring)."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    if not 0 < val_fraction < 0.5:
        raise UserError(f"--val_fraction must be in (0, 0.5), got {val_fraction}")
    note = None
    if protocol == "standard":
        if fold:
            raise UserError("--fold only applies to --protocol ag_news_test_cv")
        pool = load_split(dataset, "train", data_dir)
        test_name = "test"
        if not need_test:
            test = None
        elif dataset == "imdb":
            test = imdb_test_beside(pool)
        else:
            test = load_split(dataset, "test", data_dir)
    else:
        if dataset != "ag_news":
            raise UserError(f"--protocol ag_news_test_cv needs --dataset ag_news, not {dataset!r}")
        if not 0 <= fold < CV_FOLDS:
            raise UserError(f"--fold must be in 0..{CV_FOLDS - 1}, got {fold}")
        full = load_split(dataset, "test", data_dir)
        folds = stratified_folds(full.labels)
        pool, test = full.subset(np.flatnonzero(folds != fold)), full.subset(np.flatnonzero(folds == fold))
        test_name, note = f"test_cv_fold{fold}", CV_NOTE
    tr, va = stratified_split(pool.labels, val_fraction, seed)
    if len(va) == 0 or len(tr) == 0:
        raise UserError(f"too few examples ({len(pool)}) to carve a validation split")
    if limit_train and limit_train < len(tr):
        _, keep = stratified_split(pool.labels[tr], limit_train / len(tr), seed + 1)
        tr = tr[keep]
    return ClassificationData(pool.subset(tr), pool.subset(va), test, test_name, note)


# ----- metrics (the same definitions as stage 1) -------------------------------------------------

def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (rows = truth)."""
    C = len(label_names)
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    cm = np.bincount(y_true * C + y_pred, minlength=C * C).reshape(C, C)
    tp = np.diag(cm).astype(np.float64)
    precision = np.divide(tp, cm.sum(0), out=np.zeros(C), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros(C), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(C), where=(precision + recall) > 0)
    return {"accuracy": float(tp.sum() / max(cm.sum(), 1)), "macro_f1": float(f1.mean()),
            "per_class": {n: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                          for n, p, r, f, s in zip(label_names, precision, recall, f1, cm.sum(1))},
            "confusion_matrix": cm.tolist()}


# ----- length-bucketed batches -------------------------------------------------------------------

def bucketed_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, pool_batches: int = 50
                     ) -> list[list[int]]:
    """Index batches of ``batch_size`` texts of similar length (the last one may be smaller).

    Shuffle (seeded by ``seed``, ``epoch``), sort pools of ``pool_batches`` batches by length, cut them
    into batches, shuffle the batch order. Always ``ceil(N / batch_size)`` batches, so an epoch has a fixed
    number of steps, and the same arguments give the same batches (a resumed run rebuilds them).
    """
    rng = np.random.default_rng([seed, epoch])
    n = len(lengths)
    order = rng.permutation(n)
    lens = np.asarray(lengths)
    pool = batch_size * pool_batches
    chunks = []
    for start in range(0, n, pool):
        part = order[start:start + pool]
        part = part[np.argsort(lens[part], kind="stable")]
        chunks.append(part)
    flat = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    batches = [flat[i:i + batch_size].tolist() for i in range(0, n, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
