"""`polyalign configs`: list the packaged experiment configs, or copy one out for editing
(polyalign.study.experiment_files finds and copies them)."""

from __future__ import annotations

import argparse

from polyalign.core.errors import PolyalignError
from polyalign.study.experiment_files import config_description, copy_config, packaged_names, packaged_root


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
        print(f"{name:<{width}}  {config_description(packaged_root() / f'{name}.yaml')}".rstrip())
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
