"""QLoRA (a bitsandbytes nf4 base under the LoRA) trains on CPU, its adapter evaluates on the
unquantized base and records that its base was quantized; report_to=tensorboard writes event files
whose losses are the run's."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerCallback

from polyalign.alignment.alignment_data import PairRequest, build_pairs, write_pairs
from polyalign.alignment.quantized import quantized_base
from polyalign.alignment.train_config import load_config
from polyalign.alignment.training import train
from polyalign.core.errors import PolyalignError
from polyalign.core.prompts import PromptPack
from polyalign.engine.models import load_model

FAST = ["max_steps=6", "per_device_batch=2", "grad_accum=1", "val_size=0", "logging_steps=1", "save_steps=100"]
FAST += ["learning_rate=1e-2", "lr_scheduler=constant", "warmup_ratio=0", "cutoff_len=128", "precision=fp32"]


class BaseLayers(TrainerCallback):
    """Records the class of the first q_proj's base layer the Trainer trains."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.q_proj = type(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__


@pytest.fixture(scope="module")
def qlora_run(tiny_llama, data_dir, tmp_path_factory):
    pytest.importorskip("bitsandbytes")
    folder = tmp_path_factory.mktemp("qlora")
    write_pairs(
        build_pairs(PairRequest("snli", ["zh", "es"], "en", 8, 0, data_dir, PromptPack.load())), folder / "pairs.jsonl"
    )
    seen = BaseLayers()
    cfg = load_config(overrides=[*FAST, "quantization=nf4", "report_to=tensorboard"])
    train(str(tiny_llama), folder / "pairs.jsonl", folder / "run", cfg, callbacks=[seen])
    return folder / "run", seen


def losses(run) -> list[float]:
    return [row["loss"] for row in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in row]


@pytest.mark.slow
def test_qlora_trains_a_4bit_base_and_the_loss_falls(qlora_run):
    run, seen = qlora_run
    assert seen.q_proj == "Linear4bit"  # the frozen base really is bitsandbytes nf4
    values = losses(run)
    assert len(values) == 6 and sum(values[-2:]) < sum(values[:2]), values
    assert quantized_base(run / "adapter") == "nf4"


@pytest.mark.slow
def test_qlora_adapter_evaluates_on_the_unquantized_base(qlora_run, tiny_llama):
    run, _ = qlora_run
    base, tokenizer = load_model(str(tiny_llama), dtype="float32")
    tuned, _ = load_model(str(tiny_llama), adapter=str(run / "adapter"), dtype="float32")
    ids = tokenizer("The cat sat on the mat.", return_tensors="pt")
    with torch.no_grad():
        want, got = base(**ids).logits, tuned(**ids).logits
    assert torch.isfinite(got).all() and not torch.allclose(want, got)


@pytest.mark.slow
def test_tensorboard_event_files_hold_the_runs_losses(qlora_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = qlora_run
    events = sorted((run / "checkpoints" / "runs").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    logged = [e.value for e in acc.Scalars("train/loss")]
    assert logged == pytest.approx(losses(run), rel=1e-5)


def test_recipe_checks_quantization_and_report_to():
    with pytest.raises(PolyalignError, match="quantization must be nf4, int8"):
        load_config(overrides=["quantization=nf3"])
    with pytest.raises(PolyalignError, match="report_to must be one of"):
        load_config(overrides=["report_to=mlflow"])


@pytest.mark.slow
def test_int8_base_trains_too(tiny_llama, data_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    write_pairs(
        build_pairs(PairRequest("snli", ["zh"], "en", 4, 0, data_dir, PromptPack.load())), tmp_path / "pairs.jsonl"
    )
    seen = BaseLayers()
    cfg = load_config(overrides=[*FAST, "max_steps=2", "quantization=int8"])
    train(str(tiny_llama), tmp_path / "pairs.jsonl", tmp_path / "run", cfg, callbacks=[seen])
    assert seen.q_proj == "Linear8bitLt" and quantized_base(tmp_path / "run" / "adapter") == "int8"
    assert all(v == v for v in losses(tmp_path / "run"))  # finite (not NaN) losses
