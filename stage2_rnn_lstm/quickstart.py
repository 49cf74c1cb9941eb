"""Quick start for stage 2 (about a minute on 2 CPU cores, bundled tiny Shakespeare only).

    cd stage2_rnn_lstm && python quickstart.py

Trains a small 1-layer char LSTM for 200 steps, prints its ``RESULT`` line (validation loss,
perplexity, bits per char), then samples a few lines from it. Run by ``scripts/quickstart.py``.
"""
from __future__ import annotations

import os

from scripts.cli import run_cli

FLAGS = ("--model_type lstm --vocab_type char --data_dir data --emb_dim 32 --hidden_size 192 --num_layers 1 "
         "--dropout 0.0 --batch_size 32 --seq_len 64 --lr 1e-2 --max_steps 200 --eval_every 100 --log_every 50 "
         "--out_dir checkpoints/quickstart --run_dir runs/quickstart").split()


def main(argv=None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # bundled data only
    from stage2_rnn_lstm import generate, train
    record = train.main(FLAGS + list(argv or []))
    print("--- sample (temperature 0.8) ---")
    generate.main(["--checkpoint", "checkpoints/quickstart/best_lstm_char.pt", "--prompt", "ROMEO:",
                   "--max_new_tokens", "200", "--temperature", "0.8", "--seed", "0"])
    return record


if __name__ == "__main__":
    run_cli(main)
