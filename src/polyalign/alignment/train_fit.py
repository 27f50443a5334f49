"""A training run checked against its device before the weights load, with the data's real lengths.

The experiment runner prices every step before the first runs (polyalign.study.step_cost) with an
assumed pair length; `polyalign train` knows its tokenized pairs, so it checks the longest one.
"""

from __future__ import annotations

from polyalign.alignment.train_config import TrainConfig
from polyalign.core.errors import PolyalignError


def check_training_fits(model: str, cfg: TrainConfig, longest: int, precision: str) -> None:
    """One line and a stop when a micro-batch of the longest rows cannot fit the device
    (this machine's, or $POLYALIGN_DEVICES); silent for a model the planner has no shape of."""
    from polyalign.engine.devices import devices_for
    from polyalign.engine.fit import train_fit
    from polyalign.engine.memory_plan import TrainShape
    from polyalign.engine.model_shapes import model_shape

    try:
        shape = model_shape(model)
    except PolyalignError:
        return
    devices = devices_for()
    job = TrainShape(
        batch=cfg.per_device_batch,
        seq=longest,
        rank=cfg.lora_rank,
        modules=tuple(cfg.target_modules),
        precision=precision,
        gradient_checkpointing=cfg.gradient_checkpointing,
        quantization=cfg.quantization,
        on_host=devices[0].kind == "cpu",
    )
    fit = train_fit(shape, job, devices)
    if not fit.fits:
        raise PolyalignError(fit.refusal(f"training {model}"))
