"""Stage-1 benchmark: the issue's targets on full data, as result files (docs/stage1_mlp.md §5).

    MY_LLM_DATA=/path/to/data python benchmark.py                # everything (~10 min on 2 CPU cores)
    MY_LLM_DATA=/path/to/data python benchmark.py --only imdb_torch imdb_numpy --report   # --report: see below

Result files go to results/stage1_mlp/; with ``--report`` they are also copied, under their
timestamped names, to results/reported/stage1_mlp/ (what the README tables are built from).

Runs each configuration as a separate process (``python train.py`` then ``python evaluate.py``, default
flags), so peak memory (``peak_rss_mb``, from ``resource.getrusage``) is per run, and prints a target table:

* IMDb (25k/25k): torch MLP test accuracy >= 91.0 %, training <= 3 min wall time (the whole train.py:
  reading, features, training, validation); NumPy MLP within 1.5 points; peak RSS <= 3 GB;
  batched inference >= 10,000 samples/s (featurized inputs, batch 4096).
* AG News ``ag_news_test_cv``: 5-fold stratified CV inside the 7,600-row *test* split (the train split is
  not available offline): mean and std of the held-out-fold accuracy. NOT the official AG News figure.
  With the train split present (``--only ag_news``) it runs the standard train → test protocol instead.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from scripts import REPO_ROOT
from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.flags import DEFAULT_SEED, HELP
from scripts.results import make_result, parse_result_lines, report_result, results_dir, write_result
from scripts.testing import run_script
from stage1_mlp.engine import CV_NOTE, KIND

STAGE = Path(__file__).resolve().parent
REPORTED = REPO_ROOT / "results" / "reported" / KIND
TARGETS = {"imdb_torch_acc": 0.910, "imdb_train_s": 180.0, "numpy_gap": 0.015, "rss_mb": 3072.0,
           "samples_per_s": 10_000.0}
JOBS = ("imdb_torch", "imdb_numpy", "ag_news_cv", "ag_news")


def run(script: str, args: list[str]) -> dict:
    """Run a stage script as a user would; return its last RESULT record (or fail loudly)."""
    print(f"$ python {script} {' '.join(args)}", flush=True)
    proc = run_script(STAGE / script, args, cwd=STAGE, timeout=3600)
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
    records = parse_result_lines(proc.stdout)
    if proc.returncode != 0 or not records:
        raise UserError(f"{script} failed (exit {proc.returncode}): {tail.splitlines()[-1] if tail else ''}")
    for line in proc.stdout.splitlines():
        if line.startswith(("eval |", "data:", "model:", "early stopping")):
            print("  " + line[:160])
    return records[-1]


def train_and_test(tag: str, train_args: list[str], eval_args: list[str] = ()) -> tuple[dict, dict]:
    ckpt = f"checkpoints/bench_{tag}"  # relative to stage1_mlp/, where the scripts run
    tr = run("train.py", [*train_args, "--out_dir", ckpt, "--run_dir", f"runs/bench_{tag}"])
    ev = run("evaluate.py", ["--checkpoint", f"{ckpt}/best_model.pt", "--run_dir", f"runs/bench_{tag}",
                             "--name", f"eval_{tag}", *eval_args])
    return tr, ev


def report(records: list[tuple[str, dict]], copy: bool) -> list[Path]:
    """Save each record under results/; with --report also copy it to results/reported/ (same JSON, same
    timestamped name, never overwriting), except the per-fold AG News runs, which the CV summary lists
    (``fold_accuracies``) to keep the tables short. Returns the reported files."""
    reported = []
    for name, rec in records:
        path = write_result(rec, name=name, echo=False)
        if copy and "_fold" not in name:
            reported.append(report_result(path))
    return reported


def latest_benchmark_run(impl: str) -> tuple[dict, dict] | None:
    """The newest (train, eval) records of an earlier ``--only imdb_<impl>`` run, read back from results/."""
    found = {}
    for kind in ("train", "eval"):
        files = sorted((results_dir() / KIND).glob(f"{kind}_imdb_{impl}_*.json"))
        recs = [json.loads(f.read_text(encoding="utf-8")) for f in files]
        recs = [r for r in recs if r.get("dataset") == "imdb" and f"bench_imdb_{impl}" in r.get("command", "")]
        if not recs:
            return None
        found[kind] = max(recs, key=lambda r: r["timestamp"])
    print(f"(using the {impl} run of {found['eval']['timestamp']} from {results_dir() / KIND})")
    return found["train"], found["eval"]


def bench_command() -> str:
    return "cd stage1_mlp && python " + " ".join(["benchmark.py", *sys.argv[1:]])


def check(label: str, ok: bool | None, figure: str) -> str:
    line = f"{'INFO' if ok is None else 'PASS' if ok else 'FAIL'}  {label}: {figure}"
    print(line)
    return line


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--only", nargs="+", choices=JOBS, default=["imdb_torch", "imdb_numpy", "ag_news_cv"],
                   help="which runs (ag_news = the standard protocol, needs the AG News train split)")
    p.add_argument("--report", action="store_true", help=HELP["report"])
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=HELP["seed"])
    args = p.parse_args(argv)
    seed = ["--seed", str(args.seed)]
    records, lines = [], []

    imdb = {}
    for impl in ("torch", "numpy"):
        if f"imdb_{impl}" in args.only:
            tr, ev = train_and_test(f"imdb_{impl}", ["--dataset", "imdb", "--impl", impl, *seed])
            if tr["dataset"] != "imdb":
                raise UserError(f"IMDb ran on {tr['dataset']}, not the full dataset: set MY_LLM_DATA or pass data")
            imdb[impl] = (tr, ev)
            records += [(f"train_imdb_{impl}", tr), (f"eval_imdb_{impl}", ev)]
    ran_now = set(imdb)
    for impl in ("torch", "numpy"):  # the other implementation from an earlier benchmark invocation, if any
        if impl not in imdb and ran_now:
            earlier = latest_benchmark_run(impl)
            if earlier is not None:
                imdb[impl] = earlier
    if "torch" in imdb:
        tr, ev = imdb["torch"]
        acc = ev["metrics"]["accuracy"]
        lines.append(check("IMDb torch test accuracy >= 91.0%", acc >= TARGETS["imdb_torch_acc"], f"{acc:.2%}"))
        lines.append(check("IMDb torch train.py wall time <= 180 s", tr["train_wall_s"] <= TARGETS["imdb_train_s"],
                           f"{tr['train_wall_s']:.0f} s (features {tr['feature_s']:.0f} s, "
                           f"loop {tr['train_loop_s']:.0f} s, {tr['epochs_run']} epochs)"))
        fast = ev["samples_per_s"] >= TARGETS["samples_per_s"]
        lines.append(check("IMDb batched inference >= 10,000 samples/s", fast,
                           f"{ev['samples_per_s']:,.0f} samples/s (end to end from raw text "
                           f"{ev['end_to_end_samples_per_s']:,.0f}/s; "
                           f"batch-1 latency {ev['latency_ms_batch1']:.2f} ms)"))
    for impl, (tr, ev) in imdb.items():
        rss = max(tr["peak_rss_mb"], ev["peak_rss_mb"])
        lines.append(check(f"IMDb {impl} peak RSS <= 3 GB", rss <= TARGETS["rss_mb"], f"{rss:,.0f} MB"))
    if len(imdb) == 2:
        gap = imdb["torch"][1]["metrics"]["accuracy"] - imdb["numpy"][1]["metrics"]["accuracy"]
        lines.append(check("IMDb numpy within 1.5 points of torch", gap <= TARGETS["numpy_gap"],
                           f"numpy {imdb['numpy'][1]['metrics']['accuracy']:.2%} (gap {100 * gap:+.2f} points; "
                           f"train.py {imdb['numpy'][0]['train_wall_s']:.0f} s)"))

    if len(imdb) == 2:
        (ttr, tev), (ntr, nev) = imdb["torch"], imdb["numpy"]
        records.append(("targets_imdb", make_result(
            KIND, "classification", "imdb", "test",
            {"accuracy": tev["metrics"]["accuracy"], "numpy_accuracy": nev["metrics"]["accuracy"],
             "samples_per_s": tev["samples_per_s"], "peak_rss_mb": max(ttr["peak_rss_mb"], tev["peak_rss_mb"],
                                                                       ntr["peak_rss_mb"], nev["peak_rss_mb"])},
            params=ttr["params"], train_wall_s=ttr["train_wall_s"], device=tev["device"], seed=args.seed,
            data_sha256=tev["data_sha256"], command=bench_command(),
            primary_metric="accuracy", model="targets: MLP PyTorch vs NumPy", protocol="standard",
            numpy_train_wall_s=ntr["train_wall_s"], torch_train_loop_s=ttr["train_loop_s"],
            torch_feature_s=ttr["feature_s"], latency_ms_batch1=tev["latency_ms_batch1"],
            end_to_end_samples_per_s=tev["end_to_end_samples_per_s"], load_avg_1min=os.getloadavg()[0],
            checks=list(lines))))

    if "ag_news_cv" in args.only:
        folds = []
        for k in range(5):
            tr, ev = train_and_test(f"ag_news_cv{k}", ["--dataset", "ag_news", "--protocol", "ag_news_test_cv",
                                                        "--fold", str(k), *seed])
            folds.append(ev)
            records += [(f"train_ag_news_cv_fold{k}", tr), (f"eval_ag_news_cv_fold{k}", ev)]
        accs = [f["metrics"]["accuracy"] for f in folds]
        f1s = [f["metrics"]["macro_f1"] for f in folds]
        summary = make_result(
            KIND, "classification", "ag_news", "test_cv_5fold",
            {"accuracy": statistics.mean(accs), "accuracy_std": statistics.stdev(accs),
             "macro_f1": statistics.mean(f1s)},
            params=folds[0]["params"], train_wall_s=None, device=folds[0]["device"], seed=args.seed,
            data_sha256=folds[0]["data_sha256"], command=bench_command(),
            primary_metric="accuracy", protocol="ag_news_test_cv", protocol_note=CV_NOTE, model="MLP PyTorch, 5 folds",
            fold_accuracies=accs, samples_per_s=statistics.mean(f["samples_per_s"] for f in folds))
        records.append(("cv_ag_news_test_cv", summary))
        lines.append(check("AG News ag_news_test_cv (5-fold CV in the test split; not the official figure)", None,
                           f"{statistics.mean(accs):.2%} ± {statistics.stdev(accs):.2%}"))
    if "ag_news" in args.only:
        tr, ev = train_and_test("ag_news", ["--dataset", "ag_news", *seed])
        records += [("train_ag_news_torch", tr), ("eval_ag_news_torch", ev)]
        lines.append(check("AG News test accuracy >= 92.5% (standard protocol)", ev["metrics"]["accuracy"] >= 0.925,
                           f"{ev['metrics']['accuracy']:.2%}"))

    reported = report(records, args.report)
    print(f"result files in {results_dir() / KIND}" + (f"; reported: {', '.join(p.name for p in reported)} in "
                                                       f"{REPORTED}" if args.report else ""))


if __name__ == "__main__":
    run_cli(main)
