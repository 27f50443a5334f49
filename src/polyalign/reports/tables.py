"""The report's tables, built from a run store's per-item samples (every number recomputed here).

polyalign.reports.report draws the figures and writes the file; polyalign.reports.formats lays tables out;
polyalign.evaluation.stats holds the tests and scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polyalign.evaluation.stats import (
    RESAMPLES,
    SEED,
    benjamini_hochberg,
    bootstrap_average_ci,
    discordant,
    holm,
    item_matrix,
    label_distribution,
    language_groups,
    paired_bootstrap,
    sign_test,
)
from polyalign.reports.run_data import RunData, Table

ALPHA = 0.05


def short(model: str) -> str:
    path = Path(model)
    return path.name if len(path.parts) > 1 and path.exists() else model


def variant_name(variant: tuple[str, str]) -> str:
    """How a table names a (model, setting)."""
    return f"{short(variant[0])} / {variant[1]}"


def condition_name(condition: tuple[str, str, str]) -> str:
    """How a table names a (task, mode, scoring) condition."""
    task, mode, scoring = condition
    return f"{task} ({mode} labels, {scoring})"


def _best(values: list, offset: int = 1) -> set[int]:
    present = [v for v in values if v is not None]
    return {j + offset for j, v in enumerate(values) if present and v is not None and v >= max(present) - 1e-12}


def mean_present(values: Iterable) -> float | None:
    """The mean of the values (numbers or None) that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


@dataclass
class Comparison:
    """One aligned setting vs the base model of the same model on one condition: the family of
    per-language tests that a multiple-comparison correction runs over."""

    model: str
    setting: str
    condition: tuple[str, str, str]
    name: str
    seen: set[str]
    items: dict[str, tuple[list[int], np.ndarray, np.ndarray]]  # lang: (idx, aligned, base) on shared items


def comparisons(run: RunData) -> Iterator[Comparison]:
    for condition in run.conditions():
        for model, setting in run.variants(condition):
            base = run.correct.get((model, "base", *condition))
            if setting == "base" or base is None:
                continue
            aligned = run.correct[(model, setting, *condition)]
            items = {}
            for lang in (lang for lang in run.langs() if lang in aligned and lang in base):
                idx = sorted(set(aligned[lang]) & set(base[lang]))
                if not idx:
                    continue
                items[lang] = (
                    idx,
                    np.array([aligned[lang][i] for i in idx], dtype=bool),
                    np.array([base[lang][i] for i in idx], dtype=bool),
                )
            yield Comparison(
                model,
                setting,
                condition,
                f"{variant_name((model, setting))} — {condition_name(condition)}",
                run.seen(setting),
                items,
            )


def per_language_table(run: RunData, condition) -> Table:
    """Table 1: accuracy per language, best marked."""
    variants, best = run.variants(condition), set()
    marks, seen_note = run.seen_marks(condition)
    rows: list[list] = []
    for lang in run.langs() + ["avg"]:
        values = [run.average(v, condition) if lang == "avg" else run.accuracy(v, condition, lang) for v in variants]
        best |= {(len(rows), j) for j in _best(values)}
        rows.append([lang + marks[lang] if lang != "avg" else "average", *values])
    counts = sorted({len(i) for k, by in run.correct.items() if k[2:] == condition for i in by.values()})
    counts_text = ", ".join(map(str, counts))
    return Table(
        "per_language",
        f"Table 1 — accuracy (%) per language: {condition_name(condition)}",
        ["language", *map(variant_name, variants)],
        rows,
        ["text"] + ["acc"] * len(variants),
        best,
        " ".join(x for x in ("Best per language in bold.", seen_note, f"Items per language: {counts_text}.") if x),
    )


