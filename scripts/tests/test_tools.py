"""Tests for the result-reading tools: quickstart runner and report generator."""
import json
import textwrap
from pathlib import Path

from scripts import REPO_ROOT, quickstart, report
from scripts.results import make_result, write_result


def _fake_stage(root: Path, name: str, body: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "quickstart.py").write_text(textwrap.dedent(body))


def test_quickstart_runs_registered_stages_and_summarises(tmp_path, capsys):
    rec = make_result("stage9_fake", "classification", "imdb", "val", {"accuracy": 0.75, "loss": 0.5}, params=1,
                      train_wall_s=0.1, device="cpu", seed=0, data_sha256="x", primary_metric="accuracy")
    line = f"print('RESULT ' + json.dumps({rec!r}))\n"
    # train + evaluate, same split
    _fake_stage(tmp_path, "stage9_fake", f"import json\nprint('training...')\n{line}{line}")
    _fake_stage(tmp_path, "stage8_broken", "raise SystemExit(3)\n")
    (tmp_path / "stage7_unregistered").mkdir()
    assert [p.name for p in quickstart.discover(tmp_path)] == ["stage8_broken", "stage9_fake"]

    code = quickstart.main(["--root", str(tmp_path), "--out_dir", str(tmp_path / "out")])
    assert code == 1  # the broken stage fails the run
    rows = json.loads((tmp_path / "out" / "quickstart_summary.json").read_text())
    assert [(r["stage"], r["metric"], r["value"]) for r in rows] == [("stage8_broken", "FAILED", None),
                                                                      ("stage9_fake", "accuracy", 0.75)]
    assert "| stage9_fake | classification | imdb/val | accuracy | 75.00% |" in capsys.readouterr().out

    assert quickstart.main(["--root", str(tmp_path), "--stages", "stage9_fake", "--out_dir", str(tmp_path / "o2")]) == 0
    assert quickstart.main(["--root", str(tmp_path), "--stages", "stage5_none"]) == 2


def test_report_fills_marked_blocks_from_result_files(tmp_path):
    (tmp_path / "docs").mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("# t\n<!-- BEGIN RESULTS stage=all -->\nold\n<!-- END RESULTS -->\ntail\n"
                      "<!-- BEGIN RESULTS stage=stage2_rnn_lstm -->\n<!-- END RESULTS -->\n")
    rec = make_result("stage1_mlp", "classification", "imdb", "test", {"accuracy": 0.9123, "macro_f1": 0.91},
                      params=123456, train_wall_s=150.0, device="cpu: test (2 threads)", seed=7,
                      data_sha256="abcdef1234567890", command="cd stage1_mlp && python benchmark.py",
                      primary_metric="accuracy", model="torch MLP")
    write_result(rec, name="imdb", out_dir=tmp_path / "results" / "reported" / "stage1_mlp", echo=False)

    assert report.main(["--root", str(tmp_path), "--check"]) == 1
    assert report.main(["--root", str(tmp_path), "--no_plot"]) == 0
    text = readme.read_text()
    assert "**accuracy 91.23%**" in text and "macro_f1 91.00%" in text and "2.5 分钟" in text
    assert "`cd stage1_mlp && python benchmark.py` · seed 7 · data sha256 `abcdef123456…`" in text
    assert "old" not in text and text.endswith("tail\n<!-- BEGIN RESULTS stage=stage2_rnn_lstm -->\n"
                                                "| 结果 |\n|---|\n"
                                                "| 待复现（`results/reported/` 中尚无该阶段的结果文件） |\n"
                                                "<!-- END RESULTS -->\n")
    assert report.main(["--root", str(tmp_path), "--check"]) == 0


def test_repository_docs_are_in_sync_with_reported_results():
    """README/docs numbers come only from results/reported (run scripts/report.py after adding one)."""
    assert report.main(["--root", str(REPO_ROOT), "--check"]) == 0


# ----- report.py --curves -----------------------------------------------------------------------

