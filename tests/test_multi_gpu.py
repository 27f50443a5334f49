"""Multi-GPU traps, on a machine without GPUs: the device count is mocked.

A plain process must train on one GPU (no nn.DataParallel over every visible one), and record the
batch it really used; each rank of a launched evaluation must load its model on its own GPU.
"""

from __future__ import annotations

import pytest
import torch

from polyalign.alignment import training
from polyalign.alignment.train_config import load_config
from polyalign.cli.commands import main


@pytest.fixture
def four_gpus(monkeypatch):
    """torch says four CUDA devices are visible; setting the current one is recorded."""
    from transformers import Trainer, TrainingArguments  # noqa: F401  # imported before CUDA is mocked

    current: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: current.append(_index(device)))
    yield current
    from accelerate.state import PartialState

    PartialState._reset_state()  # the Trainer's arguments set up a (mocked) CUDA state


def test_in_process_training_uses_one_gpu_of_four(four_gpus, monkeypatch, tmp_path):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = load_config()
    args = training.one_device_per_process(training._training_args(cfg, tmp_path, bf16=False, has_val=False))
    assert args.n_gpu == 1  # Trainer wraps the model in nn.DataParallel when n_gpu > 1
    assert args.train_batch_size == cfg.per_device_batch  # not per device x 4
    assert str(args.device) == "cuda:0"


def _index(device) -> int:
    return device if isinstance(device, int) else (torch.device(device).index or 0)


class Loaded(Exception):
    """Raised by the mocked model loader once it saw the device it was given."""


def test_each_rank_of_a_launched_eval_loads_its_model_on_its_own_gpu(four_gpus, monkeypatch, tmp_path, data_dir):
    seen: list = []

    def load_model(model, adapter=None, device=None, dtype=None, trust_remote_code=False, placement=None):
        seen.append((device, list(four_gpus)))
        raise Loaded

    monkeypatch.setattr("polyalign.engine.models.load_model", load_model)
    argv = ["eval", "--model", "gemma-3-270m", "--task", "snli", "--langs", "en", "--limit", "2"]
    argv += ["--data-dir", str(data_dir)]
    for rank in (0, 3):
        monkeypatch.setenv("WORLD_SIZE", "4")
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        with pytest.raises(Loaded):
            main([*argv, "--out", str(tmp_path / f"rank{rank}")])
    # the rank's GPU is the model's device and the current one before the weights load (not cuda:0 for all)
    assert seen == [("cuda:0", [0]), ("cuda:3", [0, 3])]
