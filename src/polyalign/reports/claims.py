"""One verdict per paper claim, by the rules the experiment file declared before the run.

Each claim has parts (treatment vs reference on a measure, polyalign.study.claims_spec). A part is
tested on the benchmark item as the unit, languages averaged (item-parallel test sets: items are
resampled jointly for every language, polyalign.evaluation.stats). A claim's p-value is the largest of its
parts' (an intersection-union test: the claim holds only if every part does); the correction
(Holm by default) runs over the p-values of the claims that were testable. Verdicts:

- not testable: the run lacks an arm, or a declared precondition failed (e.g. the base model is
  not above chance on the task: the lower bound of its accuracy CI is not above 1 / classes);
- supported: corrected p < alpha and, for a claimed gain, an effect of at least `min_effect`
  (for an equivalence, the (1 - 2 alpha) CI inside +-margin once corrected);
- contradicted: a part's 1 - alpha CI lies entirely below `min_effect` (a claimed gain ruled
  out, or a significant loss), or entirely outside +-margin (for an equivalence);
- inconclusive: neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from polyalign.evaluation.calibration import bootstrap_delta_auc, log_odds
from polyalign.evaluation.stats import (
    bootstrap_average_ci,
    bootstrap_average_samples,
    holm,
    item_matrix,
    null_centred_p,
    paired_difference,
    percentile_interval,
    resample_counts,
    sign_test,
)
from polyalign.reports.claims_data import (
    Missing,
    PcaArm,
    Resolved,
    lens_outcomes,
    outcomes,
    pca_projections,
    pick_languages,
    resolve,
    seen,
)
from polyalign.reports.run_data import RunData
from polyalign.reports.seeds import Outcomes
from polyalign.study.claims_spec import Claim, ClaimPart, ClaimsSpec, Precondition

VERDICTS = ("supported", "contradicted", "inconclusive", "not testable")
Interval = tuple[float, float, float]  # estimate, CI low, CI high


@dataclass
class PartResult:
    """A part's numbers: the primary effect and test, and the raw / calibrated / AUC views."""

    part: ClaimPart
    arms: tuple[Resolved, Resolved] | None = None
    langs: list[str] = field(default_factory=list)
    n_items: int = 0
    effect: Interval | None = None  # primary measure, 1 - alpha CI
    equivalence_ci: tuple[float, float] | None = None  # 1 - 2 alpha CI (equivalence)
    p: float | None = None
    better: int = 0  # items whose net difference (summed over languages) favours the treatment
    worse: int = 0
    raw: Interval | None = None
    calibrated: Interval | None = None
    auc: Interval | None = None
    missing: str | None = None  # why not testable
    verdict: str = "not testable"


@dataclass
class ClaimResult:
    claim: Claim
    parts: list[PartResult]
    p: float | None = None
    p_corrected: float | None = None
    verdict: str = "not testable"
    reason: str = ""


def interval_from(delta: float, boot: np.ndarray, level: float) -> Interval:
    return delta, *percentile_interval(boot, level)


def item_test(diff: np.ndarray, part: ClaimPart, alpha: float, result: PartResult) -> None:
    """Effect, CI and p of a (language, item) difference matrix by the part's test."""
    found = bootstrap_average_samples(diff)
    if found is None:
        raise Missing("no item was scored on both sides")
    delta, boot = found
    result.effect = interval_from(delta, boot, 1 - alpha)
    per_item = np.nansum(diff, axis=0)
    result.better, result.worse = int((per_item > 0).sum()), int((per_item < 0).sum())
    result.n_items = int((~np.isnan(diff)).any(axis=0).sum())
    if part.test == "sign":
        result.p = sign_test(result.better, result.worse)
    elif part.test == "bootstrap":
        result.p = null_centred_p(delta, boot)
    else:
        result.p, result.equivalence_ci = tost(boot, part.margin or 0.0, alpha)


def tost(boot: np.ndarray, margin: float, alpha: float) -> tuple[float, tuple[float, float]]:
    """Two one-sided tests of |delta| < margin from the bootstrap distribution (percentile
    inversion): p = the larger one-sided p; and the (1 - 2 alpha) CI that TOST reads."""
    boot = boot[~np.isnan(boot)]
    below = (1 + int(np.sum(boot <= -margin))) / (1 + len(boot))
    above = (1 + int(np.sum(boot >= margin))) / (1 + len(boot))
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return max(below, above), (float(lo), float(hi))


def restrict(o: Outcomes, langs: list[str]) -> Outcomes:
    return {lang: o[lang] for lang in langs if lang in o}


