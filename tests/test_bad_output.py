"""Where results go: an --out that cannot be written (a file in the way, a read-only folder, a dangling
link, a full disk), a folder holding another run, a damaged one or another process's evaluation. Each
ends in one line and exit 2, before any model is loaded, and loses nothing that was there. Bad input
files and values: test_bad_input.py."""

from __future__ import annotations

import fcntl
import os

import pytest

from helpers import NO_MODEL, one_line_error
from polyalign.core.errors import PolyalignError
from polyalign.core.paths import check_output_path
from polyalign.evaluation.eval_folder import LOCK, claim_run_dir

RUNTIME = {"dtype": "float32", "device": "cpu", "batch_size": 2, "world_size": 1}


def commands(data_dir, out: str) -> dict[str, list[str]]:
    data = ["--data-dir", str(data_dir)]
    analysis = ["--model", NO_MODEL, "--task", "emotion", "--langs", "en,de", "--limit", "3", *data, "--out", out]
    return {
        "eval": ["eval", *analysis],
        "lens": ["lens", *analysis],
        "pca": ["pca", *analysis],
        "train": ["train", "--model", NO_MODEL, "--data", "pairs.jsonl", "--out", out],
        "data build": [
            "data",
            "build",
            "--task",
            "snli",
            "--sources",
            "zh",
            "--per-language",
            "3",
            *data,
            "--out",
            out + ".jsonl",
        ],
        "run": ["run", "experiment.yaml", "--out", out],
        "report": ["report", "run_dir", "--out", out + ".md"],
        "merge": ["merge", "--model", NO_MODEL, "--adapter", "adapter", "--out", out],
    }


@pytest.mark.parametrize("command", ["eval", "lens", "pca", "train", "data build", "run", "report", "merge"])
def test_unwritable_out_fails_first_in_one_line(command, data_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("kept")
    one_line_error(capsys, commands(data_dir, str(blocker / "out"))[command], "a_file is a file, not a folder")
    assert blocker.read_text() == "kept" and sorted(tmp_path.iterdir()) == [blocker]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write in read-only folders")
def test_out_in_a_read_only_folder(data_dir, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        one_line_error(capsys, commands(data_dir, str(locked / "out"))["eval"], "cannot write in")
    finally:
        locked.chmod(0o700)


def test_check_output_path(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(PolyalignError, match="is a file, not a folder"):
        check_output_path(tmp_path / "f")
    with pytest.raises(PolyalignError, match="is a folder, not a file"):
        check_output_path(tmp_path, folder=False)
    check_output_path(tmp_path / "f", folder=False)  # an existing file output: its --overwrite decides
    check_output_path(tmp_path / "new" / "deeper")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # nothing created, no probe left behind


def test_run_default_folder_is_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("not a folder")
    (tmp_path / "e.yaml").write_text("models: [m]\ntasks: [emotion]\n")
    one_line_error(capsys, ["run", "e.yaml"], "runs/e: cannot be created: runs is a file, not a folder")


@pytest.mark.parametrize(
    "content,match",
    [
        ("{bad", "unreadable (Expecting property name"),
        ('{"x": 1}', "unreadable (no 'config' entry)"),
        ('{"config": {}}', "holds a different run"),
    ],
)
def test_eval_folder_with_a_bad_run_json_is_refused_before_loading(content, match, data_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    (out / "samples").mkdir(parents=True)
    (out / "run.json").write_text(content)
    (out / "samples" / "emotion_en.jsonl").write_text('{"index": 0}\n')
    one_line_error(capsys, commands(data_dir, str(out))["eval"], match)
    assert (out / "run.json").read_text() == content and (out / "samples" / "emotion_en.jsonl").exists()


@pytest.fixture
def pairs(data_dir, tmp_path):
    from polyalign.alignment.alignment_data import PairRequest, build_pairs, write_pairs
    from polyalign.core.prompts import PromptPack

    path = tmp_path / "pairs.jsonl"
    write_pairs(build_pairs(PairRequest("snli", ["zh"], "en", 4, 0, data_dir, PromptPack.load())), path)
    return path


def test_train_checks_the_model_before_writing(pairs, tmp_path, capsys):
    out = tmp_path / "run"
    one_line_error(
        capsys, ["train", "--model", NO_MODEL, "--data", str(pairs), "--out", str(out)], "model folder not found"
    )
    assert not out.exists()  # so the corrected command runs into the same --out without --overwrite


@pytest.mark.slow
def test_train_folder_with_a_malformed_config_yaml(pairs, tiny_llama, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("model: [unclosed\n")
    (out / "log.jsonl").write_text('{"step": 1}\n')
    argv = ["train", "--model", str(tiny_llama), "--data", str(pairs), "--out", str(out), "max_steps=1"]
    one_line_error(capsys, argv, "config.yaml: unreadable")
    assert (out / "config.yaml").read_text() == "model: [unclosed\n" and (out / "log.jsonl").read_text()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_results_sqlite(damage, tmp_path, capsys, data_dir):
    import sqlite3

    from polyalign.study.store import STORE_NAME

    run = tmp_path / "run"
    run.mkdir()
    store = run / STORE_NAME
    if damage == "garbage":
        store.write_bytes(b"not a database at all" * 200)
    else:
        db = sqlite3.connect(tmp_path / "full.sqlite")
        db.execute("CREATE TABLE t (x)")
        db.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 2000)
        db.commit()
        db.close()
        store.write_bytes((tmp_path / "full.sqlite").read_bytes()[:200_000])
    before = store.read_bytes()
    (tmp_path / "e.yaml").write_text("models: [org/m]\ntasks: [emotion]\n")
    one_line_error(capsys, ["report", str(run)], "results.sqlite: unreadable store")
    one_line_error(capsys, ["run", str(tmp_path / "e.yaml"), "--out", str(run)], "results.sqlite: unreadable store")
    assert store.read_bytes() == before


def test_out_as_a_dangling_symlink_is_one_line(tmp_path, capsys, data_dir):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone")
    argv = ["eval", "--model", NO_MODEL, "--task", "emotion", "--langs", "en", "--limit", "2"]
    one_line_error(capsys, [*argv, "--data-dir", str(data_dir), "--out", str(link)], "which does not exist")
    assert link.is_symlink() and not (tmp_path / "gone").exists()


def test_a_full_disk_is_one_line(monkeypatch, capsys):
    import errno

    from polyalign.cli import commands as cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/samples/emotion_en.jsonl")

    monkeypatch.setattr(cli, "cmd_prompt", full)
    one_line_error(capsys, ["prompt", "--task", "emotion", "--lang", "en"], "emotion_en.jsonl: No space left on device")


@pytest.mark.parametrize("command", ["train", "merge"])
def test_overwrite_never_replaces_through_a_symlink(tmp_path, capsys, command):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("kept")
    link = tmp_path / "out"
    link.symlink_to(target)
    argv = {
        "train": ["train", "--model", NO_MODEL, "--data", "pairs.jsonl"],
        "merge": ["merge", "--model", NO_MODEL, "--adapter", "adapter"],
    }[command]
    one_line_error(capsys, [*argv, "--out", str(link), "--overwrite"], "does not replace through a link")
    assert (target / "keep.txt").read_text() == "kept" and link.is_symlink()


def test_merge_overwrite_replaces_only_a_merged_model(tmp_path, capsys):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "keep.txt").write_text("kept")
    argv = ["merge", "--model", NO_MODEL, "--adapter", "adapter", "--out", str(folder), "--overwrite"]
    one_line_error(capsys, argv, "holds files that are not a merged model")
    assert (folder / "keep.txt").read_text() == "kept"


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
