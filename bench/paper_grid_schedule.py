"""The whole paper grid (every configs/paper/*.yaml, steps shared by configs counted once, as with
one --steps-dir) scheduled on 1 and on 8 GPUs: steps at once, critical path, wall time.

Why: `polyalign run --dry-run --gpus N` answers for one config; renting a node is decided for the
grid. Step times are polyalign.study.step_clock's priors (gemma-3-270m on a 2-core CPU, bf16):
relative, until the cost model prices each model's steps; the counts are exact.

    python bench/paper_grid_schedule.py [--data-dir D] [--cpus 64]
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.resources import files
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--cpus", type=float, default=64)
    args = parser.parse_args()
    from polyalign.study.experiment import Runner, load_experiment
    from polyalign.study.schedule import schedule, schedule_lines

    overrides = [f"data_dir={json.dumps(args.data_dir)}"] if args.data_dir else []
    folder = Path(str(files("polyalign") / "configs" / "paper"))
    if not folder.is_dir():
        folder = Path(__file__).resolve().parents[1] / "configs" / "paper"
    grid, resources, counted = {}, {}, 0
    for path in sorted(folder.glob("*.yaml")):
        exp = load_experiment(path, overrides)
        steps = Runner(exp, None, path.parent).plan()
        counted += len(steps)
        grid.update({s.key: s for s in steps})
        resources.update(exp.resources)
    steps = list(grid.values())
    kinds = {k: sum(s.kind == k for s in steps) for k in ("data", "train", "eval", "lens", "pca")}
    print(f"configs/paper: {counted} steps in the configs, {len(steps)} distinct: {kinds}")
    for gpus in (1, 8):
        print("\n".join(schedule_lines(schedule(steps, resources, args.cpus, gpus), args.cpus, gpus)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
