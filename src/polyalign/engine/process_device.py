"""The devices one process computes on: one GPU in a plain process, its own GPU per launched rank.

Why: with several GPUs visible, Hugging Face's Trainer in a plain process wraps the model in
nn.DataParallel and multiplies the batch by the GPU count, silently, so a run's recorded effective
batch is wrong; under `accelerate launch` (or torchrun) a model loaded with device "cuda" lands on
cuda:0 in every rank. A plain process therefore uses exactly one GPU (N GPUs only under a launcher),
and each launched rank makes cuda:LOCAL_RANK its device before its model loads. A Ray task sees only
the GPUs Ray gave it (CUDA_VISIBLE_DEVICES), so within it cuda:0 is its own.
"""

from __future__ import annotations

import os


def launched_local_rank() -> int | None:
    """This process's LOCAL_RANK when a launcher started several processes, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "LOCAL_RANK" not in os.environ:
        return None
    return int(os.environ["LOCAL_RANK"])


def process_device(device: str | None) -> str | None:
    """The device to load this process's model on: under a launcher with CUDA, cuda:LOCAL_RANK (made
    the current device); otherwise `device` as given (None: polyalign.engine.models picks)."""
    import torch

    rank = launched_local_rank()
    if rank is None or device not in (None, "cuda") or not torch.cuda.is_available():
        return device
    torch.cuda.set_device(rank)
    return f"cuda:{rank}"


def one_device_per_process(args):
    """Trainer arguments that train on one device per process: no nn.DataParallel over every visible
    GPU in a plain process (under a launcher each rank has one already). Returns `args`."""
    if args.n_gpu > 1:
        args._n_gpu = 1  # the attribute Trainer itself resets for model parallelism (transformers 4 and 5)
    return args
