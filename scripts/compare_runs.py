"""Base vs aligned tables from two `polyalign eval` output folders, through the report's own tables.

usage: python scripts/compare_runs.py BASE_DIR ALIGNED_DIR --seen zh,es,en
Prints Markdown: accuracy per language, languages seen vs unseen in alignment training, and the
per-language paired tests (polyalign.reports.tables; a `polyalign run` folder gets them all from
`polyalign report`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from polyalign.evaluation.results import read_samples
from polyalign.reports.formats import render_md
from polyalign.reports.paired import significance_table
from polyalign.reports.run_data import RunData
from polyalign.reports.tables import per_language_table, seen_unseen_table


def eval_run(base: Path, aligned: Path, seen: list[str]) -> RunData:
    """The two folders as a run of one model with settings 'base' and 'aligned'."""
    meta = json.loads((base / "results.json").read_text(encoding="utf-8"))
    condition = (meta["task"], meta["mode"], meta["scoring"])
    correct: dict = {}
    labels: dict = {}
    for setting, folder in (("base", base), ("aligned", aligned)):
        for lang in meta["languages"]:
            rows = read_samples(folder / "samples" / f"{meta['task']}_{lang}.jsonl")
            key = (meta["model"], setting, *condition)
            correct.setdefault(key, {})[lang] = {
                r["index"]: r["pred"] is not None and r["pred"] == r["gold"] for r in rows
            }
            labels.setdefault(key, {})[lang] = {r["index"]: (r["gold"], r["pred"]) for r in rows}
    experiment = {"models": [meta["model"]], "alignment": [{"name": "aligned", "sources": seen, "target": seen[-1]}]}
    return RunData(base, experiment, [], correct, labels)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base", type=Path)
    parser.add_argument("aligned", type=Path)
    parser.add_argument("--seen", default="zh,es,en", help="languages of the alignment pairs (the last: target)")
    args = parser.parse_args()
    run = eval_run(args.base, args.aligned, args.seen.split(","))
    condition = run.conditions()[0]
    tables = [per_language_table(run, condition, run.seen("aligned")), seen_unseen_table(run), significance_table(run)]
    print(render_md(f"{args.base} vs {args.aligned}", [], tables, [], ""))


if __name__ == "__main__":
    main()
