"""scripts/gpu_check.py, the GPU check at the paper's sizes, run on CPU with tiny shapes: the same code
path (random weights from the shipped config.json, scorer vs the paper's loop, both Trainers)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_runs_on_tiny_shapes_on_cpu():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tiny = "--tiny --device cpu --items 6 --paper-items 2 --prefix 24 --suffix 12 --batch 3 --seq 24"
    rows = module.main([*tiny.split(), "--train-batch", "2", "--steps", "1", "--models", "mistralai/Mistral-7B-v0.1"])
    (row,) = rows
    assert row["tiny"] and row["params"] > 32000 * 64  # the real vocabulary, tiny layers
    assert row["eval"]["items_per_s"] > 0 and row["eval"]["paper_loop_items_per_s"] > 0
    assert row["train"]["tokens_per_s"] > 0 and row["train_plain"]["tokens_per_s"] > 0
    assert row["eval"]["planned_peak"] > 0 and row["train"]["planned_peak"] > 0
