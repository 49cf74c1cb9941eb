"""Stage 2's search space for ``scripts/tune.py`` (hyper-parameter tuning with Optuna).

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
        "lr": {"type": "float", "low": 5e-4, "high": 5e-3, "log": True, "default": 2e-3},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5, "default": 0.2},
        "weight_decay": {"type": "float", "low": 0.0, "high": 0.1, "default": 0.01},
        "hidden_size": {"type": "categorical", "choices": [256, 512, 768], "default": 512},
        "num_layers": {"type": "int", "low": 1, "high": 3, "default": 2},
        "emb_dim": {"type": "categorical", "choices": [64, 128, 256], "default": 128},
        "batch_size": {"type": "categorical", "choices": [32, 64, 128], "default": 64},
        "seq_len": {"type": "categorical", "choices": [64, 128, 256], "default": 128},
        "lr_schedule": {"type": "categorical", "choices": ["plateau", "cosine", "wsd"], "default": "plateau"},
    },
}


def search_space() -> dict:
    return SPACE


if __name__ == "__main__":
    print(json.dumps(search_space(), indent=1))
