"""Small cross-cutting helpers shared by every stage (see scripts/README.md).

Each module does one thing: ``seed`` (reproducibility), ``log`` (console + JSONL metrics),
``checkpoint`` (atomic, weights_only checkpoints and a safe vocab unpickler), ``device``
(device choice and autocast), ``data`` (where datasets live), ``results`` (the result-file
format), ``config`` (dataclass <-> argparse and the one ``--resume`` rule), ``cli`` (one-line
errors, the REPL rule), ``flags`` (the shared flag vocabulary), ``interrupt`` (Ctrl-C/SIGTERM that
stop at a step boundary), ``budget`` (epochs/steps/minutes as one fixed step count) and
``schedule`` (learning-rate schedules).
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
