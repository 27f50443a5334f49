"""The whole paper grid (every configs/paper/*.yaml, steps shared by configs counted once, as with
one --steps-dir) scheduled on 1 and on 8 GPUs: steps at once, critical path, wall time.

Why: `polyalign run --dry-run --gpus N` answers for one config; renting a node is decided for the
grid. Model steps are timed by their FLOPs on the devices named (polyalign.study.step_cost, at the
rate --devices gives: 100 TFLOP/s per GPU unless it says otherwise), other steps by
polyalign.study.step_clock's priors; the counts are exact, the times estimates.

    python bench/paper_grid_schedule.py [--data-dir D] [--cpus 64] [--devices 80GB]
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
    parser.add_argument("--devices", default="80GB", help="one GPU as polyalign run --devices reads it")
    args = parser.parse_args()
    from polyalign.engine.devices import devices_for
    from polyalign.study.experiment import Runner, load_experiment
    from polyalign.study.schedule import schedule, schedule_lines
    from polyalign.study.step_clock import StepClock
    from polyalign.study.step_cost import model_names, priced_seconds, step_costs

    overrides = [f"data_dir={json.dumps(args.data_dir)}"] if args.data_dir else []
    folder = Path(str(files("polyalign") / "configs" / "paper"))
    if not folder.is_dir():
        folder = Path(__file__).resolve().parents[1] / "configs" / "paper"
    grid, resources, counted, seconds = {}, {}, 0, {}
    named = devices_for(args.devices)
    for path in sorted(folder.glob("*.yaml")):
        exp = load_experiment(path, overrides)
        runner = Runner(exp, None, path.parent)
        steps = runner.plan()
        counted += len(steps)
        grid.update({s.key: s for s in steps})
        resources.update(exp.resources)
        timed = priced_seconds(
            step_costs(steps, model_names(exp, runner.model_id), named, exp), StepClock(steps).seconds
        )
        seconds.update({s.key: timed(s) for s in steps})
    steps = list(grid.values())
    kinds = {k: sum(s.kind == k for s in steps) for k in ("data", "train", "eval", "lens", "pca")}
    print(f"configs/paper: {counted} steps in the configs, {len(steps)} distinct: {kinds}")
    for gpus in (1, 8):
        sched = schedule(steps, resources, args.cpus, gpus, lambda step: seconds[step.key])
        print("\n".join(schedule_lines(sched, args.cpus, gpus, f"model steps by FLOPs on {args.devices} each")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
