"""A small grid run three ways on a tiny model: one process, two processes on one folder, and two
configs sharing a training through --steps-dir; each step runs exactly once, results identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from polyalign.study.store import Store

TRAIN = {"max_steps": 2, "per_device_batch": 2, "grad_accum": 1, "save_steps": 1, "logging_steps": 1}
TRAIN |= {"val_size": 0, "cutoff_len": 256, "learning_rate": 1e-3}


def grid_spec(model: Path, data_dir, name: str, tasks: list[str]) -> dict:
    """data, 2 trainings (two seeds), an evaluation of the base and each adapter per task, a lens step."""
    setting = {"name": "zh_en", "task": "snli", "sources": ["zh"], "target": "en", "per_language": 4}
    return {
        "name": name,
        "models": [str(model)],
        "alignment": [{**setting, "seeds": [1, 2], "train": TRAIN}],
        "tasks": tasks,
        "modes": ["english"],
        "languages": ["en", "zh"],
        "limit": 3,
        "data_dir": str(data_dir),
        "batch_size": 4,
        "analyses": {"lens": {"task": "snli", "langs": ["zh"], "limit": 3}},
    }


def polyalign(*args) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    cmd = [sys.executable, "-m", "polyalign", "run", *map(str, args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    return out


def ran_in(log: str) -> list[str]:
    """The folders of the steps a run's log says it ran."""
    return [line.split(" running in ")[1].split()[0] for line in log.splitlines() if " running in " in line]


def outputs(steps_dir: Path) -> dict[str, bytes]:
    """Per-item sample files and adapter weights of every step, by path under the steps folder."""
    found = [*steps_dir.glob("eval-*/eval/samples/*.jsonl"), *steps_dir.glob("train-*/train/adapter/*.safetensors")]
    return {str(p.relative_to(steps_dir)): p.read_bytes() for p in sorted(found)}


def stored(run_dir: Path) -> list[dict]:
    with Store(run_dir, create=False) as store:
        return list(store.samples())


@pytest.fixture(scope="module")
def grid(tiny_llama, data_dir, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("grid")
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump(grid_spec(tiny_llama, data_dir, "grid", ["snli"])))
    one = finish(polyalign(path, "--out", root / "one"))
    return {"root": root, "path": path, "one": root / "one", "log": one}


@pytest.mark.slow
def test_two_processes_on_one_folder_run_every_step_once(grid):
    run_dir = grid["root"] / "two"
    first, second = polyalign(grid["path"], "--out", run_dir), polyalign(grid["path"], "--out", run_dir)
    logs = [finish(first), finish(second)]
    steps = sorted(p.name for p in (grid["one"] / "steps").iterdir())
    assert len(steps) == 7  # data, 2 train, 3 eval, lens
    ran = [Path(folder).name for log in logs for folder in ran_in(log)]
    assert sorted(ran) == steps  # each step exactly once, across both
    markers = [json.loads(p.read_text())["ran_by"]["pid"] for p in (run_dir / "steps").glob("*/done.json")]
    assert set(markers) <= {first.pid, second.pid}
    overlapped = any("another process is running it" in log or "done by another process" in log for log in logs)
    assert len(set(markers)) == 2 or overlapped  # they ran together (on a loaded machine one may start late)
    assert outputs(run_dir / "steps") == outputs(grid["one"] / "steps")
    assert stored(run_dir) == stored(grid["one"])


@pytest.mark.slow
def test_two_configs_sharing_a_training_train_it_once(grid, tiny_llama, data_dir):
    shared = grid["root"] / "shared-steps"
    other = grid["root"] / "other.yaml"
    other.write_text(yaml.safe_dump(grid_spec(tiny_llama, data_dir, "other", ["snli", "emotion"])))
    first = finish(polyalign(grid["path"], "--out", grid["root"] / "a", "--steps-dir", shared))
    second = finish(polyalign(other, "--out", grid["root"] / "b", "--steps-dir", shared))
    assert first.count(": running in ") == 7
    # data, both trainings, the snli evaluations and the lens step were reused: only emotion's evaluations ran
    assert [Path(folder).name.split("-")[0] for folder in ran_in(second)] == ["eval"] * 3
    assert second.count("done earlier, skipped") == 7
    assert outputs(shared) == {**outputs(grid["one"] / "steps"), **outputs(shared)}
    assert not (grid["root"] / "b" / "steps").exists()
    assert {row["task"] for row in stored(grid["root"] / "b")} == {"snli", "emotion"}


