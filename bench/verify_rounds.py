"""How many items a verified run re-scores, and whether any kept item changes, under both calibration policies.

Why: the measured (`auto`) threshold (polyalign.evaluation.verify_plan) re-scores a calibration
sample and every near tie. Carrying the shifts measured on earlier languages lets later languages
calibrate on CARRIED_CALIBRATION_ITEMS instead of CALIBRATION_ITEMS, but raises their thresholds to
the largest shift seen so far. This replays the rounds offline on an fp32 and an unverified bf16
evaluation of the same items (every item's true shift is known there) and prints, per policy and
language, the items re-scored, the threshold reached, the kept items whose bf16 prediction
differs from fp32's (what verification must never leave), and how near a kept item came to it: the
largest ratio of a kept item's true shift to its bf16 margin (1 or more could change it).

A third policy replays the carried one as it was until 2026-12-06: calibration samples of the first 8
and 2 items by index instead of the 16 and 4 smallest bf16 margins, what that sample cost.

Then whether choosing near ties chooses by shift: the correlation of the true shift with the bf16
margin, and the mean shift of the tenth of the items with the smallest margins against the rest.

With --sizes 8,2 the current policies take samples of those sizes (the smallest margins still).

With --orders N it replays that old policy under N random item orders (seeds 0..N-1) and prints the
range of items re-scored and of the closest kept item: a sample by index is one draw of many.

With --calibrated it also counts, per language, the batch-calibrated predictions of the verified
scores that differ from fp32's (verification covers raw predictions only), and replays a wider rule
that also re-scores every kept item whose log-odds lie within the threshold of the calibrated
boundary (two classes), until none is left: how many items that costs, and what it still misses.

    polyalign eval ... --dtype float32 --out FP32_DIR ; polyalign eval ... --dtype bfloat16 --no-verify --out BF16_DIR
    python bench/verify_rounds.py FP32_DIR BF16_DIR [--rule prefix] [--sizes 8,2] [--orders 200]
        [--calibrated]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from polyalign.evaluation import verify_plan
from polyalign.evaluation.calibration import batch_calibrate, label_probabilities, log_odds
from polyalign.evaluation.results import read_samples
from polyalign.evaluation.verify import margin
from polyalign.evaluation.verify_plan import plan_rounds, score_shift

BEFORE = "carried, first 8 / 2 by index"  # the policy until 2026-12-06
POLICIES = ("per language", "carried", BEFORE)


def by_index(chosen: list[int], margins: dict[int, float], size: int) -> set[int]:
    """The calibration sample before 2026-12-06: the first `size` items by index."""
    return set(sorted(chosen)[:size])


def in_random_order(seed: int) -> Callable[[list[int], dict[int, float], int], set[int]]:
    """A sample like `by_index`, with the items in a random order (the same order for every size)."""
    rng, rank = random.Random(seed), {}

    def sample(chosen: list[int], margins: dict[int, float], size: int) -> set[int]:
        return set(sorted(chosen, key=lambda i: rank.setdefault(i, rng.random()))[:size])

    return sample


def use_sample_before(sample: Callable | None = None) -> None:
    """Patch verify_plan to BEFORE's calibration sample: the first 8 and 2 items by index (or
    `sample`'s order). bench/precision_processes.py runs its `bf16-verified-before` variant so."""
    verify_plan.calibration_sample = sample or by_index
    verify_plan.CALIBRATION_ITEMS, verify_plan.CARRIED_CALIBRATION_ITEMS = 8, 2


@contextmanager
def policy_sample(policy: str, sample: Callable | None = None):
    """verify_plan's calibration sample as `policy` takes it (patched for BEFORE, with `sample` in
    place of `by_index` where given; restored after)."""
    saved = verify_plan.calibration_sample, verify_plan.CALIBRATION_ITEMS, verify_plan.CARRIED_CALIBRATION_ITEMS
    if policy == BEFORE:
        use_sample_before(sample)
    try:
        yield
    finally:
        verify_plan.calibration_sample, verify_plan.CALIBRATION_ITEMS, verify_plan.CARRIED_CALIBRATION_ITEMS = saved


