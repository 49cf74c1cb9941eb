"""Train an RNN/LSTM/GRU language model with truncated BPTT (docs/stage2_rnn_lstm.md, section 7).

    cd stage2_rnn_lstm
    python train.py --model_type lstm --vocab_type char --epochs 15          # tiny Shakespeare (bundled)
    python train.py --model_type lstm --vocab_type word --dataset ptb        # needs MY_LLM_DATA or --data_dir
    python train.py ... --max_steps 20 --limit_train 20000                   # a smoke run in seconds
    python train.py ... --resume                                             # continue checkpoints/last_<tag>.pt

Each training stream is cut into B rows (``batchify``); a batch is the next ``seq_len`` tokens of every
row, and the hidden state is carried from one batch to the next but detached, so gradients flow back
at most ``seq_len`` steps (truncated BPTT). Gradients are clipped by global norm. The learning rate
is multiplied by ``lr_decay`` when the validation loss stops improving (``--lr_schedule plateau``,
ReduceLROnPlateau), or follows a cosine from ``lr`` down to ``min_lr`` over the training budget
(``--lr_schedule cosine``: the largest used fraction of ``--max_steps``, ``--max_minutes`` and
``--epochs``, so a time-boxed run ends annealed), or stays at ``lr`` and decays linearly to ``min_lr``
over the last ``--decay_frac`` of the budget (``--lr_schedule wsd``, warmup-stable-decay without the
warm-up). With ``--max_minutes`` a step is not started if it would end past the budget. Training
stops early after ``patience`` evaluations without improvement.

Writes ``checkpoints/best_<tag>.pt`` (best validation loss), ``checkpoints/last_<tag>.pt`` (resumable,
also written on Ctrl-C), ``checkpoints/<vocab_type>_vocabulary.pkl`` (+ .json), ``runs/<tag>/metrics.jsonl``
and, at the end, a result file with validation (and test) loss / perplexity / bits per char of the best
checkpoint. ``<tag>`` is e.g. ``lstm_char``, ``gru_word``, ``lstm_word_wikitext2``, ``lstm_char_scratch``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scripts.checkpoint import load_checkpoint, save_checkpoint, save_vocab_pickle, unwrap_model
from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.config import add_dataclass_args, config_from_dict, dataclass_from_args
from scripts.data import sha256_files
from scripts.device import add_device_args, autocast, describe_device, pick_device
from scripts.log import RunLogger, progress
from scripts.results import make_result, write_result
from scripts.seed import get_rng_state, seed_everything, set_rng_state
from stage2_rnn_lstm.models.language_model import LMConfig, RNNLanguageModel
from stage2_rnn_lstm.utils.data import DEFAULT_DATASET, FILES, batchify, get_batch, load_corpus, num_batches
from stage2_rnn_lstm.utils.engine import KIND, evaluate_loss, loss_metrics

STAGE_DIR = Path(__file__).resolve().parent


@dataclass
class TrainConfig:
    vocab_type: str = field(default="char", metadata={"help": "char or word level", "choices": ["char", "word"]})
    dataset: str = field(default="", metadata={"help": "tinyshakespeare | ptb | wikitext2 (default: tinyshakespeare for char, ptb for word)"})
    data_dir: str = field(default="", metadata={"help": "folder with the dataset (or with <dataset>/ inside); default $MY_LLM_DATA, then bundled"})
    epochs: int = field(default=15, metadata={"help": "passes over the training split"})
    batch_size: int = field(default=64, metadata={"help": "parallel streams B"})
    seq_len: int = field(default=128, metadata={"help": "BPTT length T (tokens per segment)"})
    optimizer: str = field(default="adamw", metadata={"help": "optimizer", "choices": ["adamw", "sgd"]})
    lr: float = field(default=2e-3, metadata={"help": "initial learning rate (e.g. 2e-3 for adamw, 20 for sgd)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    lr_schedule: str = field(default="plateau", metadata={"help": "plateau: decay on stalled val loss; cosine: anneal over the budget; wsd: constant, then linear decay", "choices": ["plateau", "cosine", "wsd"]})
    decay_frac: float = field(default=0.2, metadata={"help": "wsd: the last fraction of the budget in which the LR decays"})
    lr_decay: float = field(default=0.5, metadata={"help": "LR factor when val loss stops improving"})
    plateau_patience: int = field(default=0, metadata={"help": "evaluations without improvement before the LR decays"})
    min_lr: float = field(default=1e-5, metadata={"help": "the LR never decays below this"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the global gradient norm (0 = off)"})
    eval_interval: int = field(default=0, metadata={"help": "evaluate every N steps (0 = at the end of every epoch)"})
    patience: int = field(default=5, metadata={"help": "early stopping: evaluations without improvement (0 = off)"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimizer steps in total (0 = no limit); "
                                                           "with cosine/wsd it also sets the LR schedule's length"})
    max_minutes: float = field(default=0.0, metadata={"help": "stop after this much training wall time (0 = no limit); "
                                                             "with cosine/wsd it also sets the LR schedule's length"})
    limit_train: int = field(default=0, metadata={"help": "use only the first N characters of each split (smoke runs)"})
    seed: int = field(default=1337, metadata={"help": "random seed"})
    log_interval: int = field(default=50, metadata={"help": "print a log line every N steps"})
    checkpoint_dir: str = field(default="checkpoints", metadata={"help": "where checkpoints and the vocabulary go"})
    run_dir: str = field(default="", metadata={"help": "metrics.jsonl folder (default runs/<tag>)"})
    resume: bool = field(default=False, metadata={"help": "continue from <checkpoint_dir>/last_<tag>.pt"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (opt-in)"})
    fused: bool = field(default=False, metadata={"help": "fused AdamW kernel (CUDA and CPU; ignored on MPS): one pass over all parameters per step"})


# Flags that may change when resuming (how long to train, logging); everything else must match.
RESUME_MAY_CHANGE = {"epochs", "max_steps", "max_minutes", "resume", "log_interval", "patience", "run_dir", "compile",
                     "checkpoint_dir"}  # a run may be moved to another folder and continued there


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    add_dataclass_args(p, TrainConfig, "training")
    add_dataclass_args(p, LMConfig, "model")
    add_device_args(p)
    return p


def run_tag(cfg: TrainConfig, mcfg: LMConfig) -> str:
    tag = f"{mcfg.model_type}_{cfg.vocab_type}"
    if cfg.dataset != DEFAULT_DATASET[cfg.vocab_type]:
        tag += f"_{cfg.dataset}"
    return tag + ("_scratch" if mcfg.impl == "scratch" else "")


def model_label(mcfg: LMConfig, vocab_type: str) -> str:
    """e.g. ``LSTM 2x512 char (torch)`` for result tables."""
    extra = (" tied" if mcfg.tie_weights else "") + (" adaptive-softmax" if mcfg.adaptive_cutoffs else "")
    return f"{mcfg.model_type.upper()} {mcfg.num_layers}x{mcfg.hidden_size} {vocab_type}{extra} ({mcfg.impl})"


def vocab_filename(cfg: TrainConfig) -> str:
    prefix = "" if cfg.dataset == DEFAULT_DATASET[cfg.vocab_type] else f"{cfg.dataset}_"
    return f"{prefix}{cfg.vocab_type}_vocabulary.pkl"


def check_flags(cfg: TrainConfig, mcfg: LMConfig) -> None:
    """Impossible flag combinations are one-line errors before any data is read."""
    positive = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "lr": cfg.lr,
                "emb_dim": mcfg.emb_dim, "hidden_size": mcfg.hidden_size, "num_layers": mcfg.num_layers}
    bad = [f"--{k} {v}" for k, v in positive.items() if not v > 0]
    bad += [f"--{k} {v}" for k, v in {"max_steps": cfg.max_steps, "max_minutes": cfg.max_minutes,
                                         "limit_train": cfg.limit_train, "grad_clip": cfg.grad_clip}.items() if v < 0]
    if not 0 <= mcfg.dropout < 1:
        bad.append(f"--dropout {mcfg.dropout}")
    if not 0 < cfg.lr_decay <= 1:
        bad.append(f"--lr_decay {cfg.lr_decay}")
    if not 0 < cfg.decay_frac <= 1:
        bad.append(f"--decay_frac {cfg.decay_frac}")
    if bad:
        raise UserError(f"impossible value(s): {', '.join(bad)}")
    if mcfg.tie_weights and mcfg.emb_dim != mcfg.hidden_size:
        raise UserError(f"--tie_weights needs --emb_dim equal to --hidden_size (got {mcfg.emb_dim} and {mcfg.hidden_size})")
    cut = list(mcfg.adaptive_cutoffs)
    if cut and (cut != sorted(set(cut)) or cut[0] <= 0):
        raise UserError(f"--adaptive_cutoffs must be positive and strictly increasing (got {' '.join(map(str, cut))})")
    if cut and not (mcfg.adaptive_div >= 1 and mcfg.hidden_size // mcfg.adaptive_div ** len(cut) >= 1):
        raise UserError(f"--adaptive_div must be at least 1 and leave the last cluster at least one dimension "
                        f"(got {mcfg.adaptive_div} for --hidden_size {mcfg.hidden_size} and {len(cut)} cutoffs)")


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr)
    fused = cfg.fused and device.type in ("cuda", "cpu")  # one kernel per step instead of one op per tensor
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **({"fused": True} if fused else {}))


def budget_fraction(cfg: TrainConfig, step: int, epoch_progress: float, elapsed_s: float) -> float:
    """How much of the training budget is used: the largest of the step, time and epoch fractions."""
    fracs = [epoch_progress / cfg.epochs]
    if cfg.max_steps:
        fracs.append(step / cfg.max_steps)
    if cfg.max_minutes:
        fracs.append(elapsed_s / (60 * cfg.max_minutes))
    return min(1.0, max(fracs))


def cosine_lr(cfg: TrainConfig, frac: float) -> float:
    """Cosine annealing from ``cfg.lr`` (frac 0) to ``cfg.min_lr`` (frac 1) (Loshchilov & Hutter, SGDR)."""
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * frac))


def wsd_lr(cfg: TrainConfig, frac: float) -> float:
    """``cfg.lr`` until ``1 - decay_frac`` of the budget, then linear down to ``cfg.min_lr`` (Hu et al. 2024, MiniCPM)."""
    start = 1.0 - cfg.decay_frac
    if frac <= start:
        return cfg.lr
    return cfg.lr + (cfg.min_lr - cfg.lr) * min(1.0, (frac - start) / cfg.decay_frac)


BUDGET_SCHEDULES = {"cosine": cosine_lr, "wsd": wsd_lr}


def _to_device(state, device):
    if state is None:
        return None
    return tuple(s.to(device) for s in state) if isinstance(state, (tuple, list)) else state.to(device)


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    cfg = dataclass_from_args(TrainConfig, args)
    mcfg = dataclass_from_args(LMConfig, args)
    cfg.dataset = cfg.dataset or DEFAULT_DATASET[cfg.vocab_type]
    if cfg.dataset not in FILES:
        raise UserError(f"unknown --dataset {cfg.dataset!r}; choose {', '.join(FILES)}")
    check_flags(cfg, mcfg)
    device = pick_device(args.device)
    tag = run_tag(cfg, mcfg)
    ckpt_dir = Path(cfg.checkpoint_dir)
    last_path, best_path = ckpt_dir / f"last_{tag}.pt", ckpt_dir / f"best_{tag}.pt"

    resume = None
    if cfg.resume:
        resume = load_checkpoint(last_path, kind=KIND)
        saved = resume["config"]["train"]
        diff = [k for k in saved if k not in RESUME_MAY_CHANGE and saved[k] != getattr(cfg, k, None)]
        mdiff = [k for k, v in resume["config"]["model"].items() if k != "vocab_size" and
                 (list(v) if isinstance(v, tuple) else v) != (list(getattr(mcfg, k)) if isinstance(getattr(mcfg, k), tuple) else getattr(mcfg, k))]
        if diff or mdiff:
            shown = ", ".join(f"--{k} {saved.get(k, resume['config']['model'].get(k))!r}" for k in diff + mdiff)
            raise UserError(f"--resume: flags differ from {last_path}; rerun with {shown}")

    generator = seed_everything(cfg.seed)
    corpus = load_corpus(cfg.vocab_type, cfg.dataset, cfg.data_dir or None, cfg.limit_train or None)
    vocab = corpus.vocab
    mcfg.vocab_size = len(vocab)
    if mcfg.adaptive_cutoffs and max(mcfg.adaptive_cutoffs) >= len(vocab):
        raise UserError(f"--adaptive_cutoffs must be below the vocabulary size {len(vocab)}")
    model = RNNLanguageModel(mcfg).to(device)
    optimizer = make_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.lr_decay,
                                                           patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    stream = batchify(corpus.splits["train"], cfg.batch_size).to(device)
    n_batches = num_batches(stream, cfg.seq_len)
    fwd = torch.compile(model) if cfg.compile else model

    pos = {"step": 0, "epoch": 0, "batch": 0, "best": math.inf, "since_best": 0, "train_time": 0.0,
           "last_eval_step": -1, "last_val": math.nan, "stopped": "", "resumed_at": []}
    hidden = None
    if resume is not None:
        if resume["vocab"]["tokens"] != vocab.tokens:
            raise UserError(f"--resume: {last_path} was trained on a different vocabulary (other data or --limit_train?)")
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        pos.update(resume["position"])
        pos["resumed_at"] = [*pos.get("resumed_at", []), pos["step"]]  # reported in the result file
        hidden = _to_device(resume["hidden"], device)
        set_rng_state(resume["rng"], generator)

    run_dir = Path(cfg.run_dir or Path("runs") / tag)
    logger = RunLogger(run_dir)
    save_vocab_pickle(ckpt_dir / vocab_filename(cfg), vocab.to_dict())
    n_params = model.num_params()
    logger.info(f"{tag}: {n_params / 1e6:.2f}M params | vocab {len(vocab)} | train {corpus.splits['train'].numel():,} tokens "
                f"| {n_batches} batches/epoch of {cfg.batch_size}x{cfg.seq_len} | {describe_device(device)}"
                + (f" | resumed at step {pos['step']}" if resume is not None else ""))

    def payload(with_training_state: bool) -> dict:
        d = {"model": unwrap_model(model).state_dict(), "config": {"model": dataclasses.asdict(mcfg), "train": dataclasses.asdict(cfg)},
             "vocab": vocab.to_dict(), "step": pos["step"], "best_metric": pos["best"], "train_wall_s": pos["train_time"]}
        if with_training_state:
            d.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), position=dict(pos),
                     rng=get_rng_state(generator), hidden=RNNLanguageModel.detach_state(hidden))
        return d

    def run_eval(update_schedule: bool) -> float:
        val = evaluate_loss(model, corpus.splits["val"], cfg.batch_size, cfg.seq_len, device)
        pos["last_eval_step"] = pos["step"]
        improved = val < pos["best"]
        pos["last_val"] = val
        if improved:
            pos["best"] = val
            save_checkpoint(best_path, payload(False), KIND)
        if update_schedule:  # only scheduled evaluations drive the LR decay and early stopping
            pos["since_best"] = 0 if improved else pos["since_best"] + 1
            if cfg.lr_schedule == "plateau":
                scheduler.step(val)
            # a resumable checkpoint: a hard kill loses at most one evaluation interval
            pos["train_time"] = time.time() - t_start
            save_checkpoint(last_path, payload(True), KIND)
        logger.log(pos["step"], prefix="eval", epoch=pos["epoch"], **loss_metrics(val, cfg.vocab_type, "val_"),
                   lr=optimizer.param_groups[0]["lr"], best=pos["best"], saved=improved)
        return val

    total = cfg.max_steps or cfg.epochs * n_batches
    bar = progress(total=total, initial=min(pos["step"], total), desc=tag)
    t_start, t_log, tokens_since = time.time() - pos["train_time"], time.time(), 0
    step_s = 0.0  # a running estimate of one step's duration, for the --max_minutes check
    model.train()
    try:
        while pos["epoch"] < cfg.epochs and not pos["stopped"]:
            if pos["batch"] == 0:
                hidden = None  # every epoch starts from a zero state
            while pos["batch"] < n_batches:
                if cfg.max_steps and pos["step"] >= cfg.max_steps:
                    pos["stopped"] = "max_steps"
                elif cfg.max_minutes and time.time() - t_start + step_s >= 60 * cfg.max_minutes:
                    pos["stopped"] = "max_minutes"
                if pos["stopped"]:
                    break
                t_step = time.time()
                x, y = get_batch(stream, pos["batch"], cfg.seq_len)          # (B, T), (B, T)
                hidden = RNNLanguageModel.detach_state(hidden)              # truncated BPTT
                if cfg.lr_schedule in BUDGET_SCHEDULES:
                    frac = budget_fraction(cfg, pos["step"], pos["epoch"] + pos["batch"] / n_batches, t_step - t_start)
                    for group in optimizer.param_groups:
                        group["lr"] = BUDGET_SCHEDULES[cfg.lr_schedule](cfg, frac)
                with autocast(device, args.dtype):
                    _, loss, hidden = fwd(x, y, hidden)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
                optimizer.step()
                dt_step = time.time() - t_step
                step_s = max(dt_step, 0.9 * step_s + 0.1 * dt_step)  # follows slow steps at once, fast ones slowly
                pos["step"] += 1
                pos["batch"] += 1
                tokens_since += y.numel()
                bar.update(1)
                if pos["step"] % cfg.log_interval == 0:
                    dt = time.time() - t_log
                    logger.log(pos["step"], loss=loss.item(), lr=optimizer.param_groups[0]["lr"], grad_norm=float(gnorm),
                               **{"tok/s": tokens_since / dt, "ms/step": 1000 * dt / cfg.log_interval})
                    t_log, tokens_since = time.time(), 0
                if cfg.eval_interval and pos["step"] % cfg.eval_interval == 0:
                    run_eval(update_schedule=True)
                    if cfg.patience and pos["since_best"] >= cfg.patience:
                        pos["stopped"] = "early_stopping"
                        break
                pos["train_time"] = time.time() - t_start
            else:
                pos["epoch"], pos["batch"] = pos["epoch"] + 1, 0
                if not cfg.eval_interval:
                    run_eval(update_schedule=True)
                    if cfg.patience and pos["since_best"] >= cfg.patience:
                        pos["stopped"] = "early_stopping"
    except KeyboardInterrupt:
        pos["train_time"] = time.time() - t_start
        save_checkpoint(last_path, payload(True), KIND)
        bar.close()
        logger.info(f"interrupted at step {pos['step']}; saved {last_path} (continue with --resume)")
        raise
    bar.close()
    pos["train_time"] = time.time() - t_start
    if pos["last_eval_step"] != pos["step"]:
        run_eval(update_schedule=False)  # the final weights count too
    stop_reason = pos["stopped"] or "done"
    if pos["stopped"] in ("max_steps", "max_minutes"):
        pos["stopped"] = ""  # a longer --max_steps / --max_minutes may continue with --resume
    save_checkpoint(last_path, payload(True), KIND)
    train_wall = pos["train_time"]

    # Final numbers come from the best checkpoint, on the full val and test splits.
    model.load_state_dict(load_checkpoint(best_path, kind=KIND)["model"])
    metrics = {}
    for split in ("val", "test"):
        if split in corpus.splits:
            loss = evaluate_loss(model, corpus.splits[split], cfg.batch_size, cfg.seq_len, device)
            metrics.update(loss_metrics(loss, cfg.vocab_type, f"{split}_"))
    primary = "val_loss" if "test" not in corpus.splits else "test_perplexity"
    steps_done = pos["step"]
    record = make_result(
        KIND, "language_modeling", corpus.name, "val+test" if "test" in corpus.splits else "val", metrics,
        params=n_params, train_wall_s=round(train_wall, 1), model=model_label(mcfg, cfg.vocab_type), device=describe_device(device), seed=cfg.seed,
        data_sha256=sha256_files(corpus.files) if corpus.files else None, primary_metric=primary,
        tokens_per_s=round(steps_done * cfg.batch_size * cfg.seq_len / max(train_wall, 1e-9), 1),
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"), last_val_loss=pos["last_val"], steps=steps_done, resumed_at_steps=pos["resumed_at"], epochs_done=pos["epoch"] + pos["batch"] / n_batches, stopped_by=stop_reason,
        config={"model": dataclasses.asdict(mcfg), "train": dataclasses.asdict(cfg)}, checkpoint=str(best_path))
    write_result(record, name=f"train_{tag}")
    return record


if __name__ == "__main__":
    run_cli(main)
