"""`polyalign demo`: the README's main job, a small but genuine experiment end to end.

On the embedded default model and the real benchmark: build zh/es => en question pairs
from the SNLI question files, train a short LoRA, evaluate base vs aligned on languages
seen and unseen in training, run the logit lens and PCA on a few items, and write the
HTML report. It is an ordinary `polyalign run` experiment (written to RUN_DIR/demo.yaml),
so re-running it skips every finished step.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from polyalign.experiment import run_experiment
from polyalign.report import write_report
from polyalign.tasks import resolve_data_dir


def demo_experiment(data_dir: Path, model: str, quick: bool) -> dict:
    """The demo's experiment: sized to finish in well under 20 minutes on 2 CPU cores."""
    pack = data_dir / "prompts.json"
    return {
        "name": "demo",
        "description": "polyalign demo: zh/es => en SNLI question alignment on the default model",
        "models": [model],
        "alignment": [{"name": "zh-es_en", "task": "snli", "sources": ["zh", "es"], "target": "en",
                       "per_language": 32 if quick else 200,
                       "train": {"max_steps": 2 if quick else 12, "learning_rate": 2e-4, "eval_steps": 6,
                                 "save_steps": 6, "logging_steps": 2, "val_size": 0.05}}],
        "tasks": ["snli"],
        "modes": ["english"],
        "languages": ["en", "zh", "es", "de", "ja", "sw"],
        "limit": 4 if quick else 20,
        "data_dir": str(data_dir),
        "prompts": str(pack) if pack.exists() else None,
        "analyses": {"lens": {"task": "emotion", "langs": ["zh", "ja"], "mode": "native", "limit": 3 if quick else 8},
                     "pca": {"task": "emotion", "langs": ["en", "de", "zh", "sw"], "layers": [6, 12, "last"],
                             "pooling": "mean", "limit": 3 if quick else 16}},
    }


def run_demo(out: Path, data_dir: str | None = None, model: str = "gemma-3-270m", quick: bool = False) -> int:
    data = resolve_data_dir(data_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spec = demo_experiment(data, model, quick)
    if spec["prompts"] is None:
        del spec["prompts"]
    path = out / "demo.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
    print(f"[polyalign demo] experiment: {path} (first use of {model} converts its packaged weights, ~1 min)")
    run_experiment(path, out)
    report = write_report(out, "html")
    print(f"[polyalign demo] report: {report.resolve()}")
    return 0
