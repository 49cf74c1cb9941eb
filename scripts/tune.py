"""Hyper-parameter tuning: an Optuna study over a stage's declared search space, each trial a real train.py run.

    python scripts/tune.py --stage 1 --trials 12 --budget_min 0.5                    # stage 1, its own space
    python scripts/tune.py --stage 1 --trials 3 --budget_min 0.2 -- --limit_train 500  # flags after -- go to train.py
    python scripts/tune.py --stage 1 --dry_run                                       # check the space, run nothing
    python scripts/tune.py --stage stage5_gpt --trials 20 --budget_min 5 --space_file my_space.json

How it works (read top to bottom):

1. **The space.** ``stageN/tune_space.py`` declares which flags of its ``train.py`` to search (type, range, log
   scale, choices, and the default), the validation metric and its direction. tune.py never imports a stage: it
   runs ``python tune_space.py`` in the stage folder and reads the JSON it prints (``--space_file`` gives another
   JSON file), then checks every flag against ``python train.py --help``. A broken space (unknown flag, bad range,
   a default that is not train.py's) is a one-line error, exit 2.
2. **A trial** is ``python train.py <sampled flags> <flags after --> --max_minutes <budget_min>`` in the stage
   folder, with its own ``--out_dir``/``--run_dir`` under ``runs/tune/<study>/trial_<k>/``. tune.py reads its
   output line by line: each ``eval | step ... | <metric> ...`` line is reported to Optuna (the k-th evaluation is
   step k) and the ``MedianPruner`` may stop the run there (the process is terminated: a pruned trial really stops
   early). The trial's value is the metric in the ``RESULT`` line: the best checkpoint's score on the validation
   split. The test split is never used.
3. **The study** lives in SQLite, ``runs/tune/<study>.db``; its sampler is a seeded ``TPESampler``. Trial 0 is the
   stage's default configuration (``enqueue_trial``), so "better than the default" is measured in the same study on
   the same budget. Ctrl-C stops the running train.py, marks the trial failed and queues its flags again; running
   the same command again continues the study until ``--trials`` trials have finished (completed or pruned).
4. **Output:** a table of trials, the best value against the default trial's, the best flags as a ready-to-run
   command (and the clock-free command that gives the same numbers), ``history.png`` (optimisation history),
   ``importance.png`` (parameter importances, from 2 completed trials) and ``summary.json`` under
   ``runs/tune/<study>/``. ``--report`` also writes the summary as a result file and copies it to
   ``results/reported/<stage>/`` (then run ``python scripts/report.py``).
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python scripts/tune.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from scripts import REPO_ROOT  # noqa: E402
from scripts.cli import HelpFormatter, UserError, run_cli  # noqa: E402

SPACE_FILE = "tune_space.py"
PARAM_TYPES = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"},
               "categorical": {"choices"}, "bool": set()}
SET_BY_TUNE = ("out_dir", "run_dir", "max_minutes", "resume")  # tune.py gives these to every trial
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


# ----- 1. the stage and its declared search space --------------------------------------------------
def find_stage(name: str) -> Path:
    """``1``..``5`` or a folder name (``stage1_mlp``) → the stage folder."""
    stages = sorted(p for p in REPO_ROOT.glob("stage*_*") if (p / "train.py").is_file())
    hits = [p for p in stages if p.name == name or (name.isdigit() and p.name.startswith(f"stage{name}_"))]
    if not hits:
        raise UserError(f"unknown stage {name!r}; choose 1..{len(stages)} or one of: "
                        f"{', '.join(p.name for p in stages)}")
    return hits[0]


def load_space(stage_dir: Path, space_file: Path | None) -> tuple[dict, str]:
    """(the space, where it came from): ``--space_file`` (JSON), else ``python tune_space.py`` in the stage."""
    if space_file is not None:
        try:
            return json.loads(space_file.read_text(encoding="utf-8")), str(space_file)
        except OSError as e:
            raise UserError(f"cannot read --space_file {space_file}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise UserError(f"--space_file {space_file} is not valid JSON: {e}") from None
    source = f"{stage_dir.name}/{SPACE_FILE}"
    if not (stage_dir / SPACE_FILE).is_file():
        raise UserError(f"{stage_dir.name} declares no search space ({source}; see docs/CONTRIBUTING.md)")
    proc = subprocess.run([sys.executable, SPACE_FILE], cwd=stage_dir, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"python {source} failed (exit {proc.returncode}): {last}")
    try:
        return json.loads(proc.stdout), source
    except json.JSONDecodeError as e:
        raise UserError(f"python {source} did not print a JSON space: {e}") from None


@dataclass
class Flag:
    """One option of a train.py, as its ``--help`` shows it."""

    takes_value: bool
    negatable: bool = False          # --x / --no-x
    choices: list[str] | None = None  # argparse choices, e.g. {constant,cosine}
    default: str | None = None       # the text of "(default: ...)", if shown


def train_flags(stage_dir: Path) -> dict[str, Flag]:
    """The flags of ``stage_dir/train.py``, read from ``python train.py --help`` (no import of the stage)."""
    env = {**os.environ, "COLUMNS": "1000"}  # one line per option where argparse allows it
    proc = subprocess.run([sys.executable, "train.py", "--help"], cwd=stage_dir, capture_output=True, text=True,
                          env=env, timeout=300)
    if proc.returncode != 0:
        raise UserError(f"python train.py --help failed in {stage_dir.name} (exit {proc.returncode})")
    return parse_help(proc.stdout)


def parse_help(text: str) -> dict[str, Flag]:
    """``{"lr": Flag(...), ...}`` from argparse's help text (an option, then its help, maybe on the next lines)."""
    entries, current = [], None
    for line in text.splitlines():
        if re.match(r"^  -", line):
            head, *rest = re.split(r"\s{2,}", line.strip(), maxsplit=1)  # "--lr LR   peak learning rate"
            current = [head, rest[0] if rest else ""]
            entries.append(current)
        elif current is not None and line.startswith("   ") and line.strip():
            current[1] += " " + line.strip()
        else:
            current = None
    flags: dict[str, Flag] = {}
    for invocation, help_text in entries:
        parts = [p.split(" ", 1) for p in invocation.split(", ")]
        names = [p[0] for p in parts if p[0].startswith("--")]
        metavar = next((p[1] for p in parts if len(p) > 1), "")
        choices = re.fullmatch(r"\{([^}]*)\}", metavar)
        shown = re.search(r"\(default: (.*)\)\s*$", help_text)
        flag = Flag(takes_value=bool(metavar), choices=choices.group(1).split(",") if choices else None,
                    default=shown.group(1) if shown else None)
        flag.negatable = any(f"--no-{n[2:]}" in names for n in names)
        for n in names:
            if not n.startswith("--no-") or n[5:] not in [m[2:] for m in names]:
                flags[n[2:]] = flag
    return flags


