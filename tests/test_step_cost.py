"""Steps priced before anything loads: the dry run's memory, time and fit per step, and a step that
cannot fit its devices refused in one line before any weights load."""

from __future__ import annotations

import pytest

from helpers import write_experiment
from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.engine.devices import parse_devices, parse_size
from polyalign.engine.fit import train_fit
from polyalign.engine.memory_plan import TrainShape
from polyalign.engine.model_shapes import model_shape
from polyalign.study.experiment import run_experiment

TABLE2 = "configs/paper/table2_model_sizes.yaml"


def test_devices_read_counts_sizes_and_rates():
    devices = parse_devices("8x80GB")
    assert len(devices) == 8 and devices[0].memory == 80e9 and devices[0].kind == "cuda"
    assert parse_devices("2x48GB@150TFLOPS")[1].flops == 150e12
    assert parse_devices("cpu:512MiB")[0].memory == 512 * 2**20
    assert parse_size("70GiB") == 70 * 2**30
    with pytest.raises(PolyalignError, match="is not a size"):
        parse_devices("eight GPUs")


def test_dry_run_of_table2_prints_memory_time_and_fit_per_step(capsys, data_dir):
    assert main(["run", TABLE2, "--dry-run", "--devices", "8x80GB", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("  train ", "  eval "))]
    assert len(rows) == 12 and all("peak" in r and "FLOPs" in r and "fits" in r for r in rows)
    peaks = {r.split(":")[0]: float(r.split("peak ")[1].split()[0]) for r in rows if r.startswith("  eval")}
    assert (
        peaks["  eval Qwen/Qwen1.5-14B base emotion/english"]
        > 5 * peaks["  eval Qwen/Qwen1.5-1.8B base emotion/english"]
    )
    assert "total:" in out.splitlines()[-1] and "every step fits" in out


def test_dry_run_on_one_small_gpu_says_what_would_fit(capsys, data_dir):
    assert main(["run", TABLE2, "--dry-run", "--devices", "24GB", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    train14 = next(line for line in out.splitlines() if line.startswith("  train Qwen/Qwen1.5-14B"))
    assert "DOES NOT FIT" in train14 and "quantization=nf4" in train14
    assert "3 do not fit" in out  # 14B: its training and both evaluations (28 GB of bf16 weights)


def test_qlora_and_checkpointing_are_offered_for_a_14b_training_on_a_48gb_card():
    shape = model_shape("Qwen/Qwen1.5-14B")
    fit = train_fit(shape, TrainShape(batch=16, seq=512, precision="bf16"), parse_devices("48GB"))
    assert not fit.fits
    assert any(o.startswith("gradient_checkpointing") for o in fit.options), fit.options
    assert fit.refusal("train 14B").startswith("train 14B: needs about")


@pytest.mark.slow
def test_a_step_that_cannot_fit_is_refused_before_any_weights_load(tmp_path, data_dir, monkeypatch):
    import transformers

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
    path = write_experiment(tmp_path, data_dir, [])
    with pytest.raises(PolyalignError) as refused:
        run_experiment(path, tmp_path / "run", devices="cpu:1GB")
    line = str(refused.value)
    assert "\n" not in line and line.startswith("eval gemma-3-270m base emotion")
    assert "needs about 1.79 GiB (checkpoint read at load 1.00 GiB" in line and "device has 0.93 GiB" in line
    assert "would fit with: device_map=auto offload_folder=DIR" in line
    assert not (tmp_path / "run" / "steps").exists()


@pytest.mark.slow
def test_a_training_that_cannot_fit_is_refused_before_its_weights_load(tmp_path, monkeypatch):
    import transformers

    from polyalign.alignment.train_config import load_config
    from polyalign.alignment.training import train
    from polyalign.core.files import write_jsonl

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", pytest.fail)
    monkeypatch.setenv("POLYALIGN_DEVICES", "cpu:500MB")
    write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"question {i}", "completion": " answer"} for i in range(8)])
    with pytest.raises(PolyalignError) as refused:
        train("smollm2-135m", tmp_path / "pairs.jsonl", tmp_path / "run", load_config(overrides=["val_size=0"]))
    line = str(refused.value)
    assert line.startswith("training smollm2-135m: needs about") and "\n" not in line
    assert "device has 0.47 GiB" in line
