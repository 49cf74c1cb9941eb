"""Stage-1 tests use one intra-op thread: their tensors are tiny, and on a shared 2-core machine
OpenMP threads waiting for each other made small torch ops 10x slower. Subprocesses and the
notebook kernel inherit OMP_NUM_THREADS."""
import os

import torch

os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)
