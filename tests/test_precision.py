"""precision: auto follows the hardware (bf16 only where it is native), and nothing packaged forces bf16."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from polyalign.alignment import training
from polyalign.alignment.train_config import TrainConfig
from polyalign.cli.demo import DEMO_RECIPE
from polyalign.engine import models, precision
from polyalign.study.experiment_files import packaged_root

EXPERIMENTS = packaged_root()


@pytest.fixture(params=[True, False], ids=["native-bf16-cpu", "avx2-only-cpu"])
def cpu_bf16(request, monkeypatch) -> bool:
    """The CPU's bf16 capability, mocked both ways (and no CUDA device)."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: request.param)
    monkeypatch.setattr(precision, "bf16_measured_fast", lambda model=None: request.param)  # the calibration agrees
    monkeypatch.setattr(precision, "why_auto", lambda device_type, model=None: "mocked")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return request.param


def test_auto_follows_the_measured_speed_cached_per_machine(monkeypatch, tmp_path):
    """Native bf16 that the calibration measures slow stays fp32; the measurement is made once."""
    from polyalign.engine import precision_calibration as calibration

    monkeypatch.setenv("POLYALIGN_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    timings = {torch.float32: 1.0, torch.bfloat16: 0.9}  # bf16 only 1.1x: not worth it
    calls = []
    monkeypatch.setattr(calibration, "time_matmul", lambda dtype: calls.append(dtype) or timings[dtype])
    assert precision.resolve_precision("auto", "cpu") == "fp32" and len(calls) == 2
    timings[torch.bfloat16] = 0.25
    assert precision.resolve_precision("auto", "cpu") == "fp32" and len(calls) == 2  # cached: not measured again
    cached = json.loads(calibration.cache_file().read_text())[calibration.machine_key()]
    assert cached["bf16_speedup"] == pytest.approx(1 / 0.9)
    calibration.cache_file().unlink()
    assert precision.resolve_precision("auto", "cpu") == "bf16" and len(calls) == 4  # 4x: bf16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_precision("auto", "cpu") == "fp32" and len(calls) == 4  # AVX2 only: no measuring


@pytest.mark.slow
def test_auto_measures_a_layer_of_the_model_family_and_says_why(monkeypatch, tmp_path, tiny_llama):
    """With a model, auto times one decoder layer of its own shape (cached per shape) and records why."""
    from polyalign.engine import precision_calibration as calibration

    monkeypatch.setenv("POLYALIGN_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    real = calibration.time_layer(calibration.layer_config(str(tiny_llama)), torch.bfloat16, repeats=1)
    assert 0 < real < 5  # the tiny model's one layer really runs
    timings = {torch.float32: 1.0, torch.bfloat16: 0.8}  # the layer gains 1.25x: below MIN_SPEEDUP
    calls = []
    monkeypatch.setattr(calibration, "time_layer", lambda config, dtype: calls.append(dtype) or timings[dtype])
    monkeypatch.setattr(calibration, "time_matmul", lambda dtype: {torch.float32: 1.0, torch.bfloat16: 0.2}[dtype])
    assert precision.resolve_precision("auto", "cpu", str(tiny_llama)) == "fp32" and len(calls) == 2
    assert precision.resolve_precision("auto", "cpu") == "bf16"  # the matmul alone would have said 5x
    why = precision.AUTO_CHOICES[str(tiny_llama)]["why"]
    assert "1.25x fp32 on one llama layer, hidden_size" in why and "bf16 from 1.3x" in why
    keys = list(json.loads(calibration.cache_file().read_text()))
    assert any("one llama layer" in key for key in keys)
    assert precision.resolve_precision("auto", "cpu", str(tiny_llama)) == "fp32" and len(calls) == 2  # cached


def test_auto_resolves_to_bf16_only_where_the_cpu_has_it(cpu_bf16, capsys):
    assert precision.resolve_precision("auto", "cpu") == ("bf16" if cpu_bf16 else "fp32")
    assert precision.resolve_precision("fp32", "cpu") == "fp32"
    assert capsys.readouterr().err == ""  # auto never warns


def test_training_precision_auto_follows_the_cpu(cpu_bf16):
    assert training._use_bf16(TrainConfig(precision="auto"), "m") is cpu_bf16
    assert training._use_bf16(TrainConfig(precision="fp32"), "m") is False


def test_eval_dtype_auto_follows_the_cpu(cpu_bf16, monkeypatch):
    monkeypatch.delenv("POLYALIGN_DTYPE", raising=False)
    want = torch.bfloat16 if cpu_bf16 else torch.float32
    assert models.pick_dtype(torch.device("cpu")) == want
    assert models.pick_dtype(torch.device("cpu"), "auto") == want
    assert models.pick_dtype(torch.device("cpu"), "float32") == torch.float32


def test_explicit_bf16_without_native_support_warns_in_one_line_and_runs(cpu_bf16, capsys):
    assert training._use_bf16(TrainConfig(precision="bf16"), "m") is True
    assert models.pick_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    err = capsys.readouterr().err.strip().splitlines()
    if cpu_bf16:
        assert err == []
    else:
        assert len(err) == 2 and all("100x or more slower than fp32" in line for line in err)


def test_cpu_description_names_the_capability(cpu_bf16):
    text = precision.cpu_description()
    assert torch.backends.cpu.get_cpu_capability() in text
    assert text.endswith("native bf16: yes" if cpu_bf16 else "native bf16: no")


def _unsupported(error: type[Exception]):
    def query():
        raise error("no oneDNN in this build")

    return query


@pytest.mark.parametrize(
    "query, native",
    [
        (lambda: True, True),
        (lambda: 0, False),
        (_unsupported(AttributeError), False),
        (_unsupported(RuntimeError), False),
    ],
    ids=["onednn-bf16", "onednn-no-bf16", "no-onednn-op", "onednn-error"],
)
def test_the_cpu_answer_is_onednns_and_no_onednn_reads_as_avx2_only(monkeypatch, query, native):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", query)
    assert precision.cpu_has_native_bf16() is native
    assert precision.cpu_description().endswith(f"native bf16: {'yes' if native else 'no'}")


def test_auto_measures_only_native_bf16_and_caches_the_figures_per_machine(monkeypatch, tmp_path):
    """AVX2 only: fp32 and nothing measured or written. Native and measured 4x faster: bf16, and the
    cache holds this machine's figures beside another machine's, which it keeps."""
    from polyalign.engine import precision_calibration as calibration

    monkeypatch.setenv("POLYALIGN_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(calibration, "time_matmul", lambda dtype: {torch.float32: 1.0, torch.bfloat16: 0.25}[dtype])
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert precision.resolve_precision("auto", "cpu") == "fp32"
    assert not calibration.cache_file().exists()
    other = {"torch 0.0; AVX512; 1 threads": {"fp32_s": 2.0, "bf16_s": 1.0, "bf16_speedup": 2.0, "min": 1.3}}
    calibration.cache_file().write_text(json.dumps(other))
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert precision.resolve_precision("auto", "cpu") == "bf16"
    what = f"Linear {calibration.ROWS}x{calibration.WIDTH} -> {calibration.OUT}"
    mine = {"what": what, "fp32_s": 1.0, "bf16_s": 0.25, "bf16_speedup": 4.0, "min": calibration.MIN_SPEEDUP}
    assert json.loads(calibration.cache_file().read_text()) == {**other, calibration.machine_key(): mine}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precision-calibration.json"]  # no partial file left


def _declared_precisions(node) -> list:
    """Every `precision` and `dtype` value anywhere in a loaded YAML document."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in ("precision", "dtype")]
        return found + [x for v in node.values() for x in _declared_precisions(v)]
    if isinstance(node, list):
        return [x for v in node for x in _declared_precisions(v)]
    return []


def test_nothing_packaged_forces_bf16():
    files = sorted(EXPERIMENTS.rglob("*.yaml"))
    assert len(files) >= 8
    declared = [v for f in files for v in _declared_precisions(yaml.safe_load(f.read_text(encoding="utf-8")))]
    assert not {"bf16", "bfloat16", "fp16", "float16"} & set(map(str, declared))
    assert DEMO_RECIPE["precision"] in ("auto", "fp32")
