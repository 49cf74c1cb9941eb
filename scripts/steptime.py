"""Time one training step of a stage's model at several sequence lengths (the ``seqlen`` benchmark preset).

Stages 2, 3 and 4 each give :func:`run_seqlen` a function ``make_step(seq_len) -> step`` that builds one batch of
random tokens of that length (the same batch size in every stage) and returns a callable doing one training step
(forward + backward + AdamW) on it. Every timed step is preceded by one timing of a fixed reference operation (a
float32 matmul whose size never changes), so that the result also holds ``ratio = step time / reference time``:
a noisy or slower machine changes both alike, and the ratio is comparable across machines where milliseconds are
not. ``scripts/compare.py`` draws milliseconds per step against sequence length, one line per stage's model, into the
README's "技术演进对比" block: an RNN's time grows with every extra step it must take one after the other; a
Transformer's grows far more slowly until its attention's T^2 term dominates.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import torch

from scripts.results import make_result, write_result

TASK = "seqlen_speed"
LENGTHS = (32, 64, 128, 256, 512)
BATCH_SIZE = 16
WIDTH = 256  # d_model / hidden size of every timed model
VOCAB = 1000  # random tokens: the output layer's cost is the same small share in every stage
REPEATS = 3
REF_SIZE = 512  # reference: REF_MATMULS products of two REF_SIZE x REF_SIZE float32 matrices
REF_MATMULS = 8


def add_seqlen_args(p: argparse.ArgumentParser, repeats: bool = True) -> None:
    """``--lengths``, ``--batch_size`` (and ``--repeats``) of the ``seqlen`` preset."""
    p.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS), metavar="T",
                   help="seqlen: the sequence lengths to time (source and target length for translation models)")
    p.add_argument("--batch_size", type=int, default=BATCH_SIZE, help="seqlen: sequences per timed step")
    if repeats:
        p.add_argument("--repeats", type=int, default=REPEATS, help="seqlen: timed steps per length (median)")


def check_seqlen_args(lengths, batch_size: int, repeats: int) -> None:
    from scripts.cli import UserError

    if min([*lengths, batch_size, repeats]) < 1:
        raise UserError("--lengths, --batch_size and --repeats must all be >= 1")


def reference_op(size: int = REF_SIZE, matmuls: int = REF_MATMULS) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)

    def run() -> None:
        for _ in range(matmuls):
            torch.mm(a, b)
    return run


def _seconds(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_lengths(make_step: Callable[[int], Callable[[], None]], lengths, batch_size: int, repeats: int,
                 ref: Callable[[], None] | None = None, log=print) -> list[dict]:
    """Per length: median ms per step, median ms of the reference timed just before each step, the median of the
    per-pair ratios, tokens per second, and every raw timing. One untimed warm-up step (and reference) per length."""
    ref = ref or reference_op()
    rows = []
    for seq_len in lengths:
        step = make_step(seq_len)
        ref()
        step()  # warm-up: allocator, autograd graph caches
        steps, refs = [], []
        for _ in range(repeats):
            refs.append(_seconds(ref))
            steps.append(_seconds(step))
        ms, ref_ms = 1000 * statistics.median(steps), 1000 * statistics.median(refs)
        row = {"seq_len": seq_len, "ms_per_step": ms, "ref_ms": ref_ms,
               "ratio": statistics.median(s / r for s, r in zip(steps, refs)),
               "tokens_per_s": batch_size * seq_len / (ms / 1000),
               "steps_s": steps, "refs_s": refs}
        rows.append(row)
        log(f"seqlen {seq_len:5d}: {ms:9.1f} ms/step | reference {ref_ms:6.1f} ms | ratio {row['ratio']:7.2f} | "
            f"{row['tokens_per_s']:9.0f} tok/s")
    return rows


def seqlen_result(stage: str, model: str, rows: list[dict], *, params: int, device: str, seed: int,
                  batch_size: int, config: dict) -> dict:
    """The result record: flat metrics (``ms_per_step_T<n>``, ``ratio_T<n>``) plus the full ``seqlen`` rows."""
    metrics = {}
    for r in rows:
        metrics[f"ms_per_step_T{r['seq_len']}"] = r["ms_per_step"]
        metrics[f"ratio_T{r['seq_len']}"] = r["ratio"]
    metrics["ref_ms"] = statistics.median(r["ref_ms"] for r in rows)
    longest = max(r["seq_len"] for r in rows)
    return make_result(stage, TASK, "random_tokens", "none", metrics, params=params, train_wall_s=None,
                       device=device, seed=seed, data_sha256=None, primary_metric=f"ms_per_step_T{longest}",
                       model=model, seqlen=rows, batch_size=batch_size, threads=torch.get_num_threads(),
                       step="forward + backward + AdamW step, dropout 0, random tokens",
                       reference=f"{REF_MATMULS} x float32 matmul {REF_SIZE}x{REF_SIZE} @ {REF_SIZE}x{REF_SIZE}",
                       load_avg_1min=os.getloadavg()[0], config=config)


def run_seqlen(stage: str, model: str, make_step, *, lengths, batch_size: int, repeats: int, params: int,
               device: str, seed: int, config: dict) -> tuple[dict, object]:
    """Time, build the record, write ``results/<stage>/seqlen_<time>.json``; returns ``(record, path)``."""
    print(f"seqlen benchmark: {model}, batch {batch_size}, lengths {list(lengths)}, {repeats} timed steps each, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()}", flush=True)
    rows = time_lengths(make_step, lengths, batch_size, repeats)
    record = seqlen_result(stage, model, rows, params=params, device=device, seed=seed, batch_size=batch_size,
                           config=config)
    return record, write_result(record, name="seqlen")


def adamw_step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """A training step: ``loss_fn()`` (the forward pass), backward, AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step
