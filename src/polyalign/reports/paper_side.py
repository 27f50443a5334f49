"""The paper's numbers beside a run's: per-language gains against Table 1, averages against Table 2's
Qwen1.5-1.8B row, PCA Pearson r against Tables 8-11. Numbers only; paper_side_report renders them.

Why these three: Table 1 is the one per-language table of the main setting (do the languages that
gain most in the paper gain most here?), Qwen1.5-1.8B is the paper's smallest model (the nearest to
270M), and Tables 8-11 are the only numbers behind the paper's representation claim. Our intervals
come from resampling items jointly across languages (the test sets are item-parallel); the paper
reports single runs, so its figures are points.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from polyalign.core.errors import PolyalignError
from polyalign.evaluation.stats import RESAMPLES, SEED, bootstrap_language_means
from polyalign.reports.paper_numbers import paper_table
from polyalign.reports.run_data import RunData
from polyalign.study.variants import split_seeded

Interval = tuple[float, float, float]  # estimate, low, high


def our_setting(paper_setting: str) -> str:
    """'zh/es => en' -> 'zh-es_en', the name polyalign's experiments give the same mixture ('base' stays)."""
    if " => " not in paper_setting:
        return paper_setting
    sources, target = paper_setting.split(" => ")
    return f"{sources.replace('/', '-')}_{target}"


def interval(point: float, boot: np.ndarray, level: float = 0.95) -> Interval:
    lo, hi = np.nanquantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(point), float(lo), float(hi)


def seed_names(run: RunData, variant: tuple, condition: tuple) -> list[str]:
    """The stored names of a (model, setting): the setting itself, else its seeds' (NAME@sN, study.variants)."""
    model, setting = variant
    if (model, setting, *condition) in run.correct:
        return [setting]
    stored = {k[1] for k in run.correct if k[0] == model and k[2:] == condition}
    return sorted(name for name in stored if split_seeded(name)[0] == setting and split_seeded(name)[1] is not None)


def pooled(run: RunData, variant: tuple, condition: tuple) -> dict[str, dict[int, float]]:
    """held[lang][item]: the share of the setting's seeds right on the item (1.0/0.0 with one seed):
    a setting trained with several seeds is compared as the mean of its adapters."""
    model = variant[0]
    held: dict[str, dict[int, list[float]]] = {}
    for name in seed_names(run, variant, condition):
        for lang, by_item in run.correct[(model, name, *condition)].items():
            for item, hit in by_item.items():
                held.setdefault(lang, {}).setdefault(item, []).append(float(hit))
    return {lang: {i: sum(v) / len(v) for i, v in by_item.items()} for lang, by_item in held.items()}


def correctness(run: RunData, variant: tuple, condition: tuple, langs: list[str], items: list[int]) -> np.ndarray:
    """values[lang, item] = 1.0 right, 0.0 wrong (the share of seeds right, with seeds), NaN where the run
    lacks the item."""
    held = pooled(run, variant, condition)
    values = np.full((len(langs), len(items)), np.nan)
    for row, lang in enumerate(langs):
        for col, i in enumerate(items):
            if i in held.get(lang, {}):
                values[row, col] = float(held[lang][i])
    return values


def item_diffs(run: RunData, treatment: tuple, reference: tuple, condition: tuple, langs: list[str]) -> np.ndarray:
    """diff[lang, item] = treatment - reference correctness on the items both hold (NaN elsewhere)."""
    a, b = pooled(run, treatment, condition), pooled(run, reference, condition)
    items = sorted({i for lang in langs for i in set(a.get(lang, {})) & set(b.get(lang, {}))})
    return correctness(run, treatment, condition, langs, items) - correctness(run, reference, condition, langs, items)


class LanguageGains(NamedTuple):
    """Per language: the paper's Table 1 gain and ours (raw and calibrated), in points."""

    langs: list[str]
    paper: np.ndarray  # [lang]
    raw: np.ndarray  # [lang]
    raw_boot: np.ndarray  # [resample, lang]
    calibrated: np.ndarray
    calibrated_boot: np.ndarray


def language_gains(run: RunData, cal: RunData, model: str, setting: str, condition: tuple) -> LanguageGains:
    """Table 1's zh/es => en minus base (Mistral-7B) beside the run's SETTING minus base on MODEL,
    for the Table 1 languages the run evaluated."""
    t1 = paper_table("table1")
    paper_setting = next((row for row in t1.rows if row != "base" and our_setting(row) == setting), None)
    if paper_setting is None:
        raise PolyalignError(f"setting {setting!r} is not a Table 1 mixture ({', '.join(map(our_setting, t1.rows))})")
    langs = [c for c in t1.columns if c in run.langs()]
    if len(langs) < 3:
        raise PolyalignError(f"{run.run_dir}: only {len(langs)} of Table 1's languages evaluated")
    views = []
    for data in (run, cal):
        found = bootstrap_language_means(item_diffs(data, (model, setting), (model, "base"), condition, langs))
        if found is None:
            raise PolyalignError(f"{run.run_dir}: no items of {model} / {setting} and base under {condition}")
        views.append((100 * found[0], 100 * found[1]))
    paper = np.array([t1.cell(paper_setting, c) - t1.cell("base", c) for c in langs])
    return LanguageGains(langs, paper, *views[0], *views[1])


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank)."""
    order = np.argsort(x, kind="stable")
    ranked = np.empty(len(x))
    ranked[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):
        ranked[x == value] = ranked[x == value].mean()
    return ranked


def profile_correlation(paper: np.ndarray, ours: np.ndarray, boot: np.ndarray, spearman: bool = False) -> Interval:
    """Correlation across languages of the paper's gains with ours, with a percentile CI from
    resampling the languages (the profile's own sampling) and, within each draw, our items (each
    bootstrap row of `boot`); the paper's gains are fixed points."""
    stat = (lambda a, b: pearson(ranks(a), ranks(b))) if spearman else pearson
    rng = np.random.default_rng(SEED + 1)
    picks = rng.integers(0, len(paper), size=(len(boot), len(paper)))
    values = np.array([stat(paper[p], boot[k, p]) for k, p in enumerate(picks)])
    return interval(stat(paper, ours), values[~np.isnan(values)])


