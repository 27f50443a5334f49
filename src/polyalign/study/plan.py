"""An experiment's plan: every step, in order, with its key, before anything runs.

data (alignment pairs per setting) -> train (per model, setting and training seed) -> eval (the
base model and every adapter, per task and mode) -> lens -> pca. Each step kind is built by its
own unit (alignment_steps, eval_step, analysis_step); this module only walks the declaration.
"""

from __future__ import annotations

from polyalign.study.alignment_steps import data_step, train_steps
from polyalign.study.analysis_step import analysis_step
from polyalign.study.eval_step import eval_step
from polyalign.study.experiment_spec import eval_modes
from polyalign.study.step_context import StepContext
from polyalign.study.steps import Step
from polyalign.study.variants import split_seeded


def plan(ctx: StepContext) -> list[Step]:
    exp, steps = ctx.exp, list[Step]()
    data = {s.name: data_step(ctx, s) for s in exp.alignment}
    steps += data.values()
    tasks_of = {s.name: s.tasks or exp.tasks for s in exp.alignment}
    by_name = {s.name: s for s in exp.alignment}
    for model in exp.models:
        mid = ctx.model_id(model)
        trained = {n: t for s in exp.alignment for n, t in train_steps(ctx, model, mid, s, data[s.name])}
        steps += trained.values()
        adapters: dict[str | None, str] = {
            name: str(ctx.folder(t) / "train" / "adapter") for name, t in trained.items()
        }
        keys: dict[str | None, str] = {name: t.key for name, t in trained.items()}
        variants = [("base", None, exp.tasks)] + [(n, n, tasks_of[split_seeded(n)[0]]) for n in trained]
        for setting, adapter, tasks in variants:
            for task in tasks:
                for mode in eval_modes(exp, task, by_name.get(split_seeded(setting)[0])):
                    steps.append(
                        eval_step(ctx, model, mid, setting, adapters.get(adapter), keys.get(adapter), task, mode)
                    )
        for kind, specs in (("lens", exp.analyses.lens), ("pca", exp.analyses.pca)):
            steps += [analysis_step(ctx, kind, model, mid, spec, adapters, keys) for spec in specs]
    return steps
