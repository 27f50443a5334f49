"""Safe concurrency on one run folder: step locks, the store's WAL mode, one experiment per store."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
import yaml

from polyalign.core.errors import PolyalignError
from polyalign.study.executor import execute_steps, run_step
from polyalign.study.experiment import run_experiment
from polyalign.study.step_lock import StepLock
from polyalign.study.steps import Step, step_folder
from polyalign.study.store import Store


def _recording(order: list[str]):
    def run(folder: Path) -> dict:
        order.append(folder.name)
        return {"n": 1}

    return run


def test_a_step_another_process_holds_is_left_for_later_then_skipped(tmp_path: Path):
    """Step a is locked (as by another process): b, which reads a, waits; c runs meanwhile; once the
    holder finishes a and lets go, a is skipped (done by the holder) and b runs."""
    order: list[str] = []
    run = _recording(order)
    a = Step("data", "a" * 12, {}, "a", run)
    b = Step("train", "b" * 12, {}, "b", run, depends_on=(a.key,))
    c = Step("data", "c" * 12, {}, "c", run)
    holder = StepLock(step_folder(tmp_path / "steps", a))
    assert holder.acquire(wait=False)
    assert not StepLock(step_folder(tmp_path / "steps", a)).acquire(wait=False)  # exclusive

    def other_process_finishes_a() -> None:
        time.sleep(0.5)
        run_step(a, step_folder(tmp_path / "steps", a), "elsewhere")
        holder.release()

    thread = threading.Thread(target=other_process_finishes_a)
    thread.start()
    lines: list[str] = []
    with Store(tmp_path) as store:
        executed, skipped = execute_steps(store, tmp_path, [a, b, c], lines.append)
        ledger = {row[0]: row[1] for row in store.db.execute("SELECT key, status FROM steps")}
    thread.join()
    assert order == ["data-cccccccccccc", "data-aaaaaaaaaaaa", "train-bbbbbbbbbbbb"]  # a: by the "other process"
    assert [s.label for s in executed] == ["c", "b"] and [s.label for s in skipped] == ["a"]
    assert any("another process is running it; doing other steps meanwhile" in line for line in lines)
    assert any("[1/3] data a: waiting for the other process" in line for line in lines)
    assert any("[1/3] data a: done by another process, skipped" in line for line in lines)
    assert set(ledger.values()) == {"done"} and len(ledger) == 3


def test_a_killed_holder_leaves_no_stuck_lock(tmp_path: Path):
    import subprocess
    import sys

    folder = tmp_path / "steps" / "train-x"
    code = (
        "import sys, time; from polyalign.study.step_lock import StepLock; "
        f"lock = StepLock({str(folder)!r}); assert lock.acquire(wait=False); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    assert not StepLock(folder).acquire(wait=False)
    proc.kill()
    proc.wait()
    assert StepLock(folder).acquire(wait=False)  # the kernel dropped it with the process


def test_the_store_is_in_wal_mode_with_a_busy_timeout(tmp_path: Path):
    with Store(tmp_path):
        pass
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Store(tmp_path) as first, Store(tmp_path) as second:
        with first.db:  # a write transaction held open by one process ...
            first.db.execute("INSERT INTO meta VALUES ('x', '1')")
            assert second.get_meta("x") is None  # ... does not block a reader
        second.set_meta("y", 2)  # and a writer after it waits instead of failing
        assert first.get_meta("y") == 2


def test_a_second_experiment_in_a_run_folder_is_refused_and_loses_nothing(tmp_path: Path, data_dir):
    labels = {"model": "m", "setting": "base", "task": "snli", "mode": "english", "scoring": "exact"}
    with Store(tmp_path / "run") as store:
        store.claim("first")
        store.replace_samples("k1", labels, [{"lang": "en", "idx": 0, "gold": "a", "pred": "a", "scores": {}}])
    spec = {"name": "second", "models": ["gemma-3-270m"], "tasks": ["snli"], "languages": ["en"], "limit": 2}
    path = tmp_path / "second.yaml"
    path.write_text(yaml.safe_dump({**spec, "data_dir": str(data_dir)}))
    with pytest.raises(PolyalignError, match="holds the results of experiment 'first'; run 'second' with another"):
        run_experiment(path, tmp_path / "run")
    with Store(tmp_path / "run") as store:
        assert len(list(store.samples())) == 1
        store.claim("first")  # the same experiment (edited or not) may run again
