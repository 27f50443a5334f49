"""Which floating-point precision a run uses: `auto` follows the hardware.

bf16 halves the cost of a matmul only where the hardware computes it natively: a CUDA device
that supports it, or a CPU with AVX512-BF16 or AMX where a short cached calibration measured it
faster than fp32 (polyalign.engine.precision_calibration). Elsewhere (AVX2-only x86, most laptops)
torch falls back to a reference GEMM that is 100x or more slower than fp32 (230x measured for one
[1560, 640] x [640, 2048] matmul, README "Precision"), so `auto` picks fp32
there. One resolver serves training, evaluation, the bench scripts and the demo, and the
resolved name is what their files record.
"""

from __future__ import annotations

import sys

import torch

DTYPE_OF = {"bf16": "bfloat16", "fp32": "float32"}  # resolved precision -> torch dtype name


def cpu_has_native_bf16() -> bool:
    """torch's own answer: oneDNN computes bf16 matmuls natively (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def native_bf16(device_type: str) -> bool:
    """bf16 is fast on this device: a CUDA GPU that supports it, or a CPU with native bf16 that the
    cached calibration measured faster than fp32 (polyalign.engine.precision_calibration)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return cpu_has_native_bf16() and bf16_measured_fast()
    return False


def bf16_measured_fast() -> bool:
    from polyalign.engine.precision_calibration import bf16_measured_fast as measured

    return measured()


def cpu_description() -> str:
    """The CPU's capability as torch sees it, for benchmark tables and run files."""
    native = "yes" if cpu_has_native_bf16() else "no"
    return f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {native}"


def machine_description() -> str:
    """The hardware a step ran on, recorded in its done.json: reports name the machine that
    produced the numbers, not the one that renders them."""
    gpu = f"; GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"CPU {cpu_description()}{gpu}"


def resolve_precision(precision: str, device_type: str) -> str:
    """`auto` -> bf16 where it is native on `device_type`, else fp32; an explicit bf16 on a CPU
    without native support is kept, after one line on stderr saying why it will be slow."""
    if precision == "auto":
        return "bf16" if native_bf16(device_type) else "fp32"
    if precision == "bf16" and device_type == "cpu" and not cpu_has_native_bf16():
        print(
            f"[polyalign] warning: bf16 on this CPU ({torch.backends.cpu.get_cpu_capability()}, no AVX512-BF16 "
            "or AMX) runs in torch's reference kernels, 100x or more slower than fp32; precision=auto picks fp32",
            file=sys.stderr,
        )
    return precision
