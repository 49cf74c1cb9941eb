"""scripts/compare.py (cross-stage comparison tables) and scripts/steptime.py (the seqlen timing helper)."""
from __future__ import annotations

import re

from scripts import REPO_ROOT, compare, steptime
from scripts.results import make_result, write_result

BLOCKS = "".join(f"<!-- BEGIN COMPARE table={t} -->\n<!-- END COMPARE -->\n" for t in compare.TABLES)


def _root(tmp_path):
    (tmp_path / "README.md").write_text("# x\n\n" + BLOCKS, encoding="utf-8")
    (tmp_path / "results" / "reported").mkdir(parents=True)
    return tmp_path


def _report(root, stage, task, dataset, split, metrics, tag="", **extra):
    rec = make_result(stage, task, dataset, split, metrics, params=123_456, train_wall_s=61.0, device="cpu: test",
                      seed=7, data_sha256="ab" * 32, command=f"cd {stage} && python fake.py", **extra)
    out = root / "results" / "reported" / stage
    return write_result(rec, name=f"{task}_{dataset}_{split}{tag}", out_dir=out, echo=False)


def _row(text: str, label: str, group: str = "") -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {group}") and f"| {label} |" in line)


def test_repository_compare_blocks_are_current():
    """README.md and docs/roadmap.md hold every table, generated from results/reported (run scripts/compare.py)."""
    assert compare.main(["--root", str(REPO_ROOT), "--check"]) == 0
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    roadmap = (REPO_ROOT / "docs" / "roadmap.md").read_text(encoding="utf-8")
    for table in ("classification", "translation", "lm", "parallelism"):
        assert f"<!-- BEGIN COMPARE table={table} -->" in readme and f"<!-- BEGIN COMPARE table={table} -->" in roadmap
    assert "<!-- BEGIN COMPARE table=timeline -->" in roadmap
    assert "并行能力:   低" not in readme  # the seed's words became the measured block


def test_missing_rows_say_pending_with_the_command(tmp_path):
    root = _root(tmp_path)
    assert compare.main(["--root", str(root), "--check"]) == 1
    assert compare.main(["--root", str(root), "--no_plot"]) == 0
    text = (root / "README.md").read_text(encoding="utf-8")
    assert "| 待复现 | 待复现 |" in _row(text, "LSTM", "IMDb")
    assert "`cd stage2_rnn_lstm && python classify.py --preset imdb_cpu --report`" in text
    assert "`cd stage4_transformer && python benchmark.py seqlen --report`" in text
    assert not re.search(r"\| \d+\.\d+%", text)  # no number without a file
    assert compare.main(["--root", str(root), "--check"]) == 0


def test_a_reported_file_renders_its_numbers_and_names_missing_fields(tmp_path):
    root = _root(tmp_path)
    path = _report(root, "stage2_rnn_lstm", "classification", "imdb", "test", {"accuracy": 0.87654, "macro_f1": 0.8711},
                   protocol="standard", model="LSTM test", latency_ms_batch1=1.234, samples_per_s=4321.0)
    _report(root, "stage2_rnn_lstm", "classification", "imdb", "val", {"accuracy": 0.99}, protocol="standard")
    _report(root, "stage3_attention_seq2seq", "translation", "multi30k", "test_2016_flickr", {"bleu": 33.333},
            attention_type="luong_general")
    compare.main(["--root", str(root), "--no_plot"])
    text = (root / "README.md").read_text(encoding="utf-8")
    row = _row(text, "LSTM", "IMDb")
    assert "| 87.65% | 87.11% | 0.12M | 0.12M | 61 秒 | 1.23 | 4,321 | [1] |" in row  # the test split, not the val file
    assert "99.00%" not in text
    assert path.name in text and "`cd stage2_rnn_lstm && python fake.py`" in text
    assert "data sha256 `abababababab`" in text and "cpu: test" in text
    luong = _row(text, "RNN + Luong 注意力")
    assert "| 33.33 | — |" in luong  # chrF is not in the file: a dash, and the footnote says which field is missing
    assert re.search(r"translation_multi30k_test_2016_flickr_\S+\.json 中没有 `chrf`（chrF）", text)
    assert "python classify.py --preset imdb_cpu --report" not in text.split("待复现（运行")[1].split("\n\n")[1]