def check_space(space: dict, flags: dict[str, Flag] | None, source: str, train: str) -> dict:
    """Every impossible part of a space → a one-line :class:`UserError`; returns the space with defaults filled in.
    ``flags`` None checks only the space's own structure (no train.py --help)."""
    def bad(msg: str):
        raise UserError(f"search space {source}: {msg}")

    if not isinstance(space, dict):
        bad("must be a JSON object with metric, direction and params")
    unknown = set(space) - {"metric", "result_metric", "direction", "params", "note"}
    if unknown:
        bad(f"unknown key(s) {', '.join(sorted(unknown))}; allowed: metric, result_metric, direction, params, note")
    if not isinstance(space.get("metric"), str) or not space["metric"]:
        bad("needs 'metric': the validation field of train.py's eval lines, e.g. val_loss")
    if space.get("direction") not in ("maximize", "minimize"):
        bad(f"'direction' must be maximize or minimize, got {space.get('direction')!r}")
    params = space.get("params")
    if not isinstance(params, dict) or not params:
        bad("needs 'params': {flag: {type, low/high or choices, default}, ...}")
    for name, spec in params.items():
        where = f"--{name}"
        if not isinstance(spec, dict) or spec.get("type") not in PARAM_TYPES:
            bad(f"{where}: 'type' must be one of {', '.join(PARAM_TYPES)}")
        extra = set(spec) - PARAM_TYPES[spec["type"]] - {"type", "default"}
        if extra:
            bad(f"{where}: unknown key(s) {', '.join(sorted(extra))} for type {spec['type']}")
        if "default" not in spec:
            bad(f"{where}: needs 'default' (train.py's default value: the study's trial 0)")
        check_param(spec, lambda msg: bad(f"{where}: {msg}"))
        if name in SET_BY_TUNE:
            bad(f"{where} is set by tune.py for every trial and cannot be searched")
        if flags is not None:
            check_flag(name, spec, flags, lambda msg: bad(f"{where}: {msg}"), train)
    return {"result_metric": space["metric"], **space}


