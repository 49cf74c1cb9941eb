"""Stage-5 checkpoints: file names, writing a self-describing checkpoint, rebuilding the model from one.

A checkpoint (kind ``stage5_gpt``, written atomically by ``scripts.checkpoint.save_checkpoint``) holds::

    {"kind": "stage5_gpt", "format": 1,
     "model": state_dict,                                  # of the plain module (no _orig_mod. / module. keys)
     "config": {"model": asdict(GPTConfig), "train": asdict(TrainConfig)},
     "vocab": {"tokenizer": tokenizer.to_dict(), "meta_sha256": ..., "dataset": ...},
     "step": int, "best_metric": float,
     # last_gpt.pt only (train.py): "optimizer", "state", "budget", "rng", ...
    }

so :func:`load_model` rebuilds model and tokenizer from the file alone.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from scripts.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, unwrap_model
from stage5_gpt.models.gpt import GPT, GPTConfig

KIND = "stage5_gpt"
BEST_NAME, LAST_NAME = "best_gpt.pt", "last_gpt.pt"
# prefixes that torch.compile (`_orig_mod.`) and DistributedDataParallel (`module.`) put before every weight name
WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def clean_state_dict(state: dict) -> dict:
    """``state`` with wrapper prefixes stripped from every key (a checkpoint never stores them)."""
    out = {}
    for k, v in state.items():
        while k.startswith(WRAPPER_PREFIXES):
            k = k.split(".", 1)[1]
        out[k] = v
    return out


def save_model(path, model: torch.nn.Module, tokenizer, train_config=None, vocab_extra: dict | None = None,
               **extra) -> Path:
    """Write a checkpoint of ``model`` (compiled / DDP wrappers removed) and its tokenizer; ``train_config`` is a
    dataclass or dict, ``vocab_extra`` more entries of ``vocab`` (``meta_sha256``, ``dataset``), ``extra`` more
    top-level entries (``step``, ``best_metric``, ``optimizer``, ...)."""
    plain = unwrap_model(model)
    if dataclasses.is_dataclass(train_config):
        train_config = dataclasses.asdict(train_config)
    payload = {
        "model": clean_state_dict(plain.state_dict()),
        "config": {"model": dataclasses.asdict(plain.config), "train": dict(train_config or {})},
        "vocab": {"tokenizer": tokenizer.to_dict(), **(vocab_extra or {})},
        **extra,
    }
    return save_checkpoint(path, payload, KIND)


def config_from_checkpoint(ckpt: dict, path="checkpoint") -> GPTConfig:
    """The :class:`GPTConfig` saved in ``ckpt``; one-line :class:`CheckpointError` when it is missing or invalid."""
    try:
        saved = dict(ckpt["config"]["model"])
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: checkpoint has no config.model (not a stage-5 GPT checkpoint, or "
                              f"another version?)") from None
    names = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = sorted(set(saved) - names)
    if unknown:
        raise CheckpointError(f"{path}: model config has unknown keys {unknown} (written by another version?)")
    try:
        return GPTConfig(**saved)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model config ({e})") from None


def tokenizer_from_checkpoint(ckpt: dict, path="checkpoint"):
    from stage5_gpt.tokenizer import tokenizer_from_dict

    try:
        return tokenizer_from_dict(ckpt["vocab"]["tokenizer"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: checkpoint has no readable tokenizer ({type(e).__name__}: {e})") from None


def load_model(path, device="cpu", ckpt: dict | None = None):
    """``(model in eval mode, tokenizer, checkpoint dict)``; one-line :class:`CheckpointError` for a missing,
    corrupt or foreign file (another stage's kind), a bad config, or weights that do not fit the config.
    ``ckpt``: the file's contents when the caller has read it already."""
    path = Path(path)
    ckpt = load_checkpoint(path, kind=KIND, map_location=device) if ckpt is None else ckpt
    if "finetune" in ckpt:
        raise CheckpointError(f"{path} is a fine-tuned {ckpt['finetune'].get('task')} checkpoint, not a language "
                              f"model: use finetune.py evaluate --checkpoint {path}")
    config = config_from_checkpoint(ckpt, path)
    tokenizer = tokenizer_from_checkpoint(ckpt, path)
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                              f"{config.vocab_size} (mismatched files?)")
    model = GPT(config)
    try:
        model.load_state_dict(clean_state_dict(ckpt["model"]))
    except (RuntimeError, AttributeError) as e:
        raise CheckpointError(f"{path}: weights do not fit the saved config ({str(e).splitlines()[0][:160]})"
                              ) from None
    return model.to(device).eval(), tokenizer, ckpt


def check_meta(ckpt: dict, meta: dict, where: str = "meta.json") -> None:
    """A prepared dataset (``meta.json``) must use the checkpoint's tokenizer: one-line error otherwise."""
    saved = (ckpt.get("vocab") or {}).get("tokenizer")
    theirs = meta.get("tokenizer")
    if saved == theirs:
        return
    kinds = [t.get("kind", "?") if isinstance(t, dict) else "none" for t in (theirs, saved)]
    what = f"a {kinds[0]} tokenizer, the checkpoint a {kinds[1]} one" if kinds[0] != kinds[1] else \
        f"another {kinds[0]} vocabulary than the checkpoint's"
    raise CheckpointError(f"{where} does not match the checkpoint: the data was prepared with {what}; prepare "
                          f"the dataset again or use the matching checkpoint")
