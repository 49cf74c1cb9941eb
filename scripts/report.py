"""Build the README/docs result tables and the comparison plot from committed result files.

    python scripts/report.py            # rewrite every marked block + docs/figures/results.png
    python scripts/report.py --check    # exit 1 if any block is out of date (used by the tests)

Numbers in README.md, docs/*.md and stage*/README.md live only between markers::

    <!-- BEGIN RESULTS stage=stage1_mlp -->      (or stage=all for the overview table)
    ...generated...
    <!-- END RESULTS -->

and come only from ``results/reported/**/*.json`` (written by each stage's ``write_result``),
each row with its hardware, command, seed and data checksum.
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
PERCENT = {"accuracy", "macro_f1", "f1", "precision", "recall"}
STAGE_NAMES = {
    "stage1_mlp": "阶段1 MLP", "stage2_rnn_lstm": "阶段2 RNN/LSTM", "stage3_attention_seq2seq": "阶段3 Seq2Seq+Attention",
    "stage4_transformer": "阶段4 Transformer", "stage5_gpt": "阶段5 GPT",
}


def load_results(root: Path) -> list[dict]:
    """Every reported result file, sorted by stage then file name."""
    rows = []
    for path in sorted((root / "results" / "reported").rglob("*.json")):
        rec = json.loads(path.read_text(encoding="utf-8"))
        rec["_file"] = path.relative_to(root).as_posix()
        rows.append(rec)
    return sorted(rows, key=lambda r: (r["stage"], r["_file"]))


def fmt_metric(name: str, value) -> str:
    if not isinstance(value, (int, float)):
        return str(value)
    if name in PERCENT and value <= 1.0:
        return f"{100 * value:.2f}%"
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.3f}"


def fmt_time(seconds) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.0f} 秒" if seconds < 120 else f"{seconds / 60:.1f} 分钟"


def fmt_params(n) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


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
        others = [f"{k} {fmt_metric(k, v)}" for k, v in r["metrics"].items()
                  if k != name and isinstance(v, (int, float))][:3]
        metric = f"**{name} {fmt_metric(name, value)}**" + ("<br>" + "<br>".join(others) if others else "")
        split = r["split"] + (f"（{r['protocol']}）" if r.get("protocol") else "")
        task = r["task"] + (f"：{r['model']}" if r.get("model") else "")
        out.append(f"| {i} | {STAGE_NAMES.get(r['stage'], r['stage'])} | {task} | {r['dataset']} / {split} | {metric} | "
                   f"{fmt_params(r.get('params'))} | {fmt_time(r.get('train_wall_s'))} | {r['device']} |")
    out.append("")
    out.append("复现方式（命令、随机种子、数据校验和、代码版本、结果文件）：")
    out.append("")
    for i, r in enumerate(rows, 1):
        sha = (r.get("data_sha256") or "—")[:12]
        out.append(f"{i}. `{r['command']}` · seed {r['seed']} · data sha256 `{sha}…` · commit `{r.get('git_commit')}` · "
                   f"torch {r['torch']} · [{Path(r['_file']).name}]({'/' + r['_file']})")
    return "\n".join(out) + "\n"


def markdown_files(root: Path) -> list[Path]:
    files = [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted(root.glob("stage*/README.md"))]
    return [f for f in files if f.is_file()]


def update_text(text: str, results: list[dict]) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("stage"), results) + m.group(4), text)


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only check that every block is up to date")
    p.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root")
    p.add_argument("--no_plot", action="store_true", help="skip docs/figures/results.png")
    args = p.parse_args(argv)
    results = load_results(args.root)
    stale = []
    for f in markdown_files(args.root):
        text = f.read_text(encoding="utf-8")
        new = update_text(text, results)
        if new != text:
            stale.append(f)
            if not args.check:
                f.write_text(new, encoding="utf-8")
    if args.check:
        for f in stale:
            print(f"out of date: {f.relative_to(args.root)} (run python scripts/report.py)")
        return 1 if stale else 0
    for f in stale:
        print(f"updated {f.relative_to(args.root)}")
    if not args.no_plot and (fig := plot(results, args.root / "docs" / "figures" / "results.png")):
        print(f"wrote {fig.relative_to(args.root)}")
    print(f"{len(results)} result files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
