"""How long an experiment has left: printed at the start of each step, with the step's precision.

A user on a slow CPU should learn within the first minute whether a run takes ten minutes or two
hours. Each step kind has a unit of work (a training pair seen, an item scored); the time per unit
starts from a prior measured with gemma-3-270m on a 2-core CPU and is replaced by the rate this
run measures as soon as one step of that kind has finished, so the estimate sharpens as it goes.

Where a step's model has a known shape (polyalign.engine.model_shapes), its unit is priced in FLOPs
(polyalign.study.step_cost.unit_flops) and the rate is a FLOP rate: the prior's seconds per unit
become gemma-3-270m's FLOPs per unit over them, and a measured step gives its own FLOPs over its
seconds. So a 14B step after a 1.8B one is priced by their FLOPs, not at the 1.8B's seconds per item.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from polyalign.core.declarations import short_precision
from polyalign.study.step_units import step_units
from polyalign.study.steps import Step

# seconds per unit, gemma-3-270m on 2 CPU cores: a training pair seen, an item scored; data steps
# cost almost nothing. fp32 as measured by the demo on a CPU without native bf16 (AVX2: 10 steps of 16
# pairs in 328 s, about 5 items/s), bf16 where native (AVX512-BF16). Priors only: measured rates
# replace them.
PRIOR_SECONDS = {
    ("train", "fp32"): 2.1,
    ("train", "bf16"): 0.75,
    ("eval", "fp32"): 0.2,
    ("eval", "bf16"): 0.12,
    ("lens", "fp32"): 0.3,
    ("lens", "bf16"): 0.15,
    ("pca", "fp32"): 0.3,
    ("pca", "bf16"): 0.15,
}


def step_precision(step: Step) -> str | None:
    """The precision a model step will run in on this machine (auto resolved), else None."""
    from polyalign.engine.precision import resolve_precision

    device = "cuda" if _cuda() else "cpu"
    if step.kind == "train":
        return resolve_precision(step.config["train"].get("precision", "auto"), device)
    if step.kind in ("eval", "lens", "pca"):
        dtype = step.config.get("dtype") or "auto"
        short = short_precision(dtype)
        return short if short != "auto" else resolve_precision("auto", device)
    return None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class StepClock:
    """Work units per step, a rate per (kind, precision), and the time left before step `n`."""

    def __init__(
        self,
        steps: list[Step],
        precision_of: Callable[[Step], str | None] = step_precision,
        flops_of: Callable[[Step], float | None] | None = None,
    ):
        self.steps, self.precision_of = steps, precision_of
        self.flops_of = flops_of or (lambda step: None)
        self.by_key = {s.key: s for s in steps}
        self.measured: dict[tuple[str, str | None], float] = {}
        self.flop_rates: dict[tuple[str, str | None], float] = {}  # FLOP/s measured per (kind, precision)
        self.precisions: dict[str, str | None] = {}
        self.started = 0.0

    def units(self, step: Step) -> float:
        """A training step: pairs seen; an evaluation or analysis: items scored (all languages)."""
        return step_units(step, self.by_key)

    def precision(self, step: Step) -> str | None:
        if step.key not in self.precisions:
            self.precisions[step.key] = self.precision_of(step)
        return self.precisions[step.key]

    def seconds(self, step: Step) -> float:
        kind = (step.kind, self.precision(step))
        flops = self.flops_of(step)
        prior = PRIOR_SECONDS.get(kind, 0.0)  # type: ignore[arg-type]
        if flops and (kind in self.flop_rates or prior > 0):
            rate = self.flop_rates.get(kind) or reference_flops(step.kind) / prior
            return self.units(step) * flops / rate
        return self.units(step) * self.measured.get(kind, prior)

    def start(self, n: int, pending: list[bool]) -> str:
        """Note for step `n` (0-based): its precision and the time left for it and every pending step after."""
        self.started = time.perf_counter()
        left = sum(self.seconds(s) for s, todo in zip(self.steps[n:], pending[n:]) if todo)
        precision = self.precision(self.steps[n])
        where = f"{precision}; " if precision else ""
        return f" ({where}about {_minutes(left)} left, estimated)"

    def finish(self, step: Step) -> None:
        """Replace the prior of this step's kind by the rate it ran at."""
        units, flops = self.units(step), self.flops_of(step)
        elapsed = time.perf_counter() - self.started
        if units > 0:
            self.measured[(step.kind, self.precision(step))] = elapsed / units
            if flops and elapsed > 0:
                self.flop_rates[(step.kind, self.precision(step))] = units * flops / elapsed


PRIOR_MODEL = "google/gemma-3-270m"  # the model PRIOR_SECONDS were measured with


def reference_flops(kind: str) -> float:
    """FLOPs of one unit of `kind` on the prior's model, priced as the step clock prices any step."""
    from polyalign.study.step_cost import reference_unit_flops

    return reference_unit_flops(kind, PRIOR_MODEL)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
