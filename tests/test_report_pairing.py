"""The report's pairing (polyalign.reports): the header range, † marks, paired base/aligned columns and the bold
p-values of overlapping groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import write_run_store
from polyalign.reports.report import build_tables, load_run, write_report

GOLD = ["positive"] * 30


def store_run(run_dir: Path, experiment: dict, preds: dict[str, dict[str, dict[int, str]]]) -> Path:
    """A run store: `preds[setting][lang][item index]` = the predicted label (gold: positive)."""
    samples = {
        ("m", setting, "emotion", "english", "exact"): [
            {"lang": lang, "idx": i, "gold": GOLD[i], "pred": p, "scores": {"positive": 0.0, "negative": -1.0}}
            for lang, items in by_lang.items()
            for i, p in items.items()
        ]
        for setting, by_lang in preds.items()
    }
    experiment = {"name": "audit", "models": ["m"], "tasks": ["emotion"], **experiment}
    return write_run_store(run_dir, experiment, samples)


def right(n: int, wrong: set[int] = frozenset(), start: int = 0) -> dict[int, str]:  # type: ignore[assignment]
    return {i: "negative" if i in wrong else "positive" for i in range(start, start + n)}


def setting(name: str, sources: list[str]) -> dict:
    return {"name": name, "task": "emotion", "sources": sources, "target": "en"}


def test_the_header_names_the_range_evaluated_not_the_configured_one(tmp_path):
    preds = {s: {"en": right(10, start=5)} for s in ("base", "qa")}
    experiment = {"items": "5:30", "limit": 10, "alignment": [setting("qa", ["de"])]}
    md = write_report(store_run(tmp_path / "run", experiment, preds), "md").read_text()
    assert "Evaluated items 5:15 (configured 5:30, limit 10)." in md and "Evaluated items 5:30." not in md


def test_a_language_is_marked_seen_only_for_the_settings_that_saw_it(tmp_path):
    preds = {s: {lang: right(10) for lang in ("en", "de", "fr")} for s in ("base", "a", "b")}
    experiment = {"alignment": [setting("a", ["de"]), setting("b", ["fr"])]}
    tables = {t.name: t for t in build_tables(load_run(store_run(tmp_path / "run", experiment, preds)))}
    for name in ("per_language", "balanced"):
        labels = [row[0] for row in tables[name].rows[:3]]
        assert labels == ["en †", "de (†)", "fr (†)"], (name, labels)
        assert "† seen in alignment training by every setting shown. (†) seen by some: a: de, en; b: en, fr." in (
            tables[name].note
        )
    one = {t.name: t for t in build_tables(load_run(store_run(tmp_path / "one", experiment, {**preds, "b": {}})))}
    assert [row[0] for row in one["per_language"].rows[:3]] == ["en †", "de †", "fr"]  # b is not in this table


def test_base_and_aligned_columns_use_the_paired_items(tmp_path):
    # base: 30 items, right on 0..19 only; aligned: items 0..19, all right. Paired: base 100% on 0..19
    preds = {"base": {"en": right(30, wrong=set(range(20, 30)))}, "qa": {"en": right(20)}}
    run = load_run(store_run(tmp_path / "run", {"alignment": [setting("qa", ["de"])]}, preds))
    tables = {t.name: t for t in build_tables(run)}
    sig = tables["significance"].rows[0]
    assert sig[1:6] == ["en", 20, pytest.approx(1.0), pytest.approx(1.0), pytest.approx(0.0)]
    seen = tables["seen_unseen"].rows[0]
    assert seen[1] == "en" and seen[2:5] == [pytest.approx(1.0), pytest.approx(1.0), pytest.approx(0.0)]


def test_pooled_bold_survives_holm_over_the_overlapping_groups(tmp_path):
    # de (unseen) fixed on items 0..5 (p items 2/64), en (seen) unchanged: unseen and all overlap
    base = {"en": right(30), "de": right(30, wrong=set(range(6)))}
    preds = {"base": base, "qa": {"en": right(30), "de": right(30)}}
    run = load_run(store_run(tmp_path / "run", {"alignment": [setting("qa", ["fr"])]}, preds))
    pooled = next(t for t in build_tables(run) if t.name == "pooled")
    assert pooled.header[-2:] == ["p items", "p items (Holm)"]
    rows = {row[1]: row for row in pooled.rows}
    assert rows["unseen"][-2] == pytest.approx(2 / 64) and rows["all"][-2] == pytest.approx(2 / 64)
    assert rows["unseen"][-1] == pytest.approx(3 * 2 / 64) and rows["seen"][-1] == pytest.approx(1.0)
    assert not pooled.best  # uncorrected, unseen and all would be bold
    from polyalign.reports.calibrated import headline_table

    assert not {cell for cell in headline_table(run).best if cell[1] == 3}  # the headline's raw p items alike
