"""visualize.ipynb runs top to bottom (it trains its own small checkpoint), is committed without outputs,
and what its prose says matches the numbers it prints."""
import json
import math
import re
from pathlib import Path

from scripts.testing import run_notebook

NB = Path(__file__).resolve().parent.parent / "visualize.ipynb"


def test_notebook_is_stripped():
    nb = json.loads(NB.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c.get("outputs") and c.get("execution_count") is None for c in code)


def test_notebook_runs_and_its_prose_matches_its_numbers():
    nb = run_notebook(NB, timeout=300)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    prose = "".join(c.source for c in nb.cells if c.cell_type == "markdown")

    # section 1: "训练 80 步（2 个 epoch），每 40 步在验证集上评估一次", "前 40,000 个字符", "完整的 111,540 个字符"
    pattern = r"(\d+) steps \(([\d.]+) epochs\), evaluated at steps \[([\d, ]+)\]"
    steps, epochs, evals = re.search(pattern, text).groups()
    every = int(evals.split(",")[0])
    assert f"训练 {steps} 步（{epochs} 个 epoch），每 {every} 步" in prose
    assert [int(s) for s in evals.split(",")] == list(range(every, int(steps) + 1, every))
    train_chars = int(re.search(r"train ([\d,]+) tokens", text).group(1).replace(",", ""))
    assert f"前 {train_chars:,} 个字符" in prose and "完整的 111,540 个字符" in prose
    loss, bpc = map(float, re.search(r"val loss ([\d.]+) nats/char = ([\d.]+) bits/char", text).groups())
    assert loss < 2.9 and abs(bpc - loss / math.log(2)) < 2e-3  # learned structure (unigram entropy ~3.3 nats)

    # section 3: "温度越低越保守 ..., 越高越随机": more distinct characters as the temperature rises
    samples = re.findall(r"--- temperature ([\d.]+) ---\n(.*?)(?=\n--- temperature|\nscratch vs)", text, re.S)
    assert [t for t, _ in samples] == ["0.3", "0.8", "1.5"]
    distinct = [len(set(s)) for _, s in samples]
    assert distinct[0] < distinct[1] < distinct[2], distinct

    # section 4: the scratch cell reproduces the trained nn.LSTM
    assert float(text.split("max |diff| of logits:")[1].split()[0]) < 1e-4

    # section 5: the RNN's gradient vanishes; so does the default-initialised LSTM's; forget bias 3 carries it far
    near = {line.split("|grad|")[0].strip(): float(line.split("1 step back")[1].split(",")[0])
            for line in text.splitlines() if "40 steps back" in line}
    far = {line.split("|grad|")[0].strip(): float(line.split("40 steps back")[1])
           for line in text.splitlines() if "40 steps back" in line}
    assert far["RNN"] < 1e-6 * near["RNN"]
    assert far["LSTM (default init)"] < 1e-4 * far["LSTM (forget bias 3)"]
    fb3 = "LSTM (forget bias 3)"
    assert far[fb3] > 1e4 * far["RNN"] and far[fb3] > 0.1 * near[fb3]
