"""Tests for the shared training contract in scripts/: interrupts, budgets, schedules, the --resume
rule, metrics files, data-file errors, atomic checkpoint writes under failure."""
import argparse
import gzip
import json
import os
import signal
import stat
from dataclasses import asdict, dataclass, field

import pytest
import torch

from scripts.budget import CALIBRATION_STEPS, Budget, reproduce_argv, schedule_warmup
from scripts.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from scripts.cli import HelpFormatter, UserError, repl_lines
from scripts.config import add_alias, add_dataclass_args, dataclass_from_args, explicit_flags, resume_config
from scripts.data import DataFileError, DataNotFoundError, find_dataset, read_errors, read_text
from scripts.flags import HELP, add_checkpoint_arg, shared
from scripts.interrupt import StopRequest
from scripts.log import RunLogger, read_metrics
from scripts.schedule import lr_at

# ----- interrupts ------------------------------------------------------------------------------

def test_first_signal_only_sets_the_flag_and_the_step_finishes():
    done = []
    with StopRequest(quiet=True) as stop:
        for step in range(5):
            if step == 2:
                os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the "step"
            done.append(step)  # the rest of the step still runs
            if stop.requested:
                break
    assert done == [0, 1, 2] and stop.requested and stop.signal_name == "SIGINT"


def test_sigterm_is_a_stop_request_too():
    with StopRequest(quiet=True) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested and stop.signal_name == "SIGTERM"


def test_second_signal_aborts_at_once():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with StopRequest(quiet=True):
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("after")  # never runs: the second signal raised
    assert reached == []


def test_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT)
    with StopRequest(quiet=True):
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before


# ----- atomic checkpoint writes under failure ---------------------------------------------------

def test_a_writer_that_fails_halfway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "config": {"v": 1}}, kind="x")
    real_save = torch.save

    def half_then_fail(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        f.truncate(f.tell() // 2)  # part of the bytes are on disk ...
        raise OSError("disk full")  # ... when the writer dies

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "config": {"v": 2}}, kind="x")
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path, kind="x")["config"] == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no partial file anywhere


def test_a_kill_during_the_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {}, "config": {"v": 1}}, kind="x")

    def interrupted(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt  # a second Ctrl-C inside the save

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": {}, "config": {"v": 2}}, kind="x")
    monkeypatch.undo()
    assert load_checkpoint(path)["config"] == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_checkpoints_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "m.pt", {"model": {}, "config": {}}, kind="x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not the temp file's 0600


def test_text_file_checkpoint_message_is_whole_and_never_suggests_unsafe_loading(tmp_path):
    path = tmp_path / "h.pt"
    path.write_text("hello\n")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert msg.startswith(f"{path} is corrupt or not a my_llm checkpoint") and msg.endswith("train.py")
    assert "weights_only=False" not in msg and "\n" not in msg


def test_object_checkpoint_is_refused_without_the_unsafe_hint(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"kind": "x", "model": argparse.Namespace(a=1)}, path)
    with pytest.raises(CheckpointError, match="refused") as e:
        load_checkpoint(path)
    assert "weights_only" not in str(e.value)


# ----- budgets and schedules ---------------------------------------------------------------------

def test_step_budgets_fix_the_length_up_front():
    b = Budget(epochs=3, steps_per_epoch=10, max_steps=25)
    assert b.total_steps() == 25 and b.stop_reason(24, 0.0) is None and b.stop_reason(25, 0.0) == "max_steps"
    assert Budget(epochs=3, steps_per_epoch=10).total_steps() == 30
    assert Budget(epochs=3, steps_per_epoch=10, schedule_steps=40, max_steps=12).total_steps() == 40


def test_time_budget_becomes_one_fixed_step_count():
    b = Budget(epochs=100, steps_per_epoch=1000, max_minutes=1.0)  # 60 s
    for step in range(1, CALIBRATION_STEPS + 1):  # 0.1 s per step
        assert b.planned is None
        b.observe(step, 0.1 * step, 0.1)
    expected = CALIBRATION_STEPS + int(0.97 * (60 - 0.1 * CALIBRATION_STEPS) / 0.1)
    assert b.planned == expected and b.total_steps() == expected
    # the machine gets slower later: the plan (and so the LR schedule) does not move
    b.observe(CALIBRATION_STEPS + 1, 0.1 * CALIBRATION_STEPS + 5.0, 5.0)
    assert b.total_steps() == expected
    assert b.stop_reason(expected, 10.0) == "max_minutes"
    # but the wall clock still ends the run if a step would overrun the budget
    assert b.stop_reason(expected - 100, 56.0) == "max_minutes (wall clock)"
    restored = Budget(epochs=100, steps_per_epoch=1000, max_minutes=1.0, state=json.loads(json.dumps(b.state())))
    assert restored.total_steps() == expected


