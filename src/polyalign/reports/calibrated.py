"""The report's prior-free views: every comparison on raw and batch-calibrated outcomes, and ΔAUC.

An adapter that only moves the label prior raises raw accuracy on a skewed test set but neither
calibrated accuracy nor AUC (polyalign.evaluation.calibration). `calibrate_run` swaps each prediction for
its calibrated one, so polyalign.reports.tables' builders give the calibrated tables unchanged; this module
adds Table 1 with both, the headline per comparison, and ROC-AUC with paired bootstrap CIs.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from polyalign.evaluation.calibration import batch_calibrate, bootstrap_aucs, delta_auc_interval, log_odds, roc_auc
from polyalign.evaluation.stats import RESAMPLES, SEED, holm, item_matrix, language_groups
from polyalign.reports.comparisons import ALPHA, Comparison, comparisons, condition_name, mean_present
from polyalign.reports.paired import pooled_row, pooled_table, significance_table
from polyalign.reports.run_data import RunData, Table
from polyalign.reports.tables import distribution_table, per_language_table

CALIBRATION = "batch calibration (Zhou et al., ICLR 2024)"


def calibrate_run(run: RunData) -> RunData:
    """The run with every prediction replaced by its batch-calibrated one (class means per model,
    setting, condition and language); unscored items and calibrated ties count as wrong."""
    correct: dict = {}
    labels: dict = {}
    for key, by_lang in run.labels.items():
        classes = run.class_order.get(key[2:], [])
        for lang, items in by_lang.items():
            idx = sorted(items)
            scores = run.scores.get(key, {}).get(lang, {})
            for i, pred in zip(idx, batch_calibrate([scores.get(i) for i in idx], key[4], classes)):
                gold = items[i][0]
                labels.setdefault(key, {}).setdefault(lang, {})[i] = (gold, pred)
                correct.setdefault(key, {}).setdefault(lang, {})[i] = pred is not None and pred == gold
    return replace(run, correct=correct, labels=labels)


def auc_of(run: RunData, variant, condition, lang: str) -> float | None:
    """ROC-AUC of one variant on one language's evaluated items (None: not a two-class task)."""
    classes, key = run.class_order.get(condition, []), (*variant, *condition)
    items = run.labels.get(key, {}).get(lang, {})
    if len(classes) != 2 or not items:
        return None
    values = _item_log_odds(run, key, lang)
    return roc_auc([values.get(i) for i in sorted(items)], [items[i][0] == classes[0] for i in sorted(items)])


def _item_log_odds(run: RunData, key: tuple, lang: str) -> dict[int, float | None]:
    classes, scores = run.class_order.get(key[2:], []), run.scores.get(key, {}).get(lang, {})
    return {i: log_odds(s, key[4], classes) for i, s in scores.items()}


AucBoot = dict[str, tuple[np.ndarray, np.ndarray]]  # language: (aligned, base) AUC, observed then resampled


def auc_bootstrap(run: RunData, c: Comparison, boots: dict[str, AucBoot | None] | None = None) -> AucBoot | None:
    """Per language of the comparison: (aligned, base) AUC on the items both scored, observed
    (row 0) and under each bootstrap resample of the benchmark items, drawn jointly for every
    language (polyalign.evaluation.calibration.bootstrap_aucs). None: not a two-class task. `boots`: computed
    earlier, by comparison name (the headline and Table C3 share them)."""
    if boots is not None and c.name in boots:
        return boots[c.name]
    classes, langs = run.class_order.get(c.condition, []), list(c.items)
    if len(classes) != 2:
        return None
    planes = []  # aligned, base log-odds on each language's paired items
    for setting in (c.setting, "base"):
        odds = [_item_log_odds(run, (c.model, setting, *c.condition), lang) for lang in langs]
        planes.append(item_matrix([{i: by.get(i) for i in c.items[lang][0]} for lang, by in zip(langs, odds)]))
    golds = [run.labels[(c.model, "base", *c.condition)][lang] for lang in langs]
    first = item_matrix([{i: gold[i][0] == classes[0] for i in c.items[lang][0]} for lang, gold in zip(langs, golds)])
    aligned, base = bootstrap_aucs(planes[0], planes[1], first == 1)
    return {lang: (aligned[:, k], base[:, k]) for k, lang in enumerate(langs)}