def check_param(spec: dict, bad) -> None:
    """Ranges, choices and the default of one parameter."""
    kind, default = spec["type"], spec["default"]
    if kind in ("float", "int"):
        number = (int,) if kind == "int" else (int, float)
        for key in ("low", "high", "default"):
            value = spec.get(key)
            if not isinstance(value, number) or isinstance(value, bool):
                bad(f"'{key}' must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")
        if not spec["low"] < spec["high"]:
            bad(f"bad range: low {spec['low']} must be below high {spec['high']}")
        if spec.get("log") and spec["low"] <= 0:
            bad(f"a log range needs low > 0, got {spec['low']}")
        if spec.get("log") and spec.get("step") is not None and kind == "float":
            bad("a float range takes 'log' or 'step', not both")
        if spec.get("step") is not None and not spec["step"] > 0:
            bad(f"'step' must be > 0, got {spec['step']}")
        if not spec["low"] <= default <= spec["high"]:
            bad(f"default {default} lies outside the range [{spec['low']}, {spec['high']}]")
    elif kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or len(set(map(repr, choices))) != len(choices) or \
                not all(isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in choices):
            bad(f"'choices' must be a non-empty list of distinct strings or numbers, got {choices!r}")
        if default not in choices:
            bad(f"default {default!r} is not one of the choices {choices}")
    elif not isinstance(default, bool):
        bad(f"a bool flag's default must be true or false, got {default!r}")


def check_flag(name: str, spec: dict, flags: dict[str, Flag], bad, train: str) -> None:
    """The parameter against train.py's own flag: it exists, takes the right kind of value, has that default."""
    flag = flags.get(name)
    if flag is None:
        bad(f"not a flag of {train} (see python train.py --help)")
    if spec["type"] == "bool" and not flag.negatable:
        bad(f"type bool needs an on/off flag (--{name} / --no-{name}); {train} takes a value")
    if spec["type"] != "bool" and not flag.takes_value:
        bad(f"{train} has it as an on/off flag: use type bool")
    values = spec["choices"] if spec["type"] == "categorical" else [spec["default"]]
    if flag.choices is not None and spec["type"] != "bool":
        outside = [v for v in values if str(v) not in flag.choices]
        if outside:
            bad(f"{outside} not accepted by {train} (choices: {', '.join(flag.choices)})")
    shown = flag.default if flag.default is not None else ("False" if spec["type"] == "bool" else None)
    if shown is not None and same_value(spec, shown) is False:
        bad(f"default {spec['default']!r} is not {train}'s default ({shown}); the study's trial 0 must be the "
            f"default configuration")


def same_value(spec: dict, shown: str) -> bool | None:
    """Does ``spec['default']`` equal the help's ``(default: shown)``? None: the text is not a value to compare."""
    default = spec["default"]
    try:
        if spec["type"] == "bool":
            return shown in ("True", "False") and (shown == "True") == default
        if isinstance(default, (int, float)):
            return math.isclose(float(shown), float(default), rel_tol=1e-9, abs_tol=0.0)
    except ValueError:
        return None
    return " ".join(str(default).split()) == " ".join(shown.split())


# ----- 2. one trial = one train.py run ---------------------------------------------------------------
def suggest(trial: optuna.Trial, name: str, spec: dict):
    """Optuna picks a value for one parameter (or hands back the enqueued one)."""
    kind = spec["type"]
    if kind == "float":
        return trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False), step=spec.get("step"))
    if kind == "int":
        return trial.suggest_int(name, spec["low"], spec["high"], log=spec.get("log", False), step=spec.get("step", 1))
    if kind == "bool":
        return trial.suggest_categorical(name, [True, False])
    return trial.suggest_categorical(name, spec["choices"])


def flag_words(name: str, value, spec: dict) -> list[str]:
    """One parameter as train.py flags: ``--lr 0.003``, ``--no-nb_scale``, ``--hidden_dims 128 64``."""
    if spec["type"] == "bool":
        return [f"--{name}" if value else f"--no-{name}"]
    if isinstance(value, float):
        return [f"--{name}", f"{value:.4g}"]  # 4 significant digits: what runs is what the command shows
    return [f"--{name}", *str(value).split()]


