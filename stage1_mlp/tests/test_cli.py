"""train.py / evaluate.py end to end on the bundled IMDb sample (and real AG News rows): flags, exact resume
under a real SIGINT anywhere in a step, bad inputs as one-line errors, the seed README's commands."""
import dataclasses
import gzip
import os
import shlex
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.checkpoint import save_checkpoint
from scripts.cli import UserError, run_cli
from scripts.log import read_metrics
from stage1_mlp import engine
from stage1_mlp import evaluate as evaluate_mod
from stage1_mlp import train as train_mod
from stage1_mlp.config import TrainConfig
from stage1_mlp.datasets.sources import BUNDLED
from stage1_mlp.models.mlp_numpy import AdamWNumpy
from stage1_mlp.models.mlp_torch import MLPOptimizer

AG_FIXTURE = BUNDLED / "ag_news_format_fixture" / "test_rows.csv"
FULL_DATA = os.environ.get("MY_LLM_DATA")  # read before the fixture below removes it (CI sets it)
SMALL = ["--dataset", "imdb", "--limit_train", "500", "--batch_size", "32", "--max_features", "8000",
         "--log_every", "1"]
# 5 steps per epoch, 80 validation reviews, an evaluation every 3 steps (mid-epoch), no early stopping
TINY = ["--dataset", "imdb", "--limit_train", "160", "--val_fraction", "0.02", "--batch_size", "32",
        "--max_features", "3000", "--eval_every", "3", "--patience", "0", "--log_every", "2"]
OPTIMIZERS = {"torch": MLPOptimizer, "numpy": AdamWNumpy}


def train(tmp, *extra):
    return train_mod.main([*SMALL, "--out_dir", str(tmp), "--run_dir", str(tmp / "run"), *extra])


def tiny(out: Path, *extra):
    return train_mod.main([*TINY, "--out_dir", str(out), "--run_dir", str(out / "run"), *extra])


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a: Path, b: Path):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def without_wall(history):
    return [{k: v for k, v in h.items() if k != "wall_s"} for h in history]


