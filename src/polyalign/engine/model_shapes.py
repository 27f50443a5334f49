"""A model's shape, read from its config.json, without its weights.

The planner (polyalign.engine.memory_plan) prices a step from these numbers alone, so a step can be
refused before minutes of loading. A packaged alias or a local folder has its own config.json; a hub
id is looked up in the shapes shipped with polyalign (the paper's models, polyalign/engine/shapes/),
since nothing is downloaded at runtime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from polyalign.core.errors import PolyalignError
from polyalign.core.model_names import ALIASES

STORED = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
SHAPES_PACKAGE = "polyalign.engine"  # shapes/<owner>--<name>.json: config.json of hub models, no weights


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer that size its memory and FLOPs."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool  # input and output embeddings share one matrix
    qkv_bias: bool  # Qwen1.5/Qwen2: biases on q, k and v
    norms_per_layer: int  # RMSNorm vectors per layer (2 Llama; 4 Gemma 3, plus q/k norms)
    qk_norm: bool  # Gemma 3: an RMSNorm of head_dim on queries and keys
    stored: str = "bf16"  # the checkpoint's dtype (config.json's dtype / torch_dtype)

    def layer_params(self) -> int:
        q_out, kv_out = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = self.hidden * (q_out + 2 * kv_out) + q_out * self.hidden
        if self.qkv_bias:
            attention += q_out + 2 * kv_out
        norms = self.norms_per_layer * self.hidden + (2 * self.head_dim if self.qk_norm else 0)
        return attention + 3 * self.hidden * self.intermediate + norms

    def params(self) -> int:
        """All parameters: embeddings, layers, final norm and (untied) output matrix."""
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + self.layers * self.layer_params() + self.hidden

    def module_dims(self, name: str) -> tuple[int, int]:
        """(in, out) features of a projection named as in HF Llama-style models."""
        q_out, kv_out = self.heads * self.head_dim, self.kv_heads * self.head_dim
        dims = {
            "q_proj": (self.hidden, q_out),
            "k_proj": (self.hidden, kv_out),
            "v_proj": (self.hidden, kv_out),
            "o_proj": (q_out, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }
        if name not in dims:
            raise PolyalignError(f"{self.name}: the planner knows no module '{name}' (known: {', '.join(dims)})")
        return dims[name]


def shape_from_config(config: dict, name: str = "model") -> ModelShape:
    """A ModelShape from a config.json's fields (Llama, Mistral, Qwen2, Gemma 3 families)."""
    try:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        model_type = str(config.get("model_type", ""))
        gemma = model_type.startswith("gemma")
        return ModelShape(
            name=name,
            hidden=hidden,
            layers=int(config["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            intermediate=int(config["intermediate_size"]),
            vocab=int(config["vocab_size"]),
            tied=bool(config.get("tie_word_embeddings", gemma)),
            qkv_bias=model_type == "qwen2" or bool(config.get("attention_bias", False)),
            norms_per_layer=4 if model_type.startswith("gemma2") or model_type.startswith("gemma3") else 2,
            qk_norm=model_type.startswith("gemma3"),
            stored=STORED.get(str(config.get("dtype") or config.get("torch_dtype") or "bfloat16"), "bf16"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PolyalignError(f"{name}: config.json lacks a field the planner needs ({exc})") from None


def packaged_shape_path(hub_id: str) -> Path:
    return Path(str(files(SHAPES_PACKAGE) / "shapes" / f"{hub_id.replace('/', '--')}.json"))


def read_config(model: str) -> dict:
    """config.json of an alias (its cached folder), a local folder, or a hub id polyalign ships the shape of."""
    if model in ALIASES:
        from polyalign.engine.model_paths import resolve_model_path

        folder = Path(resolve_model_path(model))
    elif Path(model).expanduser().is_dir():
        folder = Path(model).expanduser()
    else:
        folder = packaged_shape_path(model).parent
        if not packaged_shape_path(model).is_file():
            raise PolyalignError(
                f"{model}: no config.json known to the planner (give a local folder, or a hub id among "
                f"{', '.join(known_hub_ids())})"
            )
        return json.loads(packaged_shape_path(model).read_text())
    path = folder / "config.json"
    if not path.is_file():
        raise PolyalignError(f"{folder}: not a model folder (no config.json)")
    return json.loads(path.read_text())


def known_hub_ids() -> list[str]:
    folder = packaged_shape_path("x").parent
    return sorted(p.stem.replace("--", "/") for p in folder.glob("*.json"))


def model_shape(model: str) -> ModelShape:
    return shape_from_config(read_config(model), model)
