"""Measure the README's stage commands: expected run time and peak memory, as committed result files.

    MY_LLM_DATA=/path/to/data python scripts/measure_commands.py      # measure all, then:
    python scripts/report.py                                           # README's COMMANDS blocks
    python scripts/measure_commands.py --only stage2_char_train --steps 20 --no_write

Each command of the root README (stage 1 IMDb, stage 2 char-level LSTM, stage 3 Bahdanau, and the
cheap evaluate commands) runs in its stage folder as a user would run it, on the full data
(``$MY_LLM_DATA``), but with a bounded budget: ``--max_steps N`` and temporary output folders are
added. From the run's own ``metrics.jsonl`` (the ``time`` of each logged step) we get the time of
one optimizer step, the set-up time before the first step and the time of one evaluation; the
full command's run time is then **estimated** (never measured to the end)::

    setup + epochs x steps_per_epoch x s_per_step + evaluations x s_per_eval

``steps_per_epoch`` comes from the run (its result file or log); a time budget in the command's
defaults caps the estimate; early stopping may end a run sooner (the record says so). Peak memory
is the process's own maximum resident set size (``os.wait4``), which does not depend on the
number of steps once the data is loaded. Evaluate commands are measured whole, on the checkpoint
the bounded training run wrote.

One JSON per command goes to ``results/reported/commands/<key>_<time>.json`` (hardware, the
command measured, torch, commit, timestamp); ``scripts/report.py`` renders them beside the
commands (``<!-- BEGIN COMMANDS stage=... -->`` blocks) and ``report.py --check`` verifies them.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python scripts/measure_commands.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts import REPO_ROOT

KIND = "command_measurement"
OUT_SUBDIR = Path("results") / "reported" / "commands"


@dataclass(frozen=True)
class Command:
    """One README command and how to measure it."""

    key: str
    stage: str
    command: str               # exactly as the README shows it (run inside the stage folder)
    kind: str = "train"        # "train" (bounded, extrapolated) or "evaluate" (run whole)
    steps: int = 40            # optimizer steps of the bounded training run
    uses: str | None = None    # evaluate: the key of the train command whose checkpoint it reads
    train_count: str = ""      # regex on the train log: the training-set size (fallback for steps/epoch)
    count_unit: str = "examples"  # "examples" (ceil(n / batch_size)) or "tokens" (truncated BPTT)
    note: str = ""
    extra: tuple[str, ...] = field(default_factory=tuple)  # flags added to the measured run (documented)


COMMANDS = (
    Command("stage1_imdb_train", "stage1_mlp", "python train.py --dataset imdb --epochs 30 --lr 0.001 --batch_size 64",
            steps=450, train_count=r"train (\d[\d,]*) / val",
            note="more than one epoch, so the first end-of-epoch evaluation gives the steps per epoch"),
    Command("stage1_imdb_evaluate", "stage1_mlp", "python evaluate.py --model_path checkpoints/best_model.pt",
            kind="evaluate", uses="stage1_imdb_train"),
    Command("stage2_char_train", "stage2_rnn_lstm", "python train.py --model_type lstm --vocab_type char --epochs 15",
            steps=20, train_count=r"train (\d[\d,]*) tokens", count_unit="tokens"),
    Command("stage3_bahdanau_train", "stage3_attention_seq2seq",
            "python train.py --attention_type bahdanau --epochs 30", steps=40, train_count=r"train (\d[\d,]*) pairs"),
    Command("stage3_bahdanau_evaluate", "stage3_attention_seq2seq",
            "python evaluate.py --model_path checkpoints/best_attention_model.pt", kind="evaluate",
            uses="stage3_bahdanau_train",
            note="decoding time grows with the length of the translations: a fully trained model's may differ from "
                 "those of the briefly trained model measured here"),
)


# ----- reading a CLI's --help -----------------------------------------------------------------

def cli_help(stage_dir: Path, script: str, env: dict) -> str:
    proc = subprocess.run([sys.executable, script, "--help"], cwd=stage_dir, env=env, capture_output=True,
                          text=True, timeout=120)
    text = " ".join(proc.stdout.split())
    for heading in ("options:", "optional arguments:"):  # the option list, not the usage line
        if heading in text:
            return text[text.index(heading):]
    return text


def has_flag(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def help_default(help_text: str, flag: str):
    """The ``(default: X)`` of ``flag`` in a one-line ``--help`` text, as int/float/str (``None`` if absent)."""
    m = re.search(rf"(?<![\w-]){re.escape(flag)}(?: [A-Z_]+)? (?:(?! --[a-z]).)*?\(default: ([^)]*)\)", help_text)
    if not m:
        return None
    value = m.group(1).strip()
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def first_flag(help_text: str, *flags: str) -> str | None:
    return next((f for f in flags if has_flag(help_text, f)), None)


def flag_value(argv: list[str], flag: str):
    """The value typed after ``flag`` in ``argv`` (``None`` if not typed)."""
    for i, w in enumerate(argv):
        if w == flag and i + 1 < len(argv):
            return argv[i + 1]
        if w.startswith(flag + "="):
            return w.split("=", 1)[1]
    return None


def setting(argv: list[str], help_text: str, *flags: str):
    """A setting as the full command would have it: typed in ``argv``, else the CLI's default."""
    for f in flags:
        v = flag_value(argv, f)
        if v is not None:
            return float(v) if re.fullmatch(r"[\d.]+(e-?\d+)?", v) else v
    for f in flags:
        v = help_default(help_text, f)
        if v is not None:
            return v
    return None


