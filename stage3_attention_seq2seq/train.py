"""Train a seq2seq translation model (Bahdanau / Luong attention, or none).

    python train.py --attention_type bahdanau --epochs 30
    python train.py --attention_type none --epochs 10 --max_steps 50        # smoke run
    python train.py --attention_type bahdanau --max_minutes 45               # a wall-clock budget
    python train.py --resume                                                 # continue checkpoints/last_*.pt

At every evaluation (``--eval_every`` steps, 0 = the end of every epoch): validation loss and greedy
validation BLEU (sacreBLEU). The checkpoint with the best validation BLEU is kept as
``<out_dir>/best_attention_model.pt``, the resumable state as ``<out_dir>/last_attention_model.pt``
(written at every evaluation, at the end, and on Ctrl-C / kill at the next step boundary; ``--resume``
continues exactly: weights, optimizer, schedule, RNG and position in the epoch).

Adam with linear warm-up and cosine decay (``scripts.schedule.lr_at``, a function of the step only),
gradient clipping, label smoothing, early stopping on validation BLEU. A time budget
(``--max_minutes``) is turned into one fixed step count after the first steps
(``scripts.budget.Budget``); the result file records it and a ``reproduce_command`` with
``--max_steps``/``--schedule_steps`` that gives the same numbers without a clock.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scripts import REPO_ROOT
from scripts.budget import Budget, reproduce_argv, schedule_warmup
from scripts.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.config import add_alias, add_dataclass_args, config_from_dict, explicit_flags, resume_config
from scripts.data import sha256_files
from scripts.device import add_device_args, describe_device, pick_device
from scripts.flags import DEFAULT_SEED, check_non_negative, shared
from scripts.interrupt import StopRequest
from scripts.log import RunLogger, progress
from scripts.results import make_result, peak_rss_mb, write_result
from scripts.schedule import lr_at, set_lr
from scripts.seed import get_rng_state, seed_everything, set_rng_state
from stage3_attention_seq2seq.models.seq2seq import ModelConfig, Seq2Seq
from stage3_attention_seq2seq.utils.checkpoint import KIND
from stage3_attention_seq2seq.utils.data import collate, encode_pairs, epoch_batches, load_corpus
from stage3_attention_seq2seq.utils.evaluation import evaluate_split
from stage3_attention_seq2seq.utils.tokenizer import PAD_ID, Vocab, tokenize

BEST_NAME, LAST_NAME = "best_attention_model.pt", "last_attention_model.pt"


@dataclass
class TrainConfig:
    dataset: str = field(default="multi30k", metadata={"choices": ["multi30k", "eng_fra"], "help": "parallel corpus"})
    src_lang: str = field(default="en", metadata={"help": "source language (en, fr; de with a data dir)"})
    tgt_lang: str = field(default="fr", metadata={"help": "target language"})
    data_dir: str | None = field(default=None, metadata=shared("data_dir"))
    epochs: int = field(default=30, metadata=shared("epochs"))
    max_steps: int = field(default=0, metadata=shared("max_steps"))
    max_minutes: float = field(default=0.0, metadata=shared("max_minutes"))
    schedule_steps: int = field(default=0, metadata=shared("schedule_steps"))
    batch_size: int = field(default=128, metadata={"help": "sentence pairs per batch"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (Adam)"})
    min_lr_ratio: float = field(default=0.05, metadata={"help": "final LR as a fraction of --lr (cosine decay)"})
    warmup_steps: int = field(default=200, metadata={"help": "linear warm-up steps"})
    grad_clip: float = field(default=1.0, metadata=shared("grad_clip"))
    teacher_forcing: float = field(default=1.0, metadata={
        "help": "probability of feeding the reference token (1 = always)"})
    min_freq: int = field(default=2, metadata={"help": "keep tokens seen this often in train"})
    max_train_len: int = field(default=60, metadata={"help": "drop training pairs longer than this (tokens)"})
    eval_every: int = field(default=0, metadata=shared("eval_every"))
    patience: int = field(default=5, metadata=shared("patience"))
    val_sentences: int = field(default=0, metadata={
        "help": "evaluate on the first N validation sentences only (loss and BLEU; 0 = all; smoke runs)"})
    limit_train: int = field(default=0, metadata=shared("limit_train"))
    log_every: int = field(default=50, metadata=shared("log_every"))
    seed: int = field(default=DEFAULT_SEED, metadata=shared("seed"))
    threads: int = field(default=0, metadata={
        "help": "torch CPU threads (0 = torch's default); 1 is faster on a busy machine"})
    out_dir: str = field(default="checkpoints", metadata=shared("out_dir"))
    run_dir: str = field(default="runs/attention", metadata=shared("run_dir"))
    resume: bool = field(default=False, metadata=shared("resume"))


@dataclass
class Run:
    """Everything the training loop reads and updates (built once by :func:`build`)."""

    cfg: TrainConfig
    mcfg: ModelConfig
    device: torch.device
    log: RunLogger
    corpus_name: str
    data_sha: str
    src_vocab: Vocab
    tgt_vocab: Vocab
    train_pairs: list
    lengths: list
    val_src: list
    val_ref: list
    val_pairs: list
    model: Seq2Seq
    opt: torch.optim.Optimizer
    budget: Budget
    steps_per_epoch: int
    warmup: int
    state: dict
    t_start: float = 0.0
    batches: tuple = (-1, [])  # (epoch, that epoch's batches)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def last_path(self) -> Path:
        return Path(self.cfg.out_dir) / LAST_NAME

    def best_path(self) -> Path:
        return Path(self.cfg.out_dir) / BEST_NAME

    def payload(self) -> dict:
        self.state["train_wall_s"] = self.elapsed()
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "config": {"train": dataclasses.asdict(self.cfg), "model": dataclasses.asdict(self.mcfg)},
                "vocab": {"src": self.src_vocab.itos, "tgt": self.tgt_vocab.itos},
                "vocab_fingerprint": {"src": self.src_vocab.fingerprint(), "tgt": self.tgt_vocab.fingerprint()},
                "state": dict(self.state), "budget": self.budget.state(), "rng": get_rng_state(),
                "step": self.state["step"], "best_metric": self.state["best_metric"], "data_sha256": self.data_sha}

    def save_last(self) -> None:
        save_checkpoint(self.last_path(), self.payload(), KIND)

    def epoch_batches(self) -> list[list[int]]:
        epoch = self.state["epoch"]
        if self.batches[0] != epoch:
            self.batches = (epoch, epoch_batches(len(self.train_pairs), self.lengths, self.cfg.batch_size,
                                                 self.cfg.seed, epoch))
        return self.batches[1]


# ----- 1. flags, and the --resume rule ---------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_dataclass_args(p, TrainConfig, "training")
    add_dataclass_args(p, ModelConfig, "model")
    add_alias(p, "--time_budget_min", "max_minutes", type=float)  # the recorded benchmark commands use it
    add_device_args(p, dtype=False)
    return p


def check_config(cfg: TrainConfig, mcfg: ModelConfig) -> None:
    for name in ("epochs", "batch_size", "min_freq", "max_train_len", "log_every"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    check_non_negative({k: getattr(cfg, k) for k in ("max_steps", "max_minutes", "schedule_steps", "eval_every",
                                                     "patience", "limit_train", "val_sentences", "warmup_steps",
                                                     "threads", "grad_clip")})
    if not 0.0 <= cfg.teacher_forcing <= 1.0:
        raise UserError(f"--teacher_forcing must be in [0, 1], got {cfg.teacher_forcing}")
    if not 0.0 <= mcfg.dropout < 1.0 or not 0.0 <= mcfg.label_smoothing < 1.0:
        raise UserError("--dropout and --label_smoothing must be in [0, 1)")
    if cfg.lr <= 0 or not 0.0 <= cfg.min_lr_ratio <= 1.0:
        raise UserError("--lr must be > 0 and --min_lr_ratio in [0, 1]")
    if min(mcfg.emb_dim, mcfg.enc_hidden, mcfg.dec_hidden, mcfg.attn_dim, mcfg.enc_layers) < 1:
        raise UserError("model sizes must be >= 1")
    if mcfg.attention_type == "luong_dot" and mcfg.dec_hidden != 2 * mcfg.enc_hidden:
        raise UserError(f"luong_dot needs --dec_hidden == 2 * --enc_hidden ({2 * mcfg.enc_hidden}), "
                        f"got {mcfg.dec_hidden}")


def resume_or_start(argv) -> tuple[TrainConfig, ModelConfig, argparse.Namespace, dict | None]:
    """The run's configs and, with ``--resume``, the checkpoint it continues (``scripts.config.resume_config``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg, mcfg = TrainConfig(**_fields(TrainConfig, vars(args))), ModelConfig(**_fields(ModelConfig, vars(args)))
    ckpt = None
    if cfg.resume:
        path = Path(cfg.out_dir) / LAST_NAME
        ckpt = load_checkpoint(path, kind=KIND)
        try:  # a config from another version (unknown or missing keys) is a one-line error
            saved = {**dataclasses.asdict(config_from_dict(TrainConfig, ckpt["config"]["train"])),
                     **dataclasses.asdict(config_from_dict(ModelConfig, ckpt["config"]["model"]))}
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: checkpoint config lacks {e} (saved by another version?)") from None
        current = {**dataclasses.asdict(cfg), **dataclasses.asdict(mcfg)}
        merged = resume_config(saved, current, explicit_flags(parser, argv), path)
        merged["out_dir"] = cfg.out_dir  # where the checkpoint was found, even if the folder moved
        cfg, mcfg = TrainConfig(**_fields(TrainConfig, merged)), ModelConfig(**_fields(ModelConfig, merged))
    check_config(cfg, mcfg)
    return cfg, mcfg, args, ckpt


