"""`polyalign claims RUN_DIR`: its command line (polyalign.reports.claims_report writes the verdicts)."""

from __future__ import annotations

import argparse

from polyalign.reports.claims_report import write_claims


def cmd_claims(args: argparse.Namespace) -> int:
    out = write_claims(args.run_dir, args.out, echo=print)
    print(f"claims: {out}")
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register `polyalign claims` on the top-level subparsers."""
    p = subparsers.add_parser("claims", help="one verdict per paper claim (the run's claims block) as markdown")
    p.add_argument("run_dir", help="the folder of a `polyalign run` whose experiment declares claims")
    p.add_argument("--out", help="output file (default: RUN_DIR/CLAIMS.md; docs/CLAIMS.md for the study)")
    p.set_defaults(func=cmd_claims, out_is_file=True)
    return p
