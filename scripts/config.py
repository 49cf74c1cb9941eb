"""Config as a dataclass, filled from argparse and saved in every checkpoint (STYLE.md practice 2).

    @dataclass
    class TrainConfig:
        lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
        model_type: str = field(default="lstm", metadata={"choices": ["rnn", "lstm", "gru"]})

    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)  # from scripts.cli: shows each default
    add_dataclass_args(parser, TrainConfig)
    cfg = dataclass_from_args(TrainConfig, parser.parse_args(argv))

Flags are ``--<field name>``; ``bool`` fields get ``--x/--no-x``; ``tuple[int, ...]`` fields take
several values. Mistyped flags are argparse errors; unknown keys in a saved config are errors.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing

from scripts.cli import UserError


def _base_type(tp):
    """(python type, is_sequence) for int/float/str/bool, Optional[...] and tuple[X, ...]/list[X]."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin in (tuple, list):
        return typing.get_args(tp)[0], True
    return tp, False


def add_dataclass_args(parser: argparse.ArgumentParser, cls, group_title: str | None = None) -> None:
    """Add one ``--flag`` per field of dataclass ``cls``."""
    target = parser.add_argument_group(group_title) if group_title else parser
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, is_seq = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        kwargs = {"default": default, "help": f.metadata.get("help", "")}  # scripts.cli.HelpFormatter shows defaults
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = tp
            if is_seq:
                kwargs["nargs"] = "+"
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
        target.add_argument(f"--{f.name}", **kwargs)


def dataclass_from_args(cls, args: argparse.Namespace):
    """Build ``cls`` from the parsed flags (sequences become tuples)."""
    values = {}
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name)
        values[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**values)


def config_from_dict(cls, data: dict):
    """Rebuild a config saved with ``dataclasses.asdict``; unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise UserError(f"config has unknown keys {sorted(unknown)} for {cls.__name__} (checkpoint from another version?)")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
