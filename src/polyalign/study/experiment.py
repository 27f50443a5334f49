"""`polyalign run EXPERIMENT.yaml`: one file declares a whole study, and every step runs once.

Steps, in order: data (alignment pairs per setting) -> train (a LoRA adapter per model, setting and
training seed; polyalign.study.alignment_steps) -> eval (the base model and every adapter, per task and
mode) -> lens -> pca. A step's key is the sha256 of its resolved configuration plus the keys or
content hashes of its inputs (model files, benchmark files, prompt pack, earlier steps). It writes into
RUN_DIR/steps/<kind>-<key[:12]>/ and, only once its outputs are in place, a done.json marker
holding that key. A re-run skips every step whose marker matches, so after a crash or an edit
only what is new runs; an interrupted training or evaluation resumes inside its folder.
Per-item results land in RUN_DIR/results.sqlite (polyalign.study.store), read by `polyalign report`.

Who does what: polyalign.study.step_context (the inputs every step needs, the model cache),
polyalign.study.plan (the steps in order), one builder per step kind (alignment_steps, eval_step,
analysis_step), and here the Runner, which plans and executes, and the two entry points.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from polyalign.core.model_names import check_model_name
from polyalign.core.paths import check_output_path
from polyalign.study.alignment_steps import data_step
from polyalign.study.claims_history import record_claims_change
from polyalign.study.executor import execute_steps
from polyalign.study.experiment_spec import Experiment, eval_modes, load_experiment
from polyalign.study.plan import plan
from polyalign.study.step_clock import StepClock
from polyalign.study.step_context import StepContext
from polyalign.study.steps import Step

__all__ = ["Runner", "load_experiment", "run_experiment", "validate_experiment"]


def validate_experiment(path: str | Path, overrides=(), data: bool = False) -> tuple[Experiment, list[str]]:
    """What `polyalign run --dry-run` does: load and check the file (and, with `data`, that every
    evaluation renders from the benchmark); returns notes on input files that must be supplied."""
    exp = load_experiment(path, overrides)
    for model in exp.models:  # a typo is refused here, not after the data and training steps ran
        check_model_name(model)
    notes: list[str] = []
    if data:
        ctx = StepContext(exp, None, Path(path).resolve().parent)
        checks = [(t, exp.languages, m, exp.items, "items") for t in exp.tasks for m in eval_modes(exp, t)]
        for kind, specs in (("lens", exp.analyses.lens), ("pca", exp.analyses.pca)):
            for spec in specs:
                key = f"analyses.{kind}.items" if spec.items else "items"
                checks.append((spec.task, spec.langs, spec.mode, spec.items or exp.items, key))
        for task, langs, mode, items, key in checks:
            ctx.eval_inputs(task, langs, mode, items, key)
        for s in exp.alignment:
            data_step(ctx, s).check()  # the data step's own refusals (its item range against the test files)
            named = [*s.pair_files.values(), *([s.target_file] if s.target_file else [])]
            notes += [f"alignment '{s.name}': supply {ctx.resolve(f)}" for f in named if not ctx.resolve(f).exists()]
    return exp, notes


class Runner(StepContext):
    """Plans an experiment's steps (all keys known before anything runs) and executes them."""

    def __init__(
        self,
        exp: Experiment,
        run_dir: str | Path | None,
        base_dir: str | Path = ".",
        steps_dir: str | Path | None = None,
    ):
        super().__init__(exp, run_dir, base_dir, steps_dir)
        self.executed: list[Step] = []
        self.skipped: list[Step] = []

    def plan(self) -> list[Step]:
        return plan(self)

    def execute(self, steps: list[Step], log: Callable[[str], None] = print, executor=None) -> None:
        """`executor` (runner, steps, log) -> (executed, skipped): default this process
        (polyalign.study.executor); polyalign.study.ray_executor.RayExecutor spreads steps over Ray."""
        for change in record_claims_change(self.store, asdict(self.exp)):  # the rules are part of the run
            log(f"note: the claims block changed after the run held results (CLAIMS.md will say so): {change}")
        self.store.set_meta("experiment", asdict(self.exp))
        self.store.set_meta(
            "plan",
            [
                {
                    "kind": s.kind,
                    "key": s.key,
                    "label": s.label,
                    "labels": s.config.get("labels"),
                    "dir": _where(self.folder(s), self.run_dir),
                }
                for s in steps
            ],
        )
        self.store.prune_samples((s.key, s.config["labels"]) for s in steps if s.kind == "eval")
        try:
            if executor is not None:
                self.executed, self.skipped = executor(self, steps, log)
                return
            self.executed, self.skipped = execute_steps(
                self.store,
                self.run_dir,
                steps,
                log,
                before=lambda step: self.models.release(keep=step.needs),
                clock=StepClock(steps, flops_of=clock_flops(self)),  # each start line: precision, time left
                steps_dir=self.steps_dir,
            )
        finally:
            self.models.release()


