"""Tables from saved results: every number here is recomputed from per-item samples."""
from __future__ import annotations

from pathlib import Path

from polyalign.results import read_samples, summarize


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
