"""Evaluation results: resumable per-item sample logs, predictions, accuracy with bootstrap CIs.

Per-item samples are the source of truth; every accuracy, table and figure is
recomputed from them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from polyalign.core.errors import PolyalignError
from polyalign.core.files import AppendOnlyJsonl, jsonl_text
from polyalign.evaluation.stats import accuracy_interval


def read_samples(path: Path) -> list[dict]:
    """A finished samples file, strictly parsed."""
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise PolyalignError(f"{path}: unreadable samples file: {exc}") from None


class SampleLog(AppendOnlyJsonl):
    """The log of finished items of one evaluation shard (`rows`: those an interrupted run wrote)."""


def samples_text(rows: list[dict]) -> str:
    return jsonl_text(sorted(rows, key=lambda r: r["index"]))


def summarize(rows: list[dict]) -> dict:
    """Accuracy, count, CI and ties of one language's samples (a tie counts as wrong)."""
    correct = np.array([r["pred"] == r["gold"] for r in rows], dtype=float)
    lo, hi = accuracy_interval(correct)
    return {
        "accuracy": float(correct.mean()) if len(rows) else 0.0,
        "n": len(rows),
        "ci95": [lo, hi],
        "ties": sum(1 for r in rows if r["pred"] is None),
        "nan_scores": sum(1 for r in rows if any(math.isnan(v) for v in r["scores"].values())),
    }


def predict(scores: dict[str, float]) -> tuple[str | None, list[str]]:
    """The top class, or None with the tied classes when the maximum is shared. A NaN score decides
    nothing (max() would pick by dict order): None, every class listed, counted in `nan_scores`."""
    if any(math.isnan(s) for s in scores.values()):
        return None, list(scores)
    best = max(scores.values())
    top = [c for c, s in scores.items() if s == best]
    return (top[0], []) if len(top) == 1 else (None, top)
