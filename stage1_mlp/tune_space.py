"""Stage 1's search space for ``scripts/tune.py`` (hyper-parameter tuning with Optuna).

    python tune_space.py        # prints the space as JSON: what scripts/tune.py reads

The fields (flags of train.py with ranges and defaults, the metric and its direction) are described in
docs/CONTRIBUTING.md; the file imports nothing, so reading it costs no torch import.
"""
import json

SPACE = {
    "metric": "val_accuracy",
    "result_metric": "accuracy",
    "direction": "maximize",
    "params": {
        "lr": {"type": "float", "low": 3e-4, "high": 3e-2, "log": True, "default": 3e-3},
        "dropout": {"type": "float", "low": 0.0, "high": 0.7, "default": 0.5},
        "hidden_dims": {"type": "categorical", "choices": ["0", "64", "256", "128 64"], "default": "64"},
        "batch_size": {"type": "categorical", "choices": [64, 128, 256, 512], "default": 256},
        "weight_decay": {"type": "float", "low": 0.0, "high": 0.05, "default": 0.0},
        "ngram": {"type": "int", "low": 1, "high": 3, "default": 2},
        "nb_scale": {"type": "bool", "default": True},
        "lr_schedule": {"type": "categorical", "choices": ["constant", "cosine"], "default": "constant"},
    },
}


def search_space() -> dict:
    return SPACE


if __name__ == "__main__":
    print(json.dumps(search_space(), indent=1))
