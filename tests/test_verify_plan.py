"""The measured (`auto`) verification threshold (polyalign.evaluation.verify_plan): which items are
re-scored, and a real run whose predictions all equal float32's with the stated guarantee."""

import json
import math
import random

import pytest

from helpers import PAPER_PACK
from polyalign.core.errors import PolyalignError
from polyalign.engine.models import load_model
from polyalign.evaluation import verify_plan
from polyalign.evaluation.evaluate import EvalConfig, run_eval
from polyalign.evaluation.verify import margin
from polyalign.evaluation.verify_plan import (
    CALIBRATION_ITEMS,
    CARRIED_CALIBRATION_ITEMS,
    SAFETY,
    plan_rounds,
    score_shift,
    verify_settings,
)


def test_score_shift_is_the_largest_change_of_a_class_difference():
    assert score_shift({"a": -1.0, "b": -2.0, "c": -3.0}, {"a": -1.0, "b": -2.5, "c": -3.0}, "exact") == 0.5
    assert score_shift({"a": 0.5, "b": 0.25}, {"a": 0.5, "b": 0.5}, "prefix") == pytest.approx(math.log(2))
    assert score_shift({"a": float("nan"), "b": 0.1}, {"a": 0.2, "b": 0.1}, "prefix") == math.inf


@pytest.fixture
def samples_of_8_and_2(monkeypatch):
    """The round mechanics below are written for samples of 8 (first language) and 2 (later ones)."""
    monkeypatch.setattr(verify_plan, "CALIBRATION_ITEMS", 8)
    monkeypatch.setattr(verify_plan, "CARRIED_CALIBRATION_ITEMS", 2)


def test_auto_rounds_calibrate_then_widen_until_no_item_qualifies(samples_of_8_and_2):
    indices = list(range(20))
    margins = {i: i / 10 for i in indices}  # item i has bf16 margin i / 10
    rounds, reached = plan_rounds(indices, margins, {}, "auto")
    assert rounds == [list(range(8))] and reached is None  # first: the calibration sample
    shifts = {i: 0.05 for i in range(8)}
    rounds, reached = plan_rounds(indices, margins, shifts, "auto")
    assert reached == pytest.approx(SAFETY * 0.05) and rounds == [list(range(8))]
    shifts[3] = 0.6  # a larger shift widens the threshold to 1.2: items 8..12 join in a second round
    rounds, reached = plan_rounds(indices, margins, shifts, "auto")
    assert rounds[1] == [8, 9, 10, 11, 12] and reached is None
    shifts.update({i: 0.7 for i in rounds[1]})  # and they widen it again, to 1.4: item 13, 14
    rounds, reached = plan_rounds(indices, margins, {**shifts, 13: 0.0, 14: 0.0}, "auto")
    assert rounds[2] == [13, 14] and reached == pytest.approx(1.4)
    fixed, reached = plan_rounds(indices, margins, {}, 0.25)
    assert fixed == [[0, 1, 2]] and reached is None  # fixed: one round, unfinished until scored


def test_a_later_language_calibrates_on_fewer_items_and_keeps_the_carried_shifts(samples_of_8_and_2):
    indices = list(range(20))
    margins = {i: i / 10 for i in indices}
    # the carried shift (0.3) sets a floor of 0.6 under the threshold: items 2..6 join the calibration
    # sample in the first round, whatever this language's sample shows
    rounds, reached = plan_rounds(indices, margins, {}, "auto", prior=0.3)
    assert rounds == [list(range(7))] and reached is None
    assert [0, 1] == rounds[0][:2]
    shifts = dict.fromkeys(range(7), 0.05)  # smaller than the carried 0.3
    rounds, reached = plan_rounds(indices, margins, shifts, "auto", prior=0.3)
    assert len(rounds) == 1 and reached == pytest.approx(SAFETY * 0.3)
    shifts[1] = 0.4  # a larger shift here still widens it: items 7, 8 in a second round
    rounds, reached = plan_rounds(indices, margins, shifts, "auto", prior=0.3)
    assert rounds[1] == [7, 8] and reached is None
    far = {i: 5.0 + i for i in indices}  # no item near the carried floor: only the sample
    assert plan_rounds(indices, far, {}, "auto", prior=0.3) == ([[0, 1]], None)
    assert plan_rounds(indices, margins, {}, 0.25, prior=5.0) == ([[0, 1, 2]], None)  # a fixed margin ignores it


