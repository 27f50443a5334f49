"""Scoring batches sized by memory: a token budget caps the planned batches, and an out-of-memory
error halves the batch and retries, said once and recorded in results.json, with the same results."""

from __future__ import annotations

import json
import random

import pytest
import torch

from helpers import cfg_for
from polyalign.engine.memory_plan import per_row_token_bytes
from polyalign.engine.model_shapes import model_shape
from polyalign.engine.scoring import Scorer, plan_batches
from polyalign.evaluation.evaluate import run_eval


@pytest.mark.parametrize("seed", range(5))
def test_a_token_budget_caps_every_batch_and_changes_nothing_without_one(seed):
    rng = random.Random(seed)
    lengths = sorted((rng.randrange(5, 200) for _ in range(60)), reverse=True)
    assert plan_batches(lengths, 16, 32, None) == plan_batches(lengths, 16, 32)
    starts = plan_batches(lengths, 16, 32, max_tokens=900, prefix=50)
    for start, stop in zip(starts, starts[1:] + [len(lengths)]):
        assert stop - start == 1 or (stop - start) * (lengths[start] + 50) <= 900


def test_a_token_costs_its_kv_cache_and_more():
    shape = model_shape("mistralai/Mistral-7B-v0.1")
    assert per_row_token_bytes(shape, "bf16", 500) > 2 * 32 * 8 * 128 * 2  # K and V of 32 layers


def read(out):
    return {
        p.name: [json.loads(x) for x in p.read_text().splitlines()] for p in sorted((out / "samples").glob("*.jsonl"))
    }


@pytest.mark.slow
def test_out_of_memory_halves_the_batch_with_the_same_results(tiny_gemma, data_dir, tmp_path, monkeypatch, capsys):
    from polyalign.engine.models import load_model

    model, tok = load_model(str(tiny_gemma), dtype="float32")
    cfg = cfg_for(tiny_gemma, data_dir, langs="en,ja", limit=8, batch_size=8)
    plain = run_eval(cfg, model, tok, tmp_path / "plain", progress=False)
    forward = Scorer.forward_suffixes

    def small_device(self, suffixes, cache, output_hidden_states=False):
        if len(suffixes) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return forward(self, suffixes, cache, output_hidden_states)

    monkeypatch.setattr(Scorer, "forward_suffixes", small_device)
    capsys.readouterr()
    backed = run_eval(cfg, model, tok, tmp_path / "backed", progress=False)
    said = [line for line in capsys.readouterr().err.splitlines() if "out of memory" in line]
    assert len(said) == 1 and "halving to 4" in said[0]
    assert backed is not None and plain is not None
    assert backed["runtime"]["oom_backoff"]["batch_size"] == 8
    assert backed["runtime"]["oom_backoff"]["reduced_to"] == 2
    assert "oom_backoff" not in plain["runtime"]
    for name, rows in read(tmp_path / "plain").items():
        other = read(tmp_path / "backed")[name]
        assert [r["pred"] for r in rows] == [r["pred"] for r in other]
        for a, b in zip(rows, other):
            assert all(abs(a["scores"][c] - b["scores"][c]) < 1e-4 for c in a["scores"])
    assert plain["average"] == backed["average"]
