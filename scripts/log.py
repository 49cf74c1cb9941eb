"""Logging: one greppable console line per step, a JSONL metrics file, tqdm bars.

    step 200 | loss 1.7340 | lr 6.00e-04 | tok/s 12.3k | ms/step 41.2

Console lines go through ``tqdm.write`` so they print above a live progress bar instead of
tearing it. The same numbers are appended to ``<run_dir>/metrics.jsonl`` (one JSON object per
line), which notebooks and ``scripts/report.py`` read. ``TQDM_DISABLE=1`` hides the bars.

A fresh run never appends to an earlier run's file: an existing ``metrics.jsonl`` is moved aside
to ``metrics.<time>.jsonl``. A resumed run (``resume_step=N``) continues its own file, minus any
lines past step ``N`` (written after the checkpoint it resumes from, and about to be redone).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Iterable

from tqdm.auto import tqdm


def _fmt(key: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if key == "lr" or (value != 0 and abs(value) < 1e-3):
        return f"{value:.2e}"
    if key.endswith("/s") and value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"


def format_line(step: int | None, metrics: dict) -> str:
    """``step 3 | loss 1.2000 | lr 1.00e-03``; keys keep their order."""
    parts = [] if step is None else [f"step {step}"]
    parts += [f"{k} {_fmt(k, v)}" for k, v in metrics.items()]
    return " | ".join(parts)


class RunLogger:
    """Prints log lines and appends them to ``run_dir/metrics.jsonl`` (if ``run_dir`` is set)."""

    def __init__(self, run_dir: str | Path | None = None, filename: str = "metrics.jsonl", quiet: bool = False,
                 resume_step: int | None = None):
        self.path = None
        self.quiet = quiet
        self.moved_aside: Path | None = None
        if run_dir is not None:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            self.path = Path(run_dir) / filename
            if self.path.exists() and resume_step is None:
                stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.path.stat().st_mtime))
                self.moved_aside = self.path.with_name(f"{self.path.stem}.{stamp}{self.path.suffix}")
                n = 1
                while self.moved_aside.exists():
                    n += 1
                    self.moved_aside = self.path.with_name(f"{self.path.stem}.{stamp}-{n}{self.path.suffix}")
                self.path.rename(self.moved_aside)
            elif self.path.exists():
                keep = [ln for ln in self.path.read_text(encoding="utf-8").splitlines(keepends=True)
                        if ln.strip() and (json.loads(ln).get("step") or 0) <= resume_step]
                self.path.write_text("".join(keep), encoding="utf-8")

    def log(self, step: int | None = None, prefix: str = "", **metrics) -> str:
        """Log one line. ``prefix`` (e.g. ``"eval"``) starts the console line and is stored as ``kind``."""
        line = format_line(step, metrics)
        if prefix:
            line = f"{prefix} | {line}"
        if not self.quiet:
            tqdm.write(line, file=sys.stdout)
        if self.path is not None:
            record = {"kind": prefix or "train", "step": step, "time": time.time(), **metrics}
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        return line

    def info(self, message: str) -> None:
        """A free-form line (configuration, file written ...), also above the bar."""
        if not self.quiet:
            tqdm.write(message, file=sys.stdout)


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str | None = None, **kwargs) -> tqdm:
    """A tqdm bar on stderr with the project's defaults."""
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.5)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, **kwargs)


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict]:
    """Read a ``metrics.jsonl`` file back (optionally only one ``kind``)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if kind is None or row.get("kind") == kind:
                    rows.append(row)
    return rows
