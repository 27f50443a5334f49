"""The report's tables of training seeds and shuffled controls (polyalign.reports.report adds them).

One seed's adapter can gain or lose a few points by luck of its LoRA init and data order, so a
setting trained with `seeds` is read as a group (its adapters are stored as NAME@s<SEED>,
polyalign.study.variants): each seed's Δ, their mean and sd, and one pooled test in which the aligned
outcome of each (language, item) is its correctness averaged over the seeds. A shuffled control
(`pairing: shuffled`, `control_of: NAME`) is trained on the same questions paired with other
items' translations: aligned minus control isolates what the item-parallel pairing itself adds;
given the run's batch-calibrated copy (polyalign.reports.calibrated.calibrate_run), the control table repeats
that comparison with the label prior removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from polyalign.evaluation.stats import RESAMPLES, SEED, bootstrap_average_ci, paired_difference, sign_test
from polyalign.reports.comparisons import ALPHA, condition_name, short
from polyalign.reports.run_data import RunData, Table
from polyalign.study.variants import split_seeded

Outcomes = dict[str, dict[int, float]]  # lang: item index: correctness (averaged over seeds)
CALIBRATED_HEADER = ["Δ calibrated (pp)", "calibrated CI low", "calibrated CI high", "p items calibrated"]


@dataclass
class SeedGroup:
    """The adapters of one model and alignment setting on one condition, one per training seed."""

    model: str
    setting: str
    condition: tuple[str, str, str]
    seeds: list[int | None]
    names: list[str]  # stored names, in seed order


def seed_groups(run: RunData, condition: tuple[str, str, str]) -> list[SeedGroup]:
    """Every (model, setting) evaluated on `condition`, its stored names grouped by setting."""
    groups: dict[tuple[str, str], SeedGroup] = {}
    for model, name in run.variants(condition):
        setting, seed = split_seeded(name)
        if name == "base":
            continue
        group = groups.setdefault((model, setting), SeedGroup(model, setting, condition, [], []))
        group.seeds.append(seed)
        group.names.append(name)
    return list(groups.values())


def averaged(run: RunData, model: str, names: list[str], condition: tuple) -> Outcomes:
    """Correctness per (language, item) averaged over `names`, on the items every one of them scored."""
    tables = [run.correct.get((model, name, *condition), {}) for name in names]
    out: Outcomes = {}
    for lang in run.langs():
        if not all(lang in t for t in tables):
            continue
        shared = sorted(set.intersection(*(set(t[lang]) for t in tables)))
        if shared:
            out[lang] = {i: float(np.mean([t[lang][i] for t in tables])) for i in shared}
    return out


class PooledTest(NamedTuple):
    """a - b pooled over languages, in the order of TEST_HEADER: Δ is the mean over languages of the
    mean item difference with its CI; pairs count (language, item) pairs, items benchmark items by
    the sign of their net difference over languages (see the table notes)."""

    n_pairs: int
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    pairs_better: int
    pairs_worse: int
    p_pairs: float
    items_better: int
    items_worse: int
    p_items: float


def pooled_test(a: Outcomes, b: Outcomes) -> PooledTest:
    """The pooled test of a - b on the (language, item) pairs both hold."""
    diff, _ = paired_difference(a, b)
    if not diff.size:
        return PooledTest(0, None, None, None, 0, 0, 1.0, 0, 0, 1.0)
    delta, lo, hi = bootstrap_average_ci(diff)
    better, worse = int((diff > 0).sum()), int((diff < 0).sum())
    per_item = np.nansum(diff, axis=0)
    up, down = int((per_item > 0).sum()), int((per_item < 0).sum())
    n_pairs = int((~np.isnan(diff)).sum())
    return PooledTest(n_pairs, delta, lo, hi, better, worse, sign_test(better, worse), up, down, sign_test(up, down))


def _common(*outcomes: Outcomes) -> dict[str, list[int]]:
    """The items every one of `outcomes` holds, per language."""
    langs = [lang for lang in outcomes[0] if all(lang in o for o in outcomes)]
    shared = {lang: sorted(set.intersection(*(set(o[lang]) for o in outcomes))) for lang in langs}
    return {lang: items for lang, items in shared.items() if items}


def items_mean(outcomes: Outcomes, items: dict[str, list[int]]) -> float | None:
    """Mean over languages of the mean outcome on `items` (accuracy, for one adapter or a seed average)."""
    values = [np.mean([outcomes[lang][i] for i in idx]) for lang, idx in items.items()]
    return float(np.mean(values)) if values else None


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _seeds_text(seeds: list[int | None]) -> str:
    return ",".join("–" if s is None else str(s) for s in seeds)


TEST_HEADER = ["n pairs", "Δ (pp)", "Δ CI low", "Δ CI high", "pairs better", "pairs worse", "p pairs"]
TEST_HEADER += ["items better", "items worse", "p items"]
TEST_KINDS = ["int", "delta", "delta", "delta", "int", "int", "p", "int", "int", "p"]
TEST_NOTE = (
    f"Δ and its 95% CI: mean over languages of the mean item difference, items resampled jointly "
    f"across languages ({RESAMPLES} resamples, seed {SEED}). pairs better/worse count (language, item) "
    f"pairs whose seed-averaged outcome is above/below; they are not independent across languages "
    f"(translations of one item). The headline test is per benchmark item: the net difference summed "
    f"over languages, 'items better/worse' its signs, p items the exact sign test over them. "
    f"Bold: p items < {ALPHA}."
)


def _seed_row(run: RunData, g: SeedGroup) -> tuple[list, PooledTest]:
    """One row of the seeds table (and its pooled test): a setting's seeds against the base model
    on one condition."""
    base = averaged(run, g.model, ["base"], g.condition)
    pooled = averaged(run, g.model, g.names, g.condition)
    items = _common(pooled, base)  # every seed scored these: the seeds' mean Δ is the pooled Δ
    reference = items_mean(base, items)
    per_seed = [_minus(items_mean(averaged(run, g.model, [n], g.condition), items), reference) for n in g.names]
    known = [d for d in per_seed if d is not None]
    test = pooled_test(pooled, base)
    return [
        f"{short(g.model)} / {g.setting} — {condition_name(g.condition)}",
        _seeds_text(g.seeds),
        ", ".join("–" if d is None else f"{100 * d:+.1f}" for d in per_seed),
        reference,
        items_mean(pooled, items),
        float(np.mean(known)) if known else None,
        float(np.std(known, ddof=1)) if len(known) > 1 else None,
        *test,
    ], test


def seeds_table(run: RunData) -> Table:
    """Each seed's Δ (aligned - base, mean over languages), their mean and sd, and the pooled test."""
    found = [_seed_row(run, g) for c in run.conditions() for g in seed_groups(run, c) if len(g.names) > 1]
    rows = [row for row, _ in found]
    header = ["model / setting — condition", "seeds", "Δ per seed (pp)", "base", "aligned (seed mean)"]
    return Table(
        "seeds",
        "Seeds — aligned vs base per training seed, and pooled over seeds",
        [*header, "Δ mean", "Δ sd", *TEST_HEADER],
        rows,
        ["text", "text", "text", "acc", "acc", "delta", "acc", *TEST_KINDS],
        {(i, 8) for i, (_, test) in enumerate(found) if test.p_items < ALPHA},
        "One adapter per seed (stored as SETTING@s<SEED>). Δ per seed: aligned - base accuracy averaged "
        "over languages, on the items every seed and base scored; Δ mean and Δ sd (pp, sample sd) are over "
        "seeds. The pooled test compares base with each (language, item)'s aligned outcome averaged over "
        "seeds. " + TEST_NOTE,
    )


