"""An evaluation's output folder: which run it holds (run.json) and whether a new run may resume it.

A folder is resumed only by the same configuration computed with the same dtype and device type;
batch size and process count may change (float32 results are batch-invariant, tested).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from polyalign.errors import PolyalignError
from polyalign.results import atomic_write_json


def run_identity(model, batch_size: int, world_size: int) -> dict:
    """How a run computes: dtype and device type change scores, so a resume must keep them; batch
    size and world size may change (fp32 results are batch-invariant, tested)."""
    weights = next(model.parameters())
    return {
        "dtype": str(weights.dtype).removeprefix("torch."),
        "device": weights.device.type,
        "batch_size": batch_size,
        "world_size": world_size,
    }


def check_run_dir(out: Path, identity: dict, overwrite: bool, runtime: dict | None = None) -> bool:
    """Whether `out` holds a different (or unreadable) run, or one computed with another dtype or
    device than `runtime`; refused unless `overwrite`. Reads only: the CLI calls it (without
    `runtime`) before loading the model."""
    run_file = out / "run.json"
    if not run_file.exists():
        return False
    try:
        previous = json.loads(run_file.read_text(encoding="utf-8"))
        config = previous["config"] if isinstance(previous, dict) else None
    except (OSError, ValueError, KeyError) as exc:
        if overwrite:
            return True
        reason = f"no {exc} entry" if isinstance(exc, KeyError) else str(exc)
        raise PolyalignError(
            f"{run_file}: unreadable ({reason}); fix or delete it, or use another --out or --overwrite"
        ) from None
    if config == identity:
        held = previous.get("runtime") or {}
        moved = [k for k in ("dtype", "device") if runtime and k in held and held[k] != runtime[k]]
        if moved and not overwrite:
            was, now = (", ".join(f"{k} {r[k]}" for k in moved) for r in (held, runtime or {}))
            raise PolyalignError(
                f"{out}: was evaluated with {was}; resuming with {now} would mix results "
                f"(use the same --dtype/--device, another --out or --overwrite)"
            )
        return bool(moved)
    if not overwrite:
        raise PolyalignError(f"{out}: holds a different run ({run_file}); use another --out or --overwrite")
    return True


def claim_run_dir(out: Path, identity: dict, overwrite: bool, rank: int, runtime: dict) -> None:
    """Check `out` (see `check_run_dir`), clear it when replaced, and record this run in run.json."""
    if check_run_dir(out, identity, overwrite, runtime) and rank == 0:
        shutil.rmtree(out)
    if rank == 0:
        atomic_write_json(out / "run.json", {"config": identity, "runtime": runtime})
