"""A model folder's safetensors tensors, read one at a time (or a few rows of one) in float32.

Why: verifying a bf16 run in float32 needs the checkpoint's own values where it holds more
precision than the resident weights (an fp32 checkpoint, the packaged models' fp32 conversion),
but not a second model. The files are memory-mapped only as long as one read's tensor lives:
a float32 tensor (or a range of its rows) is returned as a view of the mapping itself, which the
page cache serves with no copy; other dtypes, and chosen rows (the embedding rows of a batch's
tokens), are copied into a fresh float32 tensor and the mapping goes at once. Either way no more
than that tensor is ever resident.

Why a view: a verified run's float32 forwards read the whole checkpoint once each (1.07 GB for
gemma-3-270m, 671 MB of it the output head). Copying it into fresh memory took 0.9 s of the 6.0 s
that 3 forwards re-scoring 29 items took on a 2-core AMX machine (cProfile; bench/verify_reads.py
times copied against mapped).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from polyalign.core.errors import PolyalignError

# safetensors dtype -> (numpy dtype of the stored bytes, torch dtype they are read as)
STORED: dict[str, tuple[type, torch.dtype]] = {
    "F64": (np.float64, torch.float64),
    "F32": (np.float32, torch.float32),
    "F16": (np.float16, torch.float16),
    "BF16": (np.int16, torch.bfloat16),  # numpy has no bfloat16: the bits, reinterpreted by torch
}
ALIGN = 4  # bytes: a mapped float32 tensor is used in place only at its natural alignment


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes are: file, stored dtype, shape and absolute byte offset."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int


def read_header(file: Path) -> dict[str, TensorEntry]:
    """Tensor name -> entry, from a safetensors file's JSON header alone."""
    with open(file, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        entries[name] = TensorEntry(file, info["dtype"], tuple(info["shape"]), 8 + length + info["data_offsets"][0])
    return entries


class CheckpointTensors:
    """Every tensor of a model folder's *.safetensors files (sharded or not), by name."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.entries: dict[str, TensorEntry] = {}
        for file in sorted(self.folder.glob("*.safetensors")):
            self.entries.update(read_header(file))
        if not self.entries:
            raise PolyalignError(f"{folder}: no safetensors weights to verify against")

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def dtype(self, name: str) -> torch.dtype | None:
        """The stored dtype of `name` (None: not in the checkpoint, or not a float format read here)."""
        entry = self.entries.get(name)
        return STORED[entry.dtype][1] if entry is not None and entry.dtype in STORED else None

    def read(self, name: str, rows: slice | np.ndarray | None = None) -> torch.Tensor:
        """Tensor `name` (or its `rows` along the first dimension) in float32: a read-only view of
        the mapped file where it is stored in float32 and aligned (do not write to it), else a copy."""
        entry = self.entries[name]
        stored, as_torch = STORED[entry.dtype]
        if as_torch == torch.float32 and entry.offset % ALIGN == 0 and not isinstance(rows, np.ndarray):
            # copy-on-write: writable for torch (no warning), yet never written, so never copied
            mapped = np.memmap(entry.file, dtype=stored, mode="c", offset=entry.offset, shape=entry.shape)
            return torch.from_numpy(mapped if rows is None else mapped[rows])
        mapped = np.memmap(entry.file, dtype=stored, mode="r", offset=entry.offset, shape=entry.shape)
        try:
            values = np.array(mapped if rows is None else mapped[rows])  # the copy; the mapping then goes
        finally:
            del mapped
        tensor = torch.from_numpy(values)
        if as_torch == torch.bfloat16:
            tensor = tensor.view(torch.bfloat16)
        return tensor.float()
