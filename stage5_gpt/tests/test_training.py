"""The training loop's promises on the bundled tiny Shakespeare: the loss falls, a tiny corpus is memorised, seeds
reproduce, Ctrl-C anywhere resumes bit-identically, the --resume rule, a time budget reproduces from its recorded
command, the MFU and the result file."""
import math
import os
import shlex
import signal

import pytest
import torch

from scripts.checkpoint import load_checkpoint
from scripts.cli import UserError
from scripts.log import read_metrics
from scripts.schedule import lr_at
from stage5_gpt import quickstart, train
from stage5_gpt.utils.checkpoint import BEST_NAME, LAST_NAME
from stage5_gpt.utils.data import file_sha256, source_files

SHORT = ["--max_steps", "24", "--eval_every", "8"]  # evaluations at 8, 16, 24


def dirs(path):
    return ["--out_dir", str(path), "--run_dir", str(path)]


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
def reference(tiny, tmp_path_factory):
    """The uninterrupted run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ref")
    record = train.main(tiny + SHORT + dirs(out))
    torch.set_num_threads(before)
    return out, record


def test_loss_falls_and_the_result_file(reference, tiny, one_thread):
    out, record = reference
    rows = read_metrics(out / "metrics.jsonl", kind="train")
    losses = [r["loss"] for r in rows]
    # warm-up 4 steps to 3e-3, then cosine to --min_lr at step 24, stepped per optimizer step
    assert [r["lr"] for r in rows] == pytest.approx([lr_at(r["step"] - 1, schedule="cosine", lr=3e-3, total_steps=24,
                                                          warmup_steps=4, min_lr=1e-4) for r in rows])
    assert losses[0] == pytest.approx(math.log(65), abs=0.15)  # a fresh model: about uniform over 65 characters
    assert len(losses) == 24 and sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.6  # real data, falling loss
    assert [r["step"] for r in record["history"]] == [8, 16, 24]
    vals = [r["val_loss"] for r in record["history"]]
    assert vals[-1] < vals[0] - 0.3 and record["metrics"]["val_loss"] == min(vals)
    row = record["history"][-1]
    assert row["tokens"] == 24 * 4 * 32 and row["val_bpc"] == pytest.approx(row["val_loss"] / math.log(2))
    assert row["val_nats_per_char"] == row["val_loss"]  # char-level: one token per character
    m = record["metrics"]
    assert m["tokens_per_s"] > 0 and m["peak_flops"] == 1e11
    assert m["mfu"] == pytest.approx(record["flops_per_token"] * m["tokens_per_s"] / 1e11)
    assert record["resumed_at_steps"] == [] and record["peak_rss_mb"] > 0 and record["world_size"] == 1
    assert record["budget"]["steps"] == 24 and record["budget"]["schedule_steps"] == 24
    assert record["stop_reason"] == "max_steps" and record["seed"] == 1337
    (source,) = source_files("shakespeare_char").values()
    assert record["data_sha256"] == file_sha256(source)  # the sha256 of the input.txt the data was prepared from
    argv = shlex.split(record["reproduce_command"].split(" && ")[-1])
    assert argv[:2] == ["python", "train.py"] and "--resume" not in argv
    again = vars(train.build_parser().parse_args(argv[2:]))  # the command gives this run's config again
    assert {k: again[k] for k in record["config"]["train"]} == record["config"]["train"]
    model = record["config"]["model"]
    assert {k: again[k] for k in model if k != "vocab_size"} == {k: v for k, v in model.items() if k != "vocab_size"}
    ckpt = load_checkpoint(out / BEST_NAME)
    assert ckpt["vocab"]["tokenizer"]["kind"] == "char" and ckpt["config"]["model"]["vocab_size"] == 65
    assert ckpt["step"] == 24 and ckpt["best_metric"] == min(vals)
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in ckpt["model"])
    # eval lines are greppable and in metrics.jsonl
    evals = read_metrics(out / "metrics.jsonl", kind="eval")
    assert [r["step"] for r in evals] == [8, 16, 24] and all({"tok/s", "ms/step", "mfu"} <= r.keys() for r in rows)


def test_a_tiny_corpus_is_memorised(tiny, tmp_path, one_thread):
    """48 training characters, windows of 16: the model learns them by heart (train loss near 0)."""
    record = train.main(tiny + ["--limit_train", "48", "--block_size", "16", "--n_embd", "64", "--batch_size", "8",
                                "--lr", "1e-2", "--weight_decay", "0", "--max_steps", "150", "--eval_every", "150",
                                "--log_every", "50"] + dirs(tmp_path))
    assert record["metrics"]["final_train_loss"] < 0.1, record["metrics"]


def test_seeds_reproduce(reference, tiny, tmp_path, one_thread):
    ref_dir, ref = reference
    again = train.main(tiny + SHORT + dirs(tmp_path / "same"))
    assert history(again) == history(ref)
    assert_same_weights(final_state(tmp_path / "same")[0], final_state(ref_dir)[0])
    other = train.main(tiny + SHORT + ["--seed", "7"] + dirs(tmp_path / "other"))
    assert history(other) != history(ref)


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
    ("optimizer", 8),    # the step that is followed by an evaluation
    ("batch", 2),        # while the second batch is being drawn
    ("batch", 10),       # drawing an evaluation window inside the first evaluation (after step 8)
])
def test_ctrl_c_anywhere_then_resume_is_bit_identical(where, k, reference, tiny, tmp_path, monkeypatch, one_thread):
    ref_dir, ref = reference
    if where == "optimizer":
        real_step = torch.optim.AdamW.step
        hook = SignalAt(real_step, k, after=True)
        monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: hook(self, closure))
    else:
        hook = SignalAt(train.get_batch, k)
        monkeypatch.setattr(train, "get_batch", hook)
    args = tiny + SHORT + dirs(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train.main(args)
    assert hook.calls >= k
    monkeypatch.undo()
    torch.set_num_threads(1)
    stopped_at = load_checkpoint(tmp_path / LAST_NAME)["state"]["step"]
    assert 0 < stopped_at < 24
    record = train.main(args + ["--resume"])
    assert record["resumed_at_steps"] == [stopped_at]
    assert history(record) == history(ref)
    weights, adamw, step = final_state(tmp_path)
    ref_weights, ref_adamw, ref_step = final_state(ref_dir)
    assert step == ref_step == 24
    assert_same_weights(weights, ref_weights)
    for i in ref_adamw:
        assert_same_weights(adamw[i], ref_adamw[i])

    def logged(folder):
        rows = read_metrics(folder / "metrics.jsonl")
        return [(r["kind"], r["step"], r.get("loss"), r.get("val_loss")) for r in rows]

    assert logged(tmp_path) == logged(ref_dir)  # the resumed run continued its own log, nothing twice


def test_fast_dropout_masks_resume_bit_identically(tiny, tmp_path, monkeypatch, one_thread):
    """Catches fast dropout masks drawn from a random stream that the checkpoint does not restore (the resumed run
    would drop other elements), or a flag that is not passed on to the model: with --dropout 0.2 --dropout_impl
    fast, a run cut by Ctrl-C after the weight update of step 8 and resumed ends on the uninterrupted run's weights,
    and its loss curve is not nn.Dropout's."""
    flags = tiny + SHORT + ["--dropout", "0.2", "--dropout_impl", "fast"]
    ref = train.main(flags + dirs(tmp_path / "ref"))
    assert load_checkpoint(tmp_path / "ref" / LAST_NAME)["config"]["model"]["dropout_impl"] == "fast"
    torch_masks = train.main(tiny + SHORT + ["--dropout", "0.2"] + dirs(tmp_path / "torch"))
    assert history(torch_masks) != history(ref)
    real_step = torch.optim.AdamW.step
    hook = SignalAt(real_step, 8, after=True)
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: hook(self, closure))
    with pytest.raises(KeyboardInterrupt):
        train.main(flags + dirs(tmp_path / "cut"))
    monkeypatch.undo()
    torch.set_num_threads(1)
    record = train.main(flags + dirs(tmp_path / "cut") + ["--resume"])
    assert record["resumed_at_steps"] == [8] and history(record) == history(ref)
    assert_same_weights(final_state(tmp_path / "cut")[0], final_state(tmp_path / "ref")[0])