def averages_tables(run: RunData) -> list[Table]:
    """Table 2 (averages per model and setting) and Table 3 (per task)."""
    variants, conditions = run.variants(), run.conditions()
    rows = []
    for v in variants:
        values = [run.average(v, c) for c in conditions]
        rows.append([variant_name(v), *values, mean_present(values)])
    best = {(i, j) for j in range(1, len(conditions) + 2) for i in _best([r[j] for r in rows], 0)}
    t2 = Table(
        "per_model",
        "Table 2 — average accuracy (%) over languages, per model and setting",
        ["model / setting", *map(condition_name, conditions), "mean"],
        rows,
        ["text"] + ["acc"] * (len(conditions) + 1),
        best,
        "Best per column in bold.",
    )
    rows, best = [], set()
    for task in dict.fromkeys(c[0] for c in conditions):
        values = [mean_present([run.average(v, c) for c in conditions if c[0] == task]) for v in variants]
        best |= {(len(rows), j) for j in _best(values)}
        rows.append([task, *values])
    t3 = Table(
        "per_task",
        "Table 3 — average accuracy (%) per task (over languages and modes)",
        ["task", *map(variant_name, variants)],
        rows,
        ["text"] + ["acc"] * len(variants),
        best,
        "Best per task in bold.",
    )
    return [t2, t3]


def seen_unseen_table(run: RunData) -> Table:
    """Table 4: average accuracy over the languages seen vs unseen in alignment training."""
    rows: list[list] = []
    for c in comparisons(run):
        groups = language_groups(c.items, c.seen, drop_empty=False)
        seen = groups["seen"]
        cells = []
        for group in (seen, groups["unseen"]):
            b, a = _paired_mean(c, group, 2), _paired_mean(c, group, 1)
            cells += [b, a, a - b if a is not None and b is not None else None]
        rows.append([c.name, ",".join(seen) or "–", *cells])
    return Table(
        "seen_unseen",
        "Table 4 — languages seen vs unseen in alignment training (average %)",
        [
            "model / setting — condition",
            "seen",
            "base seen",
            "aligned seen",
            "Δ seen",
            "base unseen",
            "aligned unseen",
            "Δ unseen",
        ],
        rows,
        ["text", "text"] + ["acc", "acc", "delta"] * 2,
        set(),
        "Seen = the setting's source languages and its target. Averages over languages of the accuracy "
        "on the items both base and aligned were evaluated on (paired items).",
    )


def _paired_mean(c: Comparison, langs: list[str], part: int) -> float | None:
    """Mean over `langs` of the accuracy on the comparison's paired items (part 1: aligned, 2: base)."""
    return mean_present([np.mean(c.items[lang][part]) for lang in langs])


def significance_table(run: RunData) -> Table:
    """Table 5: per-language paired tests, Holm-corrected over the languages of each comparison."""
    rows: list[list] = []
    best: set = set()
    for c in comparisons(run):
        found: list[list] = []  # one row per language; the corrected p-values (None here) follow from all of them
        for lang, (_, a, b) in c.items.items():
            delta, p_boot = paired_bootstrap(a, b)
            fixed, broken = discordant(a, b)
            p_sign = sign_test(fixed, broken)
            base, aligned = float(b.mean()), float(a.mean())
            found.append([c.name, lang, len(a), base, aligned, delta, p_boot, None, fixed, broken, p_sign])
        boot_holm = holm([r[6] for r in found])
        sign_holm, sign_bh = holm([r[10] for r in found]), benjamini_hochberg([r[10] for r in found])
        for row, p_boot_holm, p_sign_holm, p_sign_bh in zip(found, boot_holm, sign_holm, sign_bh):
            row[7] = p_boot_holm
            best |= {(len(rows), j) for j in (5, 11) if p_sign_holm < ALPHA}
            best |= {(len(rows), 7)} if p_boot_holm < ALPHA else set()
            rows.append([*row, p_sign_holm, p_sign_bh])
    return Table(
        "significance",
        f"Table 5 — aligned vs base per language: paired bootstrap ({RESAMPLES} "
        f"resamples, seed {SEED}) and exact sign test",
        [
            "model / setting — condition",
            "language",
            "n",
            "base",
            "aligned",
            "Δ (pp)",
            "p boot",
            "p boot (Holm)",
            "fixed",
            "broken",
            "p sign",
            "p sign (Holm)",
            "p sign (BH)",
        ],
        rows,
        ["text", "text", "int", "acc", "acc", "delta", "p", "p", "int", "int", "p", "p", "p"],
        best,
        "Items paired by index: n, base and aligned are on the items both were evaluated on; two-sided "
        "p-values. fixed = items wrong in base and right aligned, "
        "broken = the reverse; p sign = exact sign test (McNemar exact) on them. Holm = Holm-Bonferroni "
        "adjustment over the languages of one comparison (family-wise error rate); BH = "
        f"Benjamini-Hochberg (false discovery rate), for reference. Bold where the Holm-adjusted p < {ALPHA}.",
    )


