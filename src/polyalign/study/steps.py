"""Steps: a step's key is the sha256 of its resolved configuration (which holds the keys or
content hashes of its inputs); it writes into STEPS/<kind>-<key[:12]>/ (STEPS: RUN_DIR/steps, or
a --steps-dir shared by run folders) and, only once
its outputs are in place, a done.json marker holding the key (polyalign.study.executor skips
every step whose marker holds its key)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def step_key(kind: str, config: dict) -> str:
    return hashlib.sha256(json.dumps({"kind": kind, **config}, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass
class Step:
    """One unit of work: `run(folder)` writes its outputs there and returns a JSON-able summary;
    `after(folder, outputs)` runs whether the step ran or was skipped (e.g. store synchronisation)."""

    kind: str
    key: str
    config: dict
    label: str
    run: Callable[[Path], dict]
    needs: tuple = ()  # resources the step uses (the experiment: (model, adapter) pairs to load)
    after: Callable[[Path, dict], None] | None = None
    depends_on: tuple[str, ...] = ()  # keys of the plan's steps whose outputs it reads
    model: str | None = None  # the model it runs, as the experiment names it (None: a data step)


def read_marker(marker: Path) -> dict:
    """A step's done.json as a mapping ({} where the step has none)."""
    return json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}


def step_folder(steps_dir: Path, step: Step) -> Path:
    """The folder of `step` under `steps_dir` (a run folder's steps/, or a shared --steps-dir)."""
    return Path(steps_dir) / f"{step.kind}-{step.key[:12]}"
