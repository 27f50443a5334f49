"""Shared fixtures: the real benchmark path, packaged tokenizers, tiny random models."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Exact numerics on any machine: a GPU would otherwise default to bf16 (test_cuda checks that default).
os.environ.setdefault("POLYALIGN_DTYPE", "float32")
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("POLYALIGN_DATA", REPO.parent / "shared" / "data" / "multilingual-learner"))
PAPER_PACK = DATA / "prompts.json"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"benchmark data not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def gemma_dir() -> Path:
    """The real gemma-3-270m as a local HF folder (converted once from the packaged GGUF)."""
    from polyalign.models import materialize_alias

    return materialize_alias("gemma-3-270m")


@pytest.fixture(scope="session")
def smollm_dir() -> Path:
    from polyalign.models import materialize_alias

    return materialize_alias("smollm2-135m")


def build_tiny(folder: Path, tokenizer_dir: Path, family: str) -> Path:
    """A seeded random model with a real tokenizer: mechanics only, seconds to run."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    real = AutoConfig.from_pretrained(tokenizer_dir)
    common = dict(vocab_size=real.vocab_size, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=16, bos_token_id=real.bos_token_id,
                  eos_token_id=real.eos_token_id, pad_token_id=real.pad_token_id)
    if family == "gemma3":
        from transformers import Gemma3TextConfig

        # Tiny sliding window so that cached prefixes cross it: the hard case for KV reuse.
        config = Gemma3TextConfig(num_hidden_layers=3, sliding_window=16,
                                  layer_types=["sliding_attention", "sliding_attention", "full_attention"], **common)
    else:
        from transformers import LlamaConfig

        config = LlamaConfig(num_hidden_layers=2, tie_word_embeddings=True, **common)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gemma(gemma_dir, tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny_gemma"), gemma_dir, "gemma3")


@pytest.fixture(scope="session")
def tiny_llama(smollm_dir, tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny_llama"), smollm_dir, "llama")
