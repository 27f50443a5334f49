"""Figures for the lens and PCA commands, drawn only from saved numbers.

Why: every figure must be re-drawable from the files a run writes, so these functions take
plain arrays (never models) and write PNG and PDF side by side. They use matplotlib's
object API (Figure, no pyplot), which needs no display and leaves global state alone.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from polyalign.core.errors import PolyalignError

INPUT_COLOR, ENGLISH_COLOR = "tab:orange", "tab:blue"
STYLES = ("-", "--", ":", "-.")


def _language_title(code: str) -> str:
    try:
        from polyalign.core.languages import get_language

        return f"{get_language(code).name} ({code})"
    except PolyalignError:
        return code


def _save(fig: Figure, stem: Path) -> list[Path]:
    """PNG (for viewing) and PDF (for papers) of one figure."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def plot_lens(summary: dict, layers: list[int], langs: list[str], stem: str | Path, title: str = "") -> list[Path]:
    """The paper's Figure 1 layout: per language, an entropy strip above the answer curves.

    summary[model][lang][quantity] = (mean, ci_lo, ci_hi) arrays over `layers`. Curves are
    the gold answer's probability in the input language and in English, with 95% bands;
    line style tells models apart, so base and adapter share each panel.
    """
    models = list(summary)
    ncols = min(len(langs), 4)
    nrows = math.ceil(len(langs) / ncols)
    strip = 0.12 * len(models)
    fig = Figure(figsize=(3.4 * ncols + 0.8, (2.6 + strip * 2.6) * nrows))
    grid = fig.add_gridspec(2 * nrows, ncols, height_ratios=[strip, 1.0] * nrows, hspace=0.08, wspace=0.28)
    entropies = np.array([summary[m][lang]["entropy_bits"][0] for m in models for lang in langs])
    vmin, vmax = 0.0, float(max(entropies.max(), 1e-6))  # bits from 0: strips comparable across panels
    image = None
    x = np.asarray(layers)
    for k, lang in enumerate(langs):
        r, c = divmod(k, ncols)
        top = fig.add_subplot(grid[2 * r, c])
        ax = fig.add_subplot(grid[2 * r + 1, c])
        matrix = np.array([summary[m][lang]["entropy_bits"][0] for m in models])
        image = top.imshow(
            matrix,
            aspect="auto",
            cmap="viridis",
            vmin=vmin,
            vmax=vmax,
            extent=(x[0] - 0.5, x[-1] + 0.5, len(models), 0),
        )
        top.set_yticks(np.arange(len(models)) + 0.5, models if len(models) > 1 else ["entropy"], fontsize=6)
        top.set_xticks([])
        top.set_title(_language_title(lang), fontsize=9)
        for i, model in enumerate(models):
            style = STYLES[i % len(STYLES)]
            for quantity, color, name in (
                ("p_input_answer", INPUT_COLOR, "input-language answer"),
                ("p_en_answer", ENGLISH_COLOR, "English answer"),
            ):
                mean, lo, hi = summary[model][lang][quantity]
                label = name if len(models) == 1 else f"{name} ({model})"
                ax.plot(x, mean, style, color=color, lw=1.4, label=label if k == 0 else None)
                ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
        ax.set_xlim(x[0] - 0.5, x[-1] + 0.5)
        ax.set_ylim(0, 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if r == nrows - 1:
            ax.set_xlabel("layer")
        if c == 0:
            ax.set_ylabel("probability")
    if image is not None:
        fig.colorbar(image, ax=fig.axes, fraction=0.02, pad=0.02, label="entropy (bits)")
    fig.legend(loc="upper center", ncol=2 * len(models), fontsize=7, bbox_to_anchor=(0.45, -0.03), frameon=False)
    if title:
        fig.suptitle(title, fontsize=10, y=1.03)
    return _save(fig, Path(stem))


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_pca(data: dict, stem: str | Path) -> list[Path]:
    """2-D PCA scatter per layer (rows) and model (columns), coloured by language.

    data[model] = {"layers": [...], "langs": [...], "proj": [layers, langs, items, 2],
    "explained": [layers, 2]}; each model's PCA is its own (fitted on its states).
    """
    models = list(data)
    layers = list(data[models[0]]["layers"])
    langs = list(data[models[0]]["langs"])
    colors = _colors(len(langs))
    fig = Figure(figsize=(3.6 * len(models) + 1.2, 3.2 * len(layers)))
    axes = fig.subplots(len(layers), len(models), squeeze=False)
    for c, model in enumerate(models):
        proj, explained = np.asarray(data[model]["proj"]), np.asarray(data[model]["explained"])
        for r, layer in enumerate(layers):
            ax = axes[r][c]
            for j, lang in enumerate(langs):
                ax.scatter(
                    proj[r, j, :, 0],
                    proj[r, j, :, 1],
                    s=9,
                    color=colors[j],
                    alpha=0.75,
                    label=lang if (r, c) == (0, 0) else None,
                )
            ax.set_title(f"{model}, layer {layer}", fontsize=9)
            ax.set_xlabel(f"PC1 ({100 * explained[r, 0]:.1f}%)", fontsize=8)
            ax.set_ylabel(f"PC2 ({100 * explained[r, 1]:.1f}%)", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.legend(loc="center right", fontsize=7, title="language", frameon=False)
    fig.subplots_adjust(right=0.86, hspace=0.35, wspace=0.3)
    return _save(fig, Path(stem))


def plot_alignment(scores: dict, layers: list[int], stem: str | Path, chance: float | None = None) -> list[Path]:
    """Cross-lingual alignment over layers: scores[model][lang] = accuracy per layer."""
    langs = sorted({lang for by_lang in scores.values() for lang in by_lang})
    colors = dict(zip(langs, _colors(len(langs))))
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    for i, (model, by_lang) in enumerate(scores.items()):
        for lang, values in by_lang.items():
            ax.plot(
                layers,
                values,
                STYLES[i % len(STYLES)],
                marker="o",
                ms=3,
                color=colors[lang],
                label=lang if len(scores) == 1 else f"{lang} ({model})",
            )
    if chance is not None:
        ax.axhline(chance, color="grey", lw=0.8, ls=":", label="chance")
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("nearest English item is the translation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, Path(stem))
