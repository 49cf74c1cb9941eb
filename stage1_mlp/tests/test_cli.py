"""train.py / evaluate.py end to end on the bundled IMDb sample (and real AG News rows)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.checkpoint import save_checkpoint
from scripts.cli import UserError
from scripts.log import read_metrics
from scripts.testing import run_script
from stage1_mlp import evaluate as evaluate_mod
from stage1_mlp import train as train_mod
from stage1_mlp.datasets.sources import BUNDLED

STAGE = Path(__file__).resolve().parent.parent
AG_FIXTURE = BUNDLED / "ag_news_format_fixture" / "test_rows.csv"
SMALL = ["--dataset", "imdb", "--limit_train", "500", "--batch_size", "32", "--max_features", "20000",
         "--log_every", "1"]


def train(tmp, *extra):
    return train_mod.main([*SMALL, "--out_dir", str(tmp), "--run_dir", str(tmp / "run"), *extra])


def weights(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.fixture(autouse=True)
def no_full_data(monkeypatch):
    """Tests use the bundled sample even where $MY_LLM_DATA is set."""
    monkeypatch.delenv("MY_LLM_DATA", raising=False)


@pytest.mark.parametrize("impl", ["torch", "numpy"])
def test_train_then_evaluate(tmp_path, impl):
    res = train(tmp_path, "--epochs", "3", "--patience", "3", "--impl", impl)
    assert res["dataset"] == "imdb_sample" and res["split"] == "val" and res["impl"] == impl
    assert res["primary_metric"] == "accuracy" and res["samples_per_s"] > 0
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05  # the loss falls on real reviews
    assert res["metrics"]["accuracy"] > 0.6
    ev = evaluate_mod.main(["--model_path", str(tmp_path / "best_model.pt"), "--split", "val",
                            "--run_dir", str(tmp_path / "eval"), "--latency_samples", "5"])
    assert ev["metrics"]["accuracy"] == pytest.approx(res["metrics"]["accuracy"])  # same model, same val split
    assert ev["samples_per_s"] > 0 and ev["latency_ms_batch1"] > 0
    assert Path(ev["confusion_png"]).is_file() and np.sum(ev["confusion_matrix"]) == ev["n_examples"]
    out = evaluate_mod.main(["--model_path", str(tmp_path / "best_model.pt"), "--text", "A wonderful, moving film."])
    assert sum(out["probabilities"].values()) == pytest.approx(1.0) and out["prediction"] in ("neg", "pos")


def test_ctrl_c_then_resume_equals_uninterrupted_and_seed_reproduces(tmp_path, monkeypatch):
    full = train(tmp_path / "a", "--epochs", "2")
    again = train(tmp_path / "a2", "--epochs", "2")
    assert again["metrics"] == full["metrics"]

    real_step, calls = train_mod.train_step, []

    def interrupted_step(*args):  # Ctrl-C arrives during step 20 (in epoch 2 of 15 steps each)
        calls.append(1)
        if len(calls) == 20:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(train_mod, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", "--epochs", "2")
    ck = torch.load(tmp_path / "b" / "last_model.pt", weights_only=True)
    assert ck["train_state"]["step"] == 19 and ck["train_state"]["epoch"] == 1
    monkeypatch.setattr(train_mod, "train_step", real_step)
    resumed = train(tmp_path / "b", "--epochs", "2", "--resume")
    assert resumed["metrics"] == full["metrics"] and resumed["steps"] == full["steps"]
    for k, v in weights(tmp_path / "a" / "last_model.pt").items():
        torch.testing.assert_close(weights(tmp_path / "b" / "last_model.pt")[k], v, rtol=0, atol=0)


def test_numpy_resume_after_max_steps(tmp_path):
    full = train(tmp_path / "a", "--epochs", "2", "--impl", "numpy")
    part = train(tmp_path / "b", "--epochs", "2", "--impl", "numpy", "--max_steps", "7")
    assert part["steps"] == 7
    resumed = train(tmp_path / "b", "--epochs", "2", "--resume")
    assert resumed["metrics"] == full["metrics"]
    for k, v in weights(tmp_path / "a" / "last_model.pt").items():
        torch.testing.assert_close(weights(tmp_path / "b" / "last_model.pt")[k], v, rtol=0, atol=0)


def test_ag_news_full_data_path_and_cv_protocol(tmp_path):
    """The train→test path on real AG News rows in the original CSV layout, and the CV protocol."""
    data = tmp_path / "data" / "ag_news"
    data.mkdir(parents=True)
    shutil.copy(AG_FIXTURE, data / "train.csv")
    shutil.copy(AG_FIXTURE, data / "test.csv")
    common = ["--dataset", "ag_news", "--data_dir", str(tmp_path / "data"), "--epochs", "2", "--batch_size", "4",
              "--val_fraction", "0.2", "--min_df", "1", "--run_dir", str(tmp_path / "run")]
    res = train_mod.main([*common, "--out_dir", str(tmp_path / "std")])
    assert res["protocol"] == "standard" and res["label_names"] == ["World", "Sports", "Business", "Sci/Tech"]
    ev = evaluate_mod.main(["--model_path", str(tmp_path / "std" / "best_model.pt"), "--run_dir", str(tmp_path / "ev")])
    assert ev["split"] == "test" and ev["n_examples"] == 20 and ev["dataset"] == "ag_news"
    cv = train_mod.main([*common, "--out_dir", str(tmp_path / "cv"), "--protocol", "ag_news_test_cv", "--fold", "1"])
    assert cv["protocol"] == "ag_news_test_cv" and "not comparable" in cv["protocol_note"]
    ev = evaluate_mod.main(["--model_path", str(tmp_path / "cv" / "best_model.pt"), "--run_dir", str(tmp_path / "ev")])
    assert ev["split"] == "test_cv_fold1" and ev["n_examples"] == 4 and ev["protocol"] == "ag_news_test_cv"


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "mnist"], "unknown dataset"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--batch_size", "-4"], "--batch_size must be >= 1"),
    (["--hidden_dims", "64", "-3"], "--hidden_dims"),
    (["--dropout", "1.5"], "--dropout"),
    (["--max_features", "-1"], "--max_features"),
    (["--dataset", "ag_news"], "ag_news_test_cv"),
    (["--protocol", "ag_news_test_cv"], "needs --dataset ag_news"),
    (["--data_dir", "/nonexistent/data"], "holds neither"),
])
def test_bad_training_flags(tmp_path, argv, message):
    with pytest.raises(UserError, match=message):
        train_mod.main([*argv, "--out_dir", str(tmp_path)])


def test_missing_test_split_suggests_val(tmp_path):
    train(tmp_path, "--epochs", "1", "--max_steps", "1")
    with pytest.raises(UserError, match="--split val"):  # only the bundled train sample is here
        evaluate_mod.main(["--model_path", str(tmp_path / "best_model.pt"), "--run_dir", str(tmp_path / "ev")])


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(UserError, match="not found"):
        train_mod.main(["--resume", "--out_dir", str(tmp_path)])


def test_cli_errors_are_one_line(tmp_path):
    """As a user sees them: exit code 2 and a single 'error:' line, no traceback."""
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    other = tmp_path / "other.pt"
    save_checkpoint(other, {"model": {}, "config": {}}, kind="stage2_rnn_lstm")
    cases = [
        (STAGE / "train.py", ["--dataset", "imdbx"], "unknown dataset"),
        (STAGE / "evaluate.py", ["--model_path", str(bad)], "corrupt"),
        (STAGE / "evaluate.py", ["--model_path", str(other)], "stage2_rnn_lstm checkpoint"),
        (STAGE / "evaluate.py", ["--model_path", str(tmp_path / "missing.pt")], "not found"),
    ]
    for script, args, message in cases:
        proc = run_script(script, args, env={"MY_LLM_DATA": ""}, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr


def test_empty_text_is_an_error(tmp_path):
    train(tmp_path, "--epochs", "1", "--max_steps", "2")
    for text in ["", "   \n\t"]:
        with pytest.raises(UserError, match="empty"):
            evaluate_mod.main(["--model_path", str(tmp_path / "last_model.pt"), "--text", text])


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    """best_model.pt holds the first epoch with the highest validation accuracy, never a later worse one,
    and training stops exactly `patience` epochs after it."""
    res = train(tmp_path, "--epochs", "12", "--patience", "2", "--lr", "0.05", "--limit_train", "300")
    evals = read_metrics(tmp_path / "run" / "metrics.jsonl", kind="eval")
    accs = [r["val_accuracy"] for r in evals]
    best_epoch = int(np.argmax(accs)) + 1
    assert res["best_epoch"] == best_epoch and res["metrics"]["accuracy"] == pytest.approx(max(accs))
    best = torch.load(tmp_path / "best_model.pt", weights_only=True)
    assert best["epoch"] == best_epoch and best["best_metric"] == max(accs)
    assert res["epochs_run"] == len(accs)
    assert res["epochs_run"] == best_epoch + 2 < 12, accs  # this lr plateaus early: early stopping fired
