"""A finished step is checked against the file digests its done.json recorded before it is skipped: a
damaged file re-runs the step; `polyalign report` says when a step's files and the store disagree."""

import json
from pathlib import Path

import pytest
import yaml

from helpers import write_run_store
from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.study.executor import execute_steps
from polyalign.study.steps import Step, damaged_files, output_digests, step_folder, step_key
from polyalign.study.store import Store

ROWS = "".join(json.dumps({"index": i, "pred": "positive"}) + "\n" for i in range(5))


def writing_step(runs: list, restore: bool = True) -> Step:
    def run(folder: Path) -> dict:
        runs.append(folder)
        (folder / "out").mkdir(exist_ok=True)
        if restore:
            (folder / "out" / "samples.jsonl").write_text(ROWS)
        (folder / "summary.json").write_text('{"n": 5}')
        return {"n": 5}

    return Step("eval", step_key("eval", {"x": 1}), {"x": 1}, "toy", run)


def execute(tmp_path, step) -> list[str]:
    logged: list[str] = []
    with Store(tmp_path) as store:
        execute_steps(store, tmp_path, [step], logged.append)
    return logged


def finished_step(tmp_path) -> tuple[list, Step, Path]:
    """A writing step run once in `tmp_path`: (its runs so far, the step, its folder)."""
    runs: list = []
    step = writing_step(runs)
    execute(tmp_path, step)
    return runs, step, step_folder(tmp_path / "steps", step)


def test_a_cut_file_reruns_its_step_and_is_restored(tmp_path):
    runs, step, folder = finished_step(tmp_path)
    marker = json.loads((folder / "done.json").read_text())
    assert set(marker["files"]) == {"out/samples.jsonl", "summary.json"}
    assert execute(tmp_path, step)[-1].endswith("done earlier, skipped") and len(runs) == 1
    samples = folder / "out" / "samples.jsonl"
    samples.write_text(ROWS[: len(ROWS) // 2])  # cut mid-line
    logged = execute(tmp_path, step)
    assert "out/samples.jsonl (changed)" in logged[0] and "running it again" in logged[0] and len(runs) == 2
    assert samples.read_text() == ROWS and damaged_files(folder, json.loads((folder / "done.json").read_text())) == []
    samples.unlink()
    assert "out/samples.jsonl (missing)" in execute(tmp_path, step)[0] and samples.read_text() == ROWS


def test_a_cut_marker_reruns_its_step(tmp_path):
    runs, step, folder = finished_step(tmp_path)
    marker = folder / "done.json"
    marker.write_text(marker.read_text()[:40])
    assert "running in" in execute(tmp_path, step)[0] and len(runs) == 2
    assert json.loads(marker.read_text())["key"] == step.key


def test_markers_written_before_digests_are_trusted_as_before(tmp_path):
    runs, step, folder = finished_step(tmp_path)
    marker = json.loads((folder / "done.json").read_text())
    del marker["files"]
    (folder / "done.json").write_text(json.dumps(marker))
    (folder / "out" / "samples.jsonl").write_text("cut")
    assert execute(tmp_path, step)[-1].endswith("done earlier, skipped") and len(runs) == 1


def test_a_step_that_cannot_restore_its_file_refuses_in_one_line(tmp_path):
    runs: list = []
    execute(tmp_path, writing_step(runs))
    step = writing_step(runs, restore=False)  # its resume believes the file is someone else's job
    (step_folder(tmp_path / "steps", step) / "out" / "samples.jsonl").write_text("cut")
    with pytest.raises(PolyalignError, match="did not restore out/samples.jsonl; remove the folder"):
        execute(tmp_path, step)


def test_output_digests_skip_the_marker(tmp_path):
    (tmp_path / "a").write_text("x")
    (tmp_path / "done.json").write_text("{}")
    assert list(output_digests(tmp_path)) == ["a"]


def report_run(tmp_path) -> Path:
    """A finished eval step (folder, marker with digests) and its rows in the store."""
    run_dir, folder = tmp_path / "run", tmp_path / "run" / "steps" / "eval-x"
    labels = {"model": "m", "setting": "base", "task": "emotion", "mode": "english", "scoring": "exact"}
    (folder / "eval").mkdir(parents=True)
    (folder / "eval" / "samples.jsonl").write_text(ROWS)
    marker = {"kind": "eval", "key": "k" * 64, "outputs": {"n": 5}, "files": output_digests(folder)}
    (folder / "done.json").write_text(json.dumps(marker))
    experiment = {"name": "t", "models": ["m"], "tasks": ["emotion"], "modes": ["english"]}
    plan = [{"kind": "eval", "key": "k" * 64, "label": "x", "labels": labels, "dir": "steps/eval-x"}]
    rows = [{"lang": "en", "idx": i, "gold": "positive", "pred": "positive", "scores": None} for i in range(5)]
    return write_run_store(run_dir, experiment, {tuple(labels.values()): rows}, plan, step="k" * 64)


def test_the_report_says_when_files_and_store_disagree(tmp_path, capsys):
    run_dir = report_run(tmp_path)
    assert main(["report", str(run_dir), "--format", "csv"]) == 0
    assert "warning" not in capsys.readouterr().err
    (run_dir / "steps" / "eval-x" / "eval" / "samples.jsonl").write_text(ROWS[:30])
    with Store(run_dir) as store:
        store.db.execute("DELETE FROM samples WHERE idx = 4")
        store.db.commit()
    assert main(["report", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "steps/eval-x: eval/samples.jsonl (changed) since the step finished" in err
    assert "the store holds 4 of its 5 items" in err
    assert "eval/samples.jsonl (changed)" in (run_dir / "report.md").read_text()


@pytest.mark.slow
def test_a_cut_samples_file_of_a_real_eval_step_is_rescored(tiny_llama, data_dir, tmp_path):
    spec = {"models": [str(tiny_llama)], "tasks": ["emotion"], "languages": ["en", "zh"], "limit": 3}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**spec, "data_dir": str(data_dir), "batch_size": 3}))
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run_dir)]) == 0
    (samples,) = run_dir.glob("steps/eval-*/eval/samples/emotion_zh.jsonl")
    intact = samples.read_text()
    samples.write_text(intact[: len(intact) // 2])
    assert main(["report", str(run_dir)]) == 0  # says so (tested above), and still reports the store
    assert main(["run", str(path), "--out", str(run_dir)]) == 0
    assert samples.read_text() == intact
