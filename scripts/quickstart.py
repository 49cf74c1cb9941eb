"""Quick start: run every stage's short configuration on bundled data, then print one summary.

    python scripts/quickstart.py                       # all stages that registered
    python scripts/quickstart.py --stages stage1_mlp   # just one

A stage registers itself by shipping ``stageN_x/quickstart.py``: a script that trains a small
model on the data bundled in the repo and prints ``RESULT {...}`` lines (``scripts/results.py``).
Each runs in its own process inside its stage folder, as a user would. The summary is printed
and written to ``results/quickstart_summary.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python scripts/quickstart.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts import REPO_ROOT
from scripts.report import fmt_metric, primary
from scripts.results import parse_result_lines, results_dir


def discover(root: Path) -> list[Path]:
    """Stage folders that ship a quickstart.py, in stage order."""
    return sorted(p.parent for p in root.glob("stage*/quickstart.py"))


def run_stage(stage_dir: Path, timeout: float) -> dict:
    """Run one stage's quickstart, streaming its output; returns its RESULT records and status."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "quickstart.py"], cwd=stage_dir, stdout=subprocess.PIPE,
                            stderr=None, text=True, bufsize=1)
    lines = []
    try:
        for line in proc.stdout:
            print(f"[{stage_dir.name}] {line}", end="", flush=True)
            lines.append(line)
        proc.wait(timeout=timeout)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()
        proc.wait()
        raise
    return {"stage": stage_dir.name, "returncode": proc.returncode, "wall_s": time.perf_counter() - t0,
            "results": parse_result_lines("".join(lines))}


def summary_rows(runs: list[dict]) -> list[dict]:
    rows = []
    for run in runs:
        if run["returncode"] != 0 or not run["results"]:
            metric = "FAILED" if run["returncode"] else "no RESULT line"
            rows.append({"stage": run["stage"], "task": "—", "dataset": "—", "metric": metric,
                         "value": None, "wall_s": round(run["wall_s"], 1)})
        for rec in run["results"]:
            name, value = primary(rec)
            row = {"stage": run["stage"], "task": rec.get("model") or rec["task"],
                   "dataset": f"{rec['dataset']}/{rec['split']}",
                   "metric": name, "value": value, "wall_s": round(run["wall_s"], 1)}
            if row not in rows:  # e.g. train.py and evaluate.py reporting the same split: one row
                rows.append(row)
    return rows


def to_markdown(rows: list[dict]) -> str:
    out = ["| stage | task | dataset | metric | value | wall time (s) |", "|---|---|---|---|---|---|"]
    for r in rows:
        value = "—" if r["value"] is None else fmt_metric(r["metric"], r["value"])
        out.append(f"| {r['stage']} | {r['task']} | {r['dataset']} | {r['metric']} | {value} | {r['wall_s']} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Run every stage's quick start on bundled data.")
    p.add_argument("--stages", nargs="+", help="only these stage folders (default: all registered)")
    p.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed per stage")
    p.add_argument("--out_dir", type=Path, default=None, help="where the summary goes (default: results/)")
    args = p.parse_args(argv)

    stages = discover(args.root)
    if args.stages:
        unknown = set(args.stages) - {s.name for s in stages}
        if unknown:
            print(f"error: no quickstart.py in {', '.join(sorted(unknown))}; registered: "
                  f"{', '.join(s.name for s in stages) or 'none'}", file=sys.stderr)
            return 2
        stages = [s for s in stages if s.name in args.stages]
    if not stages:
        print("no stage has registered a quick start yet (stage*/quickstart.py)")
    runs = []
    for stage in stages:
        print(f"=== {stage.name}: python quickstart.py ===", flush=True)
        runs.append(run_stage(stage, args.timeout))
    rows = summary_rows(runs)
    table = to_markdown(rows)
    out_dir = args.out_dir or results_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
    (out_dir / "quickstart_summary.json").write_text(summary, encoding="utf-8")
    (out_dir / "quickstart_summary.md").write_text(table, encoding="utf-8")
    print("\nQuick start summary\n" + table + f"(written to {out_dir / 'quickstart_summary.md'})")
    failed = [r["stage"] for r in runs if r["returncode"] != 0 or not r["results"]]
    if failed:
        print(f"error: quick start failed for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
