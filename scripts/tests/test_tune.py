"""scripts/tune.py: a real Optuna study of stage 1 on bundled data, Ctrl-C and resume, pruning, the best command,
and one-line errors for a broken search space. The trials are tiny (400 training reviews, 3 epochs) but real."""
from __future__ import annotations

import argparse
import json
import os
import runpy
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from scripts import REPO_ROOT
from scripts.cli import HelpFormatter, UserError
from scripts.log import format_line
from scripts.results import parse_result_lines
from scripts.tune import check_space, load_space, parse_eval_line, parse_help, without_flags

TUNE = REPO_ROOT / "scripts" / "tune.py"
STAGE1 = REPO_ROOT / "stage1_mlp"
TINY = ["--data_dir", str(STAGE1 / "data"), "--limit_train", "400", "--max_features", "2000", "--batch_size", "32",
        "--epochs", "3", "--patience", "0", "--log_every", "1000"]
# lr reaches down to 1e-7: a trial there stays at chance level (0.5), the default (3e-3) does not.
SPACE = {"metric": "val_accuracy", "result_metric": "accuracy", "direction": "maximize",
         "params": {"lr": {"type": "float", "low": 1e-7, "high": 1e-2, "log": True, "default": 3e-3},
                    "dropout": {"type": "float", "low": 0.0, "high": 0.5, "default": 0.5}}}
ENV = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
       "OMP_NUM_THREADS": "1"}  # tiny trials: one thread each is faster than two fighting over two cores


def tune_argv(tmp: Path, trials: int, space: dict = SPACE, extra: list[str] = TINY) -> list[str]:
    space_file = tmp / f"space_{abs(hash(json.dumps(space, sort_keys=True)))}.json"
    space_file.write_text(json.dumps(space), encoding="utf-8")
    return [sys.executable, str(TUNE), "--stage", "1", "--trials", str(trials), "--budget_min", "1",
            "--space_file", str(space_file), "--runs_dir", str(tmp / "runs"), "--study", "t", "--seed", "0",
            "--startup_trials", "1", "--prune_warmup", "0", "--quiet", "--", *extra]


