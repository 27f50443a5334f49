"""The `claims` block of an experiment file: each paper claim with its pre-registered decision rule.

Why a declaration: a verdict is only worth something if the comparison, the test, the minimum
effect, the precondition and the correction across claims were fixed before the numbers were
seen. The block is typed by polyalign.core.config (unknown or missing keys are one-line errors) and
checked here against the experiment's own names (settings, models, tasks, analyses), without a
model or the benchmark. polyalign.reports.claims applies the rules to a finished run.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from polyalign.core.declarations import check_choice
from polyalign.core.errors import PolyalignError
from polyalign.core.languages import parse_languages
from polyalign.core.prompts import check_mode
from polyalign.core.tasks import load_task

Experiment = Any  # polyalign.study.experiment_spec.Experiment, which imports this module (no cycle)

MEASURES = ("accuracy", "calibrated", "lens", "pca")  # what a part compares (per item, or PCA's r)
PRECONDITION_MEASURES = ("accuracy", "calibrated")  # raw, or after batch calibration
TESTS = ("sign", "bootstrap", "equivalence")  # exact sign test over items, null-centred bootstrap, TOST
CORRECTIONS = ("holm", "none")  # across the claims' primary p-values
LANGUAGE_GROUPS = ("all", "unseen", "seen")  # relative to the languages of both arms' settings
# the names of polyalign.analysis.lens.QUANTITIES (not imported: lens needs torch; a test keeps them equal)
LENS_QUANTITIES = ("p_input_answer", "p_en_answer", "p_shared_answer", "p_input_labels", "p_en_labels")


@dataclass
class Arm:
    """One side of a comparison: a model's base or aligned setting (its seeds averaged), on a
    task and label mode. Unset fields take the part's defaults."""

    setting: str  # 'base' or an alignment setting's name
    model: str | None = None
    task: str | None = None
    mode: str | None = None


@dataclass
class Precondition:
    """The arm's accuracy, averaged over the part's languages, is above `above` (a number, or
    'chance' = 1 / number of classes) by its lower 1 - alpha bootstrap bound; else not testable.
    measure: calibrated reads it after batch calibration, so a model whose raw accuracy sits at
    chance only because it predicts one label for every item still counts as able to do the task."""

    arm: Arm
    above: float | str = "chance"
    measure: str = "accuracy"  # accuracy or calibrated


@dataclass
class ClaimPart:
    """One comparison of a claim: treatment vs reference, a measure, a test and its thresholds.

    greater (sign, bootstrap): the claim says treatment > reference by at least `min_effect`;
    equivalence: |treatment - reference| < `margin` (two one-sided tests)."""

    name: str
    treatment: Arm
    reference: Arm
    model: str | None = None  # default: the experiment's first model
    task: str | None = None  # default: the experiment's first task (lens, pca: the analysis's)
    mode: str | None = None  # default: the experiment's first mode
    measure: str = "accuracy"
    languages: list[str] = field(default_factory=lambda: ["all"])  # codes, or one of all / unseen / seen
    test: str = "sign"
    min_effect: float = 0.0  # fraction (0.02 = 2 points; lens: probability; pca: Pearson r)
    margin: float | None = None  # equivalence only
    quantity: list[str] = field(default_factory=lambda: ["p_en_answer"])  # lens: summed; '-NAME' subtracts
    depth: list[float] = field(default_factory=lambda: [0.25, 0.75])  # lens, pca: layers k / L in [lo, hi]
    preconditions: list[Precondition] = field(default_factory=list)


@dataclass
class Claim:
    """A statement of the paper, its numbers, and the parts that must all hold for it."""

    id: str
    statement: str  # the paper's claim, in a sentence
    paper: str  # the paper's numbers (table, figure)
    comparison: str  # our comparison, in words (what scale, what deviates)
    parts: list[ClaimPart]


@dataclass
class ClaimsSpec:
    """The block: alpha, the correction across claims, and the claims."""

    claims: list[Claim]
    alpha: float = 0.05
    correction: str = "holm"


