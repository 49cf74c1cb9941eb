"""One result format for every stage.

Each ``evaluate.py`` (and ``train.py`` at its end) calls :func:`write_result`, which writes
``results/<stage>/<name>.json`` and prints the same object on one final line::

    RESULT {"stage": "stage1_mlp", "task": "classification", "dataset": "imdb", ...}

``results/`` is git-ignored except ``results/reported/``: the result files that README and docs
quote are copied there (one per benchmark run) and ``scripts/report.py`` builds the tables.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import torch

from scripts import REPO_ROOT
from scripts.checkpoint import atomic_write

RESULTS_ENV = "MY_LLM_RESULTS"
REQUIRED = ("stage", "task", "dataset", "split", "metrics", "params", "train_wall_s", "device", "torch",
            "command", "git_commit", "seed", "data_sha256", "timestamp")


def results_dir() -> Path:
    """``$MY_LLM_RESULTS`` or ``<repo>/results``."""
    return Path(os.environ.get(RESULTS_ENV) or REPO_ROOT / "results")


def git_commit() -> str | None:
    """The commit checked out now, with ``+dirty`` if tracked files differ from it."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "diff", "--quiet", "HEAD", "--"],
                               capture_output=True, timeout=5).returncode == 1
        return (head + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


# The code a long run executes is the code checked out when it started, not when its result is
# written (commits may land in between), so the commit is read once, at import.
COMMIT_AT_START = git_commit()


def current_command() -> str:
    """How this process was started, as a command a user can paste (``cd stage1_mlp && python train.py ...``).

    ``--resume`` is left out: a resumed run ends exactly where the uninterrupted one would, so the command that
    reproduces its result from scratch is the same command without it (the result file says where it resumed).
    """
    args = [a for a in sys.argv[1:] if a != "--resume"]
    argv = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *args]) if sys.argv and sys.argv[0] else ""
    return f"{cd_prefix()}python {argv}".strip()


def cd_prefix() -> str:
    """``cd <folder relative to the repo> && `` for the current folder ("" at the root or outside the repo)."""
    try:
        rel = Path.cwd().resolve().relative_to(REPO_ROOT.resolve())
    except ValueError:
        return ""
    return f"cd {rel} && " if str(rel) != "." else ""


def make_result(stage: str, task: str, dataset: str, split: str, metrics: dict, *, params: int | None,
                train_wall_s: float | None, device: str, seed: int | None, data_sha256: str | None,
                command: str | None = None, **extra) -> dict:
    """Build a result record; ``extra`` adds fields such as ``tokens_per_s``, ``samples_per_s``, ``config``."""
    record = {
        "stage": stage, "task": task, "dataset": dataset, "split": split,
        "metrics": {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                    for k, v in metrics.items()},
        "params": params, "train_wall_s": train_wall_s, "device": device,
        "torch": torch.__version__, "command": command or current_command(),
        "git_commit": COMMIT_AT_START, "seed": seed, "data_sha256": data_sha256,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(extra)
    return record


def write_result(record: dict, name: str | None = None, out_dir: str | Path | None = None, echo: bool = True) -> Path:
    """Write ``record`` as JSON under ``results/<stage>/`` and print the ``RESULT`` line."""
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"result record lacks {missing}")
    name = name or f"{record['task']}_{record['dataset']}_{record['split']}"
    stamp = record["timestamp"].replace(":", "").replace("-", "").replace("+0000", "Z")
    path = Path(out_dir or results_dir() / record["stage"]) / f"{name}_{stamp}.json"
    text = json.dumps(record, indent=1, ensure_ascii=False)
    atomic_write(path, lambda f: f.write(text.encode("utf-8") + b"\n"))
    if echo:
        print("RESULT " + json.dumps(record, ensure_ascii=False), flush=True)
    return path


def report_result(path: str | Path, reported_root: str | Path | None = None) -> Path:
    """Copy a written result file to ``results/reported/<stage>/`` under its own timestamped name
    (what ``--report`` of a benchmark does; never overwrites an earlier reported file)."""
    import shutil

    path = Path(path)
    stage = json.loads(path.read_text(encoding="utf-8"))["stage"]
    dest_dir = Path(reported_root or REPO_ROOT / "results" / "reported") / stage
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / path.name
    if dest.exists():
        raise FileExistsError(f"{dest} already exists")
    shutil.copy2(path, dest)
    os.chmod(dest, 0o644)
    return dest


def parse_result_lines(text: str) -> list[dict]:
    """Every ``RESULT {...}`` line in a process's output."""
    return [json.loads(line[len("RESULT "):]) for line in text.splitlines() if line.startswith("RESULT {")]


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux/macOS)."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024, 1)