def dry_run_costs(exp: Experiment, path: str | Path, devices: str | None) -> list[str]:
    """The dry run's per-step memory, time and fit on `devices` (polyalign.study.step_cost)."""
    from polyalign.engine.devices import devices_for
    from polyalign.study.step_cost import cost_lines, has_shape, model_names, step_costs

    ctx = StepContext(exp, None, Path(path).resolve().parent)
    named = devices_for(devices)
    unknown = [
        f"note: {m}: no config.json known to the planner; its steps are not priced"
        for m in exp.models
        if not has_shape(m)
    ]
    return unknown + cost_lines(step_costs(plan(ctx), model_names(exp, ctx.model_id), named, exp), named)


def check_steps_fit(runner: Runner, steps: list[Step], devices: str | None) -> None:
    """Refuse a step that cannot fit its devices before the first step runs (no weights loaded)."""
    from polyalign.engine.devices import devices_for
    from polyalign.study.step_cost import check_fits, model_names, step_costs

    check_fits(step_costs(steps, model_names(runner.exp, runner.model_id), devices_for(devices), runner.exp))


def clock_flops(ctx: StepContext):
    """The step clock's FLOPs per unit of each step, on this machine's kind of device."""
    import torch

    from polyalign.study.step_cost import model_names, unit_flops

    return unit_flops(model_names(ctx.exp, ctx.model_id), "cuda" if torch.cuda.is_available() else "cpu")


def _where(folder: Path, run_dir: Path) -> str:
    """A step folder as the plan records it: relative to the run folder when inside it, else absolute
    (a shared --steps-dir); `run_dir / recorded` finds it either way."""
    return str(folder.relative_to(run_dir)) if folder.is_relative_to(run_dir) else str(folder.resolve())


def run_experiment(
    path: str | Path,
    run_dir: str | Path | None = None,
    overrides=(),
    log: Callable[[str], None] = print,
    devices: str | None = None,
    steps_dir: str | Path | None = None,
    executor: str = "local",
    address: str | None = None,
) -> Runner:
    """Plan and run every step of the experiment at `path` that is not done yet; step folders in
    `steps_dir`, else $POLYALIGN_STEPS, else RUN_DIR/steps. `executor` "ray": steps as Ray tasks
    (polyalign.study.ray_executor) on a local Ray, or the cluster at `address`."""
    exp = load_experiment(path, overrides)
    name = exp.name or Path(path).stem
    run_dir = Path(run_dir) if run_dir else Path("runs") / name
    check_output_path(run_dir)  # before anything is written or loaded
    for model in exp.models:  # before the run folder is created
        check_model_name(model)
    steps_dir = steps_dir or os.environ.get("POLYALIGN_STEPS") or None
    spread = None
    if executor == "ray":
        from polyalign.study.ray_executor import RayExecutor

        spread = RayExecutor(path, overrides, address)  # checks Ray is installed, before anything is written
    runner = Runner(exp, run_dir, Path(path).resolve().parent, steps_dir)
    try:
        runner.store.claim(name)  # a second experiment in this folder would prune the first one's results
        steps = runner.plan()
        check_steps_fit(runner, steps, devices)
        runner.execute(steps, log, spread)
    finally:
        runner.store.close()
    return runner