def accuracy_part(run: RunData, cal: RunData, part: ClaimPart, arms: tuple, alpha: float, r: PartResult) -> None:
    """Accuracy or calibrated accuracy: the primary test, both views, and ΔAUC (two classes)."""
    views = {name: tuple(outcomes(data, a) for a in arms) for name, data in (("raw", run), ("calibrated", cal))}
    t, ref = views["raw"]
    r.langs = pick_languages(part.languages, [lang for lang in t if lang in ref], seen(run, *arms))
    for name, (a, b) in views.items():
        diff, _ = paired_difference(restrict(a, r.langs), restrict(b, r.langs))
        setattr(r, name, bootstrap_average_ci(diff, level=1 - alpha))
    primary = views["raw" if part.measure == "accuracy" else "calibrated"]
    item_test(paired_difference(*(restrict(o, r.langs) for o in primary))[0], part, alpha, r)
    r.auc = auc_effect(run, arms, r.langs, alpha)


def auc_effect(run: RunData, arms: tuple[Resolved, Resolved], langs: list[str], alpha: float) -> Interval | None:
    """ΔAUC (treatment - reference) with its paired bootstrap CI, for two-class tasks compared on
    one condition by single adapters (None otherwise)."""
    t, ref = arms
    classes = run.class_order.get(t.condition, [])
    if len(classes) != 2 or t.condition != ref.condition or len(t.names) != 1 or len(ref.names) != 1:
        return None
    keys = [(a.model, a.names[0], *a.condition) for a in arms]
    golds = [run.labels.get(keys[1], {}).get(lang, {}) for lang in langs]
    items = sorted({i for gold in golds for i in gold})
    planes = []
    for key in keys:
        scores = [run.scores.get(key, {}).get(lang, {}) for lang in langs]
        odds = [{i: log_odds(s, t.scoring, classes) for i, s in by.items() if i in g} for by, g in zip(scores, golds)]
        planes.append(item_matrix(odds, items))
    positive = item_matrix([{i: g[0] == classes[0] for i, g in gold.items()} for gold in golds], items) == 1
    delta, lo, hi = bootstrap_delta_auc(planes[0], planes[1], positive, level=1 - alpha)
    return None if delta is None or lo is None or hi is None else (delta, lo, hi)


def lens_part(run: RunData, part: ClaimPart, arms: tuple, alpha: float, r: PartResult) -> None:
    """The lens quantity per item at the part's depth: paired by (language, item)."""
    t, ref = (lens_outcomes(run, part, a) for a in arms)
    r.langs = pick_languages(part.languages, [lang for lang in t if lang in ref], seen(run, *arms))
    item_test(paired_difference(restrict(t, r.langs), restrict(ref, r.langs))[0], part, alpha, r)