def alive(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (a trial's folder)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_study_survives_ctrl_c_resumes_prunes_and_prints_a_command_that_reproduces_the_best(tmp_path):
    storage = f"sqlite:///{tmp_path / 'runs' / 't.db'}"
    # 1. Ctrl-C while trial 1 is running: exit 130, its train.py is gone, its flags wait to run again.
    # a terminal's Ctrl-C reaches a process whose SIGINT is at its default; a shell's background job (nohup, `&`)
    # starts with SIGINT ignored, and Python then installs no KeyboardInterrupt handler: reset it for tune.py
    proc = subprocess.Popen(tune_argv(tmp_path, 3), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, cwd=REPO_ROOT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("=== trial 1"):
            break
    time.sleep(1.5)  # trial 1's train.py is starting (importing torch, reading the data)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + out + err
    assert err.strip().splitlines()[-1] == "interrupted"
    assert "trial 0: val_accuracy" in "".join(seen)
    assert not alive(str(tmp_path / "runs" / "t" / "trial_1")), "trial 1's train.py outlived tune.py"
    assert not parse_result_lines((tmp_path / "runs" / "t" / "trial_1" / "train.log").read_text())  # stopped early
    study = optuna.load_study(study_name="t", storage=storage)
    t0, t1, t2 = study.get_trials()
    assert t0.state == optuna.trial.TrialState.COMPLETE and t0.user_attrs["default"]
    assert t0.params == {"lr": 3e-3, "dropout": 0.5}
    assert t1.state == optuna.trial.TrialState.FAIL
    assert t2.state == optuna.trial.TrialState.WAITING and t2.user_attrs["rerun_of"] == 1
    assert t2.system_attrs["fixed_params"] == t1.params

    # 2. A hopeless trial queued behind it (lr 1e-7: chance level at its first evaluation) must be pruned.
    study.enqueue_trial({"lr": 1e-7, "dropout": 0.5})

    # 3. The same command again: finishes the study (trial 0 + the rerun + the hopeless one = 3 finished).
    res = subprocess.run(tune_argv(tmp_path, 3), capture_output=True, text=True, env=ENV, cwd=REPO_ROOT, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "study t: 1 of 3 trials finished" in res.stdout
    trials = optuna.load_study(study_name="t", storage=storage).get_trials()
    assert len(trials) == 4  # the queued rerun took number 2, the hopeless trial 3
    assert trials[2].params == t1.params and trials[2].state in (optuna.trial.TrialState.COMPLETE,
                                                                  optuna.trial.TrialState.PRUNED)
    hopeless = trials[3]
    assert hopeless.state == optuna.trial.TrialState.PRUNED, res.stdout
    # ... and its train.py really stopped early: fewer evaluations than its 3 epochs, no RESULT line.
    trial_dir = tmp_path / "runs" / "t" / "trial_3"
    evals = [json.loads(ln) for ln in (trial_dir / "run" / "metrics.jsonl").read_text().splitlines()
             if json.loads(ln)["kind"] == "eval"]
    assert 1 <= len(evals) < 3 and list(hopeless.intermediate_values) == [0]
    assert not parse_result_lines((trial_dir / "train.log").read_text())
    assert not (trial_dir / "ckpt").exists()  # only the best trial keeps its checkpoints

    # 4. The output: the table, best vs default, the commands, plots and the summary.
    assert "trial  state     val_accuracy  minutes" in res.stdout
    assert "3      PRUNED" in res.stdout and "--lr 1e-07" in res.stdout
    summary = json.loads((tmp_path / "runs" / "t" / "summary.json").read_text())
    best = optuna.load_study(study_name="t", storage=storage).best_trial
    assert summary["best"]["number"] == best.number and summary["default"]["number"] == 0
    assert (tmp_path / "runs" / "t" / "history.png").stat().st_size > 1000
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert (tmp_path / "runs" / "t" / "importance.png").exists() == (len(complete) >= 2)
    lines = res.stdout.splitlines()
    ready = lines[lines.index("best flags, ready to run:") + 1].strip()
    assert ready == summary["best_command"] and ready.startswith("cd stage1_mlp && python train.py --lr ")
    assert shlex.split(ready)[-2:] == ["--max_minutes", "1"]
    exact = lines[lines.index("the same numbers without a clock (exact steps):") + 1].strip()
    assert exact == summary["reproduce_command"] and "--out_dir" not in exact

    # 5. The clock-free command, run as printed (plus throwaway output folders), gives the study's best value.
    folder, _, command = exact.partition(" && ")
    argv = shlex.split(command)[1:] + ["--out_dir", str(tmp_path / "again"), "--run_dir", str(tmp_path / "again")]
    again = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT / folder.removeprefix("cd "), capture_output=True,
                           text=True, env=ENV, timeout=300)
    assert again.returncode == 0, again.stderr
    assert parse_result_lines(again.stdout)[-1]["metrics"]["accuracy"] == best.value


def test_a_broken_search_space_is_a_one_line_error(tmp_path):
    lr = SPACE["params"]["lr"]
    bad_flag = {**SPACE, "params": {**SPACE["params"], "no_such_flag": lr}}
    bad_range = {**SPACE, "params": {"lr": {**lr, "low": 1e-2, "high": 1e-3}}}
    runs = {  # in parallel; only the first gets as far as running train.py --help
        "error: search space ": (tune_argv(tmp_path, 1, bad_flag), "--no_such_flag: not a flag of stage1_mlp/train.py"),
        "bad range": (tune_argv(tmp_path, 1, bad_range), "--lr: bad range: low 0.01 must be below high 0.001"),
        "tuned flag": (tune_argv(tmp_path, 1, extra=[*TINY, "--max_minutes", "3"]), "--max_minutes after -- is set"),
    }
    procs = {k: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                                 cwd=REPO_ROOT) for k, (argv, _) in runs.items()}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        msg = runs[key][1]
        assert proc.returncode == 2, out + err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and msg in err, err
    assert not (tmp_path / "runs" / "t.db").exists()  # nothing ran


def test_every_stage_declares_a_space_its_train_py_accepts(monkeypatch, capsys):
    """Each stage's tune_space.py against its train.py's real --help (run in this process, as test_repo.py does)."""
    monkeypatch.setenv("COLUMNS", "1000")
    for stage in ("stage1_mlp", "stage2_rnn_lstm", "stage3_attention_seq2seq", "stage4_transformer", "stage5_gpt"):
        stage_dir = REPO_ROOT / stage
        space, source = load_space(stage_dir, None)
        monkeypatch.chdir(stage_dir)
        monkeypatch.setattr(sys, "argv", ["train.py", "--help"])
        with pytest.raises(SystemExit):
            runpy.run_path(str(stage_dir / "train.py"), run_name="__main__")
        flags = parse_help(capsys.readouterr().out)
        checked = check_space(space, flags, source, f"{stage}/train.py")
        assert checked["direction"] in ("maximize", "minimize") and len(checked["params"]) >= 5, stage


def test_help_parsing_and_the_eval_lines_tune_reads():
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--a_very_long_flag_name", type=int, default=7, help="wraps onto the next line")
    p.add_argument("--lr_schedule", choices=["constant", "cosine"], default="constant", help="schedule")
    p.add_argument("--nb_scale", action=argparse.BooleanOptionalAction, default=True, help="NB features")
    p.add_argument("--hidden_dims", type=int, nargs="+", default=[64], help="sizes")
    flags = parse_help(p.format_help())
    assert flags["lr"].default == "0.003" and flags["lr"].takes_value
    assert flags["a_very_long_flag_name"].default == "7"
    assert flags["lr_schedule"].choices == ["constant", "cosine"]
    assert flags["nb_scale"].negatable and not flags["nb_scale"].takes_value and "no-nb_scale" not in flags
    assert flags["hidden_dims"].default == "64"
    space = check_space({**SPACE, "params": {"nb_scale": {"type": "bool", "default": True}}}, flags, "s", "t.py")
    assert space["result_metric"] == "accuracy"
    with pytest.raises(UserError, match=r"default 0.005 is not t.py's default \(0.003\)"):
        check_space({**SPACE, "params": {"lr": {**SPACE["params"]["lr"], "default": 5e-3}}}, flags, "s", "t.py")
    with pytest.raises(UserError, match="type bool needs an on/off flag"):
        check_space({**SPACE, "params": {"lr": {"type": "bool", "default": True}}}, flags, "s", "t.py")
    with pytest.raises(UserError, match=r"\['linear'\] not accepted by t.py \(choices: constant, cosine\)"):
        check_space({**SPACE, "params": {"lr_schedule": {"type": "categorical", "choices": ["constant", "linear"],
                                                         "default": "constant"}}}, flags, "s", "t.py")
    line = "eval | " + format_line(30, {"epoch": 2.0, "val_loss": 0.5703, "val_accuracy": 0.85, "saved": True})
    assert parse_eval_line(line) == {"step": 30.0, "epoch": 2.0, "val_loss": 0.5703, "val_accuracy": 0.85}
    assert parse_eval_line(format_line(30, {"loss": 1.0})) is None
    assert without_flags("cd s && python train.py --out_dir a b --lr 1 --run_dir r --x", ("--out_dir", "--run_dir")) \
        == "cd s && python train.py --lr 1 --x"
