"""Checkpoint I/O: self-describing, atomic, safe to load (docs/CONTRIBUTING.md).

A checkpoint is a dict of tensors and plain data, loadable with ``torch.load(weights_only=True)``::

    {"kind": "stage2_rnn_lstm", "format": 1,
     "model": state_dict, "config": {...}, "vocab": {...},
     "optimizer": ..., "scheduler": ..., "step": int, "best_metric": float,
     "rng": scripts.seed.get_rng_state(...), ...}

``kind`` names the stage, so loading a stage-2 checkpoint into stage 1 is a clear error.
Files are written to a temporary file and renamed, so an interrupted save never leaves a
half-written checkpoint; the file gets ordinary permissions (0644 less the umask), not the
temp file's 0600. Vocabulary pickles (``*.pkl``) are read by a restricted unpickler that
only rebuilds plain builtins: a malicious pickle is refused before anything runs.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Callable

import torch

from scripts.cli import UserError

FORMAT_VERSION = 1


class CheckpointError(UserError):
    """Missing, corrupt, or wrong-kind checkpoint / vocabulary file."""


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(f)`` on a temp file next to ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under ``torch.compile`` / DDP wrappers (no ``_orig_mod.`` keys)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def save_checkpoint(path: str | Path, payload: dict, kind: str) -> Path:
    """Atomically save ``payload`` (must hold ``model`` and ``config``) tagged with ``kind``."""
    missing = {"model", "config"} - payload.keys()
    if missing:
        raise ValueError(f"checkpoint payload lacks {sorted(missing)}")
    data = {"kind": kind, "format": FORMAT_VERSION, **payload}
    return atomic_write(path, lambda f: torch.save(data, f))


def load_checkpoint(path: str | Path, kind: str | None = None, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint saved by :func:`save_checkpoint`; one-line errors for every bad case."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():  # a bad opcode: garbage, not a refused object
            raise CheckpointError(f"{path} is corrupt or not a my_llm checkpoint (not a PyTorch file at all, "
                                  f"UnpicklingError); retrain, or pass a best_*.pt / last_*.pt file written by "
                                  f"this stage's train.py") from None
        # torch's own message goes on to suggest weights_only=False, which would run code from the file
        raise CheckpointError(f"{path} holds Python objects other than tensors and plain data, so it is refused "
                              f"(loading it could run code from the file); use a checkpoint written by this "
                              f"repository's train.py") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file (truncated, text, other format) is the same user error
        with open(path, "rb") as f:
            head = f.read(4)
        what = "a damaged or truncated PyTorch file" if head[:2] == b"PK" else "not a PyTorch file at all"
        raise CheckpointError(f"{path} is corrupt or not a my_llm checkpoint ({what}, {type(e).__name__}); retrain, "
                              f"or pass a best_*.pt / last_*.pt file written by this stage's train.py") from None
    if not isinstance(data, dict) or "kind" not in data or "model" not in data:
        raise CheckpointError(f"{path} is not a my_llm checkpoint (no 'kind'/'model' entries)")
    if kind is not None and data["kind"] != kind:
        raise CheckpointError(f"{path} is a {data['kind']} checkpoint, but this is {kind}")
    return data


# ----- vocabulary files ---------------------------------------------------------------------

_PLAIN = (str, int, float, bool, bytes, type(None))
_ALLOWED_GLOBALS = {("builtins", "set"), ("builtins", "frozenset")}


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds dict/list/tuple/str/int/float/bool/None (and sets); refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return {"set": set, "frozenset": frozenset}[name]
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _check_plain(obj, where: str = "vocab") -> None:
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, where)
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            _check_plain(v, where)
        return
    raise TypeError(f"{where} holds a {type(obj).__name__}; only plain builtins may be saved")


def save_vocab_pickle(path: str | Path, obj) -> Path:
    """Pickle ``obj`` (plain builtins only) atomically; a JSON copy is written beside it."""
    _check_plain(obj)
    path = Path(path)
    atomic_write(path, lambda f: pickle.dump(obj, f, protocol=4))
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        text = json.dumps(obj, ensure_ascii=False, indent=1).encode()
        atomic_write(path.with_suffix(".json"), lambda f: f.write(text))
    return path


def load_vocab_pickle(path: str | Path):
    """Read a vocabulary pickle with the restricted unpickler (never runs code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"vocabulary file not found: {path}")
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: not a plain-data vocabulary pickle ({e})") from None
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{path} is corrupt or not a vocabulary pickle ({type(e).__name__})") from None


def vocab_fingerprint(tokens) -> str:
    """Short sha256 of an ordered token list: checkpoints store it to detect a mismatched vocab."""
    return hashlib.sha256(json.dumps(list(tokens), ensure_ascii=False).encode()).hexdigest()[:16]


def weights_fingerprint(state_dict: dict) -> str:
    """Short sha256 of a model's weights (names, dtypes, shapes and bytes, in name order): the same weights give
    the same fingerprint whatever else the checkpoint file holds (optimizer, RNG, history), so a result file can
    say exactly which pre-trained model it started from."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        w = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{w.dtype}|{tuple(w.shape)}|".encode())
        h.update(w.reshape(-1).view(torch.uint8).numpy().tobytes())  # flat first: a 0-d tensor has no byte view
    return h.hexdigest()[:16]
