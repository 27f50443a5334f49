"""Experiment configs shipped inside the package (polyalign/study/experiments/{paper,examples}/*.yaml).

`polyalign run paper/table3_tasks` finds a packaged config by name; `polyalign configs` lists them
and `polyalign configs copy NAME [DEST]` copies one out for editing. Light on purpose: no torch.
"""

from __future__ import annotations

import argparse
import shutil
from importlib.resources import files
from pathlib import Path

from polyalign.core.errors import PolyalignError


def packaged_root() -> Path:
    return Path(str(files("polyalign.study").joinpath("experiments")))


def packaged_names() -> list[str]:
    """Names like `paper/table3_tasks`, sorted."""
    root = packaged_root()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def packaged_config(name: str) -> Path | None:
    """The packaged file for `paper/table3_tasks` (with or without .yaml), else None."""
    stem = name[:-5] if name.endswith(".yaml") else name
    return packaged_root() / f"{stem}.yaml" if stem in packaged_names() else None


def resolve_experiment(name_or_path: str | Path) -> Path:
    """An existing YAML file (a path wins), else a packaged config by name."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    found = packaged_config(str(name_or_path))
    if found is None:
        raise PolyalignError(
            f"experiment '{name_or_path}' is neither a file nor a packaged config "
            f"(packaged: {', '.join(packaged_names())}; see `polyalign configs`)"
        )
    return found


def copy_config(name: str, dest: str | Path | None = None, overwrite: bool = False) -> Path:
    """Copy a packaged config to DEST (a file, or a folder to put NAME's file in; default: the CWD)."""
    source = packaged_config(name)
    if source is None:
        raise PolyalignError(f"no packaged config '{name}' (packaged: {', '.join(packaged_names())})")
    target = Path(dest).expanduser() if dest else Path(source.name)
    if target.is_dir():
        target = target / source.name
    if target.exists() and not overwrite:
        raise PolyalignError(f"{target} exists; pass --overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def _description(path: Path) -> str:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return ""
    return str(raw.get("description", "")) if isinstance(raw, dict) else ""


def cmd_configs(args: argparse.Namespace) -> int:
    if args.action == "copy":
        if not args.name:
            raise PolyalignError("configs copy: name the packaged config to copy (see `polyalign configs`)")
        target = copy_config(args.name, args.dest, args.overwrite)
        print(f"copied {args.name} to {target}; run it with: polyalign run {target}")
        return 0
    if args.name:
        raise PolyalignError(f"configs: unexpected '{args.name}' (use `polyalign configs copy NAME [DEST]`)")
    names = packaged_names()
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:<{width}}  {_description(packaged_root() / f'{name}.yaml')}".rstrip())
    print("\nrun one with `polyalign run NAME`; copy one out for editing with `polyalign configs copy NAME [DEST]`")
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register `polyalign configs` on the top-level subparsers."""
    p = subparsers.add_parser("configs", help="list the packaged experiment configs, or copy one out for editing")
    p.add_argument("action", nargs="?", choices=["list", "copy"], default="list")
    p.add_argument("name", nargs="?", help="packaged config to copy, e.g. paper/table3_tasks")
    p.add_argument("dest", nargs="?", help="file or folder to copy to (default: NAME's file name in the CWD)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_configs)
    return p
