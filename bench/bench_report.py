"""One home for what the benches share: their common options, how they print their figures and
save them (--out): indented JSON, written whole, and how they read an eval folder they measure."""

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


def folder_config(folder: Path):
    """The EvalConfig an eval folder was run with (its run.json), to rebuild its items."""
    from polyalign.evaluation.eval_config import EvalConfig

    run = json.loads((Path(folder) / "run.json").read_text())["config"]
    keys = ("model", "task", "langs", "mode", "scoring", "limit", "items", "data_dir", "prompts")
    return EvalConfig(**{k: run[k] for k in keys if run.get(k) is not None})


def sample_rows(folder: Path, task: str, lang: str) -> list[dict]:
    """An eval folder's saved rows of one language; a verified run marks those it re-scored `fast`."""
    from polyalign.evaluation.results import read_samples

    return read_samples(Path(folder) / "samples" / f"{task}_{lang}.jsonl")


def rescored_items(folder: Path, task: str, lang: str, items: list) -> list:
    """Those of the prepared `items` the verified eval folder re-scored in float32 in `lang`."""
    chosen = {row["index"] for row in sample_rows(folder, task, lang) if "fast" in row}
    return [item for item in items if item.index in chosen]
