"""The lens and PCA steps of an experiment's plan: one analysis spec on one model and its adapters.

Its key holds the model's identity, the adapters' train-step keys, the declared spec (items
defaulting to the experiment's), the languages, the dtype and the input hashes of the evaluation
inputs it reads (for PCA, with the English pivot).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from polyalign.study.step_context import StepContext
from polyalign.study.steps import Step, step_key


def analysis_step(ctx: StepContext, kind: str, model: str, mid: dict, spec, adapters: dict, keys: dict) -> Step:
    codes, inputs = ctx.eval_inputs(spec.task, spec.langs, spec.mode)
    if kind == "pca":
        inputs = ctx.eval_inputs(spec.task, list(dict.fromkeys([*codes, "en"])), spec.mode)[1]
    declared = {**asdict(spec), "items": spec.items or ctx.exp.items}
    if declared["items"] is None:
        del declared["items"]  # keeps the keys of experiments written before item ranges existed
    config = {"model": mid, "adapters": keys, "spec": declared, "langs": codes, "dtype": ctx.exp.dtype, **inputs}
    needs = ((model, None), *((model, a) for a in adapters.values()))

    def run(folder: Path) -> dict:
        meta = _run_analysis(ctx, kind, model, spec, codes, adapters, folder / kind)
        return {"dir": kind, "figures": [str(Path(p).relative_to(folder)) for p in meta["figures"]]}

    label = f"{model} {spec.task} {','.join(codes)}"
    return Step(kind, step_key(kind, config), config, label, run, needs, depends_on=tuple(keys.values()), model=model)


def _run_analysis(ctx: StepContext, kind: str, model: str, spec, codes: list[str], adapters: dict, out: Path) -> dict:
    from polyalign.analysis.lens import run_lens  # torch: only when a step runs
    from polyalign.analysis.pca import run_pca

    net, tokenizer = ctx.models.get(model)
    compare = [(name, ctx.models.get(model, path)[0]) for name, path in adapters.items()]
    # the step's languages, and its items defaulting to the experiment's
    declared = replace(spec, langs=codes, items=spec.items or ctx.exp.items)
    run = run_lens if kind == "lens" else run_pca
    return run(
        net,
        tokenizer,
        declared,
        out,
        data_dir=ctx.data_dir,
        prompts=ctx.prompts,
        label="base",
        compare=compare,
        batch_size=min(ctx.exp.batch_size, 8),
    )
