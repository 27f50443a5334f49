"""What every step builder of an experiment needs: the experiment, where its files are, the store,
the identities of its inputs (models, tasks, test files) and the model cache.

The step builders (polyalign.study.alignment_steps, eval_step, analysis_step) take a StepContext
and return Steps; polyalign.study.plan puts them in order; polyalign.study.experiment runs them.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from polyalign.core.prompts import default_pack_path
from polyalign.core.tasks import load_task, resolve_data_dir, test_file_path
from polyalign.evaluation.inputs import check_inputs
from polyalign.study.experiment_spec import Experiment
from polyalign.study.model_cache import ModelCache
from polyalign.study.steps import Step, step_folder
from polyalign.study.store import Store


class StepContext:
    """An experiment's resolved inputs; `run_dir` None: an in-memory store (planning, validation)."""

    def __init__(
        self,
        exp: Experiment,
        run_dir: str | Path | None,
        base_dir: str | Path = ".",
        steps_dir: str | Path | None = None,
    ):
        """`steps_dir`: where step folders live (default RUN_DIR/steps; a shared one reuses steps across runs)."""
        self.exp, self.run_dir, self.base = exp, Path(run_dir or "."), Path(base_dir)
        self.steps_dir = Path(steps_dir).expanduser().resolve() if steps_dir else self.run_dir / "steps"
        self.data_dir = resolve_data_dir(exp.data_dir)
        self.prompts = str(self.resolve(exp.prompts)) if exp.prompts else None
        self.store = Store(self.run_dir if run_dir else None)
        self.models = ModelCache(exp)
        self.checked: dict[tuple, tuple] = {}  # eval_inputs, computed once per (task, languages, mode, items)

    def resolve(self, name: str) -> Path:
        path = Path(name).expanduser()
        if path.is_absolute():
            return path
        found = [root / path for root in (self.data_dir, self.base) if (root / path).exists()]
        return found[0] if found else self.data_dir / path

    def folder(self, step: Step) -> Path:
        return step_folder(self.steps_dir, step)

    def model_id(self, model: str) -> dict:
        from polyalign.core.model_names import ALIASES

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

    def eval_inputs(
        self, task: str, langs: list[str], mode: str, items: str | None = None, items_key: str = "items"
    ) -> tuple[list[str], dict]:
        """Resolved language codes (checked against data, item range and pack) and the test files' hashes;
        `items_key` is the YAML key the range came from."""
        key = (task, tuple(langs), mode, items)
        if key not in self.checked:
            found = check_inputs(
                task, langs, mode, items, data_dir=self.data_dir, prompts=self.prompts, items_key=items_key
            )
            spec, codes = found[0], found[2]
            tests = {
                lang: self.store.digest(test_file_path(spec, lang, self.data_dir)) for lang in [*codes, spec.pivot]
            }
            self.checked[key] = codes, {**self.task_id(task), "tests": tests}
        return self.checked[key]