# ----- one measured run -------------------------------------------------------------------------

def run_measured(argv: list[str], cwd: Path, env: dict, timeout: float) -> dict:
    """Run ``argv`` in ``cwd``; wall time, exit code, output and the process's own peak RSS (MiB)."""
    t0 = time.time()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        t1 = time.time()
        out.seek(0)
        text = out.read()
    rss = usage.ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else usage.ru_maxrss / 1024
    return {"returncode": proc.returncode, "start": t0, "end": t1, "wall_s": t1 - t0, "output": text,
            "peak_rss_mb": round(rss, 1), "timed_out": t1 > deadline}


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def newest_result(results_root: Path, stage: str) -> dict | None:
    files = sorted((results_root / stage).glob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(files[-1].read_text(encoding="utf-8")) if files else None


def step_timing(rows: list[dict], start: float, end: float) -> dict:
    """Seconds per step, set-up and evaluation time from the ``time`` of logged metrics rows.

    A step's time comes only from pairs of consecutive training rows with no evaluation between them;
    an evaluation's time is its row's time less the steps since the training row before it.
    """
    rows = sorted((r for r in rows if isinstance(r.get("step"), int) and "time" in r), key=lambda r: r["time"])
    train = [r for r in rows if r.get("kind", "train") == "train"]
    if len(train) < 2 or train[-1]["step"] <= train[0]["step"]:
        raise RuntimeError(f"need at least two logged training steps to time a step, got {len(train)}")
    dt = ds = 0.0
    for a, b in zip(rows, rows[1:]):
        if a.get("kind", "train") == "train" and b.get("kind", "train") == "train" and b["step"] > a["step"]:
            dt, ds = dt + b["time"] - a["time"], ds + b["step"] - a["step"]
    if not ds:
        raise RuntimeError("no two consecutive training rows without an evaluation between them")
    s_per_step = dt / ds
    first = train[0]
    setup_s = max(0.0, first["time"] - start - first["step"] * s_per_step)
    evals = []
    for i, r in enumerate(rows):
        before = [t for t in rows[:i] if t.get("kind", "train") == "train"]
        if r.get("kind") == "eval" and before:
            a = before[-1]
            evals.append((r["step"], max(0.0, r["time"] - a["time"] - (r["step"] - a["step"]) * s_per_step)))
    return {"s_per_step": s_per_step, "setup_s": setup_s, "timed_steps": int(ds),
            "eval_s": sum(e for _, e in evals) / len(evals) if evals else None,
            "eval_steps": [st for st, _ in evals], "tail_s": max(0.0, end - rows[-1]["time"])}


def steps_per_epoch(spec: Command, result: dict | None, output: str, argv: list[str],
                    help_text: str, timing: dict | None = None) -> tuple[int, str]:
    """Optimizer steps in one epoch of the full command, and where the number comes from."""
    for where in (result or {}, (result or {}).get("budget") or {}):
        if isinstance(where.get("steps_per_epoch"), (int, float)) and where["steps_per_epoch"] > 0:
            return int(where["steps_per_epoch"]), "the run's result file (steps_per_epoch)"
    eval_every = setting(argv, help_text, "--eval_every", "--eval_interval") or 0
    inner = [st for st in (timing or {}).get("eval_steps", []) if st < spec.steps]  # before the budget's end
    if not eval_every and inner:
        return inner[0], f"the run's first end-of-epoch evaluation (at step {inner[0]})"
    m = re.search(r"(\d[\d,]*) (?:optimizer )?steps(?: per |/)epoch", output)
    if m:
        return int(m.group(1).replace(",", "")), "the run's log (steps per epoch)"
    m = re.search(spec.train_count, output) if spec.train_count else None
    if not m:
        raise RuntimeError(f"{spec.key}: cannot tell the steps per epoch (no steps_per_epoch in the result, "
                           f"no '/{spec.train_count}/' in the log)")
    n = int(m.group(1).replace(",", ""))
    batch = int(setting(argv, help_text, "--batch_size"))
    if spec.count_unit == "tokens":  # batchify into `batch` streams, segments of seq_len (truncated BPTT)
        seq_len = int(setting(argv, help_text, "--seq_len"))
        return (math.ceil((n // batch - 1) / seq_len),
                f"the run's log ({n:,} training tokens, batch {batch}, seq_len {seq_len})")
    return math.ceil(n / batch), f"the run's log ({n:,} training examples / batch {batch}, rounded up)"


def estimate(spec: Command, timing: dict, spe: int, argv: list[str], help_text: str) -> dict:
    epochs = int(setting(argv, help_text, "--epochs"))
    total = epochs * spe
    eval_every = setting(argv, help_text, "--eval_every", "--eval_interval") or 0
    evaluations = math.ceil(total / int(eval_every)) if eval_every else epochs
    eval_s = timing["eval_s"] if timing["eval_s"] is not None else timing["tail_s"]
    train_s = total * timing["s_per_step"]
    minutes = setting(argv, help_text, "--max_minutes", "--time_budget_min") or 0
    capped = bool(minutes) and train_s > 60 * minutes
    if capped:
        train_s = 60 * minutes
        evaluations = max(1, round(evaluations * train_s / (total * timing["s_per_step"])))
    wall = timing["setup_s"] + train_s + evaluations * eval_s + timing["tail_s"]
    patience = setting(argv, help_text, "--patience")
    cap = f" (capped at --max_minutes {minutes:g})" if capped else ""
    formula = (f"setup {timing['setup_s']:.0f} s + {epochs} epochs x {spe:,} steps x "
               f"{1000 * timing['s_per_step']:.0f} ms{cap} + {evaluations} evaluations x {eval_s:.1f} s"
               f" + end {timing['tail_s']:.0f} s")
    return {"wall_s": round(wall, 1), "epochs": epochs, "steps_per_epoch": spe, "total_steps": total,
            "evaluations": evaluations, "s_per_eval": round(eval_s, 2), "capped_by_time_budget": capped,
            "early_stopping_patience": patience, "formula": formula,
            "note": (f"an estimate from {timing['timed_steps']} timed steps, not a measured full run"
                     + (f"; early stopping (--patience {patience:g}) may end it sooner" if patience else ""))}


def git_commit(root: Path) -> str | None:
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", "stage1_mlp",
                                "stage2_rnn_lstm", "stage3_attention_seq2seq", "scripts"],
                               capture_output=True, timeout=5).returncode == 1
        return (head + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def hardware() -> str:
    import platform

    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"cpu: {name or platform.processor() or platform.machine()} ({cores} cores)"


def child_env(results_root: Path, extra: dict | None = None) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg",
           "MY_LLM_RESULTS": str(results_root), **(extra or {})}
    return env


def runnable_others(seconds: float = 2.0) -> float:
    """Mean number of other runnable processes over ``seconds`` (``/proc/loadavg``; 0 where unknown)."""
    samples = []
    for _ in range(max(1, int(seconds / 0.1))):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                samples.append(int(f.read().split()[3].split("/")[0]) - 1)  # less this reader
        except (OSError, ValueError, IndexError):
            return 0.0
        time.sleep(0.1)
    return sum(samples) / len(samples)


def wait_until_idle(max_wait_s: float, threshold: float = 0.5) -> float:
    """Wait (at most ``max_wait_s``) until no other process competes for the CPU; returns the last reading."""
    deadline = time.time() + max_wait_s
    busy = runnable_others()
    while busy > threshold and time.time() < deadline:
        print(f"    waiting for an idle CPU ({busy:.1f} other runnable processes)", flush=True)
        time.sleep(5)
        busy = runnable_others()
    return round(busy, 2)


def measure(spec: Command, root: Path, work: Path, done: dict, timeout: float = 600,
            wait_idle_s: float = 0) -> dict:
    """Run one command with a bounded budget in ``root/<stage>``; returns the measurement record."""
    stage_dir = root / spec.stage
    results_root = work / "results"
    env = child_env(results_root)
    argv = shlex.split(spec.command)
    script = argv[1]
    help_text = cli_help(stage_dir, script, env)
    added: list[str] = []
    ckpt_dir, run_dir = work / spec.key / "checkpoints", work / spec.key / "runs"
    if spec.kind == "train":
        added += ["--max_steps", str(spec.steps)]
        log_flag = first_flag(help_text, "--log_every", "--log_interval")
        if log_flag:
            added += [log_flag, str(max(1, spec.steps // 10))]
        out_flag = first_flag(help_text, "--out_dir", "--checkpoint_dir")
        if out_flag:
            added += [out_flag, str(ckpt_dir)]
        elif has_flag(help_text, "--out"):
            best = next((shlex.split(c.command)[-1] for c in COMMANDS if c.uses == spec.key), "best.pt")
            added += ["--out", str(ckpt_dir / Path(best).name)]
        if has_flag(help_text, "--run_dir"):
            added += ["--run_dir", str(run_dir)]
        run_argv = argv + added
    else:
        trained = done.get(spec.uses)
        if not trained or not trained.get("_checkpoint_dir"):
            raise RuntimeError(f"{spec.key}: needs the checkpoint of {spec.uses}, which was not measured")
        wanted = Path(flag_value(argv, "--model_path") or flag_value(argv, "--checkpoint") or "").name
        ckpts = sorted(Path(trained["_checkpoint_dir"]).glob("*.pt"))
        ckpt = (next((p for p in ckpts if p.name == wanted), None)
                or next((p for p in ckpts if p.name.startswith("best")), None))
        if ckpt is None:
            raise RuntimeError(f"{spec.key}: {spec.uses} wrote no {wanted} in {trained['_checkpoint_dir']}")
        run_argv = [str(ckpt) if w.endswith(wanted) and wanted else w for w in argv]
        out_flag = first_flag(help_text, "--run_dir", "--out_dir")
        if out_flag:
            added += [out_flag, str(run_dir)]
            run_argv += [out_flag, str(run_dir)]
    busy = wait_until_idle(wait_idle_s) if wait_idle_s else None
    run = run_measured([sys.executable, *run_argv[1:]], stage_dir, env, timeout)
    if run["returncode"] != 0:
        tail = "\n".join(run["output"].splitlines()[-15:])
        raise RuntimeError(f"{spec.key}: `{' '.join(run_argv)}` exited with {run['returncode']}:\n{tail}")
    result = newest_result(results_root, spec.stage)
    record = {
        "kind": KIND, "key": spec.key, "stage": spec.stage, "command": f"cd {spec.stage} && {spec.command}",
        "order": [c.key for c in COMMANDS].index(spec.key) if spec.key in [c.key for c in COMMANDS] else 0,
        "measured_command": f"cd {spec.stage} && MY_LLM_DATA=<data dir> " + " ".join(
            "<tmp>" if w.startswith(str(work)) else shlex.quote(w) for w in [*argv, *added]),
        "added_flags": [w if not w.startswith(str(work)) else "<tmp>" for w in added],
        "data": "full dataset ($MY_LLM_DATA)" if os.environ.get("MY_LLM_DATA") else "bundled / default data",
        "data_sha256": (result or {}).get("data_sha256"),
        "measured": {"wall_s": round(run["wall_s"], 1), "peak_rss_mb": run["peak_rss_mb"],
                     "peak_rss_source": "ru_maxrss of the process (os.wait4)"},
        "device": hardware(), "torch": _torch_version(), "git_commit": git_commit(root),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "load_avg_1min": round(os.getloadavg()[0], 2), "runnable_before": busy,
    }
    if result and result.get("peak_rss_mb") is not None:
        record["measured"]["result_peak_rss_mb"] = result["peak_rss_mb"]
    if spec.kind == "train":
        rows = read_jsonl(run_dir / "metrics.jsonl")
        timing = step_timing(rows, run["start"], run["end"])
        spe, source = steps_per_epoch(spec, result, run["output"], argv, help_text, timing)
        record["measured"].update({"steps": spec.steps, "timed_steps": timing["timed_steps"],
                                   "s_per_step": round(timing["s_per_step"], 4), "setup_s": round(timing["setup_s"], 1),
                                   "s_per_eval": None if timing["eval_s"] is None else round(timing["eval_s"], 2),
                                   "end_s": round(timing["tail_s"], 1),
                                   "timing_source": "time of each metrics.jsonl row"})
        record["estimate"] = {**estimate(spec, timing, spe, argv, help_text), "steps_per_epoch_source": source}
        record["_checkpoint_dir"] = str(ckpt_dir)
    else:
        record["estimate"] = {"wall_s": round(run["wall_s"], 1), "formula": "measured whole (not extrapolated)",
                              "note": f"run whole on the checkpoint of the bounded {spec.uses} run"}
    if spec.note:
        record["note"] = spec.note
    return record


def _torch_version() -> str | None:
    try:
        import torch
        return torch.__version__
    except ImportError:
        return None


def write_record(record: dict, out_dir: Path) -> Path:
    stamp = record["timestamp"].replace(":", "").replace("-", "").replace("+0000", "Z")
    path = out_dir / f"{record['key']}_{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in record.items() if not k.startswith("_")}
    path.write_text(json.dumps(clean, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", help=f"only these keys ({', '.join(c.key for c in COMMANDS)})")
    p.add_argument("--steps", type=int, default=0, help="optimizer steps of each bounded training run (0 = each "
                                                        "command's own choice)")
    p.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed per command")
    p.add_argument("--out_dir", type=Path, default=None, help="where the records go (default: "
                                                            "<root>/results/reported/commands)")
    p.add_argument("--no_write", action="store_true", help="print the summaries, write nothing")
    p.add_argument("--wait_idle", type=float, default=0, help="before each command wait up to this many seconds "
                                                              "until no other process is runnable (0 = do not wait)")
    args = p.parse_args(argv)
    if not os.environ.get("MY_LLM_DATA"):
        print("warning: MY_LLM_DATA is not set: the commands run on the bundled data, not the full datasets",
              file=sys.stderr)
    specs = [c for c in COMMANDS if not args.only or c.key in args.only]
    unknown = set(args.only or []) - {c.key for c in COMMANDS}
    if unknown:
        print(f"error: unknown command keys {sorted(unknown)}", file=sys.stderr)
        return 2
    out_dir = args.out_dir or args.root / OUT_SUBDIR
    by_key = {c.key: c for c in COMMANDS}
    todo = []  # an evaluate command first needs its train command's checkpoint
    for spec in specs:
        if spec.uses and spec.uses not in [c.key for c, _ in todo]:
            todo.append((by_key[spec.uses], False))
        todo.append((spec, True))
    done: dict = {}
    failed = 0
    with tempfile.TemporaryDirectory(prefix="measure_commands_") as tmp:
        for spec, wanted in todo:
            if wanted is False and spec.key in done:
                continue
            if args.steps and spec.kind == "train":
                spec = Command(**{**spec.__dict__, "steps": args.steps})
            print(f"=== {spec.key}: {spec.command}" + ("" if wanted else " (its checkpoint is needed)"), flush=True)
            try:
                record = measure(spec, args.root, Path(tmp), done, args.timeout, args.wait_idle)
            except RuntimeError as e:
                print(f"error: {e}", file=sys.stderr)
                failed += 1
                continue
            done[spec.key] = record
            est = record["estimate"]
            print(f"    peak RSS {record['measured']['peak_rss_mb']:.0f} MiB; run time ~{est['wall_s'] / 60:.1f} min "
                  f"({est['formula']})", flush=True)
            if wanted and not args.no_write:
                print(f"    wrote {write_record(record, out_dir)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
