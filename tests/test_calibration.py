"""polyalign.evaluation.calibration against straightforward re-computations on hand-made scores: batch
calibration (prefix masses and exact log-probs, ties, unscored items), the midrank ROC-AUC by
counting pairs, and the paired bootstrap of ΔAUC."""

import math

import numpy as np
import pytest

from polyalign.evaluation.calibration import (
    batch_calibrate,
    bootstrap_delta_auc,
    calibration_averages,
    calibration_summary,
    label_probabilities,
    log_odds,
    roc_auc,
    weighted_auc,
)

TWO = ["positive", "negative"]
THREE = ["entailment", "neutral", "contradiction"]


def naive_calibrate(items, rule, classes):
    """Zhou et al.'s batch calibration written out with plain Python."""
    probs = []
    for s in items:
        if s is None:
            probs.append(None)
            continue
        raw = [s[c] if rule == "prefix" else math.exp(s[c]) for c in classes]
        probs.append([v / sum(raw) for v in raw])
    scored = [p for p in probs if p is not None]
    mean = [sum(p[k] for p in scored) / len(scored) for k in range(len(classes))]
    preds = []
    for p in probs:
        if p is None:
            preds.append(None)
            continue
        cal = [p[k] - mean[k] for k in range(len(classes))]
        best = [classes[k] for k in range(len(classes)) if cal[k] == max(cal)]
        preds.append(best[0] if len(best) == 1 else None)
    return preds


def naive_auc(values, positive):
    """Share of (positive, negative) pairs ranked right, ties counting one half."""
    pos = [v for v, p in zip(values, positive) if p]
    neg = [v for v, p in zip(values, positive) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_prefix_masses_by_hand():
    # dyadic masses: every quotient and mean below is exact in floating point
    items = [
        {"positive": 0.375, "negative": 0.125},  # p = (0.75, 0.25)
        {"positive": 0.25, "negative": 0.25},  # (0.5, 0.5): a raw tie
        {"positive": 0.0625, "negative": 0.1875},  # (0.25, 0.75)
        {"positive": 0.75, "negative": 0.25},  # (0.75, 0.25)
    ]
    assert label_probabilities(items[0], "prefix", TWO).tolist() == [0.75, 0.25]
    # class means (0.5625, 0.4375): the raw tie becomes a calibrated "negative"
    assert batch_calibrate(items, "prefix", TWO) == ["positive", "negative", "negative", "positive"]
    assert batch_calibrate(items, "prefix", TWO) == naive_calibrate(items, "prefix", TWO)
    # means (0.5, 0.5): the third item sits exactly on them, a calibrated tie (predicts nothing)
    balanced = [items[0], items[2], items[1]]
    assert batch_calibrate(balanced, "prefix", TWO) == ["positive", "negative", None]
    assert log_odds(items[0], "prefix", TWO) == pytest.approx(math.log(3))
    assert log_odds({"positive": 0.0, "negative": 0.5}, "prefix", TWO) == -math.inf


def test_exact_log_probs_and_a_calibrated_tie():
    same = {"positive": math.log(0.7), "negative": math.log(0.3)}
    assert label_probabilities(same, "exact", TWO) == pytest.approx([0.7, 0.3])
    assert batch_calibrate([same, same], "exact", TWO) == [None, None]  # each item equals the mean
    # long label words: log-probs far below exp()'s range still give the right probabilities
    deep = {"positive": -1000.0, "negative": -1000.0 - math.log(3)}
    assert label_probabilities(deep, "exact", TWO) == pytest.approx([0.75, 0.25])
    assert log_odds(deep, "exact", TWO) == pytest.approx(math.log(3))
    assert log_odds({"positive": -math.inf, "negative": -2.0}, "exact", TWO) == -math.inf
    rng = np.random.default_rng(0)
    items = [dict(zip(THREE, rng.normal(-3, 2, 3).tolist())) for _ in range(200)]
    assert batch_calibrate(items, "exact", THREE) == naive_calibrate(items, "exact", THREE)
    skewed = [{c: v + (2.0 if c == "neutral" else 0.0) for c, v in s.items()} for s in items]
    raw = [max(s, key=s.get) for s in skewed]
    assert raw.count("neutral") > 120  # a strong prior on one class ...
    calibrated = batch_calibrate(skewed, "exact", THREE)
    assert calibrated.count("neutral") < raw.count("neutral") - 30 and calibrated == naive_calibrate(
        skewed, "exact", THREE
    )


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {"positive": 0.5},  # a class missing
        {"positive": float("nan"), "negative": 0.1},
        {"positive": 0.0, "negative": 0.0},  # no mass at all
        {"positive": -0.1, "negative": 0.2},  # not a mass
        {"positive": None, "negative": 0.2},
    ],
)
def test_unscored_items_are_left_out_and_count_as_wrong(bad):
    good = [{"positive": 0.375, "negative": 0.125}, {"positive": 0.0625, "negative": 0.1875}]
    assert label_probabilities(bad, "prefix", TWO) is None and log_odds(bad, "prefix", TWO) is None
    with_bad = batch_calibrate([good[0], bad, good[1]], "prefix", TWO)
    assert with_bad == [*batch_calibrate(good, "prefix", TWO)[:1], None, *batch_calibrate(good, "prefix", TWO)[1:]]
    rows = [{"gold": "positive", "scores": good[0]}, {"gold": "positive", "scores": bad}]
    rows.append({"gold": "negative", "scores": good[1]})
    summary = calibration_summary(rows, "prefix")
    assert summary["calibrated_accuracy"] == pytest.approx(2 / 3) and summary["calibration_unscored"] == 1
    assert summary["auc"] == 1.0  # on the two scored items
    assert batch_calibrate([bad, bad], "prefix", TWO) == [None, None]


