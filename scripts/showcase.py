"""The showcase's model registry: which models the web page (``scripts/demo.py``) can offer, and the one way they
are loaded and called.

Stages plug in the way they join the quick start: a stage that has something to show ships ``stageN_x/serve.py``
with a list ``MODELS`` of :class:`Servable` entries. Each entry says

- ``task``: ``classify`` (a sentence -> class probabilities), ``generate`` (a prompt -> text, streamed piece by
  piece) or ``translate`` (English -> French and the attention map);
- ``checkpoints``: the files it can load, relative to the stage folder, preferred first (a full training run
  before the quick start's small model; ``*`` patterns allowed), and ``command``: what makes them;
- ``load(path) -> object`` and ``run(object, **request) -> plain data``: the stage's own loading and decoding code.
  ``classify`` returns ``{"labels": [...], "probs": [...]}``; ``generate`` returns an iterator of text pieces;
  ``translate`` returns ``{"translation", "src_tokens", "tgt_tokens", "attention"}`` (attention: a list of rows,
  one per output token, or None). A user's bad input is a ``scripts.cli.UserError`` with a one-line message.
  An entry without ``run`` is listed as "not yet available" with its ``command``.

This module finds the adapters by globbing ``stage*/serve.py`` and imports each by its module name (a plug-in:
nothing here names a stage or holds model code, so ``scripts/`` still imports no stage, as
``scripts/tests/test_repo.py`` checks). It caches each loaded model (keyed by the checkpoint file's path, size and
modification time, so a retrained checkpoint is picked up) and turns every failure into a :class:`ShowcaseError`
with an HTTP status and one clear sentence: a missing checkpoint says which command makes it, a broken one says
what is wrong with the file. ``run`` may be called from several server threads at once; ``classify`` and
``translate`` calls to one model are serialised here, ``generate`` streams are not (the stages' samplers keep their
state in local variables).
"""
from __future__ import annotations

import importlib
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from scripts import REPO_ROOT
from scripts.cli import UserError

TASKS = ("classify", "generate", "translate")


@dataclass(frozen=True)
class Servable:
    """One model a stage offers to the showcase (see the module docstring)."""

    name: str                                  # unique within the stage, e.g. "mlp"
    task: str                                  # one of TASKS
    title: str                                 # shown in the page, e.g. "阶段 1 · MLP（IMDb 情感）"
    checkpoints: tuple[str, ...]               # relative to the stage folder, preferred first
    command: str                               # the command that makes the first checkpoint
    load: Callable[[Path], Any] | None = None  # checkpoint path -> loaded object (cached)
    run: Callable[..., Any] | None = None      # (loaded, **request) -> plain data; None = not yet available
    describe: Callable[[Any], str] | None = None  # loaded -> a short line for the page (size, vocabulary ...)