def pooled_row(c: Comparison, group: str, langs: list[str]) -> list:
    """One row of Table 7: the comparison pooled over `langs` (see `pooled_table`)."""
    rows = [dict(zip(idx, a.astype(float) - b.astype(float))) for idx, a, b in (c.items[lang] for lang in langs)]
    diff = item_matrix(rows)  # (language, benchmark item); NaN: not evaluated
    fixed = broken = 0
    for lang in langs:
        f, br = discordant(*c.items[lang][1:])
        fixed, broken = fixed + f, broken + br
    delta, lo, hi = bootstrap_average_ci(diff)
    per_item = np.nansum(diff, axis=0)  # net items fixed over languages, per benchmark item
    better, worse = int((per_item > 0).sum()), int((per_item < 0).sum())
    base = mean_present([c.items[lang][2].mean() for lang in langs])
    aligned = mean_present([c.items[lang][1].mean() for lang in langs])
    n_pairs = int((~np.isnan(diff)).sum())
    tests = [fixed, broken, sign_test(fixed, broken), better, worse, sign_test(better, worse)]
    return [c.name, group, len(langs), n_pairs, base, aligned, delta, lo, hi, *tests]


def pooled_table(run: RunData) -> Table:
    """Table 7: seen / unseen / all languages pooled: sign test on the summed discordant counts and a
    bootstrap CI of the average difference resampling items jointly across languages."""
    rows: list[list] = []
    best: set = set()
    for c in comparisons(run):
        groups = language_groups(c.items, c.seen)
        found = [pooled_row(c, group, langs) for group, langs in groups.items()]
        for row, p_holm in zip(found, holm([row[-1] for row in found])):  # the groups overlap: one family
            if p_holm < ALPHA:
                best.add((len(rows), 6))
            rows.append([*row, p_holm])
    return Table(
        "pooled",
        f"Table 7 — aligned vs base pooled over languages: exact sign test and 95% "
        f"bootstrap CI of Δ ({RESAMPLES} resamples, seed {SEED})",
        [
            "model / setting — condition",
            "languages",
            "n langs",
            "n pairs",
            "base",
            "aligned",
            "Δ (pp)",
            "Δ CI low",
            "Δ CI high",
            "fixed",
            "broken",
            "p sign",
            "items better",
            "items worse",
            "p items",
            "p items (Holm)",
        ],
        rows,
        ["text", "text", "int", "int", "acc", "acc", "delta", "delta", "delta", "int", "int", "p", "int", "int"]
        + ["p", "p"],
        best,
        "Averages are means over languages of per-language accuracy on paired items. The CI resamples "
        "item indices jointly across languages (the test sets are item-parallel). fixed/broken and p sign "
        "pool every (language, item) pair, which are not independent across languages (translations of "
        "the same reviews). The headline test treats the benchmark item as the unit: per item, the net "
        "number of languages fixed (fixed minus broken); 'items better/worse' count items with a net "
        "gain/loss and p items is the exact sign test over them, valid for independent items. Per "
        "language, see the Holm-corrected tests (Table 5). The seen, unseen and all rows of a comparison "
        "overlap, so p items (Holm) corrects over them (Holm-Bonferroni, valid under any dependence); "
        f"Δ bold where p items (Holm) < {ALPHA}.",
    )


