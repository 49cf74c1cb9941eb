"""Evaluate a stage-2 checkpoint: loss (nats/token), perplexity and bits per character on val/test.

    cd stage2_rnn_lstm
    python evaluate.py --checkpoint checkpoints/best_lstm_char.pt                  # tiny Shakespeare val
    MY_LLM_DATA=../../shared/data python evaluate.py --checkpoint checkpoints/best_lstm_word.pt --split test

The corpus named in the checkpoint is read again and encoded with the checkpoint's own vocabulary
(word-level tokens it lacks become ``<unk>``). Prints the ``RESULT`` line and writes the result file.
"""
from __future__ import annotations

import argparse
import time

import torch

from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.data import sha256_files
from scripts.device import describe_device, pick_device
from scripts.results import make_result, write_result
from stage2_rnn_lstm.utils.data import load_corpus
from stage2_rnn_lstm.utils.engine import KIND, evaluate_loss, load_model, loss_metrics


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Perplexity / bits-per-char of a stage-2 checkpoint.",
                                formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/best_lstm_char.pt")
    p.add_argument("--vocab", default=None, help="vocabulary pickle to check against the checkpoint")
    p.add_argument("--split", default="all", choices=["val", "test", "all"], help="all = every split the dataset has besides train")
    p.add_argument("--data_dir", default=None, help="dataset folder (default: $MY_LLM_DATA, then bundled)")
    p.add_argument("--batch_size", type=int, default=None, help="default: the training batch size")
    p.add_argument("--seq_len", type=int, default=None, help="default: the training BPTT length")
    p.add_argument("--max_batches", type=int, default=None, help="evaluate only this many batches (smoke runs)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where to run; auto = cuda, then mps, then cpu")
    a = p.parse_args(argv)
    device = pick_device(a.device)
    model, vocab, ckpt = load_model(a.checkpoint, a.vocab, device)
    tcfg = ckpt["config"]["train"]
    batch_size, seq_len = a.batch_size or tcfg["batch_size"], a.seq_len or tcfg["seq_len"]
    if batch_size <= 0 or seq_len <= 0 or (a.max_batches is not None and a.max_batches <= 0):
        raise UserError("--batch_size, --seq_len and --max_batches must be positive")
    corpus = load_corpus(vocab.vocab_type, tcfg["dataset"], a.data_dir or tcfg.get("data_dir") or None,
                         tcfg.get("limit_train") or None)
    splits = [s for s in ("val", "test") if s in corpus.splits and a.split in (s, "all")]
    if not splits:
        raise UserError(f"{corpus.name} has no {a.split} split (tiny Shakespeare has only train/val)")
    metrics, t0, n_tokens = {}, time.time(), 0
    for split in splits:
        ids = torch.tensor(vocab.encode([corpus.vocab.tokens[i] for i in corpus.splits[split].tolist()], strict=False))
        loss = evaluate_loss(model, ids, batch_size, seq_len, device, a.max_batches)
        metrics.update(loss_metrics(loss, vocab.vocab_type, f"{split}_"))
        n_tokens += ids.numel()
    wall = time.time() - t0
    primary = "test_perplexity" if "test" in splits else "val_loss"
    record = make_result(KIND, "language_modeling", corpus.name, "+".join(splits), metrics, params=model.num_params(),
                         train_wall_s=ckpt.get("train_wall_s"), device=describe_device(device),
                         seed=tcfg.get("seed"), data_sha256=sha256_files(corpus.files) if corpus.files else None,
                         primary_metric=primary, tokens_per_s=round(n_tokens / max(wall, 1e-9), 1),
                         config={"checkpoint": str(a.checkpoint), "step": ckpt.get("step"), "batch_size": batch_size,
                                 "seq_len": seq_len, "model": ckpt["config"]["model"]})
    write_result(record, name=f"eval_{corpus.name}_{vocab.vocab_type}")
    return record


if __name__ == "__main__":
    run_cli(main)
