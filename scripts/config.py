"""Config as a dataclass, filled from argparse and saved in every checkpoint (docs/CONTRIBUTING.md).

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
        raise UserError(f"config has unknown keys {sorted(unknown)} for {cls.__name__} "
                        f"(checkpoint from another version?)")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# ----- the one --resume rule -------------------------------------------------------------------
# Budget and bookkeeping flags may change when a run is continued (e.g. raise --epochs to train
# longer); every other flag defines the model, data or tokenizer and must match the checkpoint.
RESUME_MAY_CHANGE = frozenset({
    "epochs", "max_steps", "max_minutes", "schedule_steps", "resume", "log_every", "eval_every", "patience",
    "out_dir", "run_dir", "data_dir", "device", "compile", "threads", "report"})


def explicit_flags(parser: argparse.ArgumentParser, argv) -> set[str]:
    """The ``dest`` names the user actually typed in ``argv`` (``None`` = ``sys.argv[1:]``)."""
    import sys

    probe = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            kwargs = {"dest": action.dest, "default": argparse.SUPPRESS}
            if isinstance(action, argparse.BooleanOptionalAction):
                kwargs["action"] = argparse.BooleanOptionalAction
            elif action.nargs == 0:
                kwargs["action"] = "store_const"
                kwargs["const"] = action.const
            else:
                kwargs["nargs"] = action.nargs
            probe.add_argument(*action.option_strings, **kwargs)
    known, _ = probe.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    return set(vars(known))


def resume_config(saved: dict, current: dict, explicit: set[str], source, may_change=RESUME_MAY_CHANGE) -> dict:
    """The config a resumed run continues with: the checkpoint's ``saved`` values, where the user may
    override only ``may_change`` flags. A typed flag that would change anything else is a one-line
    :class:`UserError` naming each such flag and its saved value."""
    def norm(v):
        return list(v) if isinstance(v, tuple) else v

    clash = [k for k in sorted(explicit)
             if k in saved and k not in may_change and norm(saved[k]) != norm(current.get(k))]
    if clash:
        shown = ", ".join(f"--{k} {current.get(k)!r} (saved {saved[k]!r})" for k in clash)
        raise UserError(f"--resume: {shown} would change the model, data or tokenizer of {source}; "
                        f"drop these flags (only {', '.join('--' + k for k in ('epochs', 'max_steps', 'max_minutes'))} "
                        f"and logging/output flags may change), or start a new run without --resume")
    merged = dict(saved)
    merged.update({k: current[k] for k in explicit if k in may_change and k in current})
    merged["resume"] = True if "resume" in current else merged.get("resume")
    return merged


def add_alias(parser: argparse.ArgumentParser, old: str, new_dest: str, **kwargs) -> None:
    """Accept ``old`` (e.g. ``--model_path``) as a hidden spelling of the flag stored in ``new_dest``."""
    parser.add_argument(old, dest=new_dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
