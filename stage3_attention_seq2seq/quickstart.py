"""Quick start for stage 3 (bundled Multi30k en->fr only, a few minutes on a laptop CPU).

Trains a small Bahdanau model for three epochs over the first 10,000 training pairs (471 steps; a
step budget, not a time budget, so two runs print the same numbers on the same machine and torch),
validates it after each epoch, then scores it with sacreBLEU on test_2016_flickr (greedy and beam 5)
and prints the RESULT lines. The score is far below the benchmark's (see README.md); the point is to
see the whole pipeline run.

    python quickstart.py
"""
from __future__ import annotations

import sys

from scripts.cli import run_cli
from stage3_attention_seq2seq import evaluate, train

OUT_DIR = "checkpoints/quickstart"
TRAIN_ARGS = ["--attention_type", "bahdanau", "--epochs", "3", "--limit_train", "10000", "--batch_size", "64",
              "--lr", "3e-3", "--emb_dim", "128", "--enc_hidden", "128", "--dec_hidden", "256", "--attn_dim", "128",
              "--warmup_steps", "30", "--val_sentences", "200", "--log_every", "25"]


def main(argv=None):
    train.main(TRAIN_ARGS + ["--out_dir", OUT_DIR, "--run_dir", "runs/quickstart"])
    evaluate.main(["--checkpoint", f"{OUT_DIR}/{train.BEST_NAME}", "--splits", "test_2016_flickr", "--beam_size", "5",
                   "--run_dir", "runs/quickstart/heatmaps", "--name", "quickstart_eval"])
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
