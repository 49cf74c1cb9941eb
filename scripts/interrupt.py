"""Ctrl-C (SIGINT) and ``kill`` (SIGTERM) that never cut a training step in half.

A signal can arrive anywhere: inside ``optimizer.step()``, inside the data loader, between the
weight update and the step counter. If it raised :class:`KeyboardInterrupt` there, the saved
position would disagree with the weights and a resumed run would apply one batch twice. So a
training loop runs inside :class:`StopRequest`::

    with StopRequest() as stop:
        while step < total:
            ...one whole step...
            if stop.requested:          # checked only at the step boundary
                stop.save_and_stop(save_last, last_path, step)  # save, say so, raise KeyboardInterrupt

The first signal only sets ``stop.requested`` (and says so on stderr); a second one raises
:class:`KeyboardInterrupt` at once, for a user who does not want to wait. Checkpoints are
written atomically (``scripts.checkpoint.atomic_write``), so even that abort leaves the previous
checkpoint intact and no half-written file behind.
"""
from __future__ import annotations

import signal
import sys
import threading


class StopRequest:
    """Context manager: SIGINT/SIGTERM set :attr:`requested`; a second signal aborts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, quiet: bool = False):
        self.requested = False
        self.signal_name: str | None = None
        self.quiet = quiet
        self._previous: dict = {}

    def _handler(self, signum, frame):
        if self.requested:  # the second Ctrl-C: stop now, write nothing more
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if not self.quiet:
            print(f"\n{self.signal_name}: finishing this step, then saving a resumable checkpoint "
                  f"(press Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

    def save_and_stop(self, save, path, step: int, info=None, bar=None):
        """At a step boundary after a stop request: ``save()`` the resumable checkpoint, close ``bar``, tell the
        user (``info``, default stderr) and raise :class:`KeyboardInterrupt` (run_cli: "interrupted", exit 130)."""
        save()
        if bar is not None:
            bar.close()
        message = (f"{self.signal_name or 'stop'} at step {step}: saved {path}; "
                   f"continue with the same command plus --resume")
        (info or (lambda m: print(m, file=sys.stderr, flush=True)))(message)
        raise KeyboardInterrupt

    def request(self) -> None:
        """Ask the loop to stop at the next step boundary (what the first signal does)."""
        self.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # handlers live in the main thread
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
