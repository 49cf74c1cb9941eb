"""train.py / evaluate.py / generate.py end to end on the bundled tiny Shakespeare, and bad inputs."""
import pickle
import sys
from pathlib import Path

import pytest
import torch

from scripts.checkpoint import load_checkpoint, load_vocab_pickle, save_vocab_pickle
from scripts.cli import UserError
from scripts.config import dataclass_from_args
from scripts.log import read_metrics
from scripts.testing import run_script
from stage2_rnn_lstm import evaluate, generate, train
from stage2_rnn_lstm.benchmark import PRESETS
from stage2_rnn_lstm.models.language_model import LMConfig, RNNLanguageModel

STAGE = Path(__file__).resolve().parent.parent
TINY = ["--vocab_type", "char", "--emb_dim", "32", "--hidden_size", "128", "--num_layers", "1", "--dropout", "0.0",
        "--batch_size", "32", "--seq_len", "32", "--lr", "1e-2", "--limit_train", "40000", "--log_interval", "5"]
SMALL = ["--limit_train", "1500", "--batch_size", "8", "--seq_len", "16"]  # 12 batches per epoch


def _train(tmp, *extra):
    return train.main(TINY + ["--checkpoint_dir", str(tmp / "ck"), "--run_dir", str(tmp / "run"), *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s2")
    record = _train(tmp, "--max_steps", "60", "--eval_interval", "30")
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
    import math
    assert record["metrics"]["val_loss"] < 2.9  # below the unigram entropy (~3.3 nats): it learned real structure
    assert record["metrics"]["val_bpc"] == pytest.approx(record["metrics"]["val_loss"] / math.log(2))
    from scripts.log import read_metrics
    losses = [r["loss"] for r in read_metrics(tmp / "run" / "metrics.jsonl", kind="train")]
    assert losses[-1] < losses[0] - 0.5


def test_evaluate_reproduces_training_val_loss(trained):
    tmp, record = trained
    out = evaluate.main(["--checkpoint", str(tmp / "ck" / "best_lstm_char.pt"), "--device", "cpu"])
    assert out["metrics"]["val_loss"] == pytest.approx(record["metrics"]["val_loss"], rel=1e-6)


def test_generate_same_seed_same_text(trained, capsys):
    tmp, _ = trained
    args = ["--checkpoint", str(tmp / "ck" / "best_lstm_char.pt"), "--vocab", str(tmp / "ck" / "char_vocabulary.pkl"),
            "--prompt", "First", "--max_new_tokens", "40", "--top_k", "10", "--seed", "7"]
    a, b = generate.main(args), generate.main(args)
    c = generate.main(args[:-1] + ["8"])
    assert a == b and len(a) == 40 and a != c
    assert capsys.readouterr().out.startswith("First")


def test_interactive_prompt_loop(trained):
    tmp, _ = trained
    r = run_script(STAGE / "generate.py", ["--checkpoint", tmp / "ck" / "best_lstm_char.pt", "--vocab",
                                           tmp / "ck" / "char_vocabulary.pkl", "--interactive", "--max_new_tokens", "5"],
                   stdin="To be\nZ\u00e9\n\nnot reached\n")
    assert r.returncode == 0, r.stderr
    assert "To be" in r.stdout and "not reached" not in r.stdout
    assert "not in the char vocabulary" in r.stderr  # the bad prompt is reported, the loop goes on


@pytest.mark.parametrize("schedule,stop", [("plateau", KeyboardInterrupt), ("cosine", KeyboardInterrupt), ("plateau", SystemExit)])
def test_resume_after_ctrl_c_equals_uninterrupted_run(tmp_path, monkeypatch, schedule, stop):
    """Ctrl-C saves the exact position; a hard kill (SystemExit here: nothing is saved on the way out)
    falls back to the checkpoint written at the last evaluation. Both resume to the uninterrupted result."""
    flags = [*SMALL, "--num_layers", "2", "--dropout", "0.2", "--max_steps", "20", "--eval_interval", "5", "--lr_schedule", schedule]
    full = _train(tmp_path / "a", *flags)  # crosses an epoch boundary
    real_get_batch, calls = train.get_batch, {"n": 0}

    def interrupt_at_step_8(*a):
        calls["n"] += 1
        if calls["n"] == 8:
            raise stop
        return real_get_batch(*a)

    monkeypatch.setattr(train, "get_batch", interrupt_at_step_8)
    with pytest.raises(stop):
        _train(tmp_path / "b", *flags)
    monkeypatch.setattr(train, "get_batch", real_get_batch)
    saved_at = 7 if stop is KeyboardInterrupt else 5
    assert load_checkpoint(tmp_path / "b" / "ck" / "last_lstm_char.pt")["position"]["step"] == saved_at
    resumed = _train(tmp_path / "b", *flags, "--resume")
    assert full["resumed_at_steps"] == [] and resumed["resumed_at_steps"] == [saved_at]
    assert resumed["last_val_loss"] == pytest.approx(full["last_val_loss"], abs=1e-6)
    assert resumed["metrics"]["val_loss"] == pytest.approx(full["metrics"]["val_loss"], abs=1e-6)
    a = load_checkpoint(tmp_path / "a" / "ck" / "last_lstm_char.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "ck" / "last_lstm_char.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    with pytest.raises(UserError, match="flags differ"):
        _train(tmp_path / "b", *SMALL, "--num_layers", "2", "--dropout", "0.2", "--max_steps", "30", "--lr", "0.5", "--resume")


def test_cosine_schedule_anneals_over_the_budget(tmp_path):
    cfg = train.TrainConfig(epochs=10, max_steps=100, max_minutes=2.0, lr=1e-2, min_lr=1e-4)
    assert train.budget_fraction(cfg, 50, 1.0, 0.0) == 0.5                 # steps are the tightest budget
    assert train.budget_fraction(cfg, 10, 1.0, 90.0) == 0.75               # here the clock is
    assert train.budget_fraction(cfg, 10, 9.0, 0.0) == 0.9                 # here the epochs are
    assert train.budget_fraction(cfg, 500, 1.0, 0.0) == 1.0
    assert train.cosine_lr(cfg, 0.0) == pytest.approx(1e-2) and train.cosine_lr(cfg, 1.0) == pytest.approx(1e-4)
    assert train.cosine_lr(cfg, 0.5) == pytest.approx((1e-2 + 1e-4) / 2)
    _train(tmp_path, *SMALL, "--max_steps", "10", "--log_interval", "1", "--lr_schedule", "cosine", "--min_lr", "1e-4")
    lrs = [r["lr"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")]
    assert len(lrs) == 10 and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] == pytest.approx(train.cosine_lr(train.TrainConfig(lr=1e-2, min_lr=1e-4), 0.9))


def test_wsd_schedule_and_time_budget_is_not_overrun(tmp_path, monkeypatch):
    cfg = train.TrainConfig(lr=1e-2, min_lr=1e-4, decay_frac=0.2)
    assert train.wsd_lr(cfg, 0.0) == train.wsd_lr(cfg, 0.8) == 1e-2              # stable ...
    assert train.wsd_lr(cfg, 0.9) == pytest.approx((1e-2 + 1e-4) / 2)            # ... then linear decay
    assert train.wsd_lr(cfg, 1.0) == pytest.approx(1e-4)
    # a fake clock: every training step (one get_batch call) takes exactly one second
    clock = {"now": 1000.0}
    real_get_batch = train.get_batch

    def one_second_batch(*a):
        clock["now"] += 1.0
        return real_get_batch(*a)

    monkeypatch.setattr(train, "time", type("FakeTime", (), {"time": staticmethod(lambda: clock["now"])}))
    monkeypatch.setattr(train, "get_batch", one_second_batch)
    record = _train(tmp_path, *SMALL, "--epochs", "100", "--max_minutes", str(30.5 / 60), "--lr_schedule", "wsd",
                    "--log_interval", "1")
    # 30 one-second steps fit into 30.5 s; a 31st would end at 31 s, so it is not started
    assert record["steps"] == 30 and record["train_wall_s"] <= 30.5 and record["stopped_by"] == "max_minutes"
    lrs = [r["lr"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")]
    assert lrs[0] == lrs[23] == 1e-2 and lrs[-1] < 3e-3  # constant for 80% of the budget, then decays


def test_same_seed_same_run(tmp_path):
    a = _train(tmp_path / "a", "--num_layers", "2", *SMALL, "--max_steps", "6", "--impl", "scratch", "--model_type", "gru", "--dropout", "0.2")
    b = _train(tmp_path / "b", "--num_layers", "2", *SMALL, "--max_steps", "6", "--impl", "scratch", "--model_type", "gru", "--dropout", "0.2")
    assert a["metrics"] == b["metrics"]
    assert (tmp_path / "a" / "ck" / "best_gru_char_scratch.pt").is_file()


def test_bad_inputs_in_process(trained, tmp_path):
    tmp, _ = trained
    ck, vocab = tmp / "ck" / "best_lstm_char.pt", tmp / "ck" / "char_vocabulary.pkl"
    cases = [
        (generate.main, ["--checkpoint", str(tmp_path / "missing.pt")], "checkpoint not found"),
        (generate.main, ["--checkpoint", str(ck), "--vocab", str(tmp_path / "missing.pkl")], "vocabulary file not found"),
        (generate.main, ["--checkpoint", str(ck), "--top_k", "1000"], "--top_k must be between 1"),
        (generate.main, ["--checkpoint", str(ck), "--temperature", "-1"], "--temperature must be > 0"),
        (generate.main, ["--checkpoint", str(ck), "--prompt", "  "], "empty prompt"),
        (generate.main, ["--checkpoint", str(ck), "--prompt", "\u4f60\u597d"], "not in the char vocabulary"),
        (train.main, TINY + ["--seq_len", "0"], "impossible value"),
        (train.main, TINY + ["--tie_weights"], "--tie_weights needs"),
        (train.main, TINY + ["--adaptive_cutoffs", "30", "10"], "strictly increasing"),
        (train.main, TINY + ["--adaptive_cutoffs", "10", "--adaptive_div", "0.5"], "--adaptive_div must be at least 1"),
        (train.main, TINY + ["--adaptive_cutoffs", "10", "--adaptive_div", "1000"], "at least one dimension"),
        (train.main, TINY + ["--dataset", "ptb", "--data_dir", str(tmp_path)], "ptb"),
        (evaluate.main, ["--checkpoint", str(ck), "--split", "test"], "no test split"),
    ]
    for fn, args, msg in cases:
        with pytest.raises(UserError, match=msg.replace("-", r"\-")):
            fn(args)
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


def test_bad_inputs_as_a_user_sees_them(trained, tmp_path):
    """One-line `error: ...` on stderr, exit code 2, no traceback, nothing executed."""
    tmp, _ = trained
    ck = tmp / "ck" / "best_lstm_char.pt"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Evil()))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    empty = tmp_path / "tinyshakespeare"
    empty.mkdir()
    (empty / "input.txt").write_text("")
    runs = [
        (STAGE / "generate.py", ["--checkpoint", ck, "--vocab", evil], "refusing to load global"),
        (STAGE / "generate.py", ["--checkpoint", corrupt], "corrupt"),
        (STAGE / "generate.py", ["--checkpoint", ck, "--temperature", "0"], "--temperature must be > 0"),
        (STAGE / "train.py", ["--data_dir", tmp_path, "--max_steps", "1"], "corpus file is empty"),
    ]
    for script, args, msg in runs:
        r = run_script(script, args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], r.stderr
    assert not (Path(__file__).parent / "PWNED").exists()


def _shared_data():
    import os
    from scripts import REPO_ROOT
    return Path(os.environ.get("MY_LLM_DATA") or REPO_ROOT.parent / "shared" / "data")


@pytest.mark.skipif(not (_shared_data() / "ptb").is_dir(), reason="Penn Treebank not available (set MY_LLM_DATA)")
@pytest.mark.parametrize("tied", [False, True])
def test_word_level_ptb_adaptive_softmax_and_unknown_words(tmp_path, capsys, tied):
    ck = tmp_path / "ck"
    rec = train.main(["--vocab_type", "word", "--dataset", "ptb", "--data_dir", str(_shared_data()), "--limit_train", "30000",
                      "--emb_dim", "16", "--hidden_size", "16", "--num_layers", "1", "--batch_size", "8", "--seq_len", "10",
                      "--adaptive_cutoffs", "100", "500", "--max_steps", "5", "--checkpoint_dir", str(ck), "--run_dir", str(tmp_path),
                      *(["--tie_weights", "--adaptive_div", "2"] if tied else [])])
    assert rec["model"].endswith(("tied adaptive-softmax (torch)" if tied else "word adaptive-softmax (torch)"))
    assert rec["primary_metric"] == "test_perplexity" and "test_loss" in rec["metrics"]
    assert (ck / "word_vocabulary.pkl").is_file() and (ck / "best_lstm_word.pt").is_file()
    vocab = load_vocab_pickle(ck / "word_vocabulary.pkl")
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
    cfg, mcfg = dataclass_from_args(train.TrainConfig, args), dataclass_from_args(LMConfig, args)
    train.check_flags(cfg, mcfg)
    assert cfg.lr_schedule in train.BUDGET_SCHEDULES and cfg.patience == 0
    if cfg.fused:  # the fused AdamW kernel really is used on CPU
        model = RNNLanguageModel(LMConfig(vocab_size=50, emb_dim=8, hidden_size=8, num_layers=1))
        opt = train.make_optimizer(model, cfg, torch.device("cpu"))
        assert opt.param_groups[0]["fused"] is True
