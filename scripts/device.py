"""Device choice and mixed precision that are safe everywhere.

``--device auto`` picks cuda, then mps, then cpu. ``--dtype bfloat16|float16`` turns on
autocast where the device supports it and is a no-op (float32) elsewhere, so the same command
runs on a laptop and on a GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import warnings

import torch

from scripts.cli import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_device_args(parser: argparse.ArgumentParser, dtype: bool = True) -> None:
    """``--device`` and, for scripts that honour it (``dtype=True``), ``--dtype``."""
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                        help="where to run; auto = cuda, then mps, then cpu (default: %(default)s)")
    if dtype:
        parser.add_argument("--dtype", default="float32", choices=list(DTYPES),
                            help="autocast precision (no-op where the device does not support it) "
                                 "(default: %(default)s)")


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda > mps > cpu; an explicit but unavailable device is a :class:`UserError`."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA GPU is available (use --device auto or cpu)")
    if name == "mps" and not mps:
        raise UserError("--device mps requested but MPS is not available (use --device auto or cpu)")
    if name not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    return torch.device(name)


def autocast(device: torch.device, dtype: str = "float32"):
    """An autocast context for ``dtype`` on ``device``; ``nullcontext`` where unsupported."""
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    supported = {"cuda": ("bfloat16", "float16"), "cpu": ("bfloat16",), "mps": ("float16", "bfloat16")}
    if dtype not in supported.get(device.type, ()):
        warnings.warn(f"{dtype} autocast is not supported on {device.type}; running in float32")
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def describe_device(device: torch.device) -> str:
    """Hardware in words for result files, e.g. ``cpu: AMD EPYC 7B13 (2 threads)``."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "mps: Apple GPU"
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    import platform
    return f"cpu: {name or platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def threads_flag(argv: list[str]) -> int:
    """The value of ``--threads N`` / ``--threads=N`` in ``argv`` (0 when absent or not a number), read before
    argparse so that a CLI with subcommands can set torch's thread count once around all of them."""
    for i, a in enumerate(argv):
        value = a.split("=", 1)[1] if a.startswith("--threads=") else (
            argv[i + 1] if a == "--threads" and i + 1 < len(argv) else None)
        if value is not None:
            try:
                return max(0, int(value))
            except ValueError:
                return 0
    return 0


@contextlib.contextmanager
def torch_threads(n: int):
    """``torch.set_num_threads(n)`` inside the block (0 = leave it), restored after it (tests run CLIs in-process)."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
