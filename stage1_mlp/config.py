"""Training configuration of stage 1 (saved inside every checkpoint)."""
from __future__ import annotations

from dataclasses import dataclass, field

from scripts.cli import UserError
from scripts.flags import DEFAULT_SEED, check_non_negative, shared
from stage1_mlp.datasets.sources import CV_FOLDS, DATASET_NAMES, PROTOCOLS
from stage1_mlp.datasets.vectorizer import WEIGHTINGS

STAGE1_SCHEDULES = ("constant", "cosine", "linear", "wsd")


@dataclass
class TrainConfig:
    # data
    dataset: str = field(default="imdb", metadata={"help": f"dataset: {' | '.join(DATASET_NAMES)}"})
    protocol: str = field(default="standard", metadata={
        "help": "standard (train split → model, test split → evaluate.py) or ag_news_test_cv "
                "(5-fold CV inside the AG News test split; NOT the official figure)"})
    fold: int = field(default=0, metadata={"help": f"held-out fold 0..{CV_FOLDS - 1} for --protocol ag_news_test_cv"})
    data_dir: str = field(default="", metadata=shared("data_dir"))
    val_fraction: float = field(default=0.05, metadata={
        "help": "fraction of the train split carved out (stratified) for validation"})
    limit_train: int = field(default=0, metadata=shared("limit_train"))
    # features
    ngram: int = field(default=2, metadata={"help": "use 1..ngram-grams"})
    max_features: int = field(default=200_000, metadata={"help": "vocabulary size (most frequent n-grams)"})
    min_df: int = field(default=2, metadata={"help": "keep n-grams seen in at least this many training documents"})
    weighting: str = field(default="tfidf", metadata={
        "help": f"feature weights: {' | '.join(WEIGHTINGS)} (mean = fastText-style average)"})
    nb_scale: bool = field(default=True, metadata={
        "help": "scale features by Naive Bayes log-count ratios (NBSVM; two-class datasets only, ignored otherwise)"})
    # model
    impl: str = field(default="torch", metadata={"help": "torch (nn + autograd) or numpy (hand-written backward)"})
    hidden_dims: tuple[int, ...] = field(default=(64,), metadata={
        "help": "hidden layer sizes, e.g. --hidden_dims 256 128; 0 = no hidden layer (linear / fastText)"})
    dropout: float = field(default=0.5, metadata={"help": "dropout after every hidden ReLU"})
    # optimisation
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate (lazy Adam + AdamW)"})
    lr_schedule: str = field(default="constant", metadata={
        "help": "learning-rate schedule over the run's steps", "choices": list(STAGE1_SCHEDULES)})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps of the schedule"})
    batch_size: int = field(default=256, metadata={"help": "mini-batch size"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay (dense layers)"})
    grad_clip: float = field(default=0.0, metadata=shared("grad_clip"))
    seed: int = field(default=DEFAULT_SEED, metadata=shared("seed"))
    # budget (may be raised with --resume)
    epochs: int = field(default=10, metadata=shared("epochs"))
    max_steps: int = field(default=0, metadata=shared("max_steps"))
    max_minutes: float = field(default=0.0, metadata=shared("max_minutes"))
    schedule_steps: int = field(default=0, metadata=shared("schedule_steps"))
    # evaluation, early stopping, logging
    eval_every: int = field(default=0, metadata=shared("eval_every"))
    patience: int = field(default=1, metadata=shared("patience"))
    log_every: int = field(default=50, metadata=shared("log_every"))
    # outputs
    out_dir: str = field(default="checkpoints", metadata=shared("out_dir"))
    run_dir: str = field(default="", metadata=shared("run_dir"))
    resume: bool = field(default=False, metadata=shared("resume"))

    @property
    def hidden(self) -> tuple[int, ...]:
        """Hidden sizes with the ``0`` = none convention applied."""
        return tuple(h for h in self.hidden_dims if h != 0)

    def validate(self) -> None:
        """Impossible values → one-line :class:`UserError`."""
        if self.dataset not in DATASET_NAMES:
            raise UserError(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASET_NAMES)}")
        if self.protocol not in PROTOCOLS:
            raise UserError(f"unknown protocol {self.protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
        if self.impl not in ("torch", "numpy"):
            raise UserError(f"--impl must be torch or numpy, got {self.impl!r}")
        if self.weighting not in WEIGHTINGS:
            raise UserError(f"--weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        for name in ("epochs", "batch_size", "ngram", "max_features", "min_df", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be >= 1, got {getattr(self, name)}")
        check_non_negative({k: getattr(self, k) for k in (
            "max_steps", "max_minutes", "schedule_steps", "eval_every", "patience", "limit_train", "grad_clip",
            "warmup_steps")})
        if any(h < 0 for h in self.hidden_dims):
            raise UserError(f"--hidden_dims must be positive sizes (or 0 for none), got {list(self.hidden_dims)}")
        if not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise UserError(f"--weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.val_fraction < 0.5:
            raise UserError(f"--val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if self.protocol == "ag_news_test_cv" and self.dataset != "ag_news":
            raise UserError("--protocol ag_news_test_cv needs --dataset ag_news")
        if not 0 <= self.fold < CV_FOLDS:
            raise UserError(f"--fold must be in 0..{CV_FOLDS - 1}, got {self.fold}")
