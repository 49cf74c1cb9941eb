"""The stage-3 benchmark: train under a wall-clock budget, then evaluate on every test set.

    python benchmark.py --attention_type bahdanau --max_minutes 45 --report
    python benchmark.py --attention_type none --max_minutes 45 --report
    python benchmark.py seqlen --report    # ms per training step vs sequence length 32..512 (~2 min)

Targets (issue 5): Bahdanau, Multi30k en->fr, test_2016_flickr sacreBLEU >= 50 with beam search
after <= 45 min of training on 2 CPU cores; beam (k=5) beats greedy; the whole test set decoded
with batched beam search in <= 60 s. The time budget becomes one fixed step count after the first
steps (``scripts.budget``); the train result records it with a ``reproduce_command`` that needs no
clock. With ``--report`` the train and evaluation result files are copied, under their own
timestamped names, to ``results/reported/stage3_attention_seq2seq/``, where scripts/report.py reads them.
(``--time_budget_min`` is the old spelling of ``--max_minutes``, kept for the recorded commands.)

``seqlen``: one training step (forward + backward + AdamW) of the ``--attention_type`` model at 256 units
(bidirectional GRU encoder 2x128, GRU decoder 256, attention 256) on random (batch, T) source and target tokens
for T = 32..512: the same shapes as stage 2's and stage 4's ``seqlen`` presets (``scripts/steptime.py``).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import torch

from scripts.cli import HelpFormatter, run_cli
from scripts.config import add_alias
from scripts.device import describe_device
from scripts.flags import DEFAULT_SEED, HELP
from scripts.results import report_result
from scripts.seed import seed_everything
from scripts.steptime import VOCAB, WIDTH, adamw_step, add_seqlen_args, check_seqlen_args, run_seqlen
from stage3_attention_seq2seq import evaluate, train
from stage3_attention_seq2seq.models.seq2seq import ATTENTION_TYPES, ModelConfig, Seq2Seq
from stage3_attention_seq2seq.utils.checkpoint import KIND
from stage3_attention_seq2seq.utils.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID

FIRST_WORD_ID = max(PAD_ID, BOS_ID, EOS_ID, UNK_ID) + 1  # random tokens never hit a special id


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("preset", nargs="?", default="translate", choices=["translate", "seqlen"],
                   help="translate: train + evaluate; seqlen: training-step time against the sequence length")
    p.add_argument("--attention_type", default="bahdanau", choices=ATTENTION_TYPES, help="the model to benchmark")
    p.add_argument("--max_minutes", type=float, default=45.0, help=HELP["max_minutes"])
    add_alias(p, "--time_budget_min", "max_minutes", type=float)
    p.add_argument("--epochs", type=int, default=15, help=HELP["epochs"] + "; the LR decays over the budget's steps")
    p.add_argument("--beam_size", type=int, default=5, help="beam width of the test-set scores")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=HELP["seed"])
    p.add_argument("--report", action="store_true", help=HELP["report"])
    add_seqlen_args(p)
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py flags")
    return p


def bench_seqlen(args):
    check_seqlen_args(args.lengths, args.batch_size, args.repeats)
    g = seed_everything(args.seed)
    cfg = ModelConfig(attention_type=args.attention_type, emb_dim=WIDTH, enc_hidden=WIDTH // 2, dec_hidden=WIDTH,
                      attn_dim=WIDTH, dropout=0.0, label_smoothing=0.0)
    model = Seq2Seq(cfg, VOCAB, VOCAB)

    def make_step(seq_len):
        src = torch.randint(FIRST_WORD_ID, VOCAB, (args.batch_size, seq_len), generator=g)
        tgt = torch.randint(FIRST_WORD_ID, VOCAB, (args.batch_size, seq_len + 1), generator=g)
        src_len = torch.full((args.batch_size,), seq_len)
        return adamw_step(model, lambda: model(src, src_len, tgt[:, :-1], tgt[:, 1:])[1])

    name = f"seq2seq {args.attention_type} (biGRU 2x{WIDTH // 2} + GRU {WIDTH})"
    return run_seqlen(KIND, name, make_step, lengths=args.lengths, batch_size=args.batch_size, repeats=args.repeats,
                      params=model.num_params(), device=describe_device(torch.device("cpu")), seed=args.seed,
                      config={"model": dataclasses.asdict(cfg), "lengths": args.lengths,
                              "batch_size": args.batch_size, "repeats": args.repeats})


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.preset == "seqlen":
        record, path = bench_seqlen(args)
        if args.report:
            print(f"reported: {report_result(path)}")
        return record
    name = f"bench_{args.attention_type}"
    out_dir, run_dir = Path("checkpoints") / name, Path("runs") / name
    print(f"benchmark {name}: load average {os.getloadavg()} at start, cpus {os.cpu_count()}", flush=True)
    train_rec = train.main(["--attention_type", args.attention_type, "--epochs", str(args.epochs),
                            "--max_minutes", str(args.max_minutes), "--seed", str(args.seed),
                            "--out_dir", str(out_dir), "--run_dir", str(run_dir), *args.extra])
    print(f"benchmark {name}: load average {os.getloadavg()} after training", flush=True)
    eval_rec = evaluate.main(["--checkpoint", str(out_dir / train.BEST_NAME), "--beam_size", str(args.beam_size),
                              "--run_dir", str(run_dir / "heatmaps"), "--name", f"{name}_eval"])
    print(f"benchmark {name}: load average {os.getloadavg()} at the end", flush=True)
    if args.report:
        for rec in (train_rec, eval_rec):
            print(f"reported: {report_result(rec['result_file'])}")
    return train_rec, eval_rec


if __name__ == "__main__":
    run_cli(main)
