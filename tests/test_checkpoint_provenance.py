"""Checkpoints (polyalign.alignment.checkpoints): a half-written checkpoint does not block a resume;
checkpoints and merged models carry the benchmark provenance the leak guard reads."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import config_only_model
from polyalign.alignment.checkpoints import last_complete_checkpoint, provenance_callback
from polyalign.cli import main
from polyalign.core.item_range import PROVENANCE_FILE, read_provenance, write_provenance


def checkpoint(folder: Path, step: int, state: str | None = '{"global_step": 1}', weights: bytes | None = None) -> Path:
    """A checkpoint folder as Trainer leaves it; `state` None: killed before trainer_state.json."""
    import torch
    from safetensors.torch import save_file

    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    if weights is None:
        save_file({"a": torch.zeros(2, 2)}, str(path / "adapter_model.safetensors"))
    else:
        (path / "adapter_model.safetensors").write_bytes(weights)
    if state is not None:
        (path / "trainer_state.json").write_text(state)
    return path


@pytest.mark.parametrize(
    "damage",
    [
        {"state": None},  # killed before the state was written
        {"state": '{"global_st'},  # killed while it was written
        {"weights": b"\x10\x00"},  # a torn weights file
    ],
)
def test_the_newest_complete_checkpoint_is_resumed_and_a_half_one_removed(tmp_path, damage, capsys):
    good = checkpoint(tmp_path, 100)
    half = checkpoint(tmp_path, 200, **damage)
    assert last_complete_checkpoint(tmp_path) == str(good) and half.exists()  # looking removes nothing
    assert last_complete_checkpoint(tmp_path, remove_incomplete=True) == str(good)
    assert not half.exists() and "checkpoint-200 was not completely written" in capsys.readouterr().err


def test_no_complete_checkpoint_means_a_fresh_start(tmp_path):
    from polyalign.alignment.training import prepare_run

    out = tmp_path / "run"
    resolved = {"model": "m", "lr": 1}
    assert prepare_run(out, resolved, resume=False, overwrite=False) is None
    checkpoint(out / "checkpoints", 100, state=None)
    (out / "log.jsonl").write_text('{"step": 10}\n')
    assert prepare_run(out, resolved, resume=True, overwrite=False) is None  # was a traceback in Trainer
    assert (out / "log.jsonl").read_text() == "" and not (out / "checkpoints" / "checkpoint-100").exists()
    good = checkpoint(out / "checkpoints", 100)
    checkpoint(out / "checkpoints", 200, state=None)
    assert prepare_run(out, resolved, resume=True, overwrite=False) == str(good)


def test_every_saved_checkpoint_gets_the_provenance(tmp_path):
    records = [{"task": "emotion", "items": "0:250", "pairs": 10}]
    saved = checkpoint(tmp_path, 30)
    callback = provenance_callback(records)
    callback.on_save(
        SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=30, is_world_process_zero=True), None
    )
    assert read_provenance(saved) == [{"task": "emotion", "items": "0:250"}]


@pytest.mark.parametrize("command", ["eval", "lens"])
def test_a_merged_model_is_guarded_by_its_adapters_provenance(tmp_path, smollm_tokenizer, data_dir, capsys, command):
    merged = config_only_model(tmp_path / "merged", smollm_tokenizer)
    write_provenance(merged, [{"task": "emotion", "items": "0:50", "pairs": 50}])
    argv = [command, "--model", str(merged), "--task", "emotion", "--langs", "en", "--items", "10:12"]
    assert main([*argv, "--data-dir", str(data_dir), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"model {merged} was trained on emotion items 0:50" in err and "overlaps 10:12" in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_merge_keeps_the_adapters_provenance(tiny_llama, tmp_path):
    from helpers import random_lora
    from polyalign.alignment.merge import merge

    adapter = random_lora(tiny_llama, tmp_path / "lora")
    write_provenance(adapter, [{"task": "snli", "items": "250:500", "pairs": 20}])
    merged = merge(str(tiny_llama), adapter, tmp_path / "merged")
    assert read_provenance(merged) == [{"task": "snli", "items": "250:500"}]
    assert json.loads((merged / PROVENANCE_FILE).read_text())["benchmark_items"][0]["pairs"] == 20