def test_calibrating_until_the_end_of_the_warm_up_sees_past_slow_first_steps():
    """Catches ``calibrate_until`` being ignored (the plan made at step 20 from the slow steps) or the plan being
    made before it: steps 1-30 take 0.2 s and the rest 0.1 s; a plan made at step 100 counts on 0.1 s steps."""
    b = Budget(epochs=100, steps_per_epoch=1000, max_minutes=1.0, calibrate_until=100)
    elapsed = 0.0
    for step in range(1, 101):
        assert b.planned is None and b.needs_calibration(step - 1) == (step == 100)
        step_s = 0.2 if step <= 30 else 0.1
        elapsed += step_s
        b.observe(step, elapsed, step_s)
    assert b.planned == 100 + int(0.97 * (60 - elapsed) / 0.1) and b.calibration["at_step"] == 100
    assert Budget(epochs=1, steps_per_epoch=10, max_minutes=1.0, calibrate_until=5).calibrate_until == \
        CALIBRATION_STEPS  # never a shorter window than the default


def test_a_burst_of_load_during_the_calibration_does_not_shrink_the_plan():
    quiet, bursty = (Budget(epochs=100, steps_per_epoch=1000, max_minutes=1.0) for _ in range(2))
    t_quiet = t_bursty = 0.0
    for step in range(1, CALIBRATION_STEPS + 1):
        slow = 1.0 if step in (9, 10, 11) else 0.1  # another process took the cores for three steps
        t_quiet, t_bursty = t_quiet + 0.1, t_bursty + slow
        quiet.observe(step, t_quiet, 0.1)
        bursty.observe(step, t_bursty, slow)
    assert bursty.calibration["s_per_step"] == pytest.approx(0.1)
    assert bursty.planned == CALIBRATION_STEPS + int(0.97 * (60 - t_bursty) / 0.1)  # only the lost time is lost
    assert quiet.planned - bursty.planned < 30


def test_time_budget_plan_accounts_for_evaluation_time_and_step_limits():
    b = Budget(epochs=1, steps_per_epoch=500, max_minutes=1.0)
    for step in range(1, CALIBRATION_STEPS + 1):
        b.observe(step, 0.01 * step, 0.01, eval_s_per_step=0.01)
    assert b.planned == 500  # capped by the epochs
    c = Budget(epochs=10, steps_per_epoch=10_000, max_minutes=1.0)
    for step in range(1, CALIBRATION_STEPS + 1):
        c.observe(step, 0.1 * step, 0.1, eval_s_per_step=0.1)
    assert c.planned == CALIBRATION_STEPS + int(0.97 * (60 - 0.1 * CALIBRATION_STEPS) / 0.2)


def test_reproduce_argv_replaces_the_clock_by_steps():
    argv = ["--lr", "1e-3", "--max_minutes", "45", "--resume", "--seed", "3"]
    assert reproduce_argv(argv, 812, 900, 45.0) == ["--lr", "1e-3", "--seed", "3", "--max_steps", "812",
                                                     "--schedule_steps", "900"]
    assert reproduce_argv(["--max_steps", "5", "--resume"], 5, 5, 0.0) == ["--max_steps", "5"]
    assert reproduce_argv(["--lr_schedule", "cosine", "--max_minutes", "2", "--warmup_steps", "0"], 40, 50, 2.0,
                          warmup_steps=20) == ["--lr_schedule", "cosine", "--max_steps", "40", "--schedule_steps",
                                               "50", "--warmup_steps", "20"]


def test_cosine_under_a_time_budget_warms_up_over_the_calibration():
    assert schedule_warmup("cosine", 0, 20.0) == CALIBRATION_STEPS
    assert schedule_warmup("cosine", 500, 20.0) == 500
    assert schedule_warmup("cosine", 0, 0.0) == 0 and schedule_warmup("wsd", 0, 20.0) == 0
    # during the warm-up the LR does not depend on the (not yet known) length
    w = schedule_warmup("cosine", 0, 20.0)
    assert all(lr_at(s, schedule="cosine", lr=1.0, total_steps=100, warmup_steps=w)
               == lr_at(s, schedule="cosine", lr=1.0, total_steps=10_000, warmup_steps=w) for s in range(w))


