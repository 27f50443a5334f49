"""The package as users outside the repository get it: --version, packaged experiment configs,
and where the benchmark is looked for (scripts/wheel_check.sh checks the built wheel itself)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import polyalign
from polyalign.cli import main
from polyalign.core import tasks
from polyalign.core.errors import PolyalignError
from polyalign.study.experiment_files import packaged_names, resolve_experiment

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # launches a fresh interpreter
def test_version_is_defined_once_and_needs_no_torch():
    assert version("polyalign") == polyalign.__version__
    code = (
        "import sys; from polyalign.cli import main; assert main(['--version']) == 0; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == f"polyalign {polyalign.__version__}\n"


def test_configs_lists_every_packaged_experiment(capsys):
    in_repo = {p.relative_to(REPO / "configs").with_suffix("").as_posix() for p in (REPO / "configs").rglob("*.yaml")}
    assert set(packaged_names()) == in_repo and "paper/table3_tasks" in in_repo and "examples/emotion_study" in in_repo
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = [line.split()[0] for line in lines if line.startswith(("paper/", "examples/"))]
    assert listed == sorted(in_repo)


def test_configs_copy_refuses_to_overwrite(tmp_path, monkeypatch, capsys):
    source = REPO / "configs" / "paper" / "table3_tasks.yaml"
    assert main(["configs", "copy", "paper/table3_tasks", str(tmp_path / "mine.yaml")]) == 0
    assert (tmp_path / "mine.yaml").read_bytes() == source.read_bytes()
    (tmp_path / "mine.yaml").write_text("edited")
    assert main(["configs", "copy", "paper/table3_tasks", str(tmp_path / "mine.yaml")]) == 2
    assert "--overwrite" in capsys.readouterr().err and (tmp_path / "mine.yaml").read_text() == "edited"
    assert main(["configs", "copy", "paper/table3_tasks.yaml", str(tmp_path / "mine.yaml"), "--overwrite"]) == 0
    assert (tmp_path / "mine.yaml").read_bytes() == source.read_bytes()
    monkeypatch.chdir(tmp_path)  # default destination: NAME's file name in the CWD; a folder takes it too
    assert main(["configs", "copy", "examples/grid_cpu"]) == 0 and (tmp_path / "grid_cpu.yaml").is_file()
    (tmp_path / "sub").mkdir()
    assert main(["configs", "copy", "paper/figure1_lens", "sub"]) == 0
    assert (tmp_path / "sub" / "figure1_lens.yaml").is_file()
    assert main(["configs", "copy", "paper/nope"]) == 2


def test_run_takes_a_packaged_name_or_a_file(data_dir, tmp_path, monkeypatch, capsys):
    packaged = resolve_experiment("paper/table3_tasks")
    assert packaged == resolve_experiment("paper/table3_tasks.yaml") and packaged.parent.parent.name == "experiments"
    mine = tmp_path / "paper" / "table3_tasks.yaml"  # an existing file wins over the packaged name
    mine.parent.mkdir()
    mine.write_text("x")
    monkeypatch.chdir(tmp_path)
    assert resolve_experiment("paper/table3_tasks.yaml") == Path("paper/table3_tasks.yaml")
    with pytest.raises(PolyalignError, match="polyalign configs"):
        resolve_experiment("paper/table9")
    monkeypatch.delenv("POLYALIGN_DATA", raising=False)
    monkeypatch.setattr(tasks, "source_checkout", lambda: None)  # only --data-dir can point at the data
    assert main(["run", "paper/table3_tasks", "--dry-run", "--data-dir", str(data_dir)]) == 0
    assert "paper/table3_tasks: valid" in capsys.readouterr().out


def test_data_dir_outside_a_checkout_is_one_line_and_never_the_cwd(tmp_path, monkeypatch, capsys, data_dir):
    monkeypatch.setattr(tasks, "source_checkout", lambda: None)
    monkeypatch.delenv("POLYALIGN_DATA", raising=False)
    cwd = tmp_path / "cwd"  # folders that look like the benchmark, where the old default looked
    for decoy in (cwd / "data" / "multilingual-learner", tmp_path / "shared" / "data" / "multilingual-learner"):
        decoy.parent.mkdir(parents=True)
        decoy.symlink_to(data_dir, target_is_directory=True)
    monkeypatch.chdir(cwd)
    for argv in (
        ["prompt", "--task", "snli", "--lang", "zh", "--index", "3"],
        ["run", "paper/table3_tasks", "--dry-run"],
    ):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.splitlines()) == 1
        for needed in ("--data-dir", "POLYALIGN_DATA", "Shimao-Zhang/LLM-Multilingual-Learner", "data/"):
            assert needed in captured.err
    monkeypatch.setenv("POLYALIGN_DATA", str(tmp_path / "missing"))
    with pytest.raises(PolyalignError, match=f"not found at {tmp_path / 'missing'} \\(POLYALIGN_DATA\\)"):
        tasks.resolve_data_dir(None)
    assert tasks.resolve_data_dir(str(data_dir)) == data_dir
    monkeypatch.setenv("POLYALIGN_DATA", str(data_dir))
    assert main(["prompt", "--task", "snli", "--lang", "zh", "--index", "3"]) == 0


def test_data_dir_in_the_source_checkout(monkeypatch, tmp_path):
    assert tasks.source_checkout() == REPO
    default = REPO.parent / "shared" / "data" / "multilingual-learner"
    if not default.is_dir():
        pytest.skip(f"no benchmark at {default}")
    monkeypatch.delenv("POLYALIGN_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # beside the repository, whatever the CWD
    assert tasks.resolve_data_dir(None).resolve() == default.resolve()
    monkeypatch.chdir(REPO)  # from the root: the relative form that earlier runs recorded
    assert tasks.resolve_data_dir(None) == Path("../shared/data/multilingual-learner")


def command_parsers(parser, prefix=()) -> dict[tuple[str, ...], object]:
    """Every (sub)command's parser by its words, e.g. ("data", "build")."""
    import argparse

    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[(*prefix, name)] = sub
                found |= command_parsers(sub, (*prefix, name))
    return found


def test_every_commands_help_says_what_it_does(capsys):
    from polyalign.cli.commands import build_parser

    commands = command_parsers(build_parser())
    assert {"eval", "run", "configs", "report", "claims", "paper-side", "lens", "pca"} <= {c[0] for c in commands}
    assert ("data", "build") in commands
    for words in commands:
        with pytest.raises(SystemExit):
            main([*words, "--help"])
        out = capsys.readouterr().out
        description = out.split("\n\n")[1]  # after the usage lines
        assert not description.startswith(("positional", "options")), f"{' '.join(words)} --help: no description"
