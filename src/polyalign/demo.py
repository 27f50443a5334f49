"""`polyalign demo`: the README's main job, a small but real run on the default model.

For now it evaluates the embedded default model on the real benchmark (emotion,
English labels, exact scoring, all 20 languages at an equal limit) with the paper's
prompts when the benchmark folder has them, else with polyalign's own pack.
"""
from __future__ import annotations

from pathlib import Path

from polyalign.evaluate import EvalConfig, check_config, run_eval
from polyalign.models import load_model
from polyalign.report import accuracy_table
from polyalign.tasks import resolve_data_dir


def run_demo(out: Path, data_dir: str | None = None, model: str = "gemma-3-270m", quick: bool = False) -> int:
    data = resolve_data_dir(data_dir)
    paper_pack = data / "prompts.json"
    cfg = EvalConfig(model=model, task="emotion", langs="all", mode="english", scoring="exact",
                     limit=4 if quick else 20, data_dir=str(data),
                     prompts=str(paper_pack) if paper_pack.exists() else None)
    check_config(cfg)
    print(f"[polyalign demo] loading {model} (first use converts the packaged weights, about a minute)")
    net, tokenizer = load_model(model)
    results = run_eval(cfg, net, tokenizer, out / "eval-emotion")
    print(accuracy_table({model: results}))
    print(f"[polyalign demo] per-item results: {out / 'eval-emotion' / 'samples'}")
    print(f"[polyalign demo] summary: {out / 'eval-emotion' / 'results.json'}")
    return 0
