"""Model loading: weights onto devices at a dtype, tokenizers, LoRA adapters applied.

Where a model's files are (hub id, local folder, packaged alias converted once into the cache) is
polyalign.engine.model_paths."""

from __future__ import annotations

import os

import torch

from polyalign.core.declarations import DTYPE_NAMES, dtype_name
from polyalign.core.errors import PolyalignError
from polyalign.core.model_names import ALIASES
from polyalign.engine import cpu_attention, cpu_kernels, exact_norms
from polyalign.engine.adapters import check_adapter, check_fits
from polyalign.engine.model_paths import resolve_model_path
from polyalign.engine.placement import Placement, from_pretrained_kwargs


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}


def pick_dtype(device: torch.device, dtype: str | None = None, model: str | None = None) -> torch.dtype:
    """--dtype, else $POLYALIGN_DTYPE, else auto: bf16 where the device computes it natively (a CUDA
    GPU with bf16, a CPU with AVX512-BF16 or AMX; such runs are verified in fp32, see polyalign.evaluation.verify),
    float32 elsewhere."""
    from polyalign.engine.precision import DTYPE_OF, resolve_precision

    dtype = dtype_name(dtype or os.environ.get("POLYALIGN_DTYPE") or "auto")
    if dtype == "auto":
        return DTYPES[DTYPE_OF[resolve_precision("auto", device.type, model)]]
    if dtype not in DTYPES:
        raise PolyalignError(
            f"dtype: unknown '{dtype}' (choose from auto, {', '.join(DTYPES)}; from --dtype or POLYALIGN_DTYPE)"
        )
    if dtype == "bfloat16":
        resolve_precision("bf16", device.type)  # one line if bf16 is slow on this CPU
    return DTYPES[dtype]


def load_tokenizer(model: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model_path(model)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise PolyalignError(f"{model}: cannot load tokenizer: {str(exc).splitlines()[0]}") from None


def load_model(
    model: str,
    adapter: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    placement: Placement | None = None,
):
    """(model, tokenizer) in eval mode, with a LoRA adapter applied (not merged) if given; with a
    `placement` (polyalign.engine.placement) spread over devices and disk instead of on `device`."""
    dev = pick_device(device)
    tokenizer = load_tokenizer(model, trust_remote_code)
    if adapter:
        check_adapter(model, adapter, trust_remote_code)  # before the weights load
    net = load_weights(model, pick_dtype(dev, dtype, model), trust_remote_code, placement)
    if adapter:
        net = apply_adapter(net, adapter, model)
    if placement is None:
        net.to(dev)  # type: ignore[arg-type]
    net.eval()
    exact_norms.install(net)  # the same bits, fewer passes
    cpu_kernels.install(net)  # bf16 on a CPU: fused norms and activation (polyalign.engine.cpu_kernels)
    cpu_attention.install(net.get_base_model() if adapter else net)  # the same bits, no per-head copies
    return net, tokenizer


def load_weights(model: str, dtype: torch.dtype, trust_remote_code: bool = False, placement: Placement | None = None):
    """The base model's weights; a missing, truncated or corrupt weights file is one line."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            resolve_model_path(model),
            dtype=dtype,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            **from_pretrained_kwargs(placement),
        )
    except (OSError, ValueError, SafetensorError) as exc:
        raise PolyalignError(f"{model}: cannot load model: {str(exc).splitlines()[0]}") from None


def apply_adapter(net, adapter: str, model: str = "the model"):
    """`net` with the LoRA adapter applied, once its matrices are known to fit `net`'s layers."""
    from peft import PeftModel
    from safetensors import SafetensorError

    check_fits(net, adapter, model)
    try:
        return PeftModel.from_pretrained(net, str(adapter))
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise PolyalignError(f"{adapter}: cannot apply the LoRA adapter: {str(exc).splitlines()[0]}") from None


def describe_model(model: str, adapter: str | None) -> dict:
    """What results files record about the model."""
    info = {"model": model, "adapter": adapter}
    if model in ALIASES:
        info["package"] = ALIASES[model].requirement
        info["gguf_sha256"] = ALIASES[model].sha256
    return info
