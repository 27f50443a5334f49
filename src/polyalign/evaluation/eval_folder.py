"""An evaluation's output folder: which run it holds (run.json) and whether a new run may resume it.

A folder is resumed only by the same configuration computed with the same dtype and device type;
batch size and process count may change (float32 scores may move by about 1e-5, so only an item
that close to a tie could flip, and files are bit-identical only at equal batch size). The
configuration holds content digests of the adapter, the prompt pack and a task file, so a replaced
adapter or an edited pack under the same path is a different run. A folder is never taken over
unless it is empty or holds a polyalign run, and --overwrite removes only what an evaluation writes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from polyalign.core.errors import PolyalignError
from polyalign.core.files import atomic_write_json, file_sha256
from polyalign.core.item_range import PROVENANCE_FILE

LOCK = ".polyalign-eval.lock"  # held by the evaluation writing the folder (main process), never removed
OWN = ("run.json", "results.json", "samples", LOCK)  # everything an evaluation writes in its folder
# what a resume must keep besides the configuration: the weights' dtype and device type, and the
# float32 verification in effect (None: not verified), or finished samples would be relabelled
RESUMED_AS = ("dtype", "device", "cpu_kernels", "verify_threshold")
_HELD: dict[Path, object] = {}  # folder -> open lock file, for this process's lifetime
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", PROVENANCE_FILE)


def run_identity(model, batch_size: int, world_size: int) -> dict:
    """How a run computes: dtype and device type change scores, so a resume must keep them; batch
    size and world size may change (fp32 scores may differ by about 1e-5, see the module docstring)."""
    from polyalign.engine import cpu_kernels

    weights = next(model.parameters())
    return {
        "dtype": str(weights.dtype).removeprefix("torch."),
        "device": weights.device.type,
        "cpu_kernels": cpu_kernels.in_use(model),  # they change bf16 scores (polyalign.engine.cpu_kernels)
        "batch_size": batch_size,
        "world_size": world_size,
    }


def content_identity(identity: dict) -> dict:
    """`identity` plus sha256 digests of the files it names by path (adapter, prompt pack, task
    file): a path says where the inputs were, not what they held."""
    from polyalign.core.prompts import default_pack_path

    digests = {"prompts_sha256": file_sha256(Path(identity.get("prompts") or default_pack_path()))}
    adapter = identity.get("adapter")
    if adapter:
        parts = [
            f"{name}:{file_sha256(Path(adapter) / name)}" for name in ADAPTER_FILES if (Path(adapter) / name).is_file()
        ]
        digests["adapter_sha256"] = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    task = Path(str(identity.get("task", "")))
    if task.suffix in (".yaml", ".yml") and task.is_file():
        digests["task_sha256"] = file_sha256(task)
    return {**identity, **digests}


def check_run_dir(out: Path, identity: dict, overwrite: bool, runtime: dict | None = None) -> bool:
    """Whether `out` holds a different (or unreadable) run, or one computed with another dtype or
    device than `runtime`; refused unless `overwrite`. A non-empty folder that holds no run is
    refused even with `overwrite`: its files are not ours to delete. Reads only: the CLI calls it
    (without `runtime`) before loading the model."""
    identity = content_identity(identity)
    run_file = out / "run.json"
    if not run_file.exists():
        foreign = sorted(p.name for p in out.iterdir() if not _ours(p.name)) if out.is_dir() else []
        if foreign:
            raise PolyalignError(
                f"{out}: holds files that are not a polyalign run ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); choose an empty or new --out"
            )
        # the lock, and a run.json being written by another process of this run, are no wreck
        written = [p for p in out.iterdir() if p.name != LOCK and not _temporary(p.name)] if out.is_dir() else []
        written = [p for p in written if not _other_ranks_logs(p)]  # other processes may start first
        if written and not overwrite:  # run.json is written first: a wreck
            raise PolyalignError(f"{out}: holds evaluation files without run.json; use --overwrite or another --out")
        return bool(written)
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
        moved = [k for k in RESUMED_AS if runtime and k in held and k in runtime and held[k] != runtime[k]]
        if moved and not overwrite:
            was, now = (", ".join(f"{k} {r[k]}" for k in moved) for r in (held, runtime or {}))
            raise PolyalignError(
                f"{out}: was evaluated with {was}; resuming with {now} would mix results "
                f"(use the same --dtype/--device/--verify settings, another --out or --overwrite)"
            )
        return bool(moved)
    if not overwrite:
        held = config if isinstance(config, dict) else {}
        diff = sorted(k for k in set(held) | set(identity) if held.get(k) != identity.get(k))
        raise PolyalignError(
            f"{out}: holds a different run ({run_file}; differs in {', '.join(diff)}); use another --out or --overwrite"
        )
    return True


def check_verification(out: Path, threshold: float | str | None, overwrite: bool) -> bool:
    """Whether a finished run in `out` was verified differently from this one (`threshold` None: not
    verified); refused unless `overwrite`, then the caller clears it. Why: finished samples would be
    kept and relabelled. run.json records the threshold too (RESUMED_AS); results.json also covers
    folders written before it did, and lets the CLI check before the model loads."""
    try:
        held = json.loads((out / "results.json").read_text(encoding="utf-8")).get("verify")
    except (OSError, ValueError, AttributeError):
        return False  # nothing finished (or unreadable: the identity check speaks for it)
    was = held.get("threshold") if isinstance(held, dict) else None
    if was == threshold:
        return False
    if not overwrite:
        raise PolyalignError(
            f"{out}: finished {_verified(was)}; this run would be {_verified(threshold)} and keep the old samples "
            "(use the same --verify settings, another --out or --overwrite)"
        )
    return True


def _temporary(name: str) -> bool:
    """A file being written atomically (results.atomic_write_text) in place of one of ours."""
    return name.endswith(".tmp") and any(name.startswith(f".{own}.") for own in OWN)


def _ours(name: str) -> bool:
    return name in OWN or _temporary(name)


def _verified(threshold: float | str | None) -> str:
    return "without float32 verification" if threshold is None else f"verified at threshold {threshold}"


def clear_run_dir(out: Path) -> None:
    """Remove what an evaluation wrote in `out`, and nothing else (links are removed, not followed)."""
    for name in OWN[:-1]:  # not the lock: this process holds it
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _other_ranks_logs(path: Path) -> bool:
    """`samples/` holding only shard logs of processes other than the main one: under `accelerate
    launch` they can start scoring before the main process has written run.json."""
    if path.name != "samples" or not path.is_dir():
        return False
    files = [f for f in path.rglob("*") if f.is_file()]
    return bool(files) and all(
        f.relative_to(path).parts[0] == ".partial" and ".rank0." not in f.name and "rank" in f.name for f in files
    )


def claim_run_dir(out: Path, identity: dict, overwrite: bool, rank: int, runtime: dict) -> None:
    """Lock `out` for this run (main process), check it (see `check_run_dir`), clear it when
    replaced, and record this run in run.json."""
    if rank == 0:
        check_run_dir(out, identity, overwrite, runtime)  # nothing is created in a folder refused
        lock_run_dir(out)
    redo = check_run_dir(out, identity, overwrite, runtime)
    if rank == 0 and "verify_threshold" in runtime:  # a folder finished before run.json recorded it
        redo = check_verification(out, runtime["verify_threshold"], overwrite) or redo
    if redo and rank == 0:
        clear_run_dir(out)
    if rank == 0:
        atomic_write_json(out / "run.json", {"config": content_identity(identity), "runtime": runtime})


def lock_run_dir(out: Path) -> None:
    """Hold an exclusive lock on `out` until this process ends: two evaluations writing one folder
    would interleave their logs and replace each other's files."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: unlocked, as before
        return
    key = out.resolve()
    if key in _HELD:
        return
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / LOCK, "a+")  # noqa: SIM115  # kept open: the lock lives as long as the file
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise PolyalignError(
            f"{out}: another evaluation is writing this folder (lock {out / LOCK}); wait for it to end "
            "or use another --out"
        ) from None
    _HELD[key] = handle
