"""Train the Transformer (Vaswani et al. 2017) for translation on Multi30k (default en->fr).

    python train.py --epochs 30
    python train.py --max_minutes 45 --average_last 5                   # a wall-clock budget, averaged weights
    python train.py --max_steps 50 --limit_train 2000 --vocab_size 2000  # smoke run
    python train.py --resume                                             # continue checkpoints/last_transformer.pt

A joint BPE (``--vocab_size``, Hugging Face ``tokenizers``) is learned on the training split only and saved inside
the checkpoint. Batches hold about ``--max_tokens`` tokens (sentences bucketed by length). AdamW with warm-up then
inverse square root (``--lr_schedule noam``, the paper's eq. 3 scaled so the peak is ``--lr``) or cosine; label
smoothing; dropout; gradient clipping. At every evaluation (``--eval_every`` steps, 0 = every epoch): validation
loss and sacreBLEU (cased, detokenised; greedy unless ``--beam_size``). The best validation BLEU is kept as
``<out_dir>/best_transformer.pt``, the resumable state as ``<out_dir>/last_transformer.pt`` (every evaluation,
the end, and Ctrl-C / kill at the next step boundary); ``--resume`` continues exactly. ``--average_last N`` keeps
the last N evaluation snapshots (``ckpt_step<N>.pt``) and writes their average as ``averaged_transformer.pt``
(also ``python average.py``). A time budget (``--max_minutes``) becomes one fixed step count after the first steps
(``scripts.budget``); the result file's ``reproduce_command`` gives the same numbers without a clock.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from scripts import REPO_ROOT
from scripts.budget import Budget, reproduce_argv, schedule_warmup
from scripts.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.config import add_dataclass_args, config_from_dict, explicit_flags, resume_config
from scripts.data import sha256_files
from scripts.device import DTYPES, add_device_args, autocast, describe_device, pick_device
from scripts.flags import DEFAULT_SEED, check_non_negative, shared
from scripts.interrupt import StopRequest
from scripts.log import RunLogger, progress
from scripts.memory import HeapTrimmer
from scripts.results import make_result, peak_rss_mb, write_result
from scripts.schedule import lr_at, set_lr
from scripts.seed import get_rng_state, seed_everything, set_rng_state
from stage4_transformer.models.transformer import Transformer, TransformerConfig
from stage4_transformer.utils.checkpoint import AVERAGED_NAME, BEST_NAME, KIND, LAST_NAME, average_states, snapshot_name
from stage4_transformer.utils.data import collate_translation, load_multi30k, token_batches
from stage4_transformer.utils.evaluation import evaluate_split
from stage4_transformer.utils.tokenizer import BOS_ID, EOS_ID, MIN_VOCAB, PAD_ID, SubwordTokenizer

# set from the tokenizer, not by flags (--vocab_size is the BPE's target size; the model gets the real size)
MODEL_FROM_TOKENIZER = ("vocab_size", "pad_id", "bos_id", "eos_id")


@dataclass
class TrainConfig:
    src_lang: str = field(default="en", metadata={"help": "source language (en, fr; de with a data dir)"})
    tgt_lang: str = field(default="fr", metadata={"help": "target language"})
    data_dir: str | None = field(default=None, metadata=shared("data_dir"))
    vocab_size: int = field(default=8000, metadata={"help": "joint BPE vocabulary size (trained on train only)"})
    epochs: int = field(default=30, metadata=shared("epochs"))
    max_steps: int = field(default=0, metadata=shared("max_steps"))
    max_minutes: float = field(default=0.0, metadata=shared("max_minutes"))
    schedule_steps: int = field(default=0, metadata=shared("schedule_steps"))
    max_tokens: int = field(default=4096, metadata={"help": "padded source or target tokens per batch"})
    max_train_len: int = field(default=100, metadata={"help": "drop training pairs longer than this (tokens)"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    lr_schedule: str = field(default="noam", metadata={
        "choices": ["noam", "cosine"], "help": "warm-up then inverse square root (the paper), or cosine"})
    warmup_steps: int = field(default=800, metadata={"help": "linear warm-up steps"})
    min_lr: float = field(default=1e-5, metadata={"help": "final LR of the cosine schedule"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (matrices only)"})
    grad_clip: float = field(default=1.0, metadata=shared("grad_clip"))
    average_last: int = field(default=0, metadata={
        "help": "keep the last N evaluation snapshots and write their average (0 = off)"})
    eval_every: int = field(default=0, metadata=shared("eval_every"))
    patience: int = field(default=0, metadata=shared("patience"))
    val_sentences: int = field(default=0, metadata={
        "help": "evaluate on the first N validation sentences only (loss and BLEU; 0 = all)"})
    beam_size: int = field(default=1, metadata={"help": "beam width of the validation BLEU (1 = greedy)"})
    limit_train: int = field(default=0, metadata=shared("limit_train"))
    log_every: int = field(default=50, metadata=shared("log_every"))
    seed: int = field(default=DEFAULT_SEED, metadata=shared("seed"))
    dtype: str = field(default="float32", metadata={"choices": list(DTYPES),
                                                    "help": "autocast precision of the forward pass"})
    fused: bool = field(default=False, metadata={"help": "fused AdamW kernel"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default)"})
    out_dir: str = field(default="checkpoints", metadata=shared("out_dir"))
    run_dir: str = field(default="runs/transformer", metadata=shared("run_dir"))
    resume: bool = field(default=False, metadata=shared("resume"))


def model_fields() -> list:
    return [f for f in dataclasses.fields(TransformerConfig) if f.name not in MODEL_FROM_TOKENIZER]


@dataclass
class Run:
    """Everything the training loop reads and updates (built once by :func:`build`)."""

    cfg: TrainConfig
    mcfg: TransformerConfig
    device: torch.device
    log: RunLogger
    data_sha: str
    tokenizer: SubwordTokenizer
    train_pairs: list
    val_src: list
    val_ref: list
    val_pairs: list
    model: Transformer
    forward: typing.Callable
    opt: torch.optim.Optimizer
    budget: Budget
    steps_per_epoch: int
    warmup: int
    state: dict
    t_start: float = 0.0
    batches: tuple = (-1, [])  # (epoch, that epoch's batches)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def path(self, name: str) -> Path:
        return Path(self.cfg.out_dir) / name

    def payload(self, full: bool = True) -> dict:
        self.state["train_wall_s"] = self.elapsed()
        out = {"model": self.model.state_dict(),
               "config": {"train": dataclasses.asdict(self.cfg), "model": dataclasses.asdict(self.mcfg)},
               "vocab": {"tokenizer": self.tokenizer.to_str()}, "step": self.state["step"],
               "best_metric": self.state["best_metric"], "data_sha256": self.data_sha, "state": dict(self.state)}
        if full:
            out.update({"optimizer": self.opt.state_dict(), "budget": self.budget.state(), "rng": get_rng_state()})
        return out

    def save_last(self) -> None:
        save_checkpoint(self.path(LAST_NAME), self.payload(), KIND)

    def epoch_batches(self) -> list[list[int]]:
        epoch = self.state["epoch"]
        if self.batches[0] != epoch:
            self.batches = (epoch, make_batches(self.train_pairs, self.cfg, epoch))
        return self.batches[1]


def make_batches(pairs: list, cfg: TrainConfig, epoch: int) -> list[list[int]]:
    return token_batches([len(s) for s, _ in pairs], [len(t) + 1 for _, t in pairs], cfg.max_tokens, cfg.seed, epoch)


# ----- 1. flags, and the --resume rule ---------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_dataclass_args(p, TrainConfig, "training")
    group = p.add_argument_group("model")
    hints = typing.get_type_hints(TransformerConfig)
    for f in model_fields():
        kwargs = {"default": f.default, "help": f.metadata.get("help", "")}
        if hints[f.name] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = hints[f.name]
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
        group.add_argument(f"--{f.name}", **kwargs)
    add_device_args(p, dtype=False)  # --dtype is a training field (it changes the numbers)
    return p


def check_config(cfg: TrainConfig, mvals: dict) -> None:
    for name in ("epochs", "max_tokens", "max_train_len", "log_every", "beam_size"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    check_non_negative({k: getattr(cfg, k) for k in ("max_steps", "max_minutes", "schedule_steps", "eval_every",
                                                     "patience", "limit_train", "val_sentences", "warmup_steps",
                                                     "threads", "grad_clip", "average_last", "weight_decay",
                                                     "min_lr")})
    if cfg.lr <= 0:
        raise UserError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.vocab_size < MIN_VOCAB:
        raise UserError(f"--vocab_size must be at least {MIN_VOCAB}, got {cfg.vocab_size}")
    TransformerConfig(**mvals, vocab_size=cfg.vocab_size)  # impossible model configs: one-line UserError
    if cfg.max_train_len >= mvals["max_len"]:
        raise UserError(f"--max_train_len {cfg.max_train_len} must be < --max_len {mvals['max_len']} "
                        f"(the target gets <bos>/<eos>)")


def resume_or_start(argv) -> tuple[TrainConfig, dict, argparse.Namespace, dict | None]:
    """The run's config, its model flags and, with ``--resume``, the checkpoint it continues."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    mvals = {f.name: getattr(args, f.name) for f in model_fields()}
    ckpt = None
    if cfg.resume:
        path = Path(cfg.out_dir) / LAST_NAME
        ckpt = load_checkpoint(path, kind=KIND)
        try:  # a config from another version (unknown or missing keys) is a one-line error
            saved_train = dataclasses.asdict(config_from_dict(TrainConfig, ckpt["config"]["train"]))
            saved_model = {k: ckpt["config"]["model"][k] for k in mvals}
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: checkpoint config lacks {e} (saved by another version?)") from None
        merged = resume_config({**saved_train, **saved_model}, {**dataclasses.asdict(cfg), **mvals},
                               explicit_flags(parser, argv), path)
        merged["out_dir"] = cfg.out_dir  # where the checkpoint was found, even if the folder moved
        cfg = TrainConfig(**{f.name: merged[f.name] for f in dataclasses.fields(TrainConfig)})
        mvals = {k: merged[k] for k in mvals}
    check_config(cfg, mvals)
    return cfg, mvals, args, ckpt


