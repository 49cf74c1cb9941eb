"""visualize.ipynb runs top to bottom (it trains its own small GPT on the bundled tiny Shakespeare), is committed
without outputs, and what its prose says is what its cells do and print: the small model's numbers are its own
run's, the greedy sample is the checkpoint's, the cache timings are measured in the run."""
import json
import math
import re
from pathlib import Path

import torch

from scripts.log import read_metrics
from scripts.testing import run_notebook
from stage5_gpt.models import PRESETS
from stage5_gpt.utils.checkpoint import BEST_NAME, load_model

NB = Path(__file__).resolve().parent.parent / "visualize.ipynb"


def test_notebook_is_stripped():
    nb = json.loads(NB.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def floats(text):
    return [float(v) for v in re.findall(r"-?\d+\.\d+", text)]


def test_notebook_runs_and_its_prose_matches_its_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_LLM_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("MY_LLM_DATA", raising=False)  # the bundled data, as on a fresh clone
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # figures as PNG outputs
    nb = run_notebook(NB, timeout=300, cwd=tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    prose = "".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    figures = sum(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
    ft = re.findall(r"^(ft_imdb_\w+): (待复现|test accuracy ([\d.]+))", text, re.M)
    assert [f[0] for f in ft] == ["ft_imdb_full", "ft_imdb_scratch", "ft_imdb_head", "ft_imdb_lora", "ft_imdb_long"]
    published = [f for f in ft if f[2]]
    # loss curve, two attention figures, position similarity, embeddings, cache timing (+ fine-tuning, when published)
    assert figures == 6 + bool(published)

    # the prose describes the code
    assert PRESETS["nano"] == dict(n_layer=4, n_head=4, n_embd=128, block_size=64)
    for said, done in [("训练 200 步", '"--max_steps", "200"'), ("每 50 步", '"--eval_every", "50"'),
                       ("固定的 6 个 batch", '"--eval_iters", "6"'), ("每步 8 个随机窗口", '"--batch_size", "8"'),
                       ("预热 20 步", '"--warmup_steps", "20"'), ("`--preset nano`", '"--preset", "nano"'),
                       ("4 层、4 个头、$C=128$、上下文 64", '"--preset", "nano"'), ("`CKPT`", "CKPT = "),
                       ("上下文 512", "block_size=512"), ("各生成 150 个字符", "model.generate(ids, 150,"),
                       ("从 1 个词元开始贪心生成", "torch.zeros(1, 1, dtype=torch.long)"),
                       ("同一个种子", "manual_seed(1337)"), ("`use_cache=False`", "use_cache=False")]:
        assert said in prose and done in code, said

    # section 1: the small model's numbers are its run's; an untrained model is about uniform
    run = tmp_path / "runs" / "notebook"
    evals = read_metrics(run / "metrics.jsonl", kind="eval")
    assert [r["step"] for r in evals] == [50, 100, 150, 200]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] < math.log(65)  # it learned something in 200 steps
    best = min(evals, key=lambda r: r["val_loss"])
    m = re.search(r"trained (\d+) steps in \d+ s: best val loss ([\d.]+) nats/char = ([\d.]+) bits/char at step "
                  r"(\d+)", text)
    assert m and int(m.group(1)) == 200
    assert (m.group(2), int(m.group(4))) == (f"{best['val_loss']:.3f}", best["step"])
    assert abs(float(m.group(3)) - best["val_loss"] / math.log(2)) < 1e-3
    model, tok, _ = load_model(run / BEST_NAME)
    assert f"{model.num_params():,} parameters ({model.num_params(non_embedding=False):,} counting" in text
    mfu = float(re.search(r"MFU ([\d.]+)% of the ([\d.]+) GFLOP/s matmul peak measured", text).group(1))
    assert 0 < mfu <= 100
    loss0, ln_v = map(float, re.search(r"an untrained model: loss ([\d.]+) on a val batch; ln 65 = ([\d.]+)",
                                       text).groups())
    assert abs(loss0 - ln_v) < 0.15 and "约为 $\\ln 65$" in prose

    # section 2: rows sum to 1, exactly zero weight on the future, every layer and head, the uniform reference
    assert float(re.search(r"every attention row sums to 1 \(largest deviation (\S+)\)", text).group(1)) < 1e-5
    assert "weight above the diagonal (the future): largest 0.0e+00" in text and "恰好为 0" in prose
    heads = re.findall(r"layer (\d): mean look-back distance per head (.*)", text)
    assert [int(li) for li, _ in heads] == [0, 1, 2, 3]
    for _, line in heads:
        dist, prev = line.split(" | ")
        assert len(re.findall(r"head \d [\d.]+", dist)) == 4 and len(floats(prev)) == 4
    T, ref = re.search(r"uniform causal attention, for reference: mean look-back distance ([\d.]+), .*\(T = (\d+)",
                       text).group(2, 1)
    assert float(ref) == round((int(T) - 1) / 4, 1) and "$(T-1)/4$" in prose

    # section 3: random initial position vectors are almost orthogonal
    init = re.search(r"mean cos\(W_p\[p\], W_p\[p\+k\]\) at init: (.*)", text).group(1)
    assert len(floats(init)) == 6 and all(abs(v) < 0.05 for v in floats(init)) and "几乎两两正交" in prose
    assert re.search(r"mean cos\(W_p\[p\], W_p\[p\+k\]\) trained: k=1 ", text)

    # section 4: the output layer is the embedding; PCA shares of the variance
    assert "tied: True" in text and "同一块存储" in prose
    pc1, pc2 = map(float, re.search(r"PC 1 and PC 2 explain ([\d.]+)% and ([\d.]+)%", text).groups())
    assert 100 > pc1 >= pc2 > 0
    assert len(re.findall(r"nearest to .*: ", text)) == 6

    # section 5: entropy grows with the temperature; nucleus sizes grow with p; the greedy text is the model's
    ent = [float(v) for v in re.findall(r"T=[\d.]+ ([\d.]+)", re.search(r"entropy of the next character.*", text)
                                                                  .group(0))]
    assert len(ent) == 6 and ent == sorted(ent) and ent[0] < ent[-1] and "单调增加" in prose
    kept = [int(k) for k in re.findall(r"top_p [\d.]+: keeps (\d+) of 65", text)]
    assert len(kept) == 3 and kept == sorted(kept) and kept[0] >= 1
    start, threads = torch.tensor([tok.encode("ROMEO:")]), torch.get_num_threads()
    torch.set_num_threads(1)  # as in the notebook: the same float sums, the same argmax
    try:
        greedy = tok.decode(model.generate(start, 150, temperature=0.0)[0].tolist())
    finally:
        torch.set_num_threads(threads)
    assert f"--- temperature 0.0 ---\n{greedy}\n" in text
    assert len(re.findall(r"\n--- temperature [^\n]* ---\n", text)) == 6

    # section 7: the fine-tuning numbers are the published result files
    reported = Path(__file__).resolve().parents[2] / "results" / "reported" / "stage5_gpt"
    files = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(reported.glob("*.json"))]
    for name, _, acc in published:
        key = {"ft_imdb_full": ("full", "pretrained", 256), "ft_imdb_scratch": ("full", "scratch", 256),
               "ft_imdb_head": ("head", "pretrained", 256), "ft_imdb_lora": ("lora", "pretrained", 256),
               "ft_imdb_long": ("full", "pretrained", 512)}[name]
        rec = [r for r in files if r.get("task") == "classification" and r.get("dataset") == "imdb"
               and (r.get("mode"), r.get("init"), r.get("config", {}).get("max_len")) == key][-1]
        assert acc == f"{rec['metrics']['accuracy']:.4f}", name
    assert "待复现" in prose and "这里不训练" in prose

    # section 6: measured; identical tokens; the uncached run does n(n+1)/2 positions; the gap grows with n
    rows = re.findall(r"(\d+) new tokens \| positions run: cache +(\d+), no cache +(\d+) \| KV cache +([\d.]+) ms \| "
                      r"no cache +([\d.]+) ms \| x([\d.]+) \| identical tokens (\w+)", text)
    assert [int(r[0]) for r in rows] == [16, 32, 64, 128, 256]
    for n, cached, uncached, t_cache, t_none, speedup, same in rows:
        n = int(n)
        assert same == "True" and int(cached) == n and int(uncached) == n * (n + 1) // 2
        assert abs(float(t_none) / float(t_cache) - float(speedup)) < 0.01 + 0.06 * float(speedup) / float(t_cache)
    speedups = [float(r[5]) for r in rows]
    assert speedups[-1] > 1 and speedups[-1] > speedups[0], speedups
    assert "cache size per sequence: 2 x 4 layers x 512 positions x 128 = 524,288 floats = 2.0 MiB" in text
    assert "$2\\cdot L\\cdot T_{max}\\cdot C$" in prose
