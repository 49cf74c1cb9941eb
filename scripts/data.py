"""Where datasets live, and a fast, clear error when they are nowhere.

:func:`find_dataset` looks, in this order, in

1. an explicit ``--data_dir`` (either the dataset's own folder, or a data folder with one
   sub-folder per dataset: ``imdb/``, ``ptb/``, ``multi30k/`` ..., see ``docs/CONTRIBUTING.md``),
2. ``$MY_LLM_DATA/<folder>`` (the same layout); a ``$MY_LLM_DATA`` that does not exist is an error,
   and one that lacks the dataset is a loud warning before anything else is used,
3. the small copy bundled in the stage (``stageN_x/data/...``), when the stage ships one,
4. the Hugging Face hub through ``datasets`` (for users online).

Offline (``HF_HUB_OFFLINE=1``, or the hub unreachable within ~3 s) with nothing found, it raises
:class:`DataNotFoundError` naming every place it looked, instead of retrying for half a minute.

Reading goes through :func:`read_text` / :func:`read_errors`, so a file in the wrong encoding, a
truncated or fake ``.gz`` is a one-line :class:`DataFileError` naming the file, never a traceback.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import socket
import sys
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from scripts import REPO_ROOT
from scripts.cli import UserError

ENV_VAR = "MY_LLM_DATA"

# name -> (folder in a data dir, Hugging Face hub id or None)
DATASETS = {
    "ag_news": ("ag_news", "fancyzhx/ag_news"),
    "imdb": ("imdb", "stanfordnlp/imdb"),
    "tinyshakespeare": ("tinyshakespeare", None),  # the bundled copy is the whole corpus
    "ptb": ("ptb", "ptb_text_only"),
    "wikitext2": ("wikitext2", "Salesforce/wikitext"),
    "multi30k": ("multi30k", None),  # bundled in stage3_attention_seq2seq/data
    "eng_fra": ("eng_fra", None),
}


class DataNotFoundError(UserError):
    """The dataset is in none of the places we look."""


class DataFileError(UserError):
    """A data file exists but cannot be read as what it claims to be (encoding, gzip, format)."""


@contextlib.contextmanager
def read_errors(path: str | Path):
    """Turn the ways a data file can be unreadable into one :class:`DataFileError` naming ``path``."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise DataFileError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                            f"re-save the file as UTF-8") from None
    except EOFError:
        raise DataFileError(f"{path}: the gzip file is truncated (download or copy it again)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataFileError(f"{path}: not a valid gzip file ({e}); un-gzipped files must not end in .gz") from None
    except IsADirectoryError:
        raise DataFileError(f"{path} is a folder, not a file") from None
    except PermissionError:
        raise DataFileError(f"{path}: permission denied") from None


def read_text(path: str | Path) -> str:
    """The whole text of a UTF-8 file (``*.gz`` un-gzipped); one-line errors for unreadable files."""
    with read_errors(path), open_text(path) as f:
        return f.read()


@dataclass(frozen=True)
class HubSource:
    """The dataset is to be read from the Hugging Face hub (see :func:`load_hub_dataset`)."""

    hub_id: str


def data_file(folder: str | Path, name: str) -> Path | None:
    """``folder/name``, accepting a gzipped or un-gzipped variant; ``None`` if absent."""
    folder = Path(folder)
    base = name[:-3] if name.endswith(".gz") else name
    for candidate in (name, base + ".gz", base):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def open_text(path: str | Path) -> io.TextIOBase:
    """Open a text file for reading, transparently un-gzipping ``*.gz``."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def hub_reachable(timeout: float = 3.0) -> bool:
    """False at once when offline mode is set; otherwise a TCP probe bounded by ``timeout``."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return False
    ok = []

    def probe():
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)  # getaddrinfo ignores socket timeouts
    t.start()
    t.join(timeout)
    return bool(ok)


def _candidates(folder: str, data_dir, bundled) -> list[tuple[str, Path]]:
    places = []
    if data_dir is not None:
        places += [("--data_dir", Path(data_dir) / folder), ("--data_dir", Path(data_dir))]
    env = os.environ.get(ENV_VAR)
    if env:
        if not Path(env).is_dir():
            raise DataNotFoundError(f"${ENV_VAR}={env} does not exist or is not a folder; "
                                    f"fix it or unset it (unset, the bundled sample is used where there is one)")
        places.append((f"${ENV_VAR}", Path(env) / folder))
    if bundled is not None:
        places.append(("bundled", Path(bundled)))
    return places


