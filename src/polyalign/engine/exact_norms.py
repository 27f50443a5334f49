"""A model's RMSNorms through torch's fused kernel, bit for bit what their own forward computes.

Why: on a CPU the norms of a small decoder cost about as much as its attention projections. Each
is eight to ten elementwise passes (upcast, square, mean, rsqrt, two products, downcast), and in
bf16 the casts dominate: measured on gemma-3-270m (AMX Xeon, one thread, 8 x 100 tokens), 5.2 of a
layer's 21.8 ms went to its six norms. `torch.nn.functional.rms_norm` normalises in one fused pass.

A module's forward is replaced only after a check on random rows of its own width gives the same
bits as the forward it replaces, in its dtype and in float32 (the dtype a verified run re-scores
in, polyalign.engine.float32_view); a class not listed here, or one whose check differs, keeps
its forward. `install(model)` returns how many norms it swapped.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable

import torch
from torch.nn import functional as F

# One formula per family, as transformers writes it (5.x): Gemma scales by (1 + weight) in float32
# before the downcast; Llama and its relatives downcast first and scale by the weight in its dtype.
GEMMA_NORMS = frozenset({"GemmaRMSNorm", "Gemma2RMSNorm", "Gemma3RMSNorm", "Gemma3nRMSNorm"})
LLAMA_NORMS = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "Qwen2MoeRMSNorm"})


def gemma_forward(self, x: torch.Tensor) -> torch.Tensor:
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
    return (normed * (1.0 + self.weight.float())).type_as(x)


def llama_forward(self, x: torch.Tensor) -> torch.Tensor:
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.variance_epsilon)
    return self.weight * normed.to(x.dtype)


def fused_forward(module: torch.nn.Module) -> Callable | None:
    """The fused forward for `module`'s class (None: not a norm this module knows)."""
    name = type(module).__name__
    if name in GEMMA_NORMS and hasattr(module, "eps"):
        return gemma_forward
    if name in LLAMA_NORMS and hasattr(module, "variance_epsilon"):
        return llama_forward
    return None


def norm_weight(module: torch.nn.Module) -> torch.Tensor:
    weight = module.weight
    assert isinstance(weight, torch.Tensor), f"{type(module).__name__}: a norm without a weight tensor"
    return weight


def same_bits(module: torch.nn.Module, fused: Callable) -> bool:
    """Whether `fused` gives `module`'s own output bit for bit on random rows of its width, in the
    module's dtype and in float32."""
    weight = norm_weight(module)
    if weight.device.type == "meta" or weight.dim() != 1:
        return False
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(4, 7, weight.shape[0], generator=generator) * 3
    with torch.no_grad():
        for probe in (module, copy.deepcopy(module).float()):
            x = rows.to(device=norm_weight(probe).device, dtype=norm_weight(probe).dtype)
            if not torch.equal(type(probe).forward(probe, x), fused(probe, x)):
                return False
    return True


def install(model: torch.nn.Module) -> int:
    """Swap every known RMSNorm of `model` whose check passes to the fused kernel; the number swapped.

    The check runs once per (class, width, dtype, device); an instance attribute carries the new
    forward, so hooks (the float32 view's weight swaps) still run around it."""
    verdicts: dict[tuple, bool] = {}
    swapped = 0
    for module in model.modules():
        fused = fused_forward(module)
        if fused is None or "forward" in vars(module):
            continue
        weight = norm_weight(module)
        key = (type(module), weight.shape[0], weight.dtype, weight.device)
        if key not in verdicts:
            verdicts[key] = same_bits(module, fused)
        if verdicts[key]:
            module.forward = types.MethodType(fused, module)
            swapped += 1
    return swapped
