"""The one flag vocabulary of every stage's train / evaluate / generate / benchmark scripts.

A flag listed here means the same thing in every stage, with the help text below (a test walks
every CLI and checks it). Zero means "off" / "no limit" wherever a number can switch something
off; there is no ``None`` on the command line. See docs/CONTRIBUTING.md for the whole contract.

Stages declare these flags as dataclass fields with ``field(default=..., metadata=shared("max_steps"))``
(training flags) or with :func:`add_checkpoint_arg` (scripts that read a model).
"""
from __future__ import annotations

import argparse

DEFAULT_SEED = 1337

HELP = {
    "checkpoint": "checkpoint to read (a best_*.pt or last_*.pt written by this stage's train.py); "
                  "--model_path is the same flag",
    "out_dir": "folder for checkpoints: best_* (best validation) and last_* (resumable) files",
    "run_dir": "folder for metrics.jsonl and plots",
    "data_dir": "folder with the dataset (or with <dataset>/ inside); else $MY_LLM_DATA, the bundled copy, the hub",
    "epochs": "passes over the training data (budget)",
    "max_steps": "stop after this many optimizer steps in total (0 = no limit; budget)",
    "max_minutes": "stop after this much training wall time (0 = no limit; budget); the steps that fit are "
                   "estimated once, after the first steps, and fix the LR schedule's length",
    "schedule_steps": "length of the LR schedule in steps (0 = from the budget); time-budgeted results record it",
    "eval_every": "evaluate on validation every N steps (0 = at the end of every epoch)",
    "log_every": "print a log line every N steps",
    "patience": "early stopping: evaluations in a row without a better validation metric (0 = off)",
    "limit_train": "use only N training examples (0 = all; smoke runs); validation and test are never cut",
    "seed": "random seed (initial weights, data order, dropout)",
    "grad_clip": "clip the global gradient norm to this (0 = off)",
    "resume": "continue <out_dir>/last_* exactly; flags that change the model, data or tokenizer are refused, "
              "budget flags (--epochs, --max_steps, --max_minutes) may be raised",
    "report": "also copy the result files to results/reported/ (what README tables are built from)",
}
TRAIN_FLAGS = ("out_dir", "run_dir", "epochs", "max_steps", "max_minutes", "eval_every", "log_every", "patience",
               "limit_train", "seed", "grad_clip", "resume")


def shared(name: str, **metadata) -> dict:
    """Dataclass field metadata carrying the shared help text of ``--name``."""
    return {"help": HELP[name], **metadata}


def add_checkpoint_arg(parser: argparse.ArgumentParser, default: str) -> None:
    """``--checkpoint PATH`` (and its alias ``--model_path``) for scripts that read a model."""
    parser.add_argument("--checkpoint", "--model_path", dest="checkpoint", default=default, help=HELP["checkpoint"])


def check_non_negative(values: dict) -> None:
    """One-line error for negative budgets/limits (``{"max_steps": 3, ...}``); 0 means off."""
    from scripts.cli import UserError

    bad = [f"--{k} {v}" for k, v in values.items() if v is not None and v < 0]
    if bad:
        raise UserError(f"must be >= 0 (0 = off): {', '.join(bad)}")
