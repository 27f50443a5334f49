"""polyalign.evaluation.stats against values worked out by hand: the Holm and Benjamini-Hochberg corrections,
the exact sign test, balanced accuracy, macro-F1, the label distribution and the joint bootstrap CI."""

from math import exp, lgamma, log

import numpy as np
import pytest

from polyalign.evaluation.stats import (
    balanced_accuracy,
    benjamini_hochberg,
    bootstrap_average_ci,
    discordant,
    holm,
    label_distribution,
    macro_f1,
    sign_test,
)


def test_holm_and_bh_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running max -> 0.02, 0.03, 0.06, 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # times m / rank = 0.02, 0.02, 0.04, 0.04; running min from the largest p down: unchanged
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    big = [0.5, 0.6, 0.9]  # capped at 1 (Holm) and made monotone (BH: 1.5 -> 0.9)
    assert holm(big) == [1.0, 1.0, 1.0]
    assert benjamini_hochberg(big) == pytest.approx([0.9, 0.9, 0.9])
    assert holm([]) == [] and benjamini_hochberg([]) == [] and holm([0.2]) == [0.2]
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 0.2, 20)
    for adjust in (holm, benjamini_hochberg):
        adj = np.array(adjust(raw))
        order = np.argsort(raw)
        assert np.all(np.diff(adj[order]) >= 0) and np.all(adj >= raw) and np.all(adj <= 1)
    assert np.all(np.array(holm(raw)) >= np.array(benjamini_hochberg(raw)))  # Holm is the conservative one


def test_sign_test_by_hand():
    assert sign_test(9, 1) == 0.021484375 == 2 * 11 / 1024  # P(X <= 1) = (1 + 10) / 2^10
    assert sign_test(1, 9) == sign_test(9, 1)
    assert sign_test(10, 0) == 2 / 1024 and sign_test(0, 0) == 1.0 and sign_test(5, 5) == 1.0
    assert sign_test(3, 4) == 1.0  # 2 P(X <= 3) > 1 for n = 7: capped
    # large n stays exact (integer arithmetic); compare with a log-space sum
    tail = sum(exp(lgamma(1001) - lgamma(k + 1) - lgamma(1001 - k) - 1000 * log(2)) for k in range(401))
    assert sign_test(600, 400) == pytest.approx(2 * tail, rel=1e-9) and 0 < sign_test(600, 400) < 1e-9
    assert discordant([1, 1, 0, 0, 1], [0, 1, 1, 0, 0]) == (2, 1)


def test_balanced_accuracy_and_macro_f1_by_hand():
    gold = ["a", "a", "a", "a", "b", "b"]
    pred = ["a", "a", "a", "a", "a", "b"]
    assert balanced_accuracy(gold, pred) == pytest.approx((4 / 4 + 1 / 2) / 2)  # accuracy is 5/6
    # F1(a) = 2*4 / (4 + 5) = 8/9, F1(b) = 2*1 / (2 + 1) = 2/3
    assert macro_f1(gold, pred) == pytest.approx((8 / 9 + 2 / 3) / 2)
    assert balanced_accuracy(gold, ["a"] * 6) == 0.5  # the majority class scores 1/k
    assert balanced_accuracy(["a", "b"], [None, "b"]) == 0.5  # a tie is wrong
    assert macro_f1(["a", "b"], ["a", "b"]) == 1.0
    assert balanced_accuracy([], []) is None and macro_f1([], []) is None


def test_label_distribution():
    shares = label_distribution(["a", "a", "b", None], ["a", "b", "c"])
    assert shares == {"a": 0.5, "b": 0.25, "c": 0.0, None: 0.25}
    assert label_distribution([], ["a"]) == {"a": None, None: None}


def test_bootstrap_average_ci_resamples_items_jointly():
    rng = np.random.default_rng(1)
    row = rng.integers(-1, 2, 50).astype(float)
    one = bootstrap_average_ci(row[None, :])
    # identical languages resampled jointly: the average's CI is the single language's CI
    # (independent resampling per language would shrink it by about 1/sqrt(2))
    assert bootstrap_average_ci(np.vstack([row, row])) == pytest.approx(one)
    delta, lo, hi = one
    assert delta == pytest.approx(row.mean()) and lo < delta < hi
    assert bootstrap_average_ci(row[None, :]) == one  # seeded
    assert bootstrap_average_ci(np.ones((3, 20))) == (1.0, 1.0, 1.0)
    holes = np.vstack([row, row])
    holes[1, :10] = np.nan  # a language missing items: mean over its own items
    assert bootstrap_average_ci(holes)[0] == pytest.approx((row.mean() + row[10:].mean()) / 2)