def samples(folder: Path) -> dict[str, dict[int, dict]]:
    """language -> item index -> sample row, from an evaluation folder's samples/*.jsonl."""
    found = {}
    for path in sorted((folder / "samples").glob("*.jsonl")):
        lang = path.stem.rsplit("_", 1)[1]
        found[lang] = {row["index"]: row for row in read_samples(path)}
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
    kept = [i for i in indices if i not in rescored]
    changed = [i for i in kept if fast[i]["pred"] != full[i]["pred"]]
    return {
        "rescored": len(rescored),
        "set": rescored,
        "threshold": reached,
        "largest": max(shifts.values()),
        "changed": changed,
        # how near a kept item came to changing: its true shift over its bf16 margin (1 or more: it can)
        "closest": max((true_shift[i] / margins[i] for i in kept if margins[i] > 0), default=0.0),
    }


def calibrated_differences(fast: dict[int, dict], full: dict[int, dict], rescored: set[int], rule: str) -> int:
    """Items whose batch-calibrated prediction from the verified scores (float32 where re-scored)
    differs from the float32 run's."""
    indices = sorted(fast)
    classes = list(fast[indices[0]]["scores"])
    mixed = [(full[i] if i in rescored else fast[i])["scores"] for i in indices]
    ours = batch_calibrate(mixed, rule, classes)
    theirs = batch_calibrate([full[i]["scores"] for i in indices], rule, classes)
    return sum(a != b for a, b in zip(ours, theirs))


def near_calibrated_boundary(
    fast: dict[int, dict], full: dict[int, dict], rescored: set[int], rule: str, threshold: float
) -> set[int]:
    """`rescored` widened, round by round, by every kept item whose log-odds lie within `threshold`
    (widened by the shifts measured) of the calibrated boundary: the logit of the mean probability
    of the first class over the verified scores (two classes only)."""
    indices = sorted(fast)
    classes = list(fast[indices[0]]["scores"])
    taken = set(rescored)
    while True:
        limit = max(threshold, 2 * max(score_shift(fast[i]["scores"], full[i]["scores"], rule) for i in taken))
        scores = {i: (full[i] if i in taken else fast[i])["scores"] for i in indices}
        prior = sum(label_probabilities(scores[i], rule, classes)[0] for i in indices) / len(indices)
        boundary = math.log(prior / (1 - prior))
        near = {i for i in indices if i not in taken and abs(log_odds(scores[i], rule, classes) - boundary) <= limit}
        if not near:
            return taken
        taken |= near


def calibrated_table(fast: dict, full: dict, langs: list[str], rule: str) -> None:
    """Per language (carried policy): calibrated differences as verified now, and under the wider rule."""
    if any(len(next(iter(fast[lang].values()))["scores"]) != 2 for lang in langs):
        print("\n--calibrated: the wider rule is for two-class tasks only")
        return
    print("\n| language | re-scored | calibrated differing | re-scored, wider rule | calibrated differing |")
    print("|---|---:|---:|---:|---:|")
    prior, totals = None, [0, 0, 0, 0]
    for lang in langs:
        got = replay(fast[lang], full[lang], rule, prior)
        prior = max(prior or 0.0, got["largest"])
        wider = near_calibrated_boundary(fast[lang], full[lang], got["set"], rule, got["threshold"])
        cells = [
            len(got["set"]),
            calibrated_differences(fast[lang], full[lang], got["set"], rule),
            len(wider),
            calibrated_differences(fast[lang], full[lang], wider, rule),
        ]
        totals = [a + b for a, b in zip(totals, cells)]
        print(f"| {lang} | " + " | ".join(map(str, cells)) + " |")
    print("| all | " + " | ".join(f"**{t}**" for t in totals) + " |")


