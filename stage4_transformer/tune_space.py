"""Stage 4's (translation, train.py) search space for ``scripts/tune.py`` (hyper-parameter tuning with Optuna).

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
        "lr": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True, "default": 1e-3},
        "warmup_steps": {"type": "int", "low": 200, "high": 2000, "step": 200, "default": 800},
        "lr_schedule": {"type": "categorical", "choices": ["noam", "cosine"], "default": "noam"},
        "dropout": {"type": "float", "low": 0.0, "high": 0.3, "default": 0.1},
        "label_smoothing": {"type": "float", "low": 0.0, "high": 0.2, "default": 0.1},
        "weight_decay": {"type": "float", "low": 0.0, "high": 0.1, "default": 0.0},
        "max_tokens": {"type": "categorical", "choices": [2048, 4096, 8192], "default": 4096},
        "d_ff": {"type": "categorical", "choices": [512, 1024, 2048], "default": 1024},
        "enc_layers": {"type": "int", "low": 2, "high": 4, "default": 3},
        "dec_layers": {"type": "int", "low": 2, "high": 4, "default": 3},
    },
}


def search_space() -> dict:
    return SPACE


if __name__ == "__main__":
    print(json.dumps(search_space(), indent=1))