def check_claims(exp: Experiment) -> None:
    """Every name a claim uses exists in the experiment, and every rule is complete."""
    spec = exp.claims
    if spec is None:
        return
    if not 0 < spec.alpha < 0.5:
        raise PolyalignError(f"claims.alpha {spec.alpha}: must be between 0 and 0.5")
    check_choice(spec.correction, CORRECTIONS, "claims.correction")
    ids = [c.id for c in spec.claims]
    if not ids or len(set(ids)) != len(ids):
        raise PolyalignError(f"claims: give at least one claim, each id once (got {ids})")
    for claim in spec.claims:
        if not claim.parts:
            raise PolyalignError(f"claim {claim.id}: no parts to test")
        names = [p.name for p in claim.parts]
        if len(set(names)) != len(names):
            raise PolyalignError(f"claim {claim.id}: part names must be distinct (got {names})")
        for part in claim.parts:
            check_part(exp, part, f"claim {claim.id}, part '{part.name}'")


def check_part(exp: Experiment, part: ClaimPart, where: str) -> None:
    """The rule of one part: measure, test and thresholds, languages, arms, preconditions."""
    check_choice(part.measure, MEASURES, f"{where}: measure")
    check_choice(part.test, TESTS, f"{where}: test")
    check_thresholds(part, where)
    if same_arm(part, part.treatment, part.reference):
        raise PolyalignError(f"{where}: treatment and reference are the same arm; a comparison needs two")
    if part.measure == "pca" and part.test != "bootstrap":
        raise PolyalignError(f"{where}: a pca part tests Pearson r by bootstrap over items (test: bootstrap)")
    if len(part.depth) != 2 or not 0 <= part.depth[0] < part.depth[1] <= 1:
        raise PolyalignError(f"{where}: depth must be [lo, hi] with 0 <= lo < hi <= 1 (got {part.depth})")
    if part.measure == "lens" and not part.quantity:  # a sum of nothing ties every item
        raise PolyalignError(f"{where}: a lens part names at least one quantity")
    for name in part.quantity:
        check_choice(name.removeprefix("-"), LENS_QUANTITIES, f"{where}: lens quantity")
    if part.measure in ("lens", "pca"):
        analysis_languages(exp, part)  # the analysis it reads is declared
    check_languages(exp, part, where)
    for arm in (part.treatment, part.reference, *(c.arm for c in part.preconditions)):
        check_arm(exp, part, arm, where)
    for cond in part.preconditions:
        if not (cond.above == "chance" or (isinstance(cond.above, float) and 0 < cond.above < 1)):
            raise PolyalignError(f"{where}: precondition above {cond.above!r} is not 'chance' or a number in (0, 1)")
        check_choice(cond.measure, PRECONDITION_MEASURES, f"{where}: precondition measure")


def effect_bound(part: ClaimPart) -> float:
    """The largest difference the part's measure can show: accuracies are fractions (1 = 100
    points), a lens value sums len(quantity) probabilities, Pearson r lies in [-1, 1]."""
    return {"pca": 2.0, "lens": float(len(part.quantity))}.get(part.measure, 1.0)


def check_thresholds(part: ClaimPart, where: str) -> None:
    """min_effect and margin are finite numbers the measure can reach: a margin of .inf makes any
    equivalence hold, a min_effect of 5.0 (500 points) or .nan no gain ever can."""
    bound, unit = effect_bound(part), "a fraction: 0.02 = 2 points" if part.measure in PRECONDITION_MEASURES else ""
    unit = unit or ("a difference of Pearson r" if part.measure == "pca" else "a difference of summed probabilities")
    if part.test == "equivalence":
        if part.margin is None:
            raise PolyalignError(f"{where}: an equivalence test needs a margin > 0")
        if not (math.isfinite(part.margin) and 0 < part.margin <= bound):
            raise PolyalignError(f"{where}: margin {part.margin} must be a number in (0, {bound:g}] ({unit})")
        if part.min_effect:
            raise PolyalignError(f"{where}: min_effect is for a claimed gain (an equivalence test reads margin)")
    elif part.margin is not None:
        raise PolyalignError(f"{where}: margin is for test: equivalence (use min_effect)")
    if not math.isfinite(part.min_effect) or part.min_effect > bound:
        raise PolyalignError(f"{where}: min_effect {part.min_effect} must be a number in [0, {bound:g}] ({unit})")
    if part.min_effect < 0:
        raise PolyalignError(f"{where}: min_effect must be >= 0 (swap treatment and reference)")


