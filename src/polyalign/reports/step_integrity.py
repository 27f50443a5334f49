"""Does a finished run's folder still agree with its store? What `polyalign report` warns about.

Why: the report reads the store alone, so a step folder damaged after the run (a samples file cut
mid-line, an adapter overwritten) or a store that lost rows would go unnoticed. Each finished step
of the plan is checked against the file digests its done.json recorded
(polyalign.study.steps.damaged_files), and each eval step's item count against the store's rows.
"""

from __future__ import annotations

from polyalign.reports.run_data import RunData
from polyalign.study.steps import MARKER, damaged_files, read_marker


def step_disagreements(run: RunData) -> list[str]:
    """One line per finished step whose files or store rows differ from what it recorded."""
    lines = []
    for entry in run.plan:
        folder = run.run_dir / entry["dir"]
        try:
            marker = read_marker(folder / MARKER)
        except (OSError, ValueError):
            lines.append(f"step {entry['dir']}: its {MARKER} cannot be read")
            continue
        if marker.get("key") != entry.get("key"):
            continue  # not finished: nothing recorded to compare
        damaged = damaged_files(folder, marker)
        if damaged:
            lines.append(f"step {entry['dir']}: {', '.join(damaged)} since the step finished")
        stored, expected = stored_items(run, entry), marker.get("outputs", {}).get("n")
        if entry["kind"] == "eval" and isinstance(expected, int) and stored != expected:
            lines.append(f"step {entry['dir']}: the store holds {stored} of its {expected} items")
    if lines:
        lines.append("Files and store disagree: run the same `polyalign run` again to redo or re-ingest those steps.")
    return lines


def stored_items(run: RunData, entry: dict) -> int:
    """The store's rows under an eval step's labels (model, setting, task, mode, scoring)."""
    labels = entry.get("labels") or {}
    key = tuple(labels.get(k) for k in ("model", "setting", "task", "mode", "scoring"))
    return sum(len(items) for items in run.correct.get(key, {}).values())
