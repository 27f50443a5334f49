"""One home for what the benches share: their common options, and how they print their figures and
save them (--out): indented JSON, written whole."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def parser(description: str, rounds: int) -> argparse.ArgumentParser:
    """A bench's parser with the options the benches share: --model, --rounds, --threads, --out."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="JSON file for the figures")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The parsed options, torch set to the bench's --threads."""
    import torch

    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def emit(report: dict, out: str | None) -> None:
    text = json.dumps(report, indent=1)
    print(text)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")
