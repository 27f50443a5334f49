"""`polyalign merge`: a LoRA adapter folded into its base model, as a plain HF folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from polyalign.core.errors import PolyalignError
from polyalign.core.item_range import PROVENANCE_FILE, read_provenance, write_provenance
from polyalign.core.paths import check_replaceable


def merge(
    model: str, adapter: str | Path, out: str | Path, overwrite: bool = False, trust_remote_code: bool = False
) -> Path:
    """Base model + LoRA folded into one HF folder (safetensors + tokenizer), merged in fp32
    for exactness and saved in the base model's dtype, with the adapter's benchmark provenance;
    written atomically."""
    import torch
    from transformers import AutoConfig

    from polyalign.engine.adapters import check_adapter
    from polyalign.engine.model_paths import resolve_model_path, save_tokenizer
    from polyalign.engine.models import apply_adapter, load_tokenizer, load_weights

    out = Path(out)
    check_replaceable(out, overwrite)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise PolyalignError(f"{out} exists and is not empty; pass --overwrite to replace it")
        if not (out / "polyalign-merge.json").is_file():  # --overwrite replaces a merged model only
            raise PolyalignError(f"{out}: holds files that are not a merged model; choose an empty or new --out")
    path = resolve_model_path(model)
    tokenizer = load_tokenizer(model, trust_remote_code)
    check_adapter(model, adapter, trust_remote_code)  # before the weights load
    dtype = getattr(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code), "dtype", None)
    net = load_weights(model, torch.float32, trust_remote_code)
    merged = apply_adapter(net, str(adapter), model).merge_and_unload()
    if isinstance(dtype, torch.dtype):
        merged = merged.to(dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        folder = Path(tmp) / "merged"
        merged.save_pretrained(folder, safe_serialization=True)
        save_tokenizer(tokenizer, folder)  # its added tokens listed: later loads parse tokenizer.json once
        (folder / "polyalign-merge.json").write_text(json.dumps({"model": model, "adapter": str(adapter)}, indent=2))
        # the merged model was trained on what the adapter (and a merged base) was: the leak guard reads it
        trained = _provenance(Path(adapter)) + _provenance(Path(path))
        if trained:
            write_provenance(folder, trained)
        if out.exists():
            shutil.rmtree(out)
        os.replace(folder, out)
    return out


def _provenance(folder: Path) -> list[dict]:
    """The provenance records of an adapter or model folder as written (checked by read_provenance)."""
    if not read_provenance(folder):
        return []
    return json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8"))["benchmark_items"]
