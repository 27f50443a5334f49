"""Which floating-point precision a run uses: `auto` follows the hardware.

bf16 halves the cost of a matmul only where the hardware computes it natively: a CUDA device
that supports it, or a CPU with AVX512-BF16 or AMX where a short cached calibration measured it
faster than fp32 on a layer of the model (polyalign.engine.precision_calibration). Elsewhere
(AVX2-only x86, most laptops) torch falls back to a reference GEMM that is 100x or more slower than
fp32 (230x measured for one [1560, 640] x [640, 2048] matmul, docs/benchmarks.md, "bf16 on a CPU
without native bf16"), so `auto` picks fp32 there. One resolver serves training, evaluation, the
bench scripts and the demo, and the resolved name, with why (AUTO_CHOICES), is what their files record.
"""

from __future__ import annotations

import sys

import torch

DTYPE_OF = {"bf16": "bfloat16", "fp32": "float32"}  # resolved precision -> torch dtype name
# What `auto` resolved to in this process, per model ("" without one), and why: results.json says it.
AUTO_CHOICES: dict[str, dict[str, str]] = {}


def resident_dtype(model) -> torch.dtype:
    """The dtype the model's floating weights are held in (its first floating parameter's)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def cpu_has_native_bf16() -> bool:
    """torch's own answer: oneDNN computes bf16 matmuls natively (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def native_bf16(device_type: str, model: str | None = None) -> bool:
    """bf16 is fast on this device: a CUDA GPU that supports it, or a CPU with native bf16 that the
    cached calibration measured faster than fp32 on a layer of `model` (a matmul without one;
    polyalign.engine.precision_calibration)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return cpu_has_native_bf16() and bf16_measured_fast(model)
    return False


def bf16_measured_fast(model: str | None = None) -> bool:
    from polyalign.engine.precision_calibration import bf16_measured_fast as measured

    return measured(model)


def why_auto(device_type: str, model: str | None = None) -> str:
    """In one sentence, why `auto` resolves as it does here: what a run's files record beside the precision."""
    if device_type == "cuda":
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return f"CUDA device {'with' if supported else 'without'} bf16 support"
    if device_type != "cpu":
        return f"{device_type}: fp32 unless asked"
    if not cpu_has_native_bf16():
        return f"CPU {cpu_description()}: bf16 would run in reference kernels"
    from polyalign.engine.precision_calibration import MIN_SPEEDUP, calibration, layer_calibration

    record = layer_calibration(model) if model else calibration()
    return (
        f"CPU {cpu_description()}: bf16 measured {record['bf16_speedup']:.2f}x fp32 on "
        f"{record.get('what', 'a matmul')} (bf16 from {MIN_SPEEDUP:g}x)"
    )


def cpu_description() -> str:
    """The CPU's capability as torch sees it, for benchmark tables and run files."""
    native = "yes" if cpu_has_native_bf16() else "no"
    return f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {native}"


def machine_description() -> str:
    """The hardware a step ran on, recorded in its done.json: reports name the machine that
    produced the numbers, not the one that renders them."""
    gpu = f"; GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"CPU {cpu_description()}{gpu}"


def resolve_precision(precision: str, device_type: str, model: str | None = None) -> str:
    """`auto` -> bf16 where it is native on `device_type` (and measured fast for `model`'s layers), else
    fp32; an explicit bf16 on a CPU without native support is kept, after one line on stderr saying
    why it will be slow."""
    if precision == "auto":
        chosen = "bf16" if native_bf16(device_type, model) else "fp32"
        AUTO_CHOICES[model or ""] = {"precision": chosen, "why": why_auto(device_type, model)}
        return chosen
    if precision == "bf16" and device_type == "cpu" and not cpu_has_native_bf16():
        print(
            f"[polyalign] warning: bf16 on this CPU ({torch.backends.cpu.get_cpu_capability()}, no AVX512-BF16 "
            "or AMX) runs in torch's reference kernels, 100x or more slower than fp32; precision=auto picks fp32",
            file=sys.stderr,
        )
    return precision
