"""Train the stage-1 MLP text classifier (docs/stage1_mlp.md §4).

    python train.py --dataset imdb                       # full data from $MY_LLM_DATA (or the bundled sample)
    python train.py --dataset imdb --impl numpy          # the hand-written NumPy MLP, same pipeline
    python train.py --dataset ag_news --protocol ag_news_test_cv --fold 0   # offline AG News protocol
    python train.py ... --resume                         # continue checkpoints/last_model.pt exactly

Pipeline: read the train split → carve a stratified validation split → fit the n-gram vocabulary
and TF-IDF on the remaining training part only → mini-batch lazy Adam / AdamW on softmax
cross-entropy → evaluate on validation at the end of every epoch (or every ``--eval_every`` steps).
The best evaluation goes to ``<out_dir>/best_model.pt``; training stops after ``--patience``
evaluations without a better validation accuracy. ``<out_dir>/last_model.pt`` is written at every
evaluation, at the end and on Ctrl-C, always at a step boundary, and holds everything ``--resume``
needs: weights, optimizer moments, RNG states and the step count (the data order of each epoch is
a function of ``--seed`` and the epoch number, so the step count is the position in the data).

Read it top to bottom: main() → parse_args() → build() → resume_or_start() → train_loop()
(next_batch(), train_step(), evaluate_and_save(), should_stop()) → final_result().
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shlex
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from scripts import REPO_ROOT
from scripts.budget import Budget, reproduce_argv, schedule_warmup
from scripts.checkpoint import load_checkpoint
from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.config import add_dataclass_args, config_from_dict, dataclass_from_args, explicit_flags, resume_config
from scripts.device import add_device_args, autocast, describe_device, pick_device
from scripts.interrupt import StopRequest
from scripts.log import RunLogger, progress
from scripts.results import peak_rss_mb, write_result
from scripts.schedule import lr_at, set_lr
from scripts.seed import get_rng_state, seed_everything, set_rng_state
from stage1_mlp import engine
from stage1_mlp.config import TrainConfig

BEST, LAST = "best_model.pt", "last_model.pt"


# ----- 1. flags (and the --resume rule) -------------------------------------------------------
def parse_args(argv=None) -> tuple[TrainConfig, argparse.Namespace, dict | None]:
    """``(config, other flags, checkpoint to resume or None)``. With ``--resume`` the run continues with
    the checkpoint's config; typed budget/logging flags override it, any other typed change is refused."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    add_dataclass_args(parser, TrainConfig)
    add_device_args(parser)
    args = parser.parse_args(argv)
    cfg = dataclass_from_args(TrainConfig, args)
    ckpt = None
    if cfg.resume:
        last = Path(cfg.out_dir) / LAST
        ckpt = load_checkpoint(last, kind=engine.KIND)
        if "history" not in ckpt.get("train_state", {}):
            raise UserError(f"{last} was written by an older train.py and cannot be continued exactly; "
                            f"start a new run without --resume")
        merged = resume_config(ckpt["config"], dataclasses.asdict(cfg), explicit_flags(parser, argv), source=last)
        cfg = config_from_dict(TrainConfig, merged)
    cfg.validate()
    if cfg.impl == "numpy" and args.dtype != "float32":
        raise UserError(f"--dtype {args.dtype} needs --impl torch (the NumPy MLP computes in float32)")
    return cfg, args, ckpt


# ----- 2. data, features, model, optimizer -----------------------------------------------------
@dataclass
class Run:
    """Everything the loop needs, built once."""

    cfg: TrainConfig
    dtype: str
    device: torch.device
    out_dir: Path
    run_dir: Path
    logger: RunLogger
    train: engine.TextData
    vec: engine.NgramVectorizer
    x_train: engine.SparseRows
    x_val: engine.SparseRows
    y_val: np.ndarray
    feature_s: float
    model: object
    opt: object
    n_batches: int
    budget: Budget
    eval_s_per_step: float = 0.0