def params_argv(params: dict, space: dict) -> list[str]:
    return [w for name, spec in space["params"].items() if name in params for w in flag_words(name, params[name], spec)]


def parse_eval_line(line: str) -> dict[str, float] | None:
    """``eval | step 30 | val_loss 0.57 | val_accuracy 0.85`` → ``{"step": 30.0, "val_loss": 0.57, ...}``."""
    if not line.startswith("eval | "):
        return None
    fields = {}
    for part in line.strip().split(" | ")[1:]:
        key, _, value = part.partition(" ")
        try:
            fields[key] = float(value)
        except ValueError:
            continue
    return fields


class TrialFailed(Exception):
    """train.py crashed or printed no usable RESULT line: the trial is marked failed and the study goes on."""


@dataclass
class Study:
    """What every trial needs: the stage, the space, the flags after --, the budget, where outputs go."""

    stage_dir: Path
    space: dict
    extra: list[str]
    budget_min: float
    out: Path                 # runs/tune/<study>/
    quiet: bool = False


def run_trial(trial: optuna.Trial, st: Study) -> float:
    """Run train.py with this trial's flags; report each evaluation; prune; return the RESULT metric."""
    params = {name: suggest(trial, name, spec) for name, spec in st.space["params"].items()}
    argv = params_argv(params, st.space)
    trial.set_user_attr("argv", argv)
    trial_dir = st.out / f"trial_{trial.number}"
    if trial_dir.exists():  # left over from an earlier study of the same name
        shutil.rmtree(trial_dir)
    trial_dir.mkdir(parents=True)
    cmd = [sys.executable, "train.py", *argv, *st.extra, "--max_minutes", f"{st.budget_min:g}",
           "--out_dir", str(trial_dir / "ckpt"), "--run_dir", str(trial_dir / "run")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1",   # eval lines arrive as they are printed
           "MY_LLM_RESULTS": str(trial_dir / "results")}                 # the trial's result file stays beside it
    metric, evals, records, pruned = st.space["metric"], 0, [], False
    tag = f"trial {trial.number}" + (" (default)" if trial.user_attrs.get("default") else "")
    print(f"\n=== {tag}: python train.py {shlex.join([*argv, *st.extra])} --max_minutes {st.budget_min:g}",
          flush=True)
    t0 = time.perf_counter()
    with open(trial_dir / "train.log", "w", encoding="utf-8") as log:
        log.write(shlex.join(cmd) + "\n")
        proc = subprocess.Popen(cmd, cwd=st.stage_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, env=env)
        try:
            for line in proc.stdout:
                log.write(line)
                if line.startswith("RESULT {"):  # scripts/results.py's one-line record
                    records.append(json.loads(line[len("RESULT "):]))
                point = parse_eval_line(line)
                if point is None or metric not in point:
                    continue
                if not st.quiet:
                    print(f"[trial {trial.number}] {line.rstrip()[:160]}", flush=True)
                trial.report(point[metric], step=evals)  # the k-th evaluation is step k
                evals += 1
                if trial.should_prune():
                    pruned = True
                    break
        finally:
            stop_process(proc, log)
    minutes = (time.perf_counter() - t0) / 60
    trial.set_user_attr("minutes", round(minutes, 3))
    trial.set_user_attr("evaluations", evals)
    if pruned:
        raise optuna.TrialPruned(f"pruned at evaluation {evals} ({metric} {point[metric]:.4f}), "
                                 f"its train.py stopped after {minutes:.2f} min")
    tail = last_error(trial_dir / "train.log")
    if proc.returncode == 2:  # train.py refused the flags: a one-line error, the same for every trial
        raise UserError(f"trial {trial.number}: train.py refused its flags: {tail} (log: {trial_dir / 'train.log'})")
    if proc.returncode != 0 or not records:
        raise TrialFailed(f"train.py exit {proc.returncode}, {tail} (log: {trial_dir / 'train.log'})")
    record = records[-1]
    value = record.get("metrics", {}).get(st.space["result_metric"])
    if not isinstance(value, (int, float)) or math.isnan(value):
        raise UserError(f"train.py's RESULT line has no {st.space['result_metric']!r} (it has: "
                        f"{', '.join(record.get('metrics', {}))}); fix the space's result_metric")
    if evals == 0:
        raise UserError(f"train.py logged no eval line with {metric!r}: the space's metric must be a field of its "
                        f"'eval | ...' lines (see {trial_dir / 'train.log'})")
    for key in ("dataset", "split", "params", "train_wall_s", "device", "seed", "data_sha256", "torch"):
        trial.set_user_attr(key, record.get(key))
    if record.get("reproduce_command"):
        trial.set_user_attr("reproduce_command", without_flags(record["reproduce_command"], ("--out_dir", "--run_dir")))
    return float(value)