class ShowcaseError(Exception):
    """A request the showcase cannot serve: ``status`` (HTTP), ``kind`` (for the page) and one sentence."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message

    def as_dict(self) -> dict:
        return {"error": self.message, "kind": self.kind}


def discover(code_root: Path = REPO_ROOT) -> list[tuple[str, Any]]:
    """``(stage folder, adapter module or the exception its import raised)`` for every ``stage*/serve.py``."""
    found = []
    for path in sorted(code_root.glob("stage*/serve.py")):
        stage = path.parent.name
        try:
            found.append((stage, importlib.import_module(f"{stage}.serve")))
        except Exception as e:  # a broken adapter is an entry in the page, not a server that does not start
            found.append((stage, e))
    return found


@dataclass
class _Entry:
    id: str
    stage: str
    spec: Servable
    lock: threading.Lock


class Registry:
    """Every adapter's models; checkpoints are looked up under ``root/<stage>/`` (default: the repository)."""

    def __init__(self, root: Path = REPO_ROOT, code_root: Path = REPO_ROOT):
        self.root = Path(root)
        self.entries: dict[str, _Entry] = {}
        self.adapter_errors: list[dict] = []
        self._cache: dict[str, tuple[tuple, Any]] = {}
        for stage, module in discover(code_root):
            if isinstance(module, Exception):
                self.adapter_errors.append({"stage": stage, "error": f"{stage}/serve.py could not be imported "
                                                                     f"({type(module).__name__}: {module})"})
                continue
            for spec in getattr(module, "MODELS", []):
                if not isinstance(spec, Servable) or spec.task not in TASKS:
                    self.adapter_errors.append({"stage": stage, "error": f"{stage}/serve.py: {spec!r:.80} is not a "
                                                                         f"Servable with a task in {TASKS}"})
                    continue
                entry = _Entry(f"{stage}/{spec.name}", stage, spec, threading.Lock())
                self.entries[entry.id] = entry

    # ----- which checkpoint ----------------------------------------------------------------------------------

    def checkpoint_of(self, entry: _Entry) -> Path | None:
        """The first candidate that exists (for a ``*`` pattern: the newest match), else None."""
        folder = self.root / entry.stage
        for pattern in entry.spec.checkpoints:
            if any(c in pattern for c in "*?["):
                matches = sorted((p for p in folder.glob(pattern) if p.is_file()), key=lambda p: p.stat().st_mtime)
                if matches:
                    return matches[-1]
            elif (folder / pattern).is_file():
                return folder / pattern
        return None

    def status(self, entry: _Entry) -> dict:
        """What the page lists for one model: ready / missing / broken / planned, with the reason."""
        spec = entry.spec
        info = {"id": entry.id, "stage": entry.stage, "task": spec.task, "title": spec.title,
                "command": spec.command, "candidates": [f"{entry.stage}/{c}" for c in spec.checkpoints],
                "checkpoint": None, "detail": "", "error": ""}
        if spec.run is None:
            return {**info, "status": "planned", "error": f"not yet available: {spec.command}"}
        path = self.checkpoint_of(entry)
        if path is None:
            return {**info, "status": "missing", "error": self._missing_message(entry)}
        info["checkpoint"] = self._shown(path)
        cached = self._cache.get(entry.id)
        if cached and cached[0] == self._file_key(path):
            if isinstance(cached[1], ShowcaseError):
                return {**info, "status": "broken", "error": cached[1].message}
            if spec.describe is not None:
                try:
                    info["detail"] = spec.describe(cached[1])
                except Exception as e:  # a description is a nicety; the listing must not fail for it
                    info["detail"] = f"({type(e).__name__} in describe)"
        return {**info, "status": "ready"}

    def listing(self) -> list[dict]:
        return [self.status(e) for e in self.entries.values()]

    # ----- loading and calling -------------------------------------------------------------------------------

    def entry(self, model_id: str, task: str) -> _Entry:
        entry = self.entries.get(model_id)
        if entry is None:
            known = ", ".join(e.id for e in self.entries.values() if e.spec.task == task) or "none"
            raise ShowcaseError(404, "unknown_model", f"no model {model_id!r}; {task} models: {known}")
        if entry.spec.task != task:
            raise ShowcaseError(400, "wrong_task", f"{model_id} is a {entry.spec.task} model, not a {task} one")
        if entry.spec.run is None:
            raise ShowcaseError(501, "not_available", f"{model_id}: not yet available: {entry.spec.command}")
        return entry

    def loaded(self, entry: _Entry) -> Any:
        """The entry's model, loaded once per checkpoint file; a missing or broken file is a ShowcaseError."""
        path = self.checkpoint_of(entry)
        if path is None:
            raise ShowcaseError(404, "missing_checkpoint", self._missing_message(entry))
        key = self._file_key(path)
        with entry.lock:
            cached = self._cache.get(entry.id)
            if cached is None or cached[0] != key:
                try:
                    value = entry.spec.load(path)
                except Exception as e:  # UserError/CheckpointError from the stage, or anything a bad file raises
                    first = (str(e).strip().splitlines() or [""])[0]
                    value = ShowcaseError(503, "broken_checkpoint",
                                          f"{entry.id}: cannot load {self._shown(path)}: {first or type(e).__name__}"
                                          f"; retrain it with: {entry.spec.command}")
                self._cache[entry.id] = cached = (key, value)
        if isinstance(cached[1], ShowcaseError):
            raise cached[1]
        return cached[1]

    def call(self, model_id: str, task: str, **request) -> tuple[Any, float]:
        """``(result, milliseconds)`` of one classify / translate request (a generate request: the whole text)."""
        entry = self.entry(model_id, task)
        model = self.loaded(entry)
        t0 = time.perf_counter()
        with _errors(model_id):
            if task == "generate":
                result = {"text": "".join(entry.spec.run(model, **request))}
            else:
                with entry.lock:  # e.g. stage 4 switches its attention modules into "keep the weights" mode
                    result = entry.spec.run(model, **request)
        return result, 1000 * (time.perf_counter() - t0)

    def stream(self, model_id: str, **request) -> Iterator[str]:
        """The text pieces of one generate request. The first piece is computed before this returns, so a bad
        prompt is a ShowcaseError here (an HTTP error) rather than in the middle of a stream."""
        entry = self.entry(model_id, "generate")
        model = self.loaded(entry)
        with _errors(model_id):
            pieces = iter(entry.spec.run(model, **request))
            first = next(pieces, None)

        def rest():
            if first is None:
                return
            yield first
            with _errors(model_id):
                yield from pieces

        return rest()

    # ----- helpers -------------------------------------------------------------------------------------------

    def _missing_message(self, entry: _Entry) -> str:
        where = " or ".join(f"{entry.stage}/{c}" for c in entry.spec.checkpoints)
        return f"{entry.id}: no checkpoint yet ({where}); make one with: {entry.spec.command}"

    def _shown(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    @staticmethod
    def _file_key(path: Path) -> tuple:
        st = path.stat()
        return str(path), st.st_size, st.st_mtime_ns


class _errors:
    """Turn what a model raises into a ShowcaseError: the user's bad input (a UserError) is a 400 with its message;
    anything else is a 500 whose traceback goes to the server's stderr (the server keeps running)."""

    def __init__(self, model_id: str):
        self.model_id = model_id

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if e is None or isinstance(e, (ShowcaseError, GeneratorExit)) or not isinstance(e, Exception):
            return False
        if isinstance(e, UserError):
            raise ShowcaseError(400, "bad_input", f"{self.model_id}: {e}") from None
        traceback.print_exception(kind, e, tb, file=sys.stderr)
        raise ShowcaseError(500, "internal", f"{self.model_id} failed: {type(e).__name__}: {e}") from None
