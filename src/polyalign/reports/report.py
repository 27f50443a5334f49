"""`polyalign report RUN_DIR`: figures, header and output files; the tables come from
polyalign.reports.tables (every number recomputed from per-item samples)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from polyalign.core.errors import PolyalignError
from polyalign.core.files import atomic_write_text, md_table
from polyalign.core.paths import slug
from polyalign.evaluation.stats import paired_bootstrap
from polyalign.reports.calibrated import calibrate_run, with_calibration
from polyalign.reports.comparisons import condition_name, short
from polyalign.reports.formats import ReportFigure, render_csv, render_html, render_latex, render_md
from polyalign.reports.run_data import RunData, Table, load_run
from polyalign.reports.seeds import seed_tables, setting_note
from polyalign.reports.step_integrity import step_disagreements
from polyalign.reports.tables import build_tables

__all__ = [
    "Table",
    "ReportFigure",
    "build_tables",
    "load_run",
    "paired_bootstrap",
    "write_report",
    "accuracy_table",
]  # re-exported: Table and load_run live in run_data, build_tables in tables, paired_bootstrap in stats


def accuracy_table(runs: dict[str, dict]) -> str:
    """Accuracy per language (rows) for each named run (columns), with the average row."""
    langs: list[str] = []
    for results in runs.values():
        langs += [lang for lang in results["languages"] if lang not in langs]
    names = list(runs)

    def cell(name: str, lang: str) -> str:
        entry = runs[name]["languages"].get(lang)
        return "" if entry is None else f"{100 * entry['accuracy']:.1f}"

    rows = [[lang, *(cell(name, lang) for name in names)] for lang in langs]
    rows.append(["**avg**", *(f"{100 * runs[n]['average']:.1f}" for n in names)])
    return "\n".join(md_table(["lang", *names], rows))


# ---------------------------------------------------------------------------------------------
# `polyalign report RUN_DIR`: the paper's tables, significance tests and figures from a run store.
# ---------------------------------------------------------------------------------------------
FORMATS = ("md", "html", "csv", "latex")
EXTENSIONS = {"md": "md", "html": "html", "csv": "csv", "latex": "tex"}


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def build_figures(run: RunData) -> list[ReportFigure]:
    """Per model and condition: accuracy bars per language, base vs each setting; then the
    lens and PCA figures the analysis steps drew (redrawn from their files if missing)."""
    from matplotlib.figure import Figure

    from polyalign.analysis import lens, pca

    figures: list[ReportFigure] = []
    langs = run.langs()
    for condition in run.conditions():
        for model in dict.fromkeys(v[0] for v in run.variants(condition)):
            settings = [s for m, s in run.variants(condition) if m == model]
            fig = Figure(figsize=(max(6.0, 0.45 * len(langs) * max(1, len(settings) / 2) + 2), 3.4))
            ax = fig.add_subplot()
            width = 0.8 / len(settings)
            x = np.arange(len(langs))
            for k, setting in enumerate(settings):
                values = [run.accuracy((model, setting), condition, lang) for lang in langs]
                ax.bar(
                    x + (k - (len(settings) - 1) / 2) * width,  # a missing language: no bar
                    [100 * v if v is not None else np.nan for v in values],
                    width,
                    label=setting,
                )
            ax.set_xticks(x, langs)
            ax.set_ylabel("accuracy (%)")
            ax.set_ylim(0, 100)
            ax.set_title(f"{short(model)}: {condition_name(condition)}", fontsize=10)
            ax.legend(fontsize=8, ncol=len(settings), loc="upper right")
            ax.grid(axis="y", alpha=0.3)
            figures.append(
                ReportFigure(
                    f"bars_{len(figures):02d}_{slug(short(model))}_{condition[0]}_{condition[1]}",
                    f"Accuracy per language — {short(model)}, {condition_name(condition)}",
                    _png(fig),
                )
            )
    for entry in run.plan:
        if entry["kind"] not in ("lens", "pca"):
            continue
        folder = run.run_dir / entry["dir"] / entry["kind"]
        pngs = sorted(folder.glob("*.png"))
        if not pngs and (folder / f"{entry['kind']}.json").exists():
            pngs = [p for p in (lens if entry["kind"] == "lens" else pca).plot_from_dir(folder) if p.suffix == ".png"]
        label = entry["label"]
        for model in run.experiment.get("models", []):
            label = label.replace(model, short(model))
        for png in pngs:
            figures.append(
                ReportFigure(
                    f"{entry['kind']}_{entry['key'][:8]}_{png.stem}",
                    f"{entry['kind']} ({png.stem}): {label}",
                    png.read_bytes(),
                )
            )
    return figures


def _header(run: RunData) -> tuple[str, list[str]]:
    exp = run.experiment
    title = f"polyalign report: {exp.get('name') or run.run_dir.name}"
    lines = [exp.get("description", "")] if exp.get("description") else []
    evaluated = _evaluated_items(run) if exp.get("items") else ""
    lines.append(
        f"Run folder: {run.run_dir}. Models: {', '.join(map(short, exp.get('models', [])))}. "
        f"Languages: {', '.join(run.langs())}.{evaluated}"
    )
    for s in exp.get("alignment", []):  # .get: stores written before a key existed still report
        pairs = f", {s['per_language']} pairs per language" if s.get("per_language") is not None else ""
        trained = f", trained on {s['task']} items {s['items']}" if s.get("items") else ""
        lines.append(
            f"Setting {s['name']}: {s['task']} questions {','.join(s['sources'])} → {s['target']}{pairs}{trained}."
        )
        lines[-1] += setting_note(s)  # seeds, control
    return title, lines


def _evaluated_items(run: RunData) -> str:
    """The header's item range: the one the stored results cover, not the configured one, which
    `limit` may have cut (items 0:250 with limit 120 evaluate 0:120)."""
    indices = {i for by_lang in run.correct.values() for items in by_lang.values() for i in items}
    start, stop = min(indices), max(indices) + 1
    text = f" Evaluated items {start}:{stop}"
    if len(indices) != stop - start:
        text += f" ({len(indices)} of them)"
    configured, limit = run.experiment["items"], run.experiment.get("limit")
    if f"{start}:{stop}" != configured:
        text += f" (configured {configured}" + (f", limit {limit})" if limit else ")")
    return text + "."


def write_report(run_dir: str | Path, fmt: str = "md", out: str | Path | None = None) -> Path:
    """Write the report of a run folder; md and latex put their PNGs in <out stem>_files/."""
    if fmt not in FORMATS:
        raise PolyalignError(f"unknown report format '{fmt}' (choose from {', '.join(FORMATS)})")
    run = load_run(run_dir)
    if not run.correct:
        raise PolyalignError(f"{run_dir}: the store holds no evaluation results yet")
    out = Path(out) if out else Path(run_dir) / f"report.{EXTENSIONS[fmt]}"
    cal = calibrate_run(run)  # once: the calibrated tables and the control table's calibrated columns
    tables = with_calibration(run, build_tables(run), cal)  # Table 1 raw and calibrated, the headline, Tables C1-C4
    tables += seed_tables(run, cal)  # seeds and shuffled controls (polyalign.reports.seeds)
    figures = build_figures(run) if fmt != "csv" else []
    files_dir = f"{out.stem}_files"
    if fmt in ("md", "latex"):
        for f in figures:
            (out.parent / files_dir).mkdir(parents=True, exist_ok=True)
            (out.parent / files_dir / f"{f.name}.png").write_bytes(f.png)
    title, lines = _header(run)
    warnings = step_disagreements(run)  # a step folder damaged since, a store missing rows
    lines += [f"**Warning:** {w}" for w in warnings]
    print("\n".join(f"warning: {w}" for w in warnings), file=sys.stderr, end="\n" if warnings else "")
    text = {
        "md": lambda: render_md(title, lines, tables, figures, files_dir),
        "html": lambda: render_html(title, lines, tables, figures),
        "csv": lambda: render_csv(tables),
        "latex": lambda: render_latex(title, lines, tables, figures, files_dir),
    }[fmt]()
    atomic_write_text(out, text)
    return out
