"""Steps: a step's key is the sha256 of its resolved configuration (which holds the keys or
content hashes of its inputs); it writes into STEPS/<kind>-<key[:12]>/ (STEPS: RUN_DIR/steps, or
a --steps-dir shared by run folders) and, only once its outputs are in place, a done.json marker
holding the key and the sha256 of every file it wrote (polyalign.study.executor skips every step
whose marker holds its key and whose files still match; a damaged or missing file makes the step
run again)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from polyalign.core.errors import PolyalignError
from polyalign.core.files import file_sha256

MARKER = "done.json"
LOCK_NAME = ".polyalign-step.lock"  # polyalign.study.step_lock: held while the step runs
ATTEMPTS = ".polyalign-attempts"  # polyalign.study.ray_executor: one line per start of the step's task
BOOKKEEPING = (MARKER, LOCK_NAME, ATTEMPTS)  # a step folder's files that are not its outputs
Digest = Callable[[Path], str | None]  # a file's sha256 (the store's cached one, or file_sha256)


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
    depends_on: tuple[str, ...] = ()  # keys of the plan's steps whose outputs it reads
    model: str | None = None  # the model it runs, as the experiment names it (None: a data step)


def read_marker(marker: Path, strict: bool = True) -> dict:
    """A step's done.json as a mapping ({} where the step has none; with `strict` False, also where
    it cannot be read: a marker cut mid-write means the step is not done, so it runs again)."""
    try:
        found = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {}
    except (OSError, ValueError):
        if strict:
            raise
        return {}
    return found if isinstance(found, dict) or strict else {}


def step_folder(steps_dir: Path, step: Step) -> Path:
    """The folder of `step` under `steps_dir` (a run folder's steps/, or a shared --steps-dir)."""
    return Path(steps_dir) / f"{step.kind}-{step.key[:12]}"


def output_digests(folder: Path, digest: Digest = file_sha256) -> dict[str, str | None]:
    """The sha256 of every file a finished step left in its folder (paths relative to it), for its
    done.json: what a later run checks before it skips the step."""
    files = sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in BOOKKEEPING
    )
    return {p.relative_to(folder).as_posix(): digest(p) for p in files}


def damaged_files(folder: Path, marker: dict, digest: Digest = file_sha256) -> list[str]:
    """The files the marker recorded that are gone or changed since ([] for markers written
    before steps recorded their files' digests)."""
    recorded = marker.get("files")
    if not isinstance(recorded, dict):
        return []
    damaged = []
    for name, sha in recorded.items():
        path = Path(folder) / name
        if not path.is_file():
            damaged.append(f"{name} (missing)")
        elif digest(path) != sha:
            damaged.append(f"{name} (changed)")
    return damaged


def discard_damaged(folder: Path, damaged: list[str]) -> None:
    """Remove the marker and the damaged files, so the step runs again and its own resume keeps
    what is intact and recomputes the rest."""
    for entry in damaged:
        (Path(folder) / entry.rsplit(" (", 1)[0]).unlink(missing_ok=True)
    (Path(folder) / MARKER).unlink(missing_ok=True)


def check_restored(folder: Path, damaged: list[str]) -> None:
    """After the re-run, every file that was damaged is back; else one line saying how to start over."""
    absent = [name for entry in damaged if not (Path(folder) / (name := entry.rsplit(" (", 1)[0])).is_file()]
    if absent:
        raise PolyalignError(
            f"{folder}: running the step again did not restore {', '.join(absent)}; "
            f"remove the folder to run the step from scratch"
        )
