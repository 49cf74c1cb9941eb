"""The training loop's promises on the bundled Multi30k: the loss falls, Ctrl-C anywhere resumes bit-identically,
the --resume rule, a time budget reproduces from its recorded command, checkpoint averaging is the mean."""
import os
import shlex
import signal

import pytest
import torch

from scripts.checkpoint import load_checkpoint
from scripts.cli import UserError
from scripts.log import read_metrics
from scripts.schedule import lr_at
from stage4_transformer import average, quickstart, train
from stage4_transformer.utils.checkpoint import AVERAGED_NAME, LAST_NAME

# a tiny Transformer on 256 real pairs (about 31 steps per epoch), 8 validation sentences
TINY = ["--limit_train", "256", "--vocab_size", "200", "--d_model", "32", "--n_heads", "2", "--enc_layers", "1",
        "--dec_layers", "1", "--d_ff", "64", "--max_len", "64", "--max_train_len", "60", "--max_tokens", "400",
        "--val_sentences", "8", "--warmup_steps", "4", "--lr", "3e-3", "--log_every", "1", "--epochs", "1"]
# 12 steps, evaluations at 5, 10 and the final 12; the last two snapshots are kept and averaged
SHORT = ["--max_steps", "12", "--eval_every", "5", "--average_last", "2"]


pytestmark = pytest.mark.usefixtures("one_thread")  # the root conftest.py's fixture, for every test here


def history(record):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in record["history"]]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def final_state(out_dir):
    ckpt = load_checkpoint(out_dir / LAST_NAME)
    return ckpt["model"], ckpt["optimizer"]["state"], ckpt["state"]["step"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ref")
    os.environ.setdefault("TQDM_DISABLE", "1")
    record = train.main(TINY + SHORT + ["--out_dir", str(out), "--run_dir", str(out)])
    torch.set_num_threads(before)
    return out, record


def test_loss_falls_and_the_result_file(reference):
    out, record = reference
    rows = read_metrics(out / "metrics.jsonl", kind="train")
    losses = [r["loss"] for r in rows]
    # the paper's schedule, stepped per optimizer step (warm-up 4, peak --lr 3e-3, then inverse square root)
    assert [r["lr"] for r in rows] == pytest.approx([lr_at(r["step"] - 1, schedule="noam", lr=3e-3, total_steps=12,
                                                          warmup_steps=4) for r in rows])
    assert max(r["lr"] for r in rows) == pytest.approx(3e-3) and rows[3]["lr"] == pytest.approx(3e-3)
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3  # real data, falling loss
    assert [r["step"] for r in record["history"]] == [5, 10, 12]
    row = record["history"][-1]
    assert row["tokens"] > 0 and row["wall_s"] > 0 and {"train_loss", "val_loss", "val_bleu"} <= row.keys()
    assert record["history"][-1]["val_loss"] < record["history"][0]["val_loss"]
    assert record["resumed_at_steps"] == [] and record["peak_rss_mb"] > 0 and record["tokens_per_s"] > 0
    assert record["budget"]["steps"] == 12 and record["budget"]["schedule_steps"] == 12
    assert record["stop_reason"] == "max_steps" and record["seed"] == 1337 and len(record["data_sha256"]) == 64
    argv = shlex.split(record["reproduce_command"].split(" && ")[-1])
    assert argv[:2] == ["python", "train.py"] and "--resume" not in argv
    again = vars(train.build_parser().parse_args(argv[2:]))  # the command gives this run's config again
    assert {k: again[k] for k in record["config"]["train"]} == record["config"]["train"]
    model = record["config"]["model"]
    assert {k: again[k] for k in model if k not in train.MODEL_FROM_TOKENIZER} == \
        {k: v for k, v in model.items() if k not in train.MODEL_FROM_TOKENIZER}
    ckpt = load_checkpoint(out / train.BEST_NAME)
    assert ckpt["vocab"]["tokenizer"].startswith("{") and ckpt["config"]["model"]["vocab_size"] <= 200


def test_checkpoint_averaging_is_the_mean_of_the_saved_weights(reference, tmp_path):
    out, record = reference
    snaps = sorted(p.name for p in out.glob("ckpt_step*.pt"))
    assert snaps == ["ckpt_step10.pt", "ckpt_step12.pt"]  # step 5's snapshot was deleted (--average_last 2)
    a, b = (load_checkpoint(out / n)["model"] for n in snaps)
    avg = load_checkpoint(out / AVERAGED_NAME)["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a)
    for k in a:
        torch.testing.assert_close(avg[k], (a[k].double() + b[k].double()).div(2).float(), rtol=0, atol=1e-7)
    assert record["averaged"]["from"] == snaps and "val_bleu_averaged" in record["metrics"]
    path = average.main(["--out_dir", str(out), "--last", "2", "--output", str(tmp_path / "avg.pt")])
    assert_same_weights(load_checkpoint(path)["model"], avg)  # average.py writes the same file
    with pytest.raises(UserError, match=r"no ckpt_step<N>.pt snapshots in .* \(train with --average_last N"):
        average.main(["--out_dir", str(tmp_path / "empty")])


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
    ("optimizer", 3),    # inside the weight update, before the step counter moves
    ("optimizer", 10),   # the step that is followed by an evaluation (and a snapshot)
    ("collate", 2),      # while the second batch is being built
    ("collate", 6),      # collation inside the first evaluation's validation-loss pass
])
def test_ctrl_c_anywhere_then_resume_is_bit_identical(where, k, reference, tmp_path, monkeypatch):
    ref_dir, ref = reference
    if where == "optimizer":
        hook = SignalAt(torch.optim.AdamW.step, k, after=True)

        class SignallingAdamW(torch.optim.AdamW):
            def step(self, closure=None):
                return hook(self, closure)

        monkeypatch.setattr(torch.optim, "AdamW", SignallingAdamW)
    else:
        hook = SignalAt(train.collate_translation, k)
        monkeypatch.setattr(train, "collate_translation", hook)
    args = TINY + SHORT + ["--out_dir", str(tmp_path), "--run_dir", str(tmp_path)]
    with pytest.raises(KeyboardInterrupt):
        train.main(args)
    assert hook.calls >= k
    monkeypatch.undo()
    torch.set_num_threads(1)
    stopped_at = load_checkpoint(tmp_path / LAST_NAME)["state"]["step"]
    assert 0 < stopped_at < 12
    record = train.main(args + ["--resume"])
    assert record["resumed_at_steps"] == [stopped_at]
    assert history(record) == history(ref)
    weights, adamw, step = final_state(tmp_path)
    ref_weights, ref_adamw, ref_step = final_state(ref_dir)
    assert step == ref_step == 12
    assert_same_weights(weights, ref_weights)
    for i in ref_adamw:
        assert_same_weights(adamw[i], ref_adamw[i])
    assert_same_weights(load_checkpoint(tmp_path / AVERAGED_NAME)["model"],
                        load_checkpoint(ref_dir / AVERAGED_NAME)["model"])

    def logged(folder):
        rows = read_metrics(folder / "metrics.jsonl")
        return [(r["kind"], r["step"], r.get("loss"), r.get("val_loss")) for r in rows]

    assert logged(tmp_path) == logged(ref_dir)  # the resumed run continued its own log, nothing twice


