"""CLI tests on the bundled tiny Shakespeare: train -> evaluate -> generate as a user runs them, the sliding-window
evaluation, and bad input (one-line errors, exit code 2)."""
import json
import math
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scripts.checkpoint import load_checkpoint, save_checkpoint, weights_fingerprint
from scripts.cli import run_cli
from scripts.results import parse_result_lines
from scripts.testing import run_script
from stage5_gpt import evaluate, generate, train
from stage5_gpt.utils.checkpoint import BEST_NAME, LAST_NAME, load_model
from stage5_gpt.utils.data import load_meta, load_split

STAGE = Path(__file__).resolve().parent.parent


def dirs(path):
    return ["--out_dir", str(path), "--run_dir", str(path)]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """A tiny model (30 steps) shared by the evaluate / generate tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ckpt")
    train.main(tiny + ["--max_steps", "30", "--eval_every", "15"] + dirs(out))
    torch.set_num_threads(before)
    return out


def cli(main, argv, capsys):
    """Run ``main`` as the command line does (``run_cli``): (exit code, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(main, [str(a) for a in argv])
        sys.exit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_train_cli_then_evaluate_then_generate(tiny, tmp_path, capsys):
    """train.py as a user runs it (a subprocess in the stage folder, bf16 autocast), then evaluate.py and
    generate.py on its best checkpoint."""
    r = run_script(STAGE / "train.py", tiny + ["--max_steps", "6", "--eval_every", "3", "--log_every", "2",
                                             "--dtype", "bfloat16"] + dirs(tmp_path),
                   env={"OMP_NUM_THREADS": "1", "MY_LLM_RESULTS": str(tmp_path / "results")})
    assert r.returncode == 0, r.stderr
    (rec,) = parse_result_lines(r.stdout)
    assert rec["metrics"]["steps"] == 6 and rec["stage"] == "stage5_gpt"
    assert rec["config"]["train"]["dtype"] == "bfloat16"
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("step ")]
    assert [ln.split(" | ")[0] for ln in lines] == ["step 2", "step 4", "step 6"]  # --log_every 2
    assert all(" | tok/s " in ln and " | ms/step " in ln and " | mfu " in ln for ln in lines)
    assert "eval | step 3 | tokens 384 |" in r.stdout
    last = load_checkpoint(tmp_path / LAST_NAME, kind="stage5_gpt")
    assert last["step"] == 6 and {"optimizer", "rng", "budget", "state"} <= last.keys()
    assert all(v.dtype == torch.float32 for v in last["model"].values())  # autocast: the weights stay float32
    best = tmp_path / BEST_NAME

    code, out, err = cli(evaluate.main, ["--checkpoint", best, "--split", "val", "--max_tokens", "3000",
                                         "--stride", "16"], capsys)
    assert code == 0, err
    assert "char tokenizer (vocabulary 65); context 32, stride 16 (the first character has no context" in out
    (ev,) = parse_result_lines(out)
    assert ev["eval_protocol"]["context"] == 32 and ev["eval_protocol"]["stride"] == 16
    assert ev["protocol"] == "char tokenizer, context 32, stride 16" and ev["primary_metric"] == "loss"
    assert ev["weights"] == weights_fingerprint(load_checkpoint(best, kind="stage5_gpt")["model"])  # which model
    assert ev["counts"]["val"]["tokens"] == 2999 and ev["metrics"]["bpc"] == pytest.approx(ev["metrics"]["loss"] /
                                                                                           math.log(2))

    prompt = "ROMEO:"
    code, out, err = cli(generate.main, ["--checkpoint", best, "--prompt", prompt, "--max_new_tokens", "12",
                                         "--temperature", "0"], capsys)
    assert code == 0, err
    model, tok, _ = load_model(best)
    want = tok.decode(model.generate(torch.tensor([tok.encode(prompt)]), 12, temperature=0)[0].tolist())
    assert out.rstrip("\n") == want  # the streamed text is the greedy continuation


def test_window_plan_scores_every_token_once_with_the_stated_context():
    rng = random.Random(0)
    for _ in range(200):
        n, context = rng.randint(2, 300), rng.randint(1, 40)
        stride = rng.randint(1, context)
        plan = evaluate.window_plan(n, context, stride)
        scored = [p for b, e, first in plan for p in range(first, e)]
        assert scored == list(range(n - 1)), (n, context, stride)
        for b, e, first in plan:
            assert e - b <= context and b <= first
            if b:  # every position after the first window sees at least context - stride tokens
                assert first - b >= min(context - stride, first)


