"""`polyalign paper-side RUN_DIR`: the paper's numbers beside a run's, as Markdown and a figure.

(a) per language, Table 1's gain (Mistral-7B, zh/es => en minus base) beside the run's gain (raw and
calibrated, with CIs), the correlation of the two gain profiles with a CI, and the same as a figure;
(b) Table 2's Qwen1.5-1.8B row beside the run's averages; (c) with --pca, Tables 8-11's pairs beside
the PCA folder's Pearson r at the same relative depth. Every number is recomputed from the run's
per-item results (results.sqlite) and the PCA folder's arrays; docs/RESULTS.md quotes the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polyalign.core.errors import PolyalignError
from polyalign.core.files import atomic_write_text, md_table
from polyalign.evaluation.stats import RESAMPLES, SEED
from polyalign.reports.paper_numbers import SINGLE_RUNS
from polyalign.reports.paper_side import (
    AverageRow,
    Interval,
    LanguageGains,
    PcaPair,
    average_rows,
    language_gains,
    pca_pairs,
    profile_correlation,
    seed_names,
)
from polyalign.reports.run_data import RunData, load_run


def ci_text(value: Interval | None, digits: int = 1, signed: bool = True) -> str:
    if value is None:
        return "–"
    form = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{form.format(value[0])} [{form.format(value[1])}, {form.format(value[2])}]"


def gains_section(gains: LanguageGains, model: str, setting: str, figure: str) -> list[str]:
    """(a): the per-language table, the profile correlations and the figure."""
    rows = []
    for j, lang in enumerate(gains.langs):
        raw = (gains.raw[j], *np.nanquantile(gains.raw_boot[:, j], [0.025, 0.975]))
        cal = (gains.calibrated[j], *np.nanquantile(gains.calibrated_boot[:, j], [0.025, 0.975]))
        rows.append([lang, f"{gains.paper[j]:+.1f}", ci_text(raw), ci_text(cal)])
    header = ["language", "paper: Mistral-7B, Table 1 (pp)", f"ours: {model} raw, 95% CI (pp)", "ours calibrated (pp)"]
    lines = [f"### (a) Gain of {setting} over base, per language: Table 1 beside {model}", ""]
    lines += md_table(header, rows) + [""]
    for name, ours, boot in (
        ("raw", gains.raw, gains.raw_boot),
        ("calibrated", gains.calibrated, gains.calibrated_boot),
    ):
        r = profile_correlation(gains.paper, ours, boot)
        rho = profile_correlation(gains.paper, ours, boot, spearman=True)
        lines.append(
            f"- Correlation across the {len(gains.langs)} languages, paper vs ours {name}: Pearson r "
            f"{ci_text(r, 2)}, Spearman {ci_text(rho, 2)}."
        )
    lines += [
        "",
        f"CIs: {RESAMPLES} bootstrap resamples of our items, drawn jointly across languages (seed {SEED}); the "
        "correlations' CIs also resample the languages. "
        f"The paper's gains are points ({SINGLE_RUNS}).",
        "",
        f"![Table 1's gain against ours, per language]({figure})",
        "",
    ]
    return lines


def averages_section(rows: list[AverageRow], model: str) -> list[str]:
    """(b): Table 2's Qwen1.5-1.8B row beside our averages."""
    base = next(r for r in rows if r.setting == "base")
    cells = []
    for r in rows:
        paper_gain = "" if r.setting == "base" else f" ({r.paper - base.paper:+.2f})"
        ours_gain = (
            "" if r.setting == "base" or r.ours is None or base.ours is None else f" ({r.ours[0] - base.ours[0]:+.1f})"
        )
        cells.append([r.setting, f"{r.paper:.2f}{paper_gain}", ci_text(r.ours, signed=False) + ours_gain])
    header = ["setting", "paper: Qwen1.5-1.8B, Table 2 (%; gain)", f"ours: {model}, 95% CI (%; gain)"]
    return [
        f"### (b) Average accuracy over languages: Table 2's Qwen1.5-1.8B beside {model}",
        "",
        *md_table(header, cells),
        "",
        "– : the run has no such setting.",
        "",
    ]


