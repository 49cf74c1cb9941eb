"""Train an RNN/LSTM/GRU language model with truncated BPTT (docs/stage2_rnn_lstm.md, section 7).

    cd stage2_rnn_lstm
    python train.py --model_type lstm --vocab_type char --epochs 15          # tiny Shakespeare (bundled)
    python train.py --model_type lstm --vocab_type word --dataset ptb        # needs MY_LLM_DATA or --data_dir
    python train.py ... --max_steps 20 --limit_train 20000                   # a smoke run in seconds
    python train.py ... --resume                                             # continue checkpoints/last_<tag>.pt

Each training stream is cut into B rows (``batchify``); a batch is the next ``seq_len`` tokens of every
row, and the hidden state is carried from one batch to the next but detached, so gradients flow back
at most ``seq_len`` steps (truncated BPTT). Gradients are clipped by global norm.

Learning rate: ``--lr_schedule plateau`` multiplies it by ``lr_decay`` when the validation loss stops
improving (ReduceLROnPlateau); ``cosine`` and ``wsd`` (stable, then a linear decay over the last
``--decay_frac``) are functions of the optimizer step and the schedule's length
(``scripts.schedule.lr_at``). That length is the step limit of ``--epochs`` / ``--max_steps``, or
``--schedule_steps``, or under ``--max_minutes`` the number of steps that fit, estimated once after the
first steps (``scripts.budget.Budget``): the clock decides when to stop, never the learning rate, so
the recorded ``reproduce_command`` gives the same numbers on any machine. Training stops early after
``--patience`` evaluations without improvement.

Read it top to bottom: ``main`` = ``configure`` -> ``build`` -> ``resume_or_start`` -> ``train_loop``
(``should_stop``, ``train_step``, ``evaluate``) -> ``final_result``.

Writes ``<out_dir>/best_<tag>.pt`` (best validation loss), ``<out_dir>/last_<tag>.pt`` (resumable: at
every evaluation, at the end, and at the step boundary after Ctrl-C or ``kill``),
``<out_dir>/<vocab_type>_vocabulary.pkl`` (+ .json), ``runs/<tag>/metrics.jsonl`` and a result file
with validation (and test) loss / perplexity / bits per char of the best checkpoint, the evaluation
history and the reproduce command. ``<tag>`` is e.g. ``lstm_char``, ``gru_word``,
``lstm_word_wikitext2``, ``lstm_char_scratch``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shlex
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scripts.budget import CALIBRATION_STEPS, MARGIN, Budget, reproduce_argv, schedule_warmup
from scripts.checkpoint import load_checkpoint, save_checkpoint, save_vocab_pickle, unwrap_model
from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.config import (
    add_alias,
    add_dataclass_args,
    config_from_dict,
    dataclass_from_args,
    explicit_flags,
    resume_config,
)
from scripts.data import sha256_files
from scripts.device import add_device_args, autocast, describe_device, pick_device
from scripts.flags import DEFAULT_SEED, HELP, check_non_negative, shared
from scripts.interrupt import StopRequest
from scripts.log import RunLogger, progress
from scripts.results import cd_prefix, make_result, peak_rss_mb, write_result
from scripts.schedule import lr_at, set_lr
from scripts.seed import get_rng_state, seed_everything, set_rng_state
from stage2_rnn_lstm.models.language_model import LMConfig, RNNLanguageModel
from stage2_rnn_lstm.utils.data import DEFAULT_DATASET, FILES, Corpus, batchify, get_batch, load_corpus, num_batches
from stage2_rnn_lstm.utils.engine import KIND, evaluate_loss, loss_metrics

STAGE_DIR = Path(__file__).resolve().parent
SCHEDULES = ("plateau", "cosine", "wsd")  # cosine and wsd are scripts.schedule.lr_at; plateau reacts to val loss


@dataclass
class TrainConfig:
    vocab_type: str = field(default="char", metadata={"help": "char or word level", "choices": ["char", "word"]})
    dataset: str = field(default="", metadata={
        "help": "tinyshakespeare | ptb | wikitext2 (default: tinyshakespeare for char, ptb for word)"})
    data_dir: str = field(default="", metadata=shared("data_dir"))
    epochs: int = field(default=15, metadata=shared("epochs"))
    batch_size: int = field(default=64, metadata={"help": "parallel streams B"})
    seq_len: int = field(default=128, metadata={"help": "BPTT length T (tokens per segment)"})
    optimizer: str = field(default="adamw", metadata={"help": "optimizer", "choices": ["adamw", "sgd"]})
    lr: float = field(default=2e-3, metadata={"help": "initial learning rate (e.g. 2e-3 for adamw, 20 for sgd)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    lr_schedule: str = field(default="plateau", metadata={
        "help": "plateau: decay on stalled val loss; cosine: anneal over the schedule's length; "
                "wsd: constant, then linear decay", "choices": list(SCHEDULES)})
    warmup_steps: int = field(default=0, metadata={
        "help": "cosine/wsd: linear LR warm-up over this many steps (under --max_minutes cosine warms up for "
                "at least 20, the steps that fix the schedule's length)"})
    decay_frac: float = field(default=0.2, metadata={
        "help": "wsd: the last fraction of the schedule in which the LR decays"})
    lr_decay: float = field(default=0.5, metadata={"help": "plateau: LR factor when val loss stops improving"})
    plateau_patience: int = field(default=0, metadata={
        "help": "plateau: evaluations without improvement before the LR decays"})
    min_lr: float = field(default=1e-5, metadata={"help": "the LR never decays below this"})
    grad_clip: float = field(default=1.0, metadata=shared("grad_clip"))
    eval_every: int = field(default=0, metadata=shared("eval_every"))
    patience: int = field(default=5, metadata=shared("patience"))
    max_steps: int = field(default=0, metadata=shared("max_steps"))
    max_minutes: float = field(default=0.0, metadata=shared("max_minutes"))
    schedule_steps: int = field(default=0, metadata=shared("schedule_steps"))
    limit_train: int = field(default=0, metadata=shared(
        "limit_train", help=HELP["limit_train"] + "; here: the first N tokens of the training split"))
    seed: int = field(default=DEFAULT_SEED, metadata=shared("seed"))
    log_every: int = field(default=50, metadata=shared("log_every"))
    out_dir: str = field(default="checkpoints", metadata=shared(
        "out_dir", help=HELP["out_dir"] + " (best_<tag>.pt, last_<tag>.pt), and the vocabulary"))
    run_dir: str = field(default="", metadata=shared("run_dir", help=HELP["run_dir"] + " (default: runs/<tag>)"))
    resume: bool = field(default=False, metadata=shared("resume"))
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (opt-in)"})
    fused: bool = field(default=False, metadata={
        "help": "fused AdamW kernel (CUDA and CPU; ignored on MPS): one pass over all parameters per step"})


def _cli_fields(cls, skip: set[str]):
    """``cls`` without the fields in ``skip``, as a dataclass for ``add_dataclass_args``."""
    hints = typing.get_type_hints(cls)
    return dataclasses.make_dataclass(f"{cls.__name__}Flags", [
        (f.name, hints[f.name], field(default=f.default, metadata=f.metadata))
        for f in dataclasses.fields(cls) if f.name not in skip])


ModelFlags = _cli_fields(LMConfig, {"vocab_size"})  # the vocabulary size comes from the data, never a flag
OLD_SPELLINGS = {"checkpoint_dir": "out_dir", "eval_interval": "eval_every", "log_interval": "log_every"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    add_dataclass_args(p, TrainConfig, "training")
    add_dataclass_args(p, ModelFlags, "model")
    add_device_args(p)  # --dtype: autocast in the training forward pass
    for old, new in OLD_SPELLINGS.items():  # spellings that recorded commands used
        add_alias(p, f"--{old}", new, type=str if new == "out_dir" else int)
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
    if not 0 <= mcfg.dropout < 1:
        bad.append(f"--dropout {mcfg.dropout}")
    if not 0 < cfg.lr_decay <= 1:
        bad.append(f"--lr_decay {cfg.lr_decay}")
    if not 0 < cfg.decay_frac <= 1:
        bad.append(f"--decay_frac {cfg.decay_frac}")
    if bad:
        raise UserError(f"impossible value(s): {', '.join(bad)}")
    check_non_negative({k: getattr(cfg, k) for k in ("max_steps", "max_minutes", "schedule_steps", "limit_train",
                                                      "grad_clip", "eval_every", "log_every", "patience",
                                                      "warmup_steps", "plateau_patience")})
    if cfg.warmup_steps and cfg.lr_schedule == "plateau":
        raise UserError("--warmup_steps applies to --lr_schedule cosine or wsd (plateau only decays on stalls)")
    if mcfg.tie_weights and mcfg.emb_dim != mcfg.hidden_size:
        raise UserError(f"--tie_weights needs --emb_dim equal to --hidden_size "
                        f"(got {mcfg.emb_dim} and {mcfg.hidden_size})")
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
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                             **({"fused": True} if fused else {}))


def warmup_used(cfg: TrainConfig) -> int:
    """The warm-up actually used (a time budget lengthens cosine's, see ``scripts.budget``)."""
    return schedule_warmup(cfg.lr_schedule, cfg.warmup_steps, cfg.max_minutes)


# ----- 1. configure: flags, or with --resume the checkpoint's own config ---------------------------

def _saved_flags(config: dict) -> dict:
    """A checkpoint's config as one flat dict of flag values (older spellings renamed)."""
    flat = {OLD_SPELLINGS.get(k, k): v for k, v in {**config["train"], **config["model"]}.items()}
    for f in (*dataclasses.fields(TrainConfig), *dataclasses.fields(LMConfig)):  # flags added since: defaults
        flat.setdefault(f.name, f.default)
    return flat


def configure(argv) -> tuple[TrainConfig, LMConfig, argparse.Namespace, dict | None]:
    """Parse the flags. With ``--resume`` the run continues with the config saved in last_<tag>.pt: typed
    budget/logging flags override it, a typed flag that would change the model or data is an error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = dataclass_from_args(TrainConfig, args)
    mcfg = LMConfig(**dataclasses.asdict(dataclass_from_args(ModelFlags, args)))
    cfg.dataset = cfg.dataset or DEFAULT_DATASET[cfg.vocab_type]
    if cfg.dataset not in FILES:
        raise UserError(f"unknown --dataset {cfg.dataset!r}; choose {', '.join(FILES)}")
    resumed = None
    if cfg.resume:
        last_path = Path(cfg.out_dir) / f"last_{run_tag(cfg, mcfg)}.pt"
        resumed = load_checkpoint(last_path, kind=KIND)
        current = {**dataclasses.asdict(cfg), **dataclasses.asdict(mcfg)}
        merged = resume_config(_saved_flags(resumed["config"]), current, explicit_flags(parser, argv), last_path)
        merged["out_dir"] = cfg.out_dir  # where the checkpoint was found (a run folder may have been moved)
        cfg = config_from_dict(TrainConfig, {f.name: merged[f.name] for f in dataclasses.fields(TrainConfig)})
        mcfg = config_from_dict(LMConfig, {f.name: merged[f.name] for f in dataclasses.fields(LMConfig)})
    check_flags(cfg, mcfg)
    return cfg, mcfg, args, resumed


# ----- 2. build: data, model, optimizer, budget ------------------------------------------------------

@dataclass
class Run:
    """One training run: what ``build`` makes, and ``pos``, the position that last_<tag>.pt saves."""

    cfg: TrainConfig
    mcfg: LMConfig
    device: torch.device
    dtype: str
    tag: str
    corpus: Corpus
    model: RNNLanguageModel
    fwd: torch.nn.Module          # the model, or its torch.compile'd version (--compile)
    optimizer: torch.optim.Optimizer
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau
    stream: torch.Tensor          # (B, N): the training split as B parallel streams
    n_batches: int                # BPTT segments per epoch
    budget: Budget
    pos: dict = field(default_factory=lambda: {
        "step": 0, "epoch": 0, "batch": 0, "tokens": 0, "best": math.inf, "since_best": 0, "last_eval_step": -1,
        "train_time": 0.0, "eval_time": 0.0, "n_evals": 0, "loss_sum": 0.0, "loss_n": 0,
        "history": [], "resumed_at": []})
    hidden: object = None         # the recurrent state carried into the next batch
    logger: RunLogger | None = None
    t_start: float = 0.0          # wall clock at step 0 (a resumed run shifts it by the time already spent)
    t_log: float = 0.0
    tokens_since_log: int = 0

    @property
    def best_path(self) -> Path:
        return Path(self.cfg.out_dir) / f"best_{self.tag}.pt"

    @property
    def last_path(self) -> Path:
        return Path(self.cfg.out_dir) / f"last_{self.tag}.pt"

    def elapsed(self) -> float:
        return time.time() - self.t_start

    def lr_now(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def build(cfg: TrainConfig, mcfg: LMConfig, args: argparse.Namespace) -> Run:
    device = pick_device(args.device)
    seed_everything(cfg.seed)
    corpus = load_corpus(cfg.vocab_type, cfg.dataset, cfg.data_dir or None, cfg.limit_train)
    mcfg.vocab_size = len(corpus.vocab)
    if mcfg.adaptive_cutoffs and max(mcfg.adaptive_cutoffs) >= len(corpus.vocab):
        raise UserError(f"--adaptive_cutoffs must be below the vocabulary size {len(corpus.vocab)}")
    model = RNNLanguageModel(mcfg).to(device)
    optimizer = make_optimizer(model, cfg, device)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.lr_decay,
                                                         patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    stream = batchify(corpus.splits["train"], cfg.batch_size).to(device)
    n_batches = num_batches(stream, cfg.seq_len)
    budget = Budget(epochs=cfg.epochs, steps_per_epoch=n_batches, max_steps=cfg.max_steps,
                    max_minutes=cfg.max_minutes, schedule_steps=cfg.schedule_steps)
    fwd = torch.compile(model) if cfg.compile else model
    return Run(cfg, mcfg, device, args.dtype, run_tag(cfg, mcfg), corpus, model, fwd, optimizer, plateau, stream,
               n_batches, budget)


def payload(run: Run, training_state: bool) -> dict:
    """A checkpoint: weights, config and vocabulary; last_* adds everything an exact resume needs."""
    d = {"model": unwrap_model(run.model).state_dict(),
         "config": {"model": dataclasses.asdict(run.mcfg), "train": dataclasses.asdict(run.cfg)},
         "vocab": run.corpus.vocab.to_dict(), "step": run.pos["step"], "best_metric": run.pos["best"],
         "train_wall_s": run.pos["train_time"]}
    if training_state:
        d.update(optimizer=run.optimizer.state_dict(), scheduler=run.plateau.state_dict(), position=dict(run.pos),
                 rng=get_rng_state(), hidden=RNNLanguageModel.detach_state(run.hidden), budget=run.budget.state())
    return d


def save_last(run: Run) -> None:
    run.pos["train_time"] = run.elapsed()
    save_checkpoint(run.last_path, payload(run, training_state=True), KIND)


def _to_device(state, device):
    if state is None:
        return None
    return tuple(s.to(device) for s in state) if isinstance(state, (tuple, list)) else state.to(device)


# ----- 3. resume_or_start -----------------------------------------------------------------------------

def resume_or_start(run: Run, resumed: dict | None) -> None:
    """Restore weights, optimizer, RNG streams, hidden state and position from last_<tag>.pt, or start fresh."""
    cfg, pos = run.cfg, run.pos
    if resumed is not None:
        if resumed["vocab"]["tokens"] != run.corpus.vocab.tokens:
            raise UserError(f"--resume: {run.last_path} was trained on a different vocabulary (other data?)")
        run.model.load_state_dict(resumed["model"])
        run.optimizer.load_state_dict(resumed["optimizer"])
        run.plateau.load_state_dict(resumed["scheduler"])
        pos.update(resumed["position"])
        pos["resumed_at"] = [*pos["resumed_at"], pos["step"]]  # reported in the result file
        run.hidden = _to_device(resumed["hidden"], run.device)
        set_rng_state(resumed["rng"])
        run.budget = Budget(epochs=cfg.epochs, steps_per_epoch=run.n_batches, max_steps=cfg.max_steps,
                            max_minutes=cfg.max_minutes, schedule_steps=cfg.schedule_steps,
                            state=resumed.get("budget"))
        if cfg.max_minutes and run.budget.planned is None and CALIBRATION_STEPS // 4 <= pos["step"] < CALIBRATION_STEPS:
            # resumed before the plan was made: scripts.budget opens its timing window only at step 5, so reopen it here
            run.budget._window_start = (pos["step"], pos["train_time"] - pos["eval_time"])
        saved_minutes = resumed["config"]["train"].get("max_minutes", 0.0)
        calibration = run.budget.calibration
        if calibration and cfg.max_minutes > saved_minutes > 0:  # a raised time budget: plan the rest anew
            per_step = calibration["s_per_step"] + calibration["eval_s_per_step"]
            planned = pos["step"] + int(MARGIN * max(0.0, 60 * cfg.max_minutes - pos["train_time"]) / per_step)
            run.budget.planned = min(planned, run.budget.step_limit() or planned)
    run_dir = Path(cfg.run_dir or Path("runs") / run.tag)
    run.logger = RunLogger(run_dir, resume_step=pos["step"] if resumed is not None else None)
    save_vocab_pickle(Path(cfg.out_dir) / vocab_filename(cfg), run.corpus.vocab.to_dict())
    train_tokens = run.corpus.splits["train"].numel()
    run.logger.info(f"{run.tag}: {run.model.num_params() / 1e6:.2f}M params | vocab {len(run.corpus.vocab)} | "
                    f"train {train_tokens:,} tokens | {run.n_batches} batches/epoch of {cfg.batch_size}x{cfg.seq_len} "
                    f"| {describe_device(run.device)}" + (f" | resumed at step {pos['step']}" if resumed else ""))
    run.t_start = time.time() - pos["train_time"]
    run.t_log = time.time()


# ----- 4. the training loop ---------------------------------------------------------------------------

def should_stop(run: Run) -> str | None:
    """Why the next step must not start (``None``: go on)."""
    if run.pos["epoch"] >= run.cfg.epochs:
        return "epochs"
    if run.cfg.patience and run.pos["since_best"] >= run.cfg.patience:
        return "early_stopping"
    return run.budget.stop_reason(run.pos["step"], run.elapsed())


def train_loop(run: Run) -> str:
    """One optimizer step at a time; evaluations on schedule; Ctrl-C / kill stop at the step boundary."""
    pos, cfg = run.pos, run.cfg
    bar = progress(total=run.budget.total_steps(), initial=pos["step"], desc=run.tag)
    run.model.train()
    try:
        with StopRequest() as stop:
            while (reason := should_stop(run)) is None:
                train_step(run)
                bar.update(1)
                epoch_ended = pos["batch"] == run.n_batches
                if epoch_ended:
                    pos["epoch"], pos["batch"] = pos["epoch"] + 1, 0
                if (cfg.eval_every and pos["step"] % cfg.eval_every == 0) or (not cfg.eval_every and epoch_ended):
                    evaluate(run, scheduled=True)   # also saves last_* (a hard kill loses one interval at most)
                elif run.budget.needs_calibration(pos["step"]) and not pos["n_evals"]:
                    time_one_evaluation(run)        # the time budget's plan counts evaluation time too
                bar.total = run.budget.total_steps()
                if stop.requested:                  # a whole step is done: a consistent place to stop
                    stop.save_and_stop(lambda: save_last(run), run.last_path, pos["step"], run.logger.info, bar)
            if pos["last_eval_step"] != pos["step"]:
                evaluate(run, scheduled=False)      # the final weights count too
    finally:
        bar.close()
    return reason


def scheduled_lr(run: Run, step: int) -> float:
    cfg = run.cfg
    return lr_at(step, schedule=cfg.lr_schedule, lr=cfg.lr, total_steps=run.budget.total_steps(),
                 warmup_steps=warmup_used(cfg), min_lr=cfg.min_lr, decay_frac=cfg.decay_frac)


def train_step(run: Run) -> None:
    """One truncated-BPTT step on the next segment of every stream."""
    cfg, pos = run.cfg, run.pos
    t0 = time.time()
    if pos["batch"] == 0:
        run.hidden = None  # every epoch starts from a zero state
    x, y = get_batch(run.stream, pos["batch"], cfg.seq_len)          # (B, T), (B, T)
    hidden = RNNLanguageModel.detach_state(run.hidden)              # truncated BPTT: no gradient into the past
    if cfg.lr_schedule != "plateau":
        set_lr(run.optimizer, scheduled_lr(run, pos["step"]))
    with autocast(run.device, run.dtype):
        out = run.fwd(x, y, hidden)
    run.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip or math.inf)
    run.optimizer.step()
    run.hidden = out.state
    loss = out.loss.item()
    pos["step"] += 1
    pos["batch"] += 1
    pos["tokens"] += y.numel()
    pos["loss_sum"] += loss
    pos["loss_n"] += 1
    run.tokens_since_log += y.numel()
    train_s = run.elapsed() - pos["eval_time"]
    run.budget.observe(pos["step"], train_s, time.time() - t0, eval_s_per_step=eval_s_per_step(run))
    if cfg.log_every and pos["step"] % cfg.log_every == 0:
        dt = time.time() - run.t_log
        run.logger.log(pos["step"], loss=loss, lr=run.lr_now(), grad_norm=float(grad_norm),
                       **{"tok/s": run.tokens_since_log / dt, "ms/step": 1000 * dt / cfg.log_every})
        run.t_log, run.tokens_since_log = time.time(), 0


def eval_s_per_step(run: Run) -> float:
    """Evaluation time per training step so far (the time budget plans for it)."""
    if not run.pos["n_evals"]:
        return 0.0
    return run.pos["eval_time"] / run.pos["n_evals"] / (run.cfg.eval_every or run.n_batches)


def time_one_evaluation(run: Run) -> None:
    """What an evaluation costs (a validation pass and a checkpoint write), timed for the time budget's plan.
    Evaluation touches no RNG and no weights, so the run's numbers are the same as without it."""
    t0 = time.time()
    evaluate_loss(run.model, run.corpus.splits["val"], run.cfg.batch_size, run.cfg.seq_len, run.device)
    save_last(run)  # a consistent checkpoint like any other; timed because real evaluations write one too
    run.pos["eval_time"] += time.time() - t0
    run.pos["n_evals"] += 1


def evaluate(run: Run, scheduled: bool) -> None:
    """Validation loss; best_* when it improves; last_* always. Only ``scheduled`` evaluations drive the
    plateau schedule and early stopping (the extra one at the end does not)."""
    cfg, pos = run.cfg, run.pos
    t0 = time.time()
    val = evaluate_loss(run.model, run.corpus.splits["val"], cfg.batch_size, cfg.seq_len, run.device)
    pos["last_eval_step"], pos["train_time"] = pos["step"], run.elapsed()
    improved = val < pos["best"]
    if improved:
        pos["best"] = val
        save_checkpoint(run.best_path, payload(run, training_state=False), KIND)
    if scheduled:
        pos["since_best"] = 0 if improved else pos["since_best"] + 1
        if cfg.lr_schedule == "plateau":
            run.plateau.step(val)
    pos["history"].append({"step": pos["step"], "tokens": pos["tokens"], "wall_s": round(pos["train_time"], 2),
                           "train_loss": pos["loss_sum"] / pos["loss_n"] if pos["loss_n"] else None,
                           **loss_metrics(val, cfg.vocab_type, "val_")})
    pos["loss_sum"], pos["loss_n"] = 0.0, 0
    pos["eval_time"] += time.time() - t0
    pos["n_evals"] += 1
    save_last(run)
    run.logger.log(pos["step"], prefix="eval", epoch=pos["epoch"], **loss_metrics(val, cfg.vocab_type, "val_"),
                   lr=run.lr_now(), best=pos["best"], saved=improved)


# ----- 5. the result ----------------------------------------------------------------------------------

def canonical_argv(run: Run) -> list[str]:
    """The flags that rebuild this run's config from scratch (every value that differs from its default)."""
    words = []
    for cls, obj in ((TrainConfig, run.cfg), (ModelFlags, run.mcfg)):
        for f in dataclasses.fields(cls):
            value = getattr(obj, f.name)
            unchanged = value == f.default or (isinstance(value, tuple) and list(value) == list(f.default))
            if unchanged or f.name in ("resume", "dataset"):
                continue
            if isinstance(value, bool):
                words.append(f"--{f.name}" if value else f"--no-{f.name}")
            elif isinstance(value, tuple):
                words += [f"--{f.name}", *map(str, value)]
            else:
                words += [f"--{f.name}", str(value)]
    if run.cfg.dataset != DEFAULT_DATASET[run.cfg.vocab_type]:
        words[:0] = ["--dataset", run.cfg.dataset]
    if run.dtype != "float32":
        words += ["--dtype", run.dtype]
    return words


def reproduce_command(run: Run) -> str:
    """A from-scratch command that gives the same numbers: no --resume; a time budget becomes
    ``--max_steps S --schedule_steps P`` (plus the warm-up it implied)."""
    words = reproduce_argv(canonical_argv(run), run.pos["step"], run.budget.total_steps(), run.cfg.max_minutes)
    if warmup_used(run.cfg) != run.cfg.warmup_steps:
        words += ["--warmup_steps", str(warmup_used(run.cfg))]
    return cd_prefix() + shlex.join(["python", os.path.relpath(STAGE_DIR / "train.py", Path.cwd().resolve()), *words])


def final_result(run: Run, reason: str) -> tuple[dict, Path]:
    """Loss / perplexity / bpc of the best checkpoint (its val loss was measured when it was saved;
    the test split, if any, is measured now) and everything needed to reproduce and plot the run."""
    cfg, pos, corpus = run.cfg, run.pos, run.corpus
    metrics = loss_metrics(pos["best"], cfg.vocab_type, "val_")
    if "test" in corpus.splits:
        run.model.load_state_dict(load_checkpoint(run.best_path, kind=KIND)["model"])
        test = evaluate_loss(run.model, corpus.splits["test"], cfg.batch_size, cfg.seq_len, run.device)
        metrics.update(loss_metrics(test, cfg.vocab_type, "test_"))
    train_wall = pos["train_time"]
    record = make_result(
        KIND, "language_modeling", corpus.name, "val+test" if "test" in corpus.splits else "val", metrics,
        params=run.model.num_params(), train_wall_s=round(train_wall, 1), model=model_label(run.mcfg, cfg.vocab_type),
        device=describe_device(run.device), seed=cfg.seed,
        data_sha256=sha256_files(corpus.files) if corpus.files else None,
        primary_metric="test_perplexity" if "test" in corpus.splits else "val_loss",
        tokens_per_s=round(pos["tokens"] / max(train_wall, 1e-9), 1), omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
        last_val_loss=pos["history"][-1]["val_loss"], steps=pos["step"], epochs_done=pos["step"] / run.n_batches,
        stopped_by=reason, resumed_at_steps=pos["resumed_at"], history=pos["history"],
        budget={**run.budget.summary(pos["step"]), "warmup_steps": warmup_used(cfg)},
        reproduce_command=reproduce_command(run), peak_rss_mb=peak_rss_mb(),
        config={"model": dataclasses.asdict(run.mcfg), "train": dataclasses.asdict(cfg), "dtype": run.dtype},
        checkpoint=str(run.best_path))
    path = write_result(record, name=f"train_{run.tag}")
    return record, path


def run(argv=None) -> tuple[dict, Path]:
    """The whole run; returns the result record and the path of its result file."""
    cfg, mcfg, args, resumed = configure(argv)
    training = build(cfg, mcfg, args)
    resume_or_start(training, resumed)
    reason = train_loop(training)
    return final_result(training, reason)


def main(argv=None) -> dict:
    return run(argv)[0]


if __name__ == "__main__":
    run_cli(main)