def cli_error(capsys, main, argv) -> str:
    """Run ``main`` as the command line does; require exit code 2 and exactly one ``error:`` line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture(autouse=True)
def no_full_data(monkeypatch):
    """Tests use the bundled sample even where $MY_LLM_DATA is set."""
    monkeypatch.delenv("MY_LLM_DATA", raising=False)


# ----- the one-thread setting of this folder's conftest does not leak --------------------------
def test_stage1_tests_run_on_one_thread():
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"


@pytest.mark.all_threads
def test_thread_setting_is_restored_after_each_test(threads_before):
    """Runs after a one-thread test: the process is back to what it had (the old conftest set one thread
    at import and never restored it, so stage 2-3 tests ran on one thread)."""
    assert (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")) == threads_before


# ----- training and evaluation -------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["torch", "numpy"])
def test_train_then_evaluate(tmp_path, impl, capsys):
    res = train(tmp_path, "--epochs", "3", "--patience", "3", "--impl", impl)
    assert res["dataset"] == "imdb_sample" and res["split"] == "val" and res["impl"] == impl
    assert res["primary_metric"] == "accuracy" and res["samples_per_s"] > 0
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05  # the loss falls on real reviews
    assert res["metrics"]["accuracy"] > 0.6
    # the result file: one history point per evaluation (end of every epoch), reproducible command
    assert [h["step"] for h in res["history"]] == [16, 32, 48] and res["history"][-1]["examples"] == 3 * 500
    assert res["resumed_at_steps"] == [] and res["peak_rss_mb"] > 0 and res["budget"]["steps"] == 48
    cmd = res["reproduce_command"]
    assert "--resume" not in cmd and cmd.startswith("python train.py ") or cmd.startswith("cd ")
    cfg, _, _ = train_mod.parse_args(shlex.split(cmd.split("python train.py ", 1)[1]))
    assert dataclasses.asdict(cfg) == {**res["config"], "hidden_dims": tuple(res["config"]["hidden_dims"])}
    capsys.readouterr()
    ev = evaluate_mod.main(["--model_path", str(tmp_path / "best_model.pt"), "--split", "val",
                            "--run_dir", str(tmp_path / "eval"), "--latency_samples", "5"])
    out = capsys.readouterr().out
    summary, result_line = out.split("RESULT ", 1)
    assert f"accuracy {ev['metrics']['accuracy']:.2%}" in summary and "confusion matrix" in summary
    assert summary.strip() and "\n" not in result_line.strip()  # a readable summary first, then the RESULT line
    assert ev["metrics"]["accuracy"] == pytest.approx(res["metrics"]["accuracy"])  # same model, same val split
    assert ev["samples_per_s"] > 0 and ev["latency_ms_batch1"] > 0
    assert Path(ev["confusion_png"]).is_file() and np.sum(ev["confusion_matrix"]) == ev["n_examples"]
    out = evaluate_mod.main(["--checkpoint", str(tmp_path / "best_model.pt"), "--text", "A wonderful, moving film."])
    assert sum(out["probabilities"].values()) == pytest.approx(1.0) and out["prediction"] in ("neg", "pos")


def test_limit_train_cuts_only_the_training_part():
    """--limit_train used to subsample the pool before the validation split was carved, shrinking val too."""
    tr_all, va_all, _ = engine.train_val_data(TrainConfig(dataset="imdb"))
    tr, va, _ = engine.train_val_data(TrainConfig(dataset="imdb", limit_train=300))
    assert va.texts == va_all.texts and len(va.texts) == 200
    assert len(tr.texts) == 300 and set(tr.texts) <= set(tr_all.texts) and np.bincount(tr.labels).tolist() == [150, 150]


def test_zero_means_no_limit_and_last_model_is_written_at_every_evaluation(tmp_path, monkeypatch):
    saved = []
    real = engine.save_model_checkpoint

    def spy(path, *args, **kwargs):
        saved.append((Path(path).name, kwargs.get("train_state", {}).get("step", kwargs.get("step"))))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(engine, "save_model_checkpoint", spy)
    res = tiny(tmp_path, "--epochs", "2", "--max_steps", "0")  # 0 = no step limit: both epochs run
    assert res["steps"] == 10 and res["stop_reason"] == "epochs"
    assert [h["step"] for h in res["history"]] == [3, 6, 9, 10]  # every 3 steps, and where the run ended
    assert [s for name, s in saved if name == "last_model.pt"][:4] == [3, 6, 9, 10]


def test_grad_clip_changes_training_and_is_recorded(tmp_path):
    free = tiny(tmp_path / "a", "--epochs", "1", "--lr", "0.05")
    clipped = tiny(tmp_path / "b", "--epochs", "1", "--lr", "0.05", "--grad_clip", "0.01")
    assert clipped["config"]["grad_clip"] == 0.01
    assert clipped["history"][-1]["train_loss"] != free["history"][-1]["train_loss"]
    a, b = weights(tmp_path / "a" / "last_model.pt"), weights(tmp_path / "b" / "last_model.pt")
    assert not torch.equal(a["b1"], b["b1"])


# ----- Ctrl-C anywhere, then --resume: bit-identical to the uninterrupted run -------------------
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference run of each implementation (computed once per module)."""
    cache = {}

    def get(impl):
        if impl not in cache:
            out = tmp_path_factory.mktemp(f"ref_{impl}")  # called inside a test: no_full_data has run
            cache[impl] = (out, tiny(out, "--epochs", "2", "--impl", impl))
        return cache[impl]
    return get


def send_sigint_on_call(monkeypatch, owner, name, k, signals=1, after=None):
    """Wrap ``owner.name`` so that its k-th call delivers ``signals`` real SIGINTs to this process first."""
    real, calls = getattr(owner, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == k:
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGINT)
            if after is not None:
                after.append("the call went on after the signals")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)


@pytest.mark.parametrize("impl, where, k", [("torch", "optimizer step", 3), ("torch", "batch fetch", 10),
                                             ("numpy", "batch fetch", 5), ("numpy", "optimizer step", 10)])
