"""Bad inputs end in one line and exit 2, before any model is loaded, and lose nothing."""

from __future__ import annotations

import importlib
import logging
import os
import warnings

import pytest

import polyalign
from helpers import one_line_error
from polyalign.core.errors import PolyalignError
from polyalign.core.paths import check_output_path

NO_MODEL = "/nonexistent/model"  # loading it would fail with another message: the check must come first


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


@pytest.mark.parametrize("name", ["config.yaml", "prompts.json", "emotion_de500_test.json"])
def test_files_that_are_not_utf8(name, data_dir, tmp_path, capsys):
    bad = tmp_path / name
    bad.write_bytes(b"\xff\xfe{[")
    if name == "config.yaml":
        argv = ["train", "--model", NO_MODEL, "--data", "p.jsonl", "--out", str(tmp_path / "o"), "--config", str(bad)]
    elif name == "prompts.json":
        argv = ["prompt", "--task", "emotion", "--lang", "de", "--data-dir", str(data_dir), "--prompts", str(bad)]
    else:
        (tmp_path / "ap_emotion").mkdir()
        bad = bad.rename(tmp_path / "ap_emotion" / name)
        argv = ["prompt", "--task", "emotion", "--lang", "de", "--data-dir", str(tmp_path)]
    one_line_error(capsys, argv, f"{bad}: not UTF-8 text (byte 0)")


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


@pytest.mark.slow
def test_forwards_use_the_current_cache_api_and_only_peft_notice_is_filtered(tiny_llama):
    """Scoring (cached shared prefix) and state collection pass `cache=`, so transformers neither warns
    nor logs the `past_key_values` rename (the old name goes in 5.40); peft's `is_gradient_checkpointing`
    read is the one notice polyalign filters, exactly."""
    import torch

    from helpers import WORDS, make_items
    from polyalign.analysis.states import collect_states
    from polyalign.engine.models import load_model
    from polyalign.engine.scoring import Scorer

    model, tok = load_model(str(tiny_llama))
    items, shared = make_items(tok, WORDS)
    assert shared > 0  # the KV-cache path runs
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("transformers.utils.generic")
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            logging.Logger.warning_once.cache_clear()  # type: ignore[attr-defined]  # transformers' lru_cache
            Scorer(model, tok).score(items[:2], shared, "exact", None, batch_size=2)
            for pooling in ("all", "mean"):
                list(collect_states(model, tok, items[:2], shared, [1], pooling, 2, desc="t"))
            ours = [str(w.message) for w in seen] + [r.getMessage() for r in records]
            # the capture works: the deprecated name does warn and log
            model.model(input_ids=torch.tensor([[1, 2]]), past_key_values=None, use_cache=False)
            old = [str(w.message) for w in seen] + [r.getMessage() for r in records]
    finally:
        logger.removeHandler(handler)
    assert not [m for m in ours if "past_key_values" in m or "cache_params" in m], ours
    assert any("past_key_values" in m for m in old)

    with warnings.catch_warnings(record=True) as unfiltered:
        warnings.simplefilter("always")  # without polyalign's filter: peft's read does warn
        assert model.is_gradient_checkpointing is False
    assert any("is_gradient_checkpointing" in str(w.message) for w in unfiltered)
    with warnings.catch_warnings(record=True) as filtered:
        # pytest drops warning filters installed while it collects (when polyalign was first imported):
        # import it again here, as a user's process does before anything else
        warnings.simplefilter("always")
        importlib.reload(polyalign)  # its filter goes in front of "always"
        warnings.warn("another notice", FutureWarning, stacklevel=1)
        assert model.is_gradient_checkpointing is False
    assert [str(w.message) for w in filtered] == ["another notice"]
