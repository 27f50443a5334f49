"""A damaged store is one line: a bad sample row names its step, language and item; a wiped store is
called wiped; the commands exit non-zero without a traceback."""

import sqlite3

import pytest

from helpers import write_run_store
from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.study.store import STORE_NAME, Store
from polyalign.study.store_check import unreadable_rows

BASE = {"setting": "base"}
EXPERIMENT = {
    "name": "t",
    "models": ["m"],
    "tasks": ["emotion"],
    "modes": ["english"],
    "scoring": "exact",
    "alignment": [],
    "claims": {
        "claims": [
            {
                "id": "1",
                "statement": "s",
                "paper": "T",
                "comparison": "c",
                "parts": [
                    {"name": "p", "treatment": {"setting": "base", "mode": "native"}, "reference": {"setting": "base"}}
                ],
            }
        ]
    },
}
STEP = "a" * 64
SCORES = {"positive": 0.7, "negative": 0.3}
LABELS = {"model": "m", "setting": "base", "task": "emotion", "mode": "english", "scoring": "exact"}


def make_run(tmp_path):
    run_dir = tmp_path / "run"
    plan = [{"kind": "eval", "key": STEP, "label": "m base emotion/english", "labels": LABELS, "dir": "steps/eval-x"}]
    rows = [
        {"lang": lang, "idx": i, "gold": "positive", "pred": "positive", "scores": {"positive": 0.7, "negative": 0.3}}
        for lang in ("en", "de")
        for i in range(6)
    ]
    write_run_store(run_dir, EXPERIMENT, {tuple(LABELS.values()): rows}, plan, step=STEP)
    (run_dir / "steps" / "eval-x").mkdir(parents=True)
    (run_dir / "steps" / "eval-x" / "done.json").write_text(f'{{"kind": "eval", "key": "{STEP}", "outputs": {{}}}}')
    return run_dir


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err
    return captured.err


def corrupt_row(run_dir, lang="de", idx=3):
    db = sqlite3.connect(run_dir / STORE_NAME)
    with db:
        db.execute(
            'UPDATE samples SET scores_json = \'{"positive": 0.7, "neg\' WHERE lang = ? AND idx = ?', (lang, idx)
        )
    db.close()


@pytest.mark.parametrize("command", [["report"], ["report", "--format", "csv"], ["claims"]])
def test_one_bad_row_is_named_in_one_line(tmp_path, capsys, command):
    run_dir = make_run(tmp_path)
    assert main([command[0], str(run_dir), *command[1:]]) == 0  # the intact run reports
    capsys.readouterr()
    corrupt_row(run_dir)
    assert main([command[0], str(run_dir), *command[1:]]) == 2
    err = one_error_line(capsys)
    assert f"step eval-{STEP[:12]}" in err and "language de, item 3" in err and "re-ingest" in err


def test_a_rerun_sees_the_bad_rows_of_its_step(tmp_path):
    run_dir = make_run(tmp_path)
    with Store(run_dir) as store:
        assert unreadable_rows(store, STEP) == 0
    corrupt_row(run_dir, "en", 0)
    corrupt_row(run_dir, "en", 5)
    with Store(run_dir) as store:
        assert unreadable_rows(store, STEP) == 2  # what makes the eval step re-ingest its folder


@pytest.mark.parametrize("command", ["report", "claims"])
def test_a_zero_byte_store_is_called_wiped(tmp_path, capsys, command):
    run_dir = make_run(tmp_path)
    (run_dir / STORE_NAME).write_bytes(b"")
    assert main([command, str(run_dir)]) == 2
    err = one_error_line(capsys)
    assert "empty (0 bytes)" in err and "wiped" in err and "1 finished step folder" in err
    assert (run_dir / STORE_NAME).stat().st_size == 0  # reading it wrote nothing


@pytest.mark.parametrize("table", ["samples", "meta"])
def test_emptied_tables_beside_finished_steps_are_called_wiped(tmp_path, capsys, table):
    run_dir = make_run(tmp_path)
    db = sqlite3.connect(run_dir / STORE_NAME)
    with db:
        db.execute(f"DELETE FROM {table}")
    db.close()
    assert main(["report", str(run_dir)]) == 2
    assert "wiped" in one_error_line(capsys)


@pytest.mark.slow
def test_a_rerun_reingests_the_step_of_a_bad_row(tiny_llama, data_dir, tmp_path, capsys):
    import yaml

    spec = {"models": [str(tiny_llama)], "tasks": ["emotion"], "languages": ["en", "zh"], "limit": 3}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**spec, "data_dir": str(data_dir), "batch_size": 3}))
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run_dir)]) == 0
    assert main(["report", str(run_dir)]) == 0
    before = (run_dir / "report.md").read_text()
    corrupt_row(run_dir, "zh", 1)
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 2 and "language zh, item 1" in one_error_line(capsys)
    assert main(["run", str(path), "--out", str(run_dir)]) == 0  # every step skipped, the rows re-ingested
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.md").read_text() == before


def test_a_store_locked_while_opening_is_waited_for_not_called_damaged(tmp_path, monkeypatch):
    """Two `polyalign run` on one folder open its store at once: a 'database is locked' then is
    waited out (CI saw it reported as an unreadable store); damage is still reported."""
    Store(tmp_path).close()
    opened, attempts = Store._open, []

    def locked_twice(self, existed):
        attempts.append(existed)
        if len(attempts) <= 2:
            raise sqlite3.OperationalError("database is locked")
        opened(self, existed)

    monkeypatch.setattr(Store, "_open", locked_twice)
    with Store(tmp_path) as store:
        store.set_meta("k", 1)
        assert store.get_meta("k") == 1
    assert len(attempts) == 3

    def damaged(self, existed):
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(Store, "_open", damaged)
    with pytest.raises(PolyalignError, match="unreadable store"):
        Store(tmp_path)
