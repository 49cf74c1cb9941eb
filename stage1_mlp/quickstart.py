"""Stage 1 quick start: train the MLP on the bundled IMDb sample, then score it (well under 2 minutes).

    cd stage1_mlp && python quickstart.py

Uses only ``stage1_mlp/data/imdb/train.jsonl.gz`` (4,000 real training reviews); 5% of it is held out
for validation, which is what both RESULT lines report. For full-data figures see benchmark.py.
"""
from __future__ import annotations

from scripts.cli import run_cli
from stage1_mlp import evaluate, train
from stage1_mlp.datasets.sources import BUNDLED

OUT = "checkpoints/quickstart"


def main(argv=None) -> None:
    train.main(["--dataset", "imdb", "--data_dir", str(BUNDLED), "--epochs", "4", "--out_dir", OUT,
                "--run_dir", "runs/quickstart", "--log_every", "5"])
    evaluate.main(["--checkpoint", f"{OUT}/best_model.pt", "--split", "val", "--data_dir", str(BUNDLED),
                   "--run_dir", "runs/quickstart"])
    evaluate.main(["--checkpoint", f"{OUT}/best_model.pt",
                   "--text", "One of the best films I have seen this year: moving, funny and beautifully acted."])


if __name__ == "__main__":
    run_cli(main)