def wait_for(find, proc: subprocess.Popen, timeout: float = 600):
    """Poll `find()` until it returns something (the process must still be running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        assert proc.poll() is None, finish(proc)
        time.sleep(0.1)
    raise AssertionError("timed out")


def evaluated(run_dir: Path, train_key: str) -> bool:
    """Whether an evaluation of the adapter of the train step `train_key` (a prefix) has finished."""
    markers = [json.loads(p.read_text()) for p in run_dir.glob("steps/eval-*/done.json")]
    return any(str(m["config"].get("adapter")).startswith(train_key) for m in markers)


@pytest.mark.slow
def test_ray_runs_the_grid_as_the_local_executor_through_a_killed_worker_and_driver(grid):
    """A local Ray (this machine's 2 CPUs): the worker of the first training is killed once it began its folder,
    then the driver once an evaluation finished; a second driver finishes the grid. Every step ran
    once (bar the retried one), and samples and adapters are byte-identical to the local run's."""
    pytest.importorskip("ray")
    run_dir = grid["root"] / "ray"
    driver = polyalign(grid["path"], "--out", run_dir, "--executor", "ray")
    started = wait_for(lambda: sorted(run_dir.glob("steps/train-*/train/config.yaml")), driver)[0]
    attempts = started.parents[1] / ".polyalign-attempts"
    os.kill(int(attempts.read_text().split()[1]), signal.SIGKILL)  # its worker, mid-step (its folder begun)
    trained = attempts.parent.name.split("-")[1]
    wait_for(lambda: evaluated(run_dir, trained), driver)  # an evaluation of the retried training finished
    driver.kill()
    first_log, _ = driver.communicate()
    done = {p.parent.name for p in run_dir.glob("steps/*/done.json")}
    second_log = finish(polyalign(grid["path"], "--out", run_dir, "--executor", "ray"))
    assert len(attempts.read_text().splitlines()) == 2  # retried once
    assert "start 2 (an earlier worker died)" in first_log
    queued = [line.split(" for ")[-1] for line in second_log.splitlines() if ": queued (" in line]
    assert not {Path(folder).name for folder in queued} & done  # the restarted driver re-ran nothing finished
    assert second_log.count("done earlier, skipped") == len(done)
    assert outputs(run_dir / "steps") == outputs(grid["one"] / "steps")
    assert stored(run_dir) == stored(grid["one"])


@pytest.mark.slow
def test_on_ray_a_failing_step_stops_only_its_dependants(tiny_llama, data_dir, tmp_path):
    pytest.importorskip("ray")
    spec = grid_spec(tiny_llama, data_dir, "broken", ["snli"])
    spec["alignment"][0] |= {"seeds": None, "pair_files": {"zh": str(tmp_path / "missing.jsonl")}}
    del spec["analyses"]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = polyalign(path, "--out", tmp_path / "run", "--executor", "ray")
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 2, log[-3000:]
    assert "[1/4] data zh_en (snli zh->en): failed: " in log and "missing.jsonl" in log
    assert "[2/4] train " in log and "+ zh_en: not run: its input data zh_en (snli zh->en) failed" in log
    assert "zh_en snli/english: not run: its input train " in log  # the adapter's evaluation, in turn
    assert [p.parent.name.split("-")[0] for p in (tmp_path / "run" / "steps").glob("*/done.json")] == ["eval"]
    assert "polyalign: error: 3 of 4 steps did not finish: data zh_en" in log  # the base evaluation did