def auc_cells(boot: AucBoot | None, langs: list[str]) -> list:
    """[AUC base, AUC aligned, ΔAUC, CI low, CI high] over `langs`: means over languages of
    per-language AUC, the CI pooling them per resample; Nones without two classes."""
    if boot is None:
        return [None] * 5
    aligned = np.stack([boot[lang][0] for lang in langs], axis=1)
    base = np.stack([boot[lang][1] for lang in langs], axis=1)
    means = [mean_present([v for v in x[0] if not np.isnan(v)]) for x in (base, aligned)]
    return [*means, *delta_auc_interval(aligned, base)]


def first_class_rates(run: RunData, cal: RunData, c: Comparison, langs: list[str]) -> list:
    """[first class, gold rate, predicted rate base / aligned raw, base / aligned calibrated]: the
    label prior before and after alignment, means over languages of the paired items' shares."""
    first = (run.class_order.get(c.condition) or [None])[0]
    rates: list = [first]
    sources = [(run, "base", 0), (run, "base", 1), (run, c.setting, 1), (cal, "base", 1), (cal, c.setting, 1)]
    for data, setting, part in sources:  # part 0: gold, 1: prediction
        labels = data.labels[(c.model, setting, *c.condition)]
        rates.append(
            mean_present([np.mean([labels[lang][i][part] == first for i in c.items[lang][0]]) for lang in langs])
        )
    return rates


def raw_calibrated_table(run: RunData, cal: RunData, condition) -> Table:
    """Table 1: accuracy per language, raw then batch-calibrated, then ROC-AUC (two classes)."""
    raw, calibrated = per_language_table(run, condition), per_language_table(cal, condition)
    variants, width = run.variants(condition), len(raw.header) - 1
    header = raw.header + [f"{h} cal" for h in calibrated.header[1:]]
    rows = [r + c[1:] for r, c in zip(raw.rows, calibrated.rows)]
    best = raw.best | {(i, j + width) for i, j in calibrated.best}
    if len(run.class_order.get(condition, [])) == 2:
        header += [f"{h} AUC" for h in raw.header[1:]]
        langs = run.langs()
        aucs = [[auc_of(run, v, condition, lang) for v in variants] for lang in langs]
        aucs.append([mean_present([a[k] for a in aucs]) for k in range(len(variants))])
        for i, (row, values) in enumerate(zip(rows, aucs)):
            present = [v for v in values if v is not None]
            best |= {
                (i, 1 + 2 * width + k)
                for k, v in enumerate(values)
                if present and v is not None and v >= max(present) - 1e-12
            }
            row.extend(values)
    return Table(
        "per_language",
        "Table 1 — accuracy (%) per language, raw and batch-calibrated, and ROC-AUC (×100): "
        + condition_name(condition),
        header,
        rows,
        ["text"] + ["acc"] * (len(header) - 1),
        best,
        f"{raw.note} cal = {CALIBRATION}: each item's label probabilities renormalised, minus each "
        "class's mean over the language's evaluated items; a calibrated tie or an item without scores "
        "counts as wrong. AUC: of the first class's log-odds, ties at midranks; prior-free.",
    )


def headline_table(run: RunData, cal: RunData | None = None, boots: dict | None = None) -> Table:
    """One line per comparison and language group: raw Δ, calibrated Δ, ΔAUC and the prior shift."""
    cal = calibrate_run(run) if cal is None else cal
    rows: list[list] = []
    best: set = set()
    for c, cc in zip(comparisons(run), comparisons(cal)):
        boot = auc_bootstrap(run, c, boots)
        groups = language_groups(c.items, c.seen)
        pooled = {g: (pooled_row(c, g, langs), pooled_row(cc, g, langs)) for g, langs in groups.items()}
        # the groups overlap: bold on Holm over them, as Table 7 does
        holms = [holm([pair[k].p_items for pair in pooled.values()]) for k in (0, 1)]
        for n, (group, langs) in enumerate(groups.items()):
            raw, calibrated = pooled[group]
            best |= {(len(rows), j) for j, p in ((3, holms[0][n]), (5, holms[1][n])) if p < ALPHA}
            auc = auc_cells(boot, langs)
            rows.append([c.name, group, raw.delta, raw.p_items, calibrated.delta, calibrated.p_items, *auc[2:]])
            rows[-1] += first_class_rates(run, cal, c, langs)
    header = ["model / setting — condition", "languages", "Δ raw (pp)", "p items raw", "Δ cal (pp)", "p items cal"]
    header += ["ΔAUC", "ΔAUC CI low", "ΔAUC CI high", "first class", "gold rate", "base rate", "aligned rate"]
    return Table(
        "headline",
        "Headline — aligned vs base: raw Δ, calibrated Δ, ΔAUC (×100) and the shift of the label prior",
        header + ["base rate cal", "aligned rate cal"],
        rows,
        ["text", "text", "delta", "p", "delta", "p", "delta", "delta", "delta", "text"] + ["acc"] * 5,
        best,
        "Δ = mean over languages of the accuracy difference on paired items; p items = the exact sign "
        "test with the benchmark item as the unit (Tables 7 and C2). cal: after "
        f"{CALIBRATION}. ΔAUC: of the first class's log-odds, with a 95% paired bootstrap CI "
        f"({RESAMPLES} resamples, seed {SEED}) resampling benchmark items jointly across languages. "
        "Rates: share of items predicted as the first class (gold: its share of the test items), "
        "before (base) and after (aligned) alignment, raw and calibrated. A raw gain with no "
        f"calibrated gain and no ΔAUC is a shift of the label prior. Bold: p items < {ALPHA} after Holm over "
        "the comparison's overlapping language groups.",
    )


