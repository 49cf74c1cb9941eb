"""Cross-stage comparison tables (classification, translation, language modelling, parallelism, the roadmap's
timeline) and one figure per table, built from ``results/reported/`` only.

    python scripts/compare.py            # rewrite every COMPARE block + docs/figures/compare_<table>.png
    python scripts/compare.py --check    # exit 1 if any block is out of date (used by the tests)

The tables live in README.md and docs/*.md between markers::

    <!-- BEGIN COMPARE table=classification -->      (translation, lm, parallelism, timeline)
    ...generated...
    <!-- END COMPARE -->

Each row of a table is chosen by the selection rules below (:data:`ROWS`): the newest reported result file whose
fields match. A row without a matching file says 待复现 and gives the command that would produce it; a column whose
metric the chosen file lacks shows — and the footnote names the file and the missing field. Nothing is computed
that is not in a file except two shown ratios (the parallelism table's growth from the shortest to the longest
sequence). Every row's footnote gives the hardware, command, seed, data checksum and commit, like report.py.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python scripts/compare.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts import REPO_ROOT
from scripts.report import STAGE_NAMES, fmt_params, fmt_time, load_results, rewrite_blocks

BLOCK = re.compile(r"(<!-- BEGIN COMPARE table=(?P<table>\w+) -->\n)(?P<body>.*?)(<!-- END COMPARE -->)", re.S)
TABLES = ("classification", "translation", "lm", "multitask", "forgetting", "parallelism", "timeline")
FIGURES = ("classification", "translation", "lm", "parallelism")

CLASSIFY_TASKS = ("classification", "classify")  # stage 1 and 4 write "classification"


# ----- the selection table -----------------------------------------------------------------------------------------
# A row = Row(table, id, label, group, stage, match, pending, keys).
# * match: result-file field -> wanted value; a tuple means "any of these"; a callable gets the whole record
#   (key "_rec") or the field's value; "command~" matches a substring of the command. The newest matching file
#   (by timestamp) is the row.
# * pending: the command that would produce the row (shown while it says 待复现). Stage 5's rows are told apart by the
#   ``mode`` (full / head / lora) and ``init`` (pretrained / scratch) fields of finetune.py's result files.
# * keys: column -> candidate fields of the file, first present wins (overrides the table's default; "metrics.x" is
#   a metric, anything else a top-level field). Stage 1's ``samples_per_s`` counts featurized inputs, so its rows
#   read the raw-text throughput ``end_to_end_samples_per_s`` only.

@dataclass
class Row:
    table: str
    id: str
    label: str
    group: str
    stage: str
    match: dict
    pending: str
    keys: dict = field(default_factory=dict)


STAGE1_SPEED = {"samples_per_s": ("end_to_end_samples_per_s",)}
IMDB = {"task": CLASSIFY_TASKS, "dataset": "imdb", "split": "test", "protocol": "standard"}
AG_CV = {"task": CLASSIFY_TASKS, "dataset": "ag_news", "protocol": "ag_news_test_cv"}
AG_GROUP = "AG News（ag_news_test_cv：测试集内交叉验证，非官方划分）"
AG_CV_S4 = (" --extra --dataset ag_news --protocol ag_news_test_cv --out_dir checkpoints/classify_ag_cv "
            "--run_dir runs/classify_ag_cv")

def tokens_per_review(n: int):
    """Match finetune.py's ``truncation`` field ("256 BPE tokens (head_tail)") by its token count."""
    return lambda value: str(value).startswith(f"{n} ")