def _fields(cls, values: dict) -> dict:
    return {f.name: tuple(values[f.name]) if isinstance(values[f.name], list) else values[f.name]
            for f in dataclasses.fields(cls)}


# ----- 2. data, model, optimizer, budget -------------------------------------------------------------

def build(cfg: TrainConfig, mcfg: ModelConfig, device: torch.device, ckpt: dict | None) -> Run:
    """Load the data (vocabularies from the training split only), build the model and the budget."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    corpus = load_corpus(cfg.dataset, cfg.src_lang, cfg.tgt_lang, cfg.data_dir, seed=cfg.seed)
    train_src, train_tgt = corpus.splits["train"]
    if cfg.limit_train:
        train_src, train_tgt = train_src[:cfg.limit_train], train_tgt[:cfg.limit_train]
    if ckpt is not None:
        src_vocab, tgt_vocab = Vocab(ckpt["vocab"]["src"]), Vocab(ckpt["vocab"]["tgt"])
    else:
        src_vocab = Vocab.build((tokenize(s) for s in train_src), cfg.min_freq)
        tgt_vocab = Vocab.build((tokenize(s) for s in train_tgt), cfg.min_freq)
    train_pairs = encode_pairs(train_src, train_tgt, src_vocab, tgt_vocab, cfg.max_train_len)
    if not train_pairs:
        raise UserError("no training pairs left (check --limit_train / --max_train_len)")
    val_src, val_ref = corpus.splits["val"]
    if cfg.val_sentences:
        val_src, val_ref = val_src[:cfg.val_sentences], val_ref[:cfg.val_sentences]
    val_pairs = encode_pairs(val_src, val_ref, src_vocab, tgt_vocab)
    lengths = [len(s) for s, _ in train_pairs]
    steps_per_epoch = len(epoch_batches(len(train_pairs), lengths, cfg.batch_size, cfg.seed, 0))

    model = Seq2Seq(mcfg, len(src_vocab), len(tgt_vocab)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    budget = make_budget(cfg, steps_per_epoch, ckpt)
    changed = None
    if ckpt is not None:  # a budget raised on --resume stretches the LR schedule from here on
        before = make_budget(config_from_dict(TrainConfig, ckpt["config"]["train"]), steps_per_epoch, ckpt)
        if before.total_steps() != budget.total_steps():
            changed = {"at_step": ckpt["state"]["step"], "schedule_steps_before": before.total_steps(),
                       "schedule_steps_after": budget.total_steps()}
    state = {"step": 0, "epoch": 0, "batch": 0, "tokens": 0, "best_metric": -1.0, "bad_evals": 0,
             "last_eval_step": 0, "loss_sum": 0.0, "loss_tokens": 0, "history": [], "resumed_at_steps": [],
             "train_wall_s": 0.0, "saved_best": False}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state.update(ckpt["state"])
        state["resumed_at_steps"] = state["resumed_at_steps"] + [state["step"]]
        set_rng_state(ckpt["rng"])
    log = RunLogger(cfg.run_dir, resume_step=state["step"] if ckpt is not None else None)
    log.info(f"{corpus.name} {cfg.src_lang}->{cfg.tgt_lang}: train {len(train_pairs)} pairs, val {len(val_pairs)}; "
             f"vocab src {len(src_vocab)} tgt {len(tgt_vocab)} (min_freq {cfg.min_freq})")
    run = Run(cfg, mcfg, device, log, corpus.name, sha256_files(corpus.files), src_vocab, tgt_vocab, train_pairs,
              lengths, val_src, val_ref, val_pairs, model, opt, budget, steps_per_epoch,
              schedule_warmup("cosine", cfg.warmup_steps, cfg.max_minutes), state)
    if ckpt is not None:
        log.info(f"resumed from {run.last_path()} at epoch {state['epoch']} batch {state['batch']} "
                 f"(step {state['step']})")
    if changed:
        state["budget_changes"] = state.get("budget_changes", []) + [changed]
        log.info(f"note: the budget changed on --resume: the LR schedule now spans {changed['schedule_steps_after']} "
                 f"steps instead of {changed['schedule_steps_before']} (the result's reproduce_command gives a run "
                 f"with the new length from the start, so it will not match this one exactly)")
    log.info(f"model {mcfg.attention_type}: {model.num_params():,} parameters on {describe_device(device)}; "
             f"{steps_per_epoch} steps per epoch, {budget.step_limit() or 'no'} steps at most")
    return run


def make_budget(cfg: TrainConfig, steps_per_epoch: int, ckpt: dict | None) -> Budget:
    return Budget(epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, max_steps=cfg.max_steps,
                  max_minutes=cfg.max_minutes, schedule_steps=cfg.schedule_steps,
                  state=ckpt.get("budget") if ckpt else None)


# ----- 3. one step, one evaluation, the stop rule, the loop ------------------------------------------

def clip_gradients(parameters, max_norm: float) -> None:
    """Clip the global gradient norm to ``max_norm``; 0 = off (``check_config`` refuses negative values)."""
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def train_step(run: Run, batch_ids: list[int]) -> tuple[float, int, float]:
    """One optimizer step on one batch: ``(loss, target tokens, lr)``."""
    cfg, model = run.cfg, run.model
    b = {k: v.to(run.device) for k, v in collate([run.train_pairs[i] for i in batch_ids]).items()}
    lr = lr_at(run.state["step"], schedule="cosine", lr=cfg.lr, total_steps=run.budget.total_steps(),
               warmup_steps=run.warmup, min_lr=cfg.lr * cfg.min_lr_ratio)
    set_lr(run.opt, lr)
    _, loss = model(b["src"], b["src_len"], b["tgt_in"], b["tgt_out"], teacher_forcing=cfg.teacher_forcing)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(model.parameters(), cfg.grad_clip)
    run.opt.step()
    return loss.item(), int((b["tgt_out"] != PAD_ID).sum()), lr


@torch.inference_mode()
def validation_loss(model, pairs, batch_size, device) -> float:
    """Mean per-token cross-entropy (no label smoothing) of teacher-forced decoding."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for k in range(0, len(pairs), batch_size):
        b = {key: v.to(device) for key, v in collate(pairs[k:k + batch_size]).items()}
        logits, _ = model(b["src"], b["src_len"], b["tgt_in"])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), b["tgt_out"].reshape(-1),
                                                 ignore_index=PAD_ID, reduction="sum")
        total, count = total + float(loss), count + int((b["tgt_out"] != PAD_ID).sum())
    model.train(was)
    return total / max(count, 1)


