"""What an experiment file declares: models, alignment settings, tasks, modes, analyses.

Dataclasses typed by polyalign.core.config and checked in `__post_init__` (a setting on its own, then
the experiment as a whole); `load_experiment` reads, overrides and validates a file without touching a
model or the benchmark. polyalign.study.experiment runs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from polyalign.alignment.alignment_data import PAIRINGS
from polyalign.alignment.train_config import TrainConfig
from polyalign.analysis.analysis_spec import LensSpec, PcaSpec
from polyalign.core.config import apply_overrides, build, read_mapping
from polyalign.core.declarations import (
    DTYPE_CHOICES,
    RULES,
    check_analysis_limit,
    check_choice,
    check_layer_names,
    check_seed,
    dtype_name,
)
from polyalign.core.errors import PolyalignError
from polyalign.core.item_range import check_overlap, evaluated_range, parse_items, read_provenance
from polyalign.core.languages import get_language, parse_languages
from polyalign.core.prompts import check_mode
from polyalign.core.tasks import load_task
from polyalign.engine.placement import placement_of
from polyalign.evaluation.verify_plan import verify_settings
from polyalign.study.claims_spec import ClaimsSpec, check_claims
from polyalign.study.step_resources import StepResources, check_resources
from polyalign.study.variants import seeded_name


@dataclass
class AlignmentSetting:
    """One question-alignment mixture, and the LoRA adapter trained on it for every model."""

    name: str  # label in tables and figures ('base' is the unaligned model)
    task: str  # whose questions are translated: emotion, snli, paws or a task .yaml
    sources: list[str]  # source languages of the pairs
    target: str = "en"  # target language of the pairs
    per_language: int = 10000  # pairs sampled from each source language
    seed: int = 0  # sampling and shuffling seed
    train: dict = field(default_factory=dict)  # TrainConfig overrides over the paper's recipe
    pair_files: dict[str, str] = field(default_factory=dict)  # LANG: records file, item-parallel with the target
    target_file: str | None = None  # target records (default: the task's train file or question files)
    translator: str | None = None  # seq2seq model translating target records into sources with no file
    translator_lang_codes: dict[str, str] = field(default_factory=dict)  # e.g. {zh: zho_Hans}; NLLB is built in
    tasks: list[str] | None = None  # evaluation tasks of this adapter (default: all of the experiment's)
    modes: list[str] | None = None  # label words this adapter is evaluated with (default: each task's modes)
    models: list[str] | None = None  # the models aligned on it (default: all of the experiment's)
    items: str | None = None  # questions of benchmark test items START:STOP (held out from evaluation)
    seeds: list[int] | None = None  # training seeds, one adapter each, named NAME@s<SEED> (None: train's seed)
    pairing: str = "parallel"  # shuffled: a control pairing each source question with another item's target
    control_of: str | None = None  # the parallel setting a shuffled control is compared with

    def __post_init__(self) -> None:
        check_setting(self)


# what a control shares with the setting it controls; it differs only in pairing, seeds, tasks and modes
CONTROL_SAME: tuple[str, ...] = ("task", "sources", "target", "per_language", "seed", "train", "items")
CONTROL_SAME += ("pair_files", "target_file", "translator", "translator_lang_codes")


@dataclass
class Analyses:
    """Interpretability analyses; each key takes one mapping or a list of them."""

    lens: list[LensSpec] = field(default_factory=list)
    pca: list[PcaSpec] = field(default_factory=list)


@dataclass
class Experiment:
    """A whole study in one YAML file (complete examples: configs/paper/*.yaml)."""

    models: list[str]  # HF ids, local folders or packaged aliases
    alignment: list[AlignmentSetting] = field(default_factory=list)
    tasks: list[str] = field(default_factory=lambda: ["emotion"])  # evaluation tasks
    modes: list[str] = field(default_factory=lambda: ["english"])  # label words: english, native, agnostic
    task_modes: dict[str, list[str]] = field(default_factory=dict)  # TASK: its modes, instead of `modes`
    scoring: str = "exact"  # exact (full label log-prob) or prefix (the paper's rule)
    languages: list[str] = field(default_factory=lambda: ["all"])  # evaluation languages
    limit: int | None = None  # first N test items per language (None: all)
    items: str | None = None  # evaluated benchmark item range START:STOP (with limit: its first N)
    allow_overlap: bool = False  # evaluate adapters on items their training questions came from
    analyses: Analyses = field(default_factory=Analyses)
    name: str = ""  # default run folder runs/<name> (else the file's stem)
    description: str = ""
    data_dir: str | None = None  # benchmark folder (default: $POLYALIGN_DATA or ../shared/...)
    prompts: str | None = None  # prompt pack; relative: looked up in data_dir, then next to the YAML
    batch_size: int = 16
    device: str | None = None
    dtype: str | None = None
    device_map: str | None = None  # auto: eval, lens and PCA spread a model over devices (polyalign.engine.placement)
    max_memory: str | None = None  # with device_map: 70GB per GPU, or 0=70GB,cpu=200GB
    offload_folder: str | None = None  # with device_map: weights that fit no device wait here on disk
    # bf16/fp16 eval steps: true (default: measured threshold), false, a margin or auto (evaluation.verify_plan)
    verify: bool | float | str | None = None
    trust_remote_code: bool = False
    claims: ClaimsSpec | None = None  # the paper's claims and their pre-registered rules (polyalign.reports.claims)
    # --executor ray: CPUs and GPUs per step kind or model (polyalign.study.step_resources)
    resources: dict[str, StepResources] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_experiment(self)


def train_config(setting: AlignmentSetting, trust_remote_code: bool = False) -> TrainConfig:
    """The paper's recipe (TrainConfig's defaults) with the setting's `train` overrides, typed and checked."""
    cfg = build(TrainConfig, setting.train, f"alignment '{setting.name}' train")
    return replace(cfg, trust_remote_code=cfg.trust_remote_code or trust_remote_code)


def trainings(setting: AlignmentSetting, trust_remote_code: bool = False) -> list[tuple[str, TrainConfig]]:
    """(stored name, train config) of each adapter of a setting: one per seed of `seeds`, else one
    with the recipe's own seed under the plain name (so the step keeps its earlier identity)."""
    cfg = train_config(setting, trust_remote_code)
    if setting.seeds is None:
        return [(setting.name, cfg)]
    return [(seeded_name(setting.name, seed), replace(cfg, seed=seed)) for seed in setting.seeds]


def eval_modes(exp: Experiment, task: str, setting: AlignmentSetting | None = None) -> list[str]:
    """The label-word modes `task` is evaluated with: the setting's own list, else the task's entry in
    `task_modes`, else `modes`. Lets one costly mode (claim 8's agnostic labels) run on a few arms only."""
    if setting is not None and setting.modes is not None:
        return setting.modes
    return exp.task_modes.get(task, exp.modes)


def check_modes(exp: Experiment) -> None:
    """Modes are known and listed once; a setting's modes are among each of its tasks' modes."""
    lists = {"modes": exp.modes, **{f"task_modes.{t}": m for t, m in exp.task_modes.items()}}
    lists |= {f"alignment '{s.name}': modes": s.modes for s in exp.alignment if s.modes is not None}
    for where, modes in lists.items():
        if not modes or len(set(modes)) != len(modes):
            raise PolyalignError(f"{where}: list at least one mode, each once")
        for mode in modes:
            check_mode(mode)
    if set(exp.task_modes) - set(exp.tasks):
        raise PolyalignError(f"task_modes: {sorted(set(exp.task_modes) - set(exp.tasks))} are not among tasks")
    for s in exp.alignment:
        for task in s.tasks or exp.tasks:
            if s.modes is not None and set(s.modes) - set(eval_modes(exp, task)):
                raise PolyalignError(
                    f"alignment '{s.name}': modes {s.modes} must be among {task}'s modes {eval_modes(exp, task)}"
                )


def check_setting(s: AlignmentSetting) -> None:
    """One alignment setting on its own: task, languages, counts, files, training keys, items."""
    where = f"alignment '{s.name}'"
    load_task(s.task)
    parse_languages(s.sources)
    get_language(s.target)
    if s.target in s.sources or s.per_language < 1:
        raise PolyalignError(f"{where}: target among sources, or per_language < 1")
    if set(s.pair_files) - set(s.sources):
        raise PolyalignError(f"{where}: pair_files for languages that are not sources")
    if s.tasks is not None and not s.tasks:  # like models: [] and modes: [], never "all tasks"
        raise PolyalignError(f"{where}: tasks: list at least one task (omit the key for all of the experiment's)")
    train_config(s)
    if s.items is not None:
        parse_items(s.items, f"{where}: items")
        if s.pair_files or s.target_file or s.translator:
            raise PolyalignError(
                f"{where}: items takes questions from the benchmark's test files; drop "
                f"pair_files, target_file and translator"
            )


def check_experiment(exp: Experiment) -> None:
    """The experiment as a whole (each setting checked itself): names, languages, tasks, modes, seeds,
    held-out items, analyses and claims; needs neither models nor data."""
    if not exp.models or len(set(exp.models)) != len(exp.models):
        raise PolyalignError("models: give at least one model, each once")
    check_resources(exp.resources, exp.models)
    check_choice(exp.scoring, RULES, "scoring")
    if exp.dtype is not None:
        exp.dtype = dtype_name(exp.dtype)  # one vocabulary: fp32 and float32 alike
        check_choice(exp.dtype, DTYPE_CHOICES, "dtype")
    placement_of(exp.device_map, exp.max_memory, exp.offload_folder)
    verify_settings(exp.verify)
    if (exp.limit is not None and exp.limit < 1) or exp.batch_size < 1:
        raise PolyalignError("limit and batch_size must be at least 1")
    if len(set(exp.tasks)) != len(exp.tasks):  # [] is allowed: an experiment of analyses only (figure1_lens)
        raise PolyalignError("tasks: list each once")
    parse_languages(exp.languages)
    tasks = [load_task(t).name for t in exp.tasks]
    names = [s.name for s in exp.alignment]
    if len(set(names)) != len(names) or "base" in names or not all(re.fullmatch(r"[\w.+-]+", n) for n in names):
        raise PolyalignError(f"alignment names must be distinct words other than 'base' (got {names})")
    for s in exp.alignment:
        where = f"alignment '{s.name}'"
        if s.models is not None and (not s.models or set(s.models) - set(exp.models)):
            raise PolyalignError(f"{where}: models {s.models} must be among the experiment's models {exp.models}")
        if any(load_task(t).name not in tasks for t in s.tasks or []):
            raise PolyalignError(f"{where}: tasks {s.tasks} must be among the experiment's tasks {exp.tasks}")
    check_modes(exp)
    check_seeds_and_controls(exp)
    parse_items(exp.items, "items")
    check_held_out(exp)
    for kind, specs in (("lens", exp.analyses.lens), ("pca", exp.analyses.pca)):
        for spec in specs:
            load_task(spec.task)
            parse_languages(spec.langs)
            check_mode(spec.mode)
            check_layer_names(spec.layers, f"analyses.{kind}")
            parse_items(spec.items, f"analyses.{kind}.items")
            check_analysis_limit(spec.limit, kind, f"analyses.{kind}: limit")
    check_claims(exp)


def check_seeds_and_controls(exp: Experiment) -> None:
    """Seeds are distinct, and a shuffled control names a parallel setting it matches in all but pairing."""
    by_name = {s.name: s for s in exp.alignment}
    for s in exp.alignment:
        where = f"alignment '{s.name}'"
        if s.seeds is not None and (not s.seeds or len(set(s.seeds)) != len(s.seeds) or min(s.seeds) < 0):
            raise PolyalignError(f"{where}: seeds must list distinct whole numbers >= 0 (got {s.seeds})")
        for seed in s.seeds or []:
            check_seed(seed, f"{where}: seeds:")
        check_choice(s.pairing, PAIRINGS, f"{where}: pairing")
        if s.pairing == "parallel":
            if s.control_of is not None:
                raise PolyalignError(f"{where}: control_of is for a setting with pairing: shuffled")
            continue
        items = parse_items(s.items, f"{where}: items")
        if s.per_language < 2 or (items is not None and len(items) < 2):
            raise PolyalignError(f"{where}: a shuffled pairing needs at least 2 items and per_language >= 2")
        other = by_name.get(s.control_of or "")
        if other is None or other.pairing != "parallel":
            raise PolyalignError(
                f"{where}: a shuffled control names the parallel setting it controls with control_of "
                f"(one of {[o.name for o in exp.alignment if o.pairing == 'parallel']})"
            )
        differ = [k for k in CONTROL_SAME if getattr(s, k) != getattr(other, k)]
        if set(s.models or exp.models) - set(other.models or exp.models):
            differ.append("models (a control's must be among its setting's)")
        if differ:
            raise PolyalignError(
                f"{where}: a control differs from '{other.name}' only in pairing, seeds, tasks, modes and models; "
                f"{', '.join(differ)} differ"
            )


def check_held_out(exp: Experiment) -> None:
    """Refuse, before anything runs, evaluations of an adapter on the items it was trained on, and of
    a model folder (one `polyalign merge` wrote records its adapter's items) on its own."""
    analyses: list[LensSpec | PcaSpec] = [*exp.analyses.lens, *exp.analyses.pca]
    analysed = [(a.task, a.items or exp.items, a.limit) for a in analyses]
    guarded = [
        (f"alignment '{s.name}'", [{"task": load_task(s.task).name, "items": s.items}], s.tasks or exp.tasks)
        for s in exp.alignment
        if s.items is not None
    ]
    guarded += [(f"model {m}", read_provenance(m), exp.tasks) for m in exp.models if Path(m).expanduser().is_dir()]
    for what, trained, tasks in guarded:
        for task, items, limit in [(t, exp.items, exp.limit) for t in tasks] + analysed:
            chosen = evaluated_range(parse_items(items), limit, 10**9)  # without data: an unbounded file
            check_overlap(trained, load_task(task).name, chosen, what, exp.allow_overlap)


def load_experiment(path: str | Path, overrides=()) -> Experiment:
    """Read, override, type-check and validate an experiment file (runs nothing)."""
    path = Path(path)
    return build(Experiment, apply_overrides(read_mapping(path, "experiment"), overrides), str(path))