ROWS = [
    # classification: IMDb (25k/25k) and the AG News test-split CV protocol
    Row("classification", "mlp_imdb", "MLP（bigram TF-IDF）", "IMDb 测试集", "stage1_mlp",
        dict(IMDB, impl="torch"), "cd stage1_mlp && python benchmark.py --only imdb_torch --report", STAGE1_SPEED),
    Row("classification", "lstm_imdb", "LSTM", "IMDb 测试集", "stage2_rnn_lstm", IMDB,
        "cd stage2_rnn_lstm && python classify.py --preset imdb_cpu --report"),
    Row("classification", "transformer_imdb", "Transformer 编码器", "IMDb 测试集", "stage4_transformer", IMDB,
        "cd stage4_transformer && python benchmark.py classify --report"),
    *[Row("classification", f"gpt_{key}_imdb", label, "IMDb 测试集", "stage5_gpt",
          dict(IMDB, mode=mode, init=init, truncation=tokens_per_review(512 if key == "long" else 256)),
          "cd stage5_gpt && python benchmark.py pretrain --report && "
          f"python benchmark.py ft_imdb_{key} --report")
      for key, mode, init, label in (("full", "full", "pretrained", "GPT（预训练 + 全部微调）"),
                                     ("scratch", "full", "scratch", "GPT（同一结构，从零训练）"),
                                     ("head", "head", "pretrained", "GPT（预训练，只训练分类头）"),
                                     ("lora", "lora", "pretrained", "GPT（预训练 + LoRA）"),
                                     ("long", "full", "pretrained", "GPT（预训练 + 全部微调，512 词元）"))],
    Row("classification", "mlp_ag", "MLP（bigram TF-IDF）", AG_GROUP, "stage1_mlp", AG_CV,
        "cd stage1_mlp && python benchmark.py --only ag_news_cv --report", STAGE1_SPEED),
    Row("classification", "lstm_ag", "LSTM", AG_GROUP, "stage2_rnn_lstm", AG_CV,
        "cd stage2_rnn_lstm && python classify.py --preset imdb_cpu --dataset ag_news --protocol ag_news_test_cv "
        "--out_dir checkpoints/classify_ag_cv --run_dir runs/classify_ag_cv --report"),
    Row("classification", "transformer_ag", "Transformer 编码器", AG_GROUP,
        "stage4_transformer", AG_CV, "cd stage4_transformer && python benchmark.py classify --report" + AG_CV_S4),
    Row("classification", "gpt_full_ag", "GPT（预训练 + 全部微调）", AG_GROUP, "stage5_gpt",
        dict(AG_CV, mode="full", init="pretrained"), "cd stage5_gpt && python benchmark.py ft_ag_full --report"),
    Row("classification", "gpt_scratch_ag", "GPT（同一结构，从零训练）", AG_GROUP, "stage5_gpt",
        dict(AG_CV, mode="full", init="scratch"), "cd stage5_gpt && python benchmark.py ft_ag_scratch --report"),
    # translation: Multi30k en->fr, test_2016_flickr, beam 5
    *[Row("translation", f"s3_{att}", label, "Multi30k 英→法 test_2016_flickr", "stage3_attention_seq2seq",
          {"task": "translation", "dataset": "multi30k", "split": "test_2016_flickr", "attention_type": want},
          f"cd stage3_attention_seq2seq && python benchmark.py --attention_type {att} --max_minutes 45 --report")
      for att, want, label in (("none", "none", "RNN seq2seq（无注意力）"),
                               ("bahdanau", "bahdanau", "RNN + Bahdanau 注意力"),
                               ("luong_general", lambda v: str(v).startswith("luong"), "RNN + Luong 注意力"))],
    Row("translation", "s4_transformer", "Transformer", "Multi30k 英→法 test_2016_flickr", "stage4_transformer",
        {"task": "translation", "dataset": "multi30k", "split": "test_2016_flickr"},
        "cd stage4_transformer && python benchmark.py translate --report"),
    Row("translation", "s5_gpt", "GPT（仅解码器）", "Multi30k 英→法 test_2016_flickr", "stage5_gpt",
        {"task": "translation", "dataset": "multi30k", "split": "test_2016_flickr"},
        "cd stage5_gpt && python benchmark.py pretrain --report && python benchmark.py ft_translate --report"),
    # multi-task: one fine-tuned GPT per task vs the one model of finetune.py --task multitask (issue 15: every task
    # within 2 points of its single-task model); the multi-task file holds every task's metric as "<task>/<metric>"
    Row("multitask", "mt_model", "多任务模型", "", "stage5_gpt", {"task": "multitask"},
        "cd stage5_gpt && python benchmark.py ft_multitask --report"),
    Row("multitask", "mt_classify", "IMDb 测试集准确率", "", "stage5_gpt",
        dict(IMDB, mode="full", init="pretrained", truncation=tokens_per_review(256)),
        "cd stage5_gpt && python benchmark.py ft_imdb_full --report"),
    Row("multitask", "mt_translate", "Multi30k test_2016_flickr BLEU（束宽 5）", "", "stage5_gpt",
        {"task": "translation", "dataset": "multi30k", "split": "test_2016_flickr"},
        "cd stage5_gpt && python benchmark.py ft_translate --report"),
    Row("forgetting", "forgetting", "遗忘", "", "stage5_gpt", {"task": "forgetting"},
        "cd stage5_gpt && python benchmark.py forgetting --report"),
    # language modelling: the same text and split, LSTM vs GPT
    Row("lm", "lstm_char", "LSTM 2x512（字符级）", "tiny Shakespeare 验证集", "stage2_rnn_lstm",
        {"task": "language_modeling", "dataset": "tinyshakespeare", "split": "val"},
        "cd stage2_rnn_lstm && python benchmark.py char --report",
        {"nats_per_char": ("metrics.val_loss",), "bpc": ("metrics.val_bpc",)}),
    Row("lm", "gpt_char", "GPT（字符级，20 分钟）", "tiny Shakespeare 验证集", "stage5_gpt",
        {"task": "lm_eval", "dataset": "shakespeare_char", "split": "val", "command~": "benchmark.py char20"},
        "cd stage5_gpt && python benchmark.py char20 --report"),
    Row("lm", "lstm_ptb", "LSTM 2x400（词级）", "PTB 测试集", "stage2_rnn_lstm",
        {"task": "language_modeling", "dataset": "ptb"}, "cd stage2_rnn_lstm && python benchmark.py ptb --report",
        {"word_ppl": ("metrics.test_perplexity",)}),
    Row("lm", "gpt_ptb", "GPT（BPE）", "PTB 测试集", "stage5_gpt",
        {"task": "lm_eval", "dataset": "ptb", "split": "test"}, "cd stage5_gpt && python benchmark.py ptb --report"),
    Row("lm", "lstm_wt2", "LSTM 2x400（词级，自适应 softmax）", "WikiText-2 测试集", "stage2_rnn_lstm",
        {"task": "language_modeling", "dataset": "wikitext2"},
        "cd stage2_rnn_lstm && python benchmark.py wikitext2 --report", {"word_ppl": ("metrics.test_perplexity",)}),
    Row("lm", "gpt_wt2", "GPT（BPE）", "WikiText-2 测试集", "stage5_gpt",
        {"task": "lm_eval", "dataset": "wikitext2", "split": "test"},
        "cd stage5_gpt && python benchmark.py wikitext2 --report"),
    # parallelism: ms per training step against the sequence length (scripts/steptime.py)
    Row("parallelism", "par_lstm", "LSTM", "", "stage2_rnn_lstm", {"task": "seqlen_speed"},
        "cd stage2_rnn_lstm && python benchmark.py seqlen --report"),
    Row("parallelism", "par_rnn_attn", "RNN + Bahdanau 注意力", "", "stage3_attention_seq2seq",
        {"task": "seqlen_speed"}, "cd stage3_attention_seq2seq && python benchmark.py seqlen --report"),
    Row("parallelism", "par_transformer", "Transformer", "", "stage4_transformer", {"task": "seqlen_speed"},
        "cd stage4_transformer && python benchmark.py seqlen --report"),
    # the roadmap's later steps: stage 5's LLaMA-style options at equal CPU time
    Row("ablation", "ablation", "GPT-2 / RoPE / RMSNorm / SwiGLU 消融", "tiny Shakespeare 验证集", "stage5_gpt",
        {"task": "ablation"}, "cd stage5_gpt && python benchmark.py ablation --report"),
]

