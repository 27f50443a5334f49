"""Statistics of the report, from per-item outcomes only (pure numpy, no torch).

Paired tests of an aligned model against the base model on the same items, multiple-comparison
corrections over the languages of one comparison, and class-aware scores (balanced accuracy,
macro-F1, predicted-label distribution) that expose a model that just predicts one label.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

RESAMPLES, SEED = 1000, 0
GROUPS = ("seen", "unseen", "all")  # the language groups a report pools over


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, n) item indices drawn with replacement: the one draw every bootstrap here uses."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, n) float: how often each item is drawn in each resample of `resample_indices`.
    Weighting every language's row by the same counts resamples the items jointly across languages
    (item-parallel test sets keep their cross-language correlation)."""
    rows = resample_indices(n, resamples, seed) + n * np.arange(resamples)[:, None]
    return np.bincount(rows.ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)


def null_centred_p(delta: float, boot: np.ndarray) -> float:
    """Two-sided null-centred bootstrap p-value (Berg-Kirkpatrick et al. 2012): the share of
    resampled statistics at least |delta| away from delta, NaN resamples left out, with the +1
    correction so it is never 0; 1 when delta is 0."""
    if delta == 0:
        return 1.0
    boot = boot[~np.isnan(boot)]
    return (1 + int(np.sum(np.abs(boot - delta) >= abs(delta) - 1e-12))) / (1 + len(boot))


