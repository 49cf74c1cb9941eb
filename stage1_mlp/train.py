"""Train the stage-1 MLP text classifier (docs/stage1_mlp.md §4).

    python train.py --dataset imdb                       # full data from $MY_LLM_DATA (or the bundled sample)
    python train.py --dataset imdb --impl numpy          # the hand-written NumPy MLP, same pipeline
    python train.py --dataset ag_news --protocol ag_news_test_cv --fold 0   # offline AG News protocol
    python train.py ... --resume                         # continue checkpoints/last_model.pt exactly

Pipeline: read the train split → carve a stratified validation split → fit the n-gram vocabulary
and TF-IDF on the remaining training part only → mini-batch AdamW on softmax cross-entropy →
evaluate on validation every epoch; the best epoch goes to ``checkpoints/best_model.pt``, and
training stops after ``--patience`` epochs without improvement. ``checkpoints/last_model.pt``
(written when training ends, at ``--max_steps`` and on Ctrl-C) holds everything ``--resume`` needs:
weights, optimizer moments, RNG states, the epoch's data order and the position inside it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from scripts.checkpoint import load_checkpoint
from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.config import add_dataclass_args, config_from_dict, dataclass_from_args
from scripts.device import add_device_args, autocast, describe_device, pick_device
from scripts.log import RunLogger, progress
from scripts.results import write_result
from scripts.seed import get_rng_state, seed_everything, set_rng_state
from stage1_mlp import engine
from stage1_mlp.config import TrainConfig
from stage1_mlp.models.mlp_numpy import AdamWNumpy, NumpyMLP
from stage1_mlp.models.mlp_torch import MLPOptimizer

# flags that may change when resuming (everything else comes from the checkpoint)
RESUMABLE_OVERRIDES = ("epochs", "max_steps", "log_every", "data_dir")


def parse_args(argv=None) -> tuple[TrainConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    add_dataclass_args(parser, TrainConfig)
    add_device_args(parser)
    args = parser.parse_args(argv)
    cfg = dataclass_from_args(TrainConfig, args)
    cfg.validate()
    return cfg, args


def _numpy_rng_state(model) -> str | None:
    return json.dumps(model.rng.bit_generator.state) if isinstance(model, NumpyMLP) else None


def _set_numpy_rng_state(model, state: str | None) -> None:
    if isinstance(model, NumpyMLP) and state:
        model.rng.bit_generator.state = json.loads(state)


def _optimizer_state(opt) -> dict:
    if isinstance(opt, AdamWNumpy):
        s = opt.state_dict()
        return {"t": s["t"], "lr": s["lr"], "m": {k: torch.from_numpy(v) for k, v in s["m"].items()},
                "v": {k: torch.from_numpy(v) for k, v in s["v"].items()}}
    return opt.state_dict()


def _load_optimizer_state(opt, state: dict) -> None:
    if isinstance(opt, AdamWNumpy):
        opt.load_state_dict({"t": state["t"], "lr": state["lr"], "m": {k: v.numpy() for k, v in state["m"].items()},
                             "v": {k: v.numpy() for k, v in state["v"].items()}})
    else:
        opt.load_state_dict(state)


def train_step(model, opt, xb, yb, device, dtype: str = "float32") -> float:
    """One optimizer step on a batch; returns the batch loss (``dtype``: autocast, torch only)."""
    if isinstance(model, NumpyMLP):
        _, loss = model.forward(xb, yb)
        model.backward()
        opt.step(model.grads)
        return loss
    with autocast(device, dtype):
        _, loss = model(xb.to_torch(device), torch.from_numpy(yb).to(device))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def main(argv=None) -> dict:
    t_start = time.perf_counter()
    load_at_start = os.getloadavg()[0]  # recorded beside timings: the machine may be shared
    cfg, args = parse_args(argv)
    device = pick_device(args.device)
    out_dir = Path(cfg.out_dir)
    last_path, best_path = out_dir / "last_model.pt", out_dir / "best_model.pt"

    resume_ckpt = None
    if cfg.resume:
        resume_ckpt = load_checkpoint(last_path, kind=engine.KIND)
        saved = config_from_dict(TrainConfig, resume_ckpt["config"])
        cfg = dataclasses.replace(saved, resume=True, **{k: getattr(cfg, k) for k in RESUMABLE_OVERRIDES})
        cfg.validate()
    if cfg.impl == "numpy" and device.type != "cpu":
        device = torch.device("cpu")  # the NumPy MLP runs on the CPU whatever --device says

    generator = seed_everything(cfg.seed)
    run_dir = Path(cfg.run_dir or f"runs/{cfg.dataset}_{cfg.impl}_{datetime.now():%Y%m%d-%H%M%S}")
    if resume_ckpt is not None and resume_ckpt.get("run_dir") and cfg.run_dir is None:
        run_dir = Path(resume_ckpt["run_dir"])
    logger = RunLogger(run_dir)

    # ----- data and features ---------------------------------------------------------------
    t0 = time.perf_counter()
    train, val, _ = engine.train_val_data(cfg)
    n_classes = len(train.label_names)
    if train.sample:
        logger.info(f"using the bundled sample {train.source} ({len(train.texts) + len(val.texts)} reviews); "
                    f"set MY_LLM_DATA or --data_dir for the full dataset")
    if resume_ckpt is not None:
        vec = engine.vectorizer_from_payload(resume_ckpt["vocab"])
        x_train = engine.featurize(vec, train.texts)
    else:  # vocabulary, idf and NB ratios from the training part only
        vec = engine.make_vectorizer(cfg, n_classes)
        x_train = vec.fit_transform([engine.tokenize(t) for t in train.texts], train.labels)
    x_val = engine.featurize(vec, val.texts)
    y_train, y_val = train.labels, val.labels
    feat_s = time.perf_counter() - t0
    logger.info(f"data: {cfg.dataset} ({cfg.protocol}) train {len(y_train)} / val {len(y_val)} from {train.source}; "
                f"vocab {len(vec.vocab)} n-grams (1..{cfg.ngram}), {x_train.nnz / len(y_train):.0f} per doc; "
                f"features in {feat_s:.1f}s")

    # ----- model and optimizer ---------------------------------------------------------------
    model = engine.make_model(cfg, len(vec.vocab), n_classes)
    if isinstance(model, NumpyMLP):
        opt = AdamWNumpy(model.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        model.to(device)
        opt = MLPOptimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    logger.info(f"model: {cfg.impl} MLP {[len(vec.vocab), *cfg.hidden, n_classes]}, "
                f"{engine.count_params(model):,} parameters, device {describe_device(device)}")

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "epoch_gen_state": None,
             "best_metric": -1.0, "best_epoch": -1, "bad_epochs": 0, "train_s": 0.0}
    if resume_ckpt is not None:
        engine.load_model_state(model, resume_ckpt["model"])
        _load_optimizer_state(opt, resume_ckpt["optimizer"])
        state.update(resume_ckpt["train_state"])
        set_rng_state(resume_ckpt["rng"], generator)
        _set_numpy_rng_state(model, resume_ckpt.get("numpy_rng"))
        logger.info(f"resumed from {last_path} at epoch {state['epoch']} batch {state['batch_in_epoch']} (step {state['step']})")

    def save_last():
        engine.save_model_checkpoint(
            last_path, cfg, model, vec, train.label_names, optimizer=_optimizer_state(opt),
            train_state=dict(state), rng=get_rng_state(generator), numpy_rng=_numpy_rng_state(model),
            run_dir=str(run_dir))

    def evaluate_val() -> tuple[float, float]:
        logits = engine.predict_logits(model, x_val, device=device)
        return float((logits.argmax(1) == y_val).mean()), engine.mean_loss(logits, y_val)

    # ----- training loop ---------------------------------------------------------------------
    n_batches = -(-len(y_train) // cfg.batch_size)
    stopped_early = False
    t_train = time.perf_counter() - state["train_s"]
    try:
        while state["epoch"] < cfg.epochs and not stopped_early:
            if state["batch_in_epoch"] == 0 or state["epoch_gen_state"] is None:
                state["epoch_gen_state"] = generator.get_state()
            else:  # resuming mid-epoch: replay the same permutation
                generator.set_state(state["epoch_gen_state"])
            perm = torch.randperm(len(y_train), generator=generator).numpy()
            model.train()
            bar = progress(total=n_batches, initial=state["batch_in_epoch"], desc=f"epoch {state['epoch'] + 1}")
            t_log, losses = time.perf_counter(), []
            while state["batch_in_epoch"] < n_batches:
                if cfg.max_steps is not None and state["step"] >= cfg.max_steps:
                    break
                b = state["batch_in_epoch"]
                idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                losses.append(train_step(model, opt, x_train.take(idx), y_train[idx], device, args.dtype))
                state["batch_in_epoch"] += 1
                state["step"] += 1
                bar.update(1)
                if state["step"] % cfg.log_every == 0:
                    dt = time.perf_counter() - t_log
                    logger.log(state["step"], epoch=state["epoch"] + 1, loss=float(np.mean(losses)), lr=cfg.lr,
                               **{"samples/s": len(losses) * cfg.batch_size / dt, "ms/step": 1000 * dt / len(losses)})
                    t_log, losses = time.perf_counter(), []
            bar.close()
            if state["batch_in_epoch"] < n_batches:  # --max_steps reached inside the epoch
                break
            # end of epoch: validate, keep the best, early stopping
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
            acc, loss = evaluate_val()
            improved = acc > state["best_metric"]
            if improved:
                state.update(best_metric=acc, best_epoch=state["epoch"], bad_epochs=0)
                engine.save_model_checkpoint(best_path, cfg, model, vec, train.label_names,
                                             best_metric=acc, epoch=state["epoch"], step=state["step"])
            else:
                state["bad_epochs"] += 1
            logger.log(state["step"], prefix="eval", epoch=state["epoch"], val_loss=loss, val_accuracy=acc,
                       best=state["best_metric"], elapsed_s=time.perf_counter() - t_train)
            stopped_early = state["bad_epochs"] >= cfg.patience
        state["train_s"] = time.perf_counter() - t_train
        save_last()
    except KeyboardInterrupt:
        state["train_s"] = time.perf_counter() - t_train
        save_last()
        logger.info(f"interrupted: saved {last_path}; continue with the same command plus --resume")
        raise
    if stopped_early:
        logger.info(f"early stopping: no better validation accuracy for {cfg.patience} epochs")

    # ----- final: the best epoch's model on validation ---------------------------------------
    if state["best_epoch"] < 0:  # stopped (--max_steps) before any epoch ended: the current weights
        engine.save_model_checkpoint(best_path, cfg, model, vec, train.label_names,
                                     best_metric=None, epoch=state["epoch"], step=state["step"])
    if best_path.is_file():
        engine.load_model_state(model, load_checkpoint(best_path, kind=engine.KIND)["model"])
        if not isinstance(model, NumpyMLP):
            model.to(device)
    logits = engine.predict_logits(model, x_val, device=device)
    wall = time.perf_counter() - t_start
    result = engine.make_stage_result(
        cfg, split="val", y_true=y_val, logits=logits, label_names=train.label_names,
        params=engine.count_params(model), train_wall_s=wall,
        device=describe_device(device), files=train.files, sample=train.sample,
        samples_per_s=state["step"] * cfg.batch_size / max(state["train_s"], 1e-9),
        extra={"epochs_run": state["epoch"], "best_epoch": state["best_epoch"], "steps": state["step"],
               "feature_s": feat_s, "train_loop_s": state["train_s"], "peak_rss_mb": engine.peak_rss_mb(),
               "vocab_size": len(vec.vocab), "checkpoint": str(best_path),
               "load_avg_1min": [load_at_start, os.getloadavg()[0]]})
    write_result(result, name=f"train_{cfg.dataset}_{cfg.impl}")
    return result


if __name__ == "__main__":
    run_cli(main)
