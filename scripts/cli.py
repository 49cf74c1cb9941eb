"""One-line errors for command-line tools.

Every CLI raises :class:`UserError` for bad input (missing file, impossible flag, unknown
characters ...). :func:`run_cli` turns it into ``error: <message>`` on stderr and exit code 2,
so users never see a traceback for their own mistakes. Bugs still raise normally.
A ``kill`` (SIGTERM, what schedulers and ``timeout`` send) is treated like Ctrl-C, so training
scripts save a resumable checkpoint either way.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Callable, Sequence


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends ``(default: X)`` to each option's help, once:
    not where the help already states its default, nor for empty defaults (``None``, ``False``, ``""``, ``()``).
    The one place that shows defaults, for plain ``add_argument`` flags and dataclass fields alike."""

    def _get_help_string(self, action):
        text, default = action.help or "", action.default
        if "(default" in text or "%(default)" in text or default is argparse.SUPPRESS or default is None \
                or default is False \
                or (isinstance(default, (str, list, tuple)) and not default):  # `in (False, "")` would hide 0
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
        return f"{text} (default: {shown})"


class UserError(Exception):
    """An error caused by the user's input; reported as one line, exit code 2."""


def _sigterm_as_ctrl_c(signum, frame):
    raise KeyboardInterrupt


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> None:
    """Run ``main(argv)``; exit 0 on success, 2 on :class:`UserError`, 130 on Ctrl-C or SIGTERM."""
    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
        previous = signal.signal(signal.SIGTERM, _sigterm_as_ctrl_c)
    try:
        main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # e.g. `python generate.py ... | head`
        sys.exit(0)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


QUIT_WORDS = (":q", ":quit")


def repl_lines(banner: str, stdin=None):
    """The one REPL rule: yield each non-blank input line; a blank line gets a note on stderr and is
    skipped; Ctrl-D (end of input) or ``:q`` ends the session."""
    stdin = stdin or sys.stdin
    print(f"{banner} (Ctrl-D or :q to quit)", file=sys.stderr, flush=True)
    for line in stdin:
        text = line.rstrip("\r\n")
        if text.strip() in QUIT_WORDS:
            return
        if not text.strip():
            print("note: empty input, type some text (Ctrl-D or :q to quit)", file=sys.stderr, flush=True)
            continue
        yield text