# column: (header, default candidate fields, kind)
COLUMNS = {
    "classification": [("准确率", ("metrics.accuracy",), "pct"), ("宏 F1", ("metrics.macro_f1",), "pct"),
                       ("参数量", ("params",), "params"), ("可训练参数", ("trainable_params", "params"), "params"),
                       ("训练时间", ("train_wall_s",), "time"),
                       ("推理 ms/样本（批量 1）", ("latency_ms_batch1",), "ms"),
                       ("样本/秒（批量，从原始文本）", ("samples_per_s",), "rate")],
    "translation": [("BLEU", ("metrics.bleu",), "num"), ("chrF", ("metrics.chrf",), "num"),
                    ("参数量", ("params",), "params"), ("训练时间", ("train_wall_s",), "time"),
                    ("解码 1,000 句（束宽 5）", ("metrics.decode_s", "metrics.beam_decode_s"), "time")],
    "lm": [("nats/字符", ("metrics.nats_per_char",), "num3"), ("bits/字符", ("metrics.bpc",), "num3"),
           ("词级困惑度", ("metrics.word_ppl",), "num"), ("参数量", ("params",), "params"),
           ("训练时间", ("train_wall_s",), "time")],
}
COLUMN_KEYS = {"samples_per_s": "样本/秒（批量，从原始文本）", "nats_per_char": "nats/字符", "bpc": "bits/字符",
               "word_ppl": "词级困惑度"}  # Row.keys names -> column header


# ----- selection ---------------------------------------------------------------------------------------------------

def get(rec: dict, path: str):
    cur = rec
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def matches(rec: dict, row: Row) -> bool:
    if rec.get("stage") != row.stage:
        return False
    for key, want in row.match.items():
        if key == "_rec":
            ok = want(rec)
        elif key.endswith("~"):
            ok = want in str(rec.get(key[:-1]) or "")
        elif callable(want):
            ok = want(rec.get(key))
        elif isinstance(want, tuple):
            ok = rec.get(key) in want
        else:
            ok = rec.get(key) == want
        if not ok:
            return False
    return True


