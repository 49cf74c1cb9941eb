"""Tests for the result-reading tools: quickstart runner and report generator."""
import json
import shutil
import sys
import textwrap
from pathlib import Path

from scripts import REPO_ROOT
from scripts import quickstart, report
from scripts.results import make_result, write_result


def _fake_stage(root: Path, name: str, body: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "quickstart.py").write_text(textwrap.dedent(body))


def test_quickstart_runs_registered_stages_and_summarises(tmp_path, capsys):
    rec = make_result("stage9_fake", "classification", "imdb", "val", {"accuracy": 0.75, "loss": 0.5}, params=1,
                      train_wall_s=0.1, device="cpu", seed=0, data_sha256="x", primary_metric="accuracy")
    line = f"print('RESULT ' + json.dumps({rec!r}))\n"
    _fake_stage(tmp_path, "stage9_fake", f"import json\nprint('training...')\n{line}{line}")  # train + evaluate, same split
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
                                                "| 结果 |\n|---|\n| 待复现（`results/reported/` 中尚无该阶段的结果文件） |\n"
                                                "<!-- END RESULTS -->\n")
    assert report.main(["--root", str(tmp_path), "--check"]) == 0


def test_repository_docs_are_in_sync_with_reported_results():
    """README/docs numbers come only from results/reported (run scripts/report.py after adding one)."""
    assert report.main(["--root", str(REPO_ROOT), "--check"]) == 0
