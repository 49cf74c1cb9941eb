"""Small cross-cutting helpers shared by every stage (see scripts/README.md).

Each module does one thing: ``seed`` (reproducibility), ``log`` (console + JSONL metrics),
``checkpoint`` (atomic, weights_only checkpoints and a safe vocab unpickler), ``device``
(device choice and autocast), ``data`` (where datasets live), ``results`` (the result-file
format), ``config`` (dataclass <-> argparse) and ``cli`` (one-line errors).
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
