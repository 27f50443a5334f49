"""Shared fixtures: the real benchmark path, packaged tokenizers, tiny random models.

Tiers: a test that loads a model (packaged: gemma_dir, smollm_dir; tiny random: tiny_gemma,
tiny_llama) or launches processes carries @pytest.mark.slow; `make test-fast` runs the rest (no model
weights, no process; tokenizers only), `make test` everything. The tiny models need only the packaged
tokenizers (helpers.packaged_tokenizer: no weights converted).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers import DATA, packaged_tokenizer

# Exact numerics on any machine: a GPU would otherwise default to bf16 (test_cuda checks that default).
os.environ.setdefault("POLYALIGN_DTYPE", "float32")


MODEL_FIXTURES = {"gemma_dir", "smollm_dir", "tiny_gemma", "tiny_llama"}


def pytest_collection_modifyitems(config, items):
    """The tiers hold by construction: a test that takes a model fixture must be marked slow
    (one that calls request.getfixturevalue is marked by hand)."""
    unmarked = [
        item.nodeid
        for item in items
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError("these tests load a model but are not marked slow: " + ", ".join(unmarked))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(
            f"benchmark data not found at {DATA}: put it at ../shared/data/multilingual-learner "
            "beside the checkout or set POLYALIGN_DATA"
        )
    return DATA


@pytest.fixture(scope="session")
def gemma_dir() -> Path:
    """The real gemma-3-270m as a local HF folder (converted once from the packaged GGUF)."""
    from polyalign.engine.model_paths import materialize_alias

    return materialize_alias("gemma-3-270m")


@pytest.fixture(scope="session")
def smollm_dir() -> Path:
    from polyalign.engine.model_paths import materialize_alias

    return materialize_alias("smollm2-135m")


@pytest.fixture(scope="session")
def gemma_tokenizer() -> Path:
    """Only the tokenizer of the packaged gemma-3-270m (no weights converted)."""
    return packaged_tokenizer("gemma-3-270m")


@pytest.fixture(scope="session")
def smollm_tokenizer() -> Path:
    return packaged_tokenizer("smollm2-135m")


def build_tiny(folder: Path, tokenizer_dir: Path, family: str) -> Path:
    """A seeded random model with a real tokenizer: mechanics only, seconds to run."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    # The packaged models' configs use len(tokenizer) and the tokenizer's special ids.
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if family == "gemma3":
        from transformers import Gemma3TextConfig

        # Tiny sliding window so that cached prefixes cross it: the hard case for KV reuse.
        config = Gemma3TextConfig(
            num_hidden_layers=3,
            sliding_window=16,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            **common,
        )
    else:
        from transformers import LlamaConfig

        config = LlamaConfig(num_hidden_layers=2, tie_word_embeddings=True, **common)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gemma(gemma_tokenizer, tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny_gemma"), gemma_tokenizer, "gemma3")


@pytest.fixture(scope="session")
def tiny_llama(smollm_tokenizer, tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny_llama"), smollm_tokenizer, "llama")