def newest_first(results: list[dict], row: Row) -> list[dict]:
    """The result files of ``row``, newest first (by timestamp, then file name)."""
    return sorted((r for r in results if matches(r, row)), key=lambda r: (r.get("timestamp", ""), r["_file"]),
                  reverse=True)


def select(results: list[dict], row: Row) -> dict | None:
    found = newest_first(results, row)
    return found[0] if found else None


def train_companion(results: list[dict], rec: dict) -> dict | None:
    """The train result of an evaluation file without ``train_wall_s`` (stage 1): same stage, its ``checkpoint`` is
    the evaluated ``model_path``, written before the evaluation; the newest such file."""
    ckpt = rec.get("model_path") or rec.get("checkpoint")
    if not ckpt:
        return None
    found = [r for r in results if r["stage"] == rec["stage"] and r is not rec and r.get("checkpoint") == ckpt
             and r.get("train_wall_s") is not None and r.get("timestamp", "") <= rec.get("timestamp", "")]
    return max(found, key=lambda r: r["timestamp"]) if found else None


# ----- formatting --------------------------------------------------------------------------------------------------

def fmt(kind: str, value) -> str:
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "params":
        return fmt_params(value)
    if kind == "time":
        return fmt_time(value)
    if kind == "ms":
        return f"{value:.2f}"
    if kind == "rate":
        return f"{value:,.0f}"
    if kind == "num3":
        return f"{value:.3f}"
    return f"{value:.2f}"


def link(rec: dict) -> str:
    return f"[{Path(rec['_file']).name}]({'/' + rec['_file']})"


def provenance(rec: dict) -> str:
    sha = (rec.get("data_sha256") or "—")[:12]
    return (f"{rec['device']} · `{rec['command']}` · seed {rec['seed']} · data sha256 `{sha}` · "
            f"commit `{rec.get('git_commit')}` · {link(rec)}")


@dataclass
class Cell:
    text: str
    value: float | None = None


def row_cells(results: list[dict], row: Row, rec: dict) -> tuple[list[Cell], list[str]]:
    """The row's cells and its notes (which field is missing from which file, where a training time comes from)."""
    cells, notes = [], []
    keys = {COLUMN_KEYS.get(k, k): v for k, v in row.keys.items()}
    for header, default, kind in COLUMNS[row.table]:
        candidates = keys.get(header, default)
        value = next((v for v in (get(rec, c) for c in candidates) if isinstance(v, (int, float))
                      and not isinstance(v, bool)), None)
        if value is None and header == "训练时间" and (comp := train_companion(results, rec)):
            value = comp["train_wall_s"]
            notes.append(f"训练时间来自训练结果文件 {link(comp)}")
        if value is None:
            names = " / ".join(f"`{c.removeprefix('metrics.')}`" for c in candidates)
            notes.append(f"{Path(rec['_file']).name} 中没有 {names}（{header}）")
            cells.append(Cell("—"))
        else:
            cells.append(Cell(fmt(kind, value), float(value)))
    return cells, notes


def rows_of(table: str) -> list[Row]:
    return [r for r in ROWS if r.table == table]


def render_metric_table(table: str, results: list[dict]) -> str:
    headers = [h for h, _, _ in COLUMNS[table]]
    out = ["| 数据 | 模型 | 阶段 | " + " | ".join(headers) + " | 来源 |", "|---" * (len(headers) + 4) + "|"]
    foot, pending = [], []
    for row in rows_of(table):
        rec = select(results, row)
        stage = f"[{STAGE_NAMES[row.stage]}](/{row.stage}/README.md)"
        if rec is None:
            pending.append(row)
            out.append(f"| {row.group} | {row.label} | {stage} | " + " | ".join(["待复现"] * len(headers))
                       + f" | 待复现 {len(pending)} |")
            continue
        cells, notes = row_cells(results, row, rec)
        foot.append((row, rec, notes))
        out.append(f"| {row.group} | {row.label} | {stage} | " + " | ".join(c.text for c in cells)
                   + f" | [{len(foot)}] |")
    out.append("")
    for i, (row, rec, notes) in enumerate(foot, 1):
        model = f"（{rec['model']}）" if rec.get("model") else ""
        out.append(f"{i}. {row.label}{model}：{provenance(rec)}" + "".join(f"；{n}" for n in notes))
    if pending:
        out.append("")
        out.append("待复现（运行这些命令，再运行 `python scripts/report.py` 与 `python scripts/compare.py`）：")
        out.append("")
        for i, row in enumerate(pending, 1):
            out.append(f"{i}. {row.group} · {row.label}：`{row.pending}`")
    return "\n".join(out) + "\n"


