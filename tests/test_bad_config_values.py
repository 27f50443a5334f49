"""Bad configuration values (training overrides, schedulers, task files, shots, no scorable language):
one line and a non-zero exit, never a silently wrong result or a traceback."""

from __future__ import annotations

import json

import pytest

from helpers import PAPER_PACK, one_line_error
from polyalign.alignment.train_config import SCHEDULERS, load_config
from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.core.prompts import PromptPack
from polyalign.core.tasks import load_task

TASK = "name: mini\nclasses: [good, bad]\nfields: [text]\nshots: 0\ntest_file: 't/mini_{lang}.jsonl'\n"
EMOTION = TASK.replace("mini", "emotion").replace("[good, bad]", "[positive, negative]").replace("[text]", "[input]")


@pytest.mark.parametrize(
    "override,message",
    [
        ("max_steps=-5", "max_steps must be -1"),
        ("max_steps=0", "max_steps must be -1"),
        ("epochs=-1", "epochs must be a finite number > 0"),
        ("epochs=0", "epochs must be a finite number > 0"),
        ("learning_rate=inf", "learning_rate must be a finite number > 0"),
        ("learning_rate=nan", "learning_rate must be a finite number > 0"),
        ("lr_scheduler=cosyne", "lr_scheduler must be one of"),
        ("weight_decay=nan", "weight_decay must be a finite number"),
        ("max_grad_norm=-1", "max_grad_norm must be a finite number"),
    ],
)
def test_training_values_that_train_nothing_or_nan_are_refused(override, message):
    with pytest.raises(PolyalignError, match=message):
        load_config(overrides=[override])


def test_every_accepted_scheduler_is_one_transformers_builds():
    from transformers.trainer_utils import SchedulerType

    assert {s.value for s in SchedulerType} >= set(SCHEDULERS)
    assert load_config(overrides=["max_steps=5", "lr_scheduler=linear"]).max_steps == 5


def write_task(tmp_path, text: str) -> str:
    path = tmp_path / "task.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "replace,message",
    [
        (("shots: 0", "shots: 0\nanswer_words: {good: [fine], bad: [fine]}"), "'fine' stands for both"),
        (("shots: 0", "shots: 0\nanswer_words: {bad: [Good]}"), "'good' stands for both"),
        (("[good, bad]", "[]"), "classes must be a list of at least two"),
        (("[good, bad]", "good"), "classes must be a list"),
        (("[good, bad]", "[good, 3]"), "classes must be a list"),
        (("[text]", "text"), "fields must be a non-empty list"),
        (("[text]", "[]"), "fields must be a non-empty list"),
        (("[text]", "{a: 1}"), "fields must be a non-empty list"),
        (("shots: 0", "shots: two"), "shots must be a whole number"),
        (("shots: 0", "shots: -1"), "shots must be a whole number"),
        (("{lang}", "{language}"), "must contain {lang} and no other placeholder"),
        (("{lang}", "{lang}_{split}"), "must contain {lang} and no other placeholder"),
        (("{lang}", "{lang"), "not a valid pattern"),
        (("shots: 0", "shots: 0\nanswer_words: [good]"), "answer_words must map classes"),
        (("shots: 0", "shots: 0\nanswer_field: 3"), "answer_field must be a non-empty string"),
    ],
)
def test_bad_task_files_fail_in_one_line(tmp_path, replace, message):
    path = write_task(tmp_path, TASK.replace(*replace))
    with pytest.raises(PolyalignError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_task(path)


def test_task_files_are_read_by_the_typed_loader(tmp_path):
    """Unknown and missing keys and bad YAML are named as in every config file; lists come out as tuples."""
    task = load_task(write_task(tmp_path, TASK))
    assert task.classes == ("good", "bad") and task.fields == ("text",) and task.shots == 0
    for text, message in [
        (TASK + "clases: [a, b]\n", r"unknown key\(s\) clases"),
        (TASK.replace("shots: 0\n", ""), r"missing required key\(s\) shots"),
        (TASK + "pivot: [\n", "malformed YAML"),
        ("- name\n", "must be a mapping"),
    ]:
        with pytest.raises(PolyalignError, match=message):
            load_task(write_task(tmp_path, text))


def test_a_bad_task_file_fails_in_one_line_from_the_cli(tmp_path, capsys, data_dir):
    path = write_task(tmp_path, TASK.replace("[text]", "text"))
    one_line_error(capsys, ["prompt", "--task", path, "--lang", "en", "--data-dir", str(data_dir)], "fields must be")


def test_shots_is_checked_against_the_packs_demos(tmp_path):
    """shots was read by nothing: a task declaring 3 shots over a 2-demo pack entry ran 2-shot."""
    emotion = load_task("emotion")
    pack = PromptPack.load()
    assert pack.fewshot(emotion, "en", "english").count('"\n') == 1  # two demos
    task = load_task(write_task(tmp_path, EMOTION.replace("shots: 0", "shots: 3")))
    with pytest.raises(PolyalignError, match="2 demos but the task declares shots: 3"):
        pack.fewshot(task, "en", "english")
    zero = load_task(write_task(tmp_path, EMOTION))
    with pytest.raises(PolyalignError, match="2 demos but the task declares shots: 0"):
        pack.render(zero, "en", "english", {"text": "x"})


def test_zero_shots_needs_no_demos(tmp_path):
    task = load_task(write_task(tmp_path, TASK))
    entry = {"query_parts": ["<FEWSHOT>", "Text: ", "<text>", '\nAnswer: "'], "labels_same_language": {}}
    pack = PromptPack({"mini": {"en": entry}}, "pack.json")
    assert pack.render(task, "en", "native", {"text": "hi"}) == 'Text: hi\nAnswer: "'


@pytest.mark.slow
def test_eval_where_no_language_can_be_scored_exits_non_zero(tiny_llama, data_dir, tmp_path, capsys):
    """Only Thai, whose prefix-rule label words collide on SmolLM's vocabulary: no 'avg 0.0' and exit 0."""
    argv = ["eval", "--model", str(tiny_llama), "--task", "emotion", "--langs", "th", "--mode", "native"]
    argv += ["--scoring", "prefix", "--limit", "2", "--data-dir", str(data_dir), "--prompts", str(PAPER_PACK)]
    assert main([*argv, "--out", str(tmp_path / "u")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("polyalign: error: no language could be scored"), err
    assert json.loads((tmp_path / "u" / "results.json").read_text())["languages"] == {}


def test_one_precision_vocabulary_for_every_command():
    """--dtype fp32 and precision=float32 both work: every command reads one vocabulary."""
    import argparse

    from polyalign.alignment.train_config import load_config
    from polyalign.cli.args import add_model_args

    parser = argparse.ArgumentParser()
    add_model_args(parser)
    assert parser.parse_args(["--dtype", "fp32"]).dtype == "float32"
    assert parser.parse_args(["--dtype", "bf16"]).dtype == "bfloat16"
    assert parser.parse_args(["--dtype", "bfloat16"]).dtype == "bfloat16"
    assert load_config(overrides=["precision=float32"]).precision == "fp32"
    assert load_config(overrides=["precision=bfloat16"]).precision == "bf16"
    with pytest.raises(PolyalignError, match="precision must be"):
        load_config(overrides=["precision=fp8"])