def controls(run: RunData) -> list[tuple[str, str]]:
    """(control, the setting it controls) declared in the run's experiment."""
    declared = run.experiment.get("alignment", [])
    return [(s["name"], s["control_of"]) for s in declared if s.get("pairing") == "shuffled" and s.get("control_of")]


def _control_row(run: RunData, aligned: SeedGroup, control: SeedGroup, cal: RunData | None) -> tuple[list, PooledTest]:
    """One row of the control table (and its raw pooled test): a setting against its shuffled
    control on one condition."""
    model, condition = aligned.model, aligned.condition
    a = averaged(run, model, aligned.names, condition)
    c = averaged(run, model, control.names, condition)
    base = averaged(run, model, ["base"], condition)
    items = _common(a, c, base) if base else _common(a, c)
    accs = [items_mean(base, items) if base else None, items_mean(a, items), items_mean(c, items)]
    calibrated = []
    if cal is not None:
        test = pooled_test(
            averaged(cal, model, aligned.names, condition), averaged(cal, model, control.names, condition)
        )
        calibrated = [test.delta, test.ci_low, test.ci_high, test.p_items]
    raw = pooled_test(a, c)
    return [
        f"{short(model)} / {aligned.setting} vs {control.setting} — {condition_name(condition)}",
        _seeds_text(aligned.seeds),
        _seeds_text(control.seeds),
        *accs,
        _minus(accs[1], accs[0]),
        _minus(accs[2], accs[0]),
        *raw,
        *calibrated,
    ], raw


