"""Power of the demo's headline test for a few evaluation designs, estimated on dev items only.

The demo's headline is the exact sign test over benchmark items (per item: languages fixed minus
broken). Translations of one review are correlated, so at a fixed number of evaluations a design
with fewer languages and more items can have more power. This script resamples the per-item
results of the demo recipe on dev items 200:250 (configs/examples/demo_recipe_dev.yaml) to
estimate, for each design, the chance that the sign test gives p < 0.05. Dev effects come from the
recipe chosen on the same items, so the estimates are optimistic; they rank designs, no more.

    python scripts/demo_design_power.py runs/demo_recipe_dev
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from polyalign.evaluation.stats import sign_test

LANGS = ["en", "zh", "es", "de", "ru", "hi", "sw"]
DESIGNS = [(LANGS, 80), (["en", "zh", "es", "ru", "hi"], 120), (["zh", "es", "ru", "hi"], 120), (LANGS, 120)]


def find_eval(run: Path, steps: int | None, grad_accum: int | None, lr: float | None) -> Path:
    """The eval step of the adapter trained with this recipe (None, None, None: the base model)."""
    adapters = {}
    for done in run.glob("steps/train-*/done.json"):
        train = json.loads(done.read_text())["config"]["train"]
        adapters[done.parent.name[len("train-") :]] = (
            train.get("max_steps"),
            train.get("grad_accum"),
            train.get("learning_rate"),
        )
    for done in run.glob("steps/eval-*/done.json"):
        adapter = json.loads(done.read_text())["config"]["adapter"]
        recipe = next((r for key, r in adapters.items() if adapter and adapter.startswith(key)), (None,) * 3)
        if recipe == (steps, grad_accum, lr):
            return done.parent
    raise SystemExit(f"error: no eval step for recipe {(steps, grad_accum, lr)} in {run}")


def correct(step: Path) -> np.ndarray:
    """[items, langs] 1 where the prediction is the gold label, items in index order."""
    columns = []
    for lang in LANGS:
        rows = [json.loads(line) for line in (step / "eval" / "samples" / f"emotion_{lang}.jsonl").open()]
        columns.append([int(r["pred"] == r["gold"]) for r in sorted(rows, key=lambda r: r["index"])])
    return np.array(columns).T


def power(delta: np.ndarray, langs: list[str], n_items: int, resamples: int, seed: int = 0) -> float:
    """Share of bootstrap designs of `n_items` items whose item sign test is significant and positive."""
    net = delta[:, [LANGS.index(lang) for lang in langs]].sum(axis=1)  # [items]
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(resamples):
        sample = net[rng.integers(0, len(net), n_items)]
        better, worse = int((sample > 0).sum()), int((sample < 0).sum())
        hits += better > worse and sign_test(better, worse) < 0.05
    return hits / resamples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run folder of configs/examples/demo_recipe_dev.yaml")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    base = correct(find_eval(args.run, None, None, None))
    aligned = correct(find_eval(args.run, 10, 4, 2.0e-3))  # the demo recipe: 10 steps x 16 pairs at 2e-3
    delta = aligned - base  # [items, langs]
    print("dev gain per language (pp):", {lang: round(100 * float(d), 1) for lang, d in zip(LANGS, delta.mean(0))})
    print("| languages | items | evaluations per model | power (dev estimate) |\n|---|---|---|---|")
    for langs, n_items in DESIGNS:
        estimate = power(delta, langs, n_items, args.resamples)
        print(f"| {','.join(langs)} | {n_items} | {len(langs) * n_items} | {estimate:.3f} |")


if __name__ == "__main__":
    main()
