"""`polyalign run`: the command line of experiments (polyalign.study.experiment)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from polyalign.study.experiment import run_experiment, validate_experiment
from polyalign.study.experiment_spec import Experiment, eval_modes, trainings


def plan_lines(exp: Experiment, name: str) -> list[str]:
    """The dry run's summary: each setting's trainings (one per seed and model), then the step counts."""
    n, lines, trains = len(exp.models), [], 0
    evals = n * sum(len(eval_modes(exp, t)) for t in exp.tasks)
    for s in exp.alignment:
        names = [stored for stored, _ in trainings(s, exp.trust_remote_code)]
        models = len(s.models or exp.models)
        role = f"control of {s.control_of} (shuffled pairing)" if s.control_of else f"{s.pairing} pairing"
        seeds = f"seeds {', '.join(map(str, s.seeds))}" if s.seeds is not None else "the recipe's seed"
        lines.append(f"  {s.name}: {role}; {models * len(names)} train ({seeds}): {', '.join(names)}")
        trains += models * len(names)
        evals += models * len(names) * sum(len(eval_modes(exp, t, s)) for t in s.tasks or exp.tasks)
    lines.append(
        f"{name}: valid; {len(exp.alignment)} data, {trains} train, {evals} eval, "
        f"{n * len(exp.analyses.lens)} lens, {n * len(exp.analyses.pca)} pca steps"
    )
    return lines


def spread_lines(exp: Experiment, path, gpus: float, cpus: float, devices: str | None = None) -> list[str]:
    """The dry run's schedule: how many steps can run at once on these resources, the critical path;
    with `devices`, each model step timed by its FLOPs at their rate (polyalign.study.step_cost)."""
    from polyalign.study.experiment import Runner
    from polyalign.study.schedule import PRIOR_TIMES, schedule, schedule_lines

    runner = Runner(exp, None, Path(path).resolve().parent)
    steps = runner.plan()  # in memory: reads declarations and hashes only
    if not devices:
        return schedule_lines(schedule(steps, exp.resources, cpus, gpus), cpus, gpus)
    from polyalign.engine.devices import devices_for
    from polyalign.study.step_clock import StepClock
    from polyalign.study.step_cost import model_names, priced_seconds, step_costs

    named = devices_for(devices)
    costs = step_costs(steps, model_names(exp, runner.model_id), named, exp)
    seconds = priced_seconds(costs, StepClock(steps, precision_of=lambda s: "bf16").seconds)
    times = f"model steps timed by their FLOPs on {devices}, other steps by {PRIOR_TIMES.split(', from ')[1]}"
    return schedule_lines(schedule(steps, exp.resources, cpus, gpus, seconds), cpus, gpus, times)


def cmd_run(args: argparse.Namespace) -> int:
    import json

    from polyalign.study.experiment_files import resolve_experiment

    path = resolve_experiment(args.experiment)  # a YAML file, or a packaged name such as paper/table3_tasks
    overrides = [*args.overrides, *([f"data_dir={json.dumps(args.data_dir)}"] if args.data_dir else [])]
    if args.dry_run:
        exp, notes = validate_experiment(path, overrides, data=True)
        for note in notes:
            print(f"note: {note}")
        print("\n".join(plan_lines(exp, args.experiment)))
        print("\n".join(spread_lines(exp, path, args.gpus, args.cpus or os.cpu_count() or 1, args.devices)))
        if args.devices:
            from polyalign.study.experiment import dry_run_costs

            print("\n".join(dry_run_costs(exp, path, args.devices)))
        return 0
    runner = run_experiment(
        path,
        args.out,
        overrides,
        devices=args.devices,
        steps_dir=args.steps_dir,
        executor=args.executor,
        address=args.address,
    )
    print(
        f"ran {len(runner.executed)} steps, skipped {len(runner.skipped)} done earlier; "
        f"results: {runner.run_dir / 'results.sqlite'}; next: polyalign report {runner.run_dir}"
    )
    return 0


class _IntermixedParser(argparse.ArgumentParser):
    """Accepts overrides after options (`run X.yaml --out DIR key=value`), which plain argparse
    rejects once the positionals were matched."""

    _nested = False

    def parse_known_args(self, args=None, namespace=None):
        if self._nested:
            return super().parse_known_args(args, namespace)
        self._nested = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._nested = False


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register `polyalign run` on the top-level subparsers."""
    p = subparsers.add_parser(
        "run", help="run an experiment YAML end to end (data, train, eval, lens, pca); steps already done are skipped"
    )
    if type(p) is argparse.ArgumentParser:
        p.__class__ = _IntermixedParser
    p.add_argument(
        "experiment",
        help="experiment YAML file, or a packaged config such as paper/table3_tasks (list: polyalign configs)",
    )
    p.add_argument("--out", help="run folder (default: runs/<name>)")
    p.add_argument("--data-dir", help="benchmark folder; overrides the experiment's data_dir")
    p.add_argument("--dry-run", action="store_true", help="validate the file and count its steps; run nothing")
    p.add_argument(
        "--devices",
        help="price and check every step against these devices, e.g. 8x80GB, 2x48GB@150TFLOPS or cpu:64GB "
        "(default: this machine's; with --dry-run: print each step's memory, time and fit)",
    )
    p.add_argument(
        "--steps-dir",
        help="folder of step results shared by run folders and configs (default: $POLYALIGN_STEPS, else RUN_DIR/steps);"
        " a step with the same content key runs once",
    )
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: steps one after another in this process; ray: each step a Ray task (pip install 'polyalign[ray]')",
    )
    p.add_argument("--gpus", type=float, default=1, help="--dry-run: plan the schedule for this many GPUs (default 1)")
    p.add_argument("--cpus", type=float, help="--dry-run: ... and this many CPUs (default: this machine's)")
    p.add_argument("--address", help="--executor ray: the cluster to join (auto, or HEAD:PORT; default: a local Ray)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides parsed as YAML, e.g. limit=20 alignment.0.train.max_steps=2",
    )
    p.set_defaults(func=cmd_run)
    return p
