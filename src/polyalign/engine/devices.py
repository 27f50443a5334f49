"""The devices a run may use: their memory and their arithmetic rate, given or detected.

`--devices 8x80GB` (or `POLYALIGN_DEVICES`) names what a plan is priced against, so a user can ask
what a run would need on hardware they do not have; without it, this machine's own devices are
read (each CUDA GPU's memory, or the memory the OS has available for a CPU run). A rate can be
given as `80GB@400TFLOPS`; otherwise a GPU gets ASSUMED_GPU_FLOPS and a CPU is measured.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from polyalign.core.errors import PolyalignError

UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
# FLOP/s a GPU of unknown kind sustains on LoRA training and small-batch scoring: about a third of
# an A100's bf16 dense peak (312 TFLOP/s), a tenth of an H100's. Only a prior: give the rate
# (`80GB@400TFLOPS`), and the step clock replaces it by what a step measures.
ASSUMED_GPU_FLOPS = 100e12
DEVICES_ENV = "POLYALIGN_DEVICES"


@dataclass(frozen=True)
class Device:
    kind: str  # cuda or cpu
    memory: float  # bytes the step may use
    flops: float  # sustained FLOP/s

    def describe(self) -> str:
        return f"{self.kind} {self.memory / 1e9:.3g} GB"


def parse_size(text: str, where: str = "size") -> float:
    """'80GB', '70GiB', '512MB' -> bytes (decimal units as accelerate's max_memory reads them)."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]I?B|B)?\s*", text.upper())
    if not match:
        raise PolyalignError(f"{where}: '{text}' is not a size such as 80GB, 70GiB or 512MB")
    return float(match.group(1)) * UNITS[match.group(2) or ""]


def parse_devices(text: str) -> list[Device]:
    """'8x80GB', '2x48GB@150TFLOPS', 'cpu:64GB', '80GB' -> the devices a plan is priced against."""
    devices: list[Device] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(?:(\d+)\s*[xX]\s*)?(?:(cpu|cuda):)?([^@]+?)(?:@([\d.]+)\s*TFLOPS)?\s*", part, re.I)
        if not match:
            raise PolyalignError(f"devices: '{part}' is not like 8x80GB, cpu:64GB or 80GB@400TFLOPS")
        count, kind, size, tflops = match.groups()
        kind = (kind or "cuda").lower()
        flops = float(tflops) * 1e12 if tflops else (ASSUMED_GPU_FLOPS if kind == "cuda" else cpu_flops())
        devices += [Device(kind, parse_size(size, "devices"), flops)] * int(count or 1)
    return devices


def detect_devices() -> list[Device]:
    """This machine's CUDA GPUs (their total memory), else the CPU with the memory available now."""
    import torch

    if torch.cuda.is_available():
        return [
            Device("cuda", torch.cuda.get_device_properties(i).total_memory, ASSUMED_GPU_FLOPS)
            for i in range(torch.cuda.device_count())
        ]
    return [Device("cpu", available_host_memory(), cpu_flops())]


def available_host_memory() -> float:
    """MemAvailable (Linux), else the total physical memory."""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def devices_for(given: str | None = None) -> list[Device]:
    """The devices named (argument, else $POLYALIGN_DEVICES), else the ones detected."""
    text = given or os.environ.get(DEVICES_ENV)
    return parse_devices(text) if text else detect_devices()


@lru_cache(maxsize=1)
def cpu_flops() -> float:
    """This CPU's fp32 matmul rate, measured once (about a tenth of a second)."""
    import torch

    a, b = torch.randn(512, 512), torch.randn(512, 512)
    a @ b  # warm-up
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < 0.1:
        a @ b
        runs += 1
    return 2 * 512**3 * runs / (time.perf_counter() - start)
