"""Repository-level promises: layout, the README's two commands, CI, stage isolation."""
import re
from pathlib import Path

from scripts import REPO_ROOT

STAGES = ["stage1_mlp", "stage2_rnn_lstm", "stage3_attention_seq2seq", "stage4_transformer", "stage5_gpt"]
INSTALL_AND_RUN = "pip install -r requirements.txt && python scripts/quickstart.py"
INSTALL_AND_TEST = "pip install -r requirements.txt && python -m pytest -q"


def test_top_level_layout():
    for name in [*STAGES, "docs", "scripts", "requirements.txt", "README.md", "LICENSE", "pyproject.toml", ".ci/run"]:
        assert (REPO_ROOT / name).exists(), name


def test_readme_gives_exactly_two_setup_commands_and_ci_runs_the_test_one():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## 🚀 快速开始", 1)[1].split("### ", 1)[0]
    commands = [ln.strip() for ln in quick.splitlines() if ln.strip().startswith("pip install")]
    assert commands == [INSTALL_AND_RUN, INSTALL_AND_TEST]
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert [ln.strip() for ln in ci.splitlines() if ln.startswith("pip install")] == [INSTALL_AND_TEST]


def test_requirements_pin_the_cpu_torch_and_install_the_repo():
    lines = [ln.split("#")[0].strip() for ln in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    assert "torch==2.13.0" in lines and "-e ." in lines
    assert all("==" in ln for ln in lines if ln != "-e ."), "every dependency is pinned"


def test_seed_readme_commands_are_documented_verbatim():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for cmd in ["python train.py --dataset ag_news --epochs 20",
                "python train.py --dataset imdb --epochs 30 --lr 0.001 --batch_size 64",
                "python evaluate.py --model_path checkpoints/best_model.pt",
                "python train.py --model_type lstm --vocab_type char --epochs 15",
                "python train.py --attention_type bahdanau --epochs 30",
                "python evaluate.py --model_path checkpoints/best_attention_model.pt"]:
        assert cmd in readme, cmd


def _imports(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    return set(re.findall(r"^\s*(?:from|import)\s+(stage\d\w*|scripts)\b", text, re.M))


def test_stages_never_import_each_other_and_scripts_import_no_stage():
    for stage in STAGES:
        for py in (REPO_ROOT / stage).rglob("*.py"):
            others = {m for m in _imports(py) if m.startswith("stage") and m != stage}
            assert not others, f"{py.relative_to(REPO_ROOT)} imports {others}"
    for py in (REPO_ROOT / "scripts").rglob("*.py"):
        assert not {m for m in _imports(py) if m.startswith("stage")}, py


CLIS = sorted(p for s in STAGES for name in ["train", "evaluate", "generate", "translate", "benchmark"]
              for p in [REPO_ROOT / s / f"{name}.py"] if p.exists())


def test_every_cli_help_runs_and_states_each_default_once(monkeypatch, capsys):
    import runpy
    import sys

    assert len(CLIS) >= 10
    for path in CLIS:
        monkeypatch.chdir(path.parent)
        monkeypatch.setattr(sys, "argv", [path.name, "--help"])
        code = 0
        try:
            runpy.run_path(str(path), run_name="__main__")
        except SystemExit as e:  # argparse's --help exits 0; a preset dispatcher may print and return
            code = e.code
        text = " ".join(capsys.readouterr().out.split())
        assert code == 0 and ("usage:" in text or "python benchmark.py" in text), path
        assert not re.search(r"\(default: [^()]*\) \(default:", text), f"{path}: a default is printed twice"
        assert "(default: None)" not in text and "(default: False)" not in text, path
        assert not re.search(r"\(default: (\)|\[\]|\(\)|\[')", text), f"{path}: an empty or list-repr default"
        assert re.search(r"--device (\{[a-z,]+\} |DEVICE )[^-]*\(default: \w+\)", text) or "--device" not in text, path
