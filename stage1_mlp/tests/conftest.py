"""Stage-1 tests use one intra-op thread: their tensors are tiny, and on a shared 2-core machine
OpenMP threads waiting for each other made small torch ops 10x slower. The setting is a fixture that
restores the previous value after each test, so it never leaks into other stages' tests (subprocesses
and the notebook kernel inherit ``OMP_NUM_THREADS`` while it is set)."""
import contextlib
import os

import pytest
import torch

# what the process had before any stage-1 test ran (test_cli.py checks that it is restored)
THREADS_BEFORE = torch.get_num_threads()
OMP_BEFORE = os.environ.get("OMP_NUM_THREADS")


@contextlib.contextmanager
def one_torch_thread():
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp


def pytest_configure(config):
    config.addinivalue_line("markers", "all_threads: run without the stage-1 one-thread setting")


@pytest.fixture(autouse=True)
def _one_thread(request):
    if request.node.get_closest_marker("all_threads"):
        yield
        return
    with one_torch_thread():
        yield


@pytest.fixture
def threads_before():
    """(torch threads, $OMP_NUM_THREADS) as the process had them before stage-1 tests ran."""
    return THREADS_BEFORE, OMP_BEFORE
