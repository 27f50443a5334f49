"""Which items a verified run re-scores in float32: under a fixed margin, or under a measured one.

Why measured (`auto`, the default): a bf16 prediction can differ from float32's only where bf16
moved the item's top-two margin by more than that margin. How far bf16 moves margins depends on
the model, rule, task and prompt length (bench/verify_margins.py: largest shift 0.23 on emotion,
0.37 on snli with gemma-3-270m), so a fixed threshold is either loose (0.5 re-scores a quarter to
40% of the items) or unsafe elsewhere. `auto` measures it on the run itself, per language and
process:

1. the CALIBRATION_ITEMS items with the smallest bf16 margins are re-scored; in every later
   language of the same process only CARRIED_CALIBRATION_ITEMS of them are, since the shifts
   measured on the earlier languages (`prior`) already stand behind its threshold, and in the same
   round every item under SAFETY x `prior` (step 2 can only re-score them: the threshold never
   falls below it);
2. the threshold becomes SAFETY x the largest shift measured on any re-scored item (of this
   language, or of an earlier one: `prior`), where an item's shift is the largest change bf16 made
   to any difference of two class scores (in log-probability), which bounds the change of its
   top-two margin;
3. every item whose bf16 margin is at most the threshold is re-scored, and step 2 runs again with
   their shifts (the threshold only widens) until no new item falls under it.

Why the smallest margins: the near ties are re-scored whatever the sample shows, so a sample of them
costs little float32 work of its own, and a larger one measures more shifts for the same work. Until
2026-12-06 the sample was the first 8 (later languages 2) items by index, mostly far from a tie and
re-scored for the measurement alone. `python bench/verify_rounds.py FP32_DIR BF16_DIR` replays both on
an fp32 and an unverified bf16 evaluation of the same items (gemma-3-270m, prefix, 5 languages, on
an AVX512-BF16 EPYC): emotion (600 items) 63 re-scored instead of 76, snli (300) 156 instead of 159,
paws (300; not used to choose 16 and 4) 90 instead of 93. No kept item's prediction differed from
float32's under either, and the largest ratio of a kept item's true shift to its margin was the same
or lower (0.48, 0.34, 0.28 against 0.48, 0.34, 0.39). With 8 and 2 of the smallest (`--sizes 8,2`),
snli's came to 0.78: a small sample of near ties can miss the larger shifts, as a small sample by
index can (`--orders 200`: 8 and 2 by index under 200 random item orders, 0.78 at the 90th
percentile). Choosing by the bf16 margin is not choosing by the size of the shift where the two are
unrelated (r(shift, bf16 margin) 0.02 on emotion, 0.01 on snli); on paws larger margins came with
larger shifts (r = 0.36), so the near ties then measure the shifts of the items nearest the
threshold, the ones a shift could flip.

Why carry shifts across languages: the calibration sample was once 8 items (by index) of every
language, 40 of the 84 items a 5-language run re-scored (gemma-3-270m, emotion, 120 items per
language), and more of a short language's; how far bf16 moves a margin is a property of the model
and rule far more than of the language (largest shifts 0.06-0.09 over the five). With samples of
near ties, calibrating every language alone costs about as much (the replays above: 86, 130 and 105
re-scored against 63, 156 and 90 carried); carrying stays because each later language's threshold
then stands on every shift measured before it.

What can then be stated, and results.json states per language: every item kept in bf16 has a bf16
margin larger than SAFETY times every shift measured on the items re-scored (its calibration
sample, all the near ties, and those of the languages before it), so its prediction differs from
float32's only if bf16 moved its margin more than SAFETY times as much as it moved any of those.
The rounds are a function of the bf16 rows and the float32 rows found (this language's and the
earlier ones'), so a resumed run re-scores the same items in the same batches.
"""

from __future__ import annotations

import math

from polyalign.core.errors import PolyalignError

AUTO = "auto"
SAFETY = 2.0
CALIBRATION_ITEMS = 16
CARRIED_CALIBRATION_ITEMS = 4


def _log(p: float) -> float:
    return math.log(p) if p > 0 else -math.inf


def score_shift(fast: dict[str, float], full: dict[str, float], rule: str) -> float:
    """The largest change, fast dtype vs float32, of any difference of two class scores in
    log-probability (inf where a score is not finite in one of them but the other differs)."""
    a = {c: _log(v) if rule == "prefix" else v for c, v in fast.items()}
    b = {c: _log(v) if rule == "prefix" else v for c, v in full.items()}
    worst = 0.0
    for x in a:
        for y in a:
            if x < y:
                change = abs((a[x] - a[y]) - (b[x] - b[y]))
                worst = max(worst, math.inf if math.isnan(change) else change)
    return worst


