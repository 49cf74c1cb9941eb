"""visualize.ipynb runs top to bottom (it trains its own small checkpoint) and is committed without outputs."""
import json
from pathlib import Path

from scripts.testing import run_notebook

NB = Path(__file__).resolve().parent.parent / "visualize.ipynb"


def test_notebook_is_stripped():
    nb = json.loads(NB.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c.get("outputs") and c.get("execution_count") is None for c in code)


def test_notebook_runs():
    nb = run_notebook(NB, timeout=300)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "temperature 0.3" in text and "scratch vs nn.LSTM max |diff|" in text
    diff = float(text.split("max |diff| of logits:")[1].split()[0])
    assert diff < 1e-4  # the scratch cell reproduces the trained nn.LSTM
    far = {line.split("|grad|")[0].strip(): float(line.split("40 steps back")[1])
           for line in text.splitlines() if "40 steps back" in line}
    assert far["LSTM (forget bias 3)"] > 1e4 * far["RNN"]  # the vanishing-gradient picture holds
