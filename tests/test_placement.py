"""A model larger than its device: spread over devices and disk (accelerate's big-model inference),
it scores every item as the unsplit model does."""

from __future__ import annotations

import json

import pytest

from helpers import PAPER_PACK
from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.engine.placement import max_memory_map, placement_of


def test_placement_options_are_checked_before_loading():
    assert placement_of(None, None, None) is None
    with pytest.raises(PolyalignError, match="need --device-map"):
        placement_of(None, "80MB", None)
    with pytest.raises(PolyalignError, match="device_map must be one of"):
        placement_of("everywhere", None, None)
    with pytest.raises(PolyalignError, match="is not a size"):
        placement_of("auto", "lots", None)
    assert max_memory_map("0=70GB,cpu=200GB") == {0: 70 * 10**9, "cpu": 200 * 10**9}


def samples(out):
    return {p.name: [json.loads(x) for x in p.read_text().splitlines()] for p in (out / "samples").glob("*.jsonl")}


@pytest.fixture(scope="module")
def whole_and_split(tmp_path_factory):
    """smollm2-135m whole, and under an 80MB cap with the rest on disk (both fp32)."""
    from polyalign.engine.models import load_model
    from polyalign.engine.placement import Placement

    whole, tok = load_model("smollm2-135m", dtype="float32")
    placement = Placement("auto", "80MB", str(tmp_path_factory.mktemp("offload")))
    split, _ = load_model("smollm2-135m", dtype="float32", placement=placement)
    assert "disk" in split.hf_device_map.values()  # part of the model really waits on disk
    return whole, split, tok


@pytest.mark.slow
def test_smollm2_offloaded_to_disk_scores_every_item_as_unsplit(whole_and_split, data_dir, tmp_path):
    from polyalign.evaluation.evaluate import EvalConfig, run_eval

    whole_model, split_model, tok = whole_and_split
    cfg = EvalConfig(
        model="smollm2-135m", task="emotion", langs="en", limit=4, data_dir=str(data_dir), prompts=str(PAPER_PACK)
    )
    run_eval(cfg, whole_model, tok, tmp_path / "whole", progress=False)
    run_eval(cfg, split_model, tok, tmp_path / "split", progress=False)
    whole, offloaded = samples(tmp_path / "whole"), samples(tmp_path / "split")
    assert whole.keys() == offloaded.keys() and whole
    for name, rows in whole.items():
        assert [(r["index"], r["pred"]) for r in rows] == [(r["index"], r["pred"]) for r in offloaded[name]]
        for a, b in zip(rows, offloaded[name]):
            assert a["scores"] == pytest.approx(b["scores"], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_the_logit_lens_of_an_offloaded_model_equals_the_unsplit_ones(whole_and_split, data_dir, tmp_path):
    from polyalign.analysis.analysis_spec import LensSpec
    from polyalign.analysis.lens import run_lens

    def lens(model, tok, out):
        run_lens(model, tok, LensSpec("emotion", ["en"], "native", 3, [10, "last"]), out, data_dir, batch_size=2)
        return [json.loads(line) for line in (out / "lens_items.jsonl").read_text().splitlines()]

    whole_model, split_model, tok = whole_and_split
    whole, split = lens(whole_model, tok, tmp_path / "whole"), lens(split_model, tok, tmp_path / "split")
    assert len(whole) == len(split) == 3
    for a, b in zip(whole, split):
        assert a.keys() == b.keys() and a["index"] == b["index"] and a["layers"] == b["layers"]
        for key, value in a.items():
            if key.startswith(("p_", "entropy")):
                assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-9), key


@pytest.mark.slow
def test_pca_states_of_an_offloaded_model_equal_the_unsplit_ones(whole_and_split, data_dir, tmp_path):
    import numpy as np

    from polyalign.analysis.analysis_spec import PcaSpec
    from polyalign.analysis.pca import run_pca

    def projections(model, tok, out):
        run_pca(model, tok, PcaSpec("emotion", ["en", "de"], [10, "last"], "mean", 3), out, data_dir, batch_size=3)
        return np.load(out / "pca_base.npz", allow_pickle=False)["proj"]

    whole_model, split_model, tok = whole_and_split
    whole, split = projections(whole_model, tok, tmp_path / "w"), projections(split_model, tok, tmp_path / "s")
    np.testing.assert_allclose(np.abs(split), np.abs(whole), rtol=1e-3, atol=1e-4)  # a component's sign is free


def test_eval_refuses_placement_options_without_a_device_map(data_dir, tmp_path, capsys):
    args = ["eval", "--model", "smollm2-135m", "--task", "emotion", "--langs", "en", "--limit", "2"]
    assert main([*args, "--data-dir", str(data_dir), "--out", str(tmp_path), "--max-memory", "80MB"]) == 2
    assert "need --device-map" in capsys.readouterr().err