def seqlen_points(rec: dict) -> dict[int, dict]:
    return {int(p["seq_len"]): p for p in rec.get("seqlen") or [] if isinstance(p, dict) and "seq_len" in p}


def render_parallelism(results: list[dict]) -> str:
    picked = [(row, select(results, row)) for row in rows_of("parallelism")]
    lengths = sorted({t for _, rec in picked if rec for t in seqlen_points(rec)})
    out = ["| 序列长度 T | " + " | ".join(f"{row.label}：ms/步（÷ 参考）" for row, _ in picked) + " |",
           "|---" * (len(picked) + 1) + "|"]
    if not lengths:
        out.append("| 32 … 512 | " + " | ".join("待复现" for _ in picked) + " |")
    for t in lengths:
        cells = []
        for _, rec in picked:
            p = seqlen_points(rec).get(t) if rec else None
            cells.append(f"{p['ms_per_step']:.1f}（{p['ratio']:.2f}）" if p else ("—" if rec else "待复现"))
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    if lengths:
        cells = []
        for _, rec in picked:
            pts = seqlen_points(rec) if rec else {}
            lo, hi = (min(pts), max(pts)) if pts else (None, None)
            cells.append(f"{pts[hi]['ms_per_step'] / pts[lo]['ms_per_step']:.1f} 倍（T {lo}→{hi}）"
                         if pts and hi != lo else ("—" if rec else "待复现"))
        out.append("| 增长 | " + " | ".join(cells) + " |")
    out.append("")
    out.append("每格：同一进程中训练一步（前向 + 反向 + AdamW，dropout 0，随机词元，三个模型同样的 batch 与 T；"
               "翻译模型的源句与目标句都是 T）的中位数毫秒；括号里是它除以紧挨着它计时的"
               "固定参考运算（float32 矩阵乘）的用时，机器忙或慢时"
               "两者一起变，这个比值可以跨机器比较。计时脚本是 `scripts/steptime.py`。")
    n = 0
    for row, rec in picked:
        if rec:
            n += 1
            out.append("" if n == 1 else None)
            out.append(f"{n}. {row.label}（{rec.get('model')}，{fmt_params(rec.get('params'))} 参数，batch "
                       f"{rec.get('batch_size')}，参考 {rec.get('reference')}）：{provenance(rec)}")
    pending = [row for row, rec in picked if rec is None]
    if pending:
        out.append("")
        out.append("待复现（在空闲的机器上依次运行，再运行 `python scripts/report.py` 与 "
                   "`python scripts/compare.py`）：")
        out.append("")
        for i, row in enumerate(pending, 1):
            out.append(f"{i}. {row.label}：`{row.pending}`")
    return "\n".join(x for x in out if x is not None) + "\n"


