"""Whether bf16 is measured fast on this CPU: a short matmul calibration, once per machine, cached.

Why: "native bf16" says only that oneDNN has bf16 kernels here; how much faster they are than fp32
differs a lot between CPUs (6x on an AMX Xeon, less with AVX512-BF16 alone, and a CPU may report
the capability and still gain little). `precision: auto` picks bf16 on a CPU only when the
calibration measured at least MIN_SPEEDUP on a Linear of a small model's width. The result, with
the figures behind it, is cached in the polyalign cache (precision-calibration.json) per torch
version, CPU capability and thread count, so every run on a machine makes the same choice.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

MIN_SPEEDUP = 1.3  # bf16 over fp32 on the calibration matmul; below it, fp32 is not worth leaving
ROWS, WIDTH, OUT = 512, 640, 2048  # gemma-3-270m's MLP shape


def cache_file() -> Path:
    root = Path(os.environ.get("POLYALIGN_CACHE", Path.home() / ".cache" / "polyalign"))
    return root / "precision-calibration.json"


def machine_key() -> str:
    return f"torch {torch.__version__}; {torch.backends.cpu.get_cpu_capability()}; {torch.get_num_threads()} threads"


def time_matmul(dtype: torch.dtype, repeats: int = 5) -> float:
    """Best seconds of one [ROWS, WIDTH] x [WIDTH, OUT] product in `dtype` (after a warm-up)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, WIDTH, generator=generator).to(dtype)
    w = torch.randn(OUT, WIDTH, generator=generator).to(dtype)
    best = float("inf")
    with torch.inference_mode():
        torch.nn.functional.linear(x, w)
        for _ in range(repeats):
            start = time.perf_counter()
            torch.nn.functional.linear(x, w)
            best = min(best, time.perf_counter() - start)
    return best


def calibration() -> dict:
    """This machine's cached calibration (measured now if there is none): the seconds and the speed-up."""
    path, key = cache_file(), machine_key()
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    if not isinstance(cached, dict):
        cached = {}
    if isinstance(cached.get(key), dict) and "bf16_speedup" in cached[key]:
        return cached[key]
    fp32, bf16 = time_matmul(torch.float32), time_matmul(torch.bfloat16)
    record = {"fp32_s": fp32, "bf16_s": bf16, "bf16_speedup": fp32 / bf16, "min": MIN_SPEEDUP}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps({**cached, key: record}, indent=2), encoding="utf-8")
        os.replace(partial, path)
    except OSError:
        pass  # a read-only cache: measured again next time
    return record


def bf16_measured_fast() -> bool:
    """bf16 matmuls ran at least MIN_SPEEDUP x fp32's speed here."""
    return calibration()["bf16_speedup"] >= MIN_SPEEDUP