def percentile_interval(boot: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The (1 - level) / 2 and (1 + level) / 2 quantiles of `boot`, NaN resamples left out."""
    lo, hi = np.nanquantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def accuracy_interval(correct: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """95% percentile interval of one language's accuracy, resampling its items with replacement."""
    if len(correct) == 0:
        return (0.0, 0.0)
    means = correct[resample_indices(len(correct), resamples, seed)].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def item_matrix(rows: Sequence[Mapping[int, float | None]], columns: Sequence[int] | None = None) -> np.ndarray:
    """The (language, item) matrix of `rows` (per language, item index: value), its columns
    `columns` or else the sorted union of the rows' items; NaN where a row lacks an item or holds None."""
    columns = sorted({i for row in rows for i in row}) if columns is None else columns
    matrix = np.full((len(rows), len(columns)), np.nan)
    for r, row in enumerate(rows):
        for k, i in enumerate(columns):
            value = row.get(i)
            if value is not None:
                matrix[r, k] = value
    return matrix


def paired_difference(
    a: Mapping[str, Mapping[int, float]], b: Mapping[str, Mapping[int, float]]
) -> tuple[np.ndarray, list[str]]:
    """diff[language, item] = a - b on the items both hold (NaN elsewhere), and its languages (those
    of `a`, in order, that share an item with `b`)."""
    langs = [lang for lang in a if lang in b and set(a[lang]) & set(b[lang])]
    rows = [{i: a[lang][i] - b[lang][i] for i in set(a[lang]) & set(b[lang])} for lang in langs]
    return item_matrix(rows), langs


def language_groups(langs: Iterable[str], seen: Iterable[str], drop_empty: bool = True) -> dict[str, list[str]]:
    """`langs` split into the GROUPS: those seen in alignment training, the others, and all of them
    (in `langs` order); the empty groups left out unless `drop_empty` is False."""
    langs, seen = list(langs), set(seen)
    groups = {
        "seen": [lang for lang in langs if lang in seen],
        "unseen": [lang for lang in langs if lang not in seen],
        "all": langs,
    }
    return {group: chosen for group, chosen in groups.items() if chosen or not drop_empty}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values: controls the family-wise error rate over the
    languages of one comparison without assuming independence (monotone, capped at 1)."""
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda k: pvalues[k])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values): controls the false discovery rate, a
    less conservative companion of Holm (monotone, capped at 1)."""
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 1.0
    order = sorted(range(m), key=lambda k: pvalues[k])
    for rank in range(m - 1, -1, -1):
        i = order[rank]
        running = min(running, m * pvalues[i] / (rank + 1))
        adjusted[i] = min(1.0, running)
    return adjusted


def discordant(aligned: ArrayLike, base: ArrayLike) -> tuple[int, int]:
    """(fixed, broken): items wrong in base and right in aligned, and the reverse."""
    a, b = np.asarray(aligned, dtype=bool), np.asarray(base, dtype=bool)
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def sign_test(fixed: int, broken: int) -> float:
    """Two-sided exact sign test (McNemar exact) on the discordant items:
    p = min(1, 2 P(X <= min(fixed, broken))), X ~ Binomial(fixed + broken, 1/2).

    Exact and easy to explain: under "alignment changes nothing", each item that changed is
    equally likely to have been fixed or broken. Computed with integers, so it is exact for
    any n (concordant items carry no information and are ignored)."""
    n, k = fixed + broken, min(fixed, broken)
    if n == 0:
        return 1.0
    term = tail = 1  # C(n, 0); C(n, j + 1) = C(n, j) (n - j) / (j + 1), exact in integers
    for j in range(k):
        term = term * (n - j) // (j + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)


def paired_bootstrap(
    aligned: np.ndarray, base: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """Accuracy difference (aligned - base) on the same items and its two-sided p-value.

    Items are resampled with replacement (pairs kept together); the p-value is the share of
    resampled differences at least |delta| away from delta (the null-centred bootstrap of
    Berg-Kirkpatrick et al. 2012), with the +1 correction so it is never 0.
    """
    diff = np.asarray(aligned, dtype=float) - np.asarray(base, dtype=float)
    if len(diff) == 0:
        return 0.0, 1.0
    delta = float(diff.mean())
    boot = diff[resample_indices(len(diff), resamples, seed)].mean(axis=1)
    return delta, null_centred_p(delta, boot)


def bootstrap_average_samples(
    diff: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, np.ndarray] | None:
    """Mean over languages of the per-language mean of `diff[lang, item]` (NaN: item missing),
    and its value under each bootstrap resample of the items (drawn jointly for every language:
    item-parallel test sets keep their cross-language correlation); None when nothing is present.
    A resample that draws no item of some language averages the others (NaN if none)."""
    found = bootstrap_language_means(diff, resamples, seed)
    if found is None:
        return None
    means, per_lang = found
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        boot = np.nanmean(per_lang, axis=1)
    return float(np.nanmean(means)), boot


def bootstrap_language_means(
    diff: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray] | None:
    """Each language's mean of `diff[lang, item]` (NaN: item missing), and its value under each
    bootstrap resample of the items, drawn jointly for every language: (means, boot[resample, lang]);
    NaN where a language has no item, or a resample drew none of its items."""
    diff = np.atleast_2d(np.asarray(diff, dtype=float))
    present = ~np.isnan(diff)
    if not present.any():
        return None
    values = np.where(present, diff, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = values.sum(1) / present.sum(1)
        weights = resample_counts(diff.shape[1], resamples, seed)
        per_lang = (weights @ values.T) / (weights @ present.T)  # (resamples, langs)
    return means, per_lang


def bootstrap_average_ci(
    diff: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean over languages of the per-language accuracy difference, with a percentile CI.

    `diff[lang, item]` is aligned - base correctness (NaN where a language lacks the item).
    Items are parallel across languages (translations of one review), so item indices are
    resampled jointly for every language (`bootstrap_average_samples`): the CI keeps the
    cross-language correlation that resampling (lang, item) pairs independently would hide."""
    found = bootstrap_average_samples(diff, resamples, seed)
    if found is None:
        return 0.0, 0.0, 0.0
    delta, boot = found
    return delta, *percentile_interval(boot, level)


def balanced_accuracy(gold: Sequence[Hashable], pred: Sequence[Hashable | None]) -> float | None:
    """Mean over gold classes (those present) of per-class recall: a model that always answers
    the majority class scores 1/k, whatever the class balance (a tie, pred None, is wrong)."""
    totals = Counter(gold)
    if not totals:
        return None
    hits = Counter(g for g, p in zip(gold, pred) if p == g)
    return float(np.mean([hits[c] / totals[c] for c in totals]))


def macro_f1(gold: Sequence[Hashable], pred: Sequence[Hashable | None]) -> float | None:
    """Mean over gold classes (those present) of F1; a prediction outside them (or a tie) is a
    miss for its gold class and a false positive of no scored class."""
    totals = Counter(gold)
    if not totals:
        return None
    hits = Counter(g for g, p in zip(gold, pred) if p == g)
    predicted = Counter(pred)
    scores = [2 * hits[c] / (totals[c] + predicted[c]) for c in totals]
    return float(np.mean(scores))


def label_distribution(labels: Sequence[Hashable | None], classes: Sequence[Hashable]) -> dict:
    """Fraction of `labels` equal to each class, plus key None: the ties (no single prediction)
    and any label outside `classes`."""
    counts, n = Counter(labels), len(labels)
    if n == 0:
        return {**{c: None for c in classes}, None: None}
    shares = {c: counts[c] / n for c in classes}
    return {**shares, None: 1.0 - sum(counts[c] for c in classes) / n}
