"""Whether a step fits its devices, and which of polyalign's options would make it fit.

Training runs one whole copy per device (data parallel), so a training step must fit the smallest
device. Evaluation can split a model over devices (`device_map: auto`) or offload part of it to
disk (`offload_folder`), so it fits when the devices together hold it, or when all but the weights
fit one device. A step that fits nowhere is refused before any weights load, in one line that
names what it needs and every single option (or the one combination) that would fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from polyalign.engine.devices import Device
from polyalign.engine.memory_plan import Estimate, EvalShape, TrainShape, eval_estimate, gib, train_estimate
from polyalign.engine.model_shapes import ModelShape

SPLIT_HEADROOM = 0.9  # a device map leaves each device a tenth for what the planner does not count


@dataclass(frozen=True)
class Fit:
    estimate: Estimate
    fits: bool
    placement: str  # how it fits: one device, split over N devices, part offloaded to disk
    capacity: float  # bytes of the device(s) it was checked against
    options: list[str] = field(default_factory=list)  # what would make a step that does not fit fit

    def refusal(self, label: str) -> str:
        """The one line a step that does not fit stops with."""
        parts = self.estimate.largest_parts()
        would = f"would fit with: {'; '.join(self.options)}" if self.options else "none of bf16, gradient "
        if not self.options:
            would += "checkpointing, nf4, a device map, offload or a smaller batch would fit it"
        return (
            f"{label}: needs about {gib(self.estimate.peak)} ({parts}) but the device has {gib(self.capacity)}; {would}"
        )


def _halvings(batch: int) -> list[int]:
    sizes, b = [], batch // 2
    while b >= 1:
        sizes.append(b)
        b //= 2
    return sizes


def train_fit(shape: ModelShape, job: TrainShape, devices: list[Device]) -> Fit:
    """A training step on each of `devices` (data parallel: the smallest must hold it)."""
    capacity = min(d.memory for d in devices)
    estimate = train_estimate(shape, job)
    if estimate.peak <= capacity:
        return Fit(estimate, True, "one device" if len(devices) == 1 else f"a copy on each of {len(devices)}", capacity)
    tries = []
    if job.precision == "fp32":
        tries.append(("precision=bf16", replace(job, precision="bf16")))
    if not job.gradient_checkpointing:
        tries.append(("gradient_checkpointing=true", replace(job, gradient_checkpointing=True)))
    if job.quantization is None:
        tries.append(("quantization=nf4", replace(job, quantization="nf4")))
    tries += [
        (f"per_device_batch={b} (grad_accum x{job.batch // b})", replace(job, batch=b)) for b in _halvings(job.batch)
    ]
    options = [label for label, alt in tries if train_estimate(shape, alt).peak <= capacity][:4]
    if not options:
        together = replace(job, precision="bf16", gradient_checkpointing=True, quantization=job.quantization or "nf4")
        together = replace(together, batch=1)
        if train_estimate(shape, together).peak <= capacity:
            options = ["precision=bf16 gradient_checkpointing=true quantization=nf4 per_device_batch=1 together"]
    return Fit(estimate, False, "", capacity, options)


def eval_fit(
    shape: ModelShape, job: EvalShape, devices: list[Device], device_map: str | None = None, offload: bool = False
) -> Fit:
    """An evaluation on one device, split over `devices` (device_map), or with weights offloaded."""
    largest = max(d.memory for d in devices)
    estimate = eval_estimate(shape, job)
    if estimate.peak <= largest:
        return Fit(estimate, True, "one device", largest)
    weights = estimate.parts["weights"]
    rest = estimate.steady() - weights + weights / shape.layers  # offloaded: a layer's weights at a time
    split = sum(d.memory for d in devices) * SPLIT_HEADROOM
    if device_map and len(devices) > 1 and estimate.peak <= split:
        return Fit(estimate, True, f"split over {len(devices)} devices", split)
    if device_map and offload and rest <= largest:
        return Fit(estimate, True, "part offloaded to disk", largest)
    options = []
    if job.precision == "fp32" and eval_estimate(shape, replace(job, precision="bf16")).peak <= largest:
        options.append("dtype=bfloat16")
    if len(devices) > 1 and estimate.peak <= split:
        options.append(f"device_map=auto (over {len(devices)} devices)")
    if rest <= largest:
        options.append("device_map=auto offload_folder=DIR (part of the weights on disk, slow)")
    batches = [b for b in _halvings(job.batch) if eval_estimate(shape, replace(job, batch=b)).peak <= largest]
    options += [f"batch_size={batches[0]}"] if batches else []
    return Fit(estimate, False, "", largest, options)