def test_sigint_anywhere_then_resume_is_bit_identical(tmp_path, monkeypatch, uninterrupted, impl, where, k):
    ref_dir, ref = uninterrupted(impl)
    owner, name = (OPTIMIZERS[impl], "step") if where == "optimizer step" else (train_mod, "next_batch")
    with monkeypatch.context() as m:
        send_sigint_on_call(m, owner, name, k)
        with pytest.raises(KeyboardInterrupt):
            tiny(tmp_path, "--epochs", "2", "--impl", impl)
    assert torch.load(tmp_path / "last_model.pt", weights_only=True)["train_state"]["step"] == k  # step k finished
    resumed = tiny(tmp_path, "--epochs", "2", "--impl", impl, "--resume")
    assert resumed["resumed_at_steps"] == [k]
    assert_same_weights(tmp_path / "last_model.pt", ref_dir / "last_model.pt")
    assert_same_weights(tmp_path / "best_model.pt", ref_dir / "best_model.pt")
    assert resumed["metrics"] == ref["metrics"] and resumed["best_step"] == ref["best_step"]
    assert without_wall(resumed["history"]) == without_wall(ref["history"])
    steps = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", kind="eval")]
    assert steps == [h["step"] for h in ref["history"]]  # the resumed run continued its own metrics.jsonl


def test_second_sigint_aborts_at_once_and_the_last_checkpoint_still_resumes(tmp_path, monkeypatch, uninterrupted):
    ref_dir, ref = uninterrupted("torch")
    went_on = []
    with monkeypatch.context() as m:
        send_sigint_on_call(m, MLPOptimizer, "step", 5, signals=2, after=went_on)
        with pytest.raises(KeyboardInterrupt):
            tiny(tmp_path, "--epochs", "2")
    assert not went_on  # the second Ctrl-C raised inside the step
    assert torch.load(tmp_path / "last_model.pt", weights_only=True)["train_state"]["step"] == 3  # last evaluation
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    resumed = tiny(tmp_path, "--epochs", "2", "--resume")
    assert_same_weights(tmp_path / "last_model.pt", ref_dir / "last_model.pt")
    assert without_wall(resumed["history"]) == without_wall(ref["history"])


# ----- the --resume rule, metrics.jsonl ------------------------------------------------------------
def test_resume_refuses_a_changed_model_flag_and_lets_the_budget_grow(tmp_path, capsys, uninterrupted):
    ref_dir, ref = uninterrupted("torch")
    tiny(tmp_path, "--epochs", "1")
    base = [*TINY, "--out_dir", str(tmp_path), "--run_dir", str(tmp_path / "run")]
    line = cli_error(capsys, train_mod.main, [*base, "--epochs", "2", "--hidden_dims", "32", "--resume"])
    assert "--hidden_dims" in line and "--epochs" not in line.split("would change")[0]
    line = cli_error(capsys, train_mod.main, [*base, "--seed", "7", "--resume"])
    assert "--seed 7" in line
    resumed = tiny(tmp_path, "--epochs", "2", "--resume")  # 1 → 2 epochs: the same as 2 epochs from scratch
    assert resumed["resumed_at_steps"] == [5] and resumed["steps"] == 10
    assert_same_weights(tmp_path / "last_model.pt", ref_dir / "last_model.pt")


def test_fresh_run_never_appends_to_metrics_and_a_resumed_run_continues_it(tmp_path):
    run_dir = tmp_path / "run"
    tiny(tmp_path, "--epochs", "2", "--max_steps", "4")
    first = read_metrics(run_dir / "metrics.jsonl")
    tiny(tmp_path, "--epochs", "2", "--max_steps", "4")  # a new run into the same folder
    second = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in second] == [r["step"] for r in first] and len(list(run_dir.glob("metrics.*.jsonl"))) == 1
    tiny(tmp_path, "--epochs", "2", "--max_steps", "8", "--resume")
    third = read_metrics(run_dir / "metrics.jsonl")
    assert third[:len(second)] == second and [r["step"] for r in third if r["kind"] == "train"] == [2, 4, 6, 8]


