"""The logit lens against naive full forwards on tiny random models and real benchmark items."""

import argparse
import csv
import json
import math

import pytest
import torch

from helpers import PCA_OUTPUTS, random_lora
from polyalign.analysis import lens
from polyalign.analysis.analysis_spec import LensSpec
from polyalign.analysis.lens import QUANTITIES, plot_from_dir, run_lens
from polyalign.analysis.states import collect_states
from polyalign.cli import args as cli_args
from polyalign.core.errors import PolyalignError
from polyalign.core.prompts import PromptPack
from polyalign.core.tasks import load_task, load_test_records
from polyalign.engine.models import load_model
from polyalign.engine.scoring import prefix_token_ids
from polyalign.engine.unembed import Unembed, num_layers


def load_lens_model(model_dir, adapter=None):
    """A tiny model whose final norm has random weights: freshly initialized RMSNorms are
    idempotent, so without this a norm applied twice to the last layer would go unnoticed."""
    model, tok = load_model(str(model_dir), adapter=adapter)
    torch.manual_seed(2)
    with torch.no_grad():
        model.get_decoder().norm.weight.normal_(0.0, 0.5)
    return model, tok


def lens_run(model_dir, data_dir, out, langs="es,zh", **kw):
    model, tok = load_lens_model(model_dir)
    spec = LensSpec("emotion", langs.split(","), "native", 3, kw.pop("layers", None))
    meta = run_lens(model, tok, spec, out, data_dir, batch_size=2, **kw)
    rows = [json.loads(line) for line in (out / "lens_items.jsonl").read_text().splitlines()]
    return model, tok, meta, rows


