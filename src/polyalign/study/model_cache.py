"""The models an experiment's steps use, loaded on first use and released between steps.

A step names the (model, adapter) pairs it needs (`Step.needs`); before it runs, every other pair
is dropped, so a run holds at most what one step needs. torch is imported only when a model loads.
"""

from __future__ import annotations

import gc

from polyalign.study.experiment_spec import Experiment


class ModelCache:
    """(model, adapter) -> (model, tokenizer), loaded with the experiment's device, dtype and trust setting."""

    def __init__(self, exp: Experiment):
        self.exp = exp
        self.loaded: dict[tuple, tuple] = {}

    def get(self, model: str, adapter: str | None = None):
        if (model, adapter) not in self.loaded:
            from polyalign.engine.models import load_model
            from polyalign.engine.placement import placement_of

            exp = self.exp
            placement = placement_of(exp.device_map, exp.max_memory, exp.offload_folder)
            args = (model, adapter, exp.device, exp.dtype, exp.trust_remote_code, placement)
            self.loaded[(model, adapter)] = load_model(*args)
        return self.loaded[(model, adapter)]

    def release(self, keep=()) -> None:
        for pair in [p for p in self.loaded if p not in keep]:
            del self.loaded[pair]
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
