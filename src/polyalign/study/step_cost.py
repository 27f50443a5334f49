"""Each planned step's memory, FLOPs, time and fit, before anything loads.

`polyalign run --dry-run --devices 8x80GB` prints these per step, with the total; a real run checks
every step against its devices before the first one starts, and refuses one that cannot fit in one
line (polyalign.engine.fit). Sequence lengths are not known before the data exist: a training step
is priced at TYPICAL_PAIR_TOKENS per pair (training itself re-checks with the real lengths), an
evaluation at EVAL_PREFIX_TOKENS of few-shot prefix and EVAL_SUFFIX_TOKENS per item.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from polyalign.core.declarations import short_precision
from polyalign.core.errors import PolyalignError
from polyalign.engine.devices import Device
from polyalign.engine.fit import Fit, eval_fit, train_fit
from polyalign.engine.memory_plan import EvalShape, TrainShape, gib
from polyalign.engine.model_shapes import ModelShape, model_shape
from polyalign.study.step_units import step_units
from polyalign.study.steps import Step

TYPICAL_PAIR_TOKENS = 256  # a question pair: prompt and completion (capped by cutoff_len)
EVAL_PREFIX_TOKENS = 400  # the few-shot block shared by a language's items
EVAL_SUFFIX_TOKENS = 96  # one item after it


@dataclass(frozen=True)
class StepCost:
    step: Step
    model: str
    fit: Fit
    flops: float  # the whole step
    seconds: float  # on the devices given, at their rate


def model_names(exp, model_id) -> dict[str, str]:
    """A step config's model identity (as StepContext.model_id writes it) -> the experiment's model name."""
    return {json.dumps(model_id(m), sort_keys=True): m for m in exp.models}


def train_job(train: dict, precision: str, on_host: bool) -> TrainShape:
    return TrainShape(
        batch=int(train.get("per_device_batch", 4)),
        seq=min(int(train.get("cutoff_len", 2048)), TYPICAL_PAIR_TOKENS),
        rank=int(train.get("lora_rank", 8)),
        modules=tuple(train.get("target_modules", ("q_proj", "v_proj"))),
        precision=precision,
        gradient_checkpointing=bool(train.get("gradient_checkpointing", False)),
        quantization=train.get("quantization"),
        on_host=on_host,
    )


def step_fit(step: Step, shape: ModelShape, precision: str, devices: list[Device], exp) -> tuple[Fit, float]:
    """(fit, FLOPs per unit of the step clock: a pair trained, an item scored)."""
    on_host = devices[0].kind == "cpu"
    if step.kind == "train":
        job = train_job(step.config["train"], precision, on_host)
        fit = train_fit(shape, job, devices)
        return fit, fit.estimate.flops_per_unit * job.seq
    job_eval = EvalShape(EVAL_PREFIX_TOKENS, EVAL_SUFFIX_TOKENS, exp.batch_size, precision, on_host)
    device_map = getattr(exp, "device_map", None)
    fit = eval_fit(shape, job_eval, devices, device_map, bool(getattr(exp, "offload_folder", None)))
    return fit, fit.estimate.flops_per_unit


def target_precision(step: Step, device_kind: str) -> str:
    """The precision a step runs in on `device_kind` (the devices named need not be this machine's):
    auto is bf16 on a GPU, and on a CPU whatever polyalign.engine.precision resolves here."""
    from polyalign.engine.precision import resolve_precision

    declared = step.config["train"].get("precision", "auto") if step.kind == "train" else step.config.get("dtype")
    declared = short_precision(declared or "auto")
    if declared != "auto":
        return declared
    return "bf16" if device_kind == "cuda" else resolve_precision("auto", "cpu")


def step_costs(steps: list[Step], names: dict[str, str], devices: list[Device], exp) -> list[StepCost]:
    """The cost of every model step (data steps cost nothing and are left out)."""
    by_key, costs = {s.key: s for s in steps}, []
    rate = devices[0].flops  # steps run one after another, each on one device
    for step in steps:
        if step.kind not in ("train", "eval", "lens", "pca"):
            continue
        model = names.get(json.dumps(step.config["model"], sort_keys=True), str(step.config["model"]))
        if not has_shape(model):
            continue  # a model the planner has no config.json of is not priced (the dry run says so)
        precision = target_precision(step, devices[0].kind)
        fit, per_unit = step_fit(step, model_shape(model), precision, devices, exp)
        flops = per_unit * step_units(step, by_key)
        costs.append(StepCost(step, model, fit, flops, flops / rate))
    return costs


def unit_flops(names: dict[str, str], device_kind: str) -> Callable[[Step], float | None]:
    """For the step clock: a step's FLOPs per unit (a pair trained, an item scored), None where its
    model has no known shape."""

    def flops_of(step: Step) -> float | None:
        model = names.get(json.dumps(step.config.get("model"), sort_keys=True), str(step.config.get("model")))
        if step.kind not in ("train", "eval", "lens", "pca") or not has_shape(model):
            return None
        devices = [Device(device_kind, float("inf"), 1.0)]
        return step_fit(step, model_shape(model), target_precision(step, device_kind), devices, _Defaults())[1]

    return flops_of


def reference_unit_flops(kind: str, model: str) -> float:
    """FLOPs per unit of a step of `kind` with the default recipe on `model` (the step clock's priors)."""
    shape = model_shape(model)
    if kind == "train":
        job = train_job({}, "bf16", on_host=False)
        return train_fit(shape, job, [Device("cpu", float("inf"), 1.0)]).estimate.flops_per_unit * job.seq
    job_eval = EvalShape(EVAL_PREFIX_TOKENS, EVAL_SUFFIX_TOKENS, _Defaults.batch_size, "bf16")
    return eval_fit(shape, job_eval, [Device("cpu", float("inf"), 1.0)]).estimate.flops_per_unit


class _Defaults:
    batch_size = 16  # the experiment's default: FLOPs per item barely depend on it


def priced_seconds(costs: list[StepCost], fallback: Callable[[Step], float]) -> Callable[[Step], float]:
    """Seconds per step for the dry run's schedule: a priced step's time on the devices named (its
    FLOPs at their rate), else `fallback` (the step clock's priors: data steps, unknown models)."""
    seconds = {cost.step.key: cost.seconds for cost in costs}
    return lambda step: seconds[step.key] if step.key in seconds else fallback(step)


def has_shape(model: str) -> bool:
    try:
        model_shape(model)
    except PolyalignError:
        return False
    return True


def check_fits(costs: list[StepCost]) -> None:
    """Refuse, before anything runs, the first step that cannot fit its devices."""
    for cost in costs:
        if not cost.fit.fits:
            raise PolyalignError(cost.fit.refusal(f"{cost.step.kind} {cost.step.label}"))


def cost_lines(costs: list[StepCost], devices: list[Device]) -> list[str]:
    """The dry run's table: per step its peak memory, FLOPs, time and fit; then the total."""
    same = len(set(devices)) == 1
    named = f"{len(devices)} x {devices[0].describe()}" if same else ", ".join(d.describe() for d in devices)
    rate = f"{devices[0].flops / 1e12:.3g} TFLOP/s"
    lines = [f"cost on {named} (estimated; each step on one device at {rate}):"]
    for cost in costs:
        verdict = f"fits ({cost.fit.placement})" if cost.fit.fits else "DOES NOT FIT: " + "; ".join(cost.fit.options)
        lines.append(
            f"  {cost.step.kind} {cost.step.label}: peak {gib(cost.fit.estimate.peak)}, "
            f"{cost.flops:.2e} FLOPs, {_duration(cost.seconds)}; {verdict}"
        )
    refused = sum(not c.fit.fits for c in costs)
    total = sum(c.seconds for c in costs)
    lines.append(
        f"total: {_duration(total)} for {len(costs)} model steps; "
        + (f"{refused} do not fit" if refused else "every step fits")
    )
    return lines


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