@torch.no_grad()
def test_sliding_window_loss_is_the_mean_over_tokens(trained, char_data):
    model, _, _ = load_model(trained / BEST_NAME)
    ids = np.asarray(load_split(char_data, "val")[:200], dtype=np.int64)
    total, scored = evaluate.sliding_window_nll(model, ids, context=32, stride=32, batch_size=3, device="cpu")
    x = torch.from_numpy(ids)
    want = 0.0
    for b in range(0, 199, 32):  # non-overlapping chunks, by hand
        e = min(b + 32, 199)
        logits, _ = model(x[None, b:e])
        want += float(F.cross_entropy(logits[0], x[b + 1:e + 1], reduction="sum"))
    assert scored == 199 and total == pytest.approx(want, rel=1e-5)
    overlap, n2 = evaluate.sliding_window_nll(model, ids, context=32, stride=8, batch_size=4, device="cpu")
    assert n2 == 199 and overlap != pytest.approx(total, rel=1e-6)  # more context, another number


def test_evaluate_reports_word_level_perplexity_from_the_stated_counts(trained, char_data, capsys):
    code, out, err = cli(evaluate.main, ["--checkpoint", trained / BEST_NAME, "--max_tokens", "1000",
                                         "--context", "16"], capsys)
    assert code == 0, err
    (ev,) = parse_result_lines(out)
    c = ev["counts"]["val"]
    assert ev["eval_protocol"]["stride"] == 8 and c["words"] > 100
    assert ev["metrics"]["word_ppl"] == pytest.approx(math.exp(c["total_nats"] / c["words"]))
    assert ev["metrics"]["loss"] == pytest.approx(c["total_nats"] / c["tokens"])
    assert f"word-level ppl {ev['metrics']['word_ppl']:.2f} ({c['words']:,} words)" in out


