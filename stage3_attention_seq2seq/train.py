"""Train a seq2seq translation model (Bahdanau / Luong attention, or none).

    python train.py --attention_type bahdanau --epochs 30
    python train.py --attention_type none --epochs 10 --max_steps 50        # smoke run
    python train.py --resume                                                 # continue checkpoints/last_*.pt

Every epoch: validation loss and greedy validation BLEU (sacreBLEU); the checkpoint with the best
validation BLEU is kept at ``--out`` (default ``checkpoints/best_attention_model.pt``), the latest
state at ``checkpoints/last_<name>`` (also written on Ctrl-C; ``--resume`` continues exactly:
weights, optimizer, schedule, RNG and position in the epoch). Adam with linear warm-up and cosine
decay, gradient clipping, label smoothing, early stopping on validation BLEU, and an optional
wall-clock budget (``--time_budget_min``).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from scripts.checkpoint import load_checkpoint, save_checkpoint
from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.config import add_dataclass_args, config_from_dict, dataclass_from_args
from scripts.data import sha256_files
from scripts.device import add_device_args, describe_device, pick_device
from scripts.log import RunLogger, progress
from scripts.results import make_result, write_result
from scripts.seed import get_rng_state, seed_everything, set_rng_state
from stage3_attention_seq2seq.models.seq2seq import ModelConfig, Seq2Seq
from stage3_attention_seq2seq.utils.checkpoint import KIND
from stage3_attention_seq2seq.utils.data import collate, encode_pairs, epoch_batches, load_corpus
from stage3_attention_seq2seq.utils.evaluation import evaluate_split
from stage3_attention_seq2seq.utils.tokenizer import PAD_ID, Vocab, tokenize

STAGE_DIR = Path(__file__).resolve().parent


@dataclass
class TrainConfig:
    dataset: str = field(default="multi30k", metadata={"choices": ["multi30k", "eng_fra"], "help": "parallel corpus"})
    src_lang: str = field(default="en", metadata={"help": "source language (en, fr; de with a data dir)"})
    tgt_lang: str = field(default="fr", metadata={"help": "target language"})
    data_dir: str | None = field(default=None, metadata={"help": "folder with multi30k/ or eng_fra/ (else $MY_LLM_DATA, else bundled)"})
    epochs: int = field(default=30, metadata={"help": "training epochs (the LR schedule spans them all)"})
    batch_size: int = field(default=128, metadata={"help": "sentence pairs per batch"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (Adam)"})
    min_lr_ratio: float = field(default=0.05, metadata={"help": "final LR as a fraction of --lr (cosine decay)"})
    warmup_steps: int = field(default=200, metadata={"help": "linear warm-up steps"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the gradient norm to this"})
    teacher_forcing: float = field(default=1.0, metadata={"help": "probability of feeding the reference token (1 = always)"})
    min_freq: int = field(default=2, metadata={"help": "keep tokens seen this often in train"})
    max_train_len: int = field(default=60, metadata={"help": "drop training pairs longer than this (tokens)"})
    patience: int = field(default=5, metadata={"help": "stop after this many epochs without a better val BLEU"})
    val_bleu_sentences: int = field(default=0, metadata={"help": "val sentences for BLEU each epoch (0 = all)"})
    time_budget_min: float = field(default=0.0, metadata={"help": "stop training after this many minutes (0 = no limit)"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimizer steps (smoke runs; 0 = no limit)"})
    limit_train: int = field(default=0, metadata={"help": "use only the first N training pairs (0 = all)"})
    log_every: int = field(default=50, metadata={"help": "log a line every N steps"})
    seed: int = field(default=0, metadata={"help": "random seed (init, data order, dropout)"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch's default); 1 is faster on a busy machine"})
    out: str = field(default="checkpoints/best_attention_model.pt", metadata={"help": "best checkpoint path"})
    run_dir: str = field(default="runs/attention", metadata={"help": "metrics.jsonl goes here"})
    resume: bool = field(default=False, metadata={"help": "continue from checkpoints/last_<out name>"})


def last_path(cfg: TrainConfig) -> Path:
    out = Path(cfg.out)
    return out.with_name("last_" + out.name.replace("best_", ""))


def lr_at(step: int, total: int, cfg: TrainConfig, elapsed_s: float = 0.0) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``lr * min_lr_ratio`` at ``total`` steps.

    With ``--time_budget_min`` the decay also tracks the fraction of the budget used, whichever is
    further along ("budgeted training", Li et al. 2020): the LR reaches its floor when time is up
    even if fewer steps than planned fit. (Such a run is not bit-exactly resumable.)
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    if cfg.time_budget_min:
        frac = max(frac, min(1.0, elapsed_s / (cfg.time_budget_min * 60)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def check_config(cfg: TrainConfig, mcfg: ModelConfig) -> None:
    for name in ("epochs", "batch_size", "min_freq", "max_train_len", "log_every"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("max_steps", "limit_train", "val_bleu_sentences", "warmup_steps", "patience", "threads"):
        if getattr(cfg, name) < 0:
            raise UserError(f"--{name} must be >= 0, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.teacher_forcing <= 1.0:
        raise UserError(f"--teacher_forcing must be in [0, 1], got {cfg.teacher_forcing}")
    if not 0.0 <= mcfg.dropout < 1.0 or not 0.0 <= mcfg.label_smoothing < 1.0:
        raise UserError("--dropout and --label_smoothing must be in [0, 1)")
    if cfg.lr <= 0 or cfg.time_budget_min < 0:
        raise UserError("--lr must be > 0 and --time_budget_min >= 0")
    if min(mcfg.emb_dim, mcfg.enc_hidden, mcfg.dec_hidden, mcfg.attn_dim, mcfg.enc_layers) < 1:
        raise UserError("model sizes must be >= 1")
    if mcfg.attention_type == "luong_dot" and mcfg.dec_hidden != 2 * mcfg.enc_hidden:
        raise UserError(f"luong_dot needs --dec_hidden == 2 * --enc_hidden ({2 * mcfg.enc_hidden}), got {mcfg.dec_hidden}")


@torch.inference_mode()
def validation_loss(model, pairs, batch_size, device) -> float:
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for k in range(0, len(pairs), batch_size):
        b = {key: v.to(device) for key, v in collate(pairs[k:k + batch_size]).items()}
        logits, _ = model(b["src"], b["src_len"], b["tgt_in"])
        n = int((b["tgt_out"] != PAD_ID).sum())
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), b["tgt_out"].reshape(-1),
                                                 ignore_index=PAD_ID, reduction="sum")
        total, count = total + float(loss), count + n
    model.train(was)
    return total / max(count, 1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_dataclass_args(p, TrainConfig, "training")
    add_dataclass_args(p, ModelConfig, "model")
    add_device_args(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    cfg, mcfg = dataclass_from_args(TrainConfig, args), dataclass_from_args(ModelConfig, args)
    check_config(cfg, mcfg)
    device = pick_device(args.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    resume_ckpt = None
    if cfg.resume:
        resume_ckpt = load_checkpoint(last_path(cfg), kind=KIND)
        saved = config_from_dict(TrainConfig, resume_ckpt["config"]["train"])
        # the run continues with its saved settings; only stopping limits may change
        cfg = dataclasses.replace(saved, max_steps=cfg.max_steps, time_budget_min=cfg.time_budget_min, resume=True)
        mcfg = config_from_dict(ModelConfig, resume_ckpt["config"]["model"])
    gen = seed_everything(cfg.seed)
    log = RunLogger(cfg.run_dir)

    # ---- data: vocabularies from the training split only ----
    corpus = load_corpus(cfg.dataset, cfg.src_lang, cfg.tgt_lang, cfg.data_dir, seed=cfg.seed)
    train_src, train_tgt = corpus.splits["train"]
    if cfg.limit_train:
        train_src, train_tgt = train_src[:cfg.limit_train], train_tgt[:cfg.limit_train]
    if resume_ckpt is not None:
        src_vocab, tgt_vocab = Vocab(resume_ckpt["vocab"]["src"]), Vocab(resume_ckpt["vocab"]["tgt"])
    else:
        src_vocab = Vocab.build((tokenize(s) for s in train_src), cfg.min_freq)
        tgt_vocab = Vocab.build((tokenize(s) for s in train_tgt), cfg.min_freq)
    train_pairs = encode_pairs(train_src, train_tgt, src_vocab, tgt_vocab, cfg.max_train_len)
    if not train_pairs:
        raise UserError("no training pairs left (check --limit_train / --max_train_len)")
    val_src, val_ref = corpus.splits["val"]
    val_pairs = encode_pairs(val_src, val_ref, src_vocab, tgt_vocab)
    n_bleu = cfg.val_bleu_sentences or len(val_src)
    data_sha = sha256_files(corpus.files)
    log.info(f"{corpus.name} {cfg.src_lang}->{cfg.tgt_lang}: train {len(train_pairs)} pairs, val {len(val_src)}; "
             f"vocab src {len(src_vocab)} tgt {len(tgt_vocab)} (min_freq {cfg.min_freq})")

    # ---- model, optimizer, schedule ----
    model = Seq2Seq(mcfg, len(src_vocab), len(tgt_vocab)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    lengths = [len(s) for s, _ in train_pairs]
    steps_per_epoch = math.ceil(len(train_pairs) / cfg.batch_size)  # upper bound; pools may add a few
    n_batches = [len(epoch_batches(len(train_pairs), lengths, cfg.batch_size, cfg.seed, 0))]
    total_steps = cfg.epochs * n_batches[0]
    state = {"step": 0, "epoch": 0, "batch": 0, "best_metric": -1.0, "bad_epochs": 0, "history": [],
             "train_wall_s": 0.0, "tokens": 0, "saved_best": False}
    if resume_ckpt is not None:
        model.load_state_dict(resume_ckpt["model"])
        opt.load_state_dict(resume_ckpt["optimizer"])
        state.update(resume_ckpt["state"])
        set_rng_state(resume_ckpt["rng"], gen)
        log.info(f"resumed from {last_path(cfg)} at epoch {state['epoch']} batch {state['batch']} (step {state['step']})")
    log.info(f"model {mcfg.attention_type}: {model.num_params():,} parameters on {describe_device(device)}; "
             f"{n_batches[0]} batches/epoch, {total_steps} steps planned")

    def payload():
        return {"model": model.state_dict(), "optimizer": opt.state_dict(),
                "config": {"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(mcfg)},
                "vocab": {"src": src_vocab.itos, "tgt": tgt_vocab.itos},
                "vocab_fingerprint": {"src": src_vocab.fingerprint(), "tgt": tgt_vocab.fingerprint()},
                "state": dict(state), "rng": get_rng_state(gen), "step": state["step"],
                "best_metric": state["best_metric"], "data_sha256": data_sha}

    t_start = time.perf_counter() - state["train_wall_s"]
    stop_reason = None
    model.train()
    try:
        while state["epoch"] < cfg.epochs and stop_reason is None:
            batches = epoch_batches(len(train_pairs), lengths, cfg.batch_size, cfg.seed, state["epoch"])
            bar = progress(total=len(batches), initial=state["batch"], desc=f"epoch {state['epoch'] + 1}/{cfg.epochs}")
            epoch_loss, epoch_tokens = 0.0, 0
            t_log, tok_log = time.perf_counter(), 0
            while state["batch"] < len(batches):
                t_step = time.perf_counter()
                b = {k: v.to(device) for k, v in collate([train_pairs[i] for i in batches[state["batch"]]]).items()}
                lr = lr_at(state["step"], total_steps, cfg, time.perf_counter() - t_start)
                for g in opt.param_groups:
                    g["lr"] = lr
                _, loss = model(b["src"], b["src_len"], b["tgt_in"], b["tgt_out"], teacher_forcing=cfg.teacher_forcing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                n_tok = int((b["tgt_out"] != PAD_ID).sum())
                state["step"] += 1
                state["batch"] += 1
                state["tokens"] += n_tok
                epoch_loss, epoch_tokens, tok_log = epoch_loss + loss.item() * n_tok, epoch_tokens + n_tok, tok_log + n_tok
                bar.update(1)
                if state["step"] % cfg.log_every == 0:
                    dt = time.perf_counter() - t_log
                    log.log(state["step"], loss=loss.item(), lr=lr, **{"tok/s": tok_log / dt, "ms/step": 1000 * dt / cfg.log_every})
                    t_log, tok_log = time.perf_counter(), 0
                now = time.perf_counter()
                if cfg.max_steps and state["step"] >= cfg.max_steps:
                    stop_reason = f"max_steps {cfg.max_steps}"
                elif cfg.time_budget_min and (now - t_start) + (now - t_step) >= cfg.time_budget_min * 60:
                    # stop when one more step of the same length would overrun the budget
                    stop_reason = f"time budget {cfg.time_budget_min} min"
                if stop_reason:
                    break
            bar.close()
            if state["batch"] >= len(batches):  # a full epoch: validate, keep the best
                state["epoch"] += 1
                state["batch"] = 0
                val_loss = validation_loss(model, val_pairs, cfg.batch_size, device)
                scores, _, _ = evaluate_split(model, val_src[:n_bleu], val_ref[:n_bleu], src_vocab, tgt_vocab,
                                              beam_size=1, device=device)
                row = {"epoch": state["epoch"], "train_loss": epoch_loss / max(epoch_tokens, 1), "val_loss": val_loss,
                       "val_ppl": math.exp(min(val_loss, 50)), "val_bleu": scores["bleu"],
                       "elapsed_s": time.perf_counter() - t_start}
                state["history"].append(row)
                log.log(state["step"], prefix="eval", **row)
                state["train_wall_s"] = time.perf_counter() - t_start
                if scores["bleu"] > state["best_metric"]:
                    state["best_metric"], state["bad_epochs"] = scores["bleu"], 0
                    state["saved_best"] = True
                    save_checkpoint(cfg.out, payload(), KIND)
                    log.info(f"new best val BLEU {scores['bleu']:.2f} -> {cfg.out}")
                else:
                    state["bad_epochs"] += 1
                    if cfg.patience and state["bad_epochs"] >= cfg.patience:
                        stop_reason = f"early stopping ({cfg.patience} epochs without a better val BLEU)"
                if cfg.time_budget_min and time.perf_counter() - t_start >= cfg.time_budget_min * 60:
                    stop_reason = stop_reason or f"time budget {cfg.time_budget_min} min"
            state["train_wall_s"] = time.perf_counter() - t_start
            save_checkpoint(last_path(cfg), payload(), KIND)
    except KeyboardInterrupt:
        state["train_wall_s"] = time.perf_counter() - t_start
        save_checkpoint(last_path(cfg), payload(), KIND)
        log.info(f"interrupted: saved {last_path(cfg)}; continue with --resume")
        raise
    train_wall = time.perf_counter() - t_start
    log.info(f"stopped: {stop_reason or 'all epochs done'} after {train_wall / 60:.1f} min, step {state['step']}")
    if not state["saved_best"]:  # stopped before the first epoch ended: keep what we have
        state["saved_best"] = True
        save_checkpoint(cfg.out, payload(), KIND)

    best = max(state["history"], key=lambda r: r["val_bleu"]) if state["history"] else {}
    metrics = {"val_bleu": best.get("val_bleu", float("nan")), "val_loss": best.get("val_loss", float("nan")),
               "best_epoch": best.get("epoch", 0), "epochs": state["epoch"], "steps": state["step"]}
    record = make_result(KIND, "translation_train", corpus.name, "val", metrics, params=model.num_params(),
                         train_wall_s=train_wall, device=describe_device(device), seed=cfg.seed, data_sha256=data_sha,
                         primary_metric="val_bleu", model=mcfg.attention_type, tokens_per_s=state["tokens"] / max(train_wall, 1e-9),
                         language_pair=f"{cfg.src_lang}-{cfg.tgt_lang}", stop_reason=stop_reason or "all epochs done",
                         config={"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(mcfg)},
                         history=state["history"])
    write_result(record, name=f"train_{mcfg.attention_type}_{corpus.name}_{cfg.src_lang}-{cfg.tgt_lang}")
    return record


if __name__ == "__main__":
    run_cli(main)
