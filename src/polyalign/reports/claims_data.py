"""What a claim compares, read from a finished run: per-item outcomes of each arm.

Accuracy and calibrated accuracy come from the store's samples (polyalign.reports.run_data, and its
batch-calibrated copy from polyalign.reports.calibrated); lens values from the lens steps'
lens_items.jsonl; PCA projections from the pca steps' npz files. An arm that the run does not hold
is a `Missing` with the reason, which makes its claim not testable rather than an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polyalign.evaluation.stats import GROUPS, language_groups
from polyalign.reports.run_data import RunData
from polyalign.reports.seeds import Outcomes, averaged
from polyalign.study.claims_spec import Arm, ClaimPart
from polyalign.study.variants import split_seeded


class Missing(Exception):
    """The run lacks what a part needs (an evaluation, an analysis, a language): not testable."""


@dataclass
class Resolved:
    """An arm with every default filled: model, stored setting names (one per seed), task, mode."""

    model: str
    setting: str
    names: list[str]
    task: str
    mode: str
    scoring: str

    @property
    def condition(self) -> tuple[str, str, str]:
        return (self.task, self.mode, self.scoring)

    def label(self) -> str:
        return f"{self.setting} ({self.task}, {self.mode} labels)"


def resolve(run: RunData, part: ClaimPart, arm: Arm) -> Resolved:
    """The arm's model, task and mode (arm, else part, else the experiment's first) and the names
    its adapters are stored under (NAME, or NAME@s<SEED> per seed)."""
    exp = run.experiment
    model = arm.model or part.model or exp["models"][0]
    task = arm.task or part.task or exp.get("tasks", ["emotion"])[0]
    mode = arm.mode or part.mode or exp.get("modes", ["english"])[0]
    scoring = exp.get("scoring", "exact")
    stored = dict.fromkeys(setting for m, setting, *_ in run.correct if m == model)
    if arm.setting == "base":
        names = ["base"] if "base" in stored else []
    else:
        names = [n for n in stored if n != "base" and split_seeded(n)[0] == arm.setting]
    if part.measure in ("lens", "pca"):  # analyses name base and adapters the same way
        names = names or [arm.setting]
    return Resolved(model, arm.setting, names, task, mode, scoring)


def outcomes(run: RunData, arm: Resolved) -> Outcomes:
    """Per language and item: correctness (averaged over the arm's seeds)."""
    present = [n for n in arm.names if (arm.model, n, *arm.condition) in run.correct]
    if not present:
        raise Missing(f"the run holds no evaluation of {arm.model} / {arm.label()}")
    return averaged(run, arm.model, present, arm.condition)


def seen(run: RunData, *arms: Resolved) -> set[str]:
    """The languages of the arms' alignment pairs (sources and target)."""
    return set().union(*(run.seen(a.setting) for a in arms if a.setting != "base"))


def pick_languages(requested: list[str], available: list[str], seen_langs: set[str]) -> list[str]:
    """The part's languages among `available`: a group word (all, unseen, seen) or codes."""
    group = requested[0] if len(requested) == 1 else None
    if group in GROUPS:
        chosen = language_groups(available, seen_langs, drop_empty=False)[group]
    else:
        absent = [lang for lang in requested if lang not in available]
        if absent:
            raise Missing(f"languages {', '.join(absent)} were not evaluated on both sides")
        chosen = requested
    if not chosen:
        raise Missing(f"no evaluated language is in the group {requested}")
    return chosen


def analysis_folders(run: RunData, kind: str, model: str) -> list[Path]:
    """The output folders of the run's `kind` (lens, pca) steps for `model`, in plan order."""
    folders = []
    for entry in run.plan:
        if entry["kind"] == kind and entry["label"].startswith(f"{model} "):
            folder = run.run_dir / entry["dir"] / kind
            if (folder / f"{kind}.json").is_file():
                folders.append(folder)
    return folders


def _depth_rows(layers: list[int], total: int, depth: list[float]) -> list[int]:
    """Positions in `layers` whose depth layer / total lies in [lo, hi]."""
    rows = [k for k, layer in enumerate(layers) if depth[0] <= layer / total <= depth[1]]
    if not rows:
        raise Missing(f"no analysed layer lies at depth {depth[0]}-{depth[1]} of {total} (layers {layers})")
    return rows


def lens_outcomes(run: RunData, part: ClaimPart, arm: Resolved) -> Outcomes:
    """Per language and item: the part's lens quantity (signed sum) averaged over its layers,
    then over the arm's seeds."""
    for folder in analysis_folders(run, "lens", arm.model):
        meta = json.loads((folder / "lens.json").read_text(encoding="utf-8"))
        if part.task and meta["task"] != part.task:
            continue
        rows = _depth_rows(meta["layers"], meta["num_layers"], part.depth)
        values: dict[str, dict[int, list[float]]] = {}
        with open(folder / "lens_items.jsonl", encoding="utf-8") as handle:
            for line in handle:
                item = json.loads(line) if line.strip() else None
                if item is None or item["model"] not in arm.names:
                    continue
                value = sum(
                    (-1 if q.startswith("-") else 1) * float(np.mean([item[q.removeprefix("-")][k] for k in rows]))
                    for q in part.quantity
                )
                values.setdefault(item["lang"], {}).setdefault(item["index"], []).append(value)
        if values:
            return {lang: {i: float(np.mean(v)) for i, v in by.items()} for lang, by in values.items()}
    raise Missing(f"the run holds no lens of {arm.model} / {arm.setting}")


@dataclass
class PcaArm:
    """PC1 projections of one arm: proj[seed, layer, language, item] at the part's depth."""

    proj: np.ndarray
    langs: list[str]
    items: list[int]


def pca_projections(run: RunData, part: ClaimPart, arm: Resolved) -> PcaArm:
    """The arm's first-component projections (every seed) at the layers of the part's depth."""
    for folder in analysis_folders(run, "pca", arm.model):
        meta = json.loads((folder / "pca.json").read_text(encoding="utf-8"))
        files = [meta["files"][n] for n in arm.names if n in meta["files"]]
        if (part.task and meta["task"] != part.task) or not files:
            continue
        rows = _depth_rows(meta["layers"], meta["num_layers"], part.depth)
        arrays = [np.load(folder / f, allow_pickle=False) for f in files]
        proj = np.stack([a["proj"][rows, :, :, 0] for a in arrays])
        return PcaArm(proj, [str(x) for x in arrays[0]["langs"]], [int(i) for i in arrays[0]["item_index"]])
    raise Missing(f"the run holds no pca of {arm.model} / {arm.setting}")
