"""A run's per-item results as the report reads them (RunData, from results.sqlite alone), and the
render-agnostic Table the report's builders fill."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polyalign.core.languages import PAPER_LANGUAGES
from polyalign.evaluation.stats import balanced_accuracy, macro_f1
from polyalign.study.variants import split_seeded


def p_text(value: float | None) -> str:
    """A p-value as tables print it: three decimals, or scientific notation below 0.001."""
    return "–" if value is None else (f"{value:.3f}" if value >= 0.001 else f"{value:.1e}")


@dataclass
class Table:
    """A rendered-agnostic table: `rows[i][0]` is the row label; `kinds[j]` formats column j
    (acc, delta, p, int, text); `best` holds (row, column) cells to mark."""

    name: str
    title: str
    header: list[str]
    rows: list[list]
    kinds: list[str]
    best: set = field(default_factory=set)
    note: str = ""

    def cell(self, i: int, j: int) -> str:
        value, kind = self.rows[i][j], self.kinds[j]
        if value is None:
            return "–"
        return {
            "acc": lambda v: f"{100 * v:.1f}",
            "delta": lambda v: f"{100 * v:+.1f}",
            "p": p_text,
        }.get(kind, str)(value)


@dataclass
class RunData:
    """A run's current results: labels[(model, setting, task, mode, scoring)][lang][idx] = (gold, pred),
    correct[...][lang][idx] = bool (a tie, pred None, is wrong); class_order[(task, mode, scoring)];
    scores[...][lang][idx] = the item's saved class scores (None if the store holds none)."""

    run_dir: Path
    experiment: dict
    plan: list[dict]
    correct: dict
    labels: dict = field(default_factory=dict)
    class_order: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)

    def conditions(self) -> list[tuple[str, str, str]]:
        return list(dict.fromkeys(k[2:] for k in self.correct))

    def variants(self, condition=None) -> list[tuple[str, str]]:
        return list(dict.fromkeys(k[:2] for k in self.correct if condition is None or k[2:] == condition))

    def langs(self) -> list[str]:
        found = {lang for by_lang in self.correct.values() for lang in by_lang}
        return sorted(found, key=lambda c: (PAPER_LANGUAGES.index(c) if c in PAPER_LANGUAGES else 99, c))

    def accuracy(self, variant, condition, lang) -> float | None:
        items = self.correct.get((*variant, *condition), {}).get(lang)
        return float(np.mean(list(items.values()))) if items else None

    def average(self, variant, condition, langs=None) -> float | None:
        langs = self.langs() if langs is None else langs
        accs = [a for lang in langs if (a := self.accuracy(variant, condition, lang)) is not None]
        return float(np.mean(accs)) if accs else None

    def pairs(self, variant, condition, lang) -> list[tuple]:
        """(gold, pred) of each item, in index order."""
        items = self.labels.get((*variant, *condition), {}).get(lang, {})
        return [items[i] for i in sorted(items)]

    def class_scores(self, variant, condition, lang) -> tuple[float | None, float | None]:
        """(balanced accuracy, macro-F1) on one language."""
        pairs = self.pairs(variant, condition, lang)
        gold, pred = [g for g, _ in pairs], [p for _, p in pairs]
        return balanced_accuracy(gold, pred), macro_f1(gold, pred)

    def classes(self, condition) -> list[str]:
        """The task's classes (score order), then any other gold or predicted label."""
        found = {
            p
            for k, by in self.labels.items()
            if k[2:] == condition
            for it in by.values()
            for pair in it.values()
            for p in pair
            if p is not None
        }
        known = list(self.class_order.get(condition, []))
        return known + sorted(found - set(known))

    def seen(self, setting: str) -> set[str]:
        """The languages of a setting's pairs (of each seed's adapter NAME@s<SEED> too)."""
        setting = split_seeded(setting)[0]
        for s in self.experiment.get("alignment", []):
            if s["name"] == setting:
                return {*s["sources"], s["target"]}
        return set()

    def seen_marks(self, condition) -> tuple[dict[str, str], str]:
        """Each language's mark in a table of `condition`: " †" when every aligned setting shown saw
        it in training, " (†)" when only some did, and the note saying so. Why per table: a union over
        all settings would mark a language seen for a column whose adapter never saw it."""
        names = list(dict.fromkeys(split_seeded(s)[0] for _, s in self.variants(condition) if s != "base"))
        seen = {name: self.seen(name) for name in names}
        marks = {}
        for lang in self.langs():
            hits = [name for name in names if lang in seen[name]]
            marks[lang] = " †" if hits and len(hits) == len(names) else " (†)" if hits else ""
        if not any(marks.values()):
            return marks, ""
        note = "† seen in alignment training" + (" by every setting shown" if len(names) > 1 else "") + "."
        if " (†)" in marks.values():
            note += " (†) seen by some: " + "; ".join(f"{n}: {', '.join(sorted(seen[n]))}" for n in names) + "."
        return marks, note


def load_run(run_dir: str | Path) -> RunData:
    """Everything the report needs, from RUN_DIR/results.sqlite alone (plus analysis folders)."""
    from polyalign.study.store import Store
    from polyalign.study.store_check import check_not_empty, check_not_wiped, sample_scores

    run_dir = Path(run_dir)
    check_not_empty(run_dir)  # a 0-byte store is wiped, not "no results yet"
    with Store(run_dir, create=False) as store:
        experiment, plan = store.get_meta("experiment", {}), store.get_meta("plan", [])
        rows = list(store.samples())
    check_not_wiped(run_dir, experiment, plan, len(rows))
    order = {name: i for i, name in enumerate(["base"] + [s["name"] for s in experiment.get("alignment", [])])}
    models = {m: i for i, m in enumerate(experiment.get("models", []))}
    tasks = {t: i for i, t in enumerate(experiment.get("tasks", []))}
    declared = [*experiment.get("modes", []), *(m for ms in experiment.get("task_modes", {}).values() for m in ms)]
    modes = {m: i for i, m in enumerate(dict.fromkeys(declared))}
    rows.sort(
        key=lambda r: (
            tasks.get(r["task"], 99),
            modes.get(r["mode"], 99),
            r["scoring"],
            models.get(r["model"], 99),
            order.get(split_seeded(r["setting"])[0], 99),
            split_seeded(r["setting"])[1] or 0,  # a setting's seeds in numeric order
        )
    )
    correct: dict = {}
    labels: dict = {}
    class_order: dict = {}
    scores: dict = {}
    for r in rows:
        key = (r["model"], r["setting"], r["task"], r["mode"], r["scoring"])
        hit = r["pred"] is not None and r["pred"] == r["gold"]  # a tie (pred None) counts as wrong
        correct.setdefault(key, {}).setdefault(r["lang"], {})[r["idx"]] = hit
        labels.setdefault(key, {}).setdefault(r["lang"], {})[r["idx"]] = (r["gold"], r["pred"])
        item_scores = sample_scores(r, run_dir)  # a bad row: one line naming it, never a traceback
        scores.setdefault(key, {}).setdefault(r["lang"], {})[r["idx"]] = item_scores
        if key[2:] not in class_order and item_scores:
            class_order[key[2:]] = list(item_scores)
    return RunData(run_dir, experiment, plan, correct, labels, class_order, scores)
