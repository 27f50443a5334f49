"""`polyalign report RUN_DIR`: its command line (polyalign.reports.report writes the file)."""

from __future__ import annotations

import argparse

from polyalign.reports.report import FORMATS, write_report


def cmd_report(args: argparse.Namespace) -> int:
    print(f"report: {write_report(args.run_dir, args.format, args.out)}")
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register `polyalign report` on the top-level subparsers."""
    p = subparsers.add_parser("report", help="tables, significance tests and figures of a `polyalign run` folder")
    p.add_argument("run_dir", help="the folder of a `polyalign run` (holds results.sqlite)")
    p.add_argument("--format", choices=FORMATS, default="md", help="md, html (one self-contained file), csv, latex")
    p.add_argument("--out", help="output file (default: RUN_DIR/report.<ext>)")
    p.set_defaults(func=cmd_report, out_is_file=True)
    return p