def stop_process(proc: subprocess.Popen, log) -> None:
    """End a trial's train.py (SIGTERM: it stops at the next step boundary); read what it still prints so it never
    blocks on a full pipe; SIGKILL after 60 s or at a second Ctrl-C."""
    try:
        if proc.poll() is None:
            proc.terminate()
        for line in proc.stdout:
            log.write(line)
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except KeyboardInterrupt:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stdout.close()


def last_error(log_path: Path) -> str:
    """The line that says why train.py stopped: its ``error: ...`` line, else its last line."""
    lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:") or ": error:" in ln]
    return (errors or lines[-1:] or ["no output"])[-1]


def without_flags(command: str, drop: tuple[str, ...]) -> str:
    """``cd x && python train.py --a 1 --out_dir D`` without ``--out_dir D``."""
    prefix, _, rest = command.rpartition(" && ")
    words, out, skip = shlex.split(rest), [], False
    for w in words:
        if skip and not w.startswith("--"):
            continue
        skip = w in drop
        if not skip:
            out.append(w)
    return (prefix + " && " if prefix else "") + shlex.join(out)


# ----- 3. the study: SQLite storage, resume, the default trial ------------------------------------------
def study_identity(st: Study, stage: str, source: str) -> dict:
    """What makes two invocations the same study (a different one needs a different --study name)."""
    return {"stage": stage, "space": st.space, "space_source": source, "extra_flags": st.extra,
            "budget_min": st.budget_min}


def default_name(identity: dict) -> str:
    digest = hashlib.sha1(json.dumps({k: v for k, v in identity.items() if k != "space_source"},
                                     sort_keys=True).encode()).hexdigest()[:8]
    return f"{identity['stage']}_{digest}"


def open_study(path: Path, name: str, identity: dict, st: Study, seed: int, startup: int,
               prune_warmup: int) -> optuna.Study:
    """Create or continue the study in ``path`` (SQLite); trial 0 is the default configuration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{path}", direction=st.space["direction"],
                                load_if_exists=True,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=startup,
                                                                   n_warmup_steps=prune_warmup))
    saved = study.user_attrs.get("identity")
    if saved is None:
        study.set_user_attr("identity", identity)
    else:
        changed = [k for k in ("stage", "space", "extra_flags", "budget_min") if saved.get(k) != identity[k]]
        if changed:
            raise UserError(f"study {name} in {path} was started with a different {', '.join(changed)} "
                            f"(saved: {', '.join(f'{k}={saved.get(k)!r}' for k in changed)}); pass another --study "
                            f"name, or delete {path} to start over")
    # Seeded, and different after each resume: a restarted sampler would propose the same first trials again.
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=startup)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # a tune.py killed mid-trial
        study.tell(t.number, state=TrialState.FAIL)
        requeue(study, t)
    if not study.trials:
        study.enqueue_trial({k: spec["default"] for k, spec in st.space["params"].items()},
                            user_attrs={"default": True})
    return study


def requeue(study: optuna.Study, trial) -> None:
    """An interrupted trial runs again, with the same flags, the next time the study goes on."""
    attrs = {"rerun_of": trial.number, **({"default": True} if trial.user_attrs.get("default") else {})}
    study.enqueue_trial(dict(trial.params), user_attrs=attrs)


def one_trial(study: optuna.Study, st: Study) -> TrialState:
    """Ask for a trial, run it, tell the study how it ended."""
    trial = study.ask()
    try:
        value = run_trial(trial, st)
    except optuna.TrialPruned as e:
        study.tell(trial, state=TrialState.PRUNED)
        print(f"trial {trial.number}: {e}", flush=True)
        return TrialState.PRUNED
    except TrialFailed as e:
        study.tell(trial, state=TrialState.FAIL)
        print(f"warning: trial {trial.number} failed: {e}", file=sys.stderr, flush=True)
        return TrialState.FAIL
    except BaseException as e:  # Ctrl-C, SIGTERM, refused flags: the trial runs again when the study continues
        study.tell(trial, state=TrialState.FAIL)
        requeue(study, trial)
        if isinstance(e, KeyboardInterrupt):
            print(f"trial {trial.number} stopped; it runs again when the same command is run again", file=sys.stderr)
        raise
    study.tell(trial, value)
    print(f"trial {trial.number}: {st.space['metric']} {value:.4f} in {trial.user_attrs['minutes']:.2f} min",
          flush=True)
    return TrialState.COMPLETE


def finished(study: optuna.Study) -> list:
    return study.get_trials(deepcopy=False, states=FINISHED)


def keep_best_checkpoints(study: optuna.Study, out: Path) -> None:
    """Checkpoints cost disk (stage 1: ~100 MB a trial): keep only the best trial's."""
    best = best_trial(study)
    for t in study.get_trials(deepcopy=False):
        ckpt = out / f"trial_{t.number}" / "ckpt"
        if t.state != TrialState.RUNNING and (best is None or t.number != best.number) and ckpt.exists():
            shutil.rmtree(ckpt)