# ----- the roadmap's timeline --------------------------------------------------------------------------------------
# step, year and paper, where in this repository, and the measured numbers: (row id, column header or
# "seqlen:<T>" or "metric:<name>", what the number is)
TIMELINE = [
    ("感知机", "1958 · Rosenblatt", "[阶段 1 文档 §1](/docs/stage1_mlp.md)", []),
    ("MLP + 反向传播", "1986 · Rumelhart 等", "[阶段 1](/stage1_mlp/README.md)",
     [("mlp_imdb", "准确率", "IMDb 测试集准确率"), ("mlp_ag", "准确率", "AG News 测试集内交叉验证准确率")]),
    ("RNN / LSTM", "1990 · Elman；1997 · Hochreiter 与 Schmidhuber", "[阶段 2](/stage2_rnn_lstm/README.md)",
     [("lstm_char", "nats/字符", "tiny Shakespeare 验证集 nats/字符"), ("lstm_ptb", "词级困惑度", "PTB 测试集困惑度")]),
    ("注意力", "2014 · Bahdanau 等；2015 · Luong 等", "[阶段 3](/stage3_attention_seq2seq/README.md)",
     [("s3_none", "BLEU", "无注意力 BLEU"), ("s3_bahdanau", "BLEU", "Bahdanau 注意力 BLEU"),
      ("par_rnn_attn", "seqlen:512", "T=512 时训练一步 ms")]),
    ("Transformer", "2017 · Vaswani 等", "[阶段 4](/stage4_transformer/README.md)",
     [("s4_transformer", "BLEU", "Multi30k BLEU"), ("transformer_imdb", "准确率", "IMDb 准确率"),
      ("par_transformer", "seqlen:512", "T=512 时训练一步 ms")]),
    ("GPT", "2018 · Radford 等；2019 · GPT-2", "[阶段 5](/stage5_gpt/README.md)",
     [("gpt_char", "nats/字符", "tiny Shakespeare 验证集 nats/字符"), ("gpt_ptb", "词级困惑度", "PTB 测试集困惑度")]),
    ("RoPE", "2021 · Su 等", "[阶段 5 文档 §15](/docs/stage5_gpt.md)，`--pos rope`",
     [("ablation", "metric:val_loss_gpt2", "GPT-2 基线验证损失"), ("ablation", "metric:val_loss_rope", "只换 RoPE")]),
    ("RMSNorm", "2019 · Zhang 与 Sennrich", "[阶段 5 文档 §15](/docs/stage5_gpt.md)，`--norm rmsnorm`",
     [("ablation", "metric:val_loss_rmsnorm", "只换 RMSNorm 的验证损失")]),
    ("SwiGLU", "2020 · Shazeer", "[阶段 5 文档 §15](/docs/stage5_gpt.md)，`--mlp swiglu`",
     [("ablation", "metric:val_loss_swiglu", "只换 SwiGLU 的验证损失"),
      ("ablation", "metric:val_loss_llama", "三项全换")]),
    ("LoRA", "2021 · Hu 等", "[阶段 5 `models/lora.py`](/stage5_gpt/models/lora.py)，`finetune.py --mode lora`",
     [("gpt_lora_imdb", "准确率", "LoRA 微调的 IMDb 准确率"), ("gpt_lora_imdb", "可训练参数", "可训练参数")]),
    ("指令微调", "2022 · Ouyang 等（InstructGPT）", "尚未实现；阶段 5 的 `finetune.py` 是第一步",
     [("gpt_full_imdb", "准确率", "预训练 + 微调的 IMDb 准确率")]),
]


def timeline_value(results: list[dict], row_id: str, what: str) -> tuple[str, dict | None, Row]:
    row = next(r for r in ROWS if r.id == row_id)
    rec = select(results, row)
    if rec is None:
        return "待复现", None, row
    if what.startswith("seqlen:"):
        p = seqlen_points(rec).get(int(what.split(":")[1]))
        return (f"{p['ms_per_step']:.1f}" if p else "—"), rec, row
    if what.startswith("metric:"):
        v = get(rec, "metrics." + what.split(":")[1])
        return (f"{v:.3f}" if isinstance(v, (int, float)) else "—"), rec, row
    cells, _ = row_cells(results, row, rec)
    return cells[[h for h, _, _ in COLUMNS[row.table]].index(what)].text, rec, row


def render_timeline(results: list[dict]) -> str:
    out = ["| 技术 | 提出 | 在本仓库 | 实测（结果文件） |", "|---|---|---|---|"]
    files, pending = {}, {}
    for step, when, where, refs in TIMELINE:
        parts = []
        for row_id, what, label in refs:
            text, rec, row = timeline_value(results, row_id, what)
            if rec is None:
                pending.setdefault(row.pending, len(pending) + 1)
                parts.append(f"{label} 待复现（命令 {pending[row.pending]}）")
            else:
                files.setdefault(rec["_file"], (len(files) + 1, rec))
                parts.append(f"{label} {text} [{files[rec['_file']][0]}]")
        out.append(f"| {step} | {when} | {where} | {'；'.join(parts) or '—'} |")
    out.append("")
    for n, rec in files.values():
        out.append(f"{n}. {provenance(rec)}")
    if pending:
        out.append("")
        out.append("待复现的命令：")
        out.append("")
        out += [f"{n}. `{cmd}`" for cmd, n in pending.items()]
    return "\n".join(out) + "\n"


MT_TOLERANCE = 2.0  # points of accuracy (in %) or BLEU
MT_TASKS = {"mt_classify": ("classify", "classify/accuracy", "metrics.accuracy", 100.0),
            "mt_translate": ("translate", "translate/test_2016_flickr/bleu", "metrics.bleu", 1.0)}


def steps_cell(single, multi) -> str:
    """``single / multi`` step counts, ``—`` for a count a result file does not have."""
    return " / ".join(f"{int(n):,}" if n is not None else "—" for n in (single, multi))


def footnote(foot: list[dict], rec: dict) -> int:
    """The number (from 1) of ``rec`` among the files a table cites, appending it on its first citation."""
    if not any(r is rec for r in foot):
        foot.append(rec)
    return next(i for i, r in enumerate(foot, 1) if r is rec)