def same_arm(part: ClaimPart, a: Arm, b: Arm) -> bool:
    """Both arms resolve to one model, setting, task and mode (the part's defaults filled)."""

    def resolved(arm: Arm) -> tuple:
        task = arm.task or part.task
        return (arm.setting, arm.model or part.model, load_task(task).name if task else None, arm.mode or part.mode)

    return resolved(a) == resolved(b)


def check_languages(exp: Experiment, part: ClaimPart, where: str) -> None:
    """A group word alone, or codes the part's measure was run on."""
    if any(g in part.languages for g in LANGUAGE_GROUPS):
        if len(part.languages) != 1:
            raise PolyalignError(f"{where}: languages is one of {', '.join(LANGUAGE_GROUPS)}, or a list of codes")
        return
    codes = parse_languages(part.languages)
    available = analysis_languages(exp, part) if part.measure in ("lens", "pca") else exp.languages
    missing = sorted(set(codes) - set(parse_languages(available)))
    if missing:
        raise PolyalignError(f"{where}: languages {', '.join(missing)} are not evaluated by the experiment")


def analysis_languages(exp: Experiment, part: ClaimPart) -> list[str]:
    """The languages of the experiment's lens or pca analyses of the part's task."""
    specs = exp.analyses.lens if part.measure == "lens" else exp.analyses.pca
    task = load_task(part.task).name if part.task else None
    found = [lang for s in specs if task in (None, load_task(s.task).name) for lang in s.langs]
    if not found:
        raise PolyalignError(f"{where_task(part)}: the experiment declares no {part.measure} analysis for it")
    if part.measure == "pca" and "en" not in parse_languages(found):
        raise PolyalignError(f"part '{part.name}': a pca part correlates with English; add en to analyses.pca.langs")
    return found


def where_task(part: ClaimPart) -> str:
    return f"part '{part.name}' ({part.task or 'any task'})"


def check_arm(exp: Experiment, part: ClaimPart, arm: Arm, where: str) -> None:
    """The arm names an existing model and setting, evaluated on the task it compares."""
    settings = {s.name: s for s in exp.alignment}
    if arm.setting != "base" and arm.setting not in settings:
        raise PolyalignError(f"{where}: unknown setting '{arm.setting}' (known: base, {', '.join(settings) or 'none'})")
    model = arm.model or part.model
    if model is not None and model not in exp.models:
        raise PolyalignError(f"{where}: model '{model}' is not among the experiment's models {exp.models}")
    mode = arm.mode or part.mode
    if mode is not None:
        check_mode(mode)  # a mode the run lacks leaves the claim not testable, with its reason
    task = arm.task or part.task
    if task is None or part.measure in ("lens", "pca"):
        return
    name = load_task(task).name
    setting = settings.get(arm.setting)
    evaluated = (setting.tasks if setting is not None and setting.tasks else None) or exp.tasks
    if name not in [load_task(t).name for t in evaluated]:
        raise PolyalignError(f"{where}: setting '{arm.setting}' is not evaluated on task '{task}'")


def with_calibrated_preconditions(spec: ClaimsSpec) -> ClaimsSpec | None:
    """The spec with every raw-accuracy precondition read on calibrated accuracy instead (for the
    report's sensitivity analysis, which is not a pre-registered rule); None when it has none."""
    changed = copy.deepcopy(spec)
    raw = [c for claim in changed.claims for part in claim.parts for c in part.preconditions if c.measure == "accuracy"]
    for cond in raw:
        cond.measure = "calibrated"
    return changed if raw else None
