"""visualize.ipynb runs top to bottom on the bundled sample (and is committed without outputs)."""
from pathlib import Path

import nbformat

from scripts.testing import run_notebook

NB = Path(__file__).resolve().parent.parent / "visualize.ipynb"


def test_notebook_has_no_outputs_and_runs(monkeypatch):
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    saved = nbformat.read(NB, as_version=4)
    assert all(not c.get("outputs") for c in saved.cells if c.cell_type == "code")
    nb = run_notebook(NB, timeout=300)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "validation accuracy" in text and "macro-F1" in text and "pos:" in text
