"""`polyalign lens`: the logit lens at the answer position, per layer and language.

Why: the paper reads every layer's residual stream through the model's own final norm and
unembedding to see when the answer appears and in which language (a latent English answer
before the input-language one). Only the answer position (the last prompt token) is ever
unembedded: memory is batch x vocabulary per layer, never layers x positions x vocabulary.

Files written to the output folder:
  lens_items.jsonl  per model, language and item, every quantity at every layer (source of truth)
  lens_{lang}.csv   per model and layer: mean and 95% interval of each quantity
  lens.json         configuration, label words, token sets and their overlaps per language
  lens.png/.pdf     the figure; `plot_from_dir` redraws it from the two files above
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from polyalign.errors import PolyalignError
from polyalign.evaluate import EvalConfig, PreparedLanguage, check_config, prepare_language
from polyalign.models import DTYPES
from polyalign.prompts import PromptPack
from polyalign.results import atomic_write_json, atomic_write_text
from polyalign.scoring import _parts, prefix_token_ids, unembed
from polyalign.states import collect_states, num_layers  # noqa: F401 (re-exported)
from polyalign.tasks import TaskSpec

QUANTITIES = ("p_input_answer", "p_en_answer", "p_shared_answer", "p_input_labels", "p_en_labels", "entropy_bits")
MIN_ITEMS = 3
Z95 = 1.959964


def check_layers(layers: list[int | str] | None, total: int) -> list[int]:
    """1-based block outputs ('last' = `total`, the model's final, normed output), sorted."""
    if layers is None:
        return list(range(1, total + 1))
    layers = [total if layer == "last" else layer for layer in layers]
    bad = [layer for layer in layers if not (isinstance(layer, int) and 1 <= layer <= total)]
    if bad or not layers:
        raise PolyalignError(f"layer {bad[0] if bad else '(none)'} out of range: the model has {total} layers "
                             f"(use 1..{total} or 'last')")
    return sorted(set(layers))


def final_norm(decoder) -> torch.nn.Module:
    """The decoder's own final norm: the lens must read layers the way the last layer is read."""
    for name in ("norm", "final_layernorm", "ln_f", "final_layer_norm"):
        module = getattr(decoder, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise PolyalignError(f"{type(decoder).__name__}: no final norm found; the logit lens needs one")


@torch.inference_mode()
def lens_logprobs(model, hidden: torch.Tensor, layer: int) -> torch.Tensor:
    """fp32 log-probabilities read from one layer's states [batch, hidden].

    Intermediate layers go through the model's final norm; the last layer is already normed
    and must not be normed twice.
    """
    decoder, head, cap = _parts(model)
    if layer != num_layers(model):
        hidden = final_norm(decoder)(hidden)
    return unembed(head, cap, hidden).log_softmax(-1)


@torch.inference_mode()
def lens_logprobs_layers(model, states: torch.Tensor, layers: list[int]) -> torch.Tensor:
    """`lens_logprobs` for states [layers, batch, hidden] at once, flattened to [layers * batch, vocab]."""
    decoder, head, cap = _parts(model)
    total, norm = num_layers(model), final_norm(decoder)
    normed = torch.stack([h if layer == total else norm(h) for h, layer in zip(states, layers)])
    return unembed(head, cap, normed.flatten(0, 1)).log_softmax(-1)


@dataclass
class LensLanguage:
    """One language's items plus the token sets the lens sums over."""

    prep: PreparedLanguage
    gold_index: list[int]
    sets: list[list[int]]  # per class native, per class English, per class both; native union, English union
    info: dict


def prepare_lens_language(cfg: EvalConfig, pack: PromptPack, task: TaskSpec, tokenizer, lang: str) -> LensLanguage:
    """Items, native and English answer token sets (the paper's prefix rule) and their overlap."""
    prep = prepare_language(cfg, pack, tokenizer, lang)
    if len(prep.items) < MIN_ITEMS:
        raise PolyalignError(f"{task.name}/{lang}: {len(prep.items)} items; the lens needs at least {MIN_ITEMS}")
    native = pack.label_words(task, lang, "native")
    english = pack.label_words(task, lang, "english")
    nsets = {c: set(prefix_token_ids(tokenizer, w)) for c, w in native.items()}
    esets = {c: set(prefix_token_ids(tokenizer, w)) for c, w in english.items()}
    for kind, words, sets in (("input-language", native, nsets), ("English", english, esets)):
        empty = [c for c in task.classes if not sets[c]]
        if empty:
            raise PolyalignError(f"{task.name}/{lang}: {kind} label '{words[empty[0]]}' has no prefix tokens "
                                 f"in this tokenizer")
    classes = list(task.classes)
    shared = {c: nsets[c] & esets[c] for c in classes}
    nunion, eunion = set().union(*nsets.values()), set().union(*esets.values())
    overlap = sorted(nunion & eunion)
    sets = [nsets[c] for c in classes] + [esets[c] for c in classes] + [shared[c] for c in classes] + [nunion, eunion]

    def names(ids) -> list[str]:
        return tokenizer.convert_ids_to_tokens(sorted(ids))

    info = {"n_items": len(prep.items), "label_words_input": native, "label_words_en": english,
            "tokens_input": {c: names(nsets[c]) for c in classes}, "tokens_en": {c: names(esets[c]) for c in classes},
            "overlap": {"count": len(overlap), "tokens": names(overlap),
                        "per_class": {c: names(shared[c]) for c in classes}}}
    return LensLanguage(prep, [classes.index(g) for g in prep.golds], [sorted(s) for s in sets], info)


@torch.inference_mode()
def lens_language(model, tokenizer, lang: LensLanguage, layers: list[int], batch_size: int) -> dict[int, dict]:
    """Per item: every quantity at every chosen layer (lists aligned with `layers`)."""
    device = next(model.parameters()).device
    vocab = _parts(model)[1].weight.shape[0]
    if max(max(ids, default=0) for ids in lang.sets) >= vocab:
        raise PolyalignError(f"label token ids exceed the model's vocabulary ({vocab}); tokenizer and model differ")
    # One 0/1 column per token set: every mass is a single [batch, vocab] x [vocab, sets] product.
    columns = torch.zeros(vocab, len(lang.sets), device=device)
    for k, ids in enumerate(lang.sets):
        columns[ids, k] = 1.0
    n_classes = (len(lang.sets) - 2) // 3
    gold = torch.tensor(lang.gold_index, device=device)  # by position in prep.items, not benchmark index
    position = {item.index: i for i, item in enumerate(lang.prep.items)}
    results: dict[int, dict] = {}
    for indices, states in collect_states(model, tokenizer, lang.prep.items, lang.prep.shared, layers, "last",
                                          batch_size, desc=f"lens {lang.prep.lang}"):
        rows = torch.arange(len(indices), device=device)
        g = gold[torch.tensor([position[i] for i in indices], device=device)]
        # All layers of the batch in one unembedding matmul: the vocabulary matrix is read once.
        logp = lens_logprobs_layers(model, states, layers)  # [layers * batch, vocab]
        probs = logp.exp()
        mass = (probs @ columns).view(len(layers), len(indices), -1)
        entropy = (-torch.where(probs > 0, probs * logp, torch.zeros_like(probs)).sum(-1)
                   / math.log(2.0)).view(len(layers), len(indices))
        del logp, probs
        per_layer = [torch.stack([mass[k, rows, g], mass[k, rows, n_classes + g], mass[k, rows, 2 * n_classes + g],
                                  mass[k, :, -2], mass[k, :, -1], entropy[k]], -1) for k in range(len(layers))]
        values = torch.stack(per_layer, 1).cpu().double().numpy()  # [batch, layers, quantities]
        for i, index in enumerate(indices):
            results[index] = {q: [float(f"{v:.8g}") for v in values[i, :, j]] for j, q in enumerate(QUANTITIES)}
    return results


def mean_ci(values: np.ndarray, quantity: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over items and its 95% normal interval (clipped to the quantity's range)."""
    mean = values.mean(0)
    half = Z95 * values.std(0, ddof=1) / math.sqrt(len(values)) if len(values) > 1 else np.zeros_like(mean)
    upper = np.inf if quantity == "entropy_bits" else 1.0
    return mean, np.clip(mean - half, 0.0, upper), np.clip(mean + half, 0.0, upper)


def summarize_items(rows: list[dict]) -> tuple[dict, list[int]]:
    """summary[model][lang][quantity] = (mean, lo, hi) over items, from lens_items rows."""
    grouped: dict = {}
    layers: list[int] = []
    for row in rows:
        grouped.setdefault(row["model"], {}).setdefault(row["lang"], []).append(row)
        layers = row["layers"]
    summary = {m: {lang: {q: mean_ci(np.array([r[q] for r in items], dtype=float), q) for q in QUANTITIES}
                   for lang, items in by_lang.items()} for m, by_lang in grouped.items()}
    return summary, layers


def _csv_text(summary: dict, lang: str, layers: list[int]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "layer"] + [f"{q}_{s}" for q in QUANTITIES for s in ("mean", "ci_lo", "ci_hi")])
    for model, by_lang in summary.items():
        for k, layer in enumerate(layers):
            cells = [f"{by_lang[lang][q][s][k]:.8g}" for q in QUANTITIES for s in range(3)]
            writer.writerow([model, layer] + cells)
    return buffer.getvalue()


def plot_from_dir(out_dir: str | Path) -> list[Path]:
    """Redraw the figure from lens_items.jsonl and lens.json alone."""
    from polyalign.plotting import plot_lens

    out = Path(out_dir)
    meta = json.loads((out / "lens.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (out / "lens_items.jsonl").read_text(encoding="utf-8").splitlines() if line]
    summary, layers = summarize_items(rows)
    return plot_lens(summary, layers, meta["languages_order"], out / "lens",
                     title=f"logit lens: {meta['task']}, {meta['mode']} prompts")


def setup_analysis(what: str, models: list[tuple[str, object]], task: str, langs, mode: str, limit: int | None,
                   data_dir, prompts, layers, batch_size: int, items: str | None = None) -> tuple:
    """Checks shared by the lens and PCA: distinct labels, enough items, same depth, valid layers.

    Returns (eval config, task spec, pack, language codes, number of layers, chosen layers).
    """
    names = [re.sub(r"[^A-Za-z0-9_.-]+", "_", m[0]) for m in models]
    if len(set(names)) != len(models):
        raise PolyalignError(f"model labels must differ ({', '.join(m[0] for m in models)})")
    if limit is not None and limit < MIN_ITEMS:
        raise PolyalignError(f"--limit {limit}: {what} needs at least {MIN_ITEMS} items per language")
    cfg = EvalConfig(model=models[0][0], task=task, langs=langs, mode=mode, scoring="exact", limit=limit, items=items,
                     data_dir=str(data_dir) if data_dir else None, prompts=str(prompts) if prompts else None,
                     batch_size=batch_size)
    spec, pack, codes = check_config(cfg)
    total = num_layers(models[0][1])
    if any(num_layers(m) != total for _, m in models):
        raise PolyalignError("compared models have different numbers of layers")
    return cfg, spec, pack, codes, total, check_layers(layers, total)


def run_lens(model, tokenizer, task: str, langs: str | list[str], mode: str, limit: int | None,
             data_dir: str | Path | None, prompts: str | Path | None, out_dir: str | Path, label: str = "base",
             compare: list[tuple[str, object]] | None = None, layers: list[int | str] | None = None,
             batch_size: int = 8, items: str | None = None) -> dict:
    """Run the lens for `model` and every (label, model) in `compare`; returns lens.json's content.

    Compared models must share `tokenizer` (e.g. a base model and the same model with a LoRA
    adapter loaded separately: PEFT wraps a model in place). Everything is checked before the
    first forward, and files are written only at the end.
    """
    models = [(label, model)] + list(compare or [])
    cfg, spec, pack, codes, total, chosen = setup_analysis("the lens", models, task, langs, mode, limit, data_dir,
                                                           prompts, layers, batch_size, items)
    prepared = {lang: prepare_lens_language(cfg, pack, spec, tokenizer, lang) for lang in codes}
    out = Path(out_dir)
    rows = []
    for name, net in models:
        for lang, lens in prepared.items():
            values = lens_language(net, tokenizer, lens, chosen, batch_size)
            for item, gold in zip(lens.prep.items, lens.prep.golds):
                rows.append({"model": name, "lang": lang, "index": item.index, "gold": gold, "layers": chosen,
                             **values[item.index]})
    atomic_write_text(out / "lens_items.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    summary, _ = summarize_items(rows)
    for lang in codes:
        atomic_write_text(out / f"lens_{lang}.csv", _csv_text(summary, lang, chosen))
    meta = {"task": spec.name, "mode": mode, "limit": limit, "items": items, "layers": chosen, "num_layers": total,
            "models": [m[0] for m in models], "languages_order": codes, "quantities": list(QUANTITIES),
            "interval": "95% normal interval over items (mean +- 1.96 sd/sqrt(n)), clipped to the valid range",
            "notes": "layer k is the output of decoder block k, read through the final norm; the last layer is "
                     "the model's own output. Sets follow the paper's prefix rule; overlapping tokens are counted "
                     "once in unions and in both answer curves (p_shared_answer is their mass).",
            "languages": {lang: lens.info for lang, lens in prepared.items()}}
    atomic_write_json(out / "lens.json", meta)
    meta["figures"] = [str(p) for p in plot_from_dir(out)]
    return meta


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Model, data and output options shared by `lens` and `pca`."""
    from polyalign.models import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help="HF id, local folder, or packaged alias")
    p.add_argument("--adapter", help="LoRA adapter applied to the model")
    p.add_argument("--compare-adapter", help="a second LoRA adapter on the same model, drawn in the same figure")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=list(DTYPES),
                   help="weights dtype (default: POLYALIGN_DTYPE, else fp32 on CPU, bf16 on GPU)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off)")
    p.add_argument("--task", required=True, help="emotion, snli, paws, or a task .yaml file")
    p.add_argument("--langs", required=True, help="comma-separated codes (zh,ja,ru) or 'all'")
    p.add_argument("--limit", type=int, default=100, help="first N items per language (at least 3)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--data-dir", help="benchmark folder (default: $POLYALIGN_DATA or ../shared/...)")
    p.add_argument("--prompts", help="prompt pack JSON (default: polyalign's own pack)")
    p.add_argument("--languages-file", help="JSON list of extra languages {code, name, native, script}")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--items", metavar="START:STOP", help="benchmark item indices [START, STOP) per language")
    p.add_argument("--allow-overlap", action="store_true",
                   help="analyse items whose questions an adapter was trained on (refused by default)")


def load_models(args: argparse.Namespace) -> tuple:
    """(model, tokenizer, label, compare) from the shared options, after cheap checks pass."""
    from polyalign.models import load_model

    model, tokenizer = load_model(args.model, args.adapter, args.device, args.dtype, args.trust_remote_code)
    label = Path(args.adapter).name or "adapter" if args.adapter else "base"
    compare = []
    if args.compare_adapter:
        other, _ = load_model(args.model, args.compare_adapter, args.device, args.dtype, args.trust_remote_code)
        other_label = Path(args.compare_adapter).name or "adapter"
        compare.append((other_label if other_label != label else other_label + "-2", other))
    return model, tokenizer, label, compare


def parse_layers(spec: str | None) -> list[int | str] | None:
    """'12,18,last' -> [12, 18, 'last'] (checked against the model by `check_layers`)."""
    if spec is None:
        return None
    layers: list[int | str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "last":
            layers.append("last")
        elif part.lstrip("-").isdigit():
            layers.append(int(part))
        else:
            raise PolyalignError(f"--layers: '{part}' is not a layer number or 'last'")
    return layers


def check_cli_args(args: argparse.Namespace, what: str) -> list[int | str] | None:
    """The checks `lens` and `pca` make before loading any model; returns the parsed --layers."""
    if args.limit is not None and args.limit < MIN_ITEMS:
        raise PolyalignError(f"--limit {args.limit}: {what} needs at least {MIN_ITEMS} items per language")
    for adapter in (args.adapter, args.compare_adapter, None):  # each adapter is checked for leaked items
        if adapter or adapter is None:
            check_config(EvalConfig(model=args.model, task=args.task, langs=args.langs, mode=args.mode,
                                    limit=args.limit, items=args.items, adapter=adapter, data_dir=args.data_dir,
                                    prompts=args.prompts, batch_size=args.batch_size,
                                    allow_overlap=args.allow_overlap))
    return parse_layers(args.layers)


def cmd_lens(args: argparse.Namespace) -> int:
    layers = check_cli_args(args, "the lens")
    model, tokenizer, label, compare = load_models(args)
    meta = run_lens(model, tokenizer, args.task, args.langs, args.mode, args.limit, args.data_dir, args.prompts,
                    args.out, label=label, compare=compare, layers=layers,
                    batch_size=args.batch_size, items=args.items)
    for lang, info in meta["languages"].items():
        print(f"{lang}: {info['n_items']} items, {info['overlap']['count']} tokens shared with English labels")
    print(f"lens: {Path(args.out) / 'lens.json'}")
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register `polyalign lens`."""
    p = subparsers.add_parser("lens", help="logit lens: input-language vs English answer over layers")
    add_model_options(p)
    p.add_argument("--mode", default="native", help="prompt label words: english, native or agnostic")
    p.add_argument("--layers", help="comma-separated layers to read (default: all; 'last' allowed)")
    p.set_defaults(func=cmd_lens)
    return p
