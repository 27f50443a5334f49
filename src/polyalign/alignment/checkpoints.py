"""Training checkpoints a resume can trust, and the provenance each one carries.

Why: a process killed while Trainer writes `checkpoint-N` leaves a half folder; picking the newest
folder by name then fails inside Trainer on every later `--resume`. Trainer writes
trainer_state.json after the weights, optimizer and RNG state, so a checkpoint is complete when that
file parses and the adapter weights open; an incomplete one is removed and the previous one used.
A checkpoint is also an adapter folder: it gets the benchmark provenance the final adapter gets,
so evaluating it on its own training items is refused too (polyalign.core.item_range).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from polyalign.core.item_range import write_provenance

NAME = re.compile(r"^checkpoint-(\d+)$")


def complete(folder: Path) -> bool:
    """Whether Trainer finished writing `folder` (its state last, the adapter weights readable)."""
    from safetensors import SafetensorError, safe_open

    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        if not isinstance(state, dict) or "global_step" not in state:
            return False
        weights = folder / "adapter_model.safetensors"
        if weights.exists():
            with safe_open(str(weights), framework="pt"):
                pass
        return (folder / "adapter_config.json").is_file() or weights.exists()
    except (OSError, UnicodeDecodeError, ValueError, SafetensorError):
        return False


def last_complete_checkpoint(folder: str | Path, remove_incomplete: bool = False) -> str | None:
    """The newest complete checkpoint in `folder` (None: none). `remove_incomplete` (main process
    only) deletes newer, half-written ones so Trainer does not later mistake them for its own."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = sorted(
        ((int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := NAME.match(p.name))), reverse=True
    )
    for _, path in found:
        if complete(path):
            return str(path)
        if remove_incomplete:
            print(f"polyalign: {path} was not completely written (interrupted); removed", file=sys.stderr)
            shutil.rmtree(path)
    return None


def provenance_callback(records: list[dict]):
    """A Trainer callback writing `records` (benchmark provenance) into every saved checkpoint."""
    from transformers import TrainerCallback

    class Provenance(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and checkpoint.is_dir():
                write_provenance(checkpoint, records)

    return Provenance()