def test_time_budget_result_reproduces_from_its_recorded_command(tmp_path, monkeypatch):
    """--max_minutes becomes one fixed step count, also when the run is interrupted before the plan is made and
    resumed; the recorded --max_steps/--schedule_steps command gives the same weights without any clock."""
    flags = ["--epochs", "1000", "--max_minutes", "0.01", "--lr_schedule", "cosine", "--eval_every", "20",
             "--log_every", "20"]
    with monkeypatch.context() as m:
        send_sigint_on_call(m, train_mod, "next_batch", 8)  # the plan is made at step 20
        with pytest.raises(KeyboardInterrupt):
            tiny(tmp_path / "a", *flags)
    res = tiny(tmp_path / "a", *flags, "--resume")
    cmd = res["reproduce_command"]
    assert res["resumed_at_steps"] == [8] and "--resume" not in cmd
    assert "--max_minutes" not in cmd and f"--max_steps {res['steps']}" in cmd and "--schedule_steps" in cmd
    assert res["budget"]["calibration"] is not None and res["steps"] < 5000 and res["stop_reason"].startswith("max_m")
    argv = shlex.split(cmd.split("python train.py ", 1)[1])
    argv[argv.index("--out_dir") + 1] = str(tmp_path / "b")
    argv[argv.index("--run_dir") + 1] = str(tmp_path / "b" / "run")
    again = train_mod.main(argv)
    assert again["steps"] == res["steps"] and without_wall(again["history"]) == without_wall(res["history"])
    assert_same_weights(tmp_path / "a" / "last_model.pt", tmp_path / "b" / "last_model.pt")


# ----- the seed README's commands --------------------------------------------------------------------
def test_seed_readme_imdb_commands_run(tmp_path, monkeypatch):
    """`python train.py --dataset imdb --epochs 30 --lr 0.001 --batch_size 64` (plus a few smoke flags) and then
    `python evaluate.py --model_path checkpoints/best_model.pt` verbatim, in a fresh folder."""
    monkeypatch.chdir(tmp_path)
    seed_train = shlex.split("python train.py --dataset imdb --epochs 30 --lr 0.001 --batch_size 64")[2:]
    res = train_mod.main([*seed_train, "--max_steps", "3", "--limit_train", "200", "--max_features", "5000"])
    assert res["steps"] == 3 and (tmp_path / "checkpoints" / "best_model.pt").is_file()
    seed_eval = shlex.split("python evaluate.py --model_path checkpoints/best_model.pt")[2:]
    if FULL_DATA and (Path(FULL_DATA) / "imdb" / "test.jsonl.gz").is_file():  # CI: the real test split
        monkeypatch.setenv("MY_LLM_DATA", FULL_DATA)
        ev = evaluate_mod.main([*seed_eval, "--limit", "300", "--latency_samples", "3"])
        assert ev["split"] == "test" and ev["dataset"] == "imdb" and ev["n_examples"] == 300
    else:  # only the bundled train sample: a clear error that says what to do
        with pytest.raises(UserError, match="--split val"):
            evaluate_mod.main(seed_eval)


def test_seed_readme_ag_news_command_fails_fast_saying_what_it_needs(tmp_path, monkeypatch, capsys):
    """`python train.py --dataset ag_news --epochs 20` needs the AG News train split, which is not bundled."""
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    line = cli_error(capsys, train_mod.main, shlex.split("python train.py --dataset ag_news --epochs 20")[2:])
    assert time.perf_counter() - t0 < 15
    assert "train.csv" in line and "--data_dir" in line and "MY_LLM_DATA" in line and "ag_news_test_cv" in line


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


# ----- bad input: one line, exit code 2 ---------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--dataset", "mnist"], "unknown dataset"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--batch_size", "-4"], "--batch_size must be >= 1"),
    (["--hidden_dims", "64", "-3"], "--hidden_dims"),
    (["--dropout", "1.5"], "--dropout"),
    (["--max_features", "-1"], "--max_features"),
    (["--max_steps", "-1"], r"--max_steps -1"),
    (["--grad_clip", "-1"], r"--grad_clip -1"),
    (["--patience", "-2"], r"--patience -2"),
    (["--impl", "numpy", "--dtype", "bfloat16"], "--dtype bfloat16 needs --impl torch"),
    (["--dataset", "ag_news"], "ag_news_test_cv"),
    (["--protocol", "ag_news_test_cv"], "needs --dataset ag_news"),
    (["--data_dir", "/nonexistent/data"], "holds neither"),
])
def test_bad_training_flags(tmp_path, argv, message):
    with pytest.raises(UserError, match=message):
        train_mod.main([*argv, "--out_dir", str(tmp_path)])


