"""Stage 3's search space for ``scripts/tune.py`` (hyper-parameter tuning with Optuna).

    python tune_space.py        # prints the space as JSON: what scripts/tune.py reads

The fields (flags of train.py with ranges and defaults, the metric and its direction) are described in
docs/CONTRIBUTING.md; the file imports nothing, so reading it costs no torch import.
"""
import json

SPACE = {
    "metric": "val_bleu",
    "result_metric": "val_bleu",
    "direction": "maximize",
    "params": {
        "lr": {"type": "float", "low": 5e-4, "high": 5e-3, "log": True, "default": 2e-3},
        "warmup_steps": {"type": "int", "low": 0, "high": 800, "step": 100, "default": 200},
        "dropout": {"type": "float", "low": 0.1, "high": 0.5, "default": 0.3},
        "label_smoothing": {"type": "float", "low": 0.0, "high": 0.2, "default": 0.1},
        "teacher_forcing": {"type": "float", "low": 0.5, "high": 1.0, "default": 1.0},
        "batch_size": {"type": "categorical", "choices": [64, 128, 256], "default": 128},
        "emb_dim": {"type": "categorical", "choices": [128, 256], "default": 256},
        "enc_hidden": {"type": "categorical", "choices": [128, 256, 384], "default": 256},
        "dec_hidden": {"type": "categorical", "choices": [256, 512], "default": 512},
    },
}


def search_space() -> dict:
    return SPACE


if __name__ == "__main__":
    print(json.dumps(search_space(), indent=1))
