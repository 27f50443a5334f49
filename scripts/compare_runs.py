"""Side-by-side base vs aligned table from two `polyalign eval` output folders (per-item samples).

usage: python scripts/compare_runs.py BASE_DIR ALIGNED_DIR --seen zh,es,en
Prints a Markdown table: accuracy per language, difference, paired-bootstrap p, the average,
and the averages over languages seen and unseen in alignment training.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from polyalign.report import paired_bootstrap
from polyalign.results import read_samples


def correct(run: Path, task: str, lang: str) -> np.ndarray:
    return np.array([r["pred"] == r["gold"] for r in read_samples(run / "samples" / f"{task}_{lang}.jsonl")], float)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base", type=Path)
    parser.add_argument("aligned", type=Path)
    parser.add_argument("--seen", default="zh,es,en")
    args = parser.parse_args()
    seen = set(args.seen.split(","))
    meta = json.loads((args.base / "results.json").read_text())
    task, langs = meta["task"], list(meta["languages"])
    print("| lang | base % | aligned % | delta (pp) | p |\n|---|---|---|---|---|")
    acc = {}
    for lang in langs:
        b, a = correct(args.base, task, lang), correct(args.aligned, task, lang)
        delta, p = paired_bootstrap(a, b)
        acc[lang] = (b.mean(), a.mean())
        mark = " (seen)" if lang in seen else ""
        print(f"| {lang}{mark} | {100 * b.mean():.1f} | {100 * a.mean():.1f} | {100 * delta:+.1f} | {p:.3f} |")
    for name, group in (("average", langs), ("average, seen", [l for l in langs if l in seen]),
                        ("average, unseen", [l for l in langs if l not in seen])):
        b = np.mean([acc[l][0] for l in group])
        a = np.mean([acc[l][1] for l in group])
        print(f"| **{name}** ({len(group)}) | {100 * b:.1f} | {100 * a:.1f} | {100 * (a - b):+.1f} | |")


if __name__ == "__main__":
    main()
