"""`polyalign pca`: how language-specific are intermediate representations?

Why: the paper shows that after question alignment the representations of the same item in
different languages move together. Per layer we (1) fit one PCA jointly over all languages'
item representations and plot the 2-D projections, (2) correlate the 1-D projections of
every language pair, paired by item (the test sets are item-parallel), and (3) score
cross-lingual alignment: how often an item's nearest English representation (cosine, full
dimension) is its own translation.

Files written to the output folder:
  pca_{model}.npz           projections [layers, langs, items, 2], explained variance, PC1
                            correlations and alignment scores (numpy arrays, no pickle)
  pca_correlations.csv/.md  Pearson r of PC1 projections for every language pair
  pca_alignment.csv         nearest-English-neighbour accuracy per language and layer
  pca_scatter.png/.pdf, pca_alignment.png/.pdf   figures; `plot_from_dir` redraws them
  pca.json                  configuration and the list of models, layers and languages
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from polyalign.analysis.analysis_spec import PcaSpec
from polyalign.analysis.states import collect_states, setup_analysis
from polyalign.core.declarations import MIN_ITEMS, POOLINGS, check_choice
from polyalign.core.errors import PolyalignError
from polyalign.core.files import atomic_write_json, atomic_write_text, md_table
from polyalign.core.paths import slug
from polyalign.evaluation.evaluate import prepare_language

PIVOT = "en"


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projections on the first two principal components, and their explained-variance ratios.

    Centered SVD in float64. A component's sign is arbitrary, so each is flipped to make its
    largest-magnitude projection positive: reruns and regenerated figures agree.
    """
    centered = x - x.mean(0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    proj = centered @ vt[:2].T
    signs = np.sign(proj[np.abs(proj).argmax(0), np.arange(proj.shape[1])])
    proj *= np.where(signs == 0, 1.0, signs)
    var = s**2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    return proj, ratio


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two paired samples; NaN when either is constant."""
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def nearest_pivot_accuracy(x: np.ndarray, pivot: np.ndarray) -> float:
    """Fraction of items whose most cosine-similar pivot item is their own translation."""
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    pn = pivot / np.maximum(np.linalg.norm(pivot, axis=1, keepdims=True), 1e-12)
    return float(((xn @ pn.T).argmax(1) == np.arange(len(x))).mean())


def item_states(model, tokenizer, prep, layers: list[int], pooling: str, batch_size: int) -> np.ndarray:
    """[layers, items, hidden] float64 representations of one language's items, in item order."""
    position = {item.index: i for i, item in enumerate(prep.items)}
    out: np.ndarray | None = None
    for indices, states in collect_states(
        model, tokenizer, prep.items, prep.shared, layers, pooling, batch_size, desc=f"pca {prep.lang}"
    ):
        pooled = states.float().cpu().numpy().astype(np.float64)  # [layers, batch, hidden]
        if out is None:
            out = np.zeros((len(layers), len(prep.items), pooled.shape[-1]))
        out[:, [position[i] for i in indices]] = pooled
    if out is None:
        raise PolyalignError(f"{prep.lang}: no items to represent")
    return out


def analyse(states: dict[str, np.ndarray], langs: list[str], layers: list[int]) -> dict[str, np.ndarray]:
    """Per layer: joint PCA over `langs`, PC1 correlation matrix, alignment to the pivot."""
    n = states[langs[0]].shape[1]
    others = [lang for lang in langs if lang != PIVOT]
    proj = np.zeros((len(layers), len(langs), n, 2))
    explained = np.zeros((len(layers), 2))
    corr = np.zeros((len(layers), len(langs), len(langs)))
    align = np.zeros((len(layers), len(others)))
    for k in range(len(layers)):
        p, explained[k] = pca_2d(np.concatenate([states[lang][k] for lang in langs]))
        proj[k] = p.reshape(len(langs), n, 2)
        for a in range(len(langs)):
            for b in range(len(langs)):
                corr[k, a, b] = pearson(proj[k, a, :, 0], proj[k, b, :, 0])
        for j, lang in enumerate(others):
            align[k, j] = nearest_pivot_accuracy(states[lang][k], states[PIVOT][k])
    return {
        "proj": proj,
        "explained": explained,
        "pc1_corr": corr,
        "alignment": align,
        "alignment_langs": np.array(others),
    }


def _csv(rows: list[list]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _fmt(x: float) -> str:
    return "nan" if np.isnan(x) else f"{x:.4f}"


def write_tables(out: Path, results: dict[str, dict], langs: list[str], layers: list[int], n: int) -> None:
    corr_rows: list[list] = [["model", "layer", "lang_a", "lang_b", "pearson_r", "n_items"]]
    align_rows: list[list] = [["model", "layer", "lang", "nn_accuracy", "n_items", "chance"]]
    md = ["# PC1 projections: Pearson r between languages, paired by item", ""]
    for model, res in results.items():
        for k, layer in enumerate(layers):
            cells = [[la, *(_fmt(res["pc1_corr"][k, a, b]) for b in range(len(langs)))] for a, la in enumerate(langs)]
            md += [f"## {model}, layer {layer}", "", *md_table(["", *langs], cells)]
            for a, la in enumerate(langs):
                corr_rows += [
                    [model, layer, la, langs[b], _fmt(res["pc1_corr"][k, a, b]), n] for b in range(a + 1, len(langs))
                ]
            md.append("")
            align_rows += [
                [model, layer, lang, f"{res['alignment'][k, j]:.4f}", n, f"{1 / n:.4f}"]
                for j, lang in enumerate(res["alignment_langs"])
            ]
    atomic_write_text(out / "pca_correlations.csv", _csv(corr_rows))
    atomic_write_text(out / "pca_correlations.md", "\n".join(md))
    atomic_write_text(out / "pca_alignment.csv", _csv(align_rows))


def plot_from_dir(out_dir: str | Path) -> list[Path]:
    """Redraw both figures from pca.json and the npz files alone."""
    import json

    from polyalign.analysis.plotting import plot_alignment, plot_pca

    out = Path(out_dir)
    meta = json.loads((out / "pca.json").read_text(encoding="utf-8"))
    data, scores = {}, {}
    for model, name in meta["files"].items():
        with np.load(out / name, allow_pickle=False) as z:
            data[model] = {key: z[key] for key in ("layers", "langs", "proj", "explained")}
            scores[model] = {str(lang): z["alignment"][:, j] for j, lang in enumerate(z["alignment_langs"])}
    return plot_pca(data, out / "pca_scatter") + plot_alignment(
        scores, meta["layers"], out / "pca_alignment", chance=1 / meta["n_items"]
    )


def _parallel_count(task: str, counts: dict[str, int]) -> int:
    """The common item count of every language; PCA compares items across languages."""
    if min(counts.values()) < MIN_ITEMS:
        lang = min(counts, key=lambda code: counts[code])
        raise PolyalignError(f"{task}/{lang}: {counts[lang]} items; PCA needs at least {MIN_ITEMS}")
    if len(set(counts.values())) != 1:
        raise PolyalignError(f"{task}: languages have different item counts {counts}; they must be parallel")
    return counts[PIVOT]


def _save_arrays(path: Path, result: dict, layers: list[int], langs: list[str], item_index: list[int]) -> None:
    """One model's projections, correlations and alignments, with the axes that index them."""
    np.savez(
        path,
        layers=np.array(layers),
        langs=np.array(langs),
        item_index=np.array(item_index),
        **result,
    )


def run_pca(
    model,
    tokenizer,
    spec: PcaSpec,
    out_dir: str | Path,
    data_dir: str | Path | None = None,
    prompts: str | Path | None = None,
    label: str = "base",
    compare: list[tuple[str, object]] | None = None,
    batch_size: int = 16,
) -> dict:
    """PCA, PC1 correlations and alignment for `model` (and each (label, model) in `compare`)."""
    check_choice(spec.pooling, POOLINGS, "pooling")  # again: a caller may have changed it
    models = [(label, model)] + list(compare or [])
    cfg, task, pack, codes, total, chosen = setup_analysis("PCA", models, spec, data_dir, prompts, batch_size)
    prepared = {lang: prepare_language(cfg, pack, tokenizer, lang) for lang in dict.fromkeys(codes + [PIVOT])}
    n = _parallel_count(task.name, {lang: len(p.items) for lang, p in prepared.items()})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, files = {}, {}
    for name, net in models:
        states = {
            lang: item_states(net, tokenizer, prep, chosen, spec.pooling, batch_size) for lang, prep in prepared.items()
        }
        results[name] = analyse(states, codes, chosen)
        files[name] = f"pca_{slug(name)}.npz"
        item_index = [it.index for it in prepared[PIVOT].items]
        _save_arrays(out / files[name], results[name], chosen, codes, item_index)
    write_tables(out, results, codes, chosen, n)
    meta = {
        "task": task.name,
        "mode": spec.mode,
        "pooling": spec.pooling,
        "limit": spec.limit,
        "items": spec.items,
        "n_items": n,
        "layers": chosen,
        "num_layers": total,
        "langs": codes,
        "models": list(files),
        "files": files,
        "explained_variance": {m: r["explained"].tolist() for m, r in results.items()},
        "notes": "layer k is the output of decoder block k; the last layer is the model's final normed output. "
        "pooling mean averages the item's tokens after the shared few-shot prefix; all averages "
        "every prompt position (BOS and few-shot block included, as the paper); last is the "
        "answer position.",
    }
    atomic_write_json(out / "pca.json", meta)
    meta["figures"] = [str(p) for p in plot_from_dir(out)]
    return meta