def test_stage5_rows_tell_pretrained_from_scratch(tmp_path):
    root = _root(tmp_path)
    _report(root, "stage5_gpt", "classification", "imdb", "test", {"accuracy": 0.9111, "macro_f1": 0.91},
            protocol="standard", mode="lora", init="pretrained", trainable_params=12345,
            truncation="256 BPE tokens (head_tail)")
    _report(root, "stage5_gpt", "classification", "imdb", "test", {"accuracy": 0.9222}, protocol="standard",
            mode="full", init="pretrained", truncation="512 BPE tokens (head_tail)", tag="_512")
    compare.main(["--root", str(root), "--no_plot"])
    text = (root / "README.md").read_text(encoding="utf-8")
    assert "91.11%" in _row(text, "GPT（预训练 + LoRA）", "IMDb")
    assert "| 0.12M | 12.3K |" in _row(text, "GPT（预训练 + LoRA）", "IMDb")  # all parameters, then the trained ones
    assert "92.22%" in _row(text, "GPT（预训练 + 全部微调，512 词元）", "IMDb")  # 512 tokens per review: its own row
    for other in ("GPT（预训练 + 全部微调）", "GPT（同一结构，从零训练）", "GPT（预训练，只训练分类头）"):
        assert "待复现" in _row(text, other, "IMDb")


def test_multitask_table_sets_each_task_beside_its_single_task_model(tmp_path):
    root = _root(tmp_path)
    compare.main(["--root", str(root), "--no_plot"])
    text = (root / "README.md").read_text(encoding="utf-8")
    assert "| 待复现 | 待复现 | 待复现 | 待复现 | — / — |" in _row(text, "IMDb 测试集准确率")
    assert "`cd stage5_gpt && python benchmark.py ft_multitask --report`" in text
    _report(root, "stage5_gpt", "classification", "imdb", "test", {"accuracy": 0.88}, protocol="standard",
            mode="full", init="pretrained", truncation="256 BPE tokens (head_tail)", model="single classify",
            steps=743, pretrained_weights="aaaa")
    _report(root, "stage5_gpt", "translation", "multi30k", "test_2016_flickr", {"bleu": 40.0}, model="single mt",
            steps=1814, pretrained_weights="aaaa")
    multi = dict(model="multi", steps_per_task={"classify": 750, "translate": 1800, "lm": 450},
                 pretrained_weights="aaaa")
    _report(root, "stage5_gpt", "multitask", "imdb+multi30k", "test", {"classify/accuracy": 0.8650,
            "translate/test_2016_flickr/bleu": 37.5, "translate/bleu": 99.0, "lm/val_loss": 4.25}, **multi)
    compare.main(["--root", str(root), "--no_plot"])
    text = (root / "README.md").read_text(encoding="utf-8")
    assert "| 88.00 [1] | 86.50 [2] | -1.50 | 达到 | 743 / 750 |" in _row(text, "IMDb 测试集准确率")
    bleu = "Multi30k test_2016_flickr BLEU（束宽 5）"
    assert "| 40.00 [3] | 37.50 [2] | -2.50 | 未达到 | 1,814 / 1,800 |" in _row(text, bleu)
    assert "| — | 4.250 [2] | — | — | — / 450 |" in _row(text, "语言模型任务的验证损失（nats/词元，预训练语料）")
    assert "2. multi：" in text and "ft_multitask --report`" not in text
    # a multi-task model fine-tuned from other pre-trained weights than the single-task model is not compared
    _report(root, "stage5_gpt", "multitask", "imdb+multi30k", "test", {"classify/accuracy": 0.99,
            "translate/test_2016_flickr/bleu": 41.0, "lm/val_loss": 4.0}, tag="_later",
            **dict(multi, pretrained_weights="bbbb"))
    compare.main(["--root", str(root), "--no_plot"])
    text = (root / "README.md").read_text(encoding="utf-8")
    assert "| 88.00 [1] | 99.00 [2] | +11.00 | 不可比：预训练权重不同 |" in _row(text, "IMDb 测试集准确率")
    assert "| +1.00 | 不可比：预训练权重不同 |" in _row(text, bleu)


def test_steptime_times_each_length_against_the_reference_and_the_table_shows_it(tmp_path):
    calls = []
    rows = steptime.time_lengths(lambda t: (lambda: calls.append(t)), [4, 8], batch_size=2, repeats=2,
                                 ref=lambda: None, log=lambda s: None)
    assert calls == [4, 4, 4, 8, 8, 8]  # one warm-up + 2 timed steps per length
    assert [r["seq_len"] for r in rows] == [4, 8] and all(len(r["steps_s"]) == 2 for r in rows)
    root = _root(tmp_path)
    for stage, ms in (("stage2_rnn_lstm", 10.0), ("stage4_transformer", 5.0)):
        pts = [dict(r, ms_per_step=ms * r["seq_len"], ratio=0.5 * r["seq_len"]) for r in rows]
        rec = steptime.seqlen_result(stage, f"model of {stage}", pts, params=10, device="cpu: test", seed=1,
                                     batch_size=2, config={})
        assert rec["task"] == steptime.TASK and rec["metrics"]["ms_per_step_T8"] == ms * 8
        write_result(rec, name="seqlen", out_dir=root / "results" / "reported" / stage, echo=False)
    compare.main(["--root", str(root)])
    text = (root / "README.md").read_text(encoding="utf-8")
    assert "| 4 | 40.0（2.00） | 待复现 | 20.0（2.00） |" in text
    assert "| 增长 | 2.0 倍（T 4→8） | 待复现 | 2.0 倍（T 4→8） |" in text
    assert "`cd stage3_attention_seq2seq && python benchmark.py seqlen --report`" in text
    for table in compare.FIGURES:
        assert (root / "docs" / "figures" / f"compare_{table}.png").stat().st_size > 1000