def replay_languages(
    fast: dict, full: dict, langs: list[str], rule: str, policy: str, sample=None, lines: list[str] | None = None
) -> dict:
    """One policy over the languages in order: items re-scored, kept items changed, the closest kept
    item; with `lines`, a table row per language appended to it."""
    prior, total, changed, closest = None, 0, 0, 0.0
    for lang in langs:
        with policy_sample(policy, sample):
            got = replay(fast[lang], full[lang], rule, prior if policy.startswith("carried") else None)
        prior = max(prior or 0.0, got["largest"])
        total, changed = total + got["rescored"], changed + len(got["changed"])
        closest = max(closest, got["closest"])
        if lines is not None:
            cells = [policy, lang, len(fast[lang]), got["rescored"], f"{got['threshold']:.3f}", len(got["changed"])]
            lines.append("| " + " | ".join(map(str, cells)) + f" | {got['closest']:.2f} |")
    return {"rescored": total, "changed": changed, "closest": closest}


def shift_against_margin(fast: dict, full: dict, langs: list[str], rule: str) -> str:
    """Whether choosing near ties chooses by shift: Pearson r of the true shift against the bf16
    margin over every item with a finite margin, and the mean shift of the tenth with the smallest."""
    pairs = [
        (margin(fast[lang][i]["scores"], rule), score_shift(fast[lang][i]["scores"], full[lang][i]["scores"], rule))
        for lang in langs
        for i in fast[lang]
    ]
    pairs = sorted((m, s) for m, s in pairs if math.isfinite(m) and math.isfinite(s))
    tenth = max(1, len(pairs) // 10)
    near, rest = [s for _, s in pairs[:tenth]], [s for _, s in pairs[tenth:]]
    r = statistics.correlation([m for m, _ in pairs], [s for _, s in pairs])
    return (
        f"r(shift, bf16 margin) = {r:.2f} over {len(pairs)} items; mean shift {statistics.mean(near):.3f} in the "
        f"tenth with the smallest margins, {statistics.mean(rest):.3f} in the rest"
    )


def orders_summary(fast: dict, full: dict, langs: list[str], rule: str, orders: int) -> None:
    """BEFORE's sample by index is one draw: the same replay under `orders` random item orders."""
    runs = [replay_languages(fast, full, langs, rule, BEFORE, in_random_order(seed)) for seed in range(orders)]
    counts = sorted(r["rescored"] for r in runs)
    closest = sorted(r["closest"] for r in runs)
    print(
        f"\n{BEFORE}, {orders} random item orders: re-scored {counts[0]}-{counts[-1]} "
        f"(median {statistics.median(counts):g}); closest kept median {statistics.median(closest):.2f}, "
        f"90th percentile {closest[int(0.9 * (orders - 1))]:.2f}, largest {closest[-1]:.2f}; "
        f"kept but changed at most {max(r['changed'] for r in runs)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32_dir", type=Path)
    parser.add_argument("bf16_dir", type=Path)
    parser.add_argument("--rule", default="prefix")
    parser.add_argument("--langs", help="the order the run verified them in (default: results.json's)")
    parser.add_argument("--calibrated", action="store_true", help="also the batch-calibrated predictions")
    parser.add_argument("--orders", type=int, default=0, help="also the old policy under N random item orders")
    parser.add_argument("--sizes", help="FIRST,LATER: other sample sizes for the current policies (default: 16,4)")
    args = parser.parse_args(argv)
    full, fast = samples(args.fp32_dir), samples(args.bf16_dir)
    order = (
        args.langs.split(",")
        if args.langs
        else list(json.loads((args.bf16_dir / "results.json").read_text())["languages"])
    )
    langs = [lang for lang in order if lang in fast and lang in full]
    if args.sizes:
        verify_plan.CALIBRATION_ITEMS, verify_plan.CARRIED_CALIBRATION_ITEMS = map(int, args.sizes.split(","))
    print("| policy | language | items | re-scored | threshold | kept but changed | closest kept |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for policy in POLICIES:
        lines: list[str] = []
        got = replay_languages(fast, full, langs, args.rule, policy, lines=lines)
        print("\n".join(lines))
        cells = f"**{got['rescored']}** | | **{got['changed']}** | {got['closest']:.2f}"
        print(f"| {policy} | all | {sum(map(len, fast.values()))} | {cells} |")
    print("\n" + shift_against_margin(fast, full, langs, args.rule))
    if args.orders:
        orders_summary(fast, full, langs, args.rule, args.orders)
    if args.calibrated:
        calibrated_table(fast, full, langs, args.rule)
    return 0


if __name__ == "__main__":
    sys.exit(main())