def pca_section(pairs: list[PcaPair], folder: Path) -> list[str]:
    """(c): Tables 8-11 beside our Pearson r at the nearest relative depth."""
    cells = [
        [
            p.pair,
            p.paper_column,
            f"{p.paper_base:.4f} → {p.paper_aligned:.4f} ({p.paper_aligned - p.paper_base:+.4f})",
            str(p.our_layer),
            f"{p.our_base[0]:.4f} → {p.our_aligned[0]:.4f}",
            ci_text(p.our_change, 4),
        ]
        for p in pairs
    ]
    header = [
        "pair",
        "paper: model, layer",
        "paper r: base → aligned (Δ)",
        "our layer",
        "our r: base → aligned",
        "our Δr, 95% CI",
    ]
    return [
        f"### (c) Pearson r of PC1 projections: Tables 8-11 beside `{folder}`",
        "",
        *md_table(header, cells),
        "",
        "Our layer: the analysed layer nearest the paper's relative depth (layer / number of layers). "
        "Δr CI: items resampled.",
        "",
    ]


def plot_gains(gains: LanguageGains, model: str, path: Path) -> Path:
    """Per language, the paper's gain (x) against ours (y, raw, with its 95% CI)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.2))
    ax = fig.add_subplot()
    lo, hi = np.nanquantile(gains.raw_boot, [0.025, 0.975], axis=0)
    ax.errorbar(gains.paper, gains.raw, yerr=[gains.raw - lo, hi - gains.raw], fmt="o", capsize=3)
    for x, y, lang in zip(gains.paper, gains.raw, gains.langs):
        ax.annotate(lang, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("paper: Mistral-7B gain over base, Table 1 (points)")
    ax.set_ylabel(f"ours: {model} gain over base, raw (points, 95% CI)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def pick_condition(run: RunData, task: str, mode: str) -> tuple:
    found = [c for c in run.conditions() if c[0] == task and c[1] == mode]
    if not found:
        raise PolyalignError(f"{run.run_dir}: no evaluation of task {task} with {mode} labels")
    return found[0]


@dataclass(frozen=True)
class PaperSideRequest:
    """What `polyalign paper-side` compares: the run, the file, and which of the run's arms."""

    run_dir: str
    out: str
    model: str | None = None  # default: the run's first model
    setting: str = "zh-es_en"  # the aligned setting compared with Table 1
    task: str = "emotion"
    mode: str = "english"
    pca: str | None = None  # a `polyalign pca` folder: section (c)
    pca_base: str | None = None
    pca_aligned: str | None = None


def write_paper_side(request: PaperSideRequest) -> Path:
    """The three sections (c only with a PCA folder) as one Markdown file, and (a)'s figure beside it."""
    from polyalign.reports.calibrated import calibrate_run

    run = load_run(request.run_dir)
    model = request.model or run.experiment.get("models", [None])[0]
    condition = pick_condition(run, request.task, request.mode)
    out = Path(request.out)
    figure = out.with_name(f"{out.stem}_table1_gains.png")
    gains = language_gains(run, calibrate_run(run), model, request.setting, condition)
    seeds = seed_names(run, (model, request.setting), condition)
    pooled_note = (
        f" Each setting trained with seeds is the mean of its adapters ({', '.join(seeds)})." if len(seeds) > 1 else ""
    )
    plot_gains(gains, model, figure)
    command = f"polyalign paper-side {request.run_dir} --out {out}" + (f" --pca {request.pca}" if request.pca else "")
    lines = [
        "## The paper's numbers beside ours",
        "",
        f"Generated by `{command}` from the run's per-item results (`{request.run_dir}`: "
        f"{', '.join(condition)}); do not edit by hand.{pooled_note}",
        "",
        *gains_section(gains, model, request.setting, figure.name),
        *averages_section(average_rows(run, model, condition), model),
    ]
    if request.pca:
        lines += pca_section(pca_pairs(Path(request.pca), request.pca_base, request.pca_aligned), Path(request.pca))
    atomic_write_text(out, "\n".join(lines))
    return out
