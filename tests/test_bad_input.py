"""Bad input, whatever carries it: training values, task files and shots, languages files, adapters and
model weights, files that are not UTF-8, options that would be ignored, item ranges and JSONL records,
models a dry run cannot resolve. Each ends in one line and a non-zero exit, before any model is loaded:
never a silently wrong result or a traceback. Bad output folders: test_bad_output.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from helpers import CONFIG_ONLY_HIDDEN, NO_MODEL, PAPER_PACK, config_only_model, one_line_error
from polyalign.alignment.train_config import SCHEDULERS, load_config
from polyalign.cli import main
from polyalign.core.config import apply_overrides, build, read_mapping
from polyalign.core.errors import PolyalignError
from polyalign.core.files import read_records
from polyalign.core.prompts import PromptPack
from polyalign.core.tasks import load_task
from polyalign.evaluation.inputs import check_inputs

# Training values, task files, shots
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


# Adapters and model weights (the model folders here have no weights: the check comes first)
def fake_adapter(folder: Path, hidden: int = CONFIG_ONLY_HIDDEN, layer: int = 0, base: str = "another-model") -> Path:
    """adapter_config.json and LoRA weights for q_proj of one layer, of the given width."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "base_model_name_or_path": base, "r": 2, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    stem = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
    weights = {f"{stem}.lora_A.weight": torch.zeros(2, hidden), f"{stem}.lora_B.weight": torch.zeros(hidden, 2)}
    save_file(weights, str(folder / "adapter_model.safetensors"))
    return folder


@pytest.fixture
def model_dir(tmp_path, smollm_tokenizer) -> Path:
    return config_only_model(tmp_path / "model", smollm_tokenizer)


def eval_args(model: Path, adapter: Path, data_dir, out: Path) -> list[str]:
    return ["eval", "--model", str(model), "--adapter", str(adapter), "--task", "emotion", "--langs", "en"] + [
        "--items",
        "0:2",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
    ]


def test_an_adapter_that_fits_passes_the_check(model_dir, tmp_path):
    """The check really compares shapes (it has LoRA weights and a config, so no early return): the
    adapter that fits passes and the same adapter one size wider does not."""
    from polyalign.engine.adapters import adapter_shapes, check_adapter

    fits, wider = fake_adapter(tmp_path / "a"), fake_adapter(tmp_path / "b", hidden=CONFIG_ONLY_HIDDEN + 16)
    assert adapter_shapes(fits) and (model_dir / "config.json").is_file()
    check_adapter(str(model_dir), fits)
    with pytest.raises(PolyalignError, match="LoRA adapter of another base model"):
        check_adapter(str(model_dir), wider)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"hidden": 48}, "LoRA adapter of another base model (another-model), not "),
        ({"layer": 7}, "model.layers.7.self_attn.q_proj does not exist"),
    ],
)
def test_an_adapter_of_another_base_model_is_refused_before_loading(
    model_dir, tmp_path, data_dir, capsys, kwargs, message
):
    adapter = fake_adapter(tmp_path / "a", **kwargs)
    out = tmp_path / "out"
    one_line_error(capsys, eval_args(model_dir, adapter, data_dir, out), message)
    assert not out.exists()
    merged = tmp_path / "merged"
    argv = ["merge", "--model", str(model_dir), "--adapter", str(adapter), "--out", str(merged)]
    one_line_error(capsys, argv, message)
    assert not merged.exists()


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda a: (a / "adapter_config.json").write_text("{not json"), "corrupt adapter config"),
        (lambda a: (a / "adapter_config.json").write_text("[1]"), "corrupt adapter config (no peft_type)"),
        (lambda a: (a / "adapter_model.safetensors").write_bytes(b"\x00" * 5), "corrupt adapter weights"),
        (lambda a: _truncate(a / "adapter_model.safetensors"), "corrupt adapter weights"),
        (lambda a: (a / "adapter_model.safetensors").unlink(), "LoRA adapter folder without weights"),
    ],
)
def test_a_corrupt_adapter_is_one_line(model_dir, tmp_path, data_dir, capsys, damage, message):
    adapter = fake_adapter(tmp_path / "a")
    damage(adapter)
    one_line_error(capsys, eval_args(model_dir, adapter, data_dir, tmp_path / "out"), message)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


