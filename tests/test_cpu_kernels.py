"""Fused bf16 CPU kernels (polyalign.engine.cpu_kernels): probed against float32, used only for bf16
inference; float32, autograd and a disabled or failed install keep the eager bits."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers import cfg_for
from polyalign.core.errors import PolyalignError
from polyalign.engine import cpu_backward, cpu_kernels, exact_norms
from polyalign.evaluation.evaluate import run_eval

EXPECTED = {"tiny_gemma": ["gelu_tanh_mul", "gemma_norm_eps1e-06"], "tiny_llama": ["llama_norm_eps1e-06", "silu_mul"]}


def load(folder, dtype=torch.bfloat16):
    net = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).eval()
    exact_norms.install(net)
    return net


def token_ids():
    return torch.randint(5, 200, (3, 24), generator=torch.Generator().manual_seed(0))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["tiny_gemma", "tiny_llama"])
def test_kernels_run_in_bf16_inference_and_stay_near_float32(family, request):
    folder = request.getfixturevalue(family)
    eager, fused, full = load(folder), load(folder), load(folder, torch.float32)
    assert cpu_kernels.install(fused) == EXPECTED[family] == cpu_kernels.in_use(fused)
    assert cpu_kernels.install(fused) == EXPECTED[family]  # installed once, not wrapped twice
    with torch.inference_mode():
        plain, kernels, reference = (net(input_ids=token_ids()).logits.float() for net in (eager, fused, full))
    assert not torch.equal(plain, kernels)  # the kernels ran
    # As close to float32 as eager bf16 is (on gemma-3-270m's 600 emotion items closer: mean score
    # shift 0.034 vs 0.038, docs/benchmarks.md); a wrong kernel would be far off.
    error, eager_error = ((logits - reference).abs().mean() for logits in (kernels, plain))
    assert error <= 1.25 * eager_error


@pytest.mark.slow
def test_float32_and_disabled_runs_keep_the_eager_bits_and_training_the_kernels(tiny_gemma, monkeypatch):
    """bf16 training runs the same forward kernels as inference (polyalign.engine.cpu_backward adds their
    backward), except a norm whose weight trains; float32 and POLYALIGN_CPU_KERNELS=0 install nothing."""
    eager, fused = load(tiny_gemma), load(tiny_gemma)
    cpu_kernels.install(fused)
    with torch.no_grad():
        inference = fused(input_ids=token_ids()).logits
        assert not torch.equal(eager(input_ids=token_ids()).logits, inference)
    norm_calls: list[int] = []
    apply = cpu_backward.FusedNorm.apply
    monkeypatch.setattr(cpu_backward.FusedNorm, "apply", staticmethod(lambda *a: norm_calls.append(1) or apply(*a)))
    fused.requires_grad_(False)  # LoRA training: the base, norms included, is frozen
    with torch.enable_grad():
        assert torch.equal(fused(input_ids=token_ids()).logits, inference) and norm_calls
    norm_calls.clear()
    fused.requires_grad_(True)  # trained norms keep their eager forward
    with torch.enable_grad():
        fused(input_ids=token_ids())
    assert not norm_calls
    full = load(tiny_gemma, torch.float32)
    assert cpu_kernels.install(full) == []
    monkeypatch.setenv("POLYALIGN_CPU_KERNELS", "0")
    assert cpu_kernels.install(load(tiny_gemma)) == []


@pytest.mark.slow
def test_the_norm_kernel_reads_attention_layout_rows(tiny_gemma):
    """q/k norms get [batch, heads, tokens, head_dim] views of [batch, tokens, heads, head_dim] memory."""
    net = load(tiny_gemma)
    cpu_kernels.install(net)
    norm = net.model.layers[0].self_attn.q_norm
    assert norm.polyalign_kernel == "gemma_norm_eps1e-06"
    x = torch.randn(2, 5, 3, 16, generator=torch.Generator().manual_seed(1)).bfloat16().transpose(1, 2)
    with torch.inference_mode():
        strided, packed = norm(x), norm(x.contiguous())
        fallback = norm(x.permute(0, 3, 2, 1).contiguous().permute(0, 3, 2, 1))  # another layout: eager
    assert torch.equal(strided, packed) and strided.shape == x.shape
    assert torch.allclose(fallback.float(), packed.float(), rtol=2**-7, atol=1e-6)


@pytest.mark.slow
def test_a_kernel_that_cannot_be_built_or_fails_its_probe_is_not_used(tiny_llama, monkeypatch, capsys):
    monkeypatch.setattr(cpu_kernels, "_LOADED", {})
    monkeypatch.setattr(cpu_kernels, "build", lambda *a: (_ for _ in ()).throw(RuntimeError("no compiler")))
    assert cpu_kernels.install(load(tiny_llama)) == []
    assert "unavailable (RuntimeError); eager bf16" in capsys.readouterr().err
    monkeypatch.setattr(cpu_kernels, "load", lambda name, function, examples: lambda a, b: a)  # wrong values
    assert cpu_kernels.install(load(tiny_llama)) == []


def test_packages_are_cached_per_torch_version_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYALIGN_CACHE", str(tmp_path))
    folder = cpu_kernels.kernel_dir()
    assert folder.parent == tmp_path / "kernels" and torch.__version__.replace("+", "_") in folder.name
    cpu = "processor\t: 0\nmodel name\t: Xeon\nflags\t\t: avx2 avx512f amx_bf16\n"
    # both cores of a CPU agree; a CPU without AMX is another machine
    assert cpu_kernels.cpu_fingerprint(cpu) == cpu_kernels.cpu_fingerprint(cpu + cpu.replace(": 0", ": 1"))
    assert cpu_kernels.cpu_fingerprint(cpu) != cpu_kernels.cpu_fingerprint(cpu.replace(" amx_bf16", ""))


@pytest.mark.slow
def test_results_record_the_kernels_and_a_resume_without_them_is_refused(tiny_gemma, data_dir, tmp_path):
    from transformers import AutoTokenizer

    cfg = cfg_for(
        tiny_gemma, data_dir, task="emotion", langs="en", scoring="prefix", limit=2, verify=False, allow_overlap=True
    )
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_gemma))
    fused = load(tiny_gemma)
    cpu_kernels.install(fused)
    run_eval(cfg, fused, tokenizer, tmp_path, progress=False)
    runtime = json.loads((tmp_path / "results.json").read_text())["runtime"]
    assert runtime["cpu_kernels"] == EXPECTED["tiny_gemma"]
    with pytest.raises(PolyalignError, match="cpu_kernels"):
        run_eval(cfg, load(tiny_gemma), tokenizer, tmp_path, progress=False)
