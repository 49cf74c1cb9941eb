"""Multi-process training: 2 gloo processes with batch B == 1 process with batch 2B == 1 process with 2 accumulation
steps of B (losses within 1e-5 over 20 steps); only rank 0 logs and writes; Ctrl-C / kill under torchrun saves and
--resume under torchrun continues the same run."""
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from scripts.checkpoint import load_checkpoint
from scripts.log import read_metrics
from scripts.results import parse_result_lines
from stage5_gpt import train
from stage5_gpt.utils.checkpoint import LAST_NAME
from stage5_gpt.utils.distributed import Dist, micro_slices, torchrun_argv

STAGE = Path(__file__).resolve().parent.parent
STEPS = 20
# a little wider than the other tests' tiny model, so that a step lasts long enough to be interrupted
COMMON = ["--max_steps", str(STEPS), "--eval_every", "10", "--eval_iters", "2", "--log_every", "1",
          "--peak_flops", "1e11", "--warmup_steps", "4", "--lr", "3e-3", "--threads", "1", "--n_layer", "2",
          "--n_head", "2", "--n_embd", "64", "--block_size", "64"]


def dirs(path):
    return ["--out_dir", str(path), "--run_dir", str(path)]


def losses(folder, kind="train", key="loss"):
    return [r[key] for r in read_metrics(Path(folder) / "metrics.jsonl", kind=kind)]


def test_micro_slices_cover_the_global_batch_once():
    rows = [r for rank in range(2) for s in micro_slices(3, 2, Dist(rank, rank, 2)) for r in range(12)[s]]
    assert rows == list(range(12))
    assert micro_slices(4, 1, Dist()) == [slice(0, 4)]


@pytest.fixture(scope="module")
def one_process(char_data, tmp_path_factory):
    """1 process, batch 8; and 1 process, 2 accumulation steps of 4 (in this process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("one")
    data = ["--prepared_dir", str(char_data)]
    big = train.main(data + COMMON + ["--batch_size", "8"] + dirs(out / "b8"))
    accum = train.main(data + COMMON + ["--batch_size", "4", "--grad_accum", "2"] + dirs(out / "b4x2"))
    torch.set_num_threads(before)
    return out, big, accum


def test_accumulation_gives_the_losses_of_the_bigger_batch(one_process):
    out, big, accum = one_process
    a, b = losses(out / "b8"), losses(out / "b4x2")
    assert len(a) == len(b) == STEPS and max(abs(x - y) for x, y in zip(a, b)) <= 1e-5
    assert a[-1] < a[0] - 0.5  # it trains
    assert max(abs(x["val_loss"] - y["val_loss"]) for x, y in zip(big["history"], accum["history"])) <= 1e-5


def test_two_gloo_processes_interrupted_and_resumed_under_torchrun(one_process, char_data, tmp_path):
    """torchrun with 2 processes of batch 4, killed (SIGTERM to torchrun, which passes it on) after a few steps,
    then --resume under torchrun: the 20 losses are those of 1 process with batch 8."""
    ref_dir, big, _ = one_process
    args = ["--prepared_dir", str(char_data)] + COMMON + ["--batch_size", "4"] + dirs(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1",
           "MY_LLM_RESULTS": str(tmp_path / "results")}
    proc = subprocess.Popen(torchrun_argv(2, "train.py", args), cwd=STAGE, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("step 3 |"):
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(seen) + proc.communicate(timeout=60)[0]
    assert proc.returncode != 0, out
    assert "saved" in out and "continue with the same command plus --resume" in out, out
    stopped = load_checkpoint(tmp_path / LAST_NAME)["state"]["step"]
    assert 3 <= stopped < STEPS, out
    r = subprocess.run(torchrun_argv(2, "train.py", args + ["--resume"]), cwd=STAGE, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (rec,) = parse_result_lines(r.stdout)  # rank 0 alone prints and writes
    assert rec["world_size"] == 2 and rec["resumed_at_steps"] == [stopped]
    assert "torchrun --standalone --nproc_per_node=2 train.py --prepared_dir" in rec["reproduce_command"]
    two = losses(tmp_path)
    one = losses(ref_dir / "b8")
    assert len(two) == STEPS and max(abs(x - y) for x, y in zip(one, two)) <= 1e-5, (one, two)
    assert max(abs(x["val_loss"] - y["val_loss"]) for x, y in zip(big["history"], rec["history"])) <= 1e-5
    assert rec["metrics"]["tokens"] == big["metrics"]["tokens"] == STEPS * 8 * 64
    assert sorted(p.name for p in tmp_path.glob("metrics*.jsonl")) == ["metrics.jsonl"]