def copy_prepared(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_truncated_bin_and_mismatched_meta_are_one_line_errors(trained, char_data, tmp_path, capsys):
    broken = copy_prepared(char_data, tmp_path / "broken")
    data = (broken / "val.bin").read_bytes()
    (broken / "val.bin").write_bytes(data[:-3])
    code, out, err = cli(train.main, ["--prepared_dir", broken, "--max_steps", "1"] + dirs(tmp_path / "t"), capsys)
    assert code == 2 and "val.bin" in err and "truncated" in err and len(err.strip().splitlines()) == 1, err
    assert (broken / "val.bin").stat().st_size == len(data) - 3  # never silently rebuilt
    code, out, err = cli(evaluate.main, ["--checkpoint", trained / BEST_NAME, "--prepared_dir", broken], capsys)
    assert code == 2 and "truncated" in err and len(err.strip().splitlines()) == 1, err

    other = copy_prepared(char_data, tmp_path / "other")
    meta = load_meta(other)
    meta["tokenizer"]["chars"] = meta["tokenizer"]["chars"][::-1]  # the same characters, other ids
    (other / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    code, out, err = cli(evaluate.main, ["--checkpoint", trained / BEST_NAME, "--prepared_dir", other], capsys)
    assert code == 2 and "does not match the checkpoint" in err and len(err.strip().splitlines()) == 1, err
    code, out, err = cli(train.main, ["--resume", "--out_dir", trained, "--prepared_dir", other,
                                      "--max_steps", "31"], capsys)
    assert code == 2 and "does not match the checkpoint" in err, err


@pytest.mark.parametrize("flags,message", [
    (["--n_embd", "30", "--n_head", "4"], "n_embd=30 is not divisible by n_head=4"),
    (["--dropout", "1.5"], "dropout must be in [0, 1), got 1.5"),
    (["--max_steps", "-1", "--max_minutes", "-2"], "must be >= 0 (0 = off): --max_steps -1, --max_minutes -2.0"),
    (["--grad_clip", "-1"], "must be >= 0 (0 = off): --grad_clip -1.0"),
    (["--batch_size", "0"], "--batch_size must be >= 1, got 0"),
    (["--grad_accum", "0"], "--grad_accum must be >= 1, got 0"),
    (["--beta2", "1.0"], "--beta2 must be in [0, 1), got 1.0"),
    (["--lr", "0"], "--lr must be > 0, got 0.0"),
    (["--preset", "huge"], "unknown --preset 'huge'; choose one of nano, micro, mini"),
    (["--max_steps", "0"], "no budget: give --max_steps, --max_minutes or --epochs"),
    (["--pos", "rope", "--n_embd", "6", "--n_head", "2"], "pos='rope' needs an even head size"),
    (["--limit_train", "20"], "the train split has 20 tokens, not more than --block_size 32 + 1"),
])
def test_train_rejects_impossible_configs(flags, message, tiny, tmp_path, capsys):
    code, _, err = cli(train.main, tiny + ["--max_steps", "2"] + flags + dirs(tmp_path), capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / LAST_NAME).exists()


def test_missing_data_and_foreign_checkpoints(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    code, _, err = cli(train.main, ["--data_dir", tmp_path / "empty", "--prepared_dir", tmp_path / "none",
                                    "--max_steps", "1"] + dirs(tmp_path), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "input.txt" in err, err
    stage4 = tmp_path / "s4.pt"
    save_checkpoint(stage4, {"model": {}, "config": {}}, kind="stage4_transformer")
    text = tmp_path / "h.pt"
    text.write_text("hello\n")
    for path, message in ((stage4, f"{stage4} is a stage4_transformer checkpoint"), (text, f"{text} is corrupt"),
                          (tmp_path / "nope.pt", "checkpoint not found")):
        code, out, err = cli(evaluate.main, ["--checkpoint", path], capsys)
        assert code == 2 and err.startswith(f"error: {message}") and out == "", err
    for flags, message in ((["--context", "64"], "--context 64 is longer than the model's block_size 32"),
                           (["--stride", "40"], "--stride 40 must be <= --context 32"),
                           (["--batch_size", "0"], "--batch_size must be >= 1"),
                           (["--max_tokens", "-5"], "must be >= 0 (0 = off): --max_tokens -5")):
        code, _, err = cli(evaluate.main, ["--checkpoint", trained / BEST_NAME, *flags], capsys)
        assert code == 2 and message in err, err


def test_help_speaks_the_shared_flag_vocabulary(capsys):
    from scripts.flags import HELP, TRAIN_FLAGS

    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in TRAIN_FLAGS + ("data_dir", "schedule_steps"):
        assert f"--{flag}" in text and " ".join(HELP[flag].split()) in text, flag
    assert "--n_embd" in text and "--vocab_size" in text and "--pos {learned,rope}" in text
    with pytest.raises(SystemExit):
        evaluate.main(["--help"])
    text = capsys.readouterr().out
    assert "--checkpoint CHECKPOINT, --model_path CHECKPOINT" in text and "checkpoints/best_gpt.pt" in text


def test_benchmark_presets_and_report_only_with_report(tmp_path, monkeypatch):
    from scripts.results import make_result, report_result, write_result
    from stage5_gpt import benchmark

    calls = {}

    def fake(name):
        def main(argv):
            calls.setdefault(name, []).append(argv)
            n = len(calls[name])  # a different loss per call, so the summary's mean is checked
            rec = make_result("stage5_gpt", name, "shakespeare_char", "val",
                              {"val_loss": 1.0 + n, "loss": 2.0 + n, "tokens_per_s": 5.0}, params=1,
                              train_wall_s=1.0, device="cpu", seed=1337, data_sha256="0" * 64,
                              command="python benchmark.py")
            rec["checkpoint"] = "checkpoints/bench_x/best_gpt.pt"
            rec["result_file"] = str(write_result(rec, name=name, out_dir=tmp_path / "results", echo=False))
            return rec
        return main

    monkeypatch.setattr(benchmark.train, "main", fake("lm_train"))
    monkeypatch.setattr(benchmark.evaluate, "main", fake("lm_eval"))
    monkeypatch.setattr(benchmark, "report_result", lambda p: report_result(p, reported_root=tmp_path / "reported"))
    records = benchmark.main(["nanogpt_cpu", "--seeds", "2", "--seed", "7"])
    assert [vars(train.build_parser().parse_args(a))["seed"] for a in calls["lm_train"]] == [7, 8]
    assert [a[a.index("--stride") + 1] for a in calls["lm_eval"]] == ["64", "32", "64", "32"]
    summary = records[-1]["metrics"]  # eval losses 3, 4 (seed 7) and 5, 6 (seed 8): stride 64 are 3 and 5
    assert (summary["val_loss_mean"], summary["val_loss_sliding_mean"], summary["train_estimate_mean"]) == \
        (4.0, 5.0, 2.5)
    assert [r["seed"] for r in records[-1]["per_seed"]] == [7, 8] and len(records) == 2
    argv = calls["lm_train"][-1]
    vals = vars(train.build_parser().parse_args(argv))  # the preset is ordinary train.py flags
    assert (vals["n_layer"], vals["n_head"], vals["n_embd"], vals["block_size"], vals["batch_size"]) == \
        (4, 4, 128, 64, 12)
    assert (vals["max_steps"], vals["lr"], vals["min_lr"], vals["dropout"], vals["eval_iters"]) == \
        (2000, 1e-3, 1e-4, 0.0, 20)
    assert calls["lm_eval"][-1][:2] == ["--checkpoint", "checkpoints/bench_x/best_gpt.pt"]
    assert not (tmp_path / "reported").exists()
    benchmark.main(["nanogpt_cpu", "--seeds", "1", "--report"])  # the first training record and the summary
    assert len(list((tmp_path / "reported" / "stage5_gpt").glob("*.json"))) == 2
    for f in (tmp_path / "reported" / "stage5_gpt").glob("*.json"):
        f.unlink()
    benchmark.main(["char20", "--report"])
    vals = vars(train.build_parser().parse_args(calls["lm_train"][-1]))
    assert vals["max_minutes"] == 20.0 and vals["dtype"] == "bfloat16" and vals["dataset"] == "shakespeare_char"
    assert (vals["dropout"], vals["attn_dropout"], vals["dropout_impl"]) == (0.1, -1.0, "fast")
    assert len(list((tmp_path / "reported" / "stage5_gpt").glob("*.json"))) == 2
    benchmark.main(["ptb", "--max_minutes", "1"])
    vals = vars(train.build_parser().parse_args(calls["lm_train"][-1]))
    assert vals["dataset"] == "ptb" and vals["max_minutes"] == 1.0
    assert (vals["pos"], vals["norm"], vals["mlp"]) == ("rope", "rmsnorm", "swiglu")  # the published PTB row's
    assert "test" in calls["lm_eval"][-1]
    benchmark.main(["wikitext2", "--max_minutes", "1"])
    vals = vars(train.build_parser().parse_args(calls["lm_train"][-1]))
    assert (vals["dataset"], vals["pos"], vals["norm"], vals["mlp"]) == ("wikitext2", "learned", "layernorm", "gelu")


def test_dropout_benchmark_times_each_kind_of_mask(char_data, tmp_path, monkeypatch):
    """Catches a dropout benchmark that times the same masks twice (``--dropout_impl`` not reaching the model) or
    reports the inverse ratio: the rounds alternate torch / fast, only the fast rounds draw fast masks, and the
    speed-up is torch's step time over fast's (the real steps run on a tiny model, ``--extra``; their times are
    then replaced by fixed ones, so the ratio is known)."""
    from scripts.results import write_result
    from stage5_gpt import benchmark
    from stage5_gpt.models import gpt

    draws, seen = [], []
    real_mask, real_median = gpt.fast_keep_mask, benchmark.median_step_s
    monkeypatch.setattr(gpt, "fast_keep_mask", lambda x, p: draws.append(p) or real_mask(x, p))

    def timed(cfg, *args):
        before = len(draws)
        real_median(cfg, *args)
        seen.append((cfg.dropout_impl, len(draws) > before))
        return {"torch": 0.004, "fast": 0.001}[cfg.dropout_impl]

    monkeypatch.setattr(benchmark, "median_step_s", timed)
    monkeypatch.setattr(benchmark, "prepare_dataset", lambda name: char_data)
    monkeypatch.setattr(benchmark, "measure_peak_flops", lambda device, dtype: 1e11)
    monkeypatch.setattr(benchmark, "write_result", lambda rec, name: write_result(rec, name, tmp_path, echo=False))
    (rec,) = benchmark.main(["dropout", "--repeats", "1", "--extra", "--n_layer", "1", "--n_head", "2", "--n_embd",
                             "16", "--block_size", "16", "--batch_size", "2"])
    assert seen == [("torch", False), ("fast", True)] * 3 and set(draws) == {0.1}  # the preset's dropout
    m = rec["metrics"]
    assert (m["ms_per_step_torch"], m["ms_per_step_fast"], m["speedup_fast"]) == pytest.approx((4.0, 1.0, 4.0))
    flops = gpt.GPT(gpt.GPTConfig(**rec["model_config"])).flops_per_token(16) * 2 * 16
    assert m["mfu_fast"] == pytest.approx(flops / 0.001 / 1e11) and rec["batch"] == [2, 16]
