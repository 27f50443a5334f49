"""What the report compares: each aligned setting against its base model on one condition, paired
by (language, item), and how tables name models, settings and conditions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polyalign.reports.run_data import RunData

ALPHA = 0.05


def short(model: str) -> str:
    """A model as a table names it: a local folder by its last part, a hub name as it is."""
    path = Path(model)
    return path.name if len(path.parts) > 1 and path.exists() else model


def variant_name(variant: tuple[str, str]) -> str:
    """How a table names a (model, setting)."""
    return f"{short(variant[0])} / {variant[1]}"


def condition_name(condition: tuple[str, str, str]) -> str:
    """How a table names a (task, mode, scoring) condition."""
    task, mode, scoring = condition
    return f"{task} ({mode} labels, {scoring})"


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
