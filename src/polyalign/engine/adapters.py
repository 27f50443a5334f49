"""LoRA adapter folders checked against the base model before they are applied.

Why: peft applies an adapter of another base model with a shape traceback, or, when only the layer
count differs, with a warning and the extra weights dropped (silently different results). A corrupt
config or truncated weights file fails deep inside peft. Here each becomes one line, and where the
model is a local folder the check runs on an empty (meta-device) copy of it, before any weights load.
"""

from __future__ import annotations

import json
from pathlib import Path

from polyalign.core.errors import PolyalignError

WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PREFIX = "base_model.model."


def read_adapter_config(adapter: str | Path) -> dict:
    """adapter_config.json as a mapping, or one line saying what is wrong with it."""
    path = Path(adapter) / "adapter_config.json"
    if not path.is_file():
        raise PolyalignError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PolyalignError(f"{path}: corrupt adapter config ({exc}); retrain or restore the adapter") from None
    if not isinstance(config, dict) or not isinstance(config.get("peft_type"), str):
        raise PolyalignError(f"{path}: corrupt adapter config (no peft_type); retrain or restore the adapter")
    return config


def adapter_shapes(adapter: str | Path) -> dict[str, list[int]]:
    """Tensor name -> shape, read from the safetensors header only (no weights loaded)."""
    from safetensors import SafetensorError, safe_open

    read_adapter_config(adapter)
    folder = Path(adapter)
    path = folder / WEIGHTS[0]
    if not path.is_file():
        if (folder / WEIGHTS[1]).is_file():
            return {}  # pickled weights: shapes unknown until peft loads them
        raise PolyalignError(f"{adapter}: LoRA adapter folder without weights ({' or '.join(WEIGHTS)})")
    try:
        with safe_open(str(path), framework="pt") as weights:
            # opening checks the header against the file's length: a truncated file fails here
            return {name: list(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except (OSError, SafetensorError) as exc:
        raise PolyalignError(f"{path}: corrupt adapter weights ({exc}); retrain or restore the adapter") from None


def check_fits(net, adapter: str | Path, model: str) -> None:
    """Every LoRA matrix of `adapter` must sit on a linear layer of `net` with matching sizes."""
    problems = []
    for name, shape in sorted(adapter_shapes(adapter).items()):
        module_name, part = _target(name)
        if part is None:
            continue
        try:
            module = net.get_submodule(module_name)
        except AttributeError:
            problems.append(f"{module_name} does not exist")
            continue
        wanted = getattr(module, "in_features" if part == "lora_A" else "out_features", None)
        have = shape[1] if part == "lora_A" else shape[0]
        if len(shape) != 2 or wanted != have:
            problems.append(f"{module_name} has {wanted} features, the adapter {have}")
    if problems:
        base = read_adapter_config(adapter).get("base_model_name_or_path") or "an unrecorded model"
        raise PolyalignError(
            f"{adapter}: LoRA adapter of another base model ({base}), not {model}: "
            f"{problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        )


def _target(name: str) -> tuple[str, str | None]:
    """('model.layers.0.self_attn.q_proj', 'lora_A') for a peft tensor name; (name, None) otherwise."""
    stem = name.removeprefix(PREFIX)
    for part in ("lora_A", "lora_B"):
        marker = f".{part}."
        if marker in stem:
            return stem.split(marker)[0], part
    return stem, None


def check_adapter(model: str, adapter: str | Path, trust_remote_code: bool = False) -> None:
    """Check `adapter` against `model` before its weights load: on an empty copy built from a local
    folder's config.json (a hub id is checked once loaded, by `check_fits` in apply_adapter)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from polyalign.engine.model_paths import resolve_model_path

    shapes = adapter_shapes(adapter)
    path = Path(resolve_model_path(model))
    if not shapes or not (path / "config.json").is_file():
        return
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            empty = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise PolyalignError(f"{model}: cannot read the model's config: {str(exc).splitlines()[0]}") from None
    check_fits(empty, adapter, model)
