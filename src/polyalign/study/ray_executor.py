"""The Ray executor (`polyalign run CONFIG --executor ray [--address ADDR]`): each step a Ray task.

Why: the paper's grid is dozens of independent trainings and evaluations; on an 8-GPU node or a
cluster they should run at once, each on the GPUs it asked for. Ray (https://docs.ray.io) schedules
the tasks; polyalign only says what each step needs and what it waits for:
- a task per step not done yet, with the CPUs and GPUs of polyalign.study.step_resources, started
  once the steps it reads from (Step.depends_on) are finished; its torch threads are its CPUs;
- a task whose worker dies runs again, at most MAX_RETRIES times (each start is logged in the step
  folder's ATTEMPTS file and said in the finish line); a step that fails stops only its dependants;
- a worker rebuilds the plan from the experiment file (same keys: the driver's content hashes come
  along), takes the step folder's lock (polyalign.study.step_lock) and writes only that folder;
  the driver alone writes results.sqlite (polyalign.study.executor.finish_step), once a step's
  folder is complete. A step done earlier, or by another process meanwhile, is not run again.
Ray is imported only here, and this module only when `--executor ray` is chosen.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from polyalign.core.errors import PolyalignError
from polyalign.study.executor import discard_damaged_outputs, finish_step, is_done, run_step
from polyalign.study.step_lock import StepLock
from polyalign.study.step_resources import step_resources
from polyalign.study.steps import ATTEMPTS, Step

MAX_RETRIES = 2  # runs of a step after its worker died (a Python error is not retried)


@dataclass(frozen=True)
class PlanSource:
    """What a worker needs to rebuild the driver's plan: the experiment file and its overrides, the
    folders, and the driver's cached content hashes (so a worker does not hash model files again)."""

    experiment: str
    overrides: tuple[str, ...]
    base_dir: str
    steps_dir: str
    digests: tuple[tuple, ...]


def record_attempt(folder: Path) -> int:
    """Append this start to the step folder's ATTEMPTS file; the how-manieth start it is."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ATTEMPTS, "a", encoding="utf-8") as handle:
        handle.write(f"{socket.gethostname()} {os.getpid()} {time.time():.0f}\n")
    return len((folder / ATTEMPTS).read_text(encoding="utf-8").splitlines())


def run_task(source: PlanSource, key: str, cpus: float, *inputs) -> dict:
    """The body of a step's Ray task (`inputs`: the results of the steps it reads, which Ray waits for)."""
    import ray

    gpus = [str(g) for g in ray.get_gpu_ids()]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)  # only its own GPUs (none: none), before torch loads
    import torch

    from polyalign.engine.precision import machine_description
    from polyalign.study.experiment_spec import load_experiment
    from polyalign.study.plan import plan
    from polyalign.study.step_context import StepContext

    torch.set_num_threads(max(1, int(cpus)))
    ctx = StepContext(load_experiment(source.experiment, source.overrides), None, source.base_dir, source.steps_dir)
    ctx.store.load_digests(source.digests)
    step = next((s for s in plan(ctx) if s.key == key), None)
    if step is None:  # the file or its inputs changed after the driver planned
        raise PolyalignError(f"{source.experiment}: changed since the run was planned (no step {key[:12]} now)")
    folder = ctx.folder(step)
    attempt = record_attempt(folder)
    started = time.monotonic()
    with StepLock(folder) as lock:
        lock.acquire(wait=True)  # a local run (or another driver) may be running it
        held = is_done(folder, step, ctx.store.digest)
        if held:
            outputs = held["outputs"]
        else:
            damaged = discard_damaged_outputs(
                step, folder, ctx.store.digest, lambda line: print(f"{step.label}: {line}")
            )
            outputs = run_step(step, folder, machine_description(), ctx.store.digest, damaged)
    ctx.models.release()
    where = f"{socket.gethostname()} (pid {os.getpid()}, GPUs {','.join(gpus) or 'none'}, {int(cpus)} threads)"
    return {
        "outputs": outputs,
        "where": where,
        "seconds": time.monotonic() - started,
        "attempt": attempt,
        "held": bool(held),
    }