def test_the_calibration_sample_is_the_smallest_margins_not_the_first_items(samples_of_8_and_2):
    indices = list(range(20))
    margins = {i: (19 - i) / 10 for i in indices}  # the last items are the nearest ties
    margins[5] = math.nan  # no gap can be trusted: in the sample before any finite margin
    rounds, _ = plan_rounds(indices, margins, {}, "auto")
    assert rounds == [[5, 13, 14, 15, 16, 17, 18, 19]]
    margins[12] = margins[13]  # a tie on the margin at the sample's edge goes to the lower index
    assert plan_rounds(indices, margins, {}, "auto")[0] == [[5, 12, 14, 15, 16, 17, 18, 19]]
    far = {i: 5.0 + (19 - i) for i in indices}  # later language, nothing near the carried floor
    assert plan_rounds(indices, far, {}, "auto", prior=0.3) == ([[18, 19]], None)
    shifts = {5: 0.1, 12: 0.0, 14: 0.0, 15: 0.0, 16: 0.0, 17: 0.0, 18: 0.0, 19: 0.0}
    rounds, reached = plan_rounds(indices, margins, shifts, "auto")  # 2 x 0.1: no item outside the sample under it
    assert rounds == [[5, 12, 14, 15, 16, 17, 18, 19]] and reached == pytest.approx(0.2)


def rounds_one_by_one(indices, margins, true_shift, prior):
    """The rule written out without the merged first round: calibrate on the sample alone, then widen
    round by round (what plan_rounds did before it folded the carried floor into the first round)."""
    size = CALIBRATION_ITEMS if prior is None else CARRIED_CALIBRATION_ITEMS
    taken = set(sorted(indices, key=lambda i: (margins[i], i))[:size])  # the smallest margins, ties by index
    while True:
        reached = SAFETY * max([prior or 0.0, *(true_shift[i] for i in taken)])
        more = {i for i in indices if i not in taken and not margins[i] > reached}
        if not more:
            return taken, reached
        taken |= more


@pytest.mark.parametrize("seed", range(200))
def test_the_merged_first_round_re_scores_the_same_items_to_the_same_threshold(seed):
    rng = random.Random(seed)
    indices = rng.sample(range(100), rng.randint(1, 30))
    margins = {i: rng.choice([0.0, rng.uniform(0, 1), math.inf]) for i in indices}
    true_shift = {i: rng.uniform(0, 0.3) for i in indices}
    prior = rng.choice([None, rng.uniform(0, 0.3)])
    shifts: dict[int, float] = {}
    for _ in range(len(indices) + 2):  # score each planned round, as Verifier.run does
        rounds, reached = plan_rounds(indices, margins, shifts, "auto", prior)
        if reached is not None:
            break
        shifts.update((i, true_shift[i]) for i in rounds[-1])
    assert reached is not None
    expected, threshold = rounds_one_by_one(indices, margins, true_shift, prior)
    assert {i for r in rounds for i in r} == expected and reached == pytest.approx(threshold)
    assert all(margins[i] > reached for i in indices if i not in expected)


def test_experiment_verify_key_maps_to_the_eval_settings():
    assert verify_settings(None) == {} and verify_settings(True) == {}
    assert verify_settings(False) == {"verify": False}
    assert verify_settings(0.3) == {"verify": True, "verify_threshold": 0.3}
    assert verify_settings("auto") == {"verify": True, "verify_threshold": "auto"}
    with pytest.raises(PolyalignError, match="'auto' or a margin >= 0"):
        verify_settings(-1.0)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["exact", "prefix"])
def test_auto_verified_run_predicts_like_float32_on_every_item(tiny_gemma, data_dir, tmp_path, rule):
    fast, tok = load_model(str(tiny_gemma), dtype="bfloat16")
    full, _ = load_model(str(tiny_gemma), dtype="float32")

    def cfg(**kw):
        return EvalConfig(
            model=str(tiny_gemma),
            task="emotion",
            langs="en,zh",
            scoring=rule,
            limit=24,
            data_dir=str(data_dir),
            prompts=str(PAPER_PACK),
            batch_size=4,
            **kw,
        )

    run_eval(cfg(), full, tok, tmp_path / "fp32", progress=False)
    results = run_eval(cfg(), fast, tok, tmp_path / "auto", progress=False)
    summary = results["verify"]
    assert summary["threshold"] == "auto" and "smallest bf16 margins" in summary["why"]
    carried = None  # the largest shift of the languages before: en's, for zh
    for lang, calibration in (("en", CALIBRATION_ITEMS), ("zh", CARRIED_CALIBRATION_ITEMS)):
        read = [
            (tmp_path / run / "samples" / f"emotion_{lang}.jsonl").read_text().splitlines() for run in ("fp32", "auto")
        ]
        ref, got = ([json.loads(line) for line in lines] for lines in read)
        assert [r["pred"] for r in got] == [r["pred"] for r in ref]  # every prediction equals float32's
        rescored = [r for r in got if "fast" in r]
        assert len(rescored) >= min(calibration, len(got))  # the sample, or every item of a short language
        largest = max(r["fast"]["shift"] for r in rescored)
        kept = [margin(r["scores"], rule) for r in got if "fast" not in r]
        assert kept  # the guarantee below is about something
        assert all(m > SAFETY * max(largest, carried or 0.0) for m in kept)  # the guarantee results.json states
        stats = summary["per_language"][lang]
        assert stats["max_shift"] == largest and stats["kept_margin_over_max_shift"] >= SAFETY
        carried = max(largest, carried or 0.0)
