"""`polyalign paper-side RUN_DIR`: its command line (polyalign.reports.paper_side_report writes the file)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from polyalign.reports.paper_side_report import PaperSideRequest, write_paper_side


def cmd_paper_side(args: argparse.Namespace) -> int:
    request = PaperSideRequest(**{f.name: getattr(args, f.name) for f in fields(PaperSideRequest)})
    print(f"paper-side: {write_paper_side(request)}")
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register `polyalign paper-side` on the top-level subparsers."""
    p = subparsers.add_parser(
        "paper-side", help="the paper's Tables 1, 2 and 8-11 beside a run's results (markdown + figure)"
    )
    p.add_argument(
        "run_dir", help="a `polyalign run` folder with base and SETTING evaluated (e.g. examples/emotion_study)"
    )
    p.add_argument("--out", required=True, help="the markdown file (its figure is written beside it)")
    p.add_argument("--model", help="the run's model (default: its first)")
    p.add_argument("--setting", default="zh-es_en", help="the aligned setting compared with Table 1 (default zh-es_en)")
    p.add_argument("--task", default="emotion")
    p.add_argument("--mode", default="english")
    p.add_argument("--pca", help="a `polyalign pca` output folder holding the base and an aligned model")
    p.add_argument("--pca-base", help="the base model's label in the PCA folder (default: its first)")
    p.add_argument("--pca-aligned", help="the aligned model's label in the PCA folder (default: its second)")
    p.set_defaults(func=cmd_paper_side, out_is_file=True)
    return p
