"""Layer-wise float32 re-scoring (polyalign.engine.float32_view) equals a separately loaded float32
model, item by item, from bf16 and from fp32 checkpoints, with a LoRA adapter applied too."""

import json
import math

import numpy as np
import pytest
import torch

from helpers import PAPER_PACK, random_lora
from polyalign.engine.checkpoint_tensors import CheckpointTensors
from polyalign.engine.float32_view import Float32View
from polyalign.engine.models import load_model
from polyalign.evaluation.evaluate import EvalConfig, run_eval

LANGS = "en,zh"


def bf16_checkpoint(model_dir, folder):
    """The same tiny model saved in bf16 (most 7B+ checkpoints): its float32 model is the upcast."""
    net, tok = load_model(str(model_dir), dtype="bfloat16")
    net.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def rows(out):
    found = {}
    for lang in LANGS.split(","):
        lines = (out / "samples" / f"emotion_{lang}.jsonl").read_text().splitlines()
        found[lang] = [{k: v for k, v in json.loads(line).items() if k != "fast"} for line in lines]
    return found


def evaluate(model_dir, data_dir, net, tok, out, rule, adapter=None, **verify):
    cfg = EvalConfig(
        model=str(model_dir),
        task="emotion",
        langs=LANGS,
        mode="english",
        scoring=rule,
        adapter=adapter,
        limit=4,
        data_dir=str(data_dir),
        prompts=str(PAPER_PACK),
        batch_size=3,
        allow_overlap=True,
        **verify,
    )
    return run_eval(cfg, net, tok, out, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize(("stored", "rule"), [("fp32", "prefix"), ("bf16", "exact")])
def test_rescoring_every_item_equals_a_float32_model(tiny_gemma, data_dir, tmp_path, stored, rule):
    folder = tiny_gemma if stored == "fp32" else bf16_checkpoint(tiny_gemma, tmp_path / "bf16")
    fast, tok = load_model(str(folder), dtype="bfloat16")
    full, _ = load_model(str(folder), dtype="float32")
    reference = evaluate(folder, data_dir, full, tok, tmp_path / "fp32", rule)
    bf16 = evaluate(folder, data_dir, fast, tok, tmp_path / "bf16run", rule, verify=False)
    verified = evaluate(folder, data_dir, fast, tok, tmp_path / "view", rule, verify_threshold=math.inf)
    assert rows(tmp_path / "view") == rows(tmp_path / "fp32")  # every item, every score, bit for bit
    assert rows(tmp_path / "bf16run") != rows(tmp_path / "fp32")  # bf16 alone does differ
    assert verified["verify"]["rescored"] == 8 and bf16["verify"] is None and reference["verify"] is None
    source = "checkpoint" if stored == "fp32" else "upcast"
    assert verified["verify"]["reference"]["exact"] and source in verified["verify"]["reference"]["sources"]
    assert next(fast.parameters()).dtype == torch.bfloat16  # the resident weights are back


@pytest.mark.slow
def test_applied_lora_adapter_rescored_like_its_float32_model(tiny_llama, data_dir, tmp_path):
    adapter = str(random_lora(tiny_llama, tmp_path / "lora"))
    fast, tok = load_model(str(tiny_llama), adapter, dtype="bfloat16")
    full, _ = load_model(str(tiny_llama), adapter, dtype="float32")
    evaluate(tiny_llama, data_dir, full, tok, tmp_path / "fp32", "exact", adapter)
    evaluate(tiny_llama, data_dir, fast, tok, tmp_path / "view", "exact", adapter, verify_threshold=math.inf)
    assert rows(tmp_path / "view") == rows(tmp_path / "fp32")


@pytest.mark.slow
def test_view_reads_only_embedding_rows_and_restores_on_error(tiny_gemma):
    fast, _ = load_model(str(tiny_gemma), dtype="bfloat16")
    full, _ = load_model(str(tiny_gemma), dtype="float32")
    ids = torch.tensor([[5, 9, 5, 300]])
    weights = {n: p for n, p in fast.named_parameters()}
    with torch.inference_mode(), Float32View(fast, tiny_gemma, head_chunk=1000) as view:
        assert torch.equal(fast(input_ids=ids).logits, full(input_ids=ids).logits)
        with pytest.raises(IndexError):
            fast(input_ids=torch.tensor([[10**7]]))
    assert view.describe()["exact"]
    assert all(p is weights[n] and p.dtype == torch.bfloat16 for n, p in fast.named_parameters())
    assert fast.model.embed_tokens.padding_idx == full.model.embed_tokens.padding_idx


def test_checkpoint_rows_read_in_float32(tmp_path):
    from safetensors.torch import save_file

    values = torch.arange(12, dtype=torch.float32).reshape(4, 3) / 7
    save_file({"a": values, "b": values.bfloat16()}, str(tmp_path / "model.safetensors"))
    tensors = CheckpointTensors(tmp_path)
    assert tensors.dtype("a") == torch.float32 and tensors.dtype("b") == torch.bfloat16
    assert torch.equal(tensors.read("a"), values) and torch.equal(tensors.read("b"), values.bfloat16().float())
    rows = torch.tensor([3, 1]).numpy()
    assert torch.equal(tensors.read("a", rows), values[[3, 1]]) and torch.equal(
        tensors.read("a", slice(1, 3)), values[1:3]
    )


def test_float32_checkpoint_tensors_are_used_where_mapped_and_copied_otherwise(tmp_path, monkeypatch):
    """A float32 tensor (or a range of its rows) is a view of the mapped file: writing to the file
    shows through it, where a copy would keep the old values; chosen rows are always a copy."""
    from safetensors.torch import save_file

    from polyalign.engine import checkpoint_tensors

    values = torch.arange(12, dtype=torch.float32).reshape(4, 3) / 7
    path = tmp_path / "model.safetensors"
    save_file({"a": values}, str(path))
    tensors = CheckpointTensors(tmp_path)
    whole, part, chosen = tensors.read("a"), tensors.read("a", slice(1, 3)), tensors.read("a", np.array([2]))
    monkeypatch.setattr(checkpoint_tensors, "ALIGN", 1 << 62)  # no offset qualifies: a copy
    copied = tensors.read("a")
    assert all(torch.equal(t, values) for t in (whole, copied))
    assert torch.equal(part, values[1:3]) and torch.equal(chosen, values[[2]])
    entry = tensors.entries["a"]
    with open(path, "r+b") as handle:  # the file's first float of row 2 becomes 100
        handle.seek(entry.offset + 6 * 4)
        handle.write(np.float32(100).tobytes())
    assert whole[2, 0] == 100 and part[1, 0] == 100  # the mapping itself
    assert copied[2, 0] == values[2, 0] and chosen[0, 0] == values[2, 0]  # copies made before the write


@pytest.mark.slow
def test_the_view_plans_batches_for_float32_compute_not_for_its_bf16_weights(tiny_gemma, monkeypatch):
    """On a native-bf16 CPU a bf16 scorer plans few large batches (512); the float32 re-scoring of a
    verified run computes in float32 through the view and plans with the view's own overhead."""
    from polyalign.engine import float32_view, scoring
    from polyalign.engine.scoring import Scorer
    from polyalign.evaluation.verify import Verifier

    monkeypatch.setattr(scoring, "cpu_has_native_bf16", lambda: True)
    model, tokenizer = load_model(str(tiny_gemma), device="cpu", dtype="bfloat16")
    verifier = Verifier("auto", "bfloat16", model, tokenizer, "prefix", 16, checkpoint=tiny_gemma)
    rescoring, _ = verifier._float32_scorer()
    assert Scorer(model, tokenizer).batch_overhead == 512
    assert rescoring.batch_overhead == float32_view.CPU_BATCH_OVERHEAD == 128
