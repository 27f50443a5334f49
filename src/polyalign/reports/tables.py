"""The report's tables, built from a run store's per-item samples (every number recomputed here).

polyalign.reports.report draws the figures and writes the file; polyalign.reports.formats lays tables out;
polyalign.reports.comparisons pairs aligned with base, polyalign.reports.paired tests them (Tables 5
and 7), polyalign.evaluation.stats holds the tests and scores.
"""

from __future__ import annotations

import numpy as np

from polyalign.evaluation.stats import label_distribution, language_groups
from polyalign.reports.comparisons import (
    Comparison,
    comparisons,
    condition_name,
    mean_present,
    variant_name,
)
from polyalign.reports.paired import pooled_table, significance_table
from polyalign.reports.run_data import RunData, Table


def _best(values: list, offset: int = 1) -> set[int]:
    present = [v for v in values if v is not None]
    return {j + offset for j, v in enumerate(values) if present and v is not None and v >= max(present) - 1e-12}


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
