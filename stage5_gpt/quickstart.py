"""Quick start for stage 5 (bundled tiny Shakespeare only, under 3 minutes on 2 CPU cores).

Trains a small character-level GPT (4 layers, 4 heads, 128 wide, context 64: the ``nano`` preset) for a fixed number
of steps (a step budget, not a time budget, and one CPU thread, so two runs print the same numbers on the same
torch), scores it on the validation text with a sliding window, and prints a sample (greedy decoding is dull, so
temperature 0.8, top-k 40, a fixed seed) and the RESULT lines. The loss is far above the benchmark's
(``python benchmark.py char20``); the point is to see the whole pipeline run.

    python quickstart.py
"""
from __future__ import annotations

import sys

from scripts.cli import run_cli
from stage5_gpt import evaluate, generate, train

OUT_DIR = "checkpoints/quickstart"
TRAIN_ARGS = ["--dataset", "shakespeare_char", "--preset", "nano", "--batch_size", "16", "--lr", "2e-3",
              "--min_lr", "2e-4", "--warmup_steps", "50", "--dropout", "0.0", "--max_steps", "600",
              "--eval_every", "200", "--eval_iters", "20", "--log_every", "50", "--threads", "1"]


def main(argv=None):
    train.main(TRAIN_ARGS + ["--out_dir", OUT_DIR, "--run_dir", "runs/quickstart"])
    best = f"{OUT_DIR}/{train.BEST_NAME}"
    evaluate.main(["--checkpoint", best, "--split", "val", "--stride", "32", "--threads", "1",
                   "--name", "quickstart_eval"])
    generate.main(["--checkpoint", best, "--prompt", "ROMEO:", "--max_new_tokens", "200", "--temperature", "0.8",
                   "--top_k", "40", "--seed", "1337"])
    return 0


if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
