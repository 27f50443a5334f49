"""Fused RMSNorms (polyalign.engine.exact_norms): swapped only where they give the model's own bits."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from polyalign.engine import exact_norms


@pytest.mark.slow
@pytest.mark.parametrize("family", ["tiny_gemma", "tiny_llama"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_norms_give_the_same_logits_bit_for_bit(family, dtype, request):
    net = AutoModelForCausalLM.from_pretrained(str(request.getfixturevalue(family)), dtype=dtype).eval()
    ids = torch.randint(5, 200, (3, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before = net(input_ids=ids).logits
        swapped = exact_norms.install(net)
        after = net(input_ids=ids).logits
    norms = [m for m in net.modules() if type(m).__name__.endswith("RMSNorm")]
    assert swapped == len(norms) > 0 and all("forward" in vars(m) for m in norms)
    assert torch.equal(before, after)
    assert exact_norms.install(net) == 0  # installed once


@pytest.mark.slow
def test_a_norm_whose_check_differs_keeps_its_own_forward(tiny_llama, monkeypatch):
    net = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32).eval()
    monkeypatch.setattr(exact_norms, "llama_forward", lambda self, x: torch.zeros_like(x))
    assert exact_norms.install(net) == 0
    assert not any("forward" in vars(m) for m in net.modules() if type(m).__name__.endswith("RMSNorm"))