def best_trial(study: optuna.Study):
    return study.best_trial if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else None


def default_trial(study: optuna.Study):
    return next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if t.user_attrs.get("default")), None)


# ----- 4. output: table, best command, plots, summary -------------------------------------------------
def trial_table(study: optuna.Study, st: Study) -> str:
    """One row per trial; the flags column shows only what differs from the default configuration."""
    defaults = {k: spec["default"] for k, spec in st.space["params"].items()}
    best = best_trial(study)
    rows = [("trial", "state", st.space["metric"], "minutes", "flags (changed from the default)")]
    for t in study.get_trials(deepcopy=False):
        changed = {k: v for k, v in t.params.items() if k in defaults and v != defaults[k]}
        flags = shlex.join(params_argv(changed, st.space)) or "(default)"
        mark = " *" if best is not None and t.number == best.number else ""
        value = "—" if t.value is None else f"{t.value:.4f}"
        minutes = t.user_attrs.get("minutes")
        rows.append((f"{t.number}{mark}", t.state.name, value, "—" if minutes is None else f"{minutes:.2f}", flags))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows)


def best_command(st: Study, trial) -> str:
    """The best flags as a command to paste: the same budget, the same flags after --."""
    words = [*trial.user_attrs.get("argv", params_argv(trial.params, st.space)), *st.extra,
             "--max_minutes", f"{st.budget_min:g}"]
    return f"cd {st.stage_dir.name} && python train.py {shlex.join(words)}"