def _write_json(path: Path, record: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def test_curves_plot_step_and_epoch_histories(tmp_path, capsys):
    new = {"model": "lstm", "primary_metric": "val_loss",
           "history": [{"step": 100, "tokens": 6400, "wall_s": 5.0, "train_loss": 2.5, "val_loss": 2.2,
                        "val_bpc": 3.1},
                       {"step": 200, "tokens": 12800, "wall_s": 9.0, "train_loss": 2.0, "val_loss": 1.9,
                        "val_bpc": 2.7}]}
    old = {"model": "bahdanau", "primary_metric": "val_bleu",  # stage 3's per-epoch history of the reported files
           "history": [{"epoch": 1, "train_loss": 5.9, "val_loss": 3.5, "val_bleu": 5.0, "elapsed_s": 228.4},
                       {"epoch": 2, "train_loss": 3.6, "val_loss": 2.0, "val_bleu": 30.7, "elapsed_s": 445.0}]}
    s = report.curve_series(new)
    assert (s["x_name"], s["x"], s["metric"], s["val"], s["train_loss"]) == ("step", [100, 200], "val_loss",
                                                                            [2.2, 1.9], [2.5, 2.0])
    s = report.curve_series(old)
    assert (s["x_name"], s["x"], s["metric"], s["val"]) == ("epoch", [1, 2], "val_bleu", [5.0, 30.7])
    assert report.curve_series(new, "val_bpc")["val"] == [3.1, 2.7]

    a, b = _write_json(tmp_path / "a.json", new), _write_json(tmp_path / "b.json", old)
    fig = tmp_path / "figs" / "curves.png"
    assert report.main(["--curves", str(a), str(b), "--out", str(fig)]) == 0
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.stat().st_size > 10_000

    no_history = _write_json(tmp_path / "eval.json", {"metrics": {"bleu": 1.0}})
    assert report.main(["--curves", str(no_history), "--out", str(fig)]) == 2
    assert "eval.json: has no evaluation history" in capsys.readouterr().err
    assert report.main(["--curves", str(a)]) == 2  # --out is required
    assert report.main(["--curves", str(a), "--metric", "val_bleu", "--out", str(fig)]) == 2
    assert "no validation metric val_bleu (it has val_loss, val_bpc)" in capsys.readouterr().err


def test_curves_of_a_committed_stage3_result():
    rec = json.loads((REPO_ROOT / "results/reported/stage3_attention_seq2seq/bench_bahdanau_train.json").read_text())
    s = report.curve_series(rec)
    assert s["metric"] == "val_bleu" and len(s["x"]) == len(rec["history"]) >= 10 and s["val"][-1] > s["val"][0]


# ----- measure_commands.py + the COMMANDS blocks --------------------------------------------------

FAKE_TRAIN = '''
import argparse, json, os, time
from pathlib import Path
p = argparse.ArgumentParser()
d = " (default: %(default)s)"
p.add_argument("--dataset", default="x")
p.add_argument("--epochs", type=int, default=3, help="epochs" + d)
p.add_argument("--batch_size", type=int, default=10, help="batch" + d)
p.add_argument("--max_steps", type=int, default=0, help="budget" + d)
p.add_argument("--log_every", type=int, default=50, help="log" + d)
p.add_argument("--eval_every", type=int, default=0, help="0 = every epoch" + d)
p.add_argument("--patience", type=int, default=2, help="early stopping" + d)
p.add_argument("--out_dir", default="checkpoints")
p.add_argument("--run_dir", default="runs")
a = p.parse_args()
ballast = bytearray(80 * 1024 * 1024)  # peak RSS >= 80 MiB
time.sleep(0.3)  # "loading data"
print("data: train 95 / val 5")
Path(a.run_dir).mkdir(parents=True, exist_ok=True)
with open(Path(a.run_dir) / "metrics.jsonl", "w") as f:
    for step in range(1, a.max_steps + 1):
        time.sleep(0.02)
        if step % a.log_every == 0:
            f.write(json.dumps({"kind": "train", "step": step, "time": time.time(), "loss": 1.0}) + "\\n")
        if step % 10 == 0 or step == a.max_steps:  # an epoch is 10 steps (95 examples, batch 10)
            time.sleep(0.15)  # "evaluation"
            f.write(json.dumps({"kind": "eval", "step": step, "time": time.time(), "val_loss": 1.0}) + "\\n")
Path(a.out_dir).mkdir(parents=True, exist_ok=True)
(Path(a.out_dir) / "best_model.pt").write_bytes(b"x")
res = Path(os.environ["MY_LLM_RESULTS"]) / "stage9_fake"
res.mkdir(parents=True, exist_ok=True)
(res / "train.json").write_text(json.dumps({"stage": "stage9_fake", "data_sha256": "abc", "peak_rss_mb": 81.0}))
'''
FAKE_EVALUATE = '''
import argparse, sys
from pathlib import Path
p = argparse.ArgumentParser()
p.add_argument("--model_path", default="checkpoints/best_model.pt")
p.add_argument("--run_dir", default=None)
a = p.parse_args()
if not Path(a.model_path).is_absolute() or not Path(a.model_path).is_file():
    sys.exit(3)  # must read the measured training run's checkpoint
'''


def test_measure_commands_times_a_bounded_run_and_report_renders_it(tmp_path, monkeypatch, capsys):
    from scripts import measure_commands as mc

    monkeypatch.delenv("MY_LLM_DATA", raising=False)  # the fake stage reads no data: "bundled / default data"
    stage = tmp_path / "stage9_fake"
    stage.mkdir()
    (stage / "train.py").write_text(FAKE_TRAIN)
    (stage / "evaluate.py").write_text(FAKE_EVALUATE)
    train = mc.Command("fake_train", "stage9_fake", "python train.py --dataset x --epochs 4", steps=30,
                       train_count=r"train (\d+) / val")
    evaluate = mc.Command("fake_evaluate", "stage9_fake", "python evaluate.py --model_path checkpoints/best_model.pt",
                          kind="evaluate", uses="fake_train")
    rec = mc.measure(train, tmp_path, tmp_path / "work", {})
    meas, est = rec["measured"], rec["estimate"]
    assert rec["added_flags"][:4] == ["--max_steps", "30", "--log_every", "3"]
    assert 0.018 <= meas["s_per_step"] <= 0.06, meas           # 20 ms of sleep per step
    assert 0.14 <= meas["s_per_eval"] <= 0.45 and 0.25 <= meas["setup_s"] <= 1.5, meas
    assert meas["peak_rss_mb"] >= 80 and meas["result_peak_rss_mb"] == 81.0
    # 95 examples / batch 10 = 10 steps per epoch (from the log); --epochs 4 typed; eval at every epoch end
    assert (est["steps_per_epoch"], est["epochs"], est["total_steps"], est["evaluations"]) == (10, 4, 40, 4)
    assert est["steps_per_epoch_source"] == "the run's first end-of-epoch evaluation (at step 10)"
    # without an evaluation inside the run, the training-set size in the log gives ceil(95 / 10)
    assert mc.steps_per_epoch(train, None, "data: train 95 / val 5", [], "--batch_size B (default: 10)") == (
        10, "the run's log (95 training examples / batch 10, rounded up)")
    assert mc.steps_per_epoch(train, {"steps_per_epoch": 7}, "", [], "")[0] == 7
    assert est["early_stopping_patience"] == 2 and "early stopping (--patience 2)" in est["note"]
    parts = meas["setup_s"] + 40 * meas["s_per_step"] + 4 * meas["s_per_eval"] + meas["end_s"]
    assert abs(est["wall_s"] - parts) < 0.2
    assert rec["command"] == "cd stage9_fake && python train.py --dataset x --epochs 4" and rec["data_sha256"] == "abc"
    assert rec["measured_command"].endswith("--epochs 4 --max_steps 30 --log_every 3 --out_dir <tmp> --run_dir <tmp>")
    assert str(tmp_path) not in json.dumps({k: v for k, v in rec.items() if not k.startswith("_")})

    ev = mc.measure(evaluate, tmp_path, tmp_path / "work", {"fake_train": rec})  # exit 3 = wrong checkpoint
    assert ev["estimate"]["formula"].startswith("measured whole") and ev["measured"]["wall_s"] > 0

    # main() writes one file per command; report.py fills (and --check verifies) the COMMANDS block
    monkeypatch.setattr(mc, "COMMANDS", (train, evaluate))
    (tmp_path / "docs").mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("<!-- BEGIN COMMANDS stage=stage9_fake -->\nold\n<!-- END COMMANDS -->\n"
                      "<!-- BEGIN COMMANDS stage=stage8_none -->\n<!-- END COMMANDS -->\n"
                      "<!-- BEGIN RESULTS stage=all -->\n<!-- END RESULTS -->\n")
    assert mc.main(["--root", str(tmp_path), "--only", "fake_evaluate", "--steps", "10"]) == 0
    written = sorted((tmp_path / "results" / "reported" / "commands").glob("*.json"))
    assert [p.name.split("_2")[0] for p in written] == ["fake_evaluate"]  # its train run is measured, not written
    assert mc.main(["--root", str(tmp_path), "--only", "fake_train"]) == 0
    assert report.main(["--root", str(tmp_path), "--check"]) == 1
    assert report.main(["--root", str(tmp_path), "--no_plot"]) == 0
    text = readme.read_text()
    assert "old" not in text and "| `python train.py --dataset x --epochs 4` | 约 " in text and "（估计）" in text
    assert "实测 30 步后推算" in text and "4 个 epoch × 10 步" in text and "`--patience 2`" in text
    assert "| `python evaluate.py --model_path checkpoints/best_model.pt` | " in text and "（实测）" in text
    assert text.index("python train.py --dataset x") < text.index("python evaluate.py")  # the README's order
    assert "数据：仓库自带的数据" in text and "1 分钟平均负载" in text
    assert "](/results/reported/commands/fake_train_" in text and "尚未测量" in text  # stage8 has no measurement
    assert "待复现" in text  # the commands/ files are not results: the results table stays empty
    assert report.main(["--root", str(tmp_path), "--check"]) == 0
    assert mc.main(["--only", "nope"]) == 2


def test_measured_commands_are_the_readme_commands_and_have_blocks():
    from scripts import measure_commands as mc

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for c in mc.COMMANDS:
        section = readme.split(f"cd {c.stage}\n", 1)[1].split("####", 1)[0]
        assert c.command in section, c.command
        assert f"<!-- BEGIN COMMANDS stage={c.stage} -->" in section, c.stage