def auc_table(run: RunData, boots: dict | None = None) -> Table:
    """Table C3: ROC-AUC of base and aligned per language and pooled, ΔAUC with a bootstrap CI."""
    rows: list[list] = []
    for c in comparisons(run):
        if len(run.class_order.get(c.condition, [])) != 2:
            continue
        boot = auc_bootstrap(run, c, boots)
        for lang in c.items:
            rows.append([c.name, lang, len(c.items[lang][0]), *auc_cells(boot, [lang])])
        for group, langs in language_groups(c.items, c.seen).items():
            n_pairs = sum(len(c.items[lang][0]) for lang in langs)
            rows.append([c.name, f"pooled: {group}", n_pairs, *auc_cells(boot, langs)])
    return Table(
        "auc",
        f"Table C3 — ROC-AUC (×100), aligned vs base, with 95% paired bootstrap CIs of ΔAUC "
        f"({RESAMPLES} resamples, seed {SEED})",
        ["model / setting — condition", "language", "n", "AUC base", "AUC aligned", "ΔAUC", "CI low", "CI high"],
        rows,
        ["text", "text", "int", "acc", "acc", "delta", "delta", "delta"],
        set(),
        "AUC of the first class's log-odds (Mann-Whitney, ties at midranks) on the items scored by both "
        "models; pooled rows average over languages and resample benchmark items jointly across them. "
        "A shift of the label prior leaves AUC unchanged: ΔAUC measures a better ranking of the items.",
    )


def _numbered(table: Table, name: str, number: str) -> Table:
    title = re.sub(r"^Table \d+ — ", f"Table {number} — batch-calibrated: ", table.title)
    return replace(table, name=name, title=title, note=f"{table.note} Outcomes after {CALIBRATION}.")


def calibrated_tables(run: RunData, cal: RunData | None = None, boots: dict | None = None) -> list[Table]:
    """Tables C1-C4: the per-language and pooled comparisons (fixed/broken, sign tests, bootstrap)
    on calibrated outcomes, ROC-AUC, and the calibrated predicted-label distribution."""
    cal = calibrate_run(run) if cal is None else cal
    tables = [_numbered(significance_table(cal), "significance_calibrated", "C1")]
    tables += [_numbered(pooled_table(cal), "pooled_calibrated", "C2"), auc_table(run, boots)]
    tables += [_numbered(distribution_table(cal, c), "label_distribution_calibrated", "C4") for c in cal.conditions()]
    return tables


def with_calibration(run: RunData, tables: list[Table], cal: RunData | None = None) -> list[Table]:
    """polyalign.reports.tables' tables with calibration: Table 1 (one per condition, built first) replaced by
    its raw + calibrated + AUC version, the headline after it, Tables C1-C4 at the end. `cal`: the
    run's `calibrate_run`, when the caller has it already."""
    cal = calibrate_run(run) if cal is None else cal
    first = [raw_calibrated_table(run, cal, c) for c in run.conditions()]
    rest = [t for t in tables if t.name != "per_language"]
    boots = {c.name: auc_bootstrap(run, c) for c in comparisons(run)}
    out = first + [headline_table(run, cal, boots)] + rest + calibrated_tables(run, cal, boots)
    return [t for t in out if t.rows]
