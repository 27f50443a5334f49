"""The eval --out folder (polyalign.evaluation.eval_folder): it never takes over the user's files,
--overwrite removes only what an evaluation wrote, and a resume compares the adapter and prompt pack
by content, not path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.core.prompts import default_pack_path
from polyalign.evaluation.eval_folder import LOCK, check_run_dir, claim_run_dir, content_identity

RUNTIME = {"dtype": "float32", "device": "cpu", "batch_size": 2, "world_size": 1}


def eval_argv(data_dir, out: Path, *extra: str) -> list[str]:
    return ["eval", "--model", "/nonexistent/model", "--task", "emotion", "--langs", "en", "--limit", "2"] + [
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        *extra,
    ]


def users_folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    (folder / "figures").mkdir()
    (folder / "figures" / "a.png").write_text("png")
    return folder


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
@pytest.mark.parametrize("through_link", [False, True])
def test_a_folder_of_the_users_files_is_refused_and_kept(data_dir, tmp_path, capsys, overwrite, through_link):
    folder = users_folder(tmp_path / "work")
    out = folder
    if through_link:
        out = tmp_path / "link"
        out.symlink_to(folder)
    assert main(eval_argv(data_dir, out, *overwrite)) == 2
    err = capsys.readouterr().err.strip()
    assert "holds files that are not a polyalign run (figures, thesis.tex)" in err and len(err.splitlines()) == 1
    assert (folder / "thesis.tex").read_text() == "years of work" and (folder / "figures" / "a.png").exists()


def identity(**changes) -> dict:
    base = {"model": "m", "task": "emotion", "langs": "en", "mode": "english", "scoring": "exact", "adapter": None}
    return {**base, "prompts": None, **changes}


def write_run(out: Path, ident: dict) -> None:
    claim_run_dir(out, ident, False, 0, RUNTIME)
    (out / "samples").mkdir()
    (out / "samples" / "emotion_en.jsonl").write_text("{}\n")
    (out / "results.json").write_text("{}")


@pytest.mark.parametrize("through_link", [False, True])
def test_overwrite_removes_only_what_the_evaluation_wrote(tmp_path, through_link):
    folder = tmp_path / "run"
    folder.mkdir()
    write_run(folder, identity())
    (folder / "notes.txt").write_text("mine")
    out = folder
    if through_link:
        out = tmp_path / "link"
        out.symlink_to(folder)
    with pytest.raises(PolyalignError, match="holds a different run .*differs in mode"):
        check_run_dir(out, identity(mode="native"), False)
    claim_run_dir(out, identity(mode="native"), True, 0, RUNTIME)
    assert sorted(p.name for p in folder.iterdir()) == [LOCK, "notes.txt", "run.json"]
    assert json.loads((folder / "run.json").read_text())["config"]["mode"] == "native"
    assert out.exists() and (folder / "notes.txt").read_text() == "mine"


def test_evaluation_files_without_run_json_need_overwrite(tmp_path):
    out = tmp_path / "run"
    (out / "samples").mkdir(parents=True)
    with pytest.raises(PolyalignError, match="evaluation files without run.json"):
        check_run_dir(out, identity(), False)
    claim_run_dir(out, identity(), True, 0, RUNTIME)
    assert sorted(p.name for p in out.iterdir()) == [LOCK, "run.json"]


def adapter(folder: Path, weights: bytes) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


def test_a_replaced_adapter_or_edited_pack_is_a_different_run(tmp_path):
    """The same paths with other contents: the old numbers must not be resumed."""
    lora = adapter(tmp_path / "lora", b"first")
    pack = tmp_path / "pack.json"
    shutil.copy(default_pack_path(), pack)
    out = tmp_path / "run"
    ident = identity(adapter=str(lora), prompts=str(pack))
    write_run(out, ident)
    assert check_run_dir(out, ident, False) is False  # unchanged: resumed
    adapter(lora, b"second")
    with pytest.raises(PolyalignError, match="differs in adapter_sha256"):
        check_run_dir(out, ident, False)
    adapter(lora, b"first")
    pack.write_text(pack.read_text().replace("Sentiment", "Feeling"))
    with pytest.raises(PolyalignError, match="differs in prompts_sha256"):
        check_run_dir(out, ident, False)
    shutil.copy(default_pack_path(), pack)
    assert check_run_dir(out, ident, False) is False  # the same contents again: resumed


def test_a_task_file_is_identified_by_content(tmp_path):
    task = tmp_path / "task.yaml"
    task.write_text("name: a\n")
    first = content_identity(identity(task=str(task)))
    task.write_text("name: b\n")
    assert content_identity(identity(task=str(task)))["task_sha256"] != first["task_sha256"]
    assert "task_sha256" not in content_identity(identity())


def test_a_run_json_being_written_by_another_process_is_ours(tmp_path):
    """Under accelerate launch, rank 1 checks the folder while rank 0 writes run.json atomically."""
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text("")
    (out / ".run.json.1t7ues3a.tmp").write_text("{")
    assert check_run_dir(out, identity(), False) is False
