"""Stage 3's search space for ``scripts/tune.py`` (hyper-parameter tuning with Optuna).

    python tune_space.py        # prints the space as JSON: what scripts/tune.py reads

Every name is a flag of train.py, with its range and its default (train.py's own default: the study's trial 0,
so "better than the default" is measured in the same study, on the same budget). ``metric`` is the validation
field of train.py's ``eval | ...`` lines (reported after every evaluation, for pruning); ``result_metric`` is the
same quantity in its ``RESULT`` line (the best checkpoint on validation; never the test split).
This file imports nothing from the stage, so reading it costs no torch import.
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
