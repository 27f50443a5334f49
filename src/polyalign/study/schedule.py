"""What a plan can run at once on given CPUs and GPUs, and its critical path (`polyalign run --dry-run
--gpus N`): the question before renting an 8-GPU node for the paper's grid.

The plan's steps (from the declaration alone: no model loads, no torch) are list-scheduled as Ray
would start them: in plan order, each once the steps it reads from are finished and its resources
(polyalign.study.step_resources) are free. Step times are estimates (`seconds_of`; default the
priors of polyalign.study.step_clock, measured with gemma-3-270m on a 2-core CPU), so the wall
times are relative; the counts of steps at once and the critical path's steps are not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from polyalign.core.errors import PolyalignError
from polyalign.study.step_clock import StepClock
from polyalign.study.step_resources import StepResources, step_resources
from polyalign.study.steps import Step


@dataclass
class Schedule:
    most_at_once: int  # steps running together at the busiest moment
    critical_path: list[Step]  # the longest chain of steps each reading the one before
    critical_seconds: float
    wall_seconds: float  # the whole plan on these resources
    serial_seconds: float  # the whole plan one step after another


def critical_path(steps: list[Step], seconds: dict[str, float]) -> tuple[list[Step], float]:
    """The chain of dependent steps with the largest total time (plan order is topological)."""
    by_key = {s.key: s for s in steps}
    longest: dict[str, tuple[float, str | None]] = {}
    for step in steps:
        before = max(((longest[k][0], k) for k in step.depends_on if k in longest), default=(0.0, None))
        longest[step.key] = (before[0] + seconds[step.key], before[1])
    end = max(longest, key=lambda k: longest[k][0])
    chain: list[Step] = []
    key: str | None = end
    while key is not None:
        chain.append(by_key[key])
        key = longest[key][1]
    return chain[::-1], longest[end][0]


def simulate(steps: list[Step], needs: Callable[[Step], tuple[float, float]], cpus: float, gpus: float, seconds):
    """(most steps at once, wall time) of list scheduling `steps` on `cpus` and `gpus`."""
    finished: dict[str, float] = {}
    running: list[tuple[float, str, float, float]] = []  # (end, key, cpus, gpus)
    todo, now, most, free = list(steps), 0.0, 0, [cpus, gpus]
    while todo or running:
        for step in list(todo):
            c, g = needs(step)
            ready = all(k in finished for k in step.depends_on if k in seconds)
            if ready and c <= free[0] and g <= free[1]:
                running.append((now + seconds[step.key], step.key, c, g))
                free, todo = [free[0] - c, free[1] - g], [s for s in todo if s is not step]
        most = max(most, len(running))
        if not running:
            c, g = needs(todo[0])
            what, planned = f"{todo[0].kind} {todo[0].label}", f"{cpus:g} CPUs and {gpus:g} GPUs planned for"
            raise PolyalignError(f"{what} needs {c:g} CPUs and {g:g} GPUs, more than the {planned}")
        running.sort()
        end, key, c, g = running.pop(0)
        now, finished[key], free = end, end, [free[0] + c, free[1] + g]
    return most, now


def schedule(
    steps: list[Step], resources: dict[str, StepResources], cpus: float, gpus: float, seconds_of=None
) -> Schedule:
    seconds_of = seconds_of or StepClock(steps, precision_of=lambda s: "bf16").seconds
    seconds = {s.key: float(seconds_of(s)) for s in steps}
    path, longest = critical_path(steps, seconds)

    def needs(step: Step) -> tuple[float, float]:
        return step_resources(resources, step.kind, step.model, gpus)

    most, wall = simulate(steps, needs, cpus, gpus, seconds)
    return Schedule(most, path, longest, wall, sum(seconds.values()))


PRIOR_TIMES = "times relative, from polyalign.study.step_clock's gemma-3-270m priors"


def schedule_lines(sched: Schedule, cpus: float, gpus: float, times: str = PRIOR_TIMES) -> list[str]:
    """The dry run's lines about running the plan spread over `cpus` and `gpus`; `times` says where
    the step times come from."""
    chain = " -> ".join(f"{s.kind} {s.label}" for s in sched.critical_path)
    speedup = sched.serial_seconds / sched.wall_seconds if sched.wall_seconds else 1.0
    return [
        f"steps on {gpus:g} GPUs and {cpus:g} CPUs (--executor ray; {times}): at most {sched.most_at_once} at once; "
        f"{_hours(sched.wall_seconds)} instead of {_hours(sched.serial_seconds)} one after another ({speedup:.1f}x)",
        f"  critical path: {len(sched.critical_path)} steps, {_hours(sched.critical_seconds)}: {chain}",
    ]


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
