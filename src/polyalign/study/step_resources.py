"""What each step asks a Ray cluster for: CPUs and GPUs, per step kind or model, from the YAML.

    resources:
      train: {gpus: 1, cpus: 4}     # every training step
      Qwen/Qwen1.5-14B: {gpus: 2}   # this model's train, eval, lens and PCA steps (over its kind's entry)

Defaults: a data step one CPU and no GPU; a model step one CPU and, where the cluster has GPUs, one
GPU. The CPUs a step is given are its torch threads.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyalign.core.errors import PolyalignError

KINDS = ("data", "train", "eval", "lens", "pca")


@dataclass
class StepResources:
    cpus: float | None = None  # None: the kind's entry, else 1
    gpus: float | None = None  # None: the kind's entry, else 1 where the cluster has GPUs (data: 0)

    def __post_init__(self):
        if (self.cpus is not None and self.cpus <= 0) or (self.gpus is not None and self.gpus < 0):
            raise PolyalignError(f"resources: cpus must be > 0 and gpus >= 0 (got cpus {self.cpus}, gpus {self.gpus})")


def check_resources(resources: dict[str, StepResources], models: list[str]) -> None:
    unknown = sorted(set(resources) - set(KINDS) - set(models))
    if unknown:
        raise PolyalignError(
            f"resources: unknown key(s) {', '.join(unknown)} (a step kind: {', '.join(KINDS)}, or one of the models)"
        )
    if (resources.get("data") or StepResources()).gpus:
        raise PolyalignError("resources: data steps use no GPU (gpus: 0)")


def step_resources(
    resources: dict[str, StepResources], kind: str, model: str | None, cluster_gpus: float
) -> tuple[float, float]:
    """(cpus, gpus) a step of `kind` on `model` asks for."""
    entries = [e for e in (resources.get(model or ""), resources.get(kind)) if e is not None]
    cpus = next((e.cpus for e in entries if e.cpus is not None), 1.0)
    default_gpus = 1.0 if cluster_gpus and kind != "data" else 0.0
    gpus = next((e.gpus for e in entries if e.gpus is not None), default_gpus)
    return float(cpus), float(gpus)
