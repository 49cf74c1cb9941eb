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


CLIS = sorted(p for s in STAGES for name in ["train", "evaluate", "generate", "translate", "benchmark", "classify",
                                             "average"]
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


class _Captured(Exception):
    pass


def _parsers_of(path, monkeypatch):
    """Every argparse parser the CLI at ``path`` builds when asked for ``--help`` (captured, not printed)."""
    import argparse
    import runpy
    import sys

    seen = []
    real = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        seen.append(self)
        raise _Captured

    monkeypatch.chdir(path.parent)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(sys, "argv", [path.name, "--help"])
    try:
        runpy.run_path(str(path), run_name="__main__")
    except (_Captured, SystemExit):
        pass
    finally:
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", real)
    return seen


OLD_SPELLINGS = ("--checkpoint_dir", "--log_interval", "--eval_interval", "--time_budget_min", "--out")
CONTRACT_STAGES = ("stage1_mlp", "stage2_rnn_lstm", "stage3_attention_seq2seq", "stage4_transformer", "stage5_gpt")


def test_every_cli_speaks_the_one_flag_vocabulary(monkeypatch):
    """The shared flags have the same name, help text (meaning) and "zero = off" defaults in every CLI of stages 1-5."""
    import argparse

    from scripts.flags import DEFAULT_SEED, HELP, TRAIN_FLAGS

    checked = 0
    for path in [p for p in CLIS if p.parent.name in CONTRACT_STAGES]:
        parsers = _parsers_of(path, monkeypatch)
        assert parsers, f"{path}: no argparse parser built"
        for parser in parsers:
            visible = [a for a in parser._actions if a.help != argparse.SUPPRESS]
            shown = {s for a in visible for s in a.option_strings}
            for old in OLD_SPELLINGS:
                assert old not in shown, f"{path}: {old} is an old spelling (hidden aliases only)"
            for action in visible:
                if action.dest in HELP and action.option_strings:
                    where = f"{path.relative_to(REPO_ROOT)} --{action.dest}"
                    assert f"--{action.dest}" == action.option_strings[0], where
                    assert action.help.startswith(HELP[action.dest]), f"{where}: help is not the shared meaning"
                    assert action.default is not None or action.dest in ("checkpoint", "data_dir", "run_dir"), where
                    checked += 1
                if action.dest == "seed":
                    assert action.default == DEFAULT_SEED, f"{path}: --seed default {action.default}"
                if action.dest == "checkpoint":
                    assert action.option_strings == ["--checkpoint", "--model_path"], path
            if path.name in ("train.py", "classify.py"):
                dests = {a.dest for a in visible}
                missing = [f for f in TRAIN_FLAGS if f not in dests]
                assert not missing, f"{path}: lacks shared flags {missing}"
    assert checked > 40


def test_ruff_check_is_clean():
    import shutil
    import subprocess

    ruff = shutil.which("ruff")
    assert ruff, "ruff is pinned in requirements.txt"
    p = subprocess.run([ruff, "check", "--output-format", "concise", "."], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:]