def test_a_checkpoint_from_before_dropout_impl_resumes_with_torch_masks(tiny, tmp_path, one_thread):
    """Catches a resume that rejects checkpoints written before ``dropout_impl`` existed (their config lacks the
    key) or that continues them with other masks than they were trained with: such a run resumes, with nn.Dropout."""
    train.main(tiny + ["--max_steps", "4", "--eval_every", "4", "--dropout", "0.1"] + dirs(tmp_path))
    path = tmp_path / LAST_NAME
    ckpt = load_checkpoint(path)
    del ckpt["config"]["model"]["dropout_impl"]
    torch.save(ckpt, path)
    record = train.main(["--resume", "--out_dir", str(tmp_path), "--run_dir", str(tmp_path), "--max_steps", "6"])
    assert record["resumed_at_steps"] == [4] and record["config"]["model"]["dropout_impl"] == "torch"


def test_the_resume_rule(reference, tiny, tmp_path, one_thread):
    ref_dir, _ = reference
    with pytest.raises(UserError, match=r"--resume: --n_embd 64 \(saved 32\) would change the model"):
        train.main(["--resume", "--out_dir", str(ref_dir), "--n_embd", "64"])
    with pytest.raises(UserError, match=r"--resume: --lr 0.01 \(saved 0.003\)"):
        train.main(["--resume", "--out_dir", str(ref_dir), "--lr", "0.01"])
    with pytest.raises(UserError, match="checkpoint not found"):
        train.main(["--resume", "--out_dir", str(tmp_path)])
    args = tiny + ["--eval_every", "3", "--schedule_steps", "10"] + dirs(tmp_path)
    assert train.main(args + ["--max_steps", "3"])["metrics"]["steps"] == 3
    record = train.main(["--init_from", "resume", "--out_dir", str(tmp_path), "--max_steps", "5"])  # only the budget
    assert record["metrics"]["steps"] == 5 and record["resumed_at_steps"] == [3]
    assert record["config"]["model"]["n_embd"] == 32 and record["config"]["train"]["batch_size"] == 4