def test_the_resume_rule(reference, tmp_path):
    ref_dir, _ = reference
    with pytest.raises(UserError, match=r"--resume: --d_model 64 \(saved 32\) would change the model"):
        train.main(["--resume", "--out_dir", str(ref_dir), "--d_model", "64"])
    with pytest.raises(UserError, match=r"--resume: --tgt_lang 'de' \(saved 'fr'\)"):
        train.main(["--resume", "--out_dir", str(ref_dir), "--tgt_lang", "de"])
    with pytest.raises(UserError, match="checkpoint not found"):
        train.main(["--resume", "--out_dir", str(tmp_path)])
    args = TINY + ["--eval_every", "3", "--out_dir", str(tmp_path), "--run_dir", str(tmp_path)]
    assert train.main(args + ["--max_steps", "3"])["metrics"]["steps"] == 3
    record = train.main(["--resume", "--out_dir", str(tmp_path), "--max_steps", "5"])  # only the budget typed
    assert record["metrics"]["steps"] == 5 and record["resumed_at_steps"] == [3]
    assert record["config"]["train"]["limit_train"] == 256 and record["config"]["model"]["d_model"] == 32


def test_time_budget_reproduces_from_the_recorded_command(tmp_path):
    """A --max_minutes run fixes its step count once (after the calibration steps); its reproduce_command
    (--max_steps S --schedule_steps P, no clock) gives the same history and weights."""
    out = tmp_path / "timed"
    record = train.main(TINY + ["--epochs", "50", "--max_minutes", "0.03", "--eval_every", "25",
                                "--lr_schedule", "cosine", "--out_dir", str(out), "--run_dir", str(out)])
    budget = record["budget"]
    assert record["stop_reason"].startswith("max_minutes") and budget["warmup_steps"] == 20  # cosine: >= calibration
    argv = shlex.split(record["reproduce_command"].split(" && ")[-1])[2:]
    assert "--max_minutes" not in argv
    assert argv[-6:] == ["--max_steps", str(int(record["metrics"]["steps"])), "--schedule_steps",
                         str(budget["schedule_steps"]), "--warmup_steps", "20"]
    weights = final_state(out)[0]
    again = train.main(argv)
    assert history(again) == history(record) and again["budget"]["schedule_steps"] == budget["schedule_steps"]
    assert_same_weights(final_state(out)[0], weights)


def test_quickstart_uses_a_step_budget():
    assert "--max_minutes" not in quickstart.TRAIN_ARGS and "--max_steps" in quickstart.TRAIN_ARGS
    assert quickstart.TRAIN_ARGS[quickstart.TRAIN_ARGS.index("--threads") + 1] == "1"