def render_multitask(results: list[dict]) -> str:
    """Each task of the multi-task model beside its single-task model: the difference, the 2-point target, and the
    steps each model trained on that task (a mixture that gives a task fewer steps is not the same budget). A pair
    whose result files name different pre-trained weights (``pretrained_weights``) is not compared."""
    rows = {r.id: r for r in rows_of("multitask")}
    multi = select(results, rows["mt_model"])
    foot: list[dict] = []  # the files cited, in order

    def cite(rec: dict, text: str) -> str:
        return f"{text} [{footnote(foot, rec)}]"

    out = ["| 任务与指标 | 单任务模型 | 多任务模型 | 差（多任务 − 单任务） | 目标：相差不超过 2 个点 "
           "| 该任务的训练步数（单任务 / 多任务） |", "|---|---|---|---|---|---|"]
    pending = [] if multi else [rows["mt_model"].pending]
    for rid, (task, multi_key, single_key, scale) in MT_TASKS.items():
        single = select(results, rows[rid])
        if single is None:
            pending.append(rows[rid].pending)
        s, m = get(single or {}, single_key), get(multi or {}, "metrics." + multi_key)
        cells = [cite(rec, f"{scale * v:.2f}") if v is not None else ("待复现" if rec is None else "—")
                 for rec, v in ((single, s), (multi, m))]
        weights = [get(rec or {}, "pretrained_weights") for rec in (single, multi)]
        if s is None or m is None:
            diff = verdict = "待复现"
        else:
            d = scale * (m - s)
            diff = f"{d:+.2f}"
            if None not in weights and weights[0] != weights[1]:
                verdict = "不可比：预训练权重不同"
            else:
                verdict = "达到" if d >= -MT_TOLERANCE else "未达到"
        steps = steps_cell(get(single or {}, "steps"), get(multi or {}, f"steps_per_task.{task}"))
        out.append(f"| {rows[rid].label} | {cells[0]} | {cells[1]} | {diff} | {verdict} | {steps} |")
    if multi is not None and (lm := get(multi, "metrics.lm/val_loss")) is not None:
        out.append(f"| 语言模型任务的验证损失（nats/词元，预训练语料） | — | {cite(multi, f'{lm:.3f}')} | — | — | "
                   f"{steps_cell(None, get(multi, 'steps_per_task.lm'))} |")
    out += [""] + [f"{i}. {rec.get('model')}：{provenance(rec)}" for i, rec in enumerate(foot, 1)]
    if pending:
        out += ["", "待复现的命令：", ""] + [f"{n}. `{cmd}`" for n, cmd in enumerate(dict.fromkeys(pending), 1)]
    return "\n".join(out) + "\n"


FORGETTING_SAME_LOSS = 1e-4  # two files scored the same pre-trained model if its loss agrees this closely


def same_pretrained(a: dict, b: dict) -> bool:
    """Did two forgetting files score their models against the same pre-trained model on the same windows? The
    first model of each file is the pre-trained one: the same checkpoint path and the same weights fingerprint
    (files older than the ``weights`` field: the same loss on the same windows, to ``FORGETTING_SAME_LOSS``)."""
    if any(a.get(k) != b.get(k) for k in ("dataset", "windows", "window_tokens")):
        return False
    pa, pb = (a.get("models") or [{}])[0], (b.get("models") or [{}])[0]
    if pa.get("checkpoint") != pb.get("checkpoint"):
        return False
    if pa.get("weights") and pb.get("weights"):
        return pa["weights"] == pb["weights"]
    return abs(pa.get("lm_val_loss", float("nan")) - pb.get("lm_val_loss", float("nan"))) <= FORGETTING_SAME_LOSS


