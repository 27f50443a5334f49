"""`polyalign train` and `polyalign merge`: their command line (polyalign.alignment: training, merge)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from polyalign.alignment.merge import merge
from polyalign.alignment.train_config import TrainConfig, load_config
from polyalign.alignment.training import train
from polyalign.cli.dataclass_args import fields_help
from polyalign.core.declarations import DEFAULT_MODEL
from polyalign.core.paths import check_replaceable


def cmd_train(args: argparse.Namespace) -> int:
    check_replaceable(args.out, args.overwrite)
    cfg = load_config(args.config, args.overrides)
    summary = train(args.model, args.data, args.out, cfg, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps(summary, indent=2))
    print(f"adapter: {Path(args.out) / 'adapter'}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    print(f"merged model: {merge(args.model, args.adapter, args.out, args.overwrite, args.trust_remote_code)}")
    return 0


def add_cli(subparsers) -> None:
    """Register `polyalign train` and `polyalign merge` on the top-level subparsers."""
    p = subparsers.add_parser(
        "train",
        help="LoRA question-alignment training on `data build` pairs",
        epilog="config keys (--config YAML or key=value), with the paper's values:\n" + fields_help(TrainConfig),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help="HF id, local folder, or packaged alias")
    p.add_argument("--data", required=True, help="pairs JSONL from `polyalign data build`")
    p.add_argument("--out", required=True, help="run folder (adapter/, config.yaml, log.jsonl, loss.png)")
    p.add_argument("--config", help="YAML with any TrainConfig keys (defaults: the paper's recipe)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a folder that holds a different run")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. learning_rate=1e-4")
    p.set_defaults(func=cmd_train)

    what = "fold a LoRA adapter into its base model and save the result as a plain HF folder (safetensors)"
    p = subparsers.add_parser(
        "merge",
        help=what,
        description=f"{what}: it loads and evaluates like any model, and carries the adapter's provenance, "
        "so the leak guard still knows which items it was trained on.",
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"the base model: alias, folder or hub id ({DEFAULT_MODEL})")
    p.add_argument("--adapter", required=True, help="the adapter folder (RUN/adapter of `polyalign train`)")
    p.add_argument("--out", required=True, help="the folder to write the merged model into")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier merge (never another kind of folder)",
    )
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off)")
    p.set_defaults(func=cmd_merge)