def check_threshold(threshold: float | str) -> float | str:
    """`auto` or a margin >= 0 (one line otherwise)."""
    if threshold == AUTO:
        return AUTO
    if not isinstance(threshold, (int, float)) or not threshold >= 0:
        raise PolyalignError(f"verify threshold must be 'auto' or a margin >= 0 (got {threshold})")
    return float(threshold)


def verify_settings(verify: bool | float | str | None) -> dict:
    """EvalConfig's verify and verify_threshold from an experiment's `verify`: true (the default:
    auto), false, a log-probability margin, or auto. A bad value is one line."""
    if verify is None or verify is True:
        return {}
    if verify is False:
        return {"verify": False}
    return {"verify": True, "verify_threshold": check_threshold(verify)}


def plan_rounds(
    indices: list[int],
    margins: dict[int, float],
    shifts: dict[int, float],
    threshold: float | str,
    prior: float | None = None,
) -> tuple[list[list[int]], float | None]:
    """(the rounds of items to re-score, the threshold reached; None while a round is unfinished).

    `indices`: one process's items of a language; `margins`: their bf16 margins; `shifts`: the
    measured shift of each item re-scored so far; `prior`: the largest shift re-scoring measured on
    this process's earlier languages (None: this is its first). A fixed threshold is one round;
    `auto` grows rounds as the module docstring says. The last round is the one to score when
    incomplete.
    """
    chosen = sorted(indices)
    if threshold != AUTO:
        limit = float(threshold)
        under = [i for i in chosen if not margins[i] > limit]
        return [under], (limit if all(i in shifts for i in under) else None)
    rounds = [first_round(chosen, margins, prior)]
    taken = set(rounds[0])
    while True:
        if any(i not in shifts for i in rounds[-1]):
            return rounds, None
        reached = SAFETY * max([prior or 0.0, *(shifts[i] for i in taken)])
        more = [i for i in chosen if i not in taken and not margins[i] > reached]
        if not more:
            return rounds, reached
        rounds.append(more)
        taken.update(more)


def calibration_sample(chosen: list[int], margins: dict[int, float], size: int) -> set[int]:
    """The `size` items with the smallest bf16 margins (NaN first: it is re-scored anyway), ties by index."""
    return set(sorted(chosen, key=lambda i: (-math.inf if math.isnan(margins[i]) else margins[i], i))[:size])


def first_round(chosen: list[int], margins: dict[int, float], prior: float | None) -> list[int]:
    """The calibration sample; in a later language also every item under SAFETY x `prior`, which the
    threshold (never below it) re-scores anyway: one float32 round fewer (each round re-reads the
    float32 weights), the same items re-scored and the same threshold reached."""
    size = CALIBRATION_ITEMS if prior is None else CARRIED_CALIBRATION_ITEMS
    sample = calibration_sample(chosen, margins, size)
    return [i for i in chosen if i in sample or (prior is not None and not margins[i] > SAFETY * prior)]


def language_guarantee(rows: list[dict], margin_of) -> dict:
    """What a language's samples show about its re-scoring: the largest measured shift, the
    smallest bf16 margin kept, and their ratio (the safety actually achieved)."""
    shifts = [r["fast"]["shift"] for r in rows if "fast" in r and "shift" in r["fast"]]
    kept = [margin_of(r["scores"]) for r in rows if "fast" not in r]
    largest = max(shifts, default=0.0)
    smallest = min(kept, default=math.inf)
    ratio = smallest / largest if largest > 0 else math.inf
    return {"max_shift": largest, "smallest_kept_margin": smallest, "kept_margin_over_max_shift": ratio}


def describe_auto() -> str:
    """The rule in one sentence, for results.json."""
    return (
        f"re-score the {CALIBRATION_ITEMS} items with the smallest bf16 margins in a process's first language "
        f"and the {CARRIED_CALIBRATION_ITEMS} smallest in each later one, then every item whose bf16 margin is at "
        f"most {SAFETY:g}x the largest bf16-vs-float32 shift of two class scores measured on any re-scored item "
        "of that language or an earlier one, until no more items qualify"
    )
