"""Bad files on the command line: adapters, model weights, languages files and --out links give one
line, not a traceback, and the adapter check comes before any weights load (the model folders here
have none)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import CONFIG_ONLY_HIDDEN, config_only_model, one_line_error
from polyalign.core.errors import PolyalignError


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


def test_out_as_a_dangling_symlink_is_one_line(tmp_path, capsys, data_dir):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone")
    argv = ["eval", "--model", "/nonexistent/model", "--task", "emotion", "--langs", "en", "--limit", "2"]
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
        "train": ["train", "--model", "/nonexistent/model", "--data", "pairs.jsonl"],
        "merge": ["merge", "--model", "/nonexistent/model", "--adapter", "adapter"],
    }[command]
    one_line_error(capsys, [*argv, "--out", str(link), "--overwrite"], "does not replace through a link")
    assert (target / "keep.txt").read_text() == "kept" and link.is_symlink()


def test_merge_overwrite_replaces_only_a_merged_model(tmp_path, capsys):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "keep.txt").write_text("kept")
    argv = ["merge", "--model", "/nonexistent/model", "--adapter", "adapter", "--out", str(folder), "--overwrite"]
    one_line_error(capsys, argv, "holds files that are not a merged model")
    assert (folder / "keep.txt").read_text() == "kept"
