"""The training loop's promises: exact resume wherever Ctrl-C lands, time budgets that reproduce, the
--resume rule, fresh logs, --limit_train, and the seed README's commands."""
import functools
import io
import os
import shlex
import signal
import sys

import pytest
import torch

from scripts.checkpoint import load_checkpoint
from scripts.cli import UserError
from scripts.log import read_metrics
from scripts.schedule import lr_at
from stage2_rnn_lstm import generate, train
from stage2_rnn_lstm.utils.data import load_corpus
from stage2_rnn_lstm.utils.engine import evaluate_loss

# 16 segments per epoch (16,000 training characters in 32 rows of 500); 2 layers with dropout, so the
# RNG streams matter; cosine, so the LR depends on the step and the schedule's length
FAST = ["--vocab_type", "char", "--emb_dim", "16", "--hidden_size", "32", "--num_layers", "2", "--dropout", "0.2",
        "--batch_size", "32", "--seq_len", "32", "--limit_train", "16000", "--log_every", "5",
        "--lr_schedule", "cosine", "--lr", "1e-2", "--min_lr", "1e-4"]
RUN = ["--max_steps", "30", "--eval_every", "10"]


def _run(tmp, *extra):
    return train.main(FAST + ["--out_dir", str(tmp / "ck"), "--run_dir", str(tmp / "run"), *extra])


def _weights(tmp):
    return load_checkpoint(tmp / "ck" / "last_lstm_char.pt")["model"]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    return tmp, _run(tmp, *RUN)


