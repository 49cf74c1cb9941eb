"""Where stage 1 reads its data, and how it is split (docs/stage1_mlp.md §3.4).

* IMDb (Maas et al. 2011): ``imdb/{train,test}.jsonl.gz`` (``{"text", "label"}``, 1 = positive),
  hub id ``stanfordnlp/imdb``; a stratified 4,000-review sample of the *train* split is bundled in
  ``stage1_mlp/data/imdb/train.jsonl.gz`` for the quick start and the tests.
* AG News (Zhang et al. 2015): the original ``ag_news/{train,test}.csv`` (``"class","title","description"``,
  class 1..4, optionally gzipped) + ``classes.txt``, hub id ``fancyzhx/ag_news``. Text = title + description.

The folder is found by :func:`scripts.data.find_dataset` (``--data_dir`` → ``$MY_LLM_DATA`` → bundled
→ hub). The validation split is carved from train (:func:`stratified_split`); test is read only by
``evaluate.py``. Protocol ``ag_news_test_cv`` (:func:`stratified_folds`) trains and tests inside the
7,600-row AG News *test* split by 5-fold cross-validation, for machines without the train split:
its figures are labelled as such and are not comparable with published AG News results.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scripts.cli import UserError
from scripts.data import (
    DataFileError,
    DataNotFoundError,
    HubSource,
    data_file,
    find_dataset,
    load_hub_dataset,
    open_text,
    read_errors,
    read_text,
)

STAGE_DIR = Path(__file__).resolve().parent.parent
BUNDLED = STAGE_DIR / "data"
DATASET_NAMES = ("imdb", "ag_news")
PROTOCOLS = ("standard", "ag_news_test_cv")
CV_FOLDS = 5
CV_SEED = 0  # the fold assignment is part of the protocol: fixed, independent of --seed

LABEL_NAMES = {"imdb": ["neg", "pos"], "ag_news": ["World", "Sports", "Business", "Sci/Tech"]}
FILES = {"imdb": {"train": "train.jsonl.gz", "test": "test.jsonl.gz"},
         "ag_news": {"train": "train.csv", "test": "test.csv"}}


@dataclass
class TextData:
    """One split: raw texts, integer labels 0..C-1, class names, and what was read."""

    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    files: list[Path] = field(default_factory=list)  # for the result file's data_sha256
    source: str = ""                                 # human-readable origin
    sample: bool = False                             # True for the bundled sample

    def subset(self, idx: np.ndarray) -> "TextData":
        return TextData([self.texts[i] for i in idx], self.labels[idx], self.label_names, self.files,
                        self.source, self.sample)


def _read_imdb(path: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with read_errors(path), open_text(path) as f:
        for n, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
                texts.append(row["text"])
                labels.append(int(row["label"]))
            except (ValueError, KeyError, TypeError) as e:
                raise DataFileError(f"{path}:{n}: expected one JSON object {{\"text\": ..., \"label\": 0 or 1}} "
                                    f"per line ({type(e).__name__})") from None
    return texts, labels


def _read_ag_news(path: Path) -> tuple[list[str], list[int]]:
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
    path = folder / "classes.txt"
    if path.is_file():
        names = [ln.strip() for ln in read_text(path).splitlines() if ln.strip()]
        if len(names) == 4:
            return names
    return list(LABEL_NAMES["ag_news"])


def load_split(name: str, split: str, data_dir: str | Path | None = None) -> TextData:
    """Read split ``train`` or ``test`` of dataset ``name`` from the first place that has it."""
    if name not in DATASET_NAMES:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    fname = FILES[name][split]
    bundled = BUNDLED / name if (BUNDLED / name).is_dir() else None
    try:
        where = find_dataset(name, [fname], data_dir=data_dir, bundled=bundled)
    except DataNotFoundError as e:
        if name == "ag_news" and split == "train" and "looked in: " in str(e):
            looked = str(e).split("looked in: ", 1)[-1].split("; the hub", 1)[0]
            raise UserError(
                f"AG News train split (train.csv, 120k rows) not found (looked in: {looked}; hub offline or "
                f"unreachable). Put train.csv + test.csv in <dir>/ag_news/ and pass --data_dir <dir> or set "
                f"MY_LLM_DATA=<dir>; or, with only the test split, run --protocol ag_news_test_cv "
                f"(5-fold CV inside the 7,600-row test split; not the official figure)") from None
        raise
    if isinstance(where, HubSource):
        ds = load_hub_dataset(where, split)
        texts, labels = list(ds["text"]), [int(v) for v in ds["label"]]
        names = list(ds.features["label"].names) if hasattr(ds.features["label"], "names") else LABEL_NAMES[name]
        return TextData(texts, np.asarray(labels, dtype=np.int64), names, [], f"hub:{where.hub_id}/{split}")
    path = data_file(where, fname)
    if name == "imdb":
        texts, labels = _read_imdb(path)
        names = list(LABEL_NAMES["imdb"])
    else:
        texts, labels = _read_ag_news(path)
        names = _ag_news_classes(where)
    if not texts:
        raise UserError(f"{path} holds no examples")
    is_sample = bundled is not None and Path(where).resolve() == bundled.resolve()
    return TextData(texts, np.asarray(labels, dtype=np.int64), names, [path], str(path), is_sample)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)``: ``val_fraction`` of every class goes to validation (seeded)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(val_fraction * len(idx)))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def stratified_folds(labels: np.ndarray, k: int = CV_FOLDS, seed: int = CV_SEED) -> np.ndarray:
    """(N,) fold id 0..k-1 per example, each class spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold[idx] = np.arange(len(idx)) % k
    return fold


def load_for_training(name: str, protocol: str, fold: int, data_dir=None) -> tuple[TextData, TextData | None]:
    """``(train_pool, held_out)``: the data train.py may use, and the test set of the protocol.

    ``standard``: the train split and ``None`` (the test split is only read by evaluate.py).
    ``ag_news_test_cv``: the AG News test split minus fold ``fold``, and that fold.
    """
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    if protocol == "standard":
        return load_split(name, "train", data_dir), None
    if name != "ag_news":
        raise UserError(f"--protocol ag_news_test_cv needs --dataset ag_news, not {name!r}")
    if not 0 <= fold < CV_FOLDS:
        raise UserError(f"--fold must be in 0..{CV_FOLDS - 1}, got {fold}")
    full = load_split(name, "test", data_dir)
    folds = stratified_folds(full.labels)
    return full.subset(np.flatnonzero(folds != fold)), full.subset(np.flatnonzero(folds == fold))
