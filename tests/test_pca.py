"""PCA, PC1 correlations and alignment against a direct numpy computation on tiny models."""

import argparse
import csv

import numpy as np
import pytest
import torch

from helpers import PCA_OUTPUTS, random_lora
from polyalign.analysis.analysis_spec import PcaSpec
from polyalign.analysis.pca import plot_from_dir, run_pca
from polyalign.cli import args as cli_args
from polyalign.core.errors import PolyalignError
from polyalign.core.prompts import PromptPack
from polyalign.engine.models import load_model
from polyalign.evaluation.evaluate import EvalConfig, prepare_language

LANGS = ["en", "de", "zh"]


def direct_states(model, tok, data_dir, layer, pooling, limit):
    """Per language [items, hidden]: one full forward per item, no cache, no padding."""
    out = {}
    for lang in LANGS:
        cfg = EvalConfig(model="m", task="emotion", langs=lang, limit=limit, data_dir=str(data_dir))
        prep = prepare_language(cfg, PromptPack.load(), tok, lang)
        rows = []
        for item in prep.items:
            seen = []  # the final layer = what the unembedding reads (hidden_states[-1] is normed or
            # not depending on the transformers version), caught by a hook on the output head
            hook = model.get_output_embeddings().register_forward_hook(
                lambda m, args, out, seen=seen: seen.append(args[0])
            )
            with torch.inference_mode():
                hs = model(torch.tensor([item.ids], device=model.device), output_hidden_states=True).hidden_states
            hook.remove()
            h = (seen[0] if layer == len(hs) - 1 else hs[layer])[0].double().cpu().numpy()
            rows.append({"mean": h[prep.shared :].mean(0), "all": h.mean(0), "last": h[-1]}[pooling])
        out[lang] = np.stack(rows)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("family,pooling", [("tiny_llama", "mean"), ("tiny_gemma", "last"), ("tiny_gemma", "all")])
def test_projections_correlations_alignment_equal_numpy(family, pooling, request, data_dir, tmp_path):
    model, tok = load_model(str(request.getfixturevalue(family)))
    out = tmp_path / "p"
    meta = run_pca(model, tok, PcaSpec("emotion", LANGS, [1, "last"], pooling, 4), out, data_dir, batch_size=3)
    total = meta["num_layers"]
    assert meta["layers"] == [1, total] and meta["n_items"] == 4
    z = np.load(out / "pca_base.npz", allow_pickle=False)
    assert list(z["langs"]) == LANGS and z["proj"].shape == (2, 3, 4, 2)
    with (out / "pca_correlations.csv").open() as handle:
        table = {(r["layer"], r["lang_a"], r["lang_b"]): float(r["pearson_r"]) for r in csv.DictReader(handle)}
    for k, layer in enumerate([1, total]):
        states = direct_states(model, tok, data_dir, layer, pooling, 4)
        x = np.concatenate([states[lang] for lang in LANGS])
        xc = x - x.mean(0)
        _, s, vt = np.linalg.svd(xc, full_matrices=False)
        want = (xc @ vt[:2].T).reshape(3, 4, 2)
        got = z["proj"][k]
        for c in range(2):  # a component's sign is arbitrary
            sign = np.sign((want[..., c] * got[..., c]).sum())
            assert np.allclose(got[..., c], sign * want[..., c], atol=1e-4 * np.abs(want).max())
        assert np.allclose(z["explained"][k], (s**2)[:2] / (s**2).sum(), atol=1e-5)
        for a, la in enumerate(LANGS):
            for b, lb in enumerate(LANGS):
                r = np.corrcoef(want[a, :, 0], want[b, :, 0])[0, 1]
                assert z["pc1_corr"][k, a, b] == pytest.approx(r, abs=1e-4)
                if a < b:
                    assert table[(str(layer), la, lb)] == pytest.approx(r, abs=1e-4)
        en = states["en"] / np.linalg.norm(states["en"], axis=1, keepdims=True)
        for j, lang in enumerate(z["alignment_langs"]):
            xs = states[str(lang)] / np.linalg.norm(states[str(lang)], axis=1, keepdims=True)
            assert z["alignment"][k, j] == pytest.approx(((xs @ en.T).argmax(1) == np.arange(4)).mean())
    assert list(z["alignment_langs"]) == ["de", "zh"]
    for name in PCA_OUTPUTS:
        assert (out / name).stat().st_size > 0
    (out / "pca_scatter.pdf").unlink()
    plot_from_dir(out)
    assert (out / "pca_scatter.pdf").exists()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["tiny_gemma", "tiny_llama"])