def control_table(run: RunData, cal: RunData | None = None) -> Table:
    """Aligned vs its shuffled control, paired by (language, item), each averaged over its seeds.

    `cal`: the same run with batch-calibrated outcomes (polyalign.reports.calibrated.calibrate_run), for the
    comparison with the label prior removed; None leaves those columns out."""
    found: list[tuple[list, PooledTest]] = []
    for condition in run.conditions():
        groups = {(g.model, g.setting): g for g in seed_groups(run, condition)}
        for control, of in controls(run):
            for model in dict.fromkeys(m for m, _ in groups):
                if (model, control) in groups and (model, of) in groups:
                    found.append(_control_row(run, groups[(model, of)], groups[(model, control)], cal))
    rows = [row for row, _ in found]
    header = ["model / aligned vs control — condition", "seeds aligned", "seeds control", "base", "aligned"]
    header += ["control", "Δ aligned - base", "Δ control - base"]
    calibrated = CALIBRATED_HEADER if cal is not None else []
    return Table(
        "control",
        f"Control — aligned vs shuffled-pairing control ({'raw and batch-calibrated' if cal else 'raw'} accuracy)",
        [*header, *TEST_HEADER, *calibrated],
        rows,
        ["text"] * 3 + ["acc"] * 3 + ["delta"] * 2 + TEST_KINDS + ["delta", "delta", "delta", "p"][: len(calibrated)],
        {(i, 9) for i, (_, test) in enumerate(found) if test.p_items < ALPHA},
        "The control is trained on the same source and target questions, in the same numbers, each source "
        "question paired with the target question of another item (a seeded derangement). Accuracies are "
        "means over languages on the items aligned, control and base all scored, each adapter group averaged "
        "over its seeds; the test columns compare aligned with control (Δ = aligned - control), paired by "
        "(language, item). "
        + TEST_NOTE
        + (
            " Calibrated: Δ, its CI and p items on batch-calibrated outcomes (polyalign.evaluation.calibration)."
            if cal
            else ""
        ),
    )


def seed_tables(run: RunData, cal: RunData | None = None) -> list[Table]:
    """The seeds and control tables of a run that has any (empty ones are left out); `cal` as in
    `control_table` adds the calibrated comparison of aligned and control."""
    return [t for t in (seeds_table(run), control_table(run, cal)) if t.rows]


def setting_note(setting: dict) -> str:
    """What the report's header adds to a setting's line: its seeds, and whether it is a control."""
    note = ""
    if setting.get("pairing") == "shuffled":
        note += f" Control of {setting.get('control_of')}: pairs shuffled across items."
    if setting.get("seeds"):
        note += f" Seeds {', '.join(map(str, setting['seeds']))} (adapters {setting['name']}@s<seed>)."
    return note