def test_compare_and_steptime_import_no_stage():
    for name in ("compare.py", "steptime.py"):
        text = (REPO_ROOT / "scripts" / name).read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import)\s+stage\d", text, re.M), name


def test_forgetting_table_takes_each_checkpoint_from_the_newest_file_that_scored_it(tmp_path):
    """A forgetting run scores only the checkpoints on the machine: the table merges the files that scored the same
    pre-trained model on the same windows (same weights fingerprint, or for files without one the same loss), each
    checkpoint from the newest such file, each row citing its file; a file of another pre-trained model is left out."""
    root = _root(tmp_path)
    compare.main(["--root", str(root), "--no_plot"])
    assert "待复现：`cd stage5_gpt && python benchmark.py forgetting --report`" in (root / "README.md").read_text(
        encoding="utf-8")

    def model(ckpt, kind, loss, base, weights=None):
        return {"checkpoint": ckpt, "kind": kind, "lm_val_loss": loss, "increase_over_first": loss - base,
                **({"weights": weights} if weights else {})}

    def forgetting(stamp, models, tag):
        _report(root, "stage5_gpt", "forgetting", "imdb_wikitext2", "val", {"lm_val_loss_first": models[0][
            "lm_val_loss"]}, tag=tag, models=models, windows=640, window_tokens=256, timestamp=stamp)

    def table_rows():
        return [ln for ln in (root / "README.md").read_text(encoding="utf-8").splitlines() if ln.startswith("| `")]

    # the oldest file: no fingerprints; the pre-trained model scores 4.2
    forgetting("2026-12-01T00:00:00+00:00", [model("pre.pt", "pre-trained", 4.2, 4.2),
                                             model("cls.pt", "fine-tuned: classify", 5.25, 4.2),
                                             model("mt.pt", "fine-tuned: classify+translate+lm", 4.5, 4.2)], "_a")
    # another pre-trained model (another loss): none of its rows may appear
    forgetting("2026-12-02T00:00:00+00:00", [model("pre.pt", "pre-trained", 4.3, 4.3),
                                             model("tr.pt", "fine-tuned: translate", 9.0, 4.3)], "_b")
    # the newest: the same pre-trained model again (same loss), a re-made multi-task checkpoint
    forgetting("2026-12-03T00:00:00+00:00", [model("pre.pt", "pre-trained", 4.2, 4.2, "aa" * 8),
                                             model("mt.pt", "fine-tuned: classify+translate+lm", 4.25, 4.2,
                                                   "bb" * 8)], "_c")
    compare.main(["--root", str(root), "--no_plot"])
    text = (root / "README.md").read_text(encoding="utf-8")
    assert table_rows() == ["| `pre.pt` | pre-trained | 4.200 | +0.000 | [1] |",
                            "| `cls.pt` | fine-tuned: classify | 5.250 | +1.050 | [2] |",
                            "| `mt.pt` | fine-tuned: classify+translate+lm | 4.250 | +0.050 | [1] |"]
    assert "640 个 256 词元的固定验证窗口（imdb_wikitext2）" in text
    cited = [ln for ln in text.splitlines() if ln[:3] in ("1. ", "2. ", "3. ") and "forgetting_" in ln]
    assert len(cited) == 2 and "_c_" in cited[0] and "_a_" in cited[1], cited

    # where both files carry fingerprints they decide: the 2026-12-03 file scored other weights with the same loss,
    # so its multi-task row gives way to the oldest file's (which has no fingerprint, only the same loss)
    forgetting("2026-12-04T00:00:00+00:00", [model("pre.pt", "pre-trained", 4.2, 4.2, "cc" * 8),
                                             model("lora.pt", "fine-tuned: classify", 4.4, 4.2, "dd" * 8)], "_d")
    compare.main(["--root", str(root), "--no_plot"])
    assert table_rows() == ["| `pre.pt` | pre-trained | 4.200 | +0.000 | [1] |",
                            "| `cls.pt` | fine-tuned: classify | 5.250 | +1.050 | [2] |",
                            "| `mt.pt` | fine-tuned: classify+translate+lm | 4.500 | +0.300 | [2] |",
                            "| `lora.pt` | fine-tuned: classify | 4.400 | +0.200 | [1] |"]