def _sigint_at_call(monkeypatch, owner, name: str, k: int, after: bool) -> None:
    """Make ``owner.name`` send this process a real SIGINT during its k-th call (after or before its work)."""
    real, calls = getattr(owner, name), {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == k and not after:
            os.kill(os.getpid(), signal.SIGINT)
        out = real(*args, **kwargs)
        if calls["n"] == k and after:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(owner, name, wrapper)


def _dies_at_call(real, k: int):
    """``real`` that ends the process abruptly on its k-th call (like SIGKILL: no handler, nothing saved)."""
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == k:
            raise SystemExit(137)
        return real(*args, **kwargs)

    return wrapper


# (where the signal lands, the k-th call in that process) -> the step boundary the run stops at
INTERRUPTS = [
    ("optimizer", 3),    # after AdamW has updated the weights of step 3, before the step counter moves
    ("get_batch", 7),    # inside the data loader of step 10, an evaluation step
    ("optimizer", 6),    # step 16, the end of the first epoch (the hidden state is reset after it)
    ("get_batch", 5),    # step 21
    ("kill", 6),         # a hard kill in step 27 saves nothing: the run resumes from step 21's checkpoint again
]


def test_interrupt_anywhere_then_resume_is_bit_identical(uninterrupted, tmp_path, monkeypatch):
    """A real SIGINT inside the optimizer step or the data loader, four times in one run, then a hard kill,
    each followed by --resume: the final weights are bit-identical to the uninterrupted run's, and so are
    the numbers."""
    full_dir, full = uninterrupted
    step = 0
    for i, (where, k) in enumerate(INTERRUPTS):
        with monkeypatch.context() as m:
            if where == "optimizer":
                _sigint_at_call(m, torch.optim.AdamW, "step", k, after=True)
            elif where == "get_batch":
                _sigint_at_call(m, train, "get_batch", k, after=False)
            else:
                m.setattr(train, "get_batch", _dies_at_call(train.get_batch, k))
            with pytest.raises(KeyboardInterrupt if where != "kill" else SystemExit):
                _run(tmp_path, *RUN, *(["--resume"] if i else []))
        step += k if where != "kill" else 0
        assert load_checkpoint(tmp_path / "ck" / "last_lstm_char.pt")["position"]["step"] == step, (where, k)
    resumed = _run(tmp_path, *RUN, "--resume")
    # the killed attempt (21 -> 27) saved nothing, so the checkpoint's lineage lists 21 once
    assert full["resumed_at_steps"] == [] and resumed["resumed_at_steps"] == [3, 10, 16, 21]
    assert _same_weights(_weights(full_dir), _weights(tmp_path))
    assert resumed["metrics"] == full["metrics"] and resumed["last_val_loss"] == full["last_val_loss"]
    assert [(h["step"], h["tokens"], h["val_loss"], h["train_loss"]) for h in resumed["history"]] == \
           [(h["step"], h["tokens"], h["val_loss"], h["train_loss"]) for h in full["history"]]
    # a from-scratch command (no --resume), the same as the uninterrupted run's but for the folders
    assert resumed["reproduce_command"].replace(str(tmp_path), "D") == \
        full["reproduce_command"].replace(str(full_dir), "D")
    # the resumed run continued its own metrics.jsonl: every step once, as in the uninterrupted run
    steps = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", kind="train")]
    assert steps == [r["step"] for r in read_metrics(full_dir / "run" / "metrics.jsonl", kind="train")]
    assert steps == list(range(5, 31, 5))


def test_cosine_lr_is_a_function_of_the_step(uninterrupted):
    full_dir, _ = uninterrupted
    logged = read_metrics(full_dir / "run" / "metrics.jsonl", kind="train")
    for row in logged:  # logged after step s: the LR that step s (0-based s - 1) used
        assert row["lr"] == pytest.approx(lr_at(row["step"] - 1, schedule="cosine", lr=1e-2, total_steps=30,
                                                min_lr=1e-4), rel=1e-12)


def test_time_budget_fixes_the_schedule_and_its_reproduce_command_repeats_the_run(tmp_path, monkeypatch):
    """--max_minutes decides how many steps fit (once, after 20 timed steps); the LR of every step depends
    only on the step and that planned count, so the recorded command without a clock repeats the run exactly.
    The budgeted run is interrupted at step 10, before the plan is made, and resumed."""
    budget_flags = ["--max_minutes", "0.03", "--epochs", "1000", "--eval_every", "40", "--log_every", "1"]
    with monkeypatch.context() as m:
        _sigint_at_call(m, torch.optim.AdamW, "step", 10, after=True)
        with pytest.raises(KeyboardInterrupt):
            _run(tmp_path / "a", *budget_flags)
    budgeted = _run(tmp_path / "a", *budget_flags, "--resume")
    assert budgeted["resumed_at_steps"] == [10]
    budget = budgeted["budget"]
    planned, steps = budget["schedule_steps"], budgeted["steps"]
    assert budget["calibration"]["at_step"] == 20 and budget["warmup_steps"] == 20  # cosine warms up through it
    assert 20 < steps <= planned and budgeted["stopped_by"].startswith("max_minutes")
    for row in read_metrics(tmp_path / "a" / "run" / "metrics.jsonl", kind="train"):
        assert row["lr"] == pytest.approx(lr_at(row["step"] - 1, schedule="cosine", lr=1e-2, total_steps=planned,
                                                warmup_steps=20, min_lr=1e-4), rel=1e-12), row["step"]
    command = budgeted["reproduce_command"].split("&&")[-1]
    words = shlex.split(command)
    assert words[:2] == ["python", os.path.relpath(train.STAGE_DIR / "train.py")]
    flags = words[2:]
    assert "--max_minutes" not in flags and "--resume" not in flags
    assert flags[flags.index("--max_steps") + 1] == str(steps)
    assert flags[flags.index("--schedule_steps") + 1] == str(planned)
    again = train.main(flags + ["--out_dir", str(tmp_path / "b" / "ck"), "--run_dir", str(tmp_path / "b" / "run")])
    assert again["steps"] == steps and again["stopped_by"] == "max_steps" and again["budget"]["calibration"] is None
    assert _same_weights(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert again["metrics"] == budgeted["metrics"]
    assert [h["val_loss"] for h in again["history"]] == [h["val_loss"] for h in budgeted["history"]]


def test_resume_rule_and_fresh_logs(tmp_path):
    """--resume continues the saved config (untyped flags come from the checkpoint); typed budget flags may
    change; a typed flag that changes the model or data is refused, naming it; a fresh run starts a new log."""
    first = _run(tmp_path, "--max_steps", "8", "--eval_every", "4")
    ck, run = str(tmp_path / "ck"), str(tmp_path / "run")
    for flags, message in [
        (["--hidden_size", "64"], "--hidden_size 64 (saved 32)"),
        (["--limit_train", "8000"], "--limit_train 8000 (saved 16000)"),
        (["--lr", "0.5", "--num_layers", "1"], "--lr 0.5 (saved 0.01), --num_layers 1 (saved 2)"),
    ]:
        with pytest.raises(UserError) as e:
            train.main(["--out_dir", ck, "--run_dir", run, "--resume", *flags])
        assert message in str(e.value) and "would change the model, data or tokenizer" in str(e.value)
    with pytest.raises(UserError, match="checkpoint not found"):
        train.main(["--out_dir", str(tmp_path / "nowhere"), "--resume"])
    # only the budget typed (and the old spelling of --out_dir that recorded commands use): the rest is saved
    more = train.main(["--checkpoint_dir", ck, "--run_dir", run, "--resume", "--max_steps", "12"])
    assert more["steps"] == 12 and more["resumed_at_steps"] == [8]
    assert more["config"]["model"]["hidden_size"] == 32 and more["config"]["train"]["lr"] == 1e-2
    assert more["config"]["train"]["limit_train"] == 16000 and first["config"]["train"] == {
        **more["config"]["train"], "max_steps": 8, "resume": False}
    assert "--max_steps 12" in more["reproduce_command"] and "--hidden_size 32" in more["reproduce_command"]
    # a fresh run in the same folders moves the old log aside instead of appending to it
    _run(tmp_path, "--max_steps", "5", "--eval_every", "5")
    steps = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert steps == [5, 5]  # one train line, one eval line: only this run's
    assert len(list((tmp_path / "run").glob("metrics.*.jsonl"))) == 1


def test_limit_train_cuts_only_the_training_split():
    full, cut = load_corpus("char"), load_corpus("char", limit_train=1000)
    assert cut.splits["train"].numel() == 1000 and torch.equal(cut.splits["train"], full.splits["train"][:1000])
    assert torch.equal(cut.splits["val"], full.splits["val"]) and full.splits["val"].numel() == 111540
    assert cut.vocab.tokens == full.vocab.tokens  # built on the whole training split


def test_seed_readme_commands_work(tmp_path, monkeypatch, capsys):
    """`python train.py --model_type lstm --vocab_type char --epochs 15` (here for 2 steps) writes what
    `python generate.py --checkpoint checkpoints/best_lstm_char.pt --vocab checkpoints/char_vocabulary.pkl
    --interactive` reads, both run from the same folder. The test validates on 2 segments only (a full pass
    of the default 2x512 model takes 10 s on a busy 2-core machine; evaluation is tested above)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "evaluate_loss", functools.partial(evaluate_loss, max_batches=2))
    record = train.main("--model_type lstm --vocab_type char --epochs 15".split() + ["--max_steps", "2"])
    assert record["steps"] == 2 and record["model"] == "LSTM 2x512 char (torch)"
    assert (tmp_path / "checkpoints" / "best_lstm_char.pt").is_file()
    monkeypatch.setattr(sys, "stdin", io.StringIO("ROMEO:\n\n"))
    capsys.readouterr()
    generate.main("--checkpoint checkpoints/best_lstm_char.pt --vocab checkpoints/char_vocabulary.pkl "
                  "--interactive".split())
    out, err = capsys.readouterr()
    assert out.startswith("ROMEO:") and len(out) == len("ROMEO:") + 500 + 1  # 500 new characters by default
    assert "note: empty input" in err