def test_schedules_by_hand():
    kw = dict(lr=1.0, total_steps=110, warmup_steps=10, min_lr=0.1)
    assert lr_at(0, schedule="cosine", **kw) == pytest.approx(0.1)  # warm-up: (step + 1) / warmup
    assert lr_at(9, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_at(10, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_at(60, schedule="cosine", **kw) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: (1 + cos(pi/2)) / 2
    assert lr_at(110, schedule="cosine", **kw) == pytest.approx(0.1)
    assert lr_at(60, schedule="linear", **kw) == pytest.approx(0.55)
    wsd = dict(lr=1.0, total_steps=100, min_lr=0.0, decay_frac=0.2)
    assert lr_at(79, schedule="wsd", **wsd) == 1.0 and lr_at(90, schedule="wsd", **wsd) == pytest.approx(0.5)
    assert lr_at(50, schedule="constant", lr=0.3, total_steps=1) == 0.3
    # the paper's eq. (3), scaled so that the peak at the end of warm-up is lr
    noam = [lr_at(s, schedule="noam", lr=1.0, total_steps=0, warmup_steps=4000) for s in (0, 3999, 15999)]
    assert noam[0] == pytest.approx(1 / 4000) and noam[1] == pytest.approx(1.0) and noam[2] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        lr_at(0, schedule="step", lr=1.0, total_steps=1)


# ----- the --resume rule and flag helpers ---------------------------------------------------------

@dataclass
class _Cfg:
    lr: float = field(default=1e-3, metadata={"help": "lr"})
    hidden: int = field(default=64, metadata={"help": "width"})
    epochs: int = field(default=3, metadata=shared("epochs"))
    max_steps: int = field(default=0, metadata=shared("max_steps"))
    fused: bool = field(default=False, metadata={"help": "fused"})
    resume: bool = field(default=False, metadata=shared("resume"))


def _parse(argv):
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_dataclass_args(p, _Cfg)
    return p, dataclass_from_args(_Cfg, p.parse_args(argv))


def test_explicit_flags_are_what_was_typed():
    p, _ = _parse([])
    assert explicit_flags(p, ["--lr", "0.1", "--no-fused", "--resume"]) == {"lr", "fused", "resume"}
    assert explicit_flags(p, []) == set()


def test_resume_continues_the_saved_config_and_budget_flags_may_rise():
    saved = asdict(_Cfg(lr=0.5, hidden=32, epochs=3))
    argv = ["--resume", "--epochs", "9"]
    p, cfg = _parse(argv)
    merged = resume_config(saved, asdict(cfg), explicit_flags(p, argv), "last.pt")
    assert merged["lr"] == 0.5 and merged["hidden"] == 32 and merged["epochs"] == 9 and merged["resume"] is True


def test_resume_refuses_a_typed_model_flag_and_names_it():
    saved = asdict(_Cfg(lr=0.5, hidden=32))
    argv = ["--resume", "--hidden", "64", "--lr", "0.5"]  # --lr typed but equal: fine
    p, cfg = _parse(argv)
    with pytest.raises(UserError, match=r"--hidden 64 \(saved 32\)") as e:
        resume_config(saved, asdict(cfg), explicit_flags(p, argv), "last.pt")
    assert "--lr" not in str(e.value).split("would change")[0]


def test_aliases_are_hidden_and_shared_help_is_used(capsys):
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_checkpoint_arg(p, "checkpoints/best.pt")
    p.add_argument("--max_minutes", type=float, default=0.0, help=HELP["max_minutes"])
    add_alias(p, "--time_budget_min", "max_minutes", type=float)
    assert p.parse_args(["--model_path", "a.pt"]).checkpoint == "a.pt"
    assert p.parse_args(["--time_budget_min", "45"]).max_minutes == 45.0
    assert p.parse_args([]).max_minutes == 0.0
    help_text = p.format_help()
    assert "--time_budget_min" not in help_text and "--model_path" in help_text


# ----- metrics files -----------------------------------------------------------------------------

def test_a_fresh_run_never_appends_to_an_earlier_runs_metrics(tmp_path):
    RunLogger(tmp_path, quiet=True).log(1, loss=2.0)
    RunLogger(tmp_path, quiet=True).log(1, loss=3.0)  # a second, fresh run in the same folder
    assert [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [3.0]
    aside = [p for p in tmp_path.iterdir() if p.name != "metrics.jsonl"]
    assert len(aside) == 1 and [r["loss"] for r in read_metrics(aside[0])] == [2.0]  # nothing is lost


def test_a_resumed_run_continues_its_own_file_without_the_redone_steps(tmp_path):
    log = RunLogger(tmp_path, quiet=True)
    for step in (10, 20, 30):
        log.log(step, loss=float(step))
    log = RunLogger(tmp_path, quiet=True, resume_step=20)  # the checkpoint was written at step 20
    log.log(30, loss=-30.0)
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [
        (10, 10.0), (20, 20.0), (30, -30.0)]


# ----- data files ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["latin1", "utf16", "truncated_gz", "fake_gz"])
def test_unreadable_data_files_are_one_line_errors_naming_the_file(tmp_path, kind):
    path = tmp_path / ("data.txt.gz" if "gz" in kind else "data.txt")
    text = "Le café était fermé. " * 200
    if kind == "latin1":
        path.write_bytes(text.encode("latin-1"))
    elif kind == "utf16":
        path.write_bytes(text.encode("utf-16"))
    elif kind == "truncated_gz":
        path.write_bytes(gzip.compress(text.encode())[:-30])
    else:
        path.write_bytes(b"plain text, not gzip")
    with pytest.raises(DataFileError) as e:
        read_text(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    assert {"latin1": "not UTF-8", "utf16": "not UTF-8", "truncated_gz": "truncated",
            "fake_gz": "not a valid gzip"}[kind] in msg


def test_read_errors_wraps_lazy_reads(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"ok\n\xff\n")
    with pytest.raises(DataFileError, match="offset 3"):
        with read_errors(path), open(path, encoding="utf-8") as f:
            list(f)
    assert read_text(_utf8(tmp_path)) == "fine\n"


def _utf8(tmp_path):
    p = tmp_path / "ok.txt"
    p.write_text("fine\n", encoding="utf-8")
    return p


def test_a_missing_my_llm_data_folder_is_an_error_not_a_silent_fallback(tmp_path, monkeypatch):
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    (bundled / "train.txt").write_text("x")
    monkeypatch.setenv("MY_LLM_DATA", str(tmp_path / "nonexistent"))
    with pytest.raises(DataNotFoundError, match="MY_LLM_DATA=.*nonexistent does not exist"):
        find_dataset("ptb", ["train.txt"], bundled=bundled)


def test_a_my_llm_data_without_the_dataset_warns_before_using_the_bundled_copy(tmp_path, monkeypatch, capsys):
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    (bundled / "train.txt").write_text("x")
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("MY_LLM_DATA", str(tmp_path / "data"))
    assert find_dataset("ptb", ["train.txt"], bundled=bundled) == bundled
    assert "warning:" in capsys.readouterr().err


# ----- REPL ------------------------------------------------------------------------------------

def test_repl_skips_blank_lines_with_a_note_and_quits_on_q(capsys):
    import io

    lines = list(repl_lines("demo", io.StringIO("hello\n   \n\nworld\n:q\nafter\n")))
    assert lines == ["hello", "world"]
    err = capsys.readouterr().err
    assert err.count("note: empty input") == 2 and "Ctrl-D" in err



def test_a_run_resumed_before_the_plan_still_makes_one():
    b = Budget(epochs=100, steps_per_epoch=1000, max_minutes=1.0)
    for step in range(1, 8):
        b.observe(step, 0.1 * step, 0.1)
    resumed = Budget(epochs=100, steps_per_epoch=1000, max_minutes=1.0, state=json.loads(json.dumps(b.state())))
    for step in range(8, CALIBRATION_STEPS + 1):
        resumed.observe(step, 0.1 * step, 0.1)
    whole = Budget(epochs=100, steps_per_epoch=1000, max_minutes=1.0)
    for step in range(1, CALIBRATION_STEPS + 1):
        whole.observe(step, 0.1 * step, 0.1)
    assert resumed.planned == whole.planned is not None  # the timing window travelled in the checkpoint
    late = Budget(epochs=100, steps_per_epoch=1000, max_minutes=1.0)  # first observed step is 12 (an old checkpoint)
    for step in range(12, 40):
        late.observe(step, 0.1 * step, 0.1)
    assert late.planned is not None and late.calibration["at_step"] == CALIBRATION_STEPS
    assert _calibration_steps(0) == [CALIBRATION_STEPS - 1]  # the step before the plan is made
    assert _calibration_steps(17) == [22]  # resumed at 17: the window opens at 18, the plan comes at 23


def _calibration_steps(first: int) -> list[int]:
    b, marked = Budget(epochs=100, steps_per_epoch=1000, max_minutes=1.0), []
    for s in range(first, 40):
        if b.needs_calibration(s):
            marked.append(s)
        b.observe(s + 1, 0.1 * (s + 1), 0.1)
    return marked


def test_save_and_stop_saves_then_raises(capsys):
    saved = []
    with pytest.raises(KeyboardInterrupt):
        with StopRequest(quiet=True) as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            stop.save_and_stop(lambda: saved.append("last.pt"), "ck/last.pt", 7)
    assert saved == ["last.pt"]
    err = capsys.readouterr().err
    assert "SIGTERM at step 7: saved ck/last.pt; continue with the same command plus --resume" in err
