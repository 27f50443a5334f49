"""The memory planner: parameter counts match the real models, and its peak estimates are within
20% of the peak measured on the packaged models (CPU RSS of a fresh process, scripts/memory_probe.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from polyalign.engine.memory_plan import EvalShape, TrainShape, eval_estimate, train_estimate
from polyalign.engine.model_shapes import known_hub_ids, model_shape, read_config, shape_from_config

ROOT = Path(__file__).resolve().parents[1]
PAPER = ["Qwen/Qwen1.5-1.8B", "Qwen/Qwen1.5-4B", "Qwen/Qwen1.5-7B", "Qwen/Qwen1.5-14B", "mistralai/Mistral-7B-v0.1"]


def meta_params(config: dict) -> int:
    """Parameters of the real transformers model built on the meta device (no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("model", ["gemma-3-270m", "smollm2-135m", *PAPER])
def test_parameter_count_matches_the_model(model):
    config = read_config(model)
    assert shape_from_config(config, model).params() == meta_params(config)


def test_paper_models_are_shipped_with_their_sizes():
    assert set(PAPER) <= set(known_hub_ids())
    billions = {m: model_shape(m).params() / 1e9 for m in PAPER}
    assert 1.8 < billions["Qwen/Qwen1.5-1.8B"] < 1.9 and 14.1 < billions["Qwen/Qwen1.5-14B"] < 14.3
    assert 7.2 < billions["mistralai/Mistral-7B-v0.1"] < 7.3


def test_checkpointing_and_quantization_lower_the_training_estimate():
    shape = model_shape("Qwen/Qwen1.5-14B")
    plain = train_estimate(shape, TrainShape(batch=4, seq=1024))
    checkpointed = train_estimate(shape, TrainShape(batch=4, seq=1024, gradient_checkpointing=True))
    qlora = train_estimate(shape, TrainShape(batch=4, seq=1024, quantization="nf4"))
    assert checkpointed.parts["activations"] < plain.parts["activations"] / 5
    assert qlora.parts["weights"] < plain.parts["weights"] / 2.5  # embeddings and head stay bf16
    assert checkpointed.flops_per_unit > plain.flops_per_unit  # the recomputed forward
    assert eval_estimate(shape, EvalShape()).peak > 28e9  # bf16 weights alone


def probe(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "memory_probe.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["gemma-3-270m", "smollm2-135m"])
@pytest.mark.parametrize(
    "args", [("eval", "--batch", "8", "--precision", "bf16"), ("train", "--batch", "2", "--seq", "64")]
)
def test_peak_estimate_within_20_percent_of_measured(model, args):
    row = probe(args[0], model, *args[1:])
    assert abs(row["estimate"] / row["measured_rss"] - 1) < 0.20, row


def test_every_model_of_the_paper_configs_has_a_shipped_shape():
    """The dry run prices every model step of configs/paper (no model is left to the CPU priors)."""
    import yaml

    named = {
        m for path in (ROOT / "configs" / "paper").glob("*.yaml") for m in yaml.safe_load(path.read_text())["models"]
    }
    assert named and named <= set(known_hub_ids()), sorted(named - set(known_hub_ids()))
