"""Evaluate a stage-2 checkpoint: loss (nats/token), perplexity and bits per character on val/test.

    cd stage2_rnn_lstm
    python evaluate.py --checkpoint checkpoints/best_lstm_char.pt                  # tiny Shakespeare val
    MY_LLM_DATA=/path/to/data python evaluate.py --checkpoint checkpoints/best_lstm_word.pt --split test

The corpus named in the checkpoint is read again and encoded with the checkpoint's own vocabulary
(word-level tokens it lacks become ``<unk>``). Prints a readable summary, then the ``RESULT`` line,
and writes the result file.
"""
from __future__ import annotations

import argparse
import time

import torch

from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.data import sha256_files
from scripts.device import add_device_args, describe_device, pick_device
from scripts.flags import HELP, add_checkpoint_arg
from scripts.results import make_result, write_result
from stage2_rnn_lstm.utils.data import load_corpus
from stage2_rnn_lstm.utils.engine import KIND, evaluate_loss, load_model, loss_metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Perplexity / bits-per-char of a stage-2 checkpoint.",
                                formatter_class=HelpFormatter)
    add_checkpoint_arg(p, "checkpoints/best_lstm_char.pt")
    p.add_argument("--vocab", default=None, help="vocabulary pickle to check against the checkpoint")
    p.add_argument("--split", default="all", choices=["val", "test", "all"],
                   help="all = every split the dataset has besides train")
    p.add_argument("--data_dir", default=None,
                   help=HELP["data_dir"] + " (default: the one the checkpoint was trained on)")
    p.add_argument("--batch_size", type=int, default=None, help="parallel streams (default: the training value)")
    p.add_argument("--seq_len", type=int, default=None, help="BPTT segment length (default: the training value)")
    p.add_argument("--max_batches", type=int, default=0, help="evaluate only this many batches per split (0 = all)")
    add_device_args(p, dtype=False)
    return p


def check_args(a) -> None:
    bad = [f"--{k} {v}" for k, v in (("batch_size", a.batch_size), ("seq_len", a.seq_len)) if v is not None and v <= 0]
    if a.max_batches < 0:
        bad.append(f"--max_batches {a.max_batches}")
    if bad:
        raise UserError(f"impossible value(s): {', '.join(bad)} (--batch_size and --seq_len must be positive; "
                        f"leave them out to use the training values; --max_batches 0 = all)")


def main(argv=None) -> dict:
    a = build_parser().parse_args(argv)
    check_args(a)
    device = pick_device(a.device)
    model, vocab, ckpt = load_model(a.checkpoint, a.vocab, device)
    tcfg = ckpt["config"]["train"]
    batch_size, seq_len = a.batch_size or tcfg["batch_size"], a.seq_len or tcfg["seq_len"]
    corpus = load_corpus(vocab.vocab_type, tcfg["dataset"], a.data_dir or tcfg.get("data_dir") or None)
    splits = [s for s in ("val", "test") if s in corpus.splits and a.split in (s, "all")]
    if not splits:
        raise UserError(f"{corpus.name} has no {a.split} split (tiny Shakespeare has only train/val)")
    metrics, t0, n_tokens = {}, time.time(), 0
    lines = [f"checkpoint {a.checkpoint}: step {ckpt.get('step')}, {model.num_params() / 1e6:.2f}M params, "
             f"{vocab.vocab_type} vocabulary of {len(vocab)}; batches of {batch_size}x{seq_len}"]
    for split in splits:
        ids = torch.tensor(vocab.encode([corpus.vocab.tokens[i] for i in corpus.splits[split].tolist()], strict=False))
        loss = evaluate_loss(model, ids, batch_size, seq_len, device, a.max_batches)
        m = loss_metrics(loss, vocab.vocab_type, f"{split}_")
        metrics.update(m)
        n_tokens += ids.numel()
        bpc = f" | {m[f'{split}_bpc']:.4f} bits/char" if vocab.vocab_type == "char" else ""
        lines.append(f"{corpus.name} {split} ({ids.numel():,} tokens): loss {loss:.4f} nats/token | "
                     f"perplexity {m[f'{split}_perplexity']:.2f}{bpc}")
    wall = time.time() - t0
    print("\n".join(lines), flush=True)  # the readable summary, then the RESULT line
    primary = "test_perplexity" if "test" in splits else "val_loss"
    record = make_result(KIND, "language_modeling", corpus.name, "+".join(splits), metrics, params=model.num_params(),
                         train_wall_s=ckpt.get("train_wall_s"), device=describe_device(device),
                         seed=tcfg.get("seed"), data_sha256=sha256_files(corpus.files) if corpus.files else None,
                         primary_metric=primary, tokens_per_s=round(n_tokens / max(wall, 1e-9), 1),
                         config={"checkpoint": str(a.checkpoint), "step": ckpt.get("step"), "batch_size": batch_size,
                                 "seq_len": seq_len, "max_batches": a.max_batches, "model": ckpt["config"]["model"]})
    write_result(record, name=f"eval_{corpus.name}_{vocab.vocab_type}")
    return record


if __name__ == "__main__":
    run_cli(main)
