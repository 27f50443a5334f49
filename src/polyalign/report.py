"""Tables from saved results: every number here is recomputed from per-item samples."""
from __future__ import annotations

import argparse
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polyalign.errors import PolyalignError
from polyalign.languages import PAPER_LANGUAGES
from polyalign.report_formats import render_csv, render_html, render_latex, render_md
from polyalign.results import atomic_write_text, read_samples, summarize


def accuracy_table(runs: dict[str, dict], fmt: str = "md") -> str:
    """Accuracy per language (rows) for each named run (columns), with the average row."""
    langs: list[str] = []
    for results in runs.values():
        langs += [lang for lang in results["languages"] if lang not in langs]
    names = list(runs)
    lines = ["| lang | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for lang in langs:
        cells = []
        for name in names:
            entry = runs[name]["languages"].get(lang)
            cells.append("" if entry is None else f"{100 * entry['accuracy']:.1f}")
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    lines.append("| **avg** | " + " | ".join(f"{100 * runs[n]['average']:.1f}" for n in names) + " |")
    return "\n".join(lines)


def results_from_samples(out: Path, task: str, langs: list[str]) -> dict:
    """Rebuild the languages/average part of results.json from the sample files alone."""
    languages = {lang: summarize(read_samples(out / "samples" / f"{task}_{lang}.jsonl")) for lang in langs}
    accs = [v["accuracy"] for v in languages.values()]
    return {"languages": languages, "average": sum(accs) / len(accs) if accs else 0.0}


# ---------------------------------------------------------------------------------------------
# `polyalign report RUN_DIR`: the paper's tables, significance tests and figures from a run store.
# ---------------------------------------------------------------------------------------------
FORMATS = ("md", "html", "csv", "latex")
EXTENSIONS = {"md": "md", "html": "html", "csv": "csv", "latex": "tex"}
RESAMPLES, SEED, ALPHA = 1000, 0, 0.05


@dataclass
class Table:
    """A rendered-agnostic table: `rows[i][0]` is the row label; `kinds[j]` formats column j
    (acc, delta, p, int, text); `best` holds (row, column) cells to mark."""

    name: str
    title: str
    header: list[str]
    rows: list[list]
    kinds: list[str]
    best: set = field(default_factory=set)
    note: str = ""

    def cell(self, i: int, j: int) -> str:
        value, kind = self.rows[i][j], self.kinds[j]
        if value is None:
            return "–"
        return {"acc": lambda v: f"{100 * v:.1f}", "delta": lambda v: f"{100 * v:+.1f}",
                "p": lambda v: f"{v:.3f}"}.get(kind, str)(value)


@dataclass
class ReportFigure:
    """A PNG for the report; `name` is its file stem when written next to md/latex output."""

    name: str
    title: str
    png: bytes


@dataclass
class RunData:
    """A run's current results: correct[(model, setting, task, mode, scoring)][lang][idx] = bool."""

    run_dir: Path
    experiment: dict
    plan: list[dict]
    correct: dict

    def conditions(self) -> list[tuple[str, str, str]]:
        return list(dict.fromkeys(k[2:] for k in self.correct))

    def variants(self, condition=None) -> list[tuple[str, str]]:
        return list(dict.fromkeys(k[:2] for k in self.correct if condition is None or k[2:] == condition))

    def langs(self) -> list[str]:
        found = {lang for by_lang in self.correct.values() for lang in by_lang}
        return sorted(found, key=lambda c: (PAPER_LANGUAGES.index(c) if c in PAPER_LANGUAGES else 99, c))

    def accuracy(self, variant, condition, lang) -> float | None:
        items = self.correct.get((*variant, *condition), {}).get(lang)
        return float(np.mean(list(items.values()))) if items else None

    def average(self, variant, condition, langs=None) -> float | None:
        langs = self.langs() if langs is None else langs
        accs = [a for lang in langs if (a := self.accuracy(variant, condition, lang)) is not None]
        return float(np.mean(accs)) if accs else None

    def seen(self, setting: str) -> set[str]:
        for s in self.experiment.get("alignment", []):
            if s["name"] == setting:
                return {*s["sources"], s["target"]}
        return set()


def load_run(run_dir: str | Path) -> RunData:
    """Everything the report needs, from RUN_DIR/results.sqlite alone (plus analysis folders)."""
    from polyalign.store import Store

    run_dir = Path(run_dir)
    with Store(run_dir, create=False) as store:
        experiment, plan = store.get_meta("experiment", {}), store.get_meta("plan", [])
        rows = list(store.samples())
    order = {name: i for i, name in enumerate(["base"] + [s["name"] for s in experiment.get("alignment", [])])}
    models = {m: i for i, m in enumerate(experiment.get("models", []))}
    tasks = {t: i for i, t in enumerate(experiment.get("tasks", []))}
    modes = {m: i for i, m in enumerate(experiment.get("modes", []))}
    rows.sort(key=lambda r: (tasks.get(r["task"], 99), modes.get(r["mode"], 99), r["scoring"],
                             models.get(r["model"], 99), order.get(r["setting"], 99)))
    correct: dict = {}
    for r in rows:
        key = (r["model"], r["setting"], r["task"], r["mode"], r["scoring"])
        hit = r["pred"] is not None and r["pred"] == r["gold"]  # a tie (pred None) counts as wrong
        correct.setdefault(key, {}).setdefault(r["lang"], {})[r["idx"]] = hit
    return RunData(run_dir, experiment, plan, correct)


def paired_bootstrap(aligned: np.ndarray, base: np.ndarray, resamples: int = RESAMPLES,
                     seed: int = SEED) -> tuple[float, float]:
    """Accuracy difference (aligned - base) on the same items and its two-sided p-value.

    Items are resampled with replacement (pairs kept together); the p-value is the share of
    resampled differences at least |delta| away from delta (the null-centred bootstrap of
    Berg-Kirkpatrick et al. 2012), with the +1 correction so it is never 0.
    """
    diff = np.asarray(aligned, dtype=float) - np.asarray(base, dtype=float)
    if len(diff) == 0:
        return 0.0, 1.0
    delta = float(diff.mean())
    picks = np.random.default_rng(seed).integers(0, len(diff), size=(resamples, len(diff)))
    boot = diff[picks].mean(axis=1)
    extreme = int(np.sum(np.abs(boot - delta) >= abs(delta) - 1e-12))
    return delta, (1 + extreme) / (1 + resamples) if delta != 0 else 1.0


def short(model: str) -> str:
    path = Path(model)
    return path.name if len(path.parts) > 1 and path.exists() else model


def _vname(variant) -> str:
    return f"{short(variant[0])} / {variant[1]}"


def _cname(condition) -> str:
    task, mode, scoring = condition
    return f"{task} ({mode} labels, {scoring})"


def _best(values: list, offset: int = 1) -> set[int]:
    present = [v for v in values if v is not None]
    return {j + offset for j, v in enumerate(values) if present and v is not None and v >= max(present) - 1e-12}


def build_tables(run: RunData) -> list[Table]:
    langs, tables = run.langs(), []
    seen_any = set().union(*(run.seen(s["name"]) for s in run.experiment.get("alignment", [])))
    for condition in run.conditions():  # Table 1: accuracy per language, best marked
        variants = run.variants(condition)
        rows, best = [], set()
        for lang in langs + ["avg"]:
            values = [run.average(v, condition) if lang == "avg" else run.accuracy(v, condition, lang)
                      for v in variants]
            best |= {(len(rows), j) for j in _best(values)}
            rows.append([lang + (" †" if lang in seen_any else "") if lang != "avg" else "average", *values])
        counts = sorted({len(i) for k, by in run.correct.items() if k[2:] == condition for i in by.values()})
        tables.append(Table("per_language", f"Table 1 — accuracy (%) per language: {_cname(condition)}",
                            ["language", *map(_vname, variants)], rows, ["text"] + ["acc"] * len(variants), best,
                            f"Best per language in bold. † seen in alignment training. Items per language: "
                            f"{', '.join(map(str, counts))}."))
    variants, conditions = run.variants(), run.conditions()
    rows = []
    for v in variants:  # Table 2: averages per model and setting
        values = [run.average(v, c) for c in conditions]
        present = [x for x in values if x is not None]
        rows.append([_vname(v), *values, float(np.mean(present)) if present else None])
    best = {(i, j) for j in range(1, len(conditions) + 2) for i in _best([r[j] for r in rows], 0)}
    tables.append(Table("per_model", "Table 2 — average accuracy (%) over languages, per model and setting",
                        ["model / setting", *map(_cname, conditions), "mean"], rows,
                        ["text"] + ["acc"] * (len(conditions) + 1), best, "Best per column in bold."))
    tasks = list(dict.fromkeys(c[0] for c in conditions))
    rows, best = [], set()
    for task in tasks:  # Table 3: averages per task
        values = []
        for v in variants:
            accs = [a for c in conditions if c[0] == task if (a := run.average(v, c)) is not None]
            values.append(float(np.mean(accs)) if accs else None)
        best |= {(len(rows), j) for j in _best(values)}
        rows.append([task, *values])
    tables.append(Table("per_task", "Table 3 — average accuracy (%) per task (over languages and modes)",
                        ["task", *map(_vname, variants)], rows, ["text"] + ["acc"] * len(variants), best,
                        "Best per task in bold."))
    seen_rows, sig_rows, sig_best = [], [], set()
    for condition in conditions:
        for model, setting in run.variants(condition):
            base = run.correct.get((model, "base", *condition))
            if setting == "base" or base is None:
                continue
            aligned = run.correct[(model, setting, *condition)]
            shared = [lang for lang in langs if lang in aligned and lang in base]
            seen = [lang for lang in shared if lang in run.seen(setting)]
            unseen = [lang for lang in shared if lang not in run.seen(setting)]
            cells = []
            for group in (seen, unseen):
                b, a = run.average((model, "base"), condition, group), run.average((model, setting), condition, group)
                cells += [b, a, a - b if group else None]
            seen_rows.append([f"{_vname((model, setting))} — {_cname(condition)}", ",".join(seen) or "–", *cells])
            for lang in shared:
                idx = sorted(set(aligned[lang]) & set(base[lang]))
                delta, p = paired_bootstrap(np.array([aligned[lang][i] for i in idx]),
                                            np.array([base[lang][i] for i in idx]))
                if p < ALPHA:
                    sig_best.add((len(sig_rows), 5))
                sig_rows.append([f"{_vname((model, setting))} — {_cname(condition)}", lang, len(idx),
                                 run.accuracy((model, "base"), condition, lang),
                                 run.accuracy((model, setting), condition, lang), delta, p])
    tables.append(Table("seen_unseen", "Table 4 — languages seen vs unseen in alignment training (average %)",
                        ["model / setting — condition", "seen", "base seen", "aligned seen", "Δ seen",
                         "base unseen", "aligned unseen", "Δ unseen"], seen_rows,
                        ["text", "text"] + ["acc", "acc", "delta"] * 2, set(),
                        "Seen = the setting's source languages and its target."))
    tables.append(Table("significance", f"Table 5 — aligned vs base per language: paired bootstrap "
                                        f"({RESAMPLES} resamples, seed {SEED})",
                        ["model / setting — condition", "language", "n", "base", "aligned", "Δ (pp)", "p"], sig_rows,
                        ["text", "text", "int", "acc", "acc", "delta", "p"], sig_best,
                        f"Items paired by index; two-sided p-value; Δ in bold where p < {ALPHA}."))
    return [t for t in tables if t.rows]  # a run without adapters has no comparison tables


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def build_figures(run: RunData) -> list[ReportFigure]:
    """Per model and condition: accuracy bars per language, base vs each setting; then the
    lens and PCA figures the analysis steps drew (redrawn from their files if missing)."""
    from matplotlib.figure import Figure

    from polyalign import lens, pca

    figures, langs = [], run.langs()
    for condition in run.conditions():
        for model in dict.fromkeys(v[0] for v in run.variants(condition)):
            settings = [s for m, s in run.variants(condition) if m == model]
            fig = Figure(figsize=(max(6.0, 0.45 * len(langs) * max(1, len(settings) / 2) + 2), 3.4))
            ax = fig.add_subplot()
            width = 0.8 / len(settings)
            x = np.arange(len(langs))
            for k, setting in enumerate(settings):
                values = [run.accuracy((model, setting), condition, lang) for lang in langs]
                ax.bar(x + (k - (len(settings) - 1) / 2) * width,  # a missing language: no bar
                       [100 * v if v is not None else np.nan for v in values], width, label=setting)
            ax.set_xticks(x, langs)
            ax.set_ylabel("accuracy (%)")
            ax.set_ylim(0, 100)
            ax.set_title(f"{short(model)}: {_cname(condition)}", fontsize=10)
            ax.legend(fontsize=8, ncol=len(settings), loc="upper right")
            ax.grid(axis="y", alpha=0.3)
            slug = re.sub(r"[^A-Za-z0-9]+", "_", short(model))
            figures.append(ReportFigure(f"bars_{len(figures):02d}_{slug}_{condition[0]}_{condition[1]}",
                                        f"Accuracy per language — {short(model)}, {_cname(condition)}", _png(fig)))
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
            figures.append(ReportFigure(f"{entry['kind']}_{entry['key'][:8]}_{png.stem}",
                                        f"{entry['kind']} ({png.stem}): {label}", png.read_bytes()))
    return figures


def _header(run: RunData) -> tuple[str, list[str]]:
    exp = run.experiment
    title = f"polyalign report: {exp.get('name') or run.run_dir.name}"
    lines = [exp.get("description", "")] if exp.get("description") else []
    lines.append(f"Run folder: {run.run_dir}. Models: {', '.join(map(short, exp.get('models', [])))}. "
                 f"Languages: {', '.join(run.langs())}.")
    for s in exp.get("alignment", []):
        lines.append(f"Setting {s['name']}: {s['task']} questions {','.join(s['sources'])} → {s['target']}, "
                     f"{s['per_language']} pairs per language.")
    return title, lines


def write_report(run_dir: str | Path, fmt: str = "md", out: str | Path | None = None) -> Path:
    """Write the report of a run folder; md and latex put their PNGs in <out stem>_files/."""
    if fmt not in FORMATS:
        raise PolyalignError(f"unknown report format '{fmt}' (choose from {', '.join(FORMATS)})")
    run = load_run(run_dir)
    if not run.correct:
        raise PolyalignError(f"{run_dir}: the store holds no evaluation results yet")
    out = Path(out) if out else Path(run_dir) / f"report.{EXTENSIONS[fmt]}"
    tables = build_tables(run)
    figures = build_figures(run) if fmt != "csv" else []
    files_dir = f"{out.stem}_files"
    if fmt in ("md", "latex"):
        for f in figures:
            (out.parent / files_dir).mkdir(parents=True, exist_ok=True)
            (out.parent / files_dir / f"{f.name}.png").write_bytes(f.png)
    title, lines = _header(run)
    text = {"md": lambda: render_md(title, lines, tables, figures, files_dir),
            "html": lambda: render_html(title, lines, tables, figures), "csv": lambda: render_csv(tables),
            "latex": lambda: render_latex(title, lines, tables, figures, files_dir)}[fmt]()
    atomic_write_text(out, text)
    return out


def cmd_report(args: argparse.Namespace) -> int:
    print(f"report: {write_report(args.run_dir, args.format, args.out)}")
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register `polyalign report` on the top-level subparsers."""
    p = subparsers.add_parser("report", help="tables, significance tests and figures of a `polyalign run` folder")
    p.add_argument("run_dir", help="the folder of a `polyalign run` (holds results.sqlite)")
    p.add_argument("--format", choices=FORMATS, default="md", help="md, html (one self-contained file), csv, latex")
    p.add_argument("--out", help="output file (default: RUN_DIR/report.<ext>)")
    p.set_defaults(func=cmd_report, out_is_file=True)
    return p
