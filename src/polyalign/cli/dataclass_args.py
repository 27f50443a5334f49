"""One builder from a config dataclass to a command's options, and to its help.

Why a module of its own: a config's fields declare their defaults, help and choices once
(polyalign.core.config.option); every command turns them into argparse options here, and reads them
back with polyalign.core.config.from_attributes, so no command copies a config field by field.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any


def add_dataclass_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    only: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    defaults: dict[str, Any] | None = None,
) -> None:
    """`--field-name` for each field of `cls` (those in `only`, less `skip`), its default, help and type
    from the field; `defaults` replaces a field's default on this command."""
    hints, chosen, skipped = typing.get_type_hints(cls), None if only is None else set(only), set(skip)
    for f in dataclasses.fields(cls):
        if (chosen is None or f.name in chosen) and f.name not in skipped:
            options = argument_options(f, hints[f.name])
            if defaults and f.name in defaults:
                options.update(default=defaults[f.name], required=False)
            parser.add_argument("--" + f.name.replace("_", "-"), **options)


def argument_options(f: dataclasses.Field, hint: Any) -> dict[str, Any]:
    """add_argument's keywords for one field: a flag for a bool, --x/--no-x for an optional bool."""
    options: dict[str, Any] = {"help": f.metadata.get("help", "")}
    if f.default is not dataclasses.MISSING:
        options["default"] = f.default
    elif f.default_factory is not dataclasses.MISSING:
        options["default"] = f.default_factory()
    else:
        options["required"] = True
    if "metavar" in f.metadata:
        options["metavar"] = f.metadata["metavar"]
    if "choices" in f.metadata:
        options["choices"] = f.metadata["choices"]
    base = [a for a in typing.get_args(hint) if a is not type(None)] if is_optional(hint) else [hint]
    if base == [bool]:
        options["action"] = argparse.BooleanOptionalAction if is_optional(hint) else "store_true"
    elif "parse" in f.metadata:
        options["type"] = f.metadata["parse"]
    elif len(base) == 1 and base[0] in (int, float):
        options["type"] = base[0]
    elif len(base) == 1 and typing.get_origin(base[0]) is list and typing.get_args(base[0]) == (str,):
        options["type"] = comma_list  # as a `key=value` override reads it (polyalign.core.config)
    return options


def comma_list(text: str) -> list[str]:
    """'zh, ja' -> ['zh', 'ja']."""
    return [part.strip() for part in text.split(",") if part.strip()]


def is_optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def fields_help(cls: type) -> str:
    """Every field of `cls` as `name (default): help`, one a line: a command's help epilog."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown = "null" if default is None else ",".join(default) if isinstance(default, list) else default
        shown = str(shown).lower() if isinstance(shown, bool) else shown
        lines.append(f"  {f.name} ({shown}): {f.metadata.get('help', '')}")
    return "\n".join(lines)
