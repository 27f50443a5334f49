"""The GPU paths: scoring, evaluation, training and the lens on CUDA agree with the CPU.

Skipped where no CUDA device is present (CI has none); run on a GPU machine with
`python -m pytest tests/test_cuda.py`.
"""

import json

import pytest
import torch

from helpers import WORDS, cfg_for, make_items, tiny_training
from polyalign.alignment.alignment_data import PairRequest, build_pairs, write_pairs
from polyalign.alignment.train_config import load_config
from polyalign.alignment.training import train
from polyalign.core.prompts import PromptPack
from polyalign.engine.models import load_model
from polyalign.engine.scoring import Scorer, prefix_token_ids
from polyalign.engine.unembed import Unembed, num_layers
from polyalign.evaluation.evaluate import run_eval

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.mark.parametrize("family", ["tiny_gemma", "tiny_llama"])
@pytest.mark.parametrize("rule", ["exact", "prefix"])
def test_cuda_scores_equal_cpu_scores(family, rule, request):
    folder = str(request.getfixturevalue(family))
    got = {}
    for device in ("cpu", "cuda"):
        model, tokenizer = load_model(folder, device=device, dtype="float32")
        items, shared = make_items(tokenizer, WORDS)
        sets = {c: prefix_token_ids(tokenizer, w) for c, w in WORDS.items()} if rule == "prefix" else None
        got[device] = Scorer(model, tokenizer).score(items, shared, rule, sets, batch_size=4)
    for i, scores in got["cpu"].items():
        for cls, value in scores.items():
            assert got["cuda"][i][cls] == pytest.approx(value, abs=1e-4, rel=1e-4)


def test_cuda_bfloat16_is_the_default_and_close_to_float32(tiny_gemma, monkeypatch):
    monkeypatch.delenv("POLYALIGN_DTYPE")
    model, tokenizer = load_model(str(tiny_gemma), device="cuda")
    assert model.dtype == torch.bfloat16  # pick_dtype's GPU default
    items, shared = make_items(tokenizer, WORDS)
    low = Scorer(model, tokenizer).score(items, shared, "exact", None, batch_size=16)
    model32, _ = load_model(str(tiny_gemma), device="cuda", dtype="float32")
    exact = Scorer(model32, tokenizer).score(items, shared, "exact", None, batch_size=16)
    for i in exact:
        for cls in WORDS:
            assert abs(low[i][cls] - exact[i][cls]) < 0.1  # bf16 weights: close, not exact


def test_cuda_eval_matches_cpu_eval(tiny_gemma, data_dir, tmp_path):
    samples = {}
    for device in ("cpu", "cuda"):
        model, tok = load_model(str(tiny_gemma), device=device, dtype="float32")
        cfg = cfg_for(tiny_gemma, data_dir, langs="en,zh,sw", limit=8, prompts=None)
        run_eval(cfg, model, tok, tmp_path / device, progress=False)
        samples[device] = [
            json.loads(line)
            for lang in ("en", "zh", "sw")
            for line in (tmp_path / device / "samples" / f"snli_{lang}.jsonl").read_text().splitlines()
        ]
    assert [r["pred"] for r in samples["cpu"]] == [r["pred"] for r in samples["cuda"]]
    for a, b in zip(samples["cpu"], samples["cuda"]):
        assert all(abs(a["scores"][c] - b["scores"][c]) < 1e-4 for c in a["scores"])


def test_cuda_training_in_bf16_gives_a_usable_adapter(tiny_llama, data_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(build_pairs(PairRequest("snli", ["zh", "es"], "en", 8, 0, data_dir, PromptPack.load())), pairs)
    cfg = load_config(None, tiny_training(4, 4, "1e-3"))
    summary = train(str(tiny_llama), pairs, tmp_path / "run", cfg)
    assert summary["bf16"] is True and summary["global_step"] == 4
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert len(losses) == 4 and all(loss == loss and loss > 0 for loss in losses)  # finite, positive
    model, tokenizer = load_model(str(tiny_llama), adapter=str(tmp_path / "run" / "adapter"), device="cuda")
    items, shared = make_items(tokenizer, WORDS)
    scores = Scorer(model, tokenizer).score(items, shared, "exact", None, batch_size=8)
    assert len(scores) == len(items) and all(v == v for s in scores.values() for v in s.values())


def test_cuda_last_layer_lens_is_the_models_distribution(tiny_gemma):
    model, tokenizer = load_model(str(tiny_gemma), device="cuda", dtype="float32")
    ids = tokenizer('Premise: a cat\nAnswer: "', return_tensors="pt").to("cuda")
    with torch.inference_mode():
        out = model(**ids, output_hidden_states=True)
        last = num_layers(model)
        lens = Unembed(model).log_probs(out.hidden_states[last][None, 0, -1:], [last])
    torch.testing.assert_close(lens[0], out.logits[0, -1].float().log_softmax(-1), atol=1e-4, rtol=0)
