"""A small grid run by the local executor and by Ray on this machine, in one run: wall times and
whether both produced the same files.

Why: `--executor ray` exists to run independent steps at once on a node's GPUs or a cluster; on a
2-core CPU no speed-up is expected (two 1-thread tasks against one 2-thread process, plus Ray's
start-up and one fresh worker process per step), and this benchmark says what it costs there.
The grid: one data step, two trainings (seeds 1 and 2), an evaluation of the base model and of
each adapter, and a lens step, on the packaged smollm2-135m (gemma-3-270m with --model).

    python bench/executors.py [--model gemma-3-270m] [--data-dir D] [--repeats 1] [--local-threads 1] [--out FILE]

Every run is a `polyalign run` process: the local one with torch's default threads (one per core),
each Ray task with one thread per CPU it was given (1). With --repeats 2 (default) the order is
local, ray, ray, local, so a machine whose load drifts biases neither. Exits 0; non-zero only on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TRAIN = {"max_steps": 4, "per_device_batch": 2, "grad_accum": 1, "save_steps": 2, "logging_steps": 1, "val_size": 0}


def grid(model: str, data_dir: str | None) -> dict:
    setting = {"name": "zh_en", "task": "snli", "sources": ["zh"], "target": "en", "per_language": 8}
    spec = {
        "name": "bench_executors",
        "models": [model],
        "alignment": [{**setting, "seeds": [1, 2], "train": TRAIN}],
        "tasks": ["snli"],
        "languages": ["en", "zh"],
        "limit": 10,
        "analyses": {"lens": {"task": "snli", "langs": ["zh"], "limit": 4}},
    }
    return {**spec, "data_dir": data_dir} if data_dir else spec


def timed_run(config: Path, out: Path, *extra: str, threads: int | None = None) -> float:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "polyalign", "run", str(config), "--out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
    return time.perf_counter() - started


def outputs(steps: Path) -> dict[str, bytes]:
    found = [*steps.glob("eval-*/eval/samples/*.jsonl"), *steps.glob("train-*/train/adapter/*.safetensors")]
    return {str(p.relative_to(steps)): p.read_bytes() for p in sorted(found)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-dir")
    parser.add_argument("--repeats", type=int, default=2, choices=[1, 2], help="2: local, ray, ray, local")
    parser.add_argument("--local-threads", type=int, help="OMP_NUM_THREADS of the local runs (default: torch's)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    from polyalign.engine.precision import cpu_description

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "grid.yaml"
        config.write_text(yaml.safe_dump(grid(args.model, args.data_dir)))
        times: dict[str, list[float]] = {"local": [], "ray": []}
        for n, executor in enumerate(["local", "ray", "ray", "local"][: 2 * args.repeats]):  # alternated: drift cancels
            out = Path(tmp) / f"{executor}{n}"
            extra = ["--executor", "ray"] if executor == "ray" else []
            times[executor].append(timed_run(config, out, *extra, threads=args.local_threads if not extra else None))
        same = outputs(Path(tmp) / "local0" / "steps") == outputs(Path(tmp) / "ray1" / "steps")
    local, ray = (sum(times[k]) / len(times[k]) for k in ("local", "ray"))
    result = {
        "model": args.model,
        "cpu": cpu_description(),
        "cores": os.cpu_count(),
        "local_s": [round(t, 1) for t in times["local"]],
        "ray_s": [round(t, 1) for t in times["ray"]],
        "ray_over_local": round(ray / local, 2),
        "identical_files": same,
        "local_threads": args.local_threads or "default",
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
