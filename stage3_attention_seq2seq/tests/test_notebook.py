"""The notebook runs top to bottom, is committed without outputs, and the numbers it prints are the real ones:
the small model's from its own run, the attention-vs-none comparison from the committed benchmark result files."""
import json
import re
from pathlib import Path

from scripts import REPO_ROOT
from scripts.log import read_metrics
from scripts.testing import run_notebook

NB = Path(__file__).resolve().parent.parent / "visualize.ipynb"
REPORTED = REPO_ROOT / "results" / "reported" / "stage3_attention_seq2seq"


def test_notebook_is_stripped():
    nb = json.loads(NB.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def newest(task, kind):
    recs = [json.loads(p.read_text(encoding="utf-8")) for p in REPORTED.glob("*.json")]
    recs = [r for r in recs if r["task"] == task and (r.get("attention_type") or r["model"]) == kind]
    return max(recs, key=lambda r: r["timestamp"])


def test_notebook_runs_and_prints_the_real_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_LLM_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    nb = run_notebook(NB, timeout=300, cwd=tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    prose = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "CKPT" in prose and "CKPT = " in code  # the variable the prose refers to exists
    for said, done in [("前 1,000 个训练句对", '"--limit_train", "1000"'), ("每 16 步", '"--eval_every", "16"'),
                       ("前 100 个验证句", '"--val_sentences", "100"'), ("前 50 句", "N = 50")]:
        assert said in prose and done in code, said  # the prose describes the code

    # section 1: the small model's numbers are its run's
    run = tmp_path / "runs" / "notebook"
    assert (run / "best_attention_model.pt").is_file()
    evals = read_metrics(run / "metrics.jsonl", kind="eval")
    best = max(evals, key=lambda r: r["val_bleu"])
    m = re.search(r"small model: (\d+) steps in \d+ s, val BLEU ([\d.]+), val loss ([\d.]+)", text)
    assert m and int(m.group(1)) == evals[-1]["step"] == 32 and "32 步" in prose  # the prose's step count
    assert m.group(2) == f"{best['val_bleu']:.2f}" and m.group(3) == f"{best['val_loss']:.3f}"

    # sections 3 and 4: attention vs none, greedy vs beam, from the committed result files
    for kind in ("bahdanau", "none"):
        train, ev = newest("translation_train", kind), newest("translation", kind)["metrics"]
        line = (f"{kind:9s} best val BLEU {train['metrics']['val_bleu']:.2f} | "
                + " | ".join(f"{s} {ev[f'{s}/bleu_beam5']:.2f}"
                             for s in ("test_2016_flickr", "test_2017_flickr", "test_2017_mscoco")))
        assert line in text
        assert (f"benchmark {kind:9s} test_2016_flickr: greedy {ev['test_2016_flickr/bleu_greedy']:.2f}, "
                f"beam 5 {ev['test_2016_flickr/bleu_beam5']:.2f}") in text
    assert re.search(r"small model greedy: sacreBLEU [\d.]+ on the first 50 sentences", text)
    assert text.count("beam 5: ") == 5 + 1  # five examples (and the small model's score line)