def find_dataset(name: str, files: Sequence[str], data_dir: str | Path | None = None,
                 bundled: str | Path | None = None, allow_hub: bool = True) -> Path | HubSource:
    """The folder holding every file in ``files`` (see the module docstring for the order).

    Returns a :class:`HubSource` when only the hub can provide it and it is reachable.
    An explicit ``data_dir`` that lacks the files is an error (we never silently use other data).
    """
    if name not in DATASETS:
        raise DataNotFoundError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    folder, hub_id = DATASETS[name]
    places = _candidates(folder, data_dir, bundled)
    for source, place in places:
        if all(data_file(place, f) for f in files):
            if source == "bundled" and os.environ.get(ENV_VAR):
                message = (f"${ENV_VAR}={os.environ[ENV_VAR]} has no {folder}/ with {', '.join(files)}; "
                           f"using the copy bundled in the repository ({place})")
                print(f"warning: {message}", file=sys.stderr, flush=True)
            return place
        if source == "--data_dir" and place == Path(data_dir):  # both --data_dir forms failed
            raise DataNotFoundError(
                f"{name}: --data_dir {data_dir} holds neither {', '.join(files)} nor {folder}/ with them")
    if allow_hub and hub_id is not None and hub_reachable():
        return HubSource(hub_id)
    looked = "; ".join(str(p) for _, p in places) or "nowhere (no --data_dir, no $MY_LLM_DATA)"
    hub = f"the hub ({hub_id}) is unreachable or HF_HUB_OFFLINE is set" if hub_id else "no hub copy is used"
    raise DataNotFoundError(
        f"{name} data not found (need {', '.join(files)}); looked in: {looked}; {hub}. "
        f"Put the files in <dir>/{folder}/ and pass --data_dir <dir> or set {ENV_VAR}=<dir> "
        f"(the layout and sources of each dataset are in the stage's data/README.md)")


def load_hub_dataset(source: HubSource, split: str, config: str | None = None):
    """Load one split from the hub with the ``datasets`` library.

    Running ``python train.py`` inside ``stage1_mlp/`` puts that folder first on ``sys.path``,
    where ``stage1_mlp/datasets/`` would shadow the library, so the stage folders are taken off
    the path while it is imported.
    """
    saved = list(sys.path)
    root = REPO_ROOT.resolve()
    try:
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve().parent != root]
        import datasets as hf_datasets
    finally:
        sys.path[:] = saved
    return hf_datasets.load_dataset(source.hub_id, config, split=split)


def sha256_files(paths: Iterable[str | Path]) -> str:
    """One sha256 over the files actually read (sorted by name, content only)."""
    h = hashlib.sha256()
    for p in sorted((Path(p) for p in paths), key=lambda q: q.name):
        fh = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                fh.update(chunk)
        h.update(fh.digest())
    return h.hexdigest()


def transform_lines(input_path: str | Path, output_path: str | Path | None, transform) -> None:
    """The ``--input FILE [--output FILE]`` batch mode of the generate/translate tools.

    ``transform(lines, numbers)`` gets the non-blank input lines (and their 1-based line numbers) and returns
    one output string per line. Blank lines stay blank, so the output has exactly one line per input line
    (a tool like the ``sacrebleu`` command line can score it directly). Written to ``output_path`` (its folder
    is created), else to stdout; a one-line summary goes to stderr.
    """
    if not Path(input_path).is_file():
        raise UserError(f"--input {input_path}: no such file")
    lines = read_text(input_path).split("\n")
    if lines and lines[-1] == "":  # the final newline does not start another line
        lines.pop()
    lines = [ln.rstrip("\r") for ln in lines]
    todo = [i for i, ln in enumerate(lines) if ln.strip()]
    outputs = [""] * len(lines)
    for i, text in zip(todo, transform([lines[i] for i in todo], [i + 1 for i in todo])):
        outputs[i] = text
    text = "".join(o + "\n" for o in outputs)
    if output_path:
        Path(output_path).parent.mkdir(parents=True, exist_ok=True)
        Path(output_path).write_text(text, encoding="utf-8")
        print(f"note: {len(todo)} line(s) translated, {len(lines) - len(todo)} empty line(s) kept empty "
              f"-> {output_path}", file=sys.stderr, flush=True)
    else:
        sys.stdout.write(text)
