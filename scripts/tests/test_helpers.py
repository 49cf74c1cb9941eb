"""Tests for the cross-cutting helpers in scripts/."""
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts import REPO_ROOT
from scripts.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_vocab_pickle,
    save_checkpoint,
    save_vocab_pickle,
    unwrap_model,
    vocab_fingerprint,
    weights_fingerprint,
)
from scripts.cli import UserError, run_cli
from scripts.config import add_dataclass_args, config_from_dict, dataclass_from_args
from scripts.data import DataNotFoundError, find_dataset, open_text, sha256_files
from scripts.device import autocast, pick_device
from scripts.log import RunLogger, format_line, read_metrics
from scripts.results import current_command, make_result, parse_result_lines, write_result
from scripts.seed import get_rng_state, seed_everything, set_rng_state

SHARED = Path(os.environ.get("MY_LLM_DATA") or REPO_ROOT.parent / "shared" / "data")  # CI sets MY_LLM_DATA


# ----- seeding -------------------------------------------------------------------------------

def _draw(g):
    return (random.random(), float(np.random.rand()), torch.rand(3).tolist(), torch.rand(2, generator=g).tolist())


def test_seed_reproduces_every_stream():
    a = _draw(seed_everything(123))
    b = _draw(seed_everything(123))
    c = _draw(seed_everything(124))
    assert a == b
    assert a != c


def test_rng_state_round_trip_through_checkpoint(tmp_path):
    g = seed_everything(5)
    _draw(g)
    state = get_rng_state(g)
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "config": {}, "rng": state}, kind="test")
    expected = _draw(g)
    g2 = seed_everything(999)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"], g2)
    assert _draw(g2) == expected


# ----- checkpoints ---------------------------------------------------------------------------

class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                       torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


def _toy_run(total_steps, stop_at=None, resume_from=None, ckpt=None):
    """Train Toy for total_steps; shuffled data, dropout and an LR schedule all draw randomness."""
    g = seed_everything(0)
    x, y = torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)
    model = Toy()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    start, losses = 0, []
    if resume_from is not None:
        seed_everything(12345)  # a fresh process would not share our RNG state
        ck = load_checkpoint(resume_from, kind="toy")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"], g)
        start, losses = ck["step"], list(ck["losses"])
    for step in range(start, total_steps):
        idx = torch.randperm(64, generator=g)[:8]
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if stop_at is not None and step + 1 == stop_at:
            save_checkpoint(ckpt, {"model": model.state_dict(), "config": {"toy": True}, "optimizer": opt.state_dict(),
                                   "scheduler": sched.state_dict(), "step": step + 1, "losses": losses,
                                   "rng": get_rng_state(g)}, kind="toy")
            return losses
    return losses


def test_exact_resume_matches_uninterrupted_run(tmp_path):
    full = _toy_run(12)
    first = _toy_run(12, stop_at=5, ckpt=tmp_path / "last.pt")
    resumed = _toy_run(12, resume_from=tmp_path / "last.pt")
    assert first == full[:5]
    assert resumed == full  # bit-identical losses after the resume


def test_checkpoint_round_trip_and_no_temp_files(tmp_path):
    model = Toy()
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "config": {"d": 4}, "vocab": {"a": 0},
                                        "best_metric": 0.5}, kind="stage9")
    ck = load_checkpoint(tmp_path / "m.pt", kind="stage9")
    assert ck["config"] == {"d": 4} and ck["vocab"] == {"a": 0} and ck["kind"] == "stage9"
    m2 = Toy()
    m2.load_state_dict(ck["model"])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_checkpoint_payload_must_describe_itself(tmp_path):
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "m.pt", {"model": {}}, kind="x")


def test_wrong_kind_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "m.pt", {"model": {}, "config": {}}, kind="stage2_rnn_lstm")
    with pytest.raises(CheckpointError, match="stage2_rnn_lstm checkpoint, but this is stage1_mlp"):
        load_checkpoint(tmp_path / "m.pt", kind="stage1_mlp")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_corrupt_or_truncated_checkpoint(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content is None:  # truncate a real checkpoint
        save_checkpoint(path, {"model": Toy().state_dict(), "config": {}}, kind="x")
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt or not a my_llm checkpoint"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_arbitrary_object_checkpoint_refused(tmp_path):
    torch.save({"kind": "x", "model": {}, "evil": Toy()}, tmp_path / "obj.pt")  # whole-module pickle
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "obj.pt")


