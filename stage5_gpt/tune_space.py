"""Stage 5's search space for ``scripts/tune.py`` (hyper-parameter tuning with Optuna).

    python tune_space.py        # prints the space as JSON: what scripts/tune.py reads

The fields (flags of train.py with ranges and defaults, the metric and its direction) are described in
docs/CONTRIBUTING.md; the file imports nothing, so reading it costs no torch import.
"""
import json

SPACE = {
    "metric": "val_loss",
    "result_metric": "val_loss",
    "direction": "minimize",
    "params": {
        "lr": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True, "default": 1e-3},
        "warmup_steps": {"type": "int", "low": 0, "high": 400, "step": 50, "default": 100},
        "min_lr": {"type": "float", "low": 1e-5, "high": 3e-4, "log": True, "default": 1e-4},
        "weight_decay": {"type": "float", "low": 0.0, "high": 0.2, "default": 0.1},
        "beta2": {"type": "categorical", "choices": [0.95, 0.99], "default": 0.99},
        "dropout": {"type": "float", "low": 0.0, "high": 0.2, "default": 0.0},
        "batch_size": {"type": "categorical", "choices": [16, 32, 64], "default": 32},
        "n_layer": {"type": "int", "low": 2, "high": 6, "default": 4},
        "n_embd": {"type": "categorical", "choices": [64, 128, 192], "default": 128},
    },
}


def search_space() -> dict:
    return SPACE


if __name__ == "__main__":
    print(json.dumps(search_space(), indent=1))
