"""The local step executor: runs a plan's steps in this process, skipping those done.

Steps run in plan order, each under its folder's lock (polyalign.study.step_lock): a step another
process holds is left for later and this one moves on to steps that do not depend on it; when
nothing else can run it waits for that lock, then skips the step if the other process finished it.
The skip decision is `is_done`, the marker is written by `run_step`: each in one place.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from polyalign.core.files import atomic_write_json, file_sha256
from polyalign.study.step_lock import StepLock
from polyalign.study.steps import (
    MARKER,
    Digest,
    Step,
    check_restored,
    damaged_files,
    discard_damaged,
    output_digests,
    read_marker,
    step_folder,
)
from polyalign.study.store import Store

BUSY, DONE, RAN = "busy", "done", "ran"


def is_done(folder: Path, step: Step, digest: Digest = file_sha256) -> dict | None:
    """The step's done.json when it holds the step's key and its files still match their recorded
    digests (the step is finished), else None (an unreadable marker: not done)."""
    held = read_marker(folder / MARKER, strict=False)
    if held.get("key") != step.key or damaged_files(folder, held, digest):
        return None
    return held


def discard_damaged_outputs(step: Step, folder: Path, digest: Digest, log: Callable[[str], None]) -> list[str]:
    """Files of an earlier finish cut or edited since: removed with the marker, so the step runs again
    and its own resume redoes them; their names ([] when none)."""
    held = read_marker(folder / MARKER, strict=False)
    damaged = damaged_files(folder, held, digest) if held.get("key") == step.key else []
    if damaged:
        log(f"its files differ from its done.json ({', '.join(damaged)}): running it again")
        discard_damaged(folder, damaged)
    return damaged


def run_step(step: Step, folder: Path, machine: str, digest: Digest = file_sha256, damaged=()) -> dict:
    """Run `step` in `folder` (the caller holds its lock) and write its marker last; its outputs.
    `damaged`: files discard_damaged_outputs removed, which the run must have restored."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    outputs = step.run(folder)
    check_restored(folder, list(damaged))
    seconds = round(time.monotonic() - started, 1)  # the step's own wall time: a run's cost sums these
    done = {"kind": step.kind, "key": step.key, "config": step.config, "outputs": outputs, "seconds": seconds}
    done["machine"] = machine
    done["ran_by"] = {"host": socket.gethostname(), "pid": os.getpid()}
    done["files"] = output_digests(folder, digest)  # checked before the step is skipped
    atomic_write_json(folder / MARKER, done)
    return outputs


def execute_steps(
    store: Store,
    run_dir: Path,
    steps: list[Step],
    log: Callable[[str], None] = print,
    before: Callable[[Step], None] | None = None,
    clock=None,
    steps_dir: Path | None = None,
) -> tuple[list[Step], list[Step]]:
    """Run every step whose folder holds no marker with its key; (executed, skipped).
    `clock` (polyalign.study.step_clock.StepClock) adds the precision and the time left to each start line;
    `steps_dir`: where step folders live (default RUN_DIR/steps)."""
    from polyalign.engine.precision import machine_description  # torch, which every step loads anyway

    root = Path(steps_dir) if steps_dir else Path(run_dir) / "steps"
    executor = LocalExecutor(store, root, steps, log, before, clock, machine_description())
    todo = list(range(len(steps)))
    while todo:
        left = [n for n in todo if executor.attempt(n, wait=False) == BUSY]
        if len(left) == len(todo):  # everything left waits on steps other processes hold
            first = next(n for n in left if executor.ready(n))
            log(f"{executor.where(first)}: waiting for the other process running it")
            executor.attempt(first, wait=True)
            left.remove(first)
        todo = left
    return executor.executed, executor.skipped


class LocalExecutor:
    """The state of one execute_steps call: which steps are finished, what ran, what was skipped."""

    def __init__(self, store: Store, root: Path, steps: list[Step], log, before, clock, machine: str):
        self.store, self.root, self.steps, self.log = store, root, steps, log
        self.before, self.clock, self.machine = before, clock, machine
        self.keys = {s.key for s in steps}
        self.finished: set[str] = set()
        self.executed: list[Step] = []
        self.skipped: list[Step] = []
        self.told_busy: set[str] = set()
        self.pending = [read_marker(step_folder(root, s) / MARKER, strict=False).get("key") != s.key for s in steps]

    def where(self, n: int) -> str:
        step = self.steps[n]
        return f"[{n + 1}/{len(self.steps)}] {step.kind} {step.label}"

    def ready(self, n: int) -> bool:
        """Whether every step of the plan that `n` reads from is finished."""
        return all(k in self.finished or k not in self.keys for k in self.steps[n].depends_on)

    def attempt(self, n: int, wait: bool) -> str:
        step, folder = self.steps[n], step_folder(self.root, self.steps[n])
        if not self.ready(n):
            return BUSY
        held = is_done(folder, step, self.store.digest)
        if held:
            self.log(f"{self.where(n)}: done earlier, skipped")
        else:
            with StepLock(folder) as lock:
                if not lock.acquire(wait):
                    if step.key not in self.told_busy:
                        self.told_busy.add(step.key)
                        self.log(f"{self.where(n)}: another process is running it; doing other steps meanwhile")
                    return BUSY
                held = is_done(folder, step, self.store.digest)  # finished by the process that held the lock
                if held:
                    self.log(f"{self.where(n)}: done by another process, skipped")
                else:
                    outputs = self._run(n, folder)
        if held:
            outputs = held["outputs"]
            self.skipped.append(step)
        self.finish(step, folder, outputs)
        return DONE if held else RAN

    def _run(self, n: int, folder: Path) -> dict:
        step = self.steps[n]
        damaged = discard_damaged_outputs(
            step, folder, self.store.digest, lambda line: self.log(f"{self.where(n)}: {line}")
        )
        self.log(f"{self.where(n)}: running in {folder}{self.clock.start(n, self.pending) if self.clock else ''}")
        if self.before:
            self.before(step)
        self.store.record_step(step.kind, step.key, step.config, "running")
        started = time.monotonic()
        outputs = run_step(step, folder, self.machine, self.store.digest, damaged)
        self.log(f"{self.where(n)}: finished in {time.monotonic() - started:.1f} s")
        if self.clock:
            self.clock.finish(step)
        self.pending[n] = False
        self.executed.append(step)
        return outputs

    def finish(self, step: Step, folder: Path, outputs: dict) -> None:
        finish_step(self.store, step, folder, outputs)
        self.finished.add(step.key)


def finish_step(store: Store, step: Step, folder: Path, outputs: dict) -> None:
    """The driver's part once a step's folder is complete (run here, elsewhere or earlier): its hook
    (an evaluation's samples into the store), then the ledger. Only the driver writes the store."""
    if step.after:
        step.after(folder, outputs)
    store.record_step(step.kind, step.key, step.config, "done", outputs)
