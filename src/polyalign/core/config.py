"""Typed dataclass configs from YAML files and `key=value` overrides.

One loader for every config (training recipes, experiment files, task files): values are
checked against the dataclass's type hints, nested dataclasses are built recursively, and any
unknown key, missing key or ill-typed value is a one-line error naming where it was. A field
declares its help and choices once (`option`), for YAML and command line alike.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from polyalign.core.errors import PolyalignError
from polyalign.core.files import read_text

T = TypeVar("T")
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class _Loader(yaml.SafeLoader):
    """Safe YAML without YAML 1.1's base-60 numbers: `items: 10:50` is the text "10:50", not 650."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_BASE_60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
for _first in "+-0123456789":  # checked before the int and float resolvers: first match wins
    _Loader.yaml_implicit_resolvers.setdefault(_first, []).insert(0, ("tag:yaml.org,2002:str", _BASE_60))


def load_yaml(text: str):
    """YAML text as Python values, with `START:STOP` ranges kept as text."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: safe


NONE = ("none", "null", "~", "")


def _scalar(value, hint, where: str):
    """A bool/int/float/str value; numbers and booleans may come as text (`key=value`)."""
    text = value.strip().lower() if isinstance(value, str) else None
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if text in TRUE or text in FALSE:
                return text in TRUE
        elif hint is int and not isinstance(value, bool):
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if text is not None:
                number = float(text)
                if number.is_integer():
                    return int(number)
        elif hint is float and not isinstance(value, bool):
            if isinstance(value, (int, float)):
                return float(value)
            if text is not None:
                return float(text)
        elif hint is str and isinstance(value, str):
            return value
        elif hint not in (bool, int, float, str):
            return value  # a type without a rule (e.g. typing.Any)
    except ValueError:
        pass
    raise PolyalignError(f"{where}: {value!r} is not a valid {getattr(hint, '__name__', hint)}")


def coerce(value, hint, where: str):
    """`value` (from YAML or an override) converted to and checked against a type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in NONE)):
            return None
        error: PolyalignError | None = None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, where)
            except PolyalignError as exc:
                error = error or exc
        raise error or PolyalignError(f"{where}: no type to check it against")
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: a list, kept immutable
        return tuple(coerce(value, list[args[0]], where))  # type: ignore[valid-type]
    if origin is list:
        if isinstance(value, str) and args[0] is str:
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, dict) and dataclasses.is_dataclass(args[0]):
            value = [value]
        if not isinstance(value, list):
            raise PolyalignError(f"{where}: expected a list, got {value!r}")
        return [coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise PolyalignError(f"{where}: expected a mapping of key: value, got {value!r}")
        return {str(k): coerce(v, args[1], f"{where}.{k}") if args else v for k, v in value.items()}
    return _scalar(value, hint, where)


def check_keys(cls, raw, where: str) -> None:
    """`raw` is a mapping whose keys are all fields of dataclass `cls`."""
    if not isinstance(raw, dict):
        raise PolyalignError(f"{where}: expected a mapping of key: value, got {raw!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(map(str, set(raw) - set(known)))
    if unknown:
        raise PolyalignError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")


def typed_values(cls, raw, where: str) -> dict:
    """`raw`'s values typed by dataclass `cls`'s hints, not yet checked together (unknown keys are errors)."""
    check_keys(cls, raw, where)
    hints = typing.get_type_hints(cls)
    return {k: coerce(v, hints[k], f"{where}.{k}") for k, v in raw.items()}


def check_required(cls, raw: dict, where: str) -> None:
    """`raw` has every field of dataclass `cls` that has no default."""
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise PolyalignError(f"{where}: missing required key(s) {', '.join(missing)}")


def build(cls, raw, where: str):
    """An instance of dataclass `cls` from a mapping: unknown and missing keys are errors."""
    check_keys(cls, raw, where)
    check_required(cls, raw, where)
    return cls(**typed_values(cls, raw, where))


def option(default: Any = dataclasses.MISSING, help: str = "", choices: tuple | None = None, **cli: Any) -> Any:
    """A dataclass field carrying its help, choices and command-line hints (`parse`, `metavar`) as
    metadata, so a config's fields declare once what a YAML key or a command's option means."""
    metadata = {"help": help, **({"choices": choices} if choices else {}), **cli}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def from_attributes(cls: type[T], source: object, **given: Any) -> T:
    """Dataclass `cls` from `given`, else `source`'s attributes of the same names (a parsed command
    line, an experiment), else its defaults: the one place such a config is copied from another."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    values = {name: getattr(source, name) for name in names if hasattr(source, name)}
    return cls(**{**values, **given})


def check_choices(config: object) -> None:
    """Each field whose metadata lists choices holds one of them (or None)."""
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value, choices = getattr(config, f.name), f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise PolyalignError(f"{f.name} must be {choice_text(choices)} (got '{value}')")


def choice_text(choices) -> str:
    """'a or b', or 'one of a, b, c': how an error names the accepted values."""
    names = [str(c) for c in choices]
    return " or ".join(names) if len(names) <= 2 else f"one of {', '.join(names)}"


def read_mapping(path: Path, what: str) -> dict:
    """A YAML file that must hold a mapping (an empty file is an empty one)."""
    text = read_text(path, what)
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        raise PolyalignError(f"{path}: malformed YAML: {str(exc).splitlines()[0]}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise PolyalignError(f"{path}: a {what} file must be a mapping of key: value")
    return raw


def apply_overrides(raw: dict, overrides) -> dict:
    """`key=value` items (dotted keys, list indices as numbers, values parsed as YAML) into `raw`."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise PolyalignError(f"override '{item}' is not key=value")
        try:
            value = load_yaml(text)
        except yaml.YAMLError:
            raise PolyalignError(f"override '{item}': value is not valid YAML") from None
        node, parts = raw, key.strip().split(".")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not (part.isdigit() and int(part) < len(node)):
                    raise PolyalignError(f"override '{key}': '{part}' is not an index of a {len(node)}-item list")
                part = int(part)
            elif not isinstance(node, dict):
                raise PolyalignError(f"override '{key}': '{parts[depth - 1]}' holds no keys")
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
    return raw