def test_exact_rule_rejects_what_no_log_prob_can_be():
    assert label_probabilities({"positive": -math.inf, "negative": -math.inf}, "exact", TWO) is None
    assert label_probabilities({"positive": math.inf, "negative": -1.0}, "exact", TWO) is None
    with pytest.raises(ValueError, match="unknown scoring rule"):
        label_probabilities({"positive": 0.1, "negative": 0.2}, "greedy", TWO)


def test_auc_counts_pairs_with_ties_at_one_half():
    values = [2.0, 1.0, 1.0, 0.5, -math.inf, 3.0, 1.0, math.inf, 0.5, -1.0]
    positive = [True, False, True, True, False, True, False, True, False, False]
    assert roc_auc(values, positive) == pytest.approx(naive_auc(values, positive))
    assert roc_auc([1.0, 1.0, 1.0], [True, False, True]) == 0.5  # all tied
    assert roc_auc([0.0, 1.0], [False, True]) == 1.0 and roc_auc([0.0, 1.0], [True, False]) == 0.0
    assert roc_auc([1.0, 2.0], [True, True]) is None and roc_auc([], []) is None
    assert roc_auc([None, 1.0, 0.0], [False, True, False]) == 1.0  # unscored items left out
    rng = np.random.default_rng(1)
    v = rng.integers(0, 6, 80).astype(float)  # many ties
    y = rng.random(80) < 0.4
    w = rng.integers(0, 4, (5, 80))
    for row, weights in zip(weighted_auc(v, y, w), w):
        assert row == pytest.approx(naive_auc(np.repeat(v, weights), np.repeat(y, weights)))


def test_delta_auc_bootstrap():
    rng = np.random.default_rng(2)
    y = rng.random((3, 50)) < 0.5
    base = rng.normal(size=(3, 50)) + y
    aligned = base + 2.0 * y  # ranks the items better in every language
    delta, lo, hi = bootstrap_delta_auc(aligned, base, y)
    expected = np.mean([naive_auc(aligned[k], y[k]) - naive_auc(base[k], y[k]) for k in range(3)])
    assert delta == pytest.approx(expected) and 0 < lo < delta < hi
    assert bootstrap_delta_auc(base, base, y) == (0.0, 0.0, 0.0)
    assert bootstrap_delta_auc(base + 5.0, base, y) == (0.0, 0.0, 0.0)  # a prior shift: no ΔAUC
    holes = aligned.copy()
    holes[0, :10] = np.nan  # unscored (or missing) in one model: dropped from both
    kept = ~np.isnan(holes[0])
    first = naive_auc(aligned[0][kept], y[0][kept]) - naive_auc(base[0][kept], y[0][kept])
    rest = [naive_auc(aligned[k], y[k]) - naive_auc(base[k], y[k]) for k in (1, 2)]
    assert bootstrap_delta_auc(holes, base, y)[0] == pytest.approx(np.mean([first, *rest]))
    assert bootstrap_delta_auc(aligned, base, np.ones_like(y)) == (None, None, None)  # one class


def test_results_json_fields_and_averages():
    rows = [
        {"gold": "positive", "scores": {"positive": -0.1, "negative": -2.5}},
        {"gold": "negative", "scores": {"positive": -0.2, "negative": -1.9}},
        {"gold": "negative", "scores": {"positive": -0.9, "negative": -0.6}},
        {"gold": "positive", "scores": {"positive": -0.3, "negative": -1.5}},
    ]
    summary = calibration_summary(rows, "exact")
    preds = naive_calibrate([r["scores"] for r in rows], "exact", TWO)
    assert summary["calibrated_accuracy"] == np.mean([p == r["gold"] for p, r in zip(preds, rows)])
    odds = [r["scores"]["positive"] - r["scores"]["negative"] for r in rows]
    assert summary["auc"] == naive_auc(odds, [r["gold"] == "positive" for r in rows]) == 0.75
    three = [{"gold": "neutral", "scores": dict(zip(THREE, (-1.0, -0.5, -2.0)))}]
    assert "auc" not in calibration_summary(three, "exact")
    languages = {"en": {"calibrated_accuracy": 0.5, "auc": 0.75}, "zh": {"calibrated_accuracy": 1.0, "auc": None}}
    assert calibration_averages(languages) == {"average_calibrated_accuracy": 0.75, "average_auc": 0.75}
    assert calibration_averages({"en": {"calibrated_accuracy": 0.5}}) == {"average_calibrated_accuracy": 0.5}
