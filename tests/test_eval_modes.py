"""Per-task and per-setting label-word modes: a costly mode runs on the few arms a claim needs."""

import pytest

from helpers import write_experiment
from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.study.experiment import Runner
from polyalign.study.experiment_spec import load_experiment

SETTING = {"task": "emotion", "sources": ["zh"], "target": "en", "items": "250:260", "per_language": 4}


def _experiment(tmp_path, data_dir, alignment, **top):
    return write_experiment(tmp_path, data_dir, alignment, **{"tasks": ["emotion", "snli"], **top})


def _evals(path, tmp_path) -> list[tuple[str, str, str]]:
    steps = Runner(load_experiment(path), None, tmp_path).plan()
    return [tuple(s.config["labels"][k] for k in ("setting", "task", "mode")) for s in steps if s.kind == "eval"]


def test_task_modes_and_setting_modes_choose_the_eval_steps(tmp_path, data_dir):
    alignment = [
        {**SETTING, "name": "a", "modes": ["english", "agnostic"], "tasks": ["emotion"]},
        {**SETTING, "name": "b"},
    ]
    path = _experiment(tmp_path, data_dir, alignment, task_modes={"emotion": ["english", "native", "agnostic"]})
    assert _evals(path, tmp_path) == [
        ("base", "emotion", "english"),
        ("base", "emotion", "native"),
        ("base", "emotion", "agnostic"),
        ("base", "snli", "english"),
        ("a", "emotion", "english"),
        ("a", "emotion", "agnostic"),
        ("b", "emotion", "english"),
        ("b", "emotion", "native"),
        ("b", "emotion", "agnostic"),
        ("b", "snli", "english"),
    ]


def test_modes_default_keeps_every_step_key(tmp_path, data_dir):
    """Declaring the defaults explicitly changes no step: runs written before task_modes keep their keys."""
    plain = Runner(load_experiment(_experiment(tmp_path, data_dir, [{**SETTING, "name": "a"}])), None, tmp_path)
    path = _experiment(
        tmp_path, data_dir, [{**SETTING, "name": "a", "modes": ["english"]}], task_modes={"emotion": ["english"]}
    )
    explicit = Runner(load_experiment(path), None, tmp_path)
    assert [s.key for s in plain.plan()] == [s.key for s in explicit.plan()]


@pytest.mark.parametrize(
    ("alignment", "top", "message"),
    [
        ([{**SETTING, "name": "a", "modes": ["native"]}], {}, r"modes \['native'\] must be among emotion's modes"),
        (
            [{**SETTING, "name": "a", "modes": ["agnostic"]}],
            {"task_modes": {"emotion": ["english", "agnostic"]}},
            r"must be among snli's modes \['english'\]",
        ),
        ([{**SETTING, "name": "a", "modes": []}], {}, "at least one mode"),
        ([], {"task_modes": {"paws": ["english"]}}, r"task_modes: \['paws'\] are not among tasks"),
        ([], {"task_modes": {"emotion": ["english", "english"]}}, "each once"),
        ([], {"task_modes": {"emotion": ["ox"]}}, "ox"),
    ],
)
def test_modes_are_checked(tmp_path, data_dir, alignment, top, message):
    with pytest.raises(PolyalignError, match=message):
        load_experiment(_experiment(tmp_path, data_dir, alignment, **top))


def test_dry_run_counts_modes(tmp_path, data_dir, capsys):
    alignment = [{**SETTING, "name": "a", "modes": ["english", "agnostic"], "tasks": ["emotion"]}]
    path = _experiment(tmp_path, data_dir, alignment, task_modes={"emotion": ["english", "native", "agnostic"]})
    assert main(["run", str(path), "--dry-run"]) == 0
    assert "valid; 1 data, 1 train, 6 eval" in capsys.readouterr().out  # base 3 + 1, a 2


def test_a_setting_can_align_some_models_only(tmp_path, data_dir, capsys):
    """Claim 4 needs one setting on the second model, not all of them: `models` on a setting."""
    alignment = [{**SETTING, "name": "a"}, {**SETTING, "name": "b", "models": ["gemma-3-270m"]}]
    path = _experiment(tmp_path, data_dir, alignment, models=["gemma-3-270m", "smollm2-135m"], tasks=["emotion"])
    steps = Runner(load_experiment(path), None, tmp_path).plan()
    assert [s.label for s in steps if s.kind == "train"] == [
        "gemma-3-270m + a",
        "gemma-3-270m + b",
        "smollm2-135m + a",
    ]
    evals = [(s.config["labels"]["model"], s.config["labels"]["setting"]) for s in steps if s.kind == "eval"]
    assert evals[3:] == [("smollm2-135m", "base"), ("smollm2-135m", "a")]
    assert main(["run", str(path), "--dry-run"]) == 0
    assert "valid; 2 data, 3 train, 5 eval" in capsys.readouterr().out
    bad = _experiment(tmp_path, data_dir, [{**SETTING, "name": "b", "models": ["org/other"]}])
    with pytest.raises(PolyalignError, match="models \\['org/other'\\] must be among"):
        load_experiment(bad)
