"""Reading a run's store defensively: one bad row, or a wiped file, is one line, never a traceback.

Why: the store is copied, synced and edited by hand; a single unparseable `scores_json` must name
its row (step, language, item) and say how to repair it (a re-run re-ingests the step from its
folder, polyalign.study.eval_step), and a store emptied while the run's step folders are done
must be called wiped, not "no results yet".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from polyalign.core.errors import PolyalignError
from polyalign.study.steps import read_marker
from polyalign.study.store import STORE_NAME, Store

REPAIR = "run the same `polyalign run EXPERIMENT --out RUN_DIR` again to re-ingest it from the step's folder"


def row_place(row: dict) -> str:
    """Where a sample row comes from, as messages name it."""
    return (
        f"step eval-{str(row.get('step'))[:12]} ({row.get('model')} / {row.get('setting')}, "
        f"{row.get('task')}/{row.get('mode')}), language {row.get('lang')}, item {row.get('idx')}"
    )


def parse_scores(text) -> dict | None:
    """A row's class scores (None where it stores none); ValueError if they are not a mapping of
    class names to numbers."""
    if not text:
        return None
    value = json.loads(text)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) for v in value.values()
    ):
        raise ValueError("not a mapping of class names to numbers")
    return value


def sample_scores(row: dict, run_dir: Path) -> dict | None:
    """The row's class scores, or one PolyalignError line naming the row and the repair."""
    try:
        return parse_scores(row.get("scores_json"))
    except (TypeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise PolyalignError(
            f"{run_dir / STORE_NAME}: unreadable sample row ({row_place(row)}): scores {exc}; {REPAIR}"
        ) from None


def unreadable_rows(store: Store, step: str) -> int:
    """How many of `step`'s rows hold scores that cannot be read (a re-run re-ingests them)."""
    bad = 0
    for (text,) in store.db.execute("SELECT scores_json FROM samples WHERE step = ?", (step,)):
        try:
            parse_scores(text)
        except (TypeError, ValueError):
            bad += 1
    return bad


def check_not_empty(run_dir: Path) -> None:
    """A 0-byte results.sqlite was truncated or wiped: say so before opening it (which would write)."""
    path = run_dir / STORE_NAME
    if path.is_file() and path.stat().st_size == 0:
        raise PolyalignError(
            f"{path}: the store is empty (0 bytes): it was wiped or truncated; {wiped_repair(run_dir)}"
        )


def wiped_repair(run_dir: Path) -> str:
    done = len(list((run_dir / "steps").glob("*/done.json")))
    held = f"{done} finished step folder(s) under {run_dir / 'steps'} remain; " if done else ""
    return held + "run the same `polyalign run EXPERIMENT --out RUN_DIR` again to re-ingest them"


def check_not_wiped(run_dir: Path, experiment: dict, plan: list[dict], rows: int) -> None:
    """Tables emptied while the run's steps are done: the store was wiped or replaced."""
    finished = [m for m in (run_dir / "steps").glob("*/done.json")]
    if not experiment and finished:
        raise PolyalignError(
            f"{run_dir / STORE_NAME}: the store holds no run, but it was wiped: {wiped_repair(run_dir)}"
        )
    evals = [e for e in plan if e.get("kind") == "eval" and _done(run_dir / e["dir"] / "done.json", e.get("key"))]
    if not rows and evals:
        raise PolyalignError(
            f"{run_dir / STORE_NAME}: the store holds no evaluation results although {len(evals)} eval step(s) "
            f"of its plan are done: it was wiped; {wiped_repair(run_dir)}"
        )


def _done(marker: Path, key) -> bool:
    try:
        return marker.is_file() and read_marker(marker).get("key") == key
    except (OSError, ValueError):
        return False
