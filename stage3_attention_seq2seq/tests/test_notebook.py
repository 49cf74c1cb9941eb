"""The notebook runs top to bottom (it trains its own two small models) and is committed without outputs."""
import json
from pathlib import Path

from scripts.testing import run_notebook

NB = Path(__file__).resolve().parent.parent / "visualize.ipynb"


def test_notebook_is_stripped():
    nb = json.loads(NB.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def test_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_LLM_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    nb = run_notebook(NB, timeout=300, cwd=tmp_path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert (tmp_path / "runs" / "notebook" / "bahdanau.pt").is_file()
    assert "beam 5:" in "".join(o.get("text", "") for o in nb.cells[-1].outputs)
