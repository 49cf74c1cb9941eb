"""The training loop's promises: Ctrl-C anywhere resumes bit-identically, identical runs give identical numbers,
a time budget reproduces from its recorded command, and --grad_clip 0 means off."""
import os
import shlex
import signal

import pytest
import torch

from scripts.checkpoint import load_checkpoint
from scripts.log import read_metrics
from stage3_attention_seq2seq import quickstart, train

# 20 steps over 8-step epochs (two epoch ends), an evaluation every 6 steps and one at the end
SHORT = ["--max_steps", "20", "--epochs", "5", "--eval_every", "6", "--log_every", "5"]


def history(record):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in record["history"]]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def final_state(out_dir):
    ckpt = load_checkpoint(out_dir / train.LAST_NAME)
    return ckpt["model"], ckpt["optimizer"]["state"], ckpt["state"]["step"]


@pytest.fixture(scope="module")
def reference(tiny, s3_tmp, tmp_path_factory):
    """The uninterrupted run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ref")
    record = train.main(tiny + SHORT + ["--out_dir", str(out), "--run_dir", str(out)])
    torch.set_num_threads(before)
    return out, record


def test_identical_runs_give_identical_numbers(reference, tiny, tmp_path):
    """Issue 12 §3: the quick start used to follow the wall clock (val BLEU 15.43 vs 15.55 on two runs). Its
    flags now set a step budget, so two runs are bit-identical on CPU: the same losses, BLEU and weights."""
    assert "--max_minutes" not in quickstart.TRAIN_ARGS and "--time_budget_min" not in quickstart.TRAIN_ARGS
    ref_dir, ref = reference
    record = train.main(tiny + SHORT + ["--out_dir", str(tmp_path), "--run_dir", str(tmp_path)])
    assert history(record) == history(ref) and len(ref["history"]) == 4  # steps 6, 12, 18 and the final 20
    assert [r["step"] for r in ref["history"]] == [6, 12, 18, 20]
    assert_same_weights(final_state(tmp_path)[0], final_state(ref_dir)[0])


class SignalAt:
    """Sends SIGINT to this process on the k-th call of ``fn`` (inside it: before or after the real work)."""

    def __init__(self, fn, k, after=False):
        self.fn, self.k, self.after, self.calls = fn, k, after, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.k and not self.after:
            os.kill(os.getpid(), signal.SIGINT)
        result = self.fn(*args, **kwargs)
        if self.calls == self.k and self.after:
            os.kill(os.getpid(), signal.SIGINT)
        return result


@pytest.mark.parametrize("where,k", [
    ("optimizer", 3),    # after the weight update, before the step counter moves
    ("optimizer", 6),    # the step that is followed by an evaluation
    ("optimizer", 16),   # the last step of an epoch
    ("collate", 2),      # while the second batch is being built
    ("collate", 12),     # collation inside an evaluation's validation-loss pass
])
def test_ctrl_c_anywhere_then_resume_is_bit_identical(where, k, reference, tiny, tmp_path, monkeypatch):
    ref_dir, ref = reference
    if where == "optimizer":
        real_step = torch.optim.Adam.step
        hook = SignalAt(real_step, k, after=True)

        class SignallingAdam(torch.optim.Adam):
            def step(self, closure=None):
                return hook(self, closure)

        monkeypatch.setattr(torch.optim, "Adam", SignallingAdam)
    else:
        hook = SignalAt(train.collate, k)
        monkeypatch.setattr(train, "collate", hook)
    args = tiny + SHORT + ["--out_dir", str(tmp_path), "--run_dir", str(tmp_path)]
    with pytest.raises(KeyboardInterrupt):
        train.main(args)
    assert hook.calls >= k
    monkeypatch.undo()
    stopped_at = load_checkpoint(tmp_path / train.LAST_NAME)["state"]["step"]
    assert 0 < stopped_at < 20
    record = train.main(args + ["--resume"])
    assert record["resumed_at_steps"] == [stopped_at]
    assert history(record) == history(ref)
    weights, adam, step = final_state(tmp_path)
    ref_weights, ref_adam, ref_step = final_state(ref_dir)
    assert step == ref_step == 20
    assert_same_weights(weights, ref_weights)
    for i in ref_adam:
        assert_same_weights(adam[i], ref_adam[i])
    def logged(folder):
        rows = read_metrics(folder / "metrics.jsonl")
        return [(r["kind"], r["step"], r.get("loss"), r.get("val_loss")) for r in rows]

    assert logged(tmp_path) == logged(ref_dir)  # the resumed run continued its own log, nothing twice


def test_time_budget_reproduces_from_the_recorded_command(tiny, tmp_path, monkeypatch):
    """A --max_minutes run fixes its step count once (after the calibration steps, inside the warm-up); its
    reproduce_command (--max_steps S --schedule_steps P, no clock) gives the same numbers and weights."""
    out = tmp_path / "timed"
    record = train.main(tiny + ["--epochs", "50", "--max_minutes", "0.04", "--eval_every", "10", "--patience", "0",
                                "--out_dir", str(out), "--run_dir", str(out)])
    budget = record["budget"]
    assert record["stop_reason"].startswith("max_minutes") and budget["warmup_steps"] == 20
    cmd = record["reproduce_command"]
    argv = shlex.split(cmd.split(" && ")[-1])[2:]
    assert "--max_minutes" not in argv and "--warmup_steps" in argv
    assert argv[-4:] == ["--max_steps", str(record["metrics"]["steps"]).removesuffix(".0"),
                         "--schedule_steps", str(budget["schedule_steps"])]
    if budget["calibration"] is not None:  # the plan was made (not stopped by the clock before step 20)
        assert budget["schedule_steps"] >= budget["calibration"]["at_step"]
    weights = final_state(out)[0]
    again = train.main(argv)
    assert history(again) == history(record)
    assert_same_weights(final_state(out)[0], weights)


def test_grad_clip_zero_means_off(tiny, tmp_path):
    """--grad_clip 0 used to zero every gradient (clip_grad_norm_ to 0), so the weights never moved."""
    runs = {}
    for clip in ("0", "1e9"):
        out = tmp_path / clip
        train.main(tiny + ["--max_steps", "2", "--eval_every", "2", "--grad_clip", clip,
                           "--out_dir", str(out), "--run_dir", str(out)])
        runs[clip] = final_state(out)[0]
    assert_same_weights(runs["0"], runs["1e9"])  # off == a bound that never bites (the old code left the weights
    # at their initial values with 0, so the two runs differed)


def test_resume_may_raise_the_budget(tiny, tmp_path):
    args = tiny + ["--epochs", "3", "--out_dir", str(tmp_path), "--run_dir", str(tmp_path)]
    first = train.main(args + ["--max_steps", "3"])
    assert first["metrics"]["steps"] == 3
    record = train.main(["--resume", "--out_dir", str(tmp_path), "--max_steps", "5"])  # only the budget typed
    assert record["metrics"]["steps"] == 5 and record["resumed_at_steps"] == [3]
    assert record["config"]["train"]["limit_train"] == 128  # the rest comes from the checkpoint
    assert record["budget_changes_on_resume"] == [{"at_step": 3, "schedule_steps_before": 3,
                                                   "schedule_steps_after": 5}]
    assert [r["step"] for r in record["history"]] == [3, 5]