@pytest.fixture(scope="module")
def gemma_lens(tiny_gemma, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lens")
    model, tok = load_lens_model(tiny_gemma)
    # A really different model to compare: the same base (and final norm) with a random LoRA adapter.
    adapted, _ = load_lens_model(tiny_gemma, adapter=str(random_lora(tiny_gemma, tmp_path_factory.mktemp("lora"))))
    spec = LensSpec("emotion", ["es", "zh"], "native", 3)
    meta = run_lens(model, tok, spec, out, data_dir, batch_size=2, compare=[("adapter", adapted)])
    rows = [json.loads(line) for line in (out / "lens_items.jsonl").read_text().splitlines()]
    return model, adapted, tok, meta, rows, out


def naive_last(model, ids):
    """Next-token distribution and hidden states from one full forward, no cache, no padding."""
    ids = torch.tensor([ids], device=model.device)
    with torch.inference_mode():
        out = model(ids, output_hidden_states=True)
    return out.logits[0, -1].float().softmax(-1), [h[0, -1] for h in out.hidden_states]


def check_last_layer(model, tok, rows, data_dir, langs, name="base", n_items=3):
    task, pack = load_task("emotion"), PromptPack.load()
    for lang in langs:
        records = load_test_records(task, lang, data_dir)
        native, english = pack.label_words(task, lang, "native"), pack.label_words(task, lang, "english")
        mine = [r for r in rows if r["lang"] == lang and r["model"] == name]
        assert len(mine) == n_items, (lang, name, len(mine))  # never passes on zero rows
        for row in mine:
            probs, _ = naive_last(model, tok(pack.render(task, lang, "native", records[row["index"]]))["input_ids"])
            nsets = {c: prefix_token_ids(tok, w) for c, w in native.items()}
            esets = {c: prefix_token_ids(tok, w) for c, w in english.items()}
            want = {
                "p_input_answer": probs[nsets[row["gold"]]].sum(),
                "p_en_answer": probs[esets[row["gold"]]].sum(),
                "p_shared_answer": probs[sorted(set(nsets[row["gold"]]) & set(esets[row["gold"]]))].sum(),
                "p_input_labels": probs[sorted(set().union(*map(set, nsets.values())))].sum(),
                "p_en_labels": probs[sorted(set().union(*map(set, esets.values())))].sum(),
                "entropy_bits": -(probs * probs.clamp_min(1e-30).log()).sum() / math.log(2),
            }
            for q in QUANTITIES:
                assert row[q][-1] == pytest.approx(float(want[q]), abs=1e-5, rel=1e-5), (lang, row["index"], q)


@pytest.mark.slow
def test_last_layer_is_the_models_own_distribution_gemma(gemma_lens, data_dir):
    model, adapted, tok, meta, rows, _ = gemma_lens
    assert meta["layers"] == [1, 2, 3]
    check_last_layer(model, tok, rows, data_dir, ["es", "zh"])
    check_last_layer(adapted, tok, rows, data_dir, ["es", "zh"], name="adapter")
    by_model = {name: [r["p_input_answer"] for r in rows if r["model"] == name] for name in ("base", "adapter")}
    assert all(a != b for a, b in zip(by_model["base"], by_model["adapter"]))  # the adapter is really applied


@pytest.mark.slow
def test_last_layer_is_the_models_own_distribution_llama(tiny_llama, data_dir, tmp_path):
    model, tok, meta, rows = lens_run(tiny_llama, data_dir, tmp_path / "l", langs="ja")
    check_last_layer(model, tok, rows, data_dir, ["ja"])


@pytest.mark.slow
@pytest.mark.parametrize("family", ["tiny_gemma", "tiny_llama"])
def test_lens_distribution_per_layer_equals_naive_forward(family, request, data_dir):
    """Full vocabulary, through the production path (`Unembed.log_probs` on all layers at once):
    last layer = softmax(logits); others = head(final_norm(h_k)), normed once."""
    model, tok = load_lens_model(request.getfixturevalue(family))
    from polyalign.evaluation.evaluate import EvalConfig, prepare_language

    cfg = EvalConfig(model="m", task="emotion", langs="de", mode="native", limit=3, data_dir=str(data_dir))
    prep = prepare_language(cfg, PromptPack.load(), tok, "de")
    total = num_layers(model)
    layers = list(range(1, total + 1))
    unembed = Unembed(model)
    head, norm = model.get_output_embeddings(), model.get_decoder().norm
    cap = getattr(model.config, "final_logit_softcapping", None)
    checked = 0
    for indices, states in collect_states(model, tok, prep.items, prep.shared, layers, "last", batch_size=2):
        logp = unembed.log_probs(states, layers).view(len(layers), len(indices), -1)
        for b, index in enumerate(indices):
            probs, hidden = naive_last(model, prep.items[index].ids)
            # Probabilities of a random tiny model are ~1/vocabulary, so log-probabilities are
            # compared too: atol 1e-5 on probabilities alone would miss a norm applied twice.
            got = logp[-1, b]
            assert torch.allclose(got.exp(), probs, atol=1e-5) and torch.allclose(got, probs.log(), atol=1e-4)
            for k in range(1, total):
                with torch.inference_mode():
                    logits = head(norm(hidden[k])).float()
                    want = (torch.tanh(logits / cap) * cap if cap else logits).log_softmax(-1)
                got = logp[k - 1, b]
                assert torch.allclose(got.exp(), want.exp(), atol=1e-5) and torch.allclose(got, want, atol=1e-4)
            checked += 1
    assert checked == 3


def plain_forward_quantities(model, ids, sets, gold, n_classes, layers):
    """The lens's quantities for one item from a plain full forward (no cache, no padding), in float64."""
    with torch.inference_mode():
        out = model(torch.tensor([ids], device=model.device), output_hidden_states=True)
        head, norm = model.get_output_embeddings(), model.get_decoder().norm
        cap = getattr(model.config, "final_logit_softcapping", None)
        values = {q: [] for q in QUANTITIES}
        for layer in layers:
            if layer == num_layers(model):
                logits = out.logits[0, -1].double()
            else:
                logits = head(norm(out.hidden_states[layer][0, -1])).double()
                logits = torch.tanh(logits / cap) * cap if cap else logits
            logp = logits.log_softmax(-1)
            p = logp.exp()
            mass = [float(p[s].sum()) for s in sets]
            picked = [mass[gold], mass[n_classes + gold], mass[2 * n_classes + gold], mass[-2], mass[-1]]
            for q, v in zip(QUANTITIES, picked + [float(-(p * logp).sum() / math.log(2))]):
                values[q].append(v)
    return values


@pytest.mark.slow
@pytest.mark.parametrize(
    "family,cap,head", [("tiny_gemma", None, "plain"), ("tiny_gemma", 2.0, "plain"), ("tiny_llama", None, "other")]
)
def test_lens_quantities_equal_plain_forward_per_item(family, cap, head, request, data_dir, monkeypatch):
    """Every item, layer and quantity of the batched lens (planned forward batches of several lengths,
    answer-position hooks, unembedding chunks that cut across batches, vocabulary blocks) = one plain
    forward per item; with a soft-cap, and with a head that is not a plain Linear (run whole)."""
    from polyalign.analysis import lens_readout
    from polyalign.evaluation.evaluate import EvalConfig

    model, tok = load_lens_model(request.getfixturevalue(family))
    if cap:
        model.config.final_logit_softcapping = cap  # read by Unembed and by the model's own forward
    if head == "other":

        class OtherHead(torch.nn.Linear):
            pass

        model.lm_head = OtherHead(model.config.hidden_size, model.config.vocab_size, bias=False)
        model.lm_head.weight = model.get_input_embeddings().weight
    monkeypatch.setattr(lens_readout, "CHUNK_ROWS", 2 * num_layers(model) + 1)  # 2 items per chunk
    cfg = EvalConfig(model="m", task="emotion", langs="de", mode="native", limit=9, data_dir=str(data_dir))
    lang = lens.prepare_lens_language(cfg, PromptPack.load(), load_task("emotion"), tok, "de")
    layers = list(range(1, num_layers(model) + 1))
    hooks = [dict(block._forward_hooks) for block in model.get_decoder().layers]
    got = lens.lens_language(model, tok, lang, layers, batch_size=4)
    assert [dict(block._forward_hooks) for block in model.get_decoder().layers] == hooks  # ours are removed
    assert sorted(got) == [it.index for it in lang.prep.items] and len(got) == 9
    assert len({len(it.ids) for it in lang.prep.items}) > 3  # lengths differ: batches carry padding
    n_classes = lang.sets.n_classes
    for item, gold in zip(lang.prep.items, lang.gold_index):
        want = plain_forward_quantities(model, item.ids, lang.sets.columns, gold, n_classes, layers)
        for q in QUANTITIES:
            assert got[item.index][q] == pytest.approx(want[q], rel=1e-5, abs=1e-9), (item.index, q)


def test_rechunk_regroups_batches_in_order():
    from polyalign.analysis.lens_readout import rechunk

    batches = [
        ([0, 1, 2], torch.arange(6.0).view(2, 3, 1)),
        ([3], torch.full((2, 1, 1), 9.0)),
        ([4, 5], torch.ones(2, 2, 1)),
    ]
    chunks = list(rechunk(batches, 2))
    assert [c[0] for c in chunks] == [[0, 1], [2, 3], [4, 5]]
    assert torch.equal(torch.cat([c[1] for c in chunks], 1), torch.cat([b[1] for b in batches], 1))
    assert [c[0] for c in rechunk(batches, 4)] == [[0, 1, 2, 3], [4, 5]]


@pytest.mark.slow
def test_outputs_overlap_and_compare(gemma_lens):
    _, _, tok, meta, rows, out = gemma_lens
    es = meta["languages"]["es"]
    # 'positivo' and 'positive' share prefix tokens: items are kept and the overlap is reported.
    assert es["n_items"] == 3 and len([r for r in rows if r["lang"] == "es" and r["model"] == "base"]) == 3
    assert es["overlap"]["count"] == len(es["overlap"]["tokens"]) > 0
    assert "\u2581positiv" in es["overlap"]["per_class"]["positive"]
    assert meta["languages"]["zh"]["n_items"] == 3
    for row in rows:
        assert all(not math.isnan(v) for q in QUANTITIES for v in row[q])
        assert all(
            row["p_shared_answer"][k] <= min(row["p_input_answer"][k], row["p_en_answer"][k]) + 1e-7 for k in range(3)
        )
        assert all(row["p_input_answer"][k] <= row["p_input_labels"][k] + 1e-7 for k in range(3))
    with (out / "lens_es.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [(r["model"], r["layer"]) for r in table] == [(m, str(k)) for m in ("base", "adapter") for k in (1, 2, 3)]
    for r in table:
        for q in QUANTITIES:
            assert float(r[f"{q}_ci_lo"]) <= float(r[f"{q}_mean"]) <= float(r[f"{q}_ci_hi"])
    for name in ("lens.json", "lens.png", "lens.pdf", "lens_zh.csv"):
        assert (out / name).stat().st_size > 0
    (out / "lens.png").unlink()
    plot_from_dir(out)
    assert (out / "lens.png").exists()


@pytest.mark.slow
def test_layer_subset(tiny_llama, data_dir, tmp_path):
    _, _, meta, rows = lens_run(tiny_llama, data_dir, tmp_path / "s", langs="fr", layers=["last", 1])
    assert meta["layers"] == [1, 2] and all(r["layers"] == [1, 2] for r in rows)


@pytest.mark.slow
def test_bad_inputs(tiny_llama, data_dir, tmp_path, monkeypatch):
    model, tok = load_model(str(tiny_llama))

    def run(langs="de", limit=3, data=data_dir, layers=None, **kw):
        spec = LensSpec("emotion", langs.split(","), "native", limit, layers)
        return run_lens(model, tok, spec, tmp_path / "bad", data, **kw)

    for layers in ([0], [3], [1, 99]):
        with pytest.raises(PolyalignError, match="out of range"):
            run(layers=layers)
    with pytest.raises(PolyalignError, match="at least 3"):
        run(limit=2)
    with pytest.raises(PolyalignError, match="unknown language 'xx'"):
        run(langs="de,xx")
    few = tmp_path / "few" / "ap_emotion"
    few.mkdir(parents=True)
    for lang in ("en", "de"):
        records = json.loads((data_dir / "ap_emotion" / f"emotion_{lang}500_test.json").read_text())
        (few / f"emotion_{lang}500_test.json").write_text(json.dumps(records[:2]))
    with pytest.raises(PolyalignError, match="2 items; the lens needs at least 3"):
        run(limit=None, data=few.parent)
    with pytest.raises(PolyalignError, match="no emotion test file for language 'fr'"):
        run(langs="de,fr", data=few.parent)
    real = lens.prefix_token_ids
    monkeypatch.setattr(lens, "prefix_token_ids", lambda t, w: [] if w == "positiv" else real(t, w))
    with pytest.raises(PolyalignError, match="label 'positiv' has no prefix tokens"):
        run()
    assert not (tmp_path / "bad").exists()  # every check runs before any file is written


@pytest.mark.slow
def test_cli_with_compare_adapter(tiny_llama, data_dir, tmp_path):
    random_lora(tiny_llama, tmp_path / "aligned")
    parser = argparse.ArgumentParser()
    cli_args.add_analysis_cli(parser.add_subparsers())
    args = parser.parse_args(
        [
            "lens",
            "--model",
            str(tiny_llama),
            "--compare-adapter",
            str(tmp_path / "aligned"),
            "--task",
            "emotion",
            "--langs",
            "en,ru",
            "--limit",
            "3",
            "--out",
            str(tmp_path / "o"),
            "--data-dir",
            str(data_dir),
            "--layers",
            "1,last",
        ]
    )
    assert args.func(args) == 0
    meta = json.loads((tmp_path / "o" / "lens.json").read_text())
    assert meta["models"] == ["base", "aligned"] and meta["layers"] == [1, 2]
    rows = [json.loads(line) for line in (tmp_path / "o" / "lens_items.jsonl").read_text().splitlines()]
    base_en = [r["p_en_answer"] for r in rows if r["model"] == "base" and r["lang"] == "en"]
    lora_en = [r["p_en_answer"] for r in rows if r["model"] == "aligned" and r["lang"] == "en"]
    assert base_en != lora_en  # the adapter is really applied
    en = meta["languages"]["en"]["overlap"]
    assert en["count"] == len(set(sum(meta["languages"]["en"]["tokens_en"].values(), [])))
    args = parser.parse_args(
        [
            "lens",
            "--model",
            str(tiny_llama),
            "--task",
            "emotion",
            "--langs",
            "en",
            "--limit",
            "3",
            "--out",
            str(tmp_path / "p"),
            "--layers",
            "2,x",
        ]
    )
    with pytest.raises(PolyalignError, match="'x' is not a layer"):
        args.func(args)


@pytest.mark.slow
def test_real_gemma_lens_and_pca_commands(gemma_dir, data_dir, tmp_path):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli_args.add_analysis_cli(sub)
    common = [
        "--model",
        str(gemma_dir),
        "--task",
        "emotion",
        "--langs",
        "en,es",
        "--limit",
        "3",
        "--data-dir",
        str(data_dir),
    ]
    args = parser.parse_args(["lens", *common, "--out", str(tmp_path / "lens")])
    assert args.func(args) == 0
    args = parser.parse_args(
        ["pca", *common, "--layers", "6,12,last", "--pooling", "mean", "--out", str(tmp_path / "pca")]
    )
    assert args.func(args) == 0
    for name in ("lens.json", "lens_items.jsonl", "lens_en.csv", "lens_es.csv", "lens.png", "lens.pdf"):
        assert (tmp_path / "lens" / name).stat().st_size > 0, name
    for name in ("pca_base.npz", "pca_correlations.csv", *PCA_OUTPUTS):
        assert (tmp_path / "pca" / name).stat().st_size > 0, name
    meta = json.loads((tmp_path / "lens" / "lens.json").read_text())
    assert meta["num_layers"] == 18 and len(meta["layers"]) == 18
    assert meta["languages"]["es"]["overlap"]["count"] > 0