def write_plots(study: optuna.Study, out: Path) -> tuple[list[str], list[str]]:
    """(PNG files written, notes on those that could not be drawn)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    written, notes = [], []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = [("history.png", plot_optimization_history, 1), ("importance.png", plot_param_importances, 2)]
    for name, plot, needed in plots:
        if len(complete) < needed:
            notes.append(f"{name}: needs {needed} completed trials, the study has {len(complete)}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental" warnings of optuna.visualization.matplotlib
                ax = plot(study)
            fig = ax.figure
            fig.tight_layout()
            fig.savefig(out / name, dpi=110, bbox_inches="tight")  # the history's legend sits outside the axes
            plt.close(fig)
            written.append(str(out / name))
        except (ValueError, RuntimeError) as e:  # e.g. every completed trial has the same flags
            notes.append(f"{name}: {e}")
    return written, notes


def trial_summary(t) -> dict:
    return {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
            "argv": t.user_attrs.get("argv"), "default": bool(t.user_attrs.get("default")),
            "minutes": t.user_attrs.get("minutes"), "evaluations": t.user_attrs.get("evaluations"),
            "intermediate": {str(k): v for k, v in t.intermediate_values.items()}}


def summarize(study: optuna.Study, st: Study, db: Path, command: str, seed: int) -> dict:
    """Print the table, best vs default and the best command; write plots and summary.json."""
    metric = st.space["metric"]
    print(f"\nstudy {study.study_name} ({db}): {len(finished(study))} finished trials, {metric} "
          f"({st.space['direction']})\n")
    print(trial_table(study, st))
    best, default = best_trial(study), default_trial(study)
    summary = {"study": study.study_name, "storage": str(db), "stage": st.stage_dir.name, "command": command,
               "sampler_seed": seed, "metric": metric, "result_metric": st.space["result_metric"],
               "direction": st.space["direction"],
               "budget_min": st.budget_min, "extra_flags": st.extra, "space": st.space,
               "trials": [trial_summary(t) for t in study.get_trials(deepcopy=False)],
               "best": trial_summary(best) if best else None, "default": trial_summary(default) if default else None}
    if best is None:
        print("\nno trial has completed yet")
    else:
        better = default is not None and best.value != default.value
        if default is None:
            print(f"\nbest: trial {best.number}, {metric} {best.value:.4f} (the default trial has not completed)")
        else:
            gain = best.value - default.value
            print(f"\nbest: trial {best.number}, {metric} {best.value:.4f}; default (trial {default.number}) "
                  f"{default.value:.4f}; {'better than the default by' if better else 'no trial beat the default:'} "
                  f"{gain:+.4f}")
        summary["best_command"] = best_command(st, best)
        summary["reproduce_command"] = best.user_attrs.get("reproduce_command")
        summary["better_than_default"] = bool(better)
        print(f"\nbest flags, ready to run:\n  {summary['best_command']}")
        if summary["reproduce_command"]:
            print(f"the same numbers without a clock (exact steps):\n  {summary['reproduce_command']}")
    summary["plots"], notes = write_plots(study, st.out)
    for note in notes:
        print(f"note: {note}")
    (st.out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {st.out / 'summary.json'}" + "".join(f", {p}" for p in summary["plots"]))
    return summary


def report(summary: dict, study: optuna.Study, reported_root: Path | None) -> Path:
    """The study as a result file (results/<stage>/) copied to results/reported/<stage>/ for the README tables."""
    from scripts.results import make_result, report_result, write_result  # imports torch: only here

    best, default = best_trial(study), default_trial(study)
    if best is None or default is None:
        raise UserError("--report needs a completed default trial and a completed best trial")
    name = summary["result_metric"]
    record = make_result(
        summary["stage"], "hyperparameter_tuning", best.user_attrs.get("dataset") or "?",
        best.user_attrs.get("split") or "val",
        {name: best.value, f"default_{name}": default.value},
        params=best.user_attrs.get("params"), train_wall_s=best.user_attrs.get("train_wall_s"),
        device=best.user_attrs.get("device") or "?", seed=best.user_attrs.get("seed"),
        data_sha256=best.user_attrs.get("data_sha256"), command=summary["command"], primary_metric=name,
        model=f"Optuna TPE, best of {len(finished(study))} trials", gain=best.value - default.value,
        sampler_seed=summary["sampler_seed"], best_command=summary["best_command"],
        reproduce_command=summary.get("reproduce_command"), best_params=best.params, default_params=default.params,
        budget_min=summary["budget_min"], extra_flags=summary["extra_flags"], space=summary["space"],
        trials=summary["trials"])
    path = write_result(record, name=f"tune_{summary['study']}", echo=False)
    return report_result(path, reported_root)


# ----- 5. the command line ---------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """tune.py's own flags, and the train.py flags after ``--``."""
    own, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(prog="scripts/tune.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter,
                                epilog="flags after -- are passed to every trial's train.py (fixed, not searched)")
    p.add_argument("--stage", required=True, help="1..5 or a stage folder name (stage1_mlp ...)")
    p.add_argument("--trials", type=int, default=12, help="finished (completed or pruned) trials the study should have")
    p.add_argument("--budget_min", type=float, default=1.0,
                   help="each trial's train.py --max_minutes (training wall time; 0 = no limit)")
    p.add_argument("--study", default="", help="study name (default: <stage>_<hash of space, flags and budget>)")
    p.add_argument("--space_file", type=Path, help="a JSON search space instead of the stage's tune_space.py")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler")
    p.add_argument("--startup_trials", type=int, default=3,
                   help="finished trials before TPE models the space and before the median pruner prunes")
    p.add_argument("--prune_warmup", type=int, default=1, help="evaluations of a trial before it may be pruned")
    p.add_argument("--runs_dir", type=Path, default=REPO_ROOT / "runs" / "tune",
                   help="where <study>.db and <study>/ go (default: runs/tune)")
    p.add_argument("--keep_checkpoints", action="store_true", help="keep every trial's checkpoints (default: best)")
    p.add_argument("--quiet", action="store_true", help="do not echo the trials' eval lines")
    p.add_argument("--dry_run", action="store_true", help="check the space against train.py --help and stop")
    p.add_argument("--report", action="store_true",
                   help="also write the study as a result file and copy it to results/reported/<stage>/")
    p.add_argument("--reported_root", type=Path, help=argparse.SUPPRESS)  # tests: instead of results/reported
    args = p.parse_args(own)
    if args.trials < 1:
        raise UserError(f"--trials must be >= 1, got {args.trials}")
    if args.budget_min < 0 or args.startup_trials < 0 or args.prune_warmup < 0:
        raise UserError("--budget_min, --startup_trials and --prune_warmup must be >= 0")
    if args.study and not re.fullmatch(r"[\w.-]+", args.study):
        raise UserError(f"--study must be a plain name (letters, digits, _ . -), got {args.study!r}")
    return args, extra


