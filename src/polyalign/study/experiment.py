"""`polyalign run EXPERIMENT.yaml`: one file declares a whole study, and every step runs once.

Steps, in order: data (alignment pairs per setting) -> train (a LoRA adapter per model, setting and
training seed; polyalign.study.alignment_steps) -> eval (the base model and every adapter, per task and
mode) -> lens -> pca. A step's key is the sha256 of its resolved configuration plus the keys or
content hashes of its inputs (model files, benchmark files, prompt pack, earlier steps). It writes into
RUN_DIR/steps/<kind>-<key[:12]>/ and, only once its outputs are in place, a done.json marker
holding that key. A re-run skips every step whose marker matches, so after a crash or an edit
only what is new runs; an interrupted training or evaluation resumes inside its folder.
Per-item results land in RUN_DIR/results.sqlite (polyalign.study.store), read by `polyalign report`.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import asdict
from importlib.resources import files
from pathlib import Path

from polyalign.core.model_names import check_model_name
from polyalign.core.paths import check_output_path
from polyalign.core.prompts import default_pack_path
from polyalign.core.tasks import load_task, resolve_data_dir, test_file_path
from polyalign.evaluation.inputs import check_inputs
from polyalign.evaluation.results import read_samples
from polyalign.study.alignment_steps import data_step, train_steps
from polyalign.study.experiment_spec import Experiment, LensSpec, PcaSpec, load_experiment
from polyalign.study.step_clock import StepClock
from polyalign.study.store import Step, Store, execute_steps, step_folder, step_key
from polyalign.study.variants import split_seeded


def validate_experiment(path: str | Path, overrides=(), data: bool = False) -> tuple[Experiment, list[str]]:
    """What `polyalign run --dry-run` does: load and check the file (and, with `data`, that every
    evaluation renders from the benchmark); returns notes on input files that must be supplied."""
    exp = load_experiment(path, overrides)
    for model in exp.models:  # a typo is refused here, not after the data and training steps ran
        check_model_name(model)
    notes: list[str] = []
    if data:
        runner = Runner(exp, None, Path(path).resolve().parent)
        checks = [(t, exp.languages, m, exp.items) for t in exp.tasks for m in exp.modes]
        analyses: list[LensSpec | PcaSpec] = [*exp.analyses.lens, *exp.analyses.pca]
        for spec in analyses:
            checks.append((spec.task, spec.langs, spec.mode, spec.items or exp.items))
        for task, langs, mode, items in checks:
            runner.eval_inputs(task, langs, mode, items)
        for s in exp.alignment:
            named = [*s.pair_files.values(), *([s.target_file] if s.target_file else [])]
            notes += [
                f"alignment '{s.name}': supply {runner.resolve(f)}" for f in named if not runner.resolve(f).exists()
            ]
    return exp, notes


class Runner:
    """Plans an experiment's steps (all keys known before anything runs) and executes them."""

    def __init__(self, exp: Experiment, run_dir: str | Path | None, base_dir: str | Path = "."):
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
        from polyalign.engine.models import ALIASES

        if model in ALIASES:
            return {"alias": model, "sha256": ALIASES[model].sha256}
        path = Path(model).expanduser()
        if path.is_dir():
            return {"folder": {p.name: self.store.digest(p) for p in sorted(path.iterdir()) if p.is_file()}}
        return {"hub": model}

    def task_id(self, task: str) -> dict:
        spec = load_task(task)
        path = (
            Path(task)
            if Path(task).suffix in (".yaml", ".yml")
            else Path(str(files("polyalign.core") / "tasks" / f"{spec.name}.yaml"))
        )
        return {
            "task": spec.name,
            "task_file": self.store.digest(path),
            "pack": self.store.digest(self.prompts or default_pack_path()),
        }

    def eval_inputs(self, task: str, langs: list[str], mode: str, items: str | None = None) -> tuple[list[str], dict]:
        """Resolved language codes (checked against data, item range and pack) and the test files' hashes."""
        key = (task, tuple(langs), mode, items)
        if key not in self.checked:
            spec, _, codes = check_inputs(task, langs, mode, items, data_dir=self.data_dir, prompts=self.prompts)
            tests = {
                lang: self.store.digest(test_file_path(spec, lang, self.data_dir)) for lang in [*codes, spec.pivot]
            }
            self.checked[key] = codes, {**self.task_id(task), "tests": tests}
        return self.checked[key]

    # models --------------------------------------------------------------------------------
    def model(self, model: str, adapter: str | None = None):
        if (model, adapter) not in self.loaded:
            from polyalign.engine.models import load_model

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
        exp, steps = self.exp, list[Step]()
        data = {s.name: data_step(self, s) for s in exp.alignment}
        steps += data.values()
        tasks_of = {s.name: s.tasks or exp.tasks for s in exp.alignment}
        for model in exp.models:
            mid = self.model_id(model)
            trained = {n: t for s in exp.alignment for n, t in train_steps(self, model, mid, s, data[s.name])}
            steps += trained.values()
            adapters: dict[str | None, str] = {
                name: str(self.folder(t) / "train" / "adapter") for name, t in trained.items()
            }
            keys: dict[str | None, str] = {name: t.key for name, t in trained.items()}
            variants = [("base", None, exp.tasks)] + [(n, n, tasks_of[split_seeded(n)[0]]) for n in trained]
            for setting, adapter, tasks in variants:
                for task in tasks:
                    for mode in exp.modes:
                        steps.append(
                            self.eval_step(model, mid, setting, adapters.get(adapter), keys.get(adapter), task, mode)
                        )
            for kind, specs in (("lens", exp.analyses.lens), ("pca", exp.analyses.pca)):
                steps += [self.analysis_step(kind, model, mid, spec, adapters, keys) for spec in specs]
        return steps

    def eval_step(self, model, mid, setting, adapter, adapter_key, task, mode) -> Step:
        exp = self.exp
        codes, inputs = self.eval_inputs(task, exp.languages, mode, exp.items)
        config = {
            "model": mid,
            "adapter": adapter_key,
            "mode": mode,
            "scoring": exp.scoring,
            "langs": codes,
            "limit": exp.limit,
            "dtype": exp.dtype,
            **({"items": exp.items} if exp.items else {}),
            **inputs,
        }
        labels = {"model": model, "setting": setting, "task": inputs["task"], "mode": mode, "scoring": exp.scoring}

        def run(folder: Path) -> dict:
            from polyalign.evaluation.evaluate import EvalConfig, run_eval  # torch: only when a step runs

            net, tokenizer = self.model(model, adapter)
            cfg = EvalConfig(
                model=model,
                task=task,
                langs=",".join(codes),
                mode=mode,
                scoring=exp.scoring,
                adapter=adapter,
                limit=exp.limit,
                items=exp.items,
                data_dir=str(self.data_dir),
                prompts=self.prompts,
                batch_size=exp.batch_size,
                allow_overlap=exp.allow_overlap,
            )
            results = run_eval(cfg, net, tokenizer, folder / "eval", overwrite=True)
            assert results is not None  # experiments run on one process
            return _eval_outputs(results)

        def after(folder: Path, outputs: dict) -> None:
            if self.store.count_samples(step.key, labels) != outputs["n"]:
                rows = [
                    {"lang": lang, "idx": r["index"], "gold": r["gold"], "pred": r["pred"], "scores": r["scores"]}
                    for lang in outputs["langs"]
                    for r in read_samples(folder / "eval" / "samples" / f"{labels['task']}_{lang}.jsonl")
                ]
                self.store.replace_samples(step.key, labels, rows)

        step = Step(
            "eval",
            step_key("eval", config),
            {**config, "labels": labels},
            f"{model} {setting} {labels['task']}/{mode}",
            run,
            ((model, adapter),),
            after,
        )
        return step  # `after` reads `step.key`: the key excludes the labels, which only name the rows

    def analysis_step(self, kind: str, model: str, mid: dict, spec, adapters: dict, keys: dict) -> Step:
        codes, inputs = self.eval_inputs(spec.task, spec.langs, spec.mode)
        if kind == "pca":
            inputs = self.eval_inputs(spec.task, list(dict.fromkeys([*codes, "en"])), spec.mode)[1]
        declared = {**asdict(spec), "items": spec.items or self.exp.items}
        if declared["items"] is None:
            del declared["items"]  # keeps the keys of experiments written before item ranges existed
        config = {"model": mid, "adapters": keys, "spec": declared, "langs": codes, "dtype": self.exp.dtype, **inputs}
        needs = ((model, None), *((model, a) for a in adapters.values()))

        def run(folder: Path) -> dict:
            from polyalign.analysis.lens import run_lens  # torch: only when a step runs
            from polyalign.analysis.pca import run_pca

            net, tokenizer = self.model(model)
            compare = [(name, self.model(model, path)[0]) for name, path in adapters.items()]
            common = dict(
                label="base",
                compare=compare,
                mode=spec.mode,
                batch_size=min(self.exp.batch_size, 8),
                items=spec.items or self.exp.items,
            )
            if kind == "lens":
                meta = run_lens(
                    net,
                    tokenizer,
                    spec.task,
                    codes,
                    limit=spec.limit,
                    data_dir=self.data_dir,
                    prompts=self.prompts,
                    out_dir=folder / kind,
                    layers=spec.layers,
                    **common,
                )
            else:
                meta = run_pca(
                    net,
                    tokenizer,
                    spec.task,
                    codes,
                    spec.layers,
                    spec.pooling,
                    spec.limit,
                    self.data_dir,
                    self.prompts,
                    folder / kind,
                    **common,
                )
            return {"dir": kind, "figures": [str(Path(p).relative_to(folder)) for p in meta["figures"]]}

        return Step(kind, step_key(kind, config), config, f"{model} {spec.task} {','.join(codes)}", run, needs)

    # execution -----------------------------------------------------------------------------
    def execute(self, steps: list[Step], log: Callable[[str], None] = print) -> None:
        self.store.set_meta("experiment", asdict(self.exp))
        self.store.set_meta(
            "plan",
            [
                {
                    "kind": s.kind,
                    "key": s.key,
                    "label": s.label,
                    "labels": s.config.get("labels"),
                    "dir": str(self.folder(s).relative_to(self.run_dir)),
                }
                for s in steps
            ],
        )
        self.store.prune_samples((s.key, s.config["labels"]) for s in steps if s.kind == "eval")
        try:
            self.executed, self.skipped = execute_steps(
                self.store,
                self.run_dir,
                steps,
                log,
                before=lambda step: self.release(keep=step.needs),
                clock=StepClock(steps),  # each start line: the step's precision, the time left
            )
        finally:
            self.release()


def run_experiment(
    path: str | Path, run_dir: str | Path | None = None, overrides=(), log: Callable[[str], None] = print
) -> Runner:
    """Plan and run every step of the experiment at `path` that is not done yet."""
    exp = load_experiment(path, overrides)
    run_dir = Path(run_dir) if run_dir else Path("runs") / (exp.name or Path(path).stem)
    check_output_path(run_dir)  # before anything is written or loaded
    for model in exp.models:  # before the run folder is created
        check_model_name(model)
    runner = Runner(exp, run_dir, Path(path).resolve().parent)
    try:
        runner.execute(runner.plan(), log)
    finally:
        runner.store.close()
    return runner


def _eval_outputs(results: dict) -> dict:
    """What an eval step's done.json keeps of results.json."""
    return {
        "dir": "eval",
        "average": results["average"],
        "langs": list(results["languages"]),
        "unscorable": sorted(results.get("unscorable", {})),
        "n": sum(v["n"] for v in results["languages"].values()),
    }
