"""The step executor: runs a plan's steps in this process, one after another, skipping those done."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from polyalign.core.files import atomic_write_json
from polyalign.study.steps import (
    Step,
    check_restored,
    damaged_files,
    discard_damaged,
    output_digests,
    read_marker,
    step_folder,
)
from polyalign.study.store import Store


def execute_steps(
    store: Store,
    run_dir: Path,
    steps: list[Step],
    log: Callable[[str], None] = print,
    before: Callable[[Step], None] | None = None,
    clock=None,
) -> tuple[list[Step], list[Step]]:
    """Run, in order, every step whose folder holds no marker with its key; (executed, skipped).
    `clock` (polyalign.study.step_clock.StepClock) adds the precision and the time left to each start line."""
    from polyalign.engine.precision import machine_description  # torch, which every step loads anyway

    machine = machine_description()  # the same for every step of this process
    executed, skipped = [], []
    held_keys = [read_marker(step_folder(run_dir, step) / "done.json", strict=False).get("key") for step in steps]
    pending = [key != step.key for key, step in zip(held_keys, steps)]
    for n, step in enumerate(steps, 1):
        folder, where = step_folder(run_dir, step), f"[{n}/{len(steps)}] {step.kind} {step.label}"
        marker = folder / "done.json"
        held = read_marker(marker, strict=False)  # an unreadable marker: the step is not done
        damaged = damaged_files(folder, held, store.digest) if held.get("key") == step.key else []
        if held.get("key") == step.key and not damaged:
            outputs = held["outputs"]
            skipped.append(step)
            log(f"{where}: done earlier, skipped")
        else:
            if damaged:  # a file cut or edited after the step finished: run it again, resuming what is intact
                log(f"{where}: its files differ from its done.json ({', '.join(damaged)}): running it again")
                discard_damaged(folder, damaged)
            log(f"{where}: running in {folder}{clock.start(n - 1, pending) if clock else ''}")
            if before:
                before(step)
            store.record_step(step.kind, step.key, step.config, "running")
            folder.mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            outputs = step.run(folder)
            check_restored(folder, damaged)
            if clock:
                clock.finish(step)
            pending[n - 1] = False
            seconds = round(time.monotonic() - started, 1)  # the step's own wall time: a run's cost sums these
            done = {"kind": step.kind, "key": step.key, "config": step.config, "outputs": outputs, "seconds": seconds}
            done["machine"] = machine
            done["files"] = output_digests(folder, store.digest)  # checked before the step is skipped
            atomic_write_json(marker, done)
            executed.append(step)
        if step.after:
            step.after(folder, outputs)
        store.record_step(step.kind, step.key, step.config, "done", outputs)
    return executed, skipped
