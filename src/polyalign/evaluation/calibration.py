"""Prior-free views of saved scores: batch calibration and ROC-AUC (numpy only, no torch).

An adapter can raise accuracy by moving the label prior (answering the majority label more
often) without ranking items any better. Two measures read the saved per-item scores only, so
any finished evaluation can be re-measured without its model:

- batch calibration (Zhou et al., ICLR 2024): each item's label probabilities, renormalised over
  the label set, minus each class's mean over the evaluated items of the language; the argmax is
  the calibrated prediction. A prior the model adds to every item cancels out.
- ROC-AUC of two-class tasks: the Mann-Whitney AUC of the first class's log-odds (ties share
  midranks), gold first class as positive. Any per-language prior shift is a monotone transform
  of the log-odds, so it leaves the AUC unchanged.

Scores are what `polyalign eval` saves (polyalign.engine.scoring): the prefix rule's probability masses,
the exact rule's summed log-probabilities. An item whose scores are missing, lack a class, are not
finite numbers (NaN; +inf log-probs) or give every class zero mass is *unscored*: it is left out of
the class means and of the AUC, and it counts as wrong in calibrated accuracy, as a tie does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from polyalign.evaluation.stats import RESAMPLES, SEED, percentile_interval, resample_counts

Scores = Mapping[str, float] | None


def _values(scores: Scores, rule: str, classes: Sequence[str]) -> list[float] | None:
    """The saved values of `classes` in order, or None when the item is unscored (plain Python:
    the report reads every item of a run)."""
    if rule not in ("prefix", "exact"):
        raise ValueError(f"unknown scoring rule {rule!r}")
    if scores is None or not classes:
        return None
    values = [float(v) for v in (scores.get(c) for c in classes) if isinstance(v, (int, float))]
    if len(values) != len(classes) or any(math.isnan(v) for v in values):
        return None
    if rule == "prefix":  # masses: finite, non-negative, not all zero
        ok = all(0 <= v < math.inf for v in values) and sum(values) > 0
    else:  # log-probabilities: +inf is none, and all -inf leaves nothing to compare
        ok = -math.inf < max(values) < math.inf
    return values if ok else None


def label_probabilities(scores: Scores, rule: str, classes: Sequence[str]) -> np.ndarray | None:
    """The item's probability of each class, renormalised over `classes`; None when unscored.

    prefix: masses divided by their sum; exact: a softmax of the log-probabilities (shifted by
    their maximum, so long label words whose log-probs underflow exp() still count)."""
    values = _values(scores, rule, classes)
    if values is None:
        return None
    array = np.array(values)
    if rule == "prefix":
        return array / array.sum()
    weights = np.exp(array - array.max())
    return weights / weights.sum()


def log_odds(scores: Scores, rule: str, classes: Sequence[str]) -> float | None:
    """log p(first class) - log p(second class), from the saved values without renormalising
    (no rounding through exp); ±inf where one class has zero probability; None when unscored."""
    values = _values(scores, rule, classes) if len(classes) == 2 else None
    if values is None:
        return None
    first, second = values
    if rule == "prefix":
        first = math.log(first) if first > 0 else -math.inf
        second = math.log(second) if second > 0 else -math.inf
    return first - second


def batch_calibrate(items: Sequence[Scores], rule: str, classes: Sequence[str]) -> list[str | None]:
    """Batch-calibrated prediction of each item (None: unscored, or a tie of calibrated scores).

    The class means are taken over the scored items of `items`: pass one language's evaluated
    items of one model and condition."""
    probs = [label_probabilities(s, rule, classes) for s in items]
    scored = [p for p in probs if p is not None]
    if not scored:
        return [None] * len(items)
    prior = np.mean(scored, axis=0)
    predictions: list[str | None] = []
    for p in probs:
        if p is None:
            predictions.append(None)
            continue
        calibrated = p - prior
        top = np.flatnonzero(calibrated == calibrated.max())
        predictions.append(classes[int(top[0])] if len(top) == 1 else None)
    return predictions


def weighted_auc(values: ArrayLike, positive: ArrayLike, weights: ArrayLike) -> np.ndarray:
    """Mann-Whitney AUC with midranks under each row of `weights` (resample counts of the items).

    P(score of a positive > score of a negative) + half P(equal), each item counted as often as
    its weight; NaN in a row without positive or without negative weight. O(rows x items)."""
    values = np.asarray(values, dtype=float)
    positive = np.asarray(positive, dtype=bool)
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    rows = weights.shape[0]
    unique, group = np.unique(values, return_inverse=True)
    cells = (np.arange(rows)[:, None] * len(unique) + group.reshape(1, -1)).ravel()
    size = rows * len(unique)
    pos = np.bincount(cells, weights=(weights * positive).ravel(), minlength=size).reshape(rows, -1)
    neg = np.bincount(cells, weights=(weights * ~positive).ravel(), minlength=size).reshape(rows, -1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly under each score value
    wins = (pos * (below + 0.5 * neg)).sum(axis=1)
    total = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, wins / total, np.nan)


def roc_auc(values: Sequence[float | None], positive: Sequence[bool]) -> float | None:
    """ROC-AUC of `values` (higher = more likely positive), ties sharing ranks; items whose value
    is None are left out; None without a positive and a negative item."""
    kept = [(v, p) for v, p in zip(values, positive) if v is not None]
    if not kept:
        return None
    auc = weighted_auc([v for v, _ in kept], [p for _, p in kept], np.ones((1, len(kept))))[0]
    return None if np.isnan(auc) else float(auc)


def bootstrap_aucs(
    aligned: ArrayLike, base: ArrayLike, positive: ArrayLike, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """AUC per language of each model on the items scored by both, (1 + resamples, languages):
    row 0 the observed sample, then resamples of the benchmark items drawn jointly for every
    language and both models (paired, and keeping the cross-language correlation of
    item-parallel test sets, as polyalign.evaluation.stats.bootstrap_average_ci does for accuracy).

    Arrays are (language, benchmark item) log-odds, NaN where an item is missing or unscored;
    `positive`: gold is the first class. NaN where a language lacks a class in a resample."""
    a, b = np.atleast_2d(np.asarray(aligned, dtype=float)), np.atleast_2d(np.asarray(base, dtype=float))
    gold = np.atleast_2d(np.asarray(positive, dtype=bool))
    usable = ~np.isnan(a) & ~np.isnan(b)
    n = a.shape[1]
    weights = np.vstack([np.ones((1, n)), resample_counts(n, resamples, seed)])
    out = np.full((2, resamples + 1, a.shape[0]), np.nan)
    for lang in range(a.shape[0]):
        keep = usable[lang]
        if keep.any():
            w, y = weights[:, keep], gold[lang, keep]
            out[0, :, lang], out[1, :, lang] = weighted_auc(a[lang, keep], y, w), weighted_auc(b[lang, keep], y, w)
    return out[0], out[1]


def delta_auc_interval(
    aligned: np.ndarray, base: np.ndarray, level: float = 0.95
) -> tuple[float | None, float | None, float | None]:
    """Mean over languages of AUC(aligned) - AUC(base) and its percentile CI, from `bootstrap_aucs`
    (pass a subset of its language columns to pool a group); Nones when no language has both classes."""
    deltas = aligned - base
    if np.isnan(deltas[0]).all():
        return None, None, None
    with warnings.catch_warnings():  # a resample in which no language has both classes: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        boot = np.nanmean(deltas[1:], axis=1)
    delta = float(np.nanmean(deltas[0]))
    if np.isnan(boot).all():
        return delta, None, None
    return delta, *percentile_interval(boot, level)


def bootstrap_delta_auc(
    aligned: ArrayLike,
    base: ArrayLike,
    positive: ArrayLike,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = 0.95,
) -> tuple[float | None, float | None, float | None]:
    """ΔAUC (aligned - base, mean over languages) with its paired bootstrap CI: see `bootstrap_aucs`."""
    return delta_auc_interval(*bootstrap_aucs(aligned, base, positive, resamples, seed), level)


def calibration_summary(rows: Sequence[Mapping], rule: str) -> dict:
    """What results.json holds per language: calibrated accuracy, AUC (two classes) and the count
    of unscored items, from one language's sample rows ({gold, scores})."""
    scores = [r.get("scores") for r in rows]
    classes = list(next((s for s in scores if s), {}))
    hits = [p is not None and p == r["gold"] for p, r in zip(batch_calibrate(scores, rule, classes), rows)]
    summary: dict = {
        "calibrated_accuracy": float(np.mean(hits)) if hits else 0.0,  # as `accuracy` of no items
        "calibration_unscored": sum(label_probabilities(s, rule, classes) is None for s in scores),
    }
    if len(classes) == 2:
        summary["auc"] = roc_auc([log_odds(s, rule, classes) for s in scores], [r["gold"] == classes[0] for r in rows])
    return summary


def calibration_averages(languages: Mapping[str, Mapping]) -> dict:
    """results.json's averages over languages of calibrated accuracy and (where present) AUC."""
    out: dict = {}
    cal = [v["calibrated_accuracy"] for v in languages.values() if v.get("calibrated_accuracy") is not None]
    out["average_calibrated_accuracy"] = float(np.mean(cal)) if cal else 0.0
    aucs = [v["auc"] for v in languages.values() if v.get("auc") is not None]
    if any("auc" in v for v in languages.values()):
        out["average_auc"] = float(np.mean(aucs)) if aucs else None
    return out
