"""The eval step of an experiment's plan: one model (base or adapter) on one task and mode.

Its key holds the model's identity, the adapter's train-step key, the scoring, languages, limit,
items and dtype, and the hashes of the task file, prompt pack and test files. Once it ran, its
per-item samples are copied into the run's store (polyalign.study.store), which `polyalign report` reads.
"""

from __future__ import annotations

from pathlib import Path

from polyalign.core.config import from_attributes
from polyalign.evaluation.eval_config import EvalConfig
from polyalign.evaluation.results import read_samples
from polyalign.evaluation.verify_plan import verify_settings
from polyalign.study.step_context import StepContext
from polyalign.study.steps import Step, step_key
from polyalign.study.store_check import unreadable_rows


def eval_step(ctx: StepContext, model, mid, setting, adapter, adapter_key, task, mode) -> Step:
    exp = ctx.exp
    codes, inputs = ctx.eval_inputs(task, exp.languages, mode, exp.items)
    config = {
        "model": mid,
        "adapter": adapter_key,
        "mode": mode,
        "scoring": exp.scoring,
        "langs": codes,
        "limit": exp.limit,
        "dtype": exp.dtype,
        **({"items": exp.items} if exp.items else {}),
        **({"verify": exp.verify} if exp.verify is not None else {}),  # keys of earlier runs unchanged
        **inputs,
    }
    labels = {"model": model, "setting": setting, "task": inputs["task"], "mode": mode, "scoring": exp.scoring}
    key = step_key("eval", config)  # the labels only name the store's rows: not in the key

    def run(folder: Path) -> dict:
        from polyalign.evaluation.evaluate import run_eval  # torch: only when a step runs

        net, tokenizer = ctx.models.get(model, adapter)
        cfg = from_attributes(  # scoring, limit, items, batch size and allow_overlap: the experiment's
            EvalConfig,
            exp,
            model=model,
            task=task,
            langs=",".join(codes),
            mode=mode,
            adapter=adapter,
            data_dir=str(ctx.data_dir),
            prompts=ctx.prompts,
            # the experiment's one `verify` key, as EvalConfig's two (its own verify is not EvalConfig's)
            **{"verify": None, "verify_threshold": None, **verify_settings(exp.verify)},
        )
        results = run_eval(cfg, net, tokenizer, folder / "eval", overwrite=True)
        assert results is not None  # experiments run on one process
        return eval_outputs(results)

    def after(folder: Path, outputs: dict) -> None:
        if ctx.store.count_samples(key, labels) != outputs["n"] or unreadable_rows(ctx.store, key):
            rows = [
                {"lang": lang, "idx": r["index"], "gold": r["gold"], "pred": r["pred"], "scores": r["scores"]}
                for lang in outputs["langs"]
                for r in read_samples(folder / "eval" / "samples" / f"{labels['task']}_{lang}.jsonl")
            ]
            ctx.store.replace_samples(key, labels, rows)

    label = f"{model} {setting} {labels['task']}/{mode}"
    reads = (adapter_key,) if adapter_key else ()
    return Step(
        "eval", key, {**config, "labels": labels}, label, run, ((model, adapter),), after, depends_on=reads, model=model
    )


def eval_outputs(results: dict) -> dict:
    """What an eval step's done.json keeps of results.json."""
    return {
        "dir": "eval",
        "average": results["average"],
        "langs": list(results["languages"]),
        "unscorable": sorted(results.get("unscorable", {})),
        "n": sum(v["n"] for v in results["languages"].values()),
    }
