"""The alignment half of an experiment's plan: one data step per alignment setting (its pairs) and
one train step per model, setting and training seed (its LoRA adapter).

Step builders take the experiment's context (polyalign.study.step_context.StepContext). A step's key
holds only what changes its outputs: the seed enters a train step's key through its train config,
and a data step's key gains `pairing` only for a shuffled control, so the steps of experiments
written before seeds and controls existed keep their keys (and their finished folders).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from polyalign.alignment.alignment_data import PairRequest, build_pairs, write_pairs
from polyalign.alignment.pair_records import held_out_records, question_file
from polyalign.alignment.train_config import recipe_identity
from polyalign.alignment.training import train
from polyalign.alignment.translation import records_translator
from polyalign.core.errors import PolyalignError
from polyalign.core.item_range import parse_items
from polyalign.core.prompts import PromptPack
from polyalign.core.tasks import TaskSpec, load_task, test_file_path
from polyalign.study.experiment_spec import AlignmentSetting, trainings
from polyalign.study.step_context import StepContext
from polyalign.study.steps import Step, step_key

# AlignmentSetting fields that name, train, evaluate or relate a setting but do not change its pairs
NOT_DATA = ("name", "train", "tasks", "modes", "models", "seeds", "control_of")


def data_declared(s: AlignmentSetting) -> dict:
    """The setting's declarations that make its pairs, without the defaults added after runs existed."""
    declared = {k: v for k, v in asdict(s).items() if k not in NOT_DATA}
    if declared["items"] is None:
        del declared["items"]  # keeps the keys of experiments written before item ranges existed
    if declared["pairing"] == "parallel":
        del declared["pairing"]  # likewise for experiments written before shuffled controls
    return declared


def _data_inputs(ctx: StepContext, s: AlignmentSetting, task: TaskSpec) -> dict[str, Path]:
    """The files a setting's pairs are read from, by role (their hashes enter the step's key)."""
    files_in = {f"pair:{lang}": ctx.resolve(p) for lang, p in s.pair_files.items()}
    if s.target_file:
        files_in["target_file"] = ctx.resolve(s.target_file)
    if task.train_file:
        files_in["train_file"] = ctx.data_dir / task.train_file
    if s.items is not None:
        return {
            f"test:{lang}": test_file_path(task, lang, ctx.data_dir)
            for lang in dict.fromkeys([s.target, *s.sources, task.pivot])
        }
    if task.question_file:
        files_in.update(
            {f"question:{lang}": ctx.data_dir / task.question_file.format(lang=lang) for lang in [*s.sources, s.target]}
        )
    return files_in


def data_step(ctx: StepContext, s: AlignmentSetting) -> Step:
    """The step writing a setting's pairs.jsonl (shared by every model and seed trained on it)."""
    task = load_task(s.task)
    files_in = _data_inputs(ctx, s, task)
    config = {
        **ctx.task_id(s.task),
        **data_declared(s),
        "inputs": {role: ctx.store.digest(p) for role, p in sorted(files_in.items())},
    }

    def check() -> None:
        """What build_pairs would refuse, named by the setting's YAML keys (the dry run calls this too)."""
        check_data_sources(ctx, s, task)

    def run(folder: Path) -> dict:
        check()
        request = PairRequest(
            task,
            s.sources,
            s.target,
            s.per_language,
            s.seed,
            ctx.data_dir,
            PromptPack.load(ctx.prompts),
            source_files={lang: str(files_in[f"pair:{lang}"]) for lang in s.pair_files},
            target_file=str(files_in["target_file"]) if s.target_file else None,
            translate=_translator(ctx, s, task, folder),
            items=s.items,
            pairing=s.pairing,
        )
        pairs = build_pairs(request)
        write_pairs(pairs, folder / "pairs.jsonl")
        return {"pairs": "pairs.jsonl", "n": len(pairs)}

    shuffled = ", shuffled" if s.pairing != "parallel" else ""
    return Step(
        "data",
        step_key("data", config),
        config,
        f"{s.name} ({s.task} {','.join(s.sources)}->{s.target}{shuffled})",
        run,
        check=check,
    )


def check_data_sources(ctx: StepContext, s: AlignmentSetting, task: TaskSpec) -> None:
    """The setting's item range against the test files of every language it takes questions from
    (as build_pairs reads them) and per_language against that range; without items, that the
    benchmark ships the target's questions at all."""
    where = f"alignment '{s.name}'"
    items = parse_items(s.items, f"{where}: items")
    if items is not None:
        held_out_records(task, list(dict.fromkeys([s.target, *s.sources])), ctx.data_dir, items, f"{where}: items")
        if s.per_language > len(items):
            raise PolyalignError(
                f"{where}: per_language {s.per_language} is more than the {len(items)} items of items: {items}"
            )
    elif not (s.target_file or s.pair_files or s.translator):
        shipped = task.train_file if s.target == task.pivot else question_file(task, s.target, ctx.data_dir)
        if not shipped:
            raise PolyalignError(
                f"{where}: the benchmark ships no {task.name} training questions in '{s.target}': "
                f"take held-out test items with items: START:STOP (e.g. 250:500), or give target_file"
            )


def _translator(ctx: StepContext, s: AlignmentSetting, task: TaskSpec, folder: Path) -> Callable | None:
    if not s.translator:
        return None
    return records_translator(
        s.translator, task.fields, s.translator_lang_codes, folder / "translations.jsonl", device=ctx.exp.device
    )


def train_steps(ctx: StepContext, model: str, mid: dict, s: AlignmentSetting, data: Step) -> list[tuple[str, Step]]:
    """(stored name, step) of each adapter of `model` on a setting's pairs: one per training seed."""
    steps: list[tuple[str, Step]] = []
    if s.models is not None and model not in s.models:
        return steps
    for name, cfg in trainings(s, ctx.exp.trust_remote_code):
        config = {"model": mid, "data": data.key, "train": recipe_identity(cfg)}

        def run(folder: Path, cfg=cfg) -> dict:
            summary = train(model, ctx.folder(data) / "pairs.jsonl", folder / "train", cfg, resume=True)
            return {"adapter": "train/adapter", "summary": summary}

        key, label = step_key("train", config), f"{model} + {name}"
        steps.append((name, Step("train", key, config, label, run, depends_on=(data.key,), model=model)))
    return steps