def _bad_file(tmp_path: Path, case: str) -> tuple[list[str], Path]:
    d = tmp_path / "data"
    (d / case.split("_")[0].replace("ag", "ag_news")).mkdir(parents=True)
    if case == "imdb_latin1":
        path = d / "imdb" / "train.jsonl"
        path.write_bytes('{"text": "Un caf\xe9 tr\xe8s cr\xe8me", "label": 1}\n'.encode("latin-1"))
    elif case == "imdb_truncated":
        path = d / "imdb" / "train.jsonl.gz"
        data = (BUNDLED / "imdb" / "train.jsonl.gz").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "imdb_not_gzip":
        path = d / "imdb" / "train.jsonl.gz"
        path.write_text('{"text": "plain text, not gzip", "label": 1}\n', encoding="utf-8")
    else:  # ag_latin1
        path = d / "ag_news" / "train.csv"
        path.write_bytes('"3","Caf\xe9 prices rise","Coffee costs more."\n'.encode("latin-1"))
    dataset = "imdb" if case.startswith("imdb") else "ag_news"
    return ["--dataset", dataset, "--data_dir", str(d), "--out_dir", str(tmp_path / "out")], path


@pytest.mark.parametrize("case, what", [("imdb_latin1", "not UTF-8"), ("imdb_truncated", "truncated"),
                                        ("imdb_not_gzip", "not a valid gzip"), ("ag_latin1", "not UTF-8")])
def test_bad_data_files_are_one_line_errors(tmp_path, capsys, case, what):
    argv, path = _bad_file(tmp_path, case)
    if case == "imdb_truncated":
        with pytest.raises(EOFError):  # what the file really is: a gzip stream cut short
            gzip.decompress(path.read_bytes())
    line = cli_error(capsys, train_mod.main, argv)
    assert str(path) in line and what in line


def test_missing_data_folder_in_env_is_an_error_not_the_sample(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MY_LLM_DATA", "/nonexistent")
    line = cli_error(capsys, train_mod.main, ["--dataset", "imdb", "--out_dir", str(tmp_path)])
    assert "/nonexistent" in line


def test_bad_checkpoints_are_one_line_errors(tmp_path, capsys):
    other = tmp_path / "other.pt"
    save_checkpoint(other, {"model": {}, "config": {}}, kind="stage2_rnn_lstm")
    cases = [(other, "stage2_rnn_lstm checkpoint"), (tmp_path / "missing.pt", "not found")]
    for path, message in cases:
        assert message in cli_error(capsys, evaluate_mod.main, ["--model_path", str(path)])
    assert "not found" in cli_error(capsys, train_mod.main, ["--resume", "--out_dir", str(tmp_path)])


def test_text_file_as_checkpoint_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    """`printf 'hello\n' > h.pt; python evaluate.py --model_path h.pt` (in-process, as run_cli runs it)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "h.pt").write_text("hello\n")
    line = cli_error(capsys, evaluate_mod.main, ["--model_path", "h.pt"])
    assert line.startswith("error: h.pt") and "weights_only=False" not in line


def test_missing_test_split_suggests_val(tmp_path):
    tiny(tmp_path, "--epochs", "1", "--max_steps", "1")
    with pytest.raises(UserError, match="--split val"):  # only the bundled train sample is here
        evaluate_mod.main(["--model_path", str(tmp_path / "best_model.pt"), "--run_dir", str(tmp_path / "ev")])
    for text in ["", "   \n\t"]:
        with pytest.raises(UserError, match="empty"):
            evaluate_mod.main(["--model_path", str(tmp_path / "last_model.pt"), "--text", text])


def test_early_stopping_keeps_the_best_evaluation(tmp_path):
    """best_model.pt holds the first evaluation with the highest validation accuracy, never a later worse one,
    and training stops exactly `patience` evaluations after it."""
    res = tiny(tmp_path, "--epochs", "12", "--patience", "2", "--lr", "0.05", "--limit_train", "300",
               "--eval_every", "0")
    accs = [h["val_accuracy"] for h in res["history"]]
    evals = read_metrics(tmp_path / "run" / "metrics.jsonl", kind="eval")
    assert [r["val_accuracy"] for r in evals] == accs
    best = int(np.argmax(accs))
    assert res["best_step"] == res["history"][best]["step"] and res["metrics"]["accuracy"] == pytest.approx(max(accs))
    ckpt = torch.load(tmp_path / "best_model.pt", weights_only=True)
    assert ckpt["step"] == res["best_step"] and ckpt["best_metric"] == max(accs)
    assert res["stop_reason"] == "early stopping" and len(accs) == best + 1 + 2 < 12, accs
