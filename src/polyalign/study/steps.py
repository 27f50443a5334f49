"""Steps: a step's key is the sha256 of its resolved configuration (which holds the keys or
content hashes of its inputs); it writes into RUN_DIR/steps/<kind>-<key[:12]>/ and, only once
its outputs are in place, a done.json marker holding the key (polyalign.study.executor skips
every step whose marker holds its key)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
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
    check: Callable[[], None] = field(default=lambda: None)  # what `run` would refuse, run nothing (dry run)


def read_marker(marker: Path) -> dict:
    """A step's done.json as a mapping ({} where the step has none)."""
    return json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}


def step_folder(run_dir: Path, step: Step) -> Path:
    return Path(run_dir) / "steps" / f"{step.kind}-{step.key[:12]}"
