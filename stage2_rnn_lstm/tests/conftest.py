"""Stage-2 tests run their tiny models on one thread (faster than two on a shared 2-core machine, where
OpenMP threads wait for each other). The setting is restored after each test module, so it never leaks
into other stages' tests; subprocesses and the notebook kernel inherit ``OMP_NUM_THREADS`` while it is set."""
import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = omp
