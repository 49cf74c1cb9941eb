"""train.py / evaluate.py / generate.py / benchmark.py on the bundled tiny Shakespeare: outputs, the REPL,
the flag vocabulary, and bad inputs (one-line errors, exit code 2)."""
import gzip
import io
import math
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch

from scripts.checkpoint import load_checkpoint, load_vocab_pickle, save_vocab_pickle
from scripts.cli import UserError, run_cli
from scripts.config import dataclass_from_args
from scripts.log import read_metrics
from stage2_rnn_lstm import benchmark, evaluate, generate, train
from stage2_rnn_lstm.benchmark import PRESETS
from stage2_rnn_lstm.models.language_model import LMConfig, RNNLanguageModel

STAGE = Path(__file__).resolve().parent.parent
TINY = ["--vocab_type", "char", "--emb_dim", "32", "--hidden_size", "128", "--num_layers", "1", "--dropout", "0.0",
        "--batch_size", "32", "--seq_len", "32", "--lr", "1e-2", "--limit_train", "40000", "--log_every", "5"]


def _train(tmp, *extra):
    return train.main(TINY + ["--out_dir", str(tmp / "ck"), "--run_dir", str(tmp / "run"), *extra])


def _cli(main, args, capsys):
    """Run a CLI in-process as ``python x.py`` would: (exit code, stderr lines)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_cli(main, [str(a) for a in args])
    return e.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s2")
    record = _train(tmp, "--max_steps", "60", "--eval_every", "30")
    return tmp, record


def test_train_writes_checkpoint_vocab_result_and_loss_falls(trained):
    tmp, record = trained
    ck = tmp / "ck"
    assert (ck / "best_lstm_char.pt").is_file() and (ck / "last_lstm_char.pt").is_file()
    vocab = load_vocab_pickle(ck / "char_vocabulary.pkl")
    assert vocab["vocab_type"] == "char" and "\n" in vocab["tokens"]
    assert (ck / "char_vocabulary.json").is_file()
    ckpt = load_checkpoint(ck / "best_lstm_char.pt", kind="stage2_rnn_lstm")
    assert ckpt["vocab"]["tokens"] == vocab["tokens"]
    assert record["primary_metric"] == "val_loss" and record["steps"] == 60
    assert record["metrics"]["val_loss"] < 2.9  # below the unigram entropy (~3.3 nats): it learned real structure
    assert record["metrics"]["val_bpc"] == pytest.approx(record["metrics"]["val_loss"] / math.log(2))
    losses = [r["loss"] for r in read_metrics(tmp / "run" / "metrics.jsonl", kind="train")]
    assert losses[-1] < losses[0] - 0.5


def test_result_records_history_reproduce_command_memory_and_budget(trained):
    _, record = trained
    history = record["history"]
    assert [h["step"] for h in history] == [30, 60]
    # 40 segments per epoch: 39 of 32x32 tokens and a last one of 32x1 (the stream's 1,249 inputs per row)
    assert [h["tokens"] for h in history] == [30 * 32 * 32, (39 + 20) * 32 * 32 + 32 * 1]
    assert 0 < history[0]["wall_s"] < history[1]["wall_s"] <= record["train_wall_s"] + 0.1
    assert all(h["train_loss"] > h["val_loss"] - 1 and h["val_perplexity"] == pytest.approx(math.exp(h["val_loss"]))
               for h in history)
    assert history[1]["val_loss"] == record["last_val_loss"] == pytest.approx(record["metrics"]["val_loss"])
    assert record["resumed_at_steps"] == [] and record["peak_rss_mb"] > 50
    assert record["budget"]["steps"] == 60 and record["budget"]["schedule_steps"] == 60
    cmd = record["reproduce_command"]
    assert "train.py" in cmd and "--max_steps 60" in cmd and "--resume" not in cmd and "--max_minutes" not in cmd


def test_evaluate_prints_a_summary_then_the_result_line(trained, capsys):
    tmp, record = trained
    capsys.readouterr()
    out = evaluate.main(["--checkpoint", str(tmp / "ck" / "best_lstm_char.pt"), "--device", "cpu"])
    assert out["metrics"]["val_loss"] == pytest.approx(record["metrics"]["val_loss"], rel=1e-6)
    assert out["config"]["batch_size"] == 32 and out["config"]["seq_len"] == 32  # the training values by default
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("checkpoint ") and "step 60" in lines[0]
    val = next(ln for ln in lines if ln.startswith("tinyshakespeare val"))
    assert f"loss {out['metrics']['val_loss']:.4f} nats/token" in val and "bits/char" in val
    assert lines[-1].startswith("RESULT {") and lines.index(val) < len(lines) - 1
    # --model_path is the same flag; --batch_size / --seq_len, when given, must be positive
    assert evaluate.main(["--model_path", str(tmp / "ck" / "best_lstm_char.pt"), "--max_batches", "3",
                          "--batch_size", "16"])["config"]["batch_size"] == 16
    for bad in (["--batch_size", "0"], ["--seq_len", "-1"], ["--max_batches", "-2"]):
        with pytest.raises(UserError, match="impossible value"):
            evaluate.main(["--checkpoint", str(tmp / "ck" / "best_lstm_char.pt"), *bad])


def test_generate_same_seed_same_text(trained, capsys):
    tmp, _ = trained
    args = ["--checkpoint", str(tmp / "ck" / "best_lstm_char.pt"), "--vocab", str(tmp / "ck" / "char_vocabulary.pkl"),
            "--prompt", "First", "--max_new_tokens", "40", "--top_k", "10", "--seed", "7"]
    a, b = generate.main(args), generate.main(args)
    c = generate.main(args[:-1] + ["8"])
    assert a == b and len(a) == 40 and a != c
    assert capsys.readouterr().out.startswith("First")
    # the default seed is the one default of every stage: two runs without --seed agree too
    default = ["--checkpoint", str(tmp / "ck" / "best_lstm_char.pt"), "--max_new_tokens", "20"]
    assert generate.main(default) == generate.main(default)


def test_interactive_blank_lines_are_skipped_and_ctrl_d_ends(trained, monkeypatch, capsys):
    """The REPL rule: a blank line generates nothing (a note on stderr) and the session goes on;
    a bad prompt is an error line and the session goes on; end of input (Ctrl-D) ends it."""
    tmp, _ = trained
    args = ["--checkpoint", str(tmp / "ck" / "best_lstm_char.pt"), "--vocab", str(tmp / "ck" / "char_vocabulary.pkl"),
            "--interactive", "--max_new_tokens", "5"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("To be\n\n   \nZ\u00e9\nROMEO:\n"))
    capsys.readouterr()
    generate.main(args)
    out, err = capsys.readouterr()
    # exactly two generations: each prompt echoed, 5 new characters, a newline; nothing for the blank lines
    assert out.startswith("To be") and out[10] == "\n" and out[11:17] == "ROMEO:" and len(out) == 23, repr(out)
    assert err.count("note: empty input") == 2 and "not in the char vocabulary" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("To be\n:q\nROMEO:\n"))  # :q ends the session too
    generate.main(args)
    assert "ROMEO" not in capsys.readouterr().out


def test_flag_vocabulary_old_spellings_are_hidden_aliases():
    p = train.build_parser()
    a = p.parse_args(["--checkpoint_dir", "x", "--eval_interval", "7", "--log_interval", "3"])
    assert (a.out_dir, a.eval_every, a.log_every) == ("x", 7, 3)
    text = p.format_help()
    assert "--out_dir" in text and "--checkpoint_dir" not in text and "--eval_interval" not in text
    assert "--vocab_size" not in text and a.seed == 1337
    with pytest.raises(SystemExit):  # the vocabulary size comes from the data: not a flag
        p.parse_args(["--vocab_size", "10"])


def test_bad_inputs_in_process(trained, tmp_path):
    tmp, _ = trained
    ck = tmp / "ck" / "best_lstm_char.pt"
    cases = [
        (generate.main, ["--checkpoint", str(tmp_path / "missing.pt")], "checkpoint not found"),
        (generate.main, ["--checkpoint", str(ck), "--vocab", str(tmp_path / "missing.pkl")],
         "vocabulary file not found"),
        (generate.main, ["--checkpoint", str(ck), "--top_k", "1000"], "--top_k must be between 1"),
        (generate.main, ["--checkpoint", str(ck), "--temperature", "-1"], "--temperature must be > 0"),
        (generate.main, ["--checkpoint", str(ck), "--prompt", "  "], "empty prompt"),
        (generate.main, ["--checkpoint", str(ck), "--prompt", "\u4f60\u597d"], "not in the char vocabulary"),
        (train.main, TINY + ["--seq_len", "0"], "impossible value"),
        (train.main, TINY + ["--grad_clip", "-1"], "must be >= 0 (0 = off): --grad_clip -1"),
        (train.main, TINY + ["--max_minutes", "-1"], "must be >= 0 (0 = off): --max_minutes -1"),
        (train.main, TINY + ["--warmup_steps", "5"], "--warmup_steps applies to --lr_schedule cosine or wsd"),
        (train.main, TINY + ["--tie_weights"], "--tie_weights needs"),
        (train.main, TINY + ["--adaptive_cutoffs", "30", "10"], "strictly increasing"),
        (train.main, TINY + ["--adaptive_cutoffs", "10", "--adaptive_div", "0.5"], "--adaptive_div must be at least 1"),
        (train.main, TINY + ["--adaptive_cutoffs", "10", "--adaptive_div", "1000"], "at least one dimension"),
        (train.main, TINY + ["--dataset", "ptb", "--data_dir", str(tmp_path)],
         f"ptb: --data_dir {tmp_path} holds neither ptb.train.txt, ptb.valid.txt, ptb.test.txt nor ptb/ with them"),
        (evaluate.main, ["--checkpoint", str(ck), "--split", "test"], "tinyshakespeare has no test split"),
    ]
    for fn, args, msg in cases:
        with pytest.raises(UserError) as e:
            fn(args)
        assert msg in str(e.value), (args, str(e.value))
    other = tmp_path / "other.pkl"
    save_vocab_pickle(other, {"vocab_type": "char", "tokens": ["a", "b"], "fingerprint": "x"})
    with pytest.raises(UserError, match="does not match checkpoint"):
        generate.main(["--checkpoint", str(ck), "--vocab", str(other)])
    stage1 = tmp_path / "stage1.pt"
    torch.save({"kind": "stage1_mlp", "model": {}, "config": {}}, stage1)
    with pytest.raises(UserError, match="stage1_mlp checkpoint"):
        generate.main(["--checkpoint", str(stage1)])


class _Evil:
    def __reduce__(self):
        return (open, (str(Path(__file__).parent / "PWNED"), "w"))


SAMPLE = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak. caf\u00e9\n" * 200


def _dataset_dir(tmp_path, name: str, data: bytes) -> Path:
    folder = tmp_path / name / "tinyshakespeare"
    folder.mkdir(parents=True)
    (folder / ("input.txt.gz" if name.endswith("gz") else "input.txt")).write_bytes(data)
    return folder.parent


def test_bad_files_are_one_line_errors_naming_the_file(trained, tmp_path, capsys):
    """What a user sees for each broken file: one `error: ...` line naming it, exit code 2, nothing executed."""
    tmp, _ = trained
    ck = tmp / "ck" / "best_lstm_char.pt"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Evil()))
    text_ckpt = tmp_path / "h.pt"
    text_ckpt.write_text("hello\n")
    empty = _dataset_dir(tmp_path, "empty", b"")
    full = gzip.compress(SAMPLE.encode("utf-8"))
    data_cases = {  # name -> (bytes of the data file, what the message says)
        "utf16": (SAMPLE.encode("utf-16"), "not UTF-8 text (byte 0xff at offset 0)"),
        "latin1": (SAMPLE.encode("latin-1"), "not UTF-8 text (byte 0xe9"),
        "truncated_gz": (full[: len(full) // 2], "the gzip file is truncated"),
        "fake_gz": (SAMPLE.encode("utf-8"), "not a valid gzip file"),
    }
    runs = [
        (generate.main, ["--checkpoint", ck, "--vocab", evil], str(evil), "refusing to load global"),
        (generate.main, ["--checkpoint", text_ckpt], str(text_ckpt), "not a my_llm checkpoint"),
        (evaluate.main, ["--model_path", text_ckpt], str(text_ckpt), "not a my_llm checkpoint"),
        (generate.main, ["--checkpoint", ck, "--temperature", "0"], "", "--temperature must be > 0"),
        (train.main, ["--data_dir", empty, "--max_steps", "1"], str(empty), "corpus file is empty"),
    ]
    for name, (data, msg) in data_cases.items():
        folder = _dataset_dir(tmp_path, name, data)
        runs.append((train.main, ["--data_dir", folder, "--max_steps", "1", "--out_dir", tmp_path / "ck"],
                     str(folder / "tinyshakespeare" / ("input.txt.gz" if name.endswith("gz") else "input.txt")), msg))
    for main, args, path, msg in runs:
        code, err = _cli(main, args, capsys)
        assert code == 2, (args, err)
        assert len(err) == 1 and err[0].startswith("error: ") and path in err[0] and msg in err[0], (args, err)
    assert not (Path(__file__).parent / "PWNED").exists()


def test_benchmark_reports_only_with_report(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_LLM_RESULTS", str(tmp_path))
    tiny = ["speed", "--hidden_size", "8", "--num_layers", "1", "--batch_size", "2", "--seq_len", "3", "--steps", "1",
            "--rounds", "1", "--device", "cpu"]
    benchmark.main(tiny)
    written = list((tmp_path / "stage2_rnn_lstm").glob("speed_lstm_scratch_vs_torch_*.json"))
    assert len(written) == 1 and not (tmp_path / "reported").exists()
    written[0].unlink()
    benchmark.main(tiny + ["--report"])
    reported = list((tmp_path / "reported" / "stage2_rnn_lstm").glob("speed_lstm_scratch_vs_torch_*T*.json"))
    assert len(reported) == 1  # a timestamped name: never overwrites an earlier report


def _shared_data():
    path = os.environ.get("MY_LLM_DATA")
    return Path(path) if path else None


@pytest.mark.skipif(not (_shared_data() and (_shared_data() / "ptb").is_dir()),
                    reason="Penn Treebank data not available (set MY_LLM_DATA)")
def test_word_level_ptb_tied_adaptive_softmax_and_unknown_words(tmp_path, capsys):
    tied = True  # the untied nn.AdaptiveLogSoftmaxWithLoss path is tested in test_models.py
    ck = tmp_path / "ck"
    rec = train.main(["--vocab_type", "word", "--dataset", "ptb", "--data_dir", str(_shared_data()),
                      "--limit_train", "20000", "--emb_dim", "16", "--hidden_size", "16", "--num_layers", "1",
                      "--batch_size", "32", "--seq_len", "32", "--adaptive_cutoffs", "100", "500", "--max_steps", "5",
                      "--out_dir", str(ck), "--run_dir", str(tmp_path),
                      *(["--tie_weights", "--adaptive_div", "2"] if tied else [])])
    assert rec["model"].endswith(("tied adaptive-softmax (torch)" if tied else "word adaptive-softmax (torch)"))
    assert rec["primary_metric"] == "test_perplexity" and "test_loss" in rec["metrics"]
    assert (ck / "word_vocabulary.pkl").is_file() and (ck / "best_lstm_word.pt").is_file()
    vocab = load_vocab_pickle(ck / "word_vocabulary.pkl")
    assert len(vocab["tokens"]) == 10000  # built on the whole training split, whatever --limit_train
    assert vocab["tokens"][0] == "the" and "<unk>" in vocab["tokens"] and "<eos>" in vocab["tokens"]
    capsys.readouterr()
    out = generate.main(["--checkpoint", str(ck / "best_lstm_word.pt"), "--prompt", "the qwertyuiop market",
                         "--max_new_tokens", "5", "--seed", "0"])
    assert len(out.split()) == 5
    assert "read as <unk>: qwertyuiop" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_benchmark_presets_are_valid_flags(name):
    """A typo in a preset would only surface after the data loaded, minutes into a benchmark run."""
    args = train.build_parser().parse_args(PRESETS[name])
    cfg = dataclass_from_args(train.TrainConfig, args)
    mcfg = LMConfig(**vars(dataclass_from_args(train.ModelFlags, args)))
    train.check_flags(cfg, mcfg)
    assert cfg.lr_schedule in ("cosine", "wsd") and cfg.patience == 0
    if cfg.fused:  # the fused AdamW kernel really is used on CPU
        model = RNNLanguageModel(LMConfig(vocab_size=50, emb_dim=8, hidden_size=8, num_layers=1))
        opt = train.make_optimizer(model, cfg, torch.device("cpu"))
        assert opt.param_groups[0]["fused"] is True