def test_unwrap_compiled_model():
    m = Toy()
    assert unwrap_model(torch.compile(m)) is m
    assert unwrap_model(m) is m


# ----- vocabulary pickles --------------------------------------------------------------------

def test_vocab_pickle_round_trip(tmp_path):
    vocab = {"itos": ["<unk>", "a", "b"], "stoi": {"<unk>": 0, "a": 1, "b": 2}, "freq": (1.5, None, True)}
    save_vocab_pickle(tmp_path / "v.pkl", vocab)
    assert load_vocab_pickle(tmp_path / "v.pkl") == vocab
    assert json.loads((tmp_path / "v.json").read_text())["itos"] == vocab["itos"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_malicious_pickle_refused_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"itos": ["a"], "x": _Evil()}))
    with pytest.raises(CheckpointError, match="refusing to load global"):
        load_vocab_pickle(tmp_path / "evil.pkl")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_vocab_pickle_rejects_objects_and_garbage(tmp_path):
    with pytest.raises(TypeError):
        save_vocab_pickle(tmp_path / "v.pkl", {"a": np.zeros(2)})
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04junk")
    with pytest.raises(CheckpointError):
        load_vocab_pickle(tmp_path / "junk.pkl")
    with pytest.raises(CheckpointError, match="not found"):
        load_vocab_pickle(tmp_path / "missing.pkl")


def test_vocab_fingerprint_is_order_sensitive():
    assert vocab_fingerprint(["a", "b"]) == vocab_fingerprint(["a", "b"]) != vocab_fingerprint(["b", "a"])


# ----- data location -------------------------------------------------------------------------

def _make(root, folder, name="f.txt"):
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / name).write_text("x")
    return root / folder


def test_find_dataset_resolution_order(tmp_path, monkeypatch):
    explicit, env, bundled = tmp_path / "explicit", tmp_path / "env", tmp_path / "bundled"
    for root in (explicit, env):
        _make(root, "imdb")
    _make(bundled, ".")
    monkeypatch.setenv("MY_LLM_DATA", str(env))
    assert find_dataset("imdb", ["f.txt"], data_dir=explicit, bundled=bundled) == explicit / "imdb"
    assert find_dataset("imdb", ["f.txt"], data_dir=explicit / "imdb") == explicit / "imdb"  # the folder itself
    assert find_dataset("imdb", ["f.txt"], bundled=bundled) == env / "imdb"
    monkeypatch.delenv("MY_LLM_DATA")
    assert find_dataset("imdb", ["f.txt"], bundled=bundled) == bundled / "."


def test_explicit_data_dir_without_files_is_an_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="--data_dir"):
        find_dataset("imdb", ["f.txt"], data_dir=tmp_path, bundled=_make(tmp_path, "b"))


def test_gzip_variants_are_accepted(tmp_path):
    import gzip
    (tmp_path / "ptb").mkdir()
    with gzip.open(tmp_path / "ptb" / "ptb.train.txt.gz", "wt") as f:
        f.write("hello\n")
    folder = find_dataset("ptb", ["ptb.train.txt"], data_dir=tmp_path)
    with open_text(folder / "ptb.train.txt.gz") as f:
        assert f.read() == "hello\n"


