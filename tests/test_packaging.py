"""The package as users outside the repository get it: --version, every command's help, packaged
experiment configs, where the benchmark is looked for, and the library notices its import silences
(scripts/wheel_check.sh checks the built wheel itself)."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
import warnings
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
