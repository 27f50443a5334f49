"""bf16 training through the fused kernels: the written-out gradients are autograd's, and a LoRA step
with the kernels gives the eager step's loss and gradients within bf16 rounding."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from polyalign.engine import cpu_backward, cpu_kernels, exact_norms
from polyalign.engine.cpu_kernels import ACTIVATIONS


def random_rows(*shape, seed=0, scale=3.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


@pytest.mark.parametrize("family", ["gemma", "llama"])
def test_the_norm_gradient_formula_is_autograds(family):
    x, w, g = random_rows(5, 48), random_rows(48, seed=1, scale=0.5), random_rows(5, 48, seed=2)
    leaf = x.clone().requires_grad_()
    normed = leaf * torch.rsqrt(leaf.pow(2).mean(-1, keepdim=True) + 1e-6)
    y = normed * ((1 + w) if family == "gemma" else w)
    (want,) = torch.autograd.grad(y, leaf, g)
    got = cpu_backward.norm_backward_function(family, 1e-6)(x, w, g)  # float64 in: no rounding
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["gelu_tanh_mul", "silu_mul"])
def test_the_gated_gradient_formulas_are_autograds(name):
    a, u, g = random_rows(6, 40), random_rows(6, 40, seed=1), random_rows(6, 40, seed=2)
    leaves = [a.clone().requires_grad_(), u.clone().requires_grad_()]
    activation = ACTIVATIONS[name][1]
    want = torch.autograd.grad(activation(leaves[0]) * leaves[1], leaves, g)
    got = cpu_backward.GATED_BACKWARDS[name](a, u, g)
    for got_one, want_one in zip(got, want):
        torch.testing.assert_close(got_one.double(), want_one, rtol=1e-5, atol=1e-5)


def test_rows_of_a_transposed_tensor_come_back_in_its_layout():
    x = random_rows(2, 3, 4, 8).float().transpose(1, 2)  # [b, h, t, d] over a [b, t, h, d] buffer
    rows, back = cpu_backward.as_rows(x)
    assert rows.shape == (24, 8) and torch.equal(back(rows * 2), x * 2)
    assert torch.equal(cpu_backward.same_rows(x.contiguous(), x), rows)
    assert cpu_backward.as_rows(x[..., ::2]) is None


def lora_step(folder, kernels: bool, seed: int = 0):
    """Loss and LoRA gradients of one bf16 step on a tiny model (LoRA on q/v and the MLP's up
    projection), with the fused kernels installed or not."""
    net = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    exact_norms.install(net)
    used = cpu_kernels.install(net) if kernels else []
    torch.manual_seed(1)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    model = get_peft_model(net, config)
    ids = torch.randint(3, net.config.vocab_size, (2, 23), generator=torch.Generator().manual_seed(seed))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return used, loss.item(), {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["tiny_gemma", "tiny_llama"])
def test_a_bf16_lora_step_with_the_kernels_gives_the_eager_step(family, request, monkeypatch):
    folder = request.getfixturevalue(family)
    calls = {"norm": 0, "gated": 0}
    for key, function in (("norm", cpu_backward.FusedNorm), ("gated", cpu_backward.FusedGatedMul)):
        original = function.backward
        monkeypatch.setattr(function, "backward", staticmethod(counted(original, calls, key)))
    used, loss, grads = lora_step(folder, kernels=True)
    if not used:
        pytest.skip("no AOTInductor kernel on this machine")
    assert calls["norm"] > 0 and calls["gated"] > 0  # every norm and MLP ran its fused backward
    _, eager_loss, eager_grads = lora_step(folder, kernels=False)
    assert loss == pytest.approx(eager_loss, rel=2e-3)
    assert grads.keys() == eager_grads.keys()
    for name, want in eager_grads.items():
        assert want.abs().sum() > 0, name
        torch.testing.assert_close(grads[name], want, rtol=0, atol=5e-2 * float(want.abs().max()))


def counted(backward, calls: dict, key: str):
    def wrapper(ctx, grad):
        calls[key] += 1
        return backward(ctx, grad)

    return wrapper


@pytest.mark.slow
def test_a_backward_kernel_that_fails_its_probe_leaves_the_eager_backward(tiny_llama, monkeypatch, capsys):
    monkeypatch.setattr(cpu_backward, "grads_close", lambda got, want: False)  # every probe fails
    used, loss, grads = lora_step(tiny_llama, kernels=True)
    if not used:
        pytest.skip("no AOTInductor kernel on this machine")
    assert "no backward kernel for llama_norm_eps1e-06; bf16 training keeps its eager passes" in capsys.readouterr().err
    _, eager_loss, eager_grads = lora_step(tiny_llama, kernels=False)
    assert loss == pytest.approx(eager_loss, rel=2e-3)
