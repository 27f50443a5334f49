"""`polyalign run --dry-run` refuses what the run would refuse later, naming the YAML key as written."""

import pytest
import yaml

from polyalign.cli import main

SETTING = {"name": "al", "task": "emotion", "sources": ["zh"], "target": "en", "items": "250:500", "per_language": 50}
BASE = {"models": ["gemma-3-270m"], "alignment": [SETTING], "languages": ["en", "de"], "items": "0:50"}


def dry_run(tmp_path, data_dir, capsys, **change) -> tuple[int, str]:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**BASE, **change}))
    code = main(["run", str(path), "--dry-run", "--data-dir", str(data_dir)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"alignment": [{**SETTING, "seeds": [2**70]}]}, "alignment 'al': seeds: 1180591620717411303424: a seed must"),
        ({"alignment": [{**SETTING, "seeds": [0, 2**32]}]}, "alignment 'al': seeds: 4294967296: a seed must"),
        ({"alignment": [{**SETTING, "train": {"seed": 2**32}}]}, "seed 4294967296: a seed must be a whole number"),
        ({"alignment": [{**SETTING, "items": "490:600"}]}, "alignment 'al': items 490:600 is out of range"),
        ({"alignment": [{**SETTING, "per_language": 300}]}, "alignment 'al': per_language 300 is more than the 250"),
        ({"alignment": [{**SETTING, "items": None}]}, "alignment 'al': the benchmark ships no emotion training"),
        ({"alignment": [{**SETTING, "items": None, "target": "it"}]}, "ships no emotion training questions in 'it'"),
        ({"items": "0:600", "alignment": []}, "items 0:600 is out of range"),
        ({"analyses": {"lens": [{"task": "emotion", "langs": ["en"], "items": "0:501"}]}}, "analyses.lens.items 0:501"),
    ],
)
def test_the_dry_run_refuses_what_the_run_would(tmp_path, data_dir, capsys, change, message):
    code, err = dry_run(tmp_path, data_dir, capsys, **change)
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert "--items" not in err  # the value came from a YAML key, not from the flag


def test_the_largest_seed_and_a_full_range_pass(tmp_path, data_dir, capsys):
    change = {"alignment": [{**SETTING, "items": "0:500", "seeds": [0, 2**32 - 1]}], "items": None}
    code, err = dry_run(tmp_path, data_dir, capsys, **change, allow_overlap=True)
    assert code == 0, err


def test_the_data_step_names_the_key_too(tmp_path, data_dir):
    """The run's own check, not a second copy: the data step refuses the same range the same way."""
    from polyalign.core.errors import PolyalignError
    from polyalign.study.alignment_steps import data_step
    from polyalign.study.experiment_spec import load_experiment
    from polyalign.study.step_context import StepContext

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**BASE, "alignment": [{**SETTING, "items": "490:600"}], "data_dir": str(data_dir)}))
    exp = load_experiment(path)
    step = data_step(StepContext(exp, None), exp.alignment[0])
    with pytest.raises(PolyalignError, match="alignment 'al': items 490:600 is out of range"):
        step.run(tmp_path / "folder")


def test_an_invalid_value_reads_as_such(tmp_path, data_dir, capsys):
    """Not "unknown alignment 'al': pairing 'random'", which reads as if the setting were unknown."""
    code, err = dry_run(tmp_path, data_dir, capsys, alignment=[{**SETTING, "pairing": "random"}])
    assert code == 2 and "alignment 'al': invalid pairing 'random' (choose from parallel, shuffled)" in err
