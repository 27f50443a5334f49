"""`polyalign lens`: the logit lens at the answer position, per layer and language.

Why: the paper reads every layer's residual stream through the model's own final norm and
unembedding to see when the answer appears and in which language (a latent English answer
before the input-language one). It runs the forward an evaluation runs (shared few-shot cache,
planned batches) and keeps hidden states only at the answer position (the last prompt token);
only those are unembedded, in chunks of about 128 rows (`polyalign.analysis.lens_readout`), never
layers x positions x vocabulary.

Files written to the output folder:
  lens_items.jsonl  per model, language and item, every quantity at every layer (source of truth)
  lens_{lang}.csv   per model and layer: mean and 95% interval of each quantity
  lens.json         configuration, label words, token sets and their overlaps per language
  lens.png/.pdf     the figure; `plot_from_dir` redraws it from the two files above
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from polyalign.analysis.analysis_spec import LensSpec
from polyalign.analysis.lens_readout import SetReadout, rechunk
from polyalign.analysis.states import collect_states, setup_analysis
from polyalign.core.declarations import MIN_ITEMS
from polyalign.core.errors import PolyalignError
from polyalign.core.files import atomic_write_json, atomic_write_text, write_jsonl
from polyalign.core.prompts import PromptPack
from polyalign.core.tasks import TaskSpec
from polyalign.engine.scoring import prefix_token_ids
from polyalign.evaluation.evaluate import EvalConfig, PreparedLanguage, prepare_language

QUANTITIES = ("p_input_answer", "p_en_answer", "p_shared_answer", "p_input_labels", "p_en_labels", "entropy_bits")
Z95 = 1.959964


class TokenSets(NamedTuple):
    """The answer token sets the lens sums probability over, each sorted: per class (in task order)
    the input-language words' tokens, the English words' tokens and the tokens in both, and the
    unions over classes of the input-language and the English ones."""

    native: list[list[int]]
    english: list[list[int]]
    shared: list[list[int]]
    native_union: list[int]
    english_union: list[int]

    @property
    def n_classes(self) -> int:
        return len(self.native)

    @property
    def columns(self) -> list[list[int]]:
        """Every set in the readout's column order: native, English and shared per class, then the
        two unions (class c's native set is column c, its English n_classes + c, its shared 2 n_classes + c)."""
        return [*self.native, *self.english, *self.shared, self.native_union, self.english_union]


@dataclass
class LensLanguage:
    """One language's items plus the token sets the lens sums over."""

    prep: PreparedLanguage
    gold_index: list[int]
    sets: TokenSets
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
            raise PolyalignError(
                f"{task.name}/{lang}: {kind} label '{words[empty[0]]}' has no prefix tokens in this tokenizer"
            )
    classes = list(task.classes)
    shared = {c: nsets[c] & esets[c] for c in classes}
    nunion, eunion = set().union(*nsets.values()), set().union(*esets.values())
    overlap = sorted(nunion & eunion)
    token_sets = TokenSets(
        [sorted(nsets[c]) for c in classes],
        [sorted(esets[c]) for c in classes],
        [sorted(shared[c]) for c in classes],
        sorted(nunion),
        sorted(eunion),
    )

    def names(ids) -> list[str]:
        return tokenizer.convert_ids_to_tokens(sorted(ids))

    info = {
        "n_items": len(prep.items),
        "label_words_input": native,
        "label_words_en": english,
        "tokens_input": {c: names(nsets[c]) for c in classes},
        "tokens_en": {c: names(esets[c]) for c in classes},
        "overlap": {
            "count": len(overlap),
            "tokens": names(overlap),
            "per_class": {c: names(shared[c]) for c in classes},
        },
    }
    return LensLanguage(prep, [classes.index(g) for g in prep.golds], token_sets, info)


@torch.inference_mode()
def lens_language(model, tokenizer, lang: LensLanguage, layers: list[int], batch_size: int) -> dict[int, dict]:
    """Per item: every quantity at every chosen layer (lists aligned with `layers`).

    Forward batches are planned as in evaluation (`collect_states`); their answer-position states
    are regrouped into unembedding chunks (`SetReadout`).
    """
    readout = SetReadout(model, lang.sets.columns, layers)
    device = readout.device
    n_classes = lang.sets.n_classes
    gold = torch.tensor(lang.gold_index, device=device)  # by position in prep.items, not benchmark index
    position = {item.index: i for i, item in enumerate(lang.prep.items)}
    batches = collect_states(
        model, tokenizer, lang.prep.items, lang.prep.shared, layers, "last", batch_size, desc=f"lens {lang.prep.lang}"
    )
    results: dict[int, dict] = {}
    for indices, states in rechunk(batches, readout.items_per_chunk):
        rows = torch.arange(len(indices), device=device)
        g = gold[torch.tensor([position[i] for i in indices], device=device)]
        mass, entropy = readout(states)  # [layers, items, sets], [layers, items]
        per_layer = [
            torch.stack(
                [
                    mass[k, rows, g],
                    mass[k, rows, n_classes + g],
                    mass[k, rows, 2 * n_classes + g],
                    mass[k, :, -2],
                    mass[k, :, -1],
                    entropy[k],
                ],
                -1,
            )
            for k in range(len(layers))
        ]
        values = torch.stack(per_layer, 1).cpu().double().numpy()  # [items, layers, quantities]
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
    summary = {
        m: {
            lang: {q: mean_ci(np.array([r[q] for r in items], dtype=float), q) for q in QUANTITIES}
            for lang, items in by_lang.items()
        }
        for m, by_lang in grouped.items()
    }
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
    from polyalign.analysis.plotting import plot_lens

    out = Path(out_dir)
    meta = json.loads((out / "lens.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (out / "lens_items.jsonl").read_text(encoding="utf-8").splitlines() if line]
    summary, layers = summarize_items(rows)
    return plot_lens(
        summary,
        layers,
        meta["languages_order"],
        out / "lens",
        title=f"logit lens: {meta['task']}, {meta['mode']} prompts",
    )


def _lens_rows(
    models: list[tuple[str, object]], prepared: dict, tokenizer, chosen: list[int], batch_size: int
) -> list[dict]:
    """One row per (model, language, item): the lens quantities at every chosen layer."""
    rows = []
    for name, net in models:
        for lang, lens in prepared.items():
            values = lens_language(net, tokenizer, lens, chosen, batch_size)
            for item, gold in zip(lens.prep.items, lens.prep.golds):
                row = {"model": name, "lang": lang, "index": item.index, "gold": gold, "layers": chosen}
                rows.append({**row, **values[item.index]})
    return rows


def run_lens(
    model,
    tokenizer,
    spec: LensSpec,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    prompts: str | Path | None = None,
    label: str = "base",
    compare: list[tuple[str, object]] | None = None,
    batch_size: int = 16,
) -> dict:
    """Run the lens for `model` and every (label, model) in `compare`; returns lens.json's content.

    Compared models must share `tokenizer` (e.g. a base model and the same model with a LoRA
    adapter loaded separately: PEFT wraps a model in place). Everything is checked before the
    first forward, and files are written only at the end.
    """
    models = [(label, model)] + list(compare or [])
    cfg, task, pack, codes, total, chosen = setup_analysis("the lens", models, spec, data_dir, prompts, batch_size)
    prepared = {lang: prepare_lens_language(cfg, pack, task, tokenizer, lang) for lang in codes}
    out = Path(out_dir)
    rows = _lens_rows(models, prepared, tokenizer, chosen, batch_size)
    write_jsonl(out / "lens_items.jsonl", rows)
    summary, _ = summarize_items(rows)
    for lang in codes:
        atomic_write_text(out / f"lens_{lang}.csv", _csv_text(summary, lang, chosen))
    meta = {
        "task": task.name,
        "mode": spec.mode,
        "limit": spec.limit,
        "items": spec.items,
        "layers": chosen,
        "num_layers": total,
        "models": [m[0] for m in models],
        "languages_order": codes,
        "quantities": list(QUANTITIES),
        "interval": "95% normal interval over items (mean +- 1.96 sd/sqrt(n)), clipped to the valid range",
        "notes": "layer k is the output of decoder block k, read through the final norm; the last layer is "
        "the model's own output. Sets follow the paper's prefix rule; overlapping tokens are counted "
        "once in unions and in both answer curves (p_shared_answer is their mass).",
        "languages": {lang: lens.info for lang, lens in prepared.items()},
    }
    atomic_write_json(out / "lens.json", meta)
    meta["figures"] = [str(p) for p in plot_from_dir(out)]
    return meta