def render_forgetting(results: list[dict]) -> str:
    """The pre-training loss of the pre-trained model and of each model fine-tuned from it (same windows).

    Every forgetting file counts, not just the newest: ``benchmark.py forgetting`` scores the checkpoints that are on
    the machine, so one run may cover only some presets. Each checkpoint's row comes from the newest file that
    scored it, among the files that scored the same pre-trained model on the same windows as the newest file
    (:func:`same_pretrained`); each row cites its file."""
    row = rows_of("forgetting")[0]
    files = newest_first(results, row)
    if not files:
        return f"待复现：`{row.pending}`\n"
    newest = files[0]
    usable = [f for f in files if f is newest or same_pretrained(f, newest)]
    chosen: dict[str, tuple[dict, dict]] = {}  # checkpoint -> (its row, its file), the newest file first
    for rec in usable:
        for m in rec.get("models") or []:
            chosen.setdefault(m["checkpoint"], (m, rec))
    # the pre-trained model first, then each checkpoint where the oldest file that has it listed it
    order = [m["checkpoint"] for rec in reversed(usable) for m in rec.get("models") or []]
    order.insert(0, newest["models"][0]["checkpoint"])
    foot: list[dict] = []
    out = ["| 模型（检查点） | 是什么 | 预训练语料验证损失（nats/词元） | 比预训练模型高 | 来源 |",
           "|---|---|---|---|---|"]
    for ckpt in dict.fromkeys(order):
        m, rec = chosen[ckpt]
        out.append(f"| `{ckpt}` | {m['kind']} | {m['lm_val_loss']:.3f} | {m['increase_over_first']:+.3f} | "
                   f"[{footnote(foot, rec)}] |")
    out += ["", f"{newest.get('windows')} 个 {newest.get('window_tokens')} 词元的固定验证窗口（{newest['dataset']}）。"
                "每个检查点取为它打分的最新一个文件（这些文件给同一个预训练模型打出同样的分数）。来源：", ""]
    out += [f"{i}. {provenance(rec)}" for i, rec in enumerate(foot, 1)]
    return "\n".join(out) + "\n"


def render(table: str, results: list[dict]) -> str:
    if table == "forgetting":
        return render_forgetting(results)
    if table == "multitask":
        return render_multitask(results)
    if table in COLUMNS:
        return render_metric_table(table, results)
    if table == "parallelism":
        return render_parallelism(results)
    if table == "timeline":
        return render_timeline(results)
    return f"未知的表 `{table}`（可用：{', '.join(TABLES)}）\n"


def update_text(text: str, results: list[dict]) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("table"), results) + m.group(4), text)


# ----- figures -----------------------------------------------------------------------------------------------------

FIGURE_COLUMNS = {"classification": ["准确率", "宏 F1"], "translation": ["BLEU", "chrF"],
                  "lm": ["bits/字符", "词级困惑度"]}


def plot(table: str, results: list[dict], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if table == "parallelism":
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), squeeze=False)
        drawn = False
        for row in rows_of("parallelism"):
            rec = select(results, row)
            pts = sorted(seqlen_points(rec).values(), key=lambda p: p["seq_len"]) if rec else []
            if pts:
                drawn = True
                ts = [p["seq_len"] for p in pts]
                axes[0][0].plot(ts, [p["ms_per_step"] for p in pts], marker="o", label=row.id.removeprefix("par_"))
                axes[0][1].plot(ts, [p["ratio"] for p in pts], marker="o", label=row.id.removeprefix("par_"))
        for ax, title in zip(axes[0], ("ms per training step", "step time / reference matmul time")):
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("sequence length T")
            if drawn:
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.legend(fontsize=8)
            else:
                ax.text(0.5, 0.5, "not measured yet", ha="center", va="center", transform=ax.transAxes)
            ax.grid(alpha=0.3)
    else:
        heads = FIGURE_COLUMNS[table]
        headers = [h for h, _, _ in COLUMNS[table]]
        rows = rows_of(table)
        fig, axes = plt.subplots(1, len(heads), figsize=(5.2 * len(heads), 0.32 * len(rows) + 1.2), squeeze=False)
        labels = [f"{r.id}" for r in rows]
        for ax, head in zip(axes[0], heads):
            values = []
            for row in rows:
                rec = select(results, row)
                values.append(row_cells(results, row, rec)[0][headers.index(head)].value if rec else None)
            ax.barh(range(len(rows)), [v or 0 for v in values], color="#4c72b0")
            ax.set_yticks(range(len(rows)), labels, fontsize=7)
            ax.invert_yaxis()
            top = max([v for v in values if v] or [1])
            for y, v in enumerate(values):
                ax.text(v or 0, y, f" {v:.3g}" if v is not None else " not measured yet", va="center", fontsize=7)
            ax.set_xlim(0, top * 1.35)
            ax.set_title({"准确率": "accuracy", "宏 F1": "macro-F1", "bits/字符": "bits per character",
                          "词级困惑度": "word-level perplexity"}.get(head, head), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only check that every COMPARE block is up to date")
    p.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")
    p.add_argument("--no_plot", action="store_true", help="skip docs/figures/compare_<table>.png")
    args = p.parse_args(argv)
    results = load_results(args.root)
    stale = rewrite_blocks(args.root, lambda text: update_text(text, results), args.check, "python scripts/compare.py")
    if args.check:
        return 1 if stale else 0
    if not args.no_plot:
        for table in FIGURES:
            fig = plot(table, results, args.root / "docs" / "figures" / f"compare_{table}.png")
            print(f"wrote {fig.relative_to(args.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
