"""Several processes, one model: what ``torchrun`` sets up and what train.py does with it.

    torchrun --standalone --nproc_per_node=2 train.py ...                      # one machine, 2 processes
    torchrun --nnodes=2 --node_rank=0 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
             --nproc_per_node=1 train.py ...                                   # on each of 2 machines (node_rank 0, 1)

``torchrun`` starts the processes and gives each ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in its environment;
:func:`setup` joins them into one process group (``gloo`` on CPU, ``nccl`` on CUDA GPUs). The model is wrapped in
``DistributedDataParallel``, which averages the gradients over the processes during ``backward()``.

The batches are designed so that the *global* batch does not depend on how it is split: every process draws the
same ``batch_size × grad_accum × world_size`` windows from one generator with the same seed, and process ``r``
trains on its own slice (:func:`micro_slices`). So 2 processes with batch B, 1 process with batch 2B and 1 process
with 2 accumulation steps of B see the same windows and compute the same averaged gradient (up to the order of
float additions).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place among the processes (rank 0 of 1 when not started by torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """The ranks torchrun put in the environment (none: a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Dist(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world)


def setup(device: torch.device, backend: str = "auto") -> Dist:
    """Join the process group torchrun prepared; ``backend`` auto = nccl on CUDA, gloo elsewhere."""
    d = from_env()
    if not d.enabled or dist.is_initialized():
        return d
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(d.local_rank)
    dist.init_process_group(backend=backend)
    return d


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def micro_slices(batch_size: int, grad_accum: int, d: Dist) -> list[slice]:
    """The rows of the global batch (``batch_size * grad_accum * world_size`` windows) that this process trains on
    in each of its ``grad_accum`` micro-steps: process r takes rows [r·A·B, (r+1)·A·B) in A slices of B."""
    first = d.rank * grad_accum
    return [slice((first + i) * batch_size, (first + i + 1) * batch_size) for i in range(grad_accum)]


def mean_over_ranks(value: float, d: Dist, device: torch.device) -> float:
    """The mean of a per-process number over all processes (itself in a single process)."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / d.world_size


def sum_over_ranks(values: list[float], d: Dist, device: torch.device) -> list[float]:
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, d: Dist, device: torch.device) -> bool:
    """True on every process if it is true on any (e.g. one of them got Ctrl-C)."""
    if not d.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def from_main(obj, d: Dist):
    """Rank 0's ``obj`` on every process (decisions that must agree: stop now, the planned step count)."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, d: Dist) -> list:
    """Every process's ``obj``, in rank order (e.g. each process's RNG state for the checkpoint)."""
    if not d.enabled:
        return [obj]
    out = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def torchrun_argv(nproc: int, script: str, args: list[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node=N script args`` (what ``torchrun`` runs)."""
    import sys

    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script, *args]
