"""No option is silently ignored: a task's `shots:` with the paper's verbatim pack, `tasks: []`."""

import pytest
import yaml

from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.core.prompts import PromptPack
from polyalign.core.tasks import load_task
from polyalign.evaluation.inputs import check_inputs

EMOTION = (
    "name: emotion\nclasses: [positive, negative]\nfields: [input]\nshots: {shots}\n"
    'test_file: "ap_emotion/emotion_{{lang}}500_test.json"\nanswer_field: answer\n'
    "answer_words:\n  positive: [positive]\n  negative: [negative]\n"
)


def task_file(tmp_path, shots: int) -> str:
    path = tmp_path / f"emotion_{shots}.yaml"
    path.write_text(EMOTION.format(shots=shots))
    return str(path)


@pytest.mark.parametrize("shots", [0, 1, 1000])
def test_the_papers_pack_refuses_a_shot_count_it_cannot_give(tmp_path, data_dir, shots):
    with pytest.raises(PolyalignError) as err:
        check_inputs(
            task_file(tmp_path, shots), ["en"], "english", data_dir=data_dir, prompts=data_dir / "prompts.json"
        )
    assert f"verbatim, 2-shot; the task declares shots: {shots}" in str(err.value)


def test_the_papers_pack_gives_its_own_shot_count(tmp_path, data_dir):
    pack = PromptPack.load(data_dir / "prompts.json")
    task = load_task(task_file(tmp_path, 2))
    assert pack.fewshot(task, "en", "english").count("Emotion: ") == 2


def test_eval_refuses_before_a_model_loads(tmp_path, data_dir, capsys):
    args = ["eval", "--model", "gemma-3-270m", "--task", task_file(tmp_path, 0), "--langs", "en", "--limit", "2"]
    args += ["--data-dir", str(data_dir), "--prompts", str(data_dir / "prompts.json"), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "shots: 0" in capsys.readouterr().err


def test_an_empty_task_list_of_a_setting_is_refused_like_its_siblings(tmp_path, data_dir, capsys):
    """A setting's tasks: [] meant "all tasks" (models: [] and modes: [] were refused). The top-level
    tasks: [] stays allowed: an experiment of analyses only (paper/figure1_lens) evaluates nothing."""
    setting = {"name": "al", "task": "emotion", "sources": ["zh"], "items": "250:500", "tasks": []}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"models": ["gemma-3-270m"], "alignment": [setting], "items": "0:50"}))
    message = "alignment 'al': tasks: list at least one task"
    assert main(["run", str(path), "--dry-run", "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