def test_time_budget_is_planned_at_the_end_of_the_warm_up(tiny, tmp_path, one_thread):
    """Catches the plan being made from the first 20 steps alone when the warm-up is longer (those steps are often
    the slow ones): with --warmup_steps 30 the calibration ends at step 30, and the warm-up is recorded as 30."""
    record = train.main(tiny + ["--max_steps", "0", "--max_minutes", "0.1", "--warmup_steps", "30",
                                "--eval_every", "1000"] + dirs(tmp_path / "w"))
    assert record["budget"]["calibration"]["at_step"] == 30 and record["budget"]["warmup_steps"] == 30


def test_time_budget_reproduces_from_the_recorded_command(tiny, tmp_path, one_thread):
    """A --max_minutes run fixes its step count once (after the calibration steps); its reproduce_command
    (--max_steps S --schedule_steps P, no clock) gives the same history and weights."""
    out = tmp_path / "timed"
    record = train.main(tiny + ["--max_steps", "0", "--max_minutes", "0.02", "--eval_every", "25"] + dirs(out))
    budget = record["budget"]
    assert record["stop_reason"].startswith("max_minutes") and budget["warmup_steps"] == 20  # cosine: >= calibration
    assert budget["calibration"]["at_step"] == 20 and record["metrics"]["steps"] > 20
    argv = shlex.split(record["reproduce_command"].split(" && ")[-1])[2:]
    assert "--max_minutes" not in argv
    assert argv[-6:] == ["--max_steps", str(int(record["metrics"]["steps"])), "--schedule_steps",
                         str(budget["schedule_steps"]), "--warmup_steps", "20"]
    weights = final_state(out)[0]
    again = train.main(argv)
    assert history(again) == history(record) and again["budget"]["schedule_steps"] == budget["schedule_steps"]
    assert_same_weights(final_state(out)[0], weights)


def test_hf_gpt2_folder_as_the_starting_point(tiny, tmp_path, one_thread):
    """--init_from a local Hugging Face GPT-2 folder: the run starts from exactly its weights."""
    transformers = pytest.importorskip("transformers")
    from stage5_gpt.models.convert import from_hf, save_hf_tokenizer
    from stage5_gpt.tokenizer import tokenizer_from_dict
    from stage5_gpt.tokenizer.char import CharTokenizer
    from stage5_gpt.utils.data import load_meta

    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=65, n_positions=32, n_embd=32, n_layer=2,
                                                              n_head=2))
    hf.save_pretrained(tmp_path / "hf")
    _, hf_state = from_hf(str(tmp_path / "hf"))
    tiny = [a for a in tiny if a not in ("--n_layer", "--n_head", "--n_embd", "--block_size")]
    data_tok = tokenizer_from_dict(load_meta(tiny[1])["tokenizer"])
    shuffled = CharTokenizer(data_tok.chars[::-1])  # same characters, other ids: the embedding rows would lie
    save_hf_tokenizer(shuffled, tmp_path / "hf", 32)
    with pytest.raises(UserError, match=r"--init_from .*: its tokenizer \(65 tokens\) is not the data's"):
        train.main(["--init_from", str(tmp_path / "hf"), "--max_steps", "1", "--prepared_dir", tiny[1],
                    "--peak_flops", "1e11"] + dirs(tmp_path / "wrong_tok"))
    save_hf_tokenizer(data_tok, tmp_path / "hf", 32)
    common = ["--init_from", str(tmp_path / "hf"), "--max_steps", "1", "--lr", "1e-12", "--weight_decay", "0",
              "--prepared_dir", tiny[1], "--peak_flops", "1e11", "--eval_iters", "1"]
    record = train.main(common + dirs(tmp_path / "run"))
    assert record["config"]["model"]["n_embd"] == 32 and record["config"]["model"]["block_size"] == 32
    weights = load_checkpoint(tmp_path / "run" / LAST_NAME)["model"]
    for k, v in hf_state.items():  # one AdamW step of 1e-12 from the HF weights
        torch.testing.assert_close(weights[k], v, atol=1e-9, rtol=0)
    with pytest.raises(UserError, match=r"--init_from .*: --n_embd 64 \(the model has 32\)"):
        train.main(common + ["--n_embd", "64"] + dirs(tmp_path / "bad"))
    # dropout rates are training choices: typed ones are used, whatever the HF config says (attn_pdrop 0.1 here)
    record = train.main(common + ["--dropout", "0.2", "--attn_dropout", "0"] + dirs(tmp_path / "drop"))
    assert (record["config"]["model"]["dropout"], record["config"]["model"]["attn_dropout"]) == (0.2, 0.0)


def test_quickstart_uses_a_step_budget():
    assert "--max_minutes" not in quickstart.TRAIN_ARGS and "--max_steps" in quickstart.TRAIN_ARGS
    assert quickstart.TRAIN_ARGS[quickstart.TRAIN_ARGS.index("--threads") + 1] == "1"
