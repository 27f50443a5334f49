"""Error messages that point the right way: an item range in YAML (not a base-60 number), the JSONL
line of a bad record, a shared --out folder, a model name a dry run cannot resolve."""

from __future__ import annotations

import fcntl
from dataclasses import dataclass

import pytest

from polyalign.core.config import apply_overrides, build, read_mapping
from polyalign.core.errors import PolyalignError
from polyalign.core.files import read_records
from polyalign.evaluation.eval_folder import LOCK, claim_run_dir

RUNTIME = {"dtype": "float32", "device": "cpu", "batch_size": 2, "world_size": 1}


def test_an_item_range_is_text_in_yaml_and_overrides(tmp_path):
    """YAML 1.1 reads 10:50 as the base-60 number 650: `650 is not a valid str`."""
    path = tmp_path / "exp.yaml"
    path.write_text("items: 10:50\nother: 1:02:03\nsteps: 3\nrate: 1.5\n")
    assert read_mapping(path, "experiment") == {"items": "10:50", "other": "1:02:03", "steps": 3, "rate": 1.5}
    assert apply_overrides({}, ["items=250:500", "n=7"]) == {"items": "250:500", "n": 7}


@dataclass
class Spec:
    items: str | None = None


def test_an_item_range_override_reaches_a_config(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("items: 0:250\n")
    assert build(Spec, read_mapping(path, "spec"), "spec").items == "0:250"
    assert build(Spec, apply_overrides({}, ["items=10:50"]), "spec").items == "10:50"


def test_a_bad_jsonl_record_names_its_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "c", "completion": "d"}\n{"prompt": oops}\n')
    with pytest.raises(PolyalignError, match="malformed JSON at line 4 "):
        read_records(path)


def test_two_evaluations_cannot_share_an_out_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with open(out / LOCK, "a+") as other:  # another process's evaluation holds the folder
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(PolyalignError, match="another evaluation is writing this folder"):
            claim_run_dir(out, {"model": "m", "task": "emotion"}, False, 0, RUNTIME)
        assert sorted(p.name for p in out.iterdir()) == [LOCK]
    claim_run_dir(out, {"model": "m", "task": "emotion"}, False, 0, RUNTIME)
    claim_run_dir(out, {"model": "m", "task": "emotion"}, False, 0, RUNTIME)  # the same process: resumes
    assert (out / "run.json").exists()


@pytest.mark.parametrize(
    "model,message",
    [
        ("nonexistent-model", "model 'nonexistent-model': not a packaged alias (gemma-3-270m, smollm2-135m)"),
        ("./no/such/folder", "./no/such/folder: model folder not found"),
        ("owner name/x", "model 'owner name/x': not a packaged alias"),
    ],
)
def test_a_dry_run_refuses_a_model_that_cannot_exist(tmp_path, data_dir, capsys, model, message):
    from polyalign.cli import main

    path = tmp_path / "e.yaml"
    path.write_text(f"models: ['{model}']\ntasks: [emotion]\nlanguages: [en]\nlimit: 2\n")
    assert main(["run", str(path), "--dry-run", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--data-dir", str(data_dir)]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_a_dry_run_accepts_aliases_folders_and_hub_ids(tmp_path, data_dir, capsys):
    from polyalign.cli import main

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    path = tmp_path / "e.yaml"
    path.write_text(f"models: [gemma-3-270m, '{folder}', Qwen/Qwen1.5-7B]\ntasks: [emotion]\nlanguages: [en]\n")
    assert main(["run", str(path), "--dry-run", "--data-dir", str(data_dir)]) == 0, capsys.readouterr().err
    (folder / "config.json").unlink()
    assert main(["run", str(path), "--dry-run", "--data-dir", str(data_dir)]) == 2
    assert "not a model folder (no config.json)" in capsys.readouterr().err