def balanced_table(run: RunData, condition) -> Table:
    """Table 6: accuracy, balanced accuracy and macro-F1 side by side: a model that answers one
    label everywhere keeps its accuracy on a skewed test set, not its balanced accuracy."""
    variants, langs, best = run.variants(condition), run.langs(), set()
    marks, seen_note = run.seen_marks(condition)
    rows: list[list] = []
    scores: dict[str, list[tuple]] = {
        lang: [(run.accuracy(v, condition, lang), *run.class_scores(v, condition, lang)) for v in variants]
        for lang in langs
    }
    scores["average"] = [
        tuple(mean_present([scores[lang][k][m] for lang in langs]) for m in range(3)) for k in range(len(variants))
    ]
    for lang, values in scores.items():
        best |= {(len(rows), 3 * j - 1) for j in _best([v[1] for v in values])}
        rows.append([lang + marks.get(lang, ""), *[x for v in values for x in v]])
    header = [f"{variant_name(v)} {m}" for v in variants for m in ("acc", "bal acc", "macro-F1")]
    return Table(
        "balanced",
        f"Table 6 — accuracy, balanced accuracy and macro-F1 (%) per language: {condition_name(condition)}",
        ["language", *header],
        rows,
        ["text"] + ["acc"] * len(header),
        best,
        "Balanced accuracy = mean over the gold classes present of per-class recall; macro-F1 = mean "
        "over the same classes of F1; a tie counts as wrong. Best balanced accuracy per row in bold; "
        f"the average row is the mean over languages. {seen_note}".rstrip(),
    )


def distribution_table(run: RunData, condition) -> Table:
    """Table 8: share of each predicted label per variant and language, against the gold shares."""
    classes, variants, langs = run.classes(condition), run.variants(condition), run.langs()
    preds = {(v, lang): [p for _, p in run.pairs(v, condition, lang)] for v in variants for lang in langs}
    ties = any(p is None for ps in preds.values() for p in ps)
    gold = {}
    for lang in langs:
        merged: dict = {}
        for v in variants:
            merged.update(run.labels.get((*v, *condition), {}).get(lang, {}))
        gold[lang] = [g for g, _ in merged.values()]

    def row(label: str, values: list) -> list:
        shares = label_distribution(values, classes)
        return [label, len(values), *(shares[c] for c in classes), *([shares[None]] if ties else [])]

    if len({tuple(label_distribution(g, classes).items()) for g in gold.values()}) <= 1:
        rows = [row("all languages — gold", [g for lang in langs for g in gold[lang]])]
    else:
        rows = [row(f"{lang} — gold", gold[lang]) for lang in langs]
    for lang in langs + ["all languages"]:
        for v in variants:
            values = [p for x in langs for p in preds[(v, x)]] if lang == "all languages" else preds[(v, lang)]
            if values:
                rows.append(row(f"{lang} — {variant_name(v)}", values))
    return Table(
        "label_distribution",
        f"Table 8 — predicted-label distribution (%): {condition_name(condition)}",
        ["language — variant", "n", *classes, *(["tie"] if ties else [])],
        rows,
        ["text", "int"] + ["acc"] * (len(classes) + ties),
        set(),
        "Share of items predicted as each class; the gold row gives the test set's own shares (one row "
        "when every language has the same). " + ("tie = no single best label (counted wrong)." if ties else "No ties."),
    )


def build_tables(run: RunData) -> list[Table]:
    conditions = run.conditions()
    tables = [per_language_table(run, c) for c in conditions]
    tables += averages_tables(run) + [seen_unseen_table(run), significance_table(run)]
    tables += [balanced_table(run, c) for c in conditions] + [pooled_table(run)]
    tables += [distribution_table(run, c) for c in conditions]
    return [t for t in tables if t.rows]  # a run without adapters has no comparison tables
