"""Typed configs: dataclasses that become CLI flags and load from / save to YAML.

Every field of a config dataclass is a flag (`--field-name value`); nested dataclasses are flattened with
their own names (no prefixes), so a field name must be unique across one command's configs. Unknown keys are
errors that name the key and list the valid ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from neuralrender.errors import ConfigError


def _base_type(tp):
    """Unwrap Optional[X] / X | None -> (X, optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _parse_bool(s: str) -> bool:
    v = str(s).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {s!r}")


def coerce(value: Any, tp, key: str):
    """Convert a YAML / CLI value to the field's type, or raise ConfigError naming the key."""
    base, optional = _base_type(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key '{key}' may not be null")
    origin = typing.get_origin(base)
    try:
        if origin is typing.Literal:
            choices = typing.get_args(base)
            if value not in choices:
                raise ConfigError(f"config key '{key}': {value!r} is not one of {list(choices)}")
            return value
        if base is bool:
            return value if isinstance(value, bool) else _parse_bool(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
        if origin in (tuple, list):
            args = typing.get_args(base)
            items = value
            if isinstance(value, str):
                items = [v for v in value.replace(",", " ").split() if v]
            elem = args[0] if args else str
            out = [coerce(v, elem, key) for v in items]
            if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(out):
                raise ConfigError(f"config key '{key}' needs {len(args)} values, got {len(out)}")
            return tuple(out) if origin is tuple else out
        if origin is dict or base is dict:
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except ConfigError:
        raise
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        raise ConfigError(f"config key '{key}': cannot read {value!r} as {getattr(base, '__name__', base)}") from None
    return value


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def from_dict(cls, data: dict | None, where: str = "config"):
    """Build a dataclass from a dict, strictly: unknown keys name themselves and the valid ones."""
    data = dict(data or {})
    hints = _hints(cls)
    valid = field_names(cls)
    unknown = [k for k in data if k not in valid]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, valid, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{where}: unknown key '{k}'{hint}; valid keys: {', '.join(valid)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                kwargs[f.name] = from_dict(tp, data[f.name], f"{where}.{f.name}")
            else:
                kwargs[f.name] = coerce(data[f.name], tp, f.name)
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def load_yaml(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def save_yaml(data: dict, path) -> None:
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_args(parser: argparse.ArgumentParser, cls, group_title: str | None = None) -> None:
    """Add one flag per field; defaults are None so that only given flags override YAML / defaults."""
    hints = _hints(cls)
    group = parser.add_argument_group(group_title) if group_title else parser
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        base, _ = _base_type(tp)
        help_text = f.metadata.get("help", "")
        default = None
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        shown = f" (default: {default})" if default not in (None, "") else ""
        kw: dict[str, Any] = dict(default=None, dest=f.name, help=(help_text + shown).strip())
        origin = typing.get_origin(base)
        if base is bool:
            kw.update(nargs="?", const=True, type=_parse_bool, metavar="BOOL")
        elif origin is typing.Literal:
            kw.update(choices=list(typing.get_args(base)))
        elif origin in (tuple, list):
            kw.update(nargs="+")
        elif base in (int, float, str):
            kw.update(type=str, metavar=base.__name__.upper())
        else:
            kw.update(type=str)
        group.add_argument(flag(f.name), **kw)


def overrides_from_args(ns: argparse.Namespace, cls) -> dict:
    return {name: getattr(ns, name) for name in field_names(cls) if getattr(ns, name, None) is not None}