def test_missing_data_offline_fails_fast_with_guidance(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(DataNotFoundError) as e:
        find_dataset("imdb", ["train.jsonl.gz"], bundled=tmp_path / "nothing")
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert "MY_LLM_DATA" in msg and "--data_dir" in msg and str(tmp_path / "nothing") in msg and "\n" not in msg


def test_missing_data_cli_is_one_line_and_fast(tmp_path):
    code = ("from scripts.cli import run_cli\nfrom scripts.data import find_dataset\n"
            "run_cli(lambda a: find_dataset('imdb', ['x.gz']))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("MY_LLM_DATA", None)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert time.perf_counter() - t0 < 10  # includes interpreter + torch start-up
    assert p.returncode == 2
    assert p.stderr.startswith("error: imdb data not found") and p.stderr.count("\n") == 1


def test_unknown_dataset():
    with pytest.raises(DataNotFoundError, match="unknown dataset"):
        find_dataset("mnist", ["x"])


@pytest.mark.skipif(not (SHARED / "tinyshakespeare").is_dir(), reason="full data not present (set MY_LLM_DATA)")
def test_checksum_of_real_file_matches_readme():
    readme = (SHARED / "tinyshakespeare" / "README.md").read_text()
    digest = sha256_files([SHARED / "tinyshakespeare" / "input.txt"])
    import hashlib
    single = hashlib.sha256((SHARED / "tinyshakespeare" / "input.txt").read_bytes()).hexdigest()
    assert single in readme  # the shared README lists the file's own sha256
    assert digest == hashlib.sha256(bytes.fromhex(single)).hexdigest()


# ----- device, config, logging, results, cli --------------------------------------------------

def test_device_and_autocast_are_safe_on_cpu():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(UserError):
            pick_device("cuda")
    x = torch.randn(2, 3)
    with autocast(torch.device("cpu"), "float32"):
        assert (x @ x.T).dtype == torch.float32
    with pytest.warns(UserWarning):
        ctx = autocast(torch.device("cpu"), "float16")
    with ctx:
        assert (x @ x.T).dtype == torch.float32
    with autocast(torch.device("cpu"), "bfloat16"):
        assert (x @ x.T).dtype == torch.bfloat16


def test_dataclass_config_round_trip():
    import argparse
    from dataclasses import asdict, dataclass, field

    @dataclass
    class C:
        lr: float = 1e-3
        hidden_dims: tuple[int, ...] = (256, 128)
        impl: str = field(default="torch", metadata={"choices": ["numpy", "torch"], "help": "backend"})
        tie: bool = False
        limit: int | None = None

    p = argparse.ArgumentParser()
    add_dataclass_args(p, C)
    c = dataclass_from_args(C, p.parse_args(["--lr", "0.5", "--hidden_dims", "8", "4", "--tie", "--limit", "3"]))
    assert c == C(lr=0.5, hidden_dims=(8, 4), impl="torch", tie=True, limit=3)
    assert config_from_dict(C, json.loads(json.dumps(asdict(c)))) == c
    with pytest.raises(SystemExit):
        p.parse_args(["--impl", "jax"])
    with pytest.raises(UserError):
        config_from_dict(C, {"lr": 1.0, "bogus": 2})


def test_log_line_and_jsonl(tmp_path, capsys):
    line = format_line(200, {"loss": 1.734, "lr": 6e-4, "tok/s": 12345.0, "ms/step": 41.2})
    assert line == "step 200 | loss 1.7340 | lr 6.00e-04 | tok/s 12.3k | ms/step 41.2000"
    log = RunLogger(tmp_path)
    log.log(1, loss=2.0)
    log.log(2, prefix="eval", val_loss=1.5)
    assert "step 1 | loss 2.0000" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    assert read_metrics(tmp_path / "metrics.jsonl", kind="eval")[0]["val_loss"] == 1.5


def test_result_file_and_line(tmp_path, capsys):
    rec = make_result("stage0", "toy", "none", "test", {"accuracy": 0.5}, params=10, train_wall_s=1.0,
                      device="cpu", seed=0, data_sha256="ab", samples_per_s=3.0)
    path = write_result(rec, out_dir=tmp_path)
    printed = parse_result_lines(capsys.readouterr().out)
    assert printed == [json.loads(path.read_text())]
    assert printed[0]["torch"] == torch.__version__ and printed[0]["samples_per_s"] == 3.0
    with pytest.raises(ValueError):
        write_result({"stage": "x"}, out_dir=tmp_path)


def test_result_command_reproduces_a_resumed_run_from_scratch(monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(REPO_ROOT / "stage2_rnn_lstm" / "train.py"), "--resume", "--epochs", "3"])
    monkeypatch.chdir(REPO_ROOT / "stage2_rnn_lstm")
    assert current_command() == "cd stage2_rnn_lstm && python train.py --epochs 3"


def test_run_cli_exit_codes(capsys):
    def bad(argv):
        raise UserError("nope")
    with pytest.raises(SystemExit) as e:
        run_cli(bad)
    assert e.value.code == 2 and capsys.readouterr().err == "error: nope\n"


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    """`kill <pid>` must reach the training loop's `except KeyboardInterrupt` (which saves a checkpoint)."""
    code = ("import sys, time\nfrom scripts.cli import run_cli\n"
            "def main(argv):\n"
            "    try:\n"
            "        print('ready', flush=True)\n"
            "        time.sleep(60)\n"
            "    except KeyboardInterrupt:\n"
            "        open('saved', 'w').close()\n"
            "        raise\n"
            "run_cli(main)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=tmp_path)
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130 and err == "interrupted\n" and (tmp_path / "saved").exists()
    before = signal.getsignal(signal.SIGTERM)
    run_cli(lambda argv: None)
    assert signal.getsignal(signal.SIGTERM) is before  # run_cli leaves the caller's handler in place


def test_result_records_the_commit_the_run_started_from(monkeypatch):
    """A commit landing while a long run trains must not be credited with that run's numbers."""
    import re

    from scripts import results
    started = results.COMMIT_AT_START
    assert started is None or re.fullmatch(r"[0-9a-f]{12}(\+dirty)?", started)
    monkeypatch.setattr(results, "git_commit", lambda: "0123456789ab")  # HEAD moved since import
    record = make_result("stage1_mlp", "t", "d", "s", {"acc": 1}, params=1, train_wall_s=1.0, device="cpu",
                         seed=0, data_sha256=None)
    assert record["git_commit"] == started


def test_weights_fingerprint_follows_the_weights_only():
    torch.manual_seed(0)
    state = {"b": torch.randn(3, 4), "a": torch.randn(2, dtype=torch.bfloat16), "s": torch.tensor(1.5),
             "e": torch.zeros(0)}
    fp = weights_fingerprint(state)
    assert fp == weights_fingerprint(dict(reversed(list(state.items()))))  # key order does not matter
    nudged = dict(state, b=state["b"].clone())
    nudged["b"][2, 3] = torch.nextafter(nudged["b"][2, 3], torch.tensor(9.0))  # one bit of one weight
    assert weights_fingerprint(nudged) != fp
    assert weights_fingerprint(dict(state, b=state["b"].reshape(4, 3))) != fp  # same bytes, other shape
    assert weights_fingerprint(dict(state, b=state["b"].double())) != fp  # same values, other dtype
    assert weights_fingerprint({"c" if k == "b" else k: v for k, v in state.items()}) != fp  # other name


FRAGMENT_HEAP = """
import torch
from scripts.memory import HeapTrimmer, current_rss_mb
big = torch.ones(4 * 2 ** 20)
del big  # a freed 16 MiB mmap block raises glibc's mmap threshold: smaller blocks now use the heap
trimmer = HeapTrimmer(slack_mb=100)
blocks, spacers = [], []
for _ in range(100):
    blocks.append(torch.ones(2 ** 19))  # 2 MiB, touched
    spacers.append(torch.ones(2 ** 10))  # 4 KiB kept alive between the blocks: the holes cannot merge
blocks.clear()
before = current_rss_mb()
trimmer.step()  # 200 MiB more than at the start: trims
after = current_rss_mb()
trimmer.step()  # nothing new since: no trim
print(before, after, trimmer.trims)
"""


def test_heap_trimmer_returns_a_fragmented_heap_to_the_system():
    """200 MiB freed between live tensors stays resident until the trimmer releases it (glibc only), and it trims
    only when the memory has grown by its slack: the fragmentation that made stage 5's fine-tuning grow to 14 GB."""
    from scripts.memory import _malloc_trim

    if _malloc_trim() is None:
        pytest.skip("the C library is not glibc")
    out = subprocess.run([sys.executable, "-c", FRAGMENT_HEAP], capture_output=True, text=True, cwd=REPO_ROOT,
                         check=True).stdout.split()
    before, after, trims = float(out[0]), float(out[1]), int(out[2])
    assert before - after > 150 and trims == 1, (before, after, trims)
