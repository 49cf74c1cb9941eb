"""Quick start for stage 4 (bundled Multi30k en->fr only, under 3 minutes on 2 CPU cores).

Trains a small Transformer (pre-LN, 2+2 layers, d_model 128, a 2,000-token joint BPE) for a fixed number of steps
(a step budget, not a time budget, and one CPU thread, so two runs print the same numbers on the same torch),
validates it at the end, then scores it with sacreBLEU on test_2016_flickr (greedy and beam 5) and prints the
RESULT lines. The score is far below the benchmark's (``python benchmark.py translate``); the point is to see the
whole pipeline run.

    python quickstart.py
"""
from __future__ import annotations

import sys

from scripts.cli import run_cli
from stage4_transformer import evaluate, train

OUT_DIR = "checkpoints/quickstart"
TRAIN_ARGS = ["--vocab_size", "2000", "--d_model", "128", "--n_heads", "4", "--enc_layers", "2", "--dec_layers", "2",
              "--d_ff", "256", "--norm_first", "--max_tokens", "2000", "--lr", "2e-3", "--lr_schedule", "cosine",
              "--warmup_steps", "80", "--min_lr", "1e-4", "--max_steps", "350", "--epochs", "10",
              "--val_sentences", "200", "--log_every", "50", "--threads", "1"]


def main(argv=None):
    train.main(TRAIN_ARGS + ["--out_dir", OUT_DIR, "--run_dir", "runs/quickstart"])
    evaluate.main(["--checkpoint", f"{OUT_DIR}/{train.BEST_NAME}", "--splits", "test_2016_flickr", "--beam_size", "5",
                   "--threads", "1", "--run_dir", "runs/quickstart/attention", "--name", "quickstart_eval"])
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
