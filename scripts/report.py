"""Build the README/docs result tables, the comparison plot and training curves from committed result files.

    python scripts/report.py            # rewrite every marked block + docs/figures/results.png
    python scripts/report.py --check    # exit 1 if any block is out of date (used by the tests)
    python scripts/report.py --curves RESULT.json [RESULT.json ...] --out FIG.png   # training curves

Numbers in README.md, docs/*.md and stage*/README.md live only between markers::

    <!-- BEGIN RESULTS stage=stage1_mlp -->      (or stage=all for the overview table)
    ...generated...
    <!-- END RESULTS -->

and come only from ``results/reported/<stage>/*.json`` (written by each stage's ``write_result``),
each row with its hardware, command, seed and data checksum. The expected run time and peak
memory of the README's commands live between ``<!-- BEGIN COMMANDS stage=... -->`` and
``<!-- END COMMANDS -->`` and come only from ``results/reported/commands/*.json``
(written by ``scripts/measure_commands.py``). ``--curves`` plots the ``history`` field of train
result files: validation metric and train loss against the step (or the epoch, for older files).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python scripts/report.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts import REPO_ROOT

BLOCK = re.compile(r"(<!-- BEGIN RESULTS stage=(?P<stage>[\w]+) -->\n)(?P<body>.*?)(<!-- END RESULTS -->)", re.S)
COMMANDS_BLOCK = re.compile(r"(<!-- BEGIN COMMANDS stage=(?P<stage>[\w]+) -->\n)(?P<body>.*?)(<!-- END COMMANDS -->)",
                            re.S)
COMMANDS_DIR = "commands"  # results/reported/commands/: measurements of the README's commands, not results
PERCENT = {"accuracy", "macro_f1", "f1", "precision", "recall"}
STAGE_NAMES = {
    "stage1_mlp": "阶段1 MLP", "stage2_rnn_lstm": "阶段2 RNN/LSTM",
    "stage3_attention_seq2seq": "阶段3 Seq2Seq+Attention",
    "stage4_transformer": "阶段4 Transformer", "stage5_gpt": "阶段5 GPT",
}


def load_results(root: Path) -> list[dict]:
    """Every reported result file (not the command measurements), sorted by stage then file name."""
    rows = []
    reported = root / "results" / "reported"
    for path in sorted(reported.rglob("*.json")):
        if path.relative_to(reported).parts[0] == COMMANDS_DIR:
            continue
        rec = json.loads(path.read_text(encoding="utf-8"))
        rec["_file"] = path.relative_to(root).as_posix()
        rows.append(rec)
    return sorted(rows, key=lambda r: (r["stage"], r["_file"]))


def fmt_metric(name: str, value) -> str:
    if isinstance(value, bool):  # e.g. identical_outputs
        return "是" if value else "否"
    if not isinstance(value, (int, float)):
        return str(value)
    if (name in PERCENT or name == "mfu" or name.startswith("mfu_")) and value <= 1.0:
        return f"{100 * value:.2f}%"
    if value and abs(value) < 1e-3:  # a tolerance-sized difference: 0.000 would hide its size
        return f"{value:.1e}"
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.3f}"


def fmt_time(seconds) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.0f} 秒" if seconds < 120 else f"{seconds / 60:.1f} 分钟"


def fmt_params(n) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


# metrics shown right after the primary one whenever a result file has them (a training run's efficiency, which an
# issue target may name, would otherwise fall behind three loss variants)
FIRST_SHOWN = ("mfu",)


def primary(rec: dict) -> tuple[str, object]:
    name = rec.get("primary_metric") or next(iter(rec["metrics"]))
    return name, rec["metrics"].get(name)


def render(stage: str, results: list[dict]) -> str:
    rows = results if stage == "all" else [r for r in results if r["stage"] == stage]
    if not rows:
        return "| 结果 |\n|---|\n| 待复现（`results/reported/` 中尚无该阶段的结果文件） |\n"
    out = ["| # | 阶段 | 任务 | 数据集 / 划分 | 指标 | 参数量 | 训练时间 | 硬件 |",
           "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        name, value = primary(r)
        shown = sorted((k for k, v in r["metrics"].items() if k != name and isinstance(v, (int, float))),
                       key=lambda k: k not in FIRST_SHOWN)  # a stable sort: FIRST_SHOWN first, then file order
        others = [f"{k} {fmt_metric(k, r['metrics'][k])}" for k in shown[:3]]
        metric = f"**{name} {fmt_metric(name, value)}**" + ("<br>" + "<br>".join(others) if others else "")
        protocol = r.get("protocol")
        if isinstance(protocol, dict):  # an evaluation protocol written as a mapping: its main settings
            protocol = ", ".join(f"{k} {protocol[k]}" for k in ("tokenizer", "context", "stride") if k in protocol)
        split = r["split"] + (f"（{protocol}）" if protocol else "")
        task = r["task"] + (f"：{r['model']}" if r.get("model") else "")
        out.append(f"| {i} | {STAGE_NAMES.get(r['stage'], r['stage'])} | {task} | {r['dataset']} / {split} | "
                   f"{metric} | {fmt_params(r.get('params'))} | {fmt_time(r.get('train_wall_s'))} | {r['device']} |")
    out.append("")
    out.append("复现方式（命令、随机种子、数据校验和、代码版本、结果文件）：")
    out.append("")
    for i, r in enumerate(rows, 1):
        sha = (r.get("data_sha256") or "—")[:12]
        out.append(f"{i}. `{r['command']}` · seed {r['seed']} · data sha256 `{sha}…` · "
                   f"commit `{r.get('git_commit')}` · torch {r['torch']} · "
                   f"[{Path(r['_file']).name}]({'/' + r['_file']})")
    return "\n".join(out) + "\n"


def markdown_files(root: Path) -> list[Path]:
    files = [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted(root.glob("stage*/README.md"))]
    return [f for f in files if f.is_file()]


def rewrite_blocks(root: Path, update, check: bool, command: str) -> list[Path]:
    """Apply ``update(text) -> text`` to every markdown file of the repo; the files it changes are stale. ``check``:
    report them ("out of date ... run <command>"), otherwise rewrite and list them. Returns the stale files."""
    stale = []
    for f in markdown_files(root):
        text = f.read_text(encoding="utf-8")
        new = update(text)
        if new != text:
            stale.append(f)
            if not check:
                f.write_text(new, encoding="utf-8")
    for f in stale:
        print(f"out of date: {f.relative_to(root)} (run {command})" if check else f"updated {f.relative_to(root)}")
    return stale


def load_measurements(root: Path) -> list[dict]:
    """The newest measurement of each README command (``results/reported/commands/*.json``)."""
    newest: dict[str, dict] = {}
    for path in sorted((root / "results" / "reported" / COMMANDS_DIR).glob("*.json")):
        rec = json.loads(path.read_text(encoding="utf-8"))
        rec["_file"] = path.relative_to(root).as_posix()
        if rec["key"] not in newest or rec["timestamp"] > newest[rec["key"]]["timestamp"]:
            newest[rec["key"]] = rec
    return sorted(newest.values(), key=lambda r: (r["stage"], r.get("order", 0), r["key"]))


def fmt_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} 秒"
    return f"{seconds / 60:.0f} 分钟" if seconds < 7200 else f"{seconds / 3600:.1f} 小时"


def fmt_memory(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def render_commands(stage: str, measurements: list[dict]) -> str:
    """The run time and peak memory of a stage's README commands, from their measurement files."""
    rows = [m for m in measurements if m["stage"] == stage]
    if not rows:
        return ("| 命令 | 用时 | 峰值内存 |\n|---|---|---|\n| 尚未测量（运行 `python scripts/measure_commands.py`，"
                "再运行 `python scripts/report.py`） | — | — |\n")
    out = ["| 命令 | 用时 | 峰值内存 | 怎么得到的 |", "|---|---|---|---|"]
    for m in rows:
        est, meas = m["estimate"], m["measured"]
        command = m["command"].split(" && ", 1)[-1]
        if "steps_per_epoch" in est:
            how = (f"实测 {meas['steps']} 步后推算：准备 {meas['setup_s']:.0f} 秒 + {est['epochs']} 个 epoch × "
                   f"{est['steps_per_epoch']:,} 步 × {1000 * meas['s_per_step']:.0f} 毫秒"
                   + ("（受时间预算限制）" if est.get("capped_by_time_budget") else "")
                   + f" + {est['evaluations']} 次验证 × {est['s_per_eval']:.1f} 秒 + 收尾 {meas['end_s']:.0f} 秒")
            if est.get("early_stopping_patience"):
                how += f"；早停（`--patience {est['early_stopping_patience']:g}`）可能让它更早结束"
            when = f"约 {fmt_duration(est['wall_s'])}（估计）"
        else:
            how = "完整运行一次实测（用上一行训练命令的短训练 checkpoint）"
            if m.get("note"):
                how += "；解码用时随译文长度变化，充分训练的模型可能不同" if "decod" in m["note"] else f"；{m['note']}"
            when = f"{fmt_duration(est['wall_s'])}（实测）"
        out.append(f"| `{command}` | {when} | {fmt_memory(meas['peak_rss_mb'])} | {how} · "
                   f"[{Path(m['_file']).name}]({'/' + m['_file']}) |")
    first = rows[0]
    data = "完整数据集（`MY_LLM_DATA`）" if first["data"].startswith("full") else "仓库自带的数据"
    loads = sorted(m["load_avg_1min"] for m in rows if m.get("load_avg_1min") is not None)
    load = (f" · 测量结束时 1 分钟平均负载 {loads[0]:.1f}" + (f"–{loads[-1]:.1f}" if loads[-1] != loads[0] else "")
            if loads else "")
    commits = ", ".join(f"`{c}`" for c in dict.fromkeys(m["git_commit"] for m in rows))
    out.append("")
    out.append(f"测量环境：{first['device']} · torch {first['torch']} · commit {commits} · "
               f"{first['timestamp'][:10]} · 数据：{data}{load}。峰值内存是进程自身的最大常驻内存（ru_maxrss）；"
               f"由 `python scripts/measure_commands.py` 测量。")
    return "\n".join(out) + "\n"


def update_text(text: str, results: list[dict], measurements: list[dict] | None = None) -> str:
    text = BLOCK.sub(lambda m: m.group(1) + render(m.group("stage"), results) + m.group(4), text)
    return COMMANDS_BLOCK.sub(lambda m: m.group(1) + render_commands(m.group("stage"), measurements or [])
                              + m.group(4), text)


def plot(results: list[dict], path: Path) -> Path | None:
    """One panel per (stage, headline metric): metrics with different units never share an axis."""
    if not results:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["stage"], primary(r)[0]) for r in results})
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (stage, metric) in zip(axes.flat, panels):
        rows = [r for r in results if r["stage"] == stage and primary(r)[0] == metric]
        labels = [f"{r.get('model') or r['task']} | {r['dataset']}/{r['split']}"[:48] for r in rows]
        values = [r["metrics"][metric] for r in rows]
        ax.barh(range(len(rows)), values, color="#4c72b0")
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{stage}: {metric}", fontsize=9)
        for y, v in enumerate(values):
            ax.text(v, y, " " + fmt_metric(metric, v), va="center", fontsize=7)
        ax.set_xlim(0, max(values) * 1.25)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curve_series(rec: dict, metric: str | None = None) -> dict:
    """What ``--curves`` plots from one result's ``history``: x (step, else epoch), a validation metric, train loss.

    The validation metric is ``metric`` if given, else the result's ``primary_metric`` when the history has it,
    else its first ``val_*`` field. Entries without a value are skipped.
    """
    hist = rec.get("history")
    if not isinstance(hist, list) or not hist or not all(isinstance(h, dict) for h in hist):
        raise ValueError("has no evaluation history (a 'history' list); only train result files have one")
    x_name = next((k for k in ("step", "epoch") if all(isinstance(h.get(k), (int, float)) for h in hist)), None)
    if x_name is None:
        raise ValueError("history entries have neither 'step' nor 'epoch' in every entry")
    numeric = [k for h in hist for k, v in h.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    val_keys = list(dict.fromkeys(k for k in numeric if k.startswith("val_")))
    if metric is None:
        metric = rec.get("primary_metric") if rec.get("primary_metric") in val_keys else next(iter(val_keys), None)
    if metric is None or metric not in numeric:
        raise ValueError(f"history has no validation metric {metric or 'val_*'} "
                         f"(it has {', '.join(val_keys) or 'none'})")
    train_key = next((k for k in ("train_loss", "loss") if k in numeric), None)
    pick = [(h[x_name], h.get(metric)) for h in hist if isinstance(h.get(metric), (int, float))]
    train = [(h[x_name], h[train_key]) for h in hist if train_key and isinstance(h.get(train_key), (int, float))]
    return {"x_name": x_name, "metric": metric, "x": [a for a, _ in pick], "val": [b for _, b in pick],
            "train_x": [a for a, _ in train], "train_loss": [b for _, b in train], "train_key": train_key}


def plot_curves(paths: list[Path], out: Path, metric: str | None = None) -> Path:
    """Validation metric (left) and train loss (right) against step/epoch for each result file."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = []
    for path in paths:
        try:
            rec = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read a result file ({type(e).__name__})") from None
        try:
            series.append((f"{rec.get('model') or rec.get('task', '')} ({Path(path).stem})"[:60],
                           curve_series(rec, metric)))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    x_names = {s["x_name"] for _, s in series}
    x_label = x_names.pop() if len(x_names) == 1 else "step (epoch for files without steps)"
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), squeeze=False)
    left, right = axes[0]
    for label, s in series:
        left.plot(s["x"], s["val"], marker="o", markersize=3, label=label)
        if s["train_loss"]:
            right.plot(s["train_x"], s["train_loss"], label=label)
    left.set_title(" / ".join(dict.fromkeys(s["metric"] for _, s in series)), fontsize=9)
    right.set_title("train loss", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only check that every block is up to date")
    p.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")
    p.add_argument("--no_plot", action="store_true", help="skip docs/figures/results.png")
    p.add_argument("--curves", nargs="+", type=Path, metavar="RESULT.json",
                   help="plot the evaluation history of these train result files (needs --out)")
    p.add_argument("--out", type=Path, help="figure written by --curves (PNG)")
    p.add_argument("--metric", help="validation metric for --curves (default: the primary one, else the first val_*)")
    args = p.parse_args(argv)
    if args.curves:
        if args.out is None:
            print("error: --curves needs --out FIG.png", file=sys.stderr)
            return 2
        try:
            print(f"wrote {plot_curves(args.curves, args.out, args.metric)}")
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    results, measurements = load_results(args.root), load_measurements(args.root)
    stale = rewrite_blocks(args.root, lambda text: update_text(text, results, measurements), args.check,
                           "python scripts/report.py")
    if args.check:
        return 1 if stale else 0
    if not args.no_plot and (fig := plot(results, args.root / "docs" / "figures" / "results.png")):
        print(f"wrote {fig.relative_to(args.root)}")
    print(f"{len(results)} result files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
