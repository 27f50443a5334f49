"""`polyalign run EXPERIMENT.yaml`: one file declares a whole study, and every step runs once.

Steps, in order: data (alignment pairs per setting) -> train (a LoRA adapter per model and
setting) -> eval (the base model and every adapter, per task and mode) -> lens -> pca. A step's
key is the sha256 of its resolved configuration plus the keys or content hashes of its inputs
(model files, benchmark files, prompt pack, earlier steps). It writes into
RUN_DIR/steps/<kind>-<key[:12]>/ and, only once its outputs are in place, a done.json marker
holding that key. A re-run skips every step whose marker matches, so after a crash or an edit
only what is new runs; an interrupted training or evaluation resumes inside its folder.
Per-item results land in RUN_DIR/results.sqlite (polyalign.store), read by `polyalign report`.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Callable

import yaml

from polyalign.alignment_data import build_pairs, question_file_records, translate_records, write_pairs
from polyalign.errors import PolyalignError
from polyalign.evaluate import RULES, EvalConfig, check_config, run_eval
from polyalign.languages import get_language, parse_languages
from polyalign.lens import MIN_ITEMS, run_lens
from polyalign.pca import POOLINGS, run_pca
from polyalign.prompts import PromptPack, check_mode, default_pack_path
from polyalign.results import read_samples
from polyalign.store import Step, Store, execute_steps, step_folder, step_key
from polyalign.tasks import load_task, read_records, resolve_data_dir, test_file_path
from polyalign.training import TrainConfig, _apply, load_config, train
from polyalign.training import check_config as check_train_config

DTYPES = ("float32", "bfloat16", "float16")


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


@dataclass
class LensSpec:
    """A logit-lens analysis of the base model and every adapter (paper Figure 1)."""

    task: str
    langs: list[str]
    mode: str = "native"  # prompt label words
    limit: int | None = 100  # first N items per language (at least 3; None: all)
    layers: list[int | str] | None = None  # 1-based layers or 'last' (None: all)


@dataclass
class PcaSpec:
    """A PCA of intermediate representations of the base model and every adapter (paper Figure 2)."""

    task: str
    langs: list[str]
    layers: list[int | str] = field(default_factory=lambda: ["last"])
    pooling: str = "mean"  # mean over the item's tokens, or its last token
    limit: int | None = 100
    mode: str = "english"


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
    scoring: str = "exact"  # exact (full label log-prob) or prefix (the paper's rule)
    languages: list[str] = field(default_factory=lambda: ["all"])  # evaluation languages
    limit: int | None = None  # first N test items per language (None: all)
    analyses: Analyses = field(default_factory=Analyses)
    name: str = ""  # default run folder runs/<name> (else the file's stem)
    description: str = ""
    data_dir: str | None = None  # benchmark folder (default: $POLYALIGN_DATA or ../shared/...)
    prompts: str | None = None  # prompt pack; relative: looked up in data_dir, then next to the YAML
    batch_size: int = 16
    device: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False


def _coerce(value, hint, where: str):
    """`value` from YAML checked against a dataclass field's type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        error = None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except PolyalignError as exc:
                error = error or exc
        raise error
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is list:
        if isinstance(value, str) and args[0] is str:
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, dict) and dataclasses.is_dataclass(args[0]):
            value = [value]
        if not isinstance(value, list):
            raise PolyalignError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise PolyalignError(f"{where}: expected a mapping of key: value, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") if args else v for k, v in value.items()}
    ok = {bool: isinstance(value, bool), int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool), str: isinstance(value, str)}
    if not ok.get(hint, True):
        raise PolyalignError(f"{where}: {value!r} is not a {hint.__name__}")
    return float(value) if hint is float else value


