"""Give the heap memory a training loop has freed back to the operating system (glibc's ``malloc_trim``).

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a large block from a private ``mmap``
(handed back to the system by ``free``) only above a threshold, and it raises that threshold to the size of each
such block that is freed (up to 32 MiB on 64-bit Linux). So after the first steps most activations are carved
from the heap. When the shapes change from step to step (classification batches padded to their longest text,
translation batches bucketed by length) a freed block seldom fits the next request: the heap keeps growing, and
its free pages stay in the process's resident memory although nothing uses them. :func:`release_free_memory`
asks glibc to return them (``malloc_trim(0)`` also releases free pages inside the heap, not only at its top).

It changes no number a run computes, only its resident memory. Where the C library is not glibc (macOS, musl)
it does nothing. Probe (2026-12-08, not reported): ``benchmark.py ft_imdb_full --extra --max_len 512 --max_steps
100`` on the bundled IMDb sample peaked at 7.1 GB without it and 4.9 GB with :class:`HeapTrimmer` (66 trims, 8.5 s
of 280), the same test accuracy; the published 512-token run, without it, peaked at 14.4 GB after 1,486 steps.
On the full data, ``benchmark.py ft_imdb_full`` on 2 threads (2026-12-08, not reported) peaked at 5.0 GB with it
(510 trims, 49 s of 18.6 min; test accuracy 88.16%) against 6.65 GB for the published 1-thread run without it (88.20%).
"""
from __future__ import annotations

import ctypes
import os
import sys
import time
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim`` as a ctypes function, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # no glibc (e.g. musl)
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system; True when glibc released some memory."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


def current_rss_mb() -> float:
    """This process's resident memory now (not the peak), in MiB; 0.0 where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
    except OSError:
        return 0.0
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


class HeapTrimmer:
    """Call :meth:`step` once per training step: it trims the heap only when the resident memory has grown by
    ``slack_mb`` since the last trim, so a loop whose memory does not grow pays nothing but a read of
    ``/proc/self/statm``, and one whose heap fragments stays within about ``slack_mb`` of its working set."""

    def __init__(self, slack_mb: float = 1024.0):
        self.slack_mb = slack_mb
        self.enabled = _malloc_trim() is not None
        self.baseline = current_rss_mb() if self.enabled else 0.0
        self.trims, self.seconds = 0, 0.0

    def step(self) -> None:
        if not self.enabled or current_rss_mb() < self.baseline + self.slack_mb:
            return
        t = time.perf_counter()
        release_free_memory()
        self.trims, self.seconds = self.trims + 1, self.seconds + time.perf_counter() - t
        self.baseline = current_rss_mb()