class RayExecutor:
    """Runs a Runner's steps as Ray tasks on a local Ray (address None), or a cluster ("auto", a head address)."""

    def __init__(self, experiment: str | Path, overrides=(), address: str | None = None):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise PolyalignError("--executor ray needs Ray: pip install 'polyalign[ray]'") from None
        self.experiment, self.overrides, self.address = str(Path(experiment).resolve()), tuple(overrides), address

    def __call__(self, runner, steps: list[Step], log: Callable[[str], None]) -> tuple[list[Step], list[Step]]:
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address)
        try:
            folders = str(Path(runner.base).resolve()), str(Path(runner.steps_dir).resolve())  # workers' cwd may differ
            source = PlanSource(self.experiment, self.overrides, *folders, tuple(runner.store.digest_rows()))
            return _Driver(ray, runner, steps, log).run(source)
        finally:
            if started_here:
                ray.shutdown()


class _Driver:
    """One execution: submits the tasks, then finishes each step as its task returns."""

    def __init__(self, ray, runner, steps: list[Step], log: Callable[[str], None]):
        self.ray, self.runner, self.steps, self.log = ray, runner, steps, log
        self.refs: dict[str, object] = {}  # step key -> its task's result
        self.executed: list[Step] = []
        self.skipped: list[Step] = []
        self.failed: dict[str, str] = {}

    def where(self, n: int) -> str:
        return f"[{n + 1}/{len(self.steps)}] {self.steps[n].kind} {self.steps[n].label}"

    def run(self, source: PlanSource) -> tuple[list[Step], list[Step]]:
        from tqdm import tqdm

        waiting = self.submit(source)
        bar = tqdm(total=len(self.steps), initial=len(self.steps) - len(waiting), desc="steps", unit="step")
        while waiting:
            [ref], _ = self.ray.wait(list(waiting), num_returns=1)
            self.finish(waiting.pop(ref), ref)
            bar.update()
        bar.close()
        if self.failed:
            raise PolyalignError(
                f"{len(self.failed)} of {len(self.steps)} steps did not finish: {'; '.join(self.failed.values())}. "
                "The others did; run the same command again to retry these"
            )
        return self.executed, self.skipped

    def submit(self, source: PlanSource) -> dict:
        """A task for every step not done yet, in plan order; {task result: step index}."""
        task = self.ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False, max_calls=1)(run_task)
        cluster_gpus = self.ray.cluster_resources().get("GPU", 0)
        waiting = {}
        for n, step in enumerate(self.steps):
            folder = self.runner.folder(step)
            held = is_done(folder, step, self.runner.store.digest)
            if held:
                finish_step(self.runner.store, step, folder, held["outputs"])
                self.skipped.append(step)
                self.log(f"{self.where(n)}: done earlier, skipped")
                continue
            cpus, gpus = step_resources(self.runner.exp.resources, step.kind, step.model, cluster_gpus)
            inputs = [self.refs[k] for k in step.depends_on if k in self.refs]
            options = {"num_cpus": cpus, "num_gpus": gpus, "name": f"polyalign {step.kind} {step.key[:12]}"}
            self.refs[step.key] = ref = task.options(**options).remote(source, step.key, cpus, *inputs)
            waiting[ref] = n
            self.runner.store.record_step(step.kind, step.key, step.config, "running")
            self.log(f"{self.where(n)}: queued ({cpus:g} CPU, {gpus:g} GPU) for {folder}")
        return waiting

    def finish(self, n: int, ref) -> None:
        step = self.steps[n]
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            blocked = self.failed_input(step)
            why = f"its input {blocked} failed" if blocked else _cause(exc)
            self.failed[step.key] = f"{step.kind} {step.label}: {why}"
            self.log(f"{self.where(n)}: {'not run' if blocked else 'failed'}: {why}")
            return
        finish_step(self.runner.store, step, self.runner.folder(step), result["outputs"])
        (self.skipped if result["held"] else self.executed).append(step)
        retried = f"; start {result['attempt']} (an earlier worker died)" if result["attempt"] > 1 else ""
        what = "done by another process" if result["held"] else "ran"
        self.log(f"{self.where(n)}: {what} on {result['where']} in {result['seconds']:.1f} s{retried}")

    def failed_input(self, step: Step) -> str | None:
        """The first step `step` reads from whose task failed (then `step` never started)."""
        for key in step.depends_on:
            ref = self.refs.get(key)
            if ref is None or not self.ray.wait([ref], timeout=0)[0]:
                continue
            try:
                self.ray.get(ref)
            except self.ray.exceptions.RayError:
                return next(f"{s.kind} {s.label}" for s in self.steps if s.key == key)
        return None


def _cause(exc: Exception) -> str:
    """The error a task raised (its first line), or why its worker was lost."""
    cause = getattr(exc, "cause", None) or exc
    first = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__