def _build(cls, raw, where: str):
    if not isinstance(raw, dict):
        raise PolyalignError(f"{where}: expected a mapping of key: value, got {raw!r}")
    hints, known = typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(raw) - set(known)))
    if unknown:
        raise PolyalignError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
    missing = [n for n, f in known.items() if n not in raw and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise PolyalignError(f"{where}: missing required key(s) {', '.join(missing)}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in raw.items()})


def apply_overrides(raw: dict, overrides) -> dict:
    """`key=value` items (dotted keys, list indices as numbers, values parsed as YAML) into `raw`."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise PolyalignError(f"override '{item}' is not key=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise PolyalignError(f"override '{item}': value is not valid YAML") from None
        node, parts = raw, key.strip().split(".")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not (part.isdigit() and int(part) < len(node)):
                    raise PolyalignError(f"override '{key}': '{part}' is not an index of a {len(node)}-item list")
                part = int(part)
            elif not isinstance(node, dict):
                raise PolyalignError(f"override '{key}': '{parts[depth - 1]}' holds no keys")
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
    return raw


def train_config(setting: AlignmentSetting, trust_remote_code: bool = False) -> TrainConfig:
    """The paper's recipe (packaged YAML) with the setting's `train` overrides, typed and checked."""
    values = asdict(load_config())
    _apply(setting.train, values, typing.get_type_hints(TrainConfig), f"alignment '{setting.name}' train")
    cfg = TrainConfig(**values)
    cfg.trust_remote_code = cfg.trust_remote_code or trust_remote_code
    check_train_config(cfg)
    return cfg


def _check_layers(layers, where: str) -> None:
    for layer in layers or []:
        if layer != "last" and not (isinstance(layer, int) and layer >= 1):
            raise PolyalignError(f"{where}: layer {layer!r} is not a layer number (1, 2, ...) or 'last'")


def check_experiment(exp: Experiment) -> None:
    """Everything that needs neither models nor data: names, languages, tasks, modes, training keys."""
    if not exp.models or len(set(exp.models)) != len(exp.models):
        raise PolyalignError("models: give at least one model, each once")
    if exp.scoring not in RULES:
        raise PolyalignError(f"scoring: unknown '{exp.scoring}' (choose from {', '.join(RULES)})")
    if exp.dtype is not None and exp.dtype not in DTYPES:
        raise PolyalignError(f"dtype: unknown '{exp.dtype}' (choose from {', '.join(DTYPES)})")
    if (exp.limit is not None and exp.limit < 1) or exp.batch_size < 1:
        raise PolyalignError("limit and batch_size must be at least 1")
    if len(set(exp.tasks)) != len(exp.tasks) or len(set(exp.modes)) != len(exp.modes):
        raise PolyalignError("tasks and modes: list each once")
    for mode in exp.modes:
        check_mode(mode)
    parse_languages(exp.languages)
    tasks = [load_task(t).name for t in exp.tasks]
    names = [s.name for s in exp.alignment]
    if len(set(names)) != len(names) or "base" in names or not all(re.fullmatch(r"[\w.+-]+", n) for n in names):
        raise PolyalignError(f"alignment names must be distinct words other than 'base' (got {names})")
    for s in exp.alignment:
        where = f"alignment '{s.name}'"
        load_task(s.task)
        parse_languages(s.sources)
        get_language(s.target)
        if s.target in s.sources or s.per_language < 1:
            raise PolyalignError(f"{where}: target among sources, or per_language < 1")
        if set(s.pair_files) - set(s.sources):
            raise PolyalignError(f"{where}: pair_files for languages that are not sources")
        if any(load_task(t).name not in tasks for t in s.tasks or []):
            raise PolyalignError(f"{where}: tasks {s.tasks} must be among the experiment's tasks {exp.tasks}")
        train_config(s, exp.trust_remote_code)
    for kind, specs in (("lens", exp.analyses.lens), ("pca", exp.analyses.pca)):
        for spec in specs:
            load_task(spec.task)
            parse_languages(spec.langs)
            check_mode(spec.mode)
            _check_layers(spec.layers, f"analyses.{kind}")
            if spec.limit is not None and spec.limit < MIN_ITEMS:
                raise PolyalignError(f"analyses.{kind}: limit must be at least {MIN_ITEMS}")
            if kind == "pca" and spec.pooling not in POOLINGS:
                raise PolyalignError(f"analyses.pca: unknown pooling '{spec.pooling}' ({', '.join(POOLINGS)})")


def load_experiment(path: str | Path, overrides=()) -> Experiment:
    """Read, override, type-check and validate an experiment file (runs nothing)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolyalignError(f"{path}: cannot read experiment: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PolyalignError(f"{path}: malformed YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise PolyalignError(f"{path}: an experiment file must be a mapping of key: value")
    exp = _build(Experiment, apply_overrides(raw, overrides), str(path))
    check_experiment(exp)
    return exp


def validate_experiment(path: str | Path, overrides=(), data: bool = False) -> tuple[Experiment, list[str]]:
    """What `polyalign run --dry-run` does: load and check the file (and, with `data`, that every
    evaluation renders from the benchmark); returns notes on input files that must be supplied."""
    exp = load_experiment(path, overrides)
    notes: list[str] = []
    if data:
        runner = Runner(exp, None, Path(path).resolve().parent)
        checks = [(t, exp.languages, m) for t in exp.tasks for m in exp.modes]
        for spec in [*exp.analyses.lens, *exp.analyses.pca]:
            checks.append((spec.task, spec.langs, spec.mode))
        for task, langs, mode in checks:
            runner.eval_inputs(task, langs, mode)
        for s in exp.alignment:
            named = [*s.pair_files.values(), *([s.target_file] if s.target_file else [])]
            notes += [f"alignment '{s.name}': supply {runner.resolve(f)}" for f in named
                      if not runner.resolve(f).exists()]
    return exp, notes


class Runner:
    """Plans an experiment's steps (all keys known before anything runs) and executes them."""

    def __init__(self, exp: Experiment, run_dir: str | Path, base_dir: str | Path = "."):
        self.exp, self.run_dir, self.base = exp, Path(run_dir or "."), Path(base_dir)
        self.data_dir = resolve_data_dir(exp.data_dir)
        self.prompts = str(self.resolve(exp.prompts)) if exp.prompts else None
        self.store = Store(self.run_dir if run_dir else None)  # no run folder: in memory, validation only
        self.loaded: dict[tuple, tuple] = {}  # (model, adapter) -> (model, tokenizer), loaded on first use
        self.checked: dict[tuple, tuple] = {}  # eval_inputs, computed once per (task, languages, mode)
        self.executed: list[Step] = []
        self.skipped: list[Step] = []

    def resolve(self, name: str) -> Path:
        path = Path(name).expanduser()
        if path.is_absolute():
            return path
        found = [root / path for root in (self.data_dir, self.base) if (root / path).exists()]
        return found[0] if found else self.data_dir / path

    def folder(self, step: Step) -> Path:
        return step_folder(self.run_dir, step)

    # identities of inputs ------------------------------------------------------------------
    def model_id(self, model: str) -> dict:
        from polyalign.models import ALIASES

        if model in ALIASES:
            return {"alias": model, "sha256": ALIASES[model].sha256}
        path = Path(model).expanduser()
        if path.is_dir():
            return {"folder": {p.name: self.store.digest(p) for p in sorted(path.iterdir()) if p.is_file()}}
        return {"hub": model}

    def task_id(self, task: str) -> dict:
        spec = load_task(task)
        path = Path(task) if Path(task).suffix in (".yaml", ".yml") else Path(str(files("polyalign") / "tasks" /
                                                                                  f"{spec.name}.yaml"))
        return {"task": spec.name, "task_file": self.store.digest(path),
                "pack": self.store.digest(self.prompts or default_pack_path())}

    def eval_inputs(self, task: str, langs: list[str], mode: str) -> tuple[list[str], dict]:
        """Resolved language codes (checked against data and pack) and the test files' hashes."""
        key = (task, tuple(langs), mode)
        if key not in self.checked:
            spec, _, codes = check_config(EvalConfig(model="-", task=task, langs=",".join(langs), mode=mode,
                                                     data_dir=str(self.data_dir), prompts=self.prompts))
            tests = {lang: self.store.digest(test_file_path(spec, lang, self.data_dir))
                     for lang in [*codes, spec.pivot]}
            self.checked[key] = codes, {**self.task_id(task), "tests": tests}
        return self.checked[key]

    # models --------------------------------------------------------------------------------
    def model(self, model: str, adapter: str | None = None):
        if (model, adapter) not in self.loaded:
            from polyalign.models import load_model

            exp = self.exp
            self.loaded[(model, adapter)] = load_model(model, adapter, exp.device, exp.dtype, exp.trust_remote_code)
        return self.loaded[(model, adapter)]

    def release(self, keep=()) -> None:
        for pair in [p for p in self.loaded if p not in keep]:
            del self.loaded[pair]
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # the plan ------------------------------------------------------------------------------
    def plan(self) -> list[Step]:
        exp, steps = self.exp, []
        data = {s.name: self.data_step(s) for s in exp.alignment}
        steps += data.values()
        for model in exp.models:
            mid = self.model_id(model)
            trained = {s.name: self.train_step(model, mid, s, data[s.name]) for s in exp.alignment}
            steps += trained.values()
            adapters = {name: str(self.folder(t) / "train" / "adapter") for name, t in trained.items()}
            keys = {name: t.key for name, t in trained.items()}
            variants = [("base", None, exp.tasks)] + [(s.name, s.name, s.tasks or exp.tasks) for s in exp.alignment]
            for setting, adapter, tasks in variants:
                for task in tasks:
                    for mode in exp.modes:
                        steps.append(self.eval_step(model, mid, setting, adapters.get(adapter), keys.get(adapter),
                                                    task, mode))
            for kind, specs in (("lens", exp.analyses.lens), ("pca", exp.analyses.pca)):
                steps += [self.analysis_step(kind, model, mid, spec, adapters, keys) for spec in specs]
        return steps

    def data_step(self, s: AlignmentSetting) -> Step:
        task = load_task(s.task)
        files_in = {f"pair:{lang}": self.resolve(p) for lang, p in s.pair_files.items()}
        if s.target_file:
            files_in["target_file"] = self.resolve(s.target_file)
        if task.train_file:
            files_in["train_file"] = self.data_dir / task.train_file
        if task.question_file:
            files_in.update({f"question:{lang}": self.data_dir / task.question_file.format(lang=lang)
                             for lang in [*s.sources, s.target]})
        config = {**self.task_id(s.task), **{k: v for k, v in asdict(s).items() if k not in ("name", "train", "tasks")},
                  "inputs": {role: self.store.digest(p) for role, p in sorted(files_in.items())}}

        def run(folder: Path) -> dict:
            pack = PromptPack.load(self.prompts)
            sources = {lang: str(files_in[f"pair:{lang}"]) for lang in s.pair_files}
            target = str(files_in["target_file"]) if s.target_file else None
            if not target and s.target != task.pivot and self._has_question(task, s.target):
                english = read_records(self.data_dir / task.train_file)  # question files are parallel to it
                for lang in [s.target, *s.sources]:
                    if lang not in sources and self._has_question(task, lang):
                        path = folder / f"records_{lang}.jsonl"
                        write_pairs(question_file_records(task, lang, self.data_dir, english), path)
                        sources[lang] = str(path)
                target = sources.pop(s.target)
            pairs = build_pairs(task, s.sources, s.target, s.per_language, s.seed, self.data_dir, pack, sources,
                                target, self._translator(s, task, folder) if s.translator else None)
            write_pairs(pairs, folder / "pairs.jsonl")
            return {"pairs": "pairs.jsonl", "n": len(pairs)}

        return Step("data", step_key("data", config), config, f"{s.name} ({s.task} {','.join(s.sources)}->{s.target})",
                    run)

    def _has_question(self, task, lang: str) -> bool:
        return bool(task.question_file and task.train_file and
                    (self.data_dir / task.question_file.format(lang=lang)).exists())

    def _translator(self, s: AlignmentSetting, task, folder: Path) -> Callable:
        codes = s.translator_lang_codes

        def translate(records: list[dict], src: str, tgt: str) -> list[dict]:
            chosen = {"src": codes.get("src", codes.get(src)), "tgt": codes.get("tgt", codes.get(tgt))}
            return translate_records(records, task.fields, src, tgt, s.translator, 16, folder / "translations.jsonl",
                                     {k: v for k, v in chosen.items() if v}, device=self.exp.device)

        return translate

    def train_step(self, model: str, mid: dict, s: AlignmentSetting, data: Step) -> Step:
        cfg = train_config(s, self.exp.trust_remote_code)
        config = {"model": mid, "data": data.key, "train": asdict(cfg)}

        def run(folder: Path) -> dict:
            summary = train(model, self.folder(data) / "pairs.jsonl", folder / "train", cfg, resume=True)
            return {"adapter": "train/adapter", "summary": summary}

        return Step("train", step_key("train", config), config, f"{model} + {s.name}", run)

    def eval_step(self, model, mid, setting, adapter, adapter_key, task, mode) -> Step:
        exp = self.exp
        codes, inputs = self.eval_inputs(task, exp.languages, mode)
        config = {"model": mid, "adapter": adapter_key, "mode": mode, "scoring": exp.scoring, "langs": codes,
                  "limit": exp.limit, "dtype": exp.dtype, **inputs}
        labels = {"model": model, "setting": setting, "task": inputs["task"], "mode": mode, "scoring": exp.scoring}

        def run(folder: Path) -> dict:
            net, tokenizer = self.model(model, adapter)
            cfg = EvalConfig(model=model, task=task, langs=",".join(codes), mode=mode, scoring=exp.scoring,
                             adapter=adapter, limit=exp.limit, data_dir=str(self.data_dir), prompts=self.prompts,
                             batch_size=exp.batch_size)
            results = run_eval(cfg, net, tokenizer, folder / "eval", overwrite=True)
            return {"dir": "eval", "average": results["average"], "langs": codes,
                    "n": sum(v["n"] for v in results["languages"].values())}

        def after(folder: Path, outputs: dict) -> None:
            if self.store.count_samples(step.key, labels) != outputs["n"]:
                rows = [{"lang": lang, "idx": r["index"], "gold": r["gold"], "pred": r["pred"], "scores": r["scores"]}
                        for lang in outputs["langs"]
                        for r in read_samples(folder / "eval" / "samples" / f"{labels['task']}_{lang}.jsonl")]
                self.store.replace_samples(step.key, labels, rows)

        step = Step("eval", step_key("eval", config), {**config, "labels": labels},
                    f"{model} {setting} {labels['task']}/{mode}", run, ((model, adapter),), after)
        return step  # `after` reads `step.key`: the key excludes the labels, which only name the rows

    def analysis_step(self, kind: str, model: str, mid: dict, spec, adapters: dict, keys: dict) -> Step:
        codes, inputs = self.eval_inputs(spec.task, spec.langs, spec.mode)
        if kind == "pca":
            inputs = self.eval_inputs(spec.task, list(dict.fromkeys([*codes, "en"])), spec.mode)[1]
        config = {"model": mid, "adapters": keys, "spec": asdict(spec), "langs": codes, "dtype": self.exp.dtype,
                  **inputs}
        needs = ((model, None), *((model, a) for a in adapters.values()))

        def run(folder: Path) -> dict:
            net, tokenizer = self.model(model)
            compare = [(name, self.model(model, path)[0]) for name, path in adapters.items()]
            common = dict(label="base", compare=compare, mode=spec.mode, batch_size=min(self.exp.batch_size, 8))
            if kind == "lens":
                meta = run_lens(net, tokenizer, spec.task, codes, limit=spec.limit, data_dir=self.data_dir,
                                prompts=self.prompts, out_dir=folder / kind, layers=spec.layers, **common)
            else:
                meta = run_pca(net, tokenizer, spec.task, codes, spec.layers, spec.pooling, spec.limit, self.data_dir,
                               self.prompts, folder / kind, **common)
            return {"dir": kind, "figures": [str(Path(p).relative_to(folder)) for p in meta["figures"]]}

        return Step(kind, step_key(kind, config), config, f"{model} {spec.task} {','.join(codes)}", run, needs)

    # execution -----------------------------------------------------------------------------
    def execute(self, steps: list[Step], log: Callable[[str], None] = print) -> None:
        self.store.set_meta("experiment", asdict(self.exp))
        self.store.set_meta("plan", [{"kind": s.kind, "key": s.key, "label": s.label, "labels": s.config.get("labels"),
                                      "dir": str(self.folder(s).relative_to(self.run_dir))} for s in steps])
        self.store.prune_samples((s.key, s.config["labels"]) for s in steps if s.kind == "eval")
        try:
            self.executed, self.skipped = execute_steps(self.store, self.run_dir, steps, log,
                                                        before=lambda step: self.release(keep=step.needs))
        finally:
            self.release()


def run_experiment(path: str | Path, run_dir: str | Path | None = None, overrides=(),
                   log: Callable[[str], None] = print) -> Runner:
    """Plan and run every step of the experiment at `path` that is not done yet."""
    exp = load_experiment(path, overrides)
    run_dir = Path(run_dir) if run_dir else Path("runs") / (exp.name or Path(path).stem)
    runner = Runner(exp, run_dir, Path(path).resolve().parent)
    try:
        runner.execute(runner.plan(), log)
    finally:
        runner.store.close()
    return runner


def cmd_run(args: argparse.Namespace) -> int:
    if args.dry_run:
        exp, notes = validate_experiment(args.experiment, args.overrides, data=True)
        for note in notes:
            print(f"note: {note}")
        n = len(exp.models)
        evals = sum(len(s.tasks or exp.tasks) for s in exp.alignment) + len(exp.tasks)
        print(f"{args.experiment}: valid; {len(exp.alignment)} data, {n * len(exp.alignment)} train, "
              f"{n * evals * len(exp.modes)} eval, {n * len(exp.analyses.lens)} lens, "
              f"{n * len(exp.analyses.pca)} pca steps")
        return 0
    runner = run_experiment(args.experiment, args.out, args.overrides)
    print(f"ran {len(runner.executed)} steps, skipped {len(runner.skipped)} done earlier; "
          f"results: {runner.run_dir / 'results.sqlite'}; next: polyalign report {runner.run_dir}")
    return 0


class _IntermixedParser(argparse.ArgumentParser):
    """Accepts overrides after options (`run X.yaml --out DIR key=value`), which plain argparse
    rejects once the positionals were matched."""

    _nested = False

    def parse_known_args(self, args=None, namespace=None):
        if self._nested:
            return super().parse_known_args(args, namespace)
        self._nested = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._nested = False


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register `polyalign run` on the top-level subparsers."""
    p = subparsers.add_parser("run", help="run an experiment YAML end to end (data, train, eval, lens, pca); "
                                          "steps already done are skipped")
    if type(p) is argparse.ArgumentParser:
        p.__class__ = _IntermixedParser
    p.add_argument("experiment", help="experiment YAML (see configs/paper/)")
    p.add_argument("--out", help="run folder (default: runs/<name>)")
    p.add_argument("--dry-run", action="store_true", help="validate the file and count its steps; run nothing")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides parsed as YAML, e.g. limit=20 alignment.0.train.max_steps=2")
    p.set_defaults(func=cmd_run)
    return p