def check_extra(extra: list[str], space: dict, flags: dict[str, Flag] | None, train: str) -> None:
    """The flags after -- must not fight the search or tune.py's own flags, and must exist (``flags`` None: only
    the first two checks, before train.py --help has run)."""
    for word in extra:
        if not word.startswith("--"):
            continue
        name = word[2:].split("=", 1)[0]
        base = name[3:] if name.startswith("no-") else name
        if base in SET_BY_TUNE:
            raise UserError(f"{word} after -- is set by tune.py for every trial (--max_minutes comes from "
                            f"--budget_min)")
        if base in space["params"]:
            raise UserError(f"{word} after -- is a searched flag; remove it there or from the space")
        if flags is not None and name not in flags and not (name != base and flags.get(base, Flag(False)).negatable):
            raise UserError(f"{word} after -- is not a flag of {train} (see python train.py --help)")


def main(argv=None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parse_args(argv)
    stage_dir = find_stage(args.stage)
    raw, source = load_space(stage_dir, args.space_file)
    train = f"{stage_dir.name}/train.py"
    check_extra(extra, check_space(raw, None, source, train), None, train)  # cheap checks first: no train.py yet
    flags = train_flags(stage_dir)
    space = check_space(raw, flags, source, train)
    check_extra(extra, space, flags, train)
    st = Study(stage_dir, space, extra, args.budget_min, out=Path())
    identity = study_identity(st, stage_dir.name, source)
    name = args.study or default_name(identity)
    db, st.out = args.runs_dir / f"{name}.db", args.runs_dir / name
    st.quiet = args.quiet
    if args.dry_run:
        defaults = {k: s["default"] for k, s in space["params"].items()}
        print(f"search space {source}: {len(space['params'])} flags of {train} are valid; {space['metric']} "
              f"({space['direction']}); study {name} in {db}")
        for k, s in space["params"].items():
            rng = s.get("choices") or ([True, False] if s["type"] == "bool" else [s["low"], s["high"]])
            print(f"  --{k}: {s['type']} {rng}{' log' if s.get('log') else ''}, default {s['default']!r}")
        print(f"default trial: cd {stage_dir.name} && python train.py "
              f"{shlex.join([*params_argv(defaults, space), *extra])} --max_minutes {args.budget_min:g}")
        return None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_suffix(".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another tune.py is running study {name} ({db}); wait for it or pass another "
                            f"--study") from None
        study = open_study(db, name, identity, st, args.seed, args.startup_trials, args.prune_warmup)
        st.out.mkdir(parents=True, exist_ok=True)
        done = len(finished(study))
        print(f"study {name}: {done} of {args.trials} trials finished ({db})" +
              (f"; running {args.trials - done} more, {args.budget_min:g} min of training each" if done < args.trials
               else ""), flush=True)
        failures = 0
        while len(finished(study)) < args.trials:
            state = one_trial(study, st)
            failures = failures + 1 if state == TrialState.FAIL else 0
            if not args.keep_checkpoints:
                keep_best_checkpoints(study, st.out)
            if failures >= 3:
                raise UserError(f"3 trials in a row failed; see their train.log under {st.out}")
        command = "python scripts/tune.py " + shlex.join(argv)
        summary = summarize(study, st, db, command, args.seed)
        if args.report:
            print(f"reported {report(summary, study, args.reported_root)} (now run python scripts/report.py)")
    return summary


if __name__ == "__main__":
    run_cli(main)
