"""Grouped key/value heads read in place on a CPU (polyalign.engine.cpu_attention): the same bits as
transformers' sdpa attention, without its per-head copies, for padded batches and cached prefixes."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.integrations import sdpa_attention

from polyalign.engine import cpu_attention


@pytest.fixture
def copies(monkeypatch) -> list[int]:
    """How many key/value tensors transformers copied per query head (repeat_kv with groups > 1)."""
    counted = [0]
    original = sdpa_attention.repeat_kv

    def counting(hidden, n_rep):
        counted[0] += n_rep > 1
        return original(hidden, n_rep)

    monkeypatch.setattr(sdpa_attention, "repeat_kv", counting)
    return counted


def padded_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows of 5, 14 and 9 tokens, left-padded to 14 (a mask that is not causal alone)."""
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(3, vocab, (3, 14), generator=generator)
    mask = torch.ones(3, 14, dtype=torch.long)
    mask[0, :9], mask[2, :5] = 0, 0
    return ids, mask


def logits(model, ids: torch.Tensor, mask: torch.Tensor | None, prefix: int) -> torch.Tensor:
    """Logits of the tokens after a `prefix`-token cache (0: no cache); mask None: right padding
    and causal masks alone, as scoring runs."""
    if prefix == 0:
        return model(input_ids=ids, attention_mask=mask).logits
    head = None if mask is None else mask[:, :prefix]
    cache = model(input_ids=ids[:, :prefix], attention_mask=head, use_cache=True).past_key_values
    return model(input_ids=ids[:, prefix:], attention_mask=mask, cache=copy.deepcopy(cache)).logits


@pytest.mark.slow  # request.getfixturevalue: marked by hand
@pytest.mark.parametrize("family", ["tiny_gemma", "tiny_llama"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("prefix", "masked"), [(0, True), (0, False), (6, True), (6, False)])
def test_same_bits_as_transformers_without_the_copies(request, copies, family, dtype, prefix, masked):
    folder = request.getfixturevalue(family)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa").eval()
    ids, mask = padded_batch(model.config.vocab_size)
    mask = mask if masked else None
    with torch.inference_mode():
        expected = logits(model, ids, mask, prefix)
    # The tiny models group 2 query heads on 1 key/value head. transformers copies them wherever it
    # attends with a mask: padding, or the causal mask it builds after a cached prefix.
    assert (copies[0] > 0) == (masked or prefix > 0)
    assert cpu_attention.install(model)
    copies[0] = 0
    with torch.inference_mode():
        got = logits(model, ids, mask, prefix)
    assert copies[0] == 0
    assert torch.equal(got, expected)


@pytest.mark.slow
def test_training_and_decoding_keep_transformers_path(tiny_gemma, copies):
    model = AutoModelForCausalLM.from_pretrained(tiny_gemma, dtype=torch.float32, attn_implementation="sdpa")
    assert cpu_attention.install(model)
    ids, mask = padded_batch(model.config.vocab_size)
    model(input_ids=ids, attention_mask=mask).logits.sum().backward()  # autograd on: transformers' own
    assert copies[0] > 0
    assert cpu_attention.applies(torch.zeros(1, 2, 1, 4), 2, {}) is False  # one query: transformers packs it
    assert cpu_attention.applies(torch.zeros(1, 2, 3, 4), 1, {}) is False  # no grouped heads: nothing to save


@pytest.mark.slow
def test_only_sdpa_models_switch(tiny_llama, monkeypatch):
    eager = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="eager")
    assert not cpu_attention.install(eager)
    assert eager.config._attn_implementation == "eager"
    refusing = AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="sdpa")

    def refuse(name):
        raise ValueError(f"{name} is not supported")

    monkeypatch.setattr(refusing, "set_attn_implementation", refuse)
    assert not cpu_attention.install(refusing)  # a class that cannot switch keeps transformers' sdpa
    assert refusing.config._attn_implementation == "sdpa"
