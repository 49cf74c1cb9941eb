"""visualize.ipynb runs top to bottom (it trains its own small model on the bundled Multi30k), is committed without
outputs, and what its prose says is what its cells print: the small model's numbers are its own run's, the stage 3 /
stage 4 comparison comes from the committed result files, the cost curves are measured."""
import json
import re
from pathlib import Path

from scripts import REPO_ROOT
from scripts.log import read_metrics
from scripts.testing import run_notebook
from stage4_transformer.benchmark import TRANSLATE_TRAIN

NB = Path(__file__).resolve().parent.parent / "visualize.ipynb"
REPORTED = REPO_ROOT / "results" / "reported"


def test_notebook_is_stripped():
    nb = json.loads(NB.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def committed_scores(stage):
    """The lines section 5 must print for a stage, from the committed result files."""
    rows = []
    for p in sorted((REPORTED / stage).glob("*.json")):
        rec = json.loads(p.read_text(encoding="utf-8"))
        bleu = rec.get("metrics", {}).get("test_2016_flickr/bleu_beam5")
        if rec.get("task") == "translation" and bleu is not None:
            rows.append(f"{stage} committed: {rec.get('model')} | test_2016_flickr sacreBLEU (beam 5) {bleu:.2f} | "
                        f"{p.name}")
    return rows or [f"{stage}: no committed translation result file yet"]


def has_examples(stage):
    for p in (REPORTED / stage).glob("*.json"):
        rec = json.loads(p.read_text(encoding="utf-8"))
        if rec.get("examples") or rec.get("translations"):
            return True
    return False


def test_notebook_runs_and_its_prose_matches_its_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_LLM_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("MY_LLM_DATA", raising=False)  # the bundled data, as on a fresh clone
    nb = run_notebook(NB, timeout=300, cwd=tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    prose = "".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")

    # the prose describes the code
    for said, done in [("训练 240 步", '"--max_steps", "240"'), ("每 120 步", '"--eval_every", "120"'),
                       ("前 100 个验证句", '"--val_sentences", "100"'),
                       ("1,000 词元的联合 BPE", '"--vocab_size", "1000"'), ("预热 40 步", '"--warmup_steps", "40"'),
                       ("各 2 层", '"--enc_layers", "2", "--dec_layers", "2"'),
                       ("$d_{model}=64$", '"--d_model", "64"'), ("4 个头", '"--n_heads", "4"'),
                       ("1,200 个词元", '"--max_tokens", "1200"'), ("pre-LN", '"--norm_first"'),
                       ("余弦学习率", '"--lr_schedule", "cosine"'), ("`CKPT`", "CKPT = "),
                       ("$d=64$，batch 4", "C, H, B = 64, 4, 4"), ("取 3 次中最快", "repeats=3")]:
        assert said in prose and done in code, said

    # section 1: |PE|^2 = d/2 everywhere, PE(p)·PE(q) depends on p - q only, largest at 0, falling but not monotonic
    lo, hi = map(float, re.search(r"\|PE\(pos\)\|\^2 = ([\d.]+) \.\. ([\d.]+) for all 100 positions \(d/2 = 32\)",
                                  text).groups())
    assert lo == hi == 32.0 and "等于 $d/2$" in prose
    spread = re.search(r"depends only on k: largest difference over p, for k = 1..20: (\S+)\n", text).group(1)
    assert float(spread) < 1e-9
    sim = {int(k): float(v) for k, v in re.findall(r"k=(\d+) ([\d.]+)", text.split("PE(0)·PE(k): ")[1].split("\n")[0])}
    assert sim[0] == 32.0 and sim[0] > sim[1] > sim[10] > sim[50]
    ups = int(re.search(r"rises again from k to k\+1 at (\d+) of the first 50 steps", text).group(1))
    assert ups > 0 and "不是严格单调" in prose

    # section 2: the noam peak is --lr at the end of the warm-up and half of it at 4x the warm-up; cosine ends at min_lr
    peak, at, half, at4 = re.search(r"noam: peak (\S+) at step (\d+) \(= --lr 1e-03\), (\S+) at step (\d+) \(4x", text
                                    ).groups()
    assert float(peak) == 1e-3 and float(half) == 5e-4 and int(at) == 799 and int(at4) == 3199
    assert "4 倍预热步处正好是峰值的一半" in prose
    flag = {f: float(TRANSLATE_TRAIN[TRANSLATE_TRAIN.index(f) + 1]) for f in ("--lr", "--warmup_steps", "--min_lr")}
    first, cpeak, at, last, min_lr = re.search(r"cosine: (\S+) at step 0, peak (\S+) at step (\d+), (\S+) at the last "
                                               r"step \(--min_lr (\S+)\)", text).groups()
    assert float(first) == float(f"{flag['--lr'] / flag['--warmup_steps']:.2e}")  # the benchmark preset's schedule
    assert float(cpeak) == flag["--lr"] and int(at) == flag["--warmup_steps"] - 1
    assert float(last) == float(min_lr) == flag["--min_lr"]
    assert "the paper's peak: 512^-0.5 * 4000^-0.5 = 6.99e-04 at step 4000" in text

    # section 3: the small model's numbers are its run's
    run = tmp_path / "runs" / "notebook"
    assert (run / "best_transformer.pt").is_file()
    evals = read_metrics(run / "metrics.jsonl", kind="eval")
    assert [r["step"] for r in evals] == [120, 240]
    best = max(evals, key=lambda r: r["val_bleu"])
    m = re.search(r"small model: (\d+) steps in \d+ s, ([\d,]+) parameters, best val BLEU ([\d.]+) at step (\d+), "
                  r"val loss ([\d.]+)", text)
    assert m and int(m.group(1)) == 240
    assert (m.group(3), int(m.group(4)), m.group(5)) == (f"{best['val_bleu']:.2f}", best["step"],
                                                         f"{best['val_loss']:.3f}")
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]  # it learned something in 240 steps

    # section 4: rows sum to 1, the causal mask leaves exactly zero weight on the future, every layer and head shown
    assert float(re.search(r"every attention row sums to 1 \(largest deviation (\S+)\)", text).group(1)) < 1e-5
    assert "decoder self-attention above the diagonal (the future): largest weight 0.0e+00" in text
    heads = re.findall(r"cross-attention layer (\d): mean max weight per head (.*)", text)
    assert [int(li) for li, _ in heads] == [0, 1]
    for _, line in heads:
        values = [float(v) for v in re.findall(r"head \d ([\d.]+)", line)]
        assert len(values) == 4 and all(0 < v <= 1 for v in values)
    assert "恰好为 0" in prose

    # section 5: the committed benchmark scores, read from the result files; the small model only with a note
    for stage in ("stage3_attention_seq2seq", "stage4_transformer"):
        for line in committed_scores(stage):
            assert line in text, line
    if not (has_examples("stage3_attention_seq2seq") and has_examples("stage4_transformer")):
        assert "note: no committed result file of stage 3 and stage 4 holds translations" in text
        assert "not the benchmark models'" in text and "第 3 节的小模型" in prose
        assert len(re.findall(r"small stage-4 model (greedy|beam 5): sacreBLEU [\d.]+ on the first 50", text)) == 2
        assert text.count("\nbeam 5: ") == 5

    # section 6: measured, per token: self-attention grows with T, the GRU stays about flat
    rows = re.findall(r"T +(\d+) \| self-attention layer +([\d.]+) ms = +([\d.]+) us/token .*\| GRU +([\d.]+) ms = +"
                      r"([\d.]+) us/token .*sequential steps 1 vs (\d+)", text)
    assert [int(r[0]) for r in rows] == [32, 64, 128, 256, 512, 1024]
    for T, a_ms, a_tok, g_ms, g_tok, seq in rows:
        rounding = 6 / (4 * int(T)) + 0.006  # both printed with 2 decimals
        assert abs(1000 * float(a_ms) / (4 * int(T)) - float(a_tok)) < rounding and seq == T
        assert abs(1000 * float(g_ms) / (4 * int(T)) - float(g_tok)) < rounding
    attn, gru = map(float, re.search(r"time per token from T=128 to T=1024: self-attention x([\d.]+), GRU x([\d.]+)",
                                     text).groups())
    assert attn > 1.5 and 0.5 < gru < 2.0, (attn, gru)
    assert "T = 6d = 384" in text and "$T>6d$" in prose
    assert "GRU 每个词元的用时大致不随 $T$ 变化，自注意力层每个词元的用时随 $T$ 增长" in prose