def test_pooling_all_is_the_mean_over_every_prompt_position(family, request, data_dir):
    """'all' (the paper's notebook) = mean of a plain forward's hidden states over BOS, few-shot block and item;
    it differs from 'mean' (item tokens only)."""
    from polyalign.analysis.states import collect_states

    model, tok = load_model(str(request.getfixturevalue(family)))
    cfg = EvalConfig(model="m", task="emotion", langs="de", mode="native", limit=5, data_dir=str(data_dir))
    prep = prepare_language(cfg, PromptPack.load(), tok, "de")
    assert prep.shared > 0  # the few-shot block (and Gemma's BOS) is in the pool
    layers = [layer for layer in (1, 2) if layer < model.config.num_hidden_layers]  # raw block outputs
    got = {}
    for pooling in ("all", "mean"):
        for indices, states in collect_states(model, tok, prep.items, prep.shared, layers, pooling, batch_size=2):
            for i, index in enumerate(indices):
                got[pooling, index] = states[:, i].double().cpu().numpy()
    for item in prep.items:
        with torch.inference_mode():
            hs = model(torch.tensor([item.ids], device=model.device), output_hidden_states=True).hidden_states
        want = np.stack([hs[layer][0].double().cpu().numpy().mean(0) for layer in layers])
        assert np.allclose(got["all", item.index], want, atol=1e-5)
        assert not np.allclose(got["mean", item.index], want, atol=1e-3)


@pytest.mark.slow
def test_two_models_side_by_side_and_pivot_added(tiny_llama, data_dir, tmp_path):
    model, tok = load_model(str(tiny_llama))
    adapted, _ = load_model(str(tiny_llama), adapter=str(random_lora(tiny_llama, tmp_path / "lora")))
    out = tmp_path / "two"
    spec = PcaSpec("emotion", ["de", "fr"], ["last"], "mean", 3)
    meta = run_pca(model, tok, spec, out, data_dir, compare=[("aligned lora", adapted)])
    assert meta["files"] == {"base": "pca_base.npz", "aligned lora": "pca_aligned_lora.npz"}
    z = np.load(out / "pca_aligned_lora.npz")
    assert list(z["langs"]) == ["de", "fr"] and list(z["alignment_langs"]) == ["de", "fr"]  # en read, not plotted
    base = np.load(out / "pca_base.npz")
    assert not np.allclose(base["proj"], z["proj"])  # each model is projected from its own states
    md = (out / "pca_correlations.md").read_text()
    assert "## base, layer 2" in md and "## aligned lora, layer 2" in md


@pytest.mark.slow
def test_bad_inputs(tiny_llama, data_dir, tmp_path):
    model, tok = load_model(str(tiny_llama))

    def run(langs="en,de", layers=("last",), pooling="mean", limit=3):
        return run_pca(
            model, tok, PcaSpec("emotion", langs.split(","), list(layers), pooling, limit), tmp_path / "b", data_dir
        )

    for layers in ([99], [0], [1, 3]):
        with pytest.raises(PolyalignError, match="out of range"):
            run(layers=layers)
    with pytest.raises(PolyalignError, match="unknown pooling 'max'"):
        run(pooling="max")
    with pytest.raises(PolyalignError, match="at least 3"):
        run(limit=2)
    with pytest.raises(PolyalignError, match="unknown language 'xx'"):
        run(langs="en,xx")
    with pytest.raises(PolyalignError, match="model labels must differ"):
        run_pca(model, tok, PcaSpec("emotion", ["en"], limit=3), tmp_path / "b", data_dir, compare=[("base", model)])
    assert not (tmp_path / "b").exists()
    parser = argparse.ArgumentParser()
    cli_args.add_analysis_cli(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["pca", "--task", "emotion", "--langs", "en", "--out", "x", "--pooling", "max"])
    args = parser.parse_args(
        [
            "pca",
            "--model",
            str(tiny_llama),
            "--task",
            "emotion",
            "--langs",
            "en,de",
            "--limit",
            "3",
            "--layers",
            "1,last",
            "--out",
            str(tmp_path / "cli"),
            "--data-dir",
            str(data_dir),
        ]
    )
    assert args.func(args) == 0 and (tmp_path / "cli" / "pca_alignment.csv").exists()
