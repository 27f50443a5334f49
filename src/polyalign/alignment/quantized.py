"""QLoRA: a bitsandbytes-quantized frozen base (nf4, or int8) with LoRA on top, as LLaMA-Factory's
`quantization_bit: 4`. The adapter itself is ordinary: it applies to the unquantized base too, and
its folder records that it was trained on a quantized one (QUANTIZED_BASE_FILE).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError

QUANTIZATIONS = ("nf4", "int8")
QUANTIZED_BASE_FILE = "polyalign-quantized-base.json"


def check_quantization(quantization: str | None) -> None:
    """Known, and bitsandbytes importable: checked with the recipe, before any model loads."""
    if quantization is None:
        return
    if quantization not in QUANTIZATIONS:
        raise PolyalignError(f"quantization must be nf4, int8 or absent (got '{quantization}')")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise PolyalignError(f"quantization={quantization} needs bitsandbytes: pip install 'polyalign[qlora]'")


def quantization_kwargs(quantization: str | None, bf16: bool) -> dict[str, Any]:
    """from_pretrained's arguments for a quantized base ({} for none); compute runs in bf16 or fp32."""
    if quantization is None:
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if bf16 else torch.float32
    if quantization == "nf4":
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=True,
        )
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    return {"quantization_config": config, "device_map": {"": device}}


def prepare_quantized(net, quantization: str | None, gradient_checkpointing: bool):
    """PEFT's k-bit preparation (norms in fp32, input gradients) for a quantized base; else `net`."""
    if quantization is None:
        return net
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(net, use_gradient_checkpointing=gradient_checkpointing)


def record_quantized_base(adapter: Path, quantization: str | None) -> None:
    """Write which quantization the adapter's base had (nothing for an unquantized base)."""
    if quantization is None:
        return
    import bitsandbytes

    info = {"quantization": quantization, "bitsandbytes": bitsandbytes.__version__}
    (adapter / QUANTIZED_BASE_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def quantized_base(adapter: str | Path) -> str | None:
    """The quantization an adapter was trained on (None: an unquantized base, or not recorded)."""
    path = Path(adapter) / QUANTIZED_BASE_FILE
    return json.loads(path.read_text(encoding="utf-8"))["quantization"] if path.is_file() else None