def test_truncated_model_weights_are_one_line(tmp_path, smollm_tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM

    from polyalign.engine.models import load_model

    folder = config_only_model(tmp_path / "model", smollm_tokenizer)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(folder)
    _truncate(folder / "model.safetensors")
    with pytest.raises(PolyalignError, match="cannot load model: .*"):
        load_model(str(folder), device="cpu", dtype="float32")


# Languages files, text that is not UTF-8
@pytest.mark.parametrize(
    "entries,message",
    [
        ([{"code": 5, "name": "Five"}], "must be non-empty strings"),
        ([{"code": "yo", "name": ["Yoruba"]}], "must be non-empty strings"),
        ([{"code": "yo,en", "name": "Yoruba"}], "must be letters, digits"),
        ([{"code": "yo", "name": "Yoruba"}, {"code": "yo", "name": "Yoruba 2"}], "'yo' is listed twice"),
        ([{"code": "de", "name": "Danish"}], "'de' is built in (German)"),
        ({"code": "yo", "name": "Yoruba"}, "not a valid languages file"),
        (["yo"], "not a valid languages file"),
    ],
)
def test_bad_languages_files_are_one_line_and_change_nothing(tmp_path, capsys, data_dir, entries, message):
    from polyalign.core.languages import get_language

    path = tmp_path / "langs.json"
    path.write_text(json.dumps(entries))
    argv = ["prompt", "--task", "emotion", "--lang", "de", "--data-dir", str(data_dir)]
    one_line_error(capsys, [*argv, "--languages-file", str(path)], message)
    assert get_language("de").name == "German"


def test_a_languages_file_may_repeat_a_builtin_unchanged(tmp_path, monkeypatch):
    from polyalign.core import languages

    monkeypatch.setattr(languages, "_REGISTRY", dict(languages._REGISTRY))
    path = tmp_path / "langs.json"
    path.write_text(json.dumps([{"code": "en", "name": "English"}, {"code": "yo", "name": "Yoruba"}]))
    assert [lang.code for lang in languages.load_languages_file(path)] == ["en", "yo"]


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


# No option silently ignored: a task's shots with the paper's verbatim pack, a setting's tasks: []
VERBATIM_EMOTION = (
    "name: emotion\nclasses: [positive, negative]\nfields: [input]\nshots: {shots}\n"
    'test_file: "ap_emotion/emotion_{{lang}}500_test.json"\nanswer_field: answer\n'
    "answer_words:\n  positive: [positive]\n  negative: [negative]\n"
)


def verbatim_task(tmp_path, shots: int) -> str:
    path = tmp_path / f"emotion_{shots}.yaml"
    path.write_text(VERBATIM_EMOTION.format(shots=shots))
    return str(path)


@pytest.mark.parametrize("shots", [0, 1, 1000])
def test_the_papers_pack_refuses_a_shot_count_it_cannot_give(tmp_path, data_dir, shots):
    with pytest.raises(PolyalignError) as err:
        check_inputs(
            verbatim_task(tmp_path, shots), ["en"], "english", data_dir=data_dir, prompts=data_dir / "prompts.json"
        )
    assert f"verbatim, 2-shot; the task declares shots: {shots}" in str(err.value)


def test_the_papers_pack_gives_its_own_shot_count(tmp_path, data_dir):
    pack = PromptPack.load(data_dir / "prompts.json")
    task = load_task(verbatim_task(tmp_path, 2))
    assert pack.fewshot(task, "en", "english").count("Emotion: ") == 2


def test_eval_refuses_before_a_model_loads(tmp_path, data_dir, capsys):
    args = ["eval", "--model", "gemma-3-270m", "--task", verbatim_task(tmp_path, 0), "--langs", "en", "--limit", "2"]
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


# Item ranges in YAML, JSONL records, models a dry run cannot resolve
def test_an_item_range_is_text_in_yaml_and_overrides(tmp_path):
    """YAML 1.1 reads 10:50 as the base-60 number 650: `650 is not a valid str`."""
    path = tmp_path / "exp.yaml"
    path.write_text("items: 10:50\nother: 1:02:03\nsteps: 3\nrate: 1.5\n")
    assert read_mapping(path, "experiment") == {"items": "10:50", "other": "1:02:03", "steps": 3, "rate": 1.5}
    assert apply_overrides({}, ["items=250:500", "n=7"]) == {"items": "250:500", "n": 7}


@dataclass
class Spec:
    items: str | None = None


def test_an_item_range_override_reaches_a_config(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("items: 0:250\n")
    assert build(Spec, read_mapping(path, "spec"), "spec").items == "0:250"
    assert build(Spec, apply_overrides({}, ["items=10:50"]), "spec").items == "10:50"


def test_a_bad_jsonl_record_names_its_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "c", "completion": "d"}\n{"prompt": oops}\n')
    with pytest.raises(PolyalignError, match="malformed JSON at line 4 "):
        read_records(path)


@pytest.mark.parametrize(
    "model,message",
    [
        ("nonexistent-model", "model 'nonexistent-model': not a packaged alias (gemma-3-270m, smollm2-135m)"),
        ("./no/such/folder", "./no/such/folder: model folder not found"),
        ("owner name/x", "model 'owner name/x': not a packaged alias"),
    ],
)
def test_a_dry_run_refuses_a_model_that_cannot_exist(tmp_path, data_dir, capsys, model, message):
    path = tmp_path / "e.yaml"
    path.write_text(f"models: ['{model}']\ntasks: [emotion]\nlanguages: [en]\nlimit: 2\n")
    one_line_error(capsys, ["run", str(path), "--dry-run", "--data-dir", str(data_dir)], message)
    one_line_error(capsys, ["run", str(path), "--out", str(tmp_path / "run"), "--data-dir", str(data_dir)], message)
    assert not (tmp_path / "run").exists()


def test_a_dry_run_accepts_aliases_folders_and_hub_ids(tmp_path, data_dir, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    path = tmp_path / "e.yaml"
    path.write_text(f"models: [gemma-3-270m, '{folder}', Qwen/Qwen1.5-7B]\ntasks: [emotion]\nlanguages: [en]\n")
    assert main(["run", str(path), "--dry-run", "--data-dir", str(data_dir)]) == 0, capsys.readouterr().err
    (folder / "config.json").unlink()
    assert main(["run", str(path), "--dry-run", "--data-dir", str(data_dir)]) == 2
    assert "not a model folder (no config.json)" in capsys.readouterr().err
