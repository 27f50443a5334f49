"""How many items a verified run re-scores, and whether any kept item changes, under both calibration policies.

Why: the measured (`auto`) threshold (polyalign.evaluation.verify_plan) re-scores a calibration
sample and every near tie. Carrying the shifts measured on earlier languages lets later languages
calibrate on CARRIED_CALIBRATION_ITEMS instead of CALIBRATION_ITEMS, but raises their thresholds to
the largest shift seen so far. This replays the rounds offline on an fp32 and an unverified bf16
evaluation of the same items (every item's true shift is known there) and prints, per policy and
language, the items re-scored, the threshold reached, and the kept items whose bf16 prediction
differs from fp32's (what verification must never leave).

    polyalign eval ... --dtype float32 --out FP32_DIR ; polyalign eval ... --dtype bfloat16 --no-verify --out BF16_DIR
    python bench/verify_rounds.py FP32_DIR BF16_DIR [--rule prefix]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from polyalign.evaluation.verify import margin
from polyalign.evaluation.verify_plan import plan_rounds, score_shift


def samples(folder: Path) -> dict[str, dict[int, dict]]:
    """language -> item index -> sample row, from an evaluation folder's samples/*.jsonl."""
    found = {}
    for path in sorted((folder / "samples").glob("*.jsonl")):
        lang = path.stem.rsplit("_", 1)[1]
        found[lang] = {row["index"]: row for row in map(json.loads, path.read_text().splitlines())}
    return found


def replay(fast: dict[int, dict], full: dict[int, dict], rule: str, prior: float | None) -> dict:
    """verify_plan's rounds on one language, each re-scored item's shift read from the fp32 run."""
    indices = sorted(fast)
    margins = {i: margin(fast[i]["scores"], rule) for i in indices}
    true_shift = {i: score_shift(fast[i]["scores"], full[i]["scores"], rule) for i in indices}
    shifts: dict[int, float] = {}
    while True:
        rounds, reached = plan_rounds(indices, margins, shifts, "auto", prior)
        if reached is not None:
            break
        shifts.update((i, true_shift[i]) for i in rounds[-1])
    rescored = {i for r in rounds for i in r}
    changed = [i for i in indices if i not in rescored and fast[i]["pred"] != full[i]["pred"]]
    return {"rescored": len(rescored), "threshold": reached, "largest": max(shifts.values()), "changed": changed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32_dir", type=Path)
    parser.add_argument("bf16_dir", type=Path)
    parser.add_argument("--rule", default="prefix")
    parser.add_argument("--langs", help="the order the run verified them in (default: results.json's)")
    args = parser.parse_args(argv)
    full, fast = samples(args.fp32_dir), samples(args.bf16_dir)
    order = (
        args.langs.split(",")
        if args.langs
        else list(json.loads((args.bf16_dir / "results.json").read_text())["languages"])
    )
    langs = [lang for lang in order if lang in fast and lang in full]
    print("| policy | language | items | re-scored | threshold | kept but changed |")
    print("|---|---|---:|---:|---:|---:|")
    for policy in ("per language", "carried"):
        prior, total, changed = None, 0, 0
        for lang in langs:
            got = replay(fast[lang], full[lang], args.rule, prior if policy == "carried" else None)
            prior = max(prior or 0.0, got["largest"])
            total, changed = total + got["rescored"], changed + len(got["changed"])
            cells = [policy, lang, len(fast[lang]), got["rescored"], f"{got['threshold']:.3f}", len(got["changed"])]
            print("| " + " | ".join(map(str, cells)) + " |")
        print(f"| {policy} | all | {sum(map(len, fast.values()))} | **{total}** | | **{changed}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