# ----- 2. data, tokenizer, model, optimizer, budget ------------------------------------------------

def encode_pairs(tokenizer, src: list[str], tgt: list[str], max_len: int | None = None) -> list:
    pairs = list(zip(tokenizer.encode_batch(list(src)), tokenizer.encode_batch(list(tgt))))
    if max_len is None:
        return pairs
    return [(s, t) for s, t in pairs if 0 < len(s) <= max_len and 0 < len(t) <= max_len]


def build(cfg: TrainConfig, mvals: dict, device: torch.device, ckpt: dict | None) -> Run:
    """Load the data, learn the BPE on the training split (or take the checkpoint's), build model and budget."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    corpus = load_multi30k(cfg.src_lang, cfg.tgt_lang, cfg.data_dir)
    train_src, train_tgt = corpus.splits["train"]
    if cfg.limit_train:
        train_src, train_tgt = train_src[:cfg.limit_train], train_tgt[:cfg.limit_train]
    if ckpt is not None:
        tokenizer = SubwordTokenizer.from_str(ckpt["vocab"]["tokenizer"])
    else:
        tokenizer = SubwordTokenizer.train(train_src + train_tgt, cfg.vocab_size)
    train_pairs = encode_pairs(tokenizer, train_src, train_tgt, cfg.max_train_len)
    if not train_pairs:
        raise UserError("no training pairs left (check --limit_train / --max_train_len)")
    longest = max(max(len(s), len(t) + 1) for s, t in train_pairs)
    if cfg.max_tokens < longest:
        raise UserError(f"--max_tokens {cfg.max_tokens} is smaller than the longest training sentence ({longest} "
                        f"tokens); raise it or lower --max_train_len")
    val_src, val_ref = corpus.splits["val"]
    if cfg.val_sentences:
        val_src, val_ref = val_src[:cfg.val_sentences], val_ref[:cfg.val_sentences]
    val_pairs = [(s[:mvals["max_len"]], t[:mvals["max_len"] - 1]) for s, t in encode_pairs(tokenizer, val_src, val_ref)
                 if s and t]
    steps_per_epoch = len(make_batches(train_pairs, cfg, 0))

    mcfg = TransformerConfig(**mvals, vocab_size=len(tokenizer), pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)
    model = Transformer(mcfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-9,
                            **({"fused": True} if cfg.fused else {}))
    budget = make_budget(cfg, steps_per_epoch, ckpt)
    state = {"step": 0, "epoch": 0, "batch": 0, "tokens": 0, "best_metric": -1.0, "bad_evals": 0,
             "last_eval_step": 0, "loss_sum": 0.0, "loss_tokens": 0, "history": [], "resumed_at_steps": [],
             "train_wall_s": 0.0, "saved_best": False, "snapshots": []}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state.update(ckpt["state"])
        state["resumed_at_steps"] = state["resumed_at_steps"] + [state["step"]]
        set_rng_state(ckpt["rng"])
    forward = torch.compile(model, dynamic=True) if cfg.compile else model  # token batches vary in shape
    log = RunLogger(cfg.run_dir, resume_step=state["step"] if ckpt is not None else None)
    log.info(f"multi30k {cfg.src_lang}->{cfg.tgt_lang}: train {len(train_pairs)} pairs, val {len(val_pairs)}; "
             f"joint BPE vocabulary {len(tokenizer)}")
    run = Run(cfg, mcfg, device, log, sha256_files(corpus.files), tokenizer, train_pairs, val_src, val_ref,
              val_pairs, model, forward, opt, budget, steps_per_epoch,
              schedule_warmup(cfg.lr_schedule, cfg.warmup_steps, cfg.max_minutes), state)
    if ckpt is not None:
        log.info(f"resumed from {run.path(LAST_NAME)} at epoch {state['epoch']} batch {state['batch']} "
                 f"(step {state['step']})")
    log.info(f"Transformer {mcfg.enc_layers}+{mcfg.dec_layers} layers, d_model {mcfg.d_model}, {mcfg.n_heads} heads "
             f"({mcfg.impl}/{mcfg.attn_impl}): {model.num_params():,} parameters on {describe_device(device)}; "
             f"{steps_per_epoch} steps per epoch, {budget.step_limit() or 'no'} steps at most")
    return run


def make_budget(cfg: TrainConfig, steps_per_epoch: int, ckpt: dict | None) -> Budget:
    return Budget(epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, max_steps=cfg.max_steps,
                  max_minutes=cfg.max_minutes, schedule_steps=cfg.schedule_steps,
                  state=ckpt.get("budget") if ckpt else None)


# ----- 3. one step, one evaluation, the stop rule, the loop ------------------------------------------

def learning_rate(run: Run, step: int) -> float:
    cfg = run.cfg
    return lr_at(step, schedule=cfg.lr_schedule, lr=cfg.lr, total_steps=run.budget.total_steps(),
                 warmup_steps=run.warmup, min_lr=cfg.min_lr)


def train_step(run: Run, batch_ids: list[int]) -> tuple[float, int, float]:
    """One optimizer step on one batch: ``(loss, target tokens, lr)``."""
    cfg = run.cfg
    b = collate_translation([run.train_pairs[i][0] for i in batch_ids], [run.train_pairs[i][1] for i in batch_ids])
    b = {k: v.to(run.device) for k, v in b.items()}
    lr = learning_rate(run, run.state["step"])
    set_lr(run.opt, lr)
    with autocast(run.device, cfg.dtype):
        _, loss = run.forward(b["src"], b["src_mask"], b["tgt_in"], b["tgt_out"])
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:  # 0 = off
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    run.opt.step()
    return loss.item(), int((b["tgt_out"] != PAD_ID).sum()), lr


@torch.no_grad()
def validation_loss(run: Run) -> float:
    """Mean per-token cross-entropy (no label smoothing) of teacher-forced decoding on the validation pairs."""
    model, was = run.model, run.model.training
    model.eval()
    total, count = 0.0, 0
    for ids in token_batches([len(s) for s, _ in run.val_pairs], [len(t) + 1 for _, t in run.val_pairs],
                             max(run.cfg.max_tokens, run.mcfg.max_len), seed=0, epoch=0):
        b = collate_translation([run.val_pairs[i][0] for i in ids], [run.val_pairs[i][1] for i in ids])
        b = {k: v.to(run.device) for k, v in b.items()}
        with autocast(run.device, run.cfg.dtype):
            logits, _ = run.forward(b["src"], b["src_mask"], b["tgt_in"])
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), b["tgt_out"].reshape(-1),
                               ignore_index=PAD_ID, reduction="sum")
        total, count = total + float(loss), count + int((b["tgt_out"] != PAD_ID).sum())
    model.train(was)
    return total / max(count, 1)


def evaluate(run: Run) -> dict:
    """Validation loss and BLEU; keeps the best checkpoint and the snapshots, counts patience, saves last_*."""
    st, cfg = run.state, run.cfg
    val_loss = validation_loss(run)
    with autocast(run.device, cfg.dtype):
        scores, _, _ = evaluate_split(run.model, run.val_src, run.val_ref, run.tokenizer, beam_size=cfg.beam_size,
                                      device=run.device)
    row = {"step": st["step"], "epoch": round(st["epoch"] + st["batch"] / run.steps_per_epoch, 4),
           "tokens": st["tokens"], "wall_s": round(run.elapsed(), 2),
           "train_loss": st["loss_sum"] / max(st["loss_tokens"], 1), "val_loss": val_loss,
           "val_ppl": math.exp(min(val_loss, 50)), "val_bleu": scores["bleu"]}
    st["history"].append(row)
    st["loss_sum"], st["loss_tokens"], st["last_eval_step"] = 0.0, 0, st["step"]
    run.log.log(st["step"], prefix="eval", **{k: v for k, v in row.items() if k != "step"})
    if scores["bleu"] > st["best_metric"]:
        st["best_metric"], st["bad_evals"], st["saved_best"] = scores["bleu"], 0, True
        save_checkpoint(run.path(BEST_NAME), run.payload(), KIND)
        run.log.info(f"new best val BLEU {scores['bleu']:.2f} -> {run.path(BEST_NAME)}")
    else:
        st["bad_evals"] += 1
    if cfg.average_last:
        keep_snapshot(run)
    run.save_last()
    return row


def keep_snapshot(run: Run) -> None:
    """Write ``ckpt_step<N>.pt`` (weights only) and delete the ones older than the last ``--average_last``."""
    st = run.state
    name = snapshot_name(st["step"])
    save_checkpoint(run.path(name), run.payload(full=False), KIND)
    st["snapshots"] = [s for s in st["snapshots"] if s != name] + [name]
    for old in st["snapshots"][:-run.cfg.average_last]:
        run.path(old).unlink(missing_ok=True)
    st["snapshots"] = st["snapshots"][-run.cfg.average_last:]


def should_stop(run: Run) -> str | None:
    """Why the next step must not start (``None``: go on)."""
    st, cfg = run.state, run.cfg
    if st["epoch"] >= cfg.epochs:
        return f"all {cfg.epochs} epochs done"
    if cfg.patience and st["bad_evals"] >= cfg.patience:
        return f"early stopping ({cfg.patience} evaluations without a better val BLEU)"
    return run.budget.stop_reason(st["step"], run.elapsed())


def eval_due(run: Run, epoch_ended: bool) -> bool:
    every = run.cfg.eval_every
    return run.state["step"] % every == 0 if every else epoch_ended


def time_one_evaluation(run: Run) -> float:
    """Seconds per training step that evaluations will cost, from one timed validation pass (loss and BLEU).
    Used once, to plan a time budget; it runs before the clock starts and draws no random numbers."""
    t0 = time.perf_counter()
    validation_loss(run)
    evaluate_split(run.model, run.val_src, run.val_ref, run.tokenizer, beam_size=run.cfg.beam_size,
                   device=run.device)
    return (time.perf_counter() - t0) / (run.cfg.eval_every or run.steps_per_epoch)


def train_loop(run: Run) -> str:
    """Train until :func:`should_stop` says why; Ctrl-C / kill stop at the next step boundary with last_* saved."""
    st, cfg, log = run.state, run.cfg, run.log
    planning = cfg.max_minutes and run.budget.planned is None and not cfg.schedule_steps
    eval_s_per_step = time_one_evaluation(run) if planning else 0.0
    run.t_start = time.perf_counter() - st["train_wall_s"]
    bar = progress(total=run.budget.total_steps(), initial=st["step"], desc="train")
    t_log, tok_log, step_log = time.perf_counter(), 0, st["step"]
    run.model.train()
    heap = HeapTrimmer()
    with StopRequest() as stop:
        while True:
            if stop.requested:  # the step boundary: a consistent state to save
                stop.save_and_stop(run.save_last, run.path(LAST_NAME), st["step"], log.info, bar)
            reason = should_stop(run)
            if reason:
                bar.close()
                return reason
            t_step = time.perf_counter()
            batches = run.epoch_batches()
            loss, n_tok, lr = train_step(run, batches[st["batch"]])
            st["step"], st["batch"], st["tokens"] = st["step"] + 1, st["batch"] + 1, st["tokens"] + n_tok
            st["loss_sum"], st["loss_tokens"] = st["loss_sum"] + loss * n_tok, st["loss_tokens"] + n_tok
            epoch_ended = st["batch"] >= len(batches)
            if epoch_ended:
                st["epoch"], st["batch"] = st["epoch"] + 1, 0
            run.budget.observe(st["step"], run.elapsed(), time.perf_counter() - t_step, eval_s_per_step)
            bar.total = run.budget.total_steps()
            bar.update(1)
            tok_log += n_tok
            heap.step()  # length-bucketed batches change shape every step: free heap pages go back to the system
            if st["step"] % cfg.log_every == 0:
                dt = time.perf_counter() - t_log
                log.log(st["step"], loss=loss, lr=lr, **{"tok/s": tok_log / dt,
                                                         "ms/step": 1000 * dt / (st["step"] - step_log)})
                t_log, tok_log, step_log = time.perf_counter(), 0, st["step"]
            if eval_due(run, epoch_ended):
                t_eval = time.perf_counter()
                evaluate(run)
                t_log += time.perf_counter() - t_eval  # ms/step and tok/s count training only


# ----- 4. averaging and the result file ---------------------------------------------------------------

def average_snapshots(run: Run) -> dict | None:
    """``--average_last N``: average the last N snapshots into averaged_transformer.pt, score it on validation."""
    names = run.state["snapshots"][-run.cfg.average_last:] if run.cfg.average_last else []
    if len(names) < 2:
        return None
    payload = average_states([run.path(n) for n in names])
    save_checkpoint(run.path(AVERAGED_NAME), payload, KIND)
    averaged = Transformer(run.mcfg).to(run.device)
    averaged.load_state_dict(payload["model"])
    with autocast(run.device, run.cfg.dtype):
        scores, _, _ = evaluate_split(averaged, run.val_src, run.val_ref, run.tokenizer, beam_size=run.cfg.beam_size,
                                      device=run.device)
    run.log.info(f"averaged {len(names)} snapshots ({', '.join(names)}) -> {run.path(AVERAGED_NAME)}: "
                 f"val BLEU {scores['bleu']:.2f}")
    return {"checkpoint": str(run.path(AVERAGED_NAME)), "from": names, "val_bleu": scores["bleu"]}


def config_argv(cfg: TrainConfig, mcfg: TransformerConfig) -> list[str]:
    """The flags that give this config from scratch (every value that differs from its default)."""
    out = []
    pairs = [(f, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)]
    pairs += [(f, getattr(mcfg, f.name)) for f in model_fields()]
    for f, value in pairs:
        if f.name == "resume" or value == f.default:
            continue
        if isinstance(value, bool):
            out.append(f"--{f.name}" if value else f"--no-{f.name}")
        else:
            out += [f"--{f.name}", str(value)]
    return out


def command_prefix() -> str:
    try:
        rel = Path.cwd().resolve().relative_to(REPO_ROOT.resolve())
        return f"cd {rel} && " if str(rel) != "." else ""
    except ValueError:
        return ""


def final_result(run: Run, stop_reason: str) -> dict:
    """Evaluate the final weights (if the last step was not evaluated), average, write the result file."""
    st, cfg, mcfg = run.state, run.cfg, run.mcfg
    train_wall = run.elapsed()
    run.log.info(f"stopped: {stop_reason} after {train_wall / 60:.1f} min, step {st['step']}")
    if st["step"] and st["last_eval_step"] != st["step"]:
        evaluate(run)
    if not st["saved_best"]:  # no step at all: keep what we have
        save_checkpoint(run.path(BEST_NAME), run.payload(), KIND)
    run.save_last()
    averaged = average_snapshots(run)
    best = max(st["history"], key=lambda r: r["val_bleu"]) if st["history"] else {}
    metrics = {"val_bleu": best.get("val_bleu", float("nan")), "val_loss": best.get("val_loss", float("nan")),
               "best_step": best.get("step", 0), "epochs": st["epoch"] + st["batch"] / run.steps_per_epoch,
               "steps": st["step"]}
    if averaged:
        metrics["val_bleu_averaged"] = averaged["val_bleu"]
    budget = {**run.budget.summary(st["step"]), "steps_per_epoch": run.steps_per_epoch, "stop_reason": stop_reason,
              "epochs": cfg.epochs, "max_steps": cfg.max_steps, "max_minutes": cfg.max_minutes,
              "warmup_steps": run.warmup}
    argv = reproduce_argv(config_argv(cfg, mcfg), st["step"], run.budget.total_steps(), cfg.max_minutes,
                          warmup_steps=run.warmup if cfg.max_minutes else None)
    record = make_result(KIND, "translation_train", "multi30k", "val", metrics, params=run.model.num_params(),
                         train_wall_s=train_wall, device=describe_device(run.device), seed=cfg.seed,
                         data_sha256=run.data_sha, primary_metric="val_bleu", model="transformer",
                         tokens_per_s=st["tokens"] / max(train_wall, 1e-9),
                         language_pair=f"{cfg.src_lang}-{cfg.tgt_lang}", stop_reason=stop_reason,
                         config={"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(mcfg)},
                         history=st["history"], resumed_at_steps=st["resumed_at_steps"],
                         reproduce_command=command_prefix() + shlex.join(["python", "train.py", *argv]),
                         peak_rss_mb=peak_rss_mb(), budget=budget, averaged=averaged,
                         checkpoint=str(run.path(BEST_NAME)))
    path = write_result(record, name=f"train_transformer_multi30k_{cfg.src_lang}-{cfg.tgt_lang}")
    record["result_file"] = str(path)
    return record


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg, mvals, args, ckpt = resume_or_start(argv)
    run = build(cfg, mvals, pick_device(args.device), ckpt)
    reason = train_loop(run)
    return final_result(run, reason)


if __name__ == "__main__":
    run_cli(main)
