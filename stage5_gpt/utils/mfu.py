"""Model FLOPs utilisation (MFU): the FLOPs a training step needs, over the peak this machine really reaches.

MFU = ``flops_per_token`` (6N + 12·L·T·d, PaLM appendix B: forward and backward of every weight, plus attention)
× tokens per second / the peak matmul FLOP rate. The peak is *measured* here, for the run's dtype, on the device the
run uses, by timing square matrix products (:func:`measure_peak_flops`), never a data-sheet constant (an A100's
312 TFLOP/s means nothing on a laptop CPU). A matmul of this size is the best case for a CPU's vector units, so
MFU tells how much of the machine the model's smaller matmuls, attention, softmax, LayerNorm and the optimizer
leave unused.
"""
from __future__ import annotations

import time

import torch

from scripts.device import DTYPES

# square size of the probe: large enough to reach the BLAS kernels' peak, small enough for ~1 s on 2 CPU cores
PROBE_N = {"cpu": 1024, "cuda": 8192, "mps": 4096}


def matmul_flops(n: int) -> float:
    """FLOPs of one (n, n) @ (n, n) product: n^2 dot products of length n, a multiply and an add each."""
    return 2.0 * n ** 3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_peak_flops(device: torch.device | str = "cpu", dtype: str = "float32", seconds: float = 1.0,
                       n: int | None = None) -> float:
    """The best FLOP/s of repeated (n, n) matrix products in ``dtype`` on ``device`` over about ``seconds``.

    Uses the threads torch has now (set ``--threads`` first). Draws from a private generator, so it does not
    move the global RNG (a run's numbers do not depend on whether the probe ran)."""
    device = torch.device(device)
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}")
    n = n or PROBE_N.get(device.type, 1024)
    if device.type == "cpu" and dtype == "float16":
        dtype = "float32"  # no fp16 autocast on CPU: the run computes in float32
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=DTYPES[dtype])
    b = torch.randn(n, n, generator=g).to(device=device, dtype=DTYPES[dtype])
    torch.mm(a, b)  # warm-up (kernel selection, page faults)
    _sync(device)
    best, start = float("inf"), time.perf_counter()
    reps = 0
    while reps < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return matmul_flops(n) / best


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops: float) -> float:
    """Achieved FLOP/s as a fraction of ``peak_flops`` (0 when the peak is unknown)."""
    return flops_per_token * tokens_per_s / peak_flops if peak_flops > 0 else 0.0
