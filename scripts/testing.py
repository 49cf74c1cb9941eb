"""Helpers for the stages' tests: run a CLI as a user would, execute a notebook."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence


def run_script(script: str | Path, args: Sequence[str] = (), cwd: str | Path | None = None,
               env: dict | None = None, timeout: float = 600, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``python <script> <args>`` in ``cwd`` (default: the script's folder), offline, text output."""
    script = Path(script)
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1",
                "MPLBACKEND": "Agg", **(env or {})}
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd or script.parent, env=full_env,
                          capture_output=True, text=True, timeout=timeout, input=stdin)


def run_notebook(path: str | Path, timeout: float = 600, cwd: str | Path | None = None):
    """Execute a notebook top to bottom in memory (the file is not modified); returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd or path.parent)}})
    os.environ.setdefault("MPLBACKEND", "Agg")
    client.execute()
    return nb
