"""Checkpoint averaging (Vaswani et al. 2017 §6.1): the element-wise mean of the last N saved weights.

    python average.py --out_dir checkpoints --last 5              # the last 5 ckpt_step<N>.pt snapshots
    python average.py --checkpoints a.pt b.pt c.pt --output avg.pt

``train.py --average_last N`` keeps the last N evaluation snapshots (``<out_dir>/ckpt_step<N>.pt``) and does the
same at the end of training. The output (default ``<out_dir>/averaged_transformer.pt``) is an ordinary stage-4
checkpoint: ``python evaluate.py --checkpoint checkpoints/averaged_transformer.pt``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from scripts.checkpoint import save_checkpoint
from scripts.cli import HelpFormatter, UserError, run_cli
from scripts.flags import HELP
from stage4_transformer.utils.checkpoint import AVERAGED_NAME, KIND, average_states, snapshots


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out_dir", default="checkpoints", help=HELP["out_dir"] + "; the snapshots are read from here")
    p.add_argument("--last", type=int, default=5, help="average the last N ckpt_step<N>.pt snapshots")
    p.add_argument("--checkpoints", nargs="+", default=None, help="average exactly these files instead")
    p.add_argument("--output", default=None, help=f"where to write the average (default: <out_dir>/{AVERAGED_NAME})")
    return p


def main(argv=None) -> Path:
    args = build_parser().parse_args(argv)
    if args.checkpoints:
        paths = [Path(p) for p in args.checkpoints]
    else:
        if args.last < 1:
            raise UserError(f"--last must be >= 1, got {args.last}")
        found = snapshots(args.out_dir)
        if not found:
            raise UserError(f"no ckpt_step<N>.pt snapshots in {args.out_dir} (train with --average_last N, "
                            f"or give --checkpoints)")
        paths = found[-args.last:]
    output = Path(args.output or Path(args.out_dir) / AVERAGED_NAME)
    save_checkpoint(output, average_states(paths), KIND)
    print(f"averaged {len(paths)} checkpoint(s) ({', '.join(p.name for p in paths)}) -> {output}")
    return output


if __name__ == "__main__":
    run_cli(main)
