"""Attention with grouped key/value heads on a CPU: torch's kernel reads the shared heads as they are.

Why: transformers' "sdpa" attention copies each key/value head once for every query head it
serves (repeat_kv) before torch's fused kernel whenever attention runs with a mask, as every
scoring batch does (padding, or the causal mask transformers builds after a cached prefix).
torch's CPU flash-attention kernel takes grouped heads itself (`enable_gqa`), with the same bits in
float32 and bf16 (tests/test_cpu_attention.py) and without the copies: for gemma-3-270m (4 query
heads on 1 key/value head) bf16 attention over [16 x 90] queries after a 53-token cache took 3.2
instead of 3.9 ms a layer (docs/benchmarks.md).

Only inference on a CPU takes this path. Everything else goes to transformers' own function
unchanged: GPUs (their masked grouped attention falls back to the math kernel), training (the
gradients of the shared heads are summed in another order), one-token decoding (transformers
packs the heads itself), position biases, soft-caps and attention weights asked for.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

NAME = "polyalign_sdpa"


def applies(query: torch.Tensor, groups: int, options: dict) -> bool:
    """Grouped heads, several queries, a CPU and no autograd, nothing this path does not do."""
    return (
        query.device.type == "cpu"
        and groups > 1
        and query.shape[2] > 1
        and not torch.is_grad_enabled()
        and options.get("position_bias") is None
        and options.get("softcap") is None
        and not options.get("output_attentions", False)
    )


def attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [batch, heads, queries, head_dim]
    key: torch.Tensor,  # [batch, kv_heads, keys, head_dim]
    value: torch.Tensor,  # [batch, kv_heads, keys, head_dim]
    attention_mask: torch.Tensor | None,  # [batch, 1, queries, keys], bool, or None
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **options,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention (its signature and result, [batch, queries, heads, head_dim])."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not applies(query, getattr(module, "num_key_value_groups", 1), options):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **options
        )
    queries = query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = attention_mask is None and causal
    if causal and key.shape[2] > queries:  # transformers' own crop (prefill into an empty static cache)
        key, value = key[:, :, :queries], value[:, :, :queries]
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=causal, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make NAME a transformers attention implementation, with sdpa's masks."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def install(model: torch.nn.Module) -> bool:
    """Switch a CPU model that uses transformers' sdpa attention to NAME; whether it did."""
    config = getattr(model, "config", None)
    first = next(model.parameters(), None)
    if config is None or first is None or first.device.type != "cpu":
        return False
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    register()
    try:
        model.set_attn_implementation(NAME)  # type: ignore[operator]
    except (AttributeError, ValueError):  # a model class that cannot switch keeps transformers' sdpa
        return False
    return getattr(model.config, "_attn_implementation", None) == NAME