def pearson_rows(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted Pearson r of x and y (last axis: items) under each row of `weights` (resample
    counts); NaN where either side is constant."""
    w = weights / weights.sum(axis=-1, keepdims=True)
    mx, my = (w * x).sum(-1, keepdims=True), (w * y).sum(-1, keepdims=True)
    cov = (w * (x - mx) * (y - my)).sum(-1)
    var = (w * (x - mx) ** 2).sum(-1) * (w * (y - my) ** 2).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / np.sqrt(np.maximum(var, 1e-300)), np.nan)


def pca_statistic(arm: PcaArm, langs: list[str], weights: np.ndarray) -> np.ndarray:
    """Mean over seeds, layers and `langs` of r(PC1 of the language, PC1 of English), per weight row."""
    pivot = arm.proj[:, :, arm.langs.index("en"), None, :]
    values = [pearson_rows(arm.proj[:, :, arm.langs.index(lang), None, :], pivot, weights) for lang in langs]
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.stack(values), axis=(0, 1, 2))


def pca_part(run: RunData, part: ClaimPart, arms: tuple, alpha: float, r: PartResult) -> None:
    """PC1 correlation with English, treatment - reference, bootstrapped over items jointly."""
    t, ref = (pca_projections(run, part, a) for a in arms)
    if t.items != ref.items:
        raise Missing("the two arms' PCA items differ")
    shared = [lang for lang in t.langs if lang in ref.langs and lang != "en"]
    r.langs = pick_languages(part.languages, shared, seen(run, *arms))
    n = len(t.items)
    weights = np.vstack([np.ones((1, n)), resample_counts(n)])
    diff = pca_statistic(t, r.langs, weights) - pca_statistic(ref, r.langs, weights)
    delta, boot = float(diff[0]), diff[1:]
    r.effect, r.n_items = interval_from(delta, boot, 1 - alpha), n
    r.p = null_centred_p(delta, boot)


def check_precondition(
    run: RunData, cal: RunData, part: ClaimPart, cond: Precondition, langs: list[str], alpha: float
) -> None:
    """Raise Missing when the arm's (raw or calibrated) accuracy over `langs` is not above the
    threshold by its CI."""
    arm = resolve(run, part, cond.arm)
    data = cal if cond.measure == "calibrated" else run
    correct = restrict(outcomes(data, arm), langs) or outcomes(data, arm)
    classes = run.class_order.get(arm.condition, [])
    threshold = 1 / len(classes) if cond.above == "chance" and classes else float(cond.above)
    diff, _ = paired_difference(correct, {lang: dict.fromkeys(by, threshold) for lang, by in correct.items()})
    delta, lo, _ = bootstrap_average_ci(diff, level=1 - alpha)
    if not lo > 0:
        raise Missing(
            f"precondition failed: {arm.model} / {arm.label()} "
            f"{'calibrated accuracy' if cond.measure == 'calibrated' else 'accuracy'} {100 * (delta + threshold):.1f}% "
            f"(CI low {100 * (lo + threshold):.1f}%) is not above {100 * threshold:.1f}%"
            + (" (chance)" if cond.above == "chance" else "")
        )


def evaluate_part(run: RunData, cal: RunData, part: ClaimPart, alpha: float) -> PartResult:
    """Numbers of one part, or its reason for being not testable."""
    result = PartResult(part)
    try:
        arms = (resolve(run, part, part.treatment), resolve(run, part, part.reference))
        result.arms = arms
        if part.measure == "lens":
            lens_part(run, part, arms, alpha, result)
        elif part.measure == "pca":
            pca_part(run, part, arms, alpha, result)
        else:
            accuracy_part(run, cal, part, arms, alpha, result)
        for cond in part.preconditions:
            check_precondition(run, cal, part, cond, result.langs, alpha)
    except Missing as exc:
        result.missing, result.verdict = str(exc), "not testable"
    return result


def part_verdict(r: PartResult, p_corrected: float, alpha: float) -> str:
    """The declared rule for one tested part, given its claim's corrected p-value."""
    assert r.effect is not None
    delta, lo, hi = r.effect
    part = r.part
    if not informative(r):
        return "inconclusive"  # every item tied: the CI is a point, whatever the test says
    if part.test == "equivalence":
        margin = part.margin or 0.0
        if lo > margin or hi < -margin:
            return "contradicted"
        return "supported" if p_corrected < alpha else "inconclusive"
    if hi < part.min_effect:
        return "contradicted"
    if p_corrected < alpha and delta > 0 and delta >= part.min_effect:
        return "supported"
    return "inconclusive"


def informative(r: PartResult) -> bool:
    """Some item differs between the arms (PCA's r is not per item: always informative)."""
    return r.part.measure == "pca" or r.better + r.worse > 0


def combine(result: ClaimResult, alpha: float) -> None:
    """A claim's verdict from its parts: any contradicted part contradicts it, all supported support it."""
    for r in result.parts:
        r.verdict = part_verdict(r, result.p_corrected if result.p_corrected is not None else 1.0, alpha)
    verdicts = [r.verdict for r in result.parts]
    if "contradicted" in verdicts:
        result.verdict = "contradicted"
        result.reason = "part(s) " + ", ".join(r.part.name for r in result.parts if r.verdict == "contradicted")
    elif all(v == "supported" for v in verdicts):
        result.verdict, result.reason = "supported", "every part holds at the corrected level"
    else:
        result.verdict = "inconclusive"
        result.reason = "part(s) " + ", ".join(
            r.part.name + ("" if informative(r) else " (no item differs between the arms)")
            for r in result.parts
            if r.verdict != "supported"
        )


def evaluate_claims(run: RunData, spec: ClaimsSpec, cal: RunData | None = None) -> list[ClaimResult]:
    """Every claim's parts, its intersection-union p, the correction across claims, the verdicts."""
    from polyalign.reports.calibrated import calibrate_run

    cal = calibrate_run(run) if cal is None else cal
    results = [ClaimResult(c, [evaluate_part(run, cal, p, spec.alpha) for p in c.parts]) for c in spec.claims]
    testable = [r for r in results if all(p.missing is None for p in r.parts)]
    for r in results:
        if r not in testable:
            r.reason = "; ".join(f"{p.part.name}: {p.missing}" for p in r.parts if p.missing)
    for r in testable:
        r.p = max(p.p if p.p is not None else 1.0 for p in r.parts)
    adjusted = holm([r.p or 1.0 for r in testable]) if spec.correction == "holm" else [r.p for r in testable]
    for r, p in zip(testable, adjusted):
        r.p_corrected = p
        combine(r, spec.alpha)
    return results