def build(cfg: TrainConfig, args: argparse.Namespace, ckpt: dict | None) -> Run:
    device = engine.model_device(cfg, pick_device(args.device))
    seed_everything(cfg.seed)  # initial weights and dropout; a resumed run restores the saved RNG states later
    run_dir = Path(cfg.run_dir or (ckpt or {}).get("run_dir") or
                   f"runs/{cfg.dataset}_{cfg.impl}_{datetime.now():%Y%m%d-%H%M%S}")
    logger = RunLogger(run_dir, resume_step=ckpt["train_state"]["step"] if ckpt else None)

    t0 = time.perf_counter()
    train, val, _ = engine.train_val_data(cfg)
    if train.sample:
        logger.info(f"using the bundled sample {train.source} ({len(train.texts)} train / {len(val.texts)} val "
                    f"reviews); set MY_LLM_DATA or --data_dir for the full dataset")
    if ckpt is not None:  # the vocabulary, idf and NB ratios the run started with
        vec = engine.vectorizer_from_payload(ckpt["vocab"])
        x_train = engine.featurize(vec, train.texts)
    else:  # fitted on the training part only
        vec = engine.make_vectorizer(cfg, len(train.label_names))
        x_train = vec.fit_transform([engine.tokenize(t) for t in train.texts], train.labels)
    x_val = engine.featurize(vec, val.texts)
    feature_s = time.perf_counter() - t0
    logger.info(f"data: {cfg.dataset} ({cfg.protocol}) train {len(train.labels)} / val {len(val.labels)} from "
                f"{train.source}; vocab {len(vec.vocab)} n-grams (1..{cfg.ngram}), "
                f"{x_train.nnz / max(1, len(train.labels)):.0f} per doc; features in {feature_s:.1f}s")

    model = engine.make_model(cfg, len(vec.vocab), len(train.label_names), device)
    opt = engine.make_optimizer(cfg, model)
    logger.info(f"model: {cfg.impl} MLP {[len(vec.vocab), *cfg.hidden, len(train.label_names)]}, "
                f"{engine.count_params(model):,} parameters, device {describe_device(device)}")
    n_batches = -(-len(train.labels) // cfg.batch_size)
    same_budget = ckpt is not None and all(ckpt["config"].get(k) == getattr(cfg, k)
                                           for k in ("max_minutes", "schedule_steps"))
    budget = Budget(epochs=cfg.epochs, steps_per_epoch=n_batches, max_steps=cfg.max_steps,
                    max_minutes=cfg.max_minutes, schedule_steps=cfg.schedule_steps,
                    state=ckpt.get("budget") if same_budget else None)
    return Run(cfg, args.dtype, device, Path(cfg.out_dir), run_dir, logger, train, vec, x_train, x_val, val.labels,
               feature_s, model, opt, n_batches, budget)


def resume_or_start(run: Run, ckpt: dict | None) -> dict:
    """The loop's bookkeeping (plain data, saved in last_model.pt); restored exactly on --resume."""
    state = {"step": 0, "examples": 0, "train_s": 0.0, "best_metric": -1.0, "best_step": -1, "bad_evals": 0,
             "loss_sum": 0.0, "loss_n": 0, "history": [], "resumed_at_steps": []}
    if ckpt is None:
        return state
    run.model.load_state_dict(ckpt["model"])
    run.opt.load_state_dict(ckpt["optimizer"])
    state.update(ckpt["train_state"])
    set_rng_state(ckpt["rng"])  # dropout masks continue where they stopped
    state["resumed_at_steps"] = [*state["resumed_at_steps"], state["step"]]
    run.logger.info(f"resumed from {run.out_dir / LAST} at step {state['step']} "
                    f"(epoch {state['step'] / run.n_batches:.2f})")
    return state


def save_last(run: Run, state: dict) -> None:
    engine.save_model_checkpoint(run.out_dir / LAST, run.cfg, run.model, run.vec, run.train.label_names,
                                 optimizer=run.opt.state_dict(), train_state=dict(state), rng=get_rng_state(),
                                 budget=run.budget.state(), run_dir=str(run.run_dir))


# ----- 3. one step ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of epoch ``epoch``: a function of (seed, epoch) only, so a resumed run needs
    nothing but the step count to find its place."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def next_batch(run: Run, step: int) -> tuple[engine.SparseRows, np.ndarray]:
    """The mini-batch of optimizer step ``step`` (0-based)."""
    epoch, b = divmod(step, run.n_batches)
    idx = epoch_order(run.cfg.seed, epoch, len(run.train.labels))[b * run.cfg.batch_size:(b + 1) * run.cfg.batch_size]
    return run.x_train.take(idx), run.train.labels[idx]


def train_step(model, opt, xb, yb, lr: float, grad_clip: float, device, dtype: str = "float32") -> float:
    """One optimizer step, the same code for both implementations; returns the batch loss."""
    set_lr(opt, lr)
    with autocast(device, dtype):
        _, loss = model(xb, yb)
    opt.zero_grad()
    loss.backward()              # autograd, or NumpyMLP.backward (the hand-written chain rule)
    if grad_clip:
        opt.clip_grad_norm(grad_clip)
    opt.step()
    return loss.item()


def evaluate(run: Run) -> tuple[float, float]:
    """(validation accuracy, validation loss)."""
    logits = engine.predict_logits(run.model, run.x_val, device=run.device, dtype=run.dtype)
    return float((logits.argmax(1) == run.y_val).mean()), engine.mean_loss(logits, run.y_val)


def eval_due(run: Run, step: int) -> bool:
    return step % (run.cfg.eval_every or run.n_batches) == 0


def evaluate_and_save(run: Run, state: dict) -> None:
    """Validate; keep the best weights; count evaluations without improvement; save last_model.pt."""
    acc, loss = evaluate(run)
    point = {"step": state["step"], "epoch": round(state["step"] / run.n_batches, 4), "examples": state["examples"],
             "wall_s": round(state["train_s"], 3), "train_loss": state["loss_sum"] / max(1, state["loss_n"]),
             "val_loss": loss, "val_accuracy": acc}
    state["history"] = [*state["history"], point]
    state.update(loss_sum=0.0, loss_n=0)
    if acc > state["best_metric"]:
        state.update(best_metric=acc, best_step=state["step"], bad_evals=0)
        engine.save_model_checkpoint(run.out_dir / BEST, run.cfg, run.model, run.vec, run.train.label_names,
                                     best_metric=acc, step=state["step"], epoch=point["epoch"])
    else:
        state["bad_evals"] += 1
    run.logger.log(state["step"], prefix="eval", epoch=point["epoch"], val_loss=loss, val_accuracy=acc,
                   best=state["best_metric"], elapsed_s=state["train_s"])
    save_last(run, state)


def should_stop(run: Run, state: dict, elapsed_s: float) -> str | None:
    """Why the next step must not start (None: go on)."""
    if state["step"] >= run.cfg.epochs * run.n_batches:
        return "epochs"
    if run.cfg.patience and state["bad_evals"] >= run.cfg.patience:
        return "early stopping"
    return run.budget.stop_reason(state["step"], elapsed_s)


def time_one_evaluation(run: Run) -> float:
    """For a time budget's plan: the evaluation time per training step (one validation pass / its interval)."""
    t = time.perf_counter()
    evaluate(run)
    spent = time.perf_counter() - t
    run.eval_s_per_step = spent / (run.cfg.eval_every or run.n_batches)
    return spent


# ----- 4. the loop ---------------------------------------------------------------------------
def train_loop(run: Run, state: dict, stop: StopRequest) -> str:
    """Steps until a budget, the epochs or early stopping ends the run; returns the reason. A Ctrl-C only
    sets ``stop.requested``: the step in progress finishes, last_model.pt is saved, then KeyboardInterrupt."""
    cfg = run.cfg
    warmup = schedule_warmup(cfg.lr_schedule, cfg.warmup_steps, cfg.max_minutes)
    t0 = time.perf_counter() - state["train_s"]  # training wall time so far, across resumes
    bar = progress(total=run.budget.step_limit(), initial=state["step"], desc="train")
    t_log, log_losses = time.perf_counter(), []
    while (reason := should_stop(run, state, time.perf_counter() - t0)) is None:
        t_step = time.perf_counter()
        xb, yb = next_batch(run, state["step"])
        lr = lr_at(state["step"], schedule=cfg.lr_schedule, lr=cfg.lr, total_steps=run.budget.total_steps(),
                   warmup_steps=warmup)
        loss = train_step(run.model, run.opt, xb, yb, lr, cfg.grad_clip, run.device, run.dtype)
        state.update(step=state["step"] + 1, examples=state["examples"] + len(yb),
                     loss_sum=state["loss_sum"] + loss, loss_n=state["loss_n"] + 1)
        log_losses.append(loss)
        bar.update(1)
        run.budget.observe(state["step"], time.perf_counter() - t0, time.perf_counter() - t_step,
                           eval_s_per_step=run.eval_s_per_step)
        if run.budget.needs_calibration(state["step"]):
            t0 += time_one_evaluation(run)  # not training time
        if state["step"] % cfg.log_every == 0:
            dt, n = time.perf_counter() - t_log, len(log_losses)
            run.logger.log(state["step"], epoch=round(state["step"] / run.n_batches, 3),
                           loss=float(np.mean(log_losses)), lr=lr,
                           **{"samples/s": n * cfg.batch_size / dt, "ms/step": 1000 * dt / n})
            t_log, log_losses = time.perf_counter(), []
        state["train_s"] = time.perf_counter() - t0
        if eval_due(run, state["step"]):
            evaluate_and_save(run, state)
        if stop.requested:  # the step boundary: a consistent state to save
            stop.save_and_stop(lambda: save_last(run, state), run.out_dir / LAST, state["step"], run.logger.info, bar)
    bar.close()
    if not state["history"] or state["history"][-1]["step"] != state["step"]:
        evaluate_and_save(run, state)  # the run ended between evaluations: score where it stopped
    save_last(run, state)
    return reason


# ----- 5. the result -------------------------------------------------------------------------
def config_argv(cfg: TrainConfig) -> list[str]:
    """The flags that give ``cfg`` from scratch (those that differ from the defaults; never --resume)."""
    out = []
    for f in dataclasses.fields(TrainConfig):
        value = getattr(cfg, f.name)
        value = list(value) if isinstance(value, tuple) else value
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.name == "resume" or value == (list(default) if isinstance(default, tuple) else default):
            continue
        if isinstance(value, bool):
            out.append(f"--{f.name}" if value else f"--no-{f.name}")
        else:
            out += [f"--{f.name}", *map(str, value if isinstance(value, list) else [value])]
    return out


def reproduce_command(cfg: TrainConfig, budget: Budget, steps: int) -> str:
    """A from-scratch command giving the same numbers: a time budget becomes --max_steps/--schedule_steps,
    and the warm-up it lengthened (scripts.budget.schedule_warmup) is written out as --warmup_steps."""
    warmup = schedule_warmup(cfg.lr_schedule, cfg.warmup_steps, cfg.max_minutes)
    argv = reproduce_argv(config_argv(cfg), steps, budget.total_steps(), cfg.max_minutes, warmup_steps=warmup)
    try:
        rel = Path.cwd().resolve().relative_to(REPO_ROOT.resolve())
        prefix = f"cd {rel} && " if str(rel) != "." else ""
    except ValueError:
        prefix = ""
    return f"{prefix}python train.py {shlex.join(argv)}".strip()


def final_result(run: Run, state: dict, reason: str, wall_s: float, load_at_start: float) -> dict:
    """The best evaluation's model scored on validation, with the run's history and budget."""
    best = run.out_dir / BEST
    if best.is_file():
        run.model.load_state_dict(load_checkpoint(best, kind=engine.KIND)["model"])
    logits = engine.predict_logits(run.model, run.x_val, device=run.device, dtype=run.dtype)
    result = engine.make_stage_result(
        run.cfg, split="val", y_true=run.y_val, logits=logits, label_names=run.train.label_names,
        params=engine.count_params(run.model), train_wall_s=wall_s, device=describe_device(run.device),
        files=run.train.files, sample=run.train.sample,
        samples_per_s=state["examples"] / max(state["train_s"], 1e-9),
        extra={"stop_reason": reason, "steps": state["step"], "epochs_run": round(state["step"] / run.n_batches, 4),
               "best_step": state["best_step"], "best_epoch": round(state["best_step"] / run.n_batches, 4),
               "steps_per_epoch": run.n_batches, "n_train": len(run.train.labels), "history": state["history"],
               "resumed_at_steps": state["resumed_at_steps"],
               "reproduce_command": reproduce_command(run.cfg, run.budget, state["step"]),
               "budget": run.budget.summary(state["step"]), "peak_rss_mb": peak_rss_mb(),
               "feature_s": run.feature_s, "train_loop_s": state["train_s"], "vocab_size": len(run.vec.vocab),
               "checkpoint": str(best), "run_dir": str(run.run_dir),
               "load_avg_1min": [load_at_start, os.getloadavg()[0]]})
    write_result(result, name=f"train_{run.cfg.dataset}_{run.cfg.impl}")
    return result


def main(argv=None) -> dict:
    t_start, load_at_start = time.perf_counter(), os.getloadavg()[0]  # the machine may be shared
    cfg, args, ckpt = parse_args(argv)
    run = build(cfg, args, ckpt)
    state = resume_or_start(run, ckpt)
    with StopRequest() as stop:
        reason = train_loop(run, state, stop)
    if reason == "early stopping":
        run.logger.info(f"early stopping: no better validation accuracy in {cfg.patience} evaluations")
    return final_result(run, state, reason, time.perf_counter() - t_start, load_at_start)


if __name__ == "__main__":
    run_cli(main)