def evaluate(run: Run) -> dict:
    """Validation loss and greedy BLEU; keeps the best checkpoint, counts patience, saves last_*."""
    st, cfg = run.state, run.cfg
    val_loss = validation_loss(run.model, run.val_pairs, cfg.batch_size, run.device)
    scores, _, _ = evaluate_split(run.model, run.val_src, run.val_ref, run.src_vocab, run.tgt_vocab, beam_size=1,
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
        save_checkpoint(run.best_path(), run.payload(), KIND)
        run.log.info(f"new best val BLEU {scores['bleu']:.2f} -> {run.best_path()}")
    else:
        st["bad_evals"] += 1
    run.save_last()
    return row


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
    """Seconds per training step that evaluations will cost, from one timed validation-loss pass (greedy BLEU
    decoding of n sentences costs about as much as the loss pass over them). Used once, to plan a time budget;
    it runs before the clock starts and draws no random numbers, so it does not change the run."""
    t0 = time.perf_counter()
    validation_loss(run.model, run.val_pairs, run.cfg.batch_size, run.device)
    loss_s = time.perf_counter() - t0
    eval_s = loss_s * (1 + len(run.val_src) / max(len(run.val_pairs), 1))
    return eval_s / (run.cfg.eval_every or run.steps_per_epoch)


def train_loop(run: Run) -> str:
    """Train until :func:`should_stop` says why; Ctrl-C / kill stop at the next step boundary with last_* saved."""
    st, cfg, log = run.state, run.cfg, run.log
    planning = cfg.max_minutes and run.budget.planned is None and not cfg.schedule_steps
    eval_s_per_step = time_one_evaluation(run) if planning else 0.0
    run.t_start = time.perf_counter() - st["train_wall_s"]
    bar = progress(total=run.budget.total_steps(), initial=st["step"], desc="train")
    t_log, tok_log, step_log = time.perf_counter(), 0, st["step"]
    run.model.train()
    with StopRequest() as stop:
        while True:
            if stop.requested:  # the step boundary: a consistent state to save
                stop.save_and_stop(run.save_last, run.last_path(), st["step"], log.info, bar)
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
            if st["step"] % cfg.log_every == 0:
                dt = time.perf_counter() - t_log
                log.log(st["step"], loss=loss, lr=lr, **{"tok/s": tok_log / dt,
                                                         "ms/step": 1000 * dt / (st["step"] - step_log)})
                t_log, tok_log, step_log = time.perf_counter(), 0, st["step"]
            if eval_due(run, epoch_ended):
                t_eval = time.perf_counter()
                evaluate(run)
                t_log += time.perf_counter() - t_eval  # ms/step and tok/s count training only


# ----- 4. the result file ------------------------------------------------------------------------

def config_argv(cfg: TrainConfig, mcfg: ModelConfig) -> list[str]:
    """The flags that give this config from scratch (every value that differs from its default)."""
    out = []
    for conf in (cfg, mcfg):
        for f in dataclasses.fields(conf):
            value = getattr(conf, f.name)
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
    """Evaluate the final weights (if the last step was not evaluated), write the result file."""
    st, cfg, mcfg = run.state, run.cfg, run.mcfg
    train_wall = run.elapsed()
    run.log.info(f"stopped: {stop_reason} after {train_wall / 60:.1f} min, step {st['step']}")
    if st["step"] and st["last_eval_step"] != st["step"]:
        evaluate(run)
    if not st["saved_best"]:  # no step at all: keep what we have
        save_checkpoint(run.best_path(), run.payload(), KIND)
    run.save_last()
    best = max(st["history"], key=lambda r: r["val_bleu"]) if st["history"] else {}
    metrics = {"val_bleu": best.get("val_bleu", float("nan")), "val_loss": best.get("val_loss", float("nan")),
               "best_step": best.get("step", 0), "epochs": st["epoch"] + st["batch"] / run.steps_per_epoch,
               "steps": st["step"]}
    budget = {**run.budget.summary(st["step"]), "steps_per_epoch": run.steps_per_epoch, "stop_reason": stop_reason,
              "epochs": cfg.epochs, "max_steps": cfg.max_steps, "max_minutes": cfg.max_minutes,
              "warmup_steps": run.warmup}
    argv = reproduce_argv(config_argv(cfg, mcfg), st["step"], run.budget.total_steps(), cfg.max_minutes)
    record = make_result(KIND, "translation_train", run.corpus_name, "val", metrics, params=run.model.num_params(),
                         train_wall_s=train_wall, device=describe_device(run.device), seed=cfg.seed,
                         data_sha256=run.data_sha, primary_metric="val_bleu", model=mcfg.attention_type,
                         tokens_per_s=st["tokens"] / max(train_wall, 1e-9),
                         language_pair=f"{cfg.src_lang}-{cfg.tgt_lang}", stop_reason=stop_reason,
                         config={"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(mcfg)},
                         history=st["history"], resumed_at_steps=st["resumed_at_steps"],
                         budget_changes_on_resume=st.get("budget_changes", []),
                         reproduce_command=command_prefix() + shlex.join(["python", "train.py", *argv]),
                         peak_rss_mb=peak_rss_mb(), budget=budget,
                         checkpoint=str(run.best_path()))
    path = write_result(record, name=f"train_{mcfg.attention_type}_{run.corpus_name}_{cfg.src_lang}-{cfg.tgt_lang}")
    record["result_file"] = str(path)
    return record


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg, mcfg, args, ckpt = resume_or_start(argv)
    if ckpt is None and cfg.warmup_steps != schedule_warmup("cosine", cfg.warmup_steps, cfg.max_minutes):
        # a time budget times its first steps inside the warm-up; the config (and the reproduce command) says so
        cfg = dataclasses.replace(cfg, warmup_steps=schedule_warmup("cosine", cfg.warmup_steps, cfg.max_minutes))
    run = build(cfg, mcfg, pick_device(args.device), ckpt)
    reason = train_loop(run)
    return final_result(run, reason)


if __name__ == "__main__":
    run_cli(main)
