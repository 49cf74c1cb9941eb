"""Stage-4 checkpoints: file names, rebuilding a model from a self-describing checkpoint, weight averaging.

A checkpoint (kind ``stage4_transformer``) holds the model's ``state_dict``, ``config = {"train": ...,
"model": ...}`` and ``vocab = {"tokenizer": <the BPE tokenizer as JSON>}``; ``last_transformer.pt`` also
holds the optimizer, the loop state, the budget and every RNG state (train.py). ``ckpt_step<N>.pt``
snapshots (``--average_last N``) hold the model only; :func:`average_states` averages them
(Vaswani et al. 2017 §6.1: "averaging the last 5 checkpoints").
"""
from __future__ import annotations

import re
from pathlib import Path

from scripts.checkpoint import CheckpointError, load_checkpoint
from scripts.cli import UserError
from stage4_transformer.models.transformer import Transformer, TransformerConfig
from stage4_transformer.utils.tokenizer import SubwordTokenizer

KIND = "stage4_transformer"
BEST_NAME, LAST_NAME, AVERAGED_NAME = "best_transformer.pt", "last_transformer.pt", "averaged_transformer.pt"
SNAPSHOT_RE = re.compile(r"^ckpt_step(\d+)\.pt$")


def snapshot_name(step: int) -> str:
    return f"ckpt_step{step}.pt"


def load_model(path, device="cpu", src_lang: str | None = None, tgt_lang: str | None = None, impl: str | None = None):
    """``(model in eval mode, tokenizer, checkpoint dict)``; one-line errors for bad, foreign or mismatched files.

    ``src_lang``/``tgt_lang``, when given, must match the checkpoint's language pair; ``impl`` (scratch/torch)
    rebuilds the same weights in the other implementation.
    """
    path = Path(path)
    ckpt = load_checkpoint(path, kind=KIND, map_location=device)
    try:
        mdict = dict(ckpt["config"]["model"])
        pair = ckpt["config"]["train"]["src_lang"], ckpt["config"]["train"]["tgt_lang"]
        tok_json = ckpt["vocab"]["tokenizer"]
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: checkpoint lacks {e} (not a translation checkpoint, or another version?)"
                              ) from None
    for want, have, what in ((src_lang, pair[0], "source"), (tgt_lang, pair[1], "target")):
        if want is not None and want != have:
            raise CheckpointError(f"{path} translates {pair[0]}->{pair[1]}, but {what} language {want!r} was requested")
    try:
        cfg = TransformerConfig(**mdict)
    except TypeError as e:
        raise CheckpointError(f"{path}: model config does not fit this version ({e})") from None
    tokenizer = SubwordTokenizer.from_str(tok_json)
    model = Transformer(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the saved config ({str(e).splitlines()[0][:150]})") from None
    if impl is not None and impl != cfg.impl:
        from stage4_transformer.models.convert import copy_weights

        other = Transformer(TransformerConfig(**{**mdict, "impl": impl}))
        copy_weights(model, other)
        model = other
    model.to(device).eval()
    return model, tokenizer, ckpt


def snapshots(out_dir) -> list[Path]:
    """The ``ckpt_step<N>.pt`` files in ``out_dir``, oldest step first."""
    found = [(int(m.group(1)), p) for p in Path(out_dir).glob("ckpt_step*.pt") if (m := SNAPSHOT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def average_states(paths: list) -> dict:
    """The checkpoint of the first file with ``model`` replaced by the element-wise mean of every file's weights
    (float64 accumulation); all files must have the same kind, config and tokenizer."""
    if not paths:
        raise UserError("no checkpoints to average")
    first = load_checkpoint(paths[0], kind=KIND)
    last_step = int(first.get("step", 0))
    total = {k: v.double().clone() if v.is_floating_point() else v.clone() for k, v in first["model"].items()}
    for p in paths[1:]:
        ck = load_checkpoint(p, kind=KIND)
        if ck.get("config", {}).get("model") != first.get("config", {}).get("model") or \
                ck.get("vocab") != first.get("vocab"):
            raise UserError(f"{p} has another model config or tokenizer than {paths[0]}; cannot average them")
        if ck["model"].keys() != total.keys():
            raise UserError(f"{p} has other weights than {paths[0]}; cannot average them")
        last_step = int(ck.get("step", 0))
        for k, v in ck["model"].items():
            if v.is_floating_point():
                total[k] += v.double()
    n = len(paths)
    model = {k: (v / n).to(first["model"][k].dtype) if v.is_floating_point() else v for k, v in total.items()}
    keep = ("config", "vocab", "data_sha256", "state", "step")
    out = {k: first[k] for k in keep if k in first}
    out.update({"model": model, "averaged_from": [str(p) for p in paths], "step": last_step})
    return out
