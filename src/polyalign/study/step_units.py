"""A step's amount of work in its own units: pairs seen for a training, items scored for an
evaluation or analysis. The step clock times these units and the cost planner prices them."""

from __future__ import annotations

from polyalign.study.steps import Step

UNKNOWN_ITEMS = 500  # items per language when an eval declares neither a range nor a limit


def range_size(items: str | None, limit: int | None) -> int:
    """Items per language of an evaluation or analysis: its range, cut by its limit."""
    size = UNKNOWN_ITEMS
    if items:
        start, _, stop = str(items).partition(":")
        size = int(stop) - int(start or 0)
    return min(size, limit) if limit else size


def step_units(step: Step, by_key: dict[str, Step]) -> float:
    """A training step: pairs seen; an evaluation or analysis: items scored (all languages).
    `by_key`: the plan's steps by key, where a training finds its data step."""
    cfg = step.config
    if step.kind == "train":
        train = cfg["train"]
        if train.get("max_steps", -1) > 0:
            return train["max_steps"] * train["per_device_batch"] * train["grad_accum"]
        data = by_key.get(cfg.get("data", ""))
        per_language = (data.config.get("per_language") or UNKNOWN_ITEMS) if data else 0
        pairs = per_language * len(data.config.get("sources", [1])) if data else 0
        return float(train.get("epochs", 1)) * pairs
    if step.kind in ("eval", "lens", "pca"):
        spec = cfg.get("spec", cfg)
        models = 1 + len(cfg.get("adapters") or {})  # an analysis runs the base and each adapter
        size = range_size(spec.get("items") or cfg.get("items"), spec.get("limit"))
        return len(cfg.get("langs", [])) * size * (models if step.kind != "eval" else 1)
    return 0.0
