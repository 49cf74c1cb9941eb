"""visualize.ipynb runs top to bottom on the bundled sample, is committed without outputs, and the numbers it
prints agree with each other and with what its prose says."""
import re
from pathlib import Path

import nbformat

from scripts.testing import run_notebook

NB = Path(__file__).resolve().parent.parent / "visualize.ipynb"


def test_notebook_has_no_outputs_and_runs(monkeypatch):
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    saved = nbformat.read(NB, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in saved.cells if c.cell_type == "code")
    prose = "".join(c.source for c in saved.cells if c.cell_type == "markdown")
    nb = run_notebook(NB, timeout=300)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")

    n_train, n_val, steps = map(int, re.search(r"train (\d+) / val (\d+) reviews, (\d+) steps", text).groups())
    assert (n_train, n_val) == (1500, 200) and steps == 3 * -(-1500 // 64)  # 3 epochs of batch 64
    assert f"{n_train:,}" in prose and f"{n_val} 条" in prose and "4,000" in prose and "3 个 epoch" in prose

    acc_train = float(re.search(r"validation accuracy: ([\d.]+)", text).group(1))
    acc, f1 = map(float, re.search(r"accuracy ([\d.]+)  macro-F1 ([\d.]+)", text).groups())
    assert acc == acc_train  # the reloaded best checkpoint on the rebuilt validation split: the same number
    assert 0.75 < acc <= 1 and 0.7 < f1 <= acc + 0.05
    curve = [float(v) for v in re.search(r"3 evaluations, val accuracy ([\d. →]+)", text).group(1).split(" → ")]
    assert max(curve) == acc  # best_model.pt is the best evaluation

    ngrams = {m.group(1): m.group(2).split(", ") for m in re.finditer(r"^\s*(pos|neg): (.+)$", text, re.M)}
    assert len(ngrams["pos"]) == len(ngrams["neg"]) == 20 and not set(ngrams["pos"]) & set(ngrams["neg"])
    wrong = int(re.search(r"(\d+) of 200 validation reviews misclassified", text).group(1))
    assert wrong == round((1 - acc) * n_val)
