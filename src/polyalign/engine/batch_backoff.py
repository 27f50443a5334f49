"""Scoring batches sized by memory: a token budget the planner derives for the device, and a batch
halved and retried when the device still runs out of memory.

On a GPU the rows per batch are also capped by `token_budget` (the free memory after the weights,
over what a token costs in KV cache and live activations: polyalign.engine.memory_plan), so a long
review does not OOM where sixteen short ones fit. If a batch still does not fit, `Backoff` halves it
and retries (saying so once), and keeps the smaller cap for the rest of the run; the run's
results.json records it. A halved batch computes each row as the whole one would, up to the
floating-point order of its padded matrix products.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from polyalign.engine.precision import resident_dtype

Row = TypeVar("Row")
HEADROOM = 0.8  # of the device's free memory: the rest for the allocator and what is not counted


def token_budget(model, prefix: int) -> int | None:
    """Tokens (rows x (prefix + longest suffix)) one scoring batch may hold on a CUDA device; None elsewhere."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        return None
    from polyalign.engine.memory_plan import per_row_token_bytes
    from polyalign.engine.model_shapes import shape_from_config

    config = model.config.get_text_config().to_dict()
    shape = shape_from_config(config, getattr(model.config, "_name_or_path", "model"))
    free, _ = torch.cuda.mem_get_info(device)
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(resident_dtype(model), "fp32")
    return max(1, int(free * HEADROOM / per_row_token_bytes(shape, precision, prefix)))


class Backoff:
    """Runs a batch, halving it on out-of-memory errors; `record` is what results.json keeps."""

    def __init__(self, max_rows: int, say: Callable[[str], None] | None = None):
        self.max_rows, self.first = max_rows, max_rows
        self.errors = 0
        self.say = say or (lambda line: print(line, file=sys.stderr))

    @property
    def record(self) -> dict | None:
        if not self.errors:
            return None
        return {"batch_size": self.first, "reduced_to": self.max_rows, "out_of_memory_errors": self.errors}

    def run(self, rows: Sequence[Row], compute: Callable[[Sequence[Row]], list]) -> list:
        """compute(rows) in pieces of at most max_rows, each halved on out-of-memory until one row."""
        out: list = []
        for start in range(0, len(rows), self.max_rows):
            out += self._run_piece(rows[start : start + self.max_rows], compute)
        return out

    def _run_piece(self, rows: Sequence[Row], compute: Callable[[Sequence[Row]], list]) -> list:
        try:
            return compute(rows)
        except torch.cuda.OutOfMemoryError:
            if len(rows) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = (len(rows) + 1) // 2
            if not self.errors:
                self.say(f"[polyalign] out of memory on a batch of {len(rows)} rows; halving to {half} and retrying")
            self.errors += 1
            self.max_rows = min(self.max_rows, half)
            return self._run_piece(rows[:half], compute) + self._run_piece(rows[half:], compute)