class AverageRow(NamedTuple):
    """One Table 2 setting: the paper's Qwen1.5-1.8B average and ours over the run's languages."""

    setting: str  # the paper's spelling
    paper: float
    ours: Interval | None  # accuracy in points (None: the run lacks the setting)


def average_rows(run: RunData, model: str, condition: tuple, column: str = "Qwen1.5-1.8B") -> list[AverageRow]:
    """Each Table 2 row beside the run's average accuracy over its languages (items resampled jointly)."""
    t2, langs = paper_table("table2"), run.langs()
    rows = []
    for setting in t2.rows:
        variant = (model, our_setting(setting))
        held = pooled(run, variant, condition)
        items = sorted({i for by_item in held.values() for i in by_item})
        found = bootstrap_language_means(correctness(run, variant, condition, langs, items)) if items else None
        ours = None
        if found is not None:
            ours = interval(100 * float(np.nanmean(found[0])), 100 * np.nanmean(found[1], axis=1))
        rows.append(AverageRow(setting, t2.cell(setting, column), ours))
    return rows


class PcaPair(NamedTuple):
    """One Tables 8-11 pair at one of the paper's (model, layer) columns, beside ours at the same depth."""

    pair: str
    paper_column: str  # "Mistral-7B L20"
    paper_base: float
    paper_aligned: float
    our_layer: int
    our_base: Interval
    our_aligned: Interval
    our_change: Interval


PAPER_LAYERS = {"Mistral-7B": 32, "Qwen1.5-1.8B": 24}


def load_pca(folder: Path, label: str | None) -> tuple[dict, dict]:
    """pca.json and the named model's arrays (None: the first) from a `polyalign pca` output folder."""
    import json

    meta = json.loads((folder / "pca.json").read_text(encoding="utf-8"))
    label = label or meta["models"][0]
    if label not in meta["files"]:
        raise PolyalignError(f"{folder}: no pca of {label!r} (it holds {', '.join(meta['files'])})")
    with np.load(folder / meta["files"][label], allow_pickle=False) as arrays:
        return meta, {k: arrays[k] for k in ("proj", "langs", "layers")}


def pair_r(proj: np.ndarray, a: int, b: int, picks: np.ndarray) -> tuple[float, np.ndarray]:
    """Pearson r of PC1 projections of languages a and b (paired by item), and under each resample."""
    x, y = proj[a, :, 0], proj[b, :, 0]
    return pearson(x, y), np.array([pearson(x[p], y[p]) for p in picks])


def pca_pairs(folder: Path, base: str | None = None, aligned: str | None = None) -> list[PcaPair]:
    """Every Tables 8-11 pair whose languages the folder holds, at each paper column's depth
    (base, aligned: the folder's model labels; default its first and second)."""
    meta, ours_base = load_pca(folder, base)
    aligned_arrays = load_pca(folder, aligned or (meta["models"][1:] or [""])[0])[1]
    langs, layers, total = (
        [str(x) for x in ours_base["langs"]],
        [int(x) for x in ours_base["layers"]],
        meta["num_layers"],
    )
    table = paper_table("tables8_11")
    picks = np.random.default_rng(SEED).integers(
        0, ours_base["proj"].shape[2], size=(RESAMPLES, ours_base["proj"].shape[2])
    )
    found = []
    for column in table.columns[::2]:
        model_layer = column.removesuffix(" base")
        model, layer = model_layer.rsplit(" ", 1)
        depth = int(layer[1:]) / PAPER_LAYERS[model]
        k = min(range(len(layers)), key=lambda j: abs(layers[j] / total - depth))
        for pair in table.rows:
            a, b = pair.split("-")
            if a not in langs or b not in langs:
                continue
            rb, bb = pair_r(ours_base["proj"][k], langs.index(a), langs.index(b), picks)
            ra, ba = pair_r(aligned_arrays["proj"][k], langs.index(a), langs.index(b), picks)
            found.append(
                PcaPair(
                    pair,
                    model_layer,
                    table.cell(pair, column),
                    table.cell(pair, f"{model_layer} aligned"),
                    layers[k],
                    interval(rb, bb),
                    interval(ra, ba),
                    interval(ra - rb, ba - bb),
                )
            )
    return found
