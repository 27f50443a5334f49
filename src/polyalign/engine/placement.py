"""Models larger than one device: accelerate's big-model inference for eval, lens and PCA.

`--device-map auto` spreads the layers over the GPUs (then the CPU, then disk), `--max-memory`
caps what each may hold (`70GB` for every GPU, or per device: `0=70GB,1=70GB,cpu=200GB`; on a
machine without a GPU a single size caps the CPU), and `--offload-folder DIR` is where weights that
fit nowhere wait on disk. The scores equal the unsplit model's: the same layers run on the same
inputs, only where their weights live differs (tests/test_placement.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from polyalign.core.errors import PolyalignError
from polyalign.engine.devices import parse_size

if TYPE_CHECKING:
    import torch

DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class Placement:
    """Where a model's weights go when one device cannot hold them."""

    device_map: str = "auto"
    max_memory: str | None = None  # 70GB, or 0=70GB,1=70GB,cpu=200GB
    offload_folder: str | None = None


def placement_of(device_map: str | None, max_memory: str | None, offload_folder: str | None) -> Placement | None:
    """A checked Placement from the three options (None: the whole model on one device, as before)."""
    if device_map is None:
        if max_memory or offload_folder:
            raise PolyalignError("--max-memory and --offload-folder need --device-map (e.g. --device-map auto)")
        return None
    if device_map not in DEVICE_MAPS:
        raise PolyalignError(f"device_map must be one of {', '.join(DEVICE_MAPS)} (got '{device_map}')")
    if max_memory:
        max_memory_map(max_memory)  # a malformed size is one line now, not after the tokenizer loads
    return Placement(device_map, max_memory, offload_folder)


def max_memory_map(text: str) -> dict[int | str, int]:
    """'70GB' (every GPU, or the CPU where there is none) or '0=70GB,cpu=200GB' -> accelerate's max_memory."""
    if "=" not in text:
        import torch

        each = int(parse_size(text, "max_memory"))
        gpus = torch.cuda.device_count()
        return {i: each for i in range(gpus)} if gpus else {"cpu": each}
    out: dict[int | str, int] = {}
    for part in text.split(","):
        name, _, size = part.partition("=")
        name = name.strip().lower()
        key: int | str = int(name) if name.isdigit() else name
        if key not in ("cpu", "disk") and not isinstance(key, int):
            raise PolyalignError(f"max_memory: '{name}' is not a GPU index, cpu or disk")
        out[key] = int(parse_size(size, "max_memory"))
    return out


def from_pretrained_kwargs(placement: Placement | None) -> dict[str, Any]:
    if placement is None:
        return {}
    kwargs: dict[str, Any] = {"device_map": placement.device_map}
    if placement.max_memory:
        kwargs["max_memory"] = max_memory_map(placement.max_memory)
    if placement.offload_folder:
        kwargs["offload_folder"] = placement.offload_folder
    return kwargs


def input_device(model) -> torch.device:
    """Where a (possibly split) model's inputs go: the first GPU of its map, else the CPU; an
    unsplit model's own device."""
    import torch

    from polyalign.engine.unembed import base_model

    device_map = getattr(base_model(model), "hf_device_map", None)
    if not device_map:
        return next(model.parameters()).device
    gpus = sorted(v for v in device_map.values() if isinstance(v, int))
    return torch.device(f"cuda:{gpus[0]}") if gpus else torch.device("cpu")
