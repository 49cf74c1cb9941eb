"""The stage-3 benchmark: train under a wall-clock budget, then evaluate on every test set.

    flock /tmp/my_llm_bench.lock python benchmark.py --attention_type bahdanau --time_budget_min 45
    flock /tmp/my_llm_bench.lock python benchmark.py --attention_type none --time_budget_min 45

Targets (issue 5): Bahdanau, Multi30k en->fr, test_2016_flickr sacreBLEU >= 50 with beam search
after <= 45 min of training on 2 CPU cores; beam (k=5) beats greedy; the whole test set decoded
with batched beam search in <= 60 s. The train and evaluation result files are copied to
``results/reported/stage3_attention_seq2seq/`` (``--report``), where scripts/report.py reads them.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from scripts import REPO_ROOT
from scripts.cli import HelpFormatter, run_cli
from scripts.results import results_dir
from stage3_attention_seq2seq import evaluate, train

REPORTED = REPO_ROOT / "results" / "reported" / "stage3_attention_seq2seq"


def newest(prefix: str, since: float) -> Path | None:
    files = [p for p in (results_dir() / "stage3_attention_seq2seq").glob(prefix + "_*.json") if p.stat().st_mtime >= since]
    return max(files, key=lambda p: p.stat().st_mtime) if files else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--attention_type", default="bahdanau", help="bahdanau | luong_dot | luong_general | luong_concat | none")
    p.add_argument("--time_budget_min", type=float, default=45.0, help="training wall-clock budget")
    p.add_argument("--epochs", type=int, default=15, help="most epochs (the LR decays over epochs or budget, whichever ends first)")
    p.add_argument("--beam_size", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="copy the result files to results/reported/stage3_attention_seq2seq/")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py flags")
    args = p.parse_args(argv)
    name = f"bench_{args.attention_type}"
    print(f"benchmark {name}: load average {os.getloadavg()} at start, cpus {os.cpu_count()}", flush=True)
    t0 = time.time()
    train.main(["--attention_type", args.attention_type, "--epochs", str(args.epochs),
                "--time_budget_min", str(args.time_budget_min), "--seed", str(args.seed),
                "--out", f"checkpoints/{name}.pt", "--run_dir", f"runs/{name}", *args.extra])
    print(f"benchmark {name}: load average {os.getloadavg()} after training", flush=True)
    evaluate.main(["--model_path", f"checkpoints/{name}.pt", "--beam_size", str(args.beam_size),
                   "--out_dir", f"runs/{name}/heatmaps", "--name", f"{name}_eval"])
    print(f"benchmark {name}: load average {os.getloadavg()} at the end", flush=True)
    if args.report:
        REPORTED.mkdir(parents=True, exist_ok=True)
        for prefix in (f"train_{args.attention_type}_multi30k_en-fr", f"{name}_eval"):
            src = newest(prefix, t0)
            if src is not None:
                shutil.copy2(src, REPORTED / f"{name}_{'train' if prefix.startswith('train') else 'eval'}.json")
                print(f"reported: {src.name} -> {REPORTED}")


if __name__ == "__main__":
    run_cli(main)
