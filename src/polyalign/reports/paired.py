"""The report's paired tests of aligned against base: per language (Table 5) and pooled over the
seen / unseen / all language groups (Table 7); the tests themselves are polyalign.evaluation.stats'.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from polyalign.evaluation.stats import (
    RESAMPLES,
    SEED,
    benjamini_hochberg,
    bootstrap_average_ci,
    discordant,
    holm,
    item_matrix,
    language_groups,
    paired_bootstrap,
    sign_test,
)
from polyalign.reports.comparisons import ALPHA, Comparison, comparisons, mean_present
from polyalign.reports.run_data import RunData, Table


class LanguageTest(NamedTuple):
    """One language of a comparison in Table 5, in its column order (the corrections follow)."""

    name: str
    lang: str
    n: int
    base: float
    aligned: float
    delta: float
    p_boot: float
    p_boot_holm: float | None  # over the comparison's languages, once all are known
    fixed: int
    broken: int
    p_sign: float


def language_test(name: str, lang: str, aligned: np.ndarray, base: np.ndarray) -> LanguageTest:
    """The paired bootstrap and the exact sign test of one language's paired items."""
    delta, p_boot = paired_bootstrap(aligned, base)
    fixed, broken = discordant(aligned, base)
    p_sign = sign_test(fixed, broken)
    return LanguageTest(
        name, lang, len(aligned), float(base.mean()), float(aligned.mean()), delta, p_boot, None, fixed, broken, p_sign
    )


def significance_table(run: RunData) -> Table:
    """Table 5: per-language paired tests, Holm-corrected over the languages of each comparison."""
    rows: list[list] = []
    best: set = set()
    for c in comparisons(run):
        found = [language_test(c.name, lang, a, b) for lang, (_, a, b) in c.items.items()]
        boot_holm = holm([t.p_boot for t in found])
        sign_holm, sign_bh = holm([t.p_sign for t in found]), benjamini_hochberg([t.p_sign for t in found])
        for test, p_boot_holm, p_sign_holm, p_sign_bh in zip(found, boot_holm, sign_holm, sign_bh):
            best |= {(len(rows), j) for j in (5, 11) if p_sign_holm < ALPHA}
            best |= {(len(rows), 7)} if p_boot_holm < ALPHA else set()
            rows.append([*test._replace(p_boot_holm=p_boot_holm), p_sign_holm, p_sign_bh])
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


class PooledRow(NamedTuple):
    """One row of Table 7 in its column order, before the Holm correction over the groups."""

    name: str
    group: str
    n_langs: int
    n_pairs: int
    base: float | None
    aligned: float | None
    delta: float
    ci_low: float
    ci_high: float
    fixed: int
    broken: int
    p_sign: float
    items_better: int
    items_worse: int
    p_items: float


def pooled_row(c: Comparison, group: str, langs: list[str]) -> PooledRow:
    """The comparison pooled over `langs` (see `pooled_table`)."""
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
    tests = (fixed, broken, sign_test(fixed, broken), better, worse, sign_test(better, worse))
    return PooledRow(c.name, group, len(langs), n_pairs, base, aligned, delta, lo, hi, *tests)


def pooled_table(run: RunData) -> Table:
    """Table 7: seen / unseen / all languages pooled: sign test on the summed discordant counts and a
    bootstrap CI of the average difference resampling items jointly across languages."""
    rows: list[list] = []
    best: set = set()
    for c in comparisons(run):
        groups = language_groups(c.items, c.seen)
        found = [pooled_row(c, group, langs) for group, langs in groups.items()]
        for row, p_holm in zip(found, holm([row.p_items for row in found])):  # the groups overlap: one family
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
