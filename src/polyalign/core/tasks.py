"""Tasks declared as data (YAML files), and loading their item-parallel test records.

A task file names its classes, input fields, shot count and test-file pattern. Gold
labels are canonical class names taken from the pivot-language (English) file by
index: the test sets are item-parallel, so this sidesteps the label bugs of some
translated files (SNLI ja/bn/no in the paper's data) and reports them instead.
"""

from __future__ import annotations

import os
import string
from collections import Counter
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from polyalign.core.config import build, check_keys, check_required, read_mapping
from polyalign.core.errors import PolyalignError
from polyalign.core.files import read_records

CHECKOUT_DATA = Path("../shared/data/multilingual-learner")  # relative to a source checkout's root
DATA_HELP = (
    "pass --data-dir or set POLYALIGN_DATA to the benchmark folder (the data/ folder of the paper's "
    "repository, GitHub Shimao-Zhang/LLM-Multilingual-Learner)"
)


@dataclass(frozen=True)
class TaskSpec:
    """A classification task.

    classes: canonical class names, in the order used everywhere (files, tables).
    fields: record fields that fill the prompt's placeholders.
    shots: number of demonstrations in the few-shot block (a pack's structured demos must match it).
    test_file: path pattern relative to the data dir, with `{lang}`.
    answer_field: the record field holding the label word.
    answer_words: per class, label words accepted in the pivot file.
    pivot: language whose file gives the gold class of record i in every language.
    question_file / train_file: optional patterns for alignment data.
    """

    name: str
    classes: tuple[str, ...]
    fields: tuple[str, ...]
    shots: int
    test_file: str
    answer_field: str = "answer"
    answer_words: dict[str, list[str]] = field(default_factory=dict)
    pivot: str = "en"
    question_file: str | None = None
    train_file: str | None = None

    def class_of_word(self, word: str) -> str | None:
        """The canonical class a pivot-file label word stands for (case-insensitive)."""
        wanted = word.strip().lower()
        for cls in self.classes:
            if wanted == cls.lower() or wanted in (w.lower() for w in self.answer_words.get(cls, [])):
                return cls
        return None


def builtin_task_names() -> list[str]:
    return sorted(p.name[:-5] for p in files("polyalign.core").joinpath("tasks").iterdir() if p.name.endswith(".yaml"))


def load_task(name_or_path: str) -> TaskSpec:
    """A built-in task by name (emotion, snli, paws) or a user's YAML task file by path."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        if name_or_path not in builtin_task_names():
            raise PolyalignError(
                f"unknown task '{name_or_path}' (built in: {', '.join(builtin_task_names())}; "
                f"or give the path of a task .yaml file)"
            )
        path = Path(str(files("polyalign.core") / "tasks" / f"{name_or_path}.yaml"))
    raw = read_mapping(path, "task")  # the typed loader of every config file (polyalign.core.config)
    check_keys(TaskSpec, raw, str(path))
    check_required(TaskSpec, raw, str(path))
    _check_task(path, raw)  # before typing: its messages say what a task needs
    return build(TaskSpec, raw, str(path))


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)


def _check_task(path: Path, raw: dict) -> None:
    """Types and consistency a dataclass does not check: a bad value must not become a traceback
    later or, worse, wrong gold labels (one answer word for two classes)."""
    classes, fields = raw["classes"], raw["fields"]
    if not _strings(classes) or len(classes) < 2 or len(set(classes)) != len(classes):
        raise PolyalignError(f"{path}: classes must be a list of at least two distinct names (got {classes!r})")
    if not _strings(fields) or not fields:
        raise PolyalignError(f"{path}: fields must be a non-empty list of record field names (got {fields!r})")
    shots = raw["shots"]
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 0:
        raise PolyalignError(f"{path}: shots must be a whole number >= 0 (got {shots!r})")
    for key in ("test_file", "question_file", "train_file"):
        if raw.get(key) is not None:
            _check_pattern(path, key, raw[key], per_language=key != "train_file")
    for key in ("answer_field", "pivot"):
        if key in raw and not (isinstance(raw[key], str) and raw[key].strip()):
            raise PolyalignError(f"{path}: {key} must be a non-empty string (got {raw[key]!r})")
    words = raw.get("answer_words", {})
    if not isinstance(words, dict) or not all(c in classes and _strings(w) for c, w in words.items()):
        raise PolyalignError(f"{path}: answer_words must map classes of the task to lists of words")
    owner: dict[str, str] = {}
    for cls in classes:
        for word in {cls.strip().lower(), *(w.strip().lower() for w in words.get(cls, []))}:
            if owner.setdefault(word, cls) != cls:
                raise PolyalignError(
                    f"{path}: answer word '{word}' stands for both '{owner[word]}' and '{cls}'; "
                    f"every gold label would be '{owner[word]}'"
                )


def _check_pattern(path: Path, key: str, pattern: object, per_language: bool) -> None:
    """A file pattern whose only placeholder is {lang} (required `per_language`, else none)."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise PolyalignError(f"{path}: {key} must be a file pattern string (got {pattern!r})")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None}
    except ValueError as exc:
        raise PolyalignError(f"{path}: {key} '{pattern}' is not a valid pattern: {exc}") from None
    allowed = {"lang"} if per_language else set()
    if fields != allowed:
        need = "{lang} and no other placeholder" if per_language else "no placeholder"
        raise PolyalignError(f"{path}: {key} '{pattern}' must contain {need}")


def source_checkout() -> Path | None:
    """The repository root when polyalign runs from a source checkout (src layout), else None."""
    package = Path(__file__).resolve().parents[1]  # src/polyalign (this file: src/polyalign/core/tasks.py)
    root = package.parent.parent
    if package.parent.name == "src" and (root / "pyproject.toml").is_file():
        return root
    return None


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """--data-dir (or an experiment's data_dir), else $POLYALIGN_DATA, else, only in a source checkout,
    ../shared/data/multilingual-learner beside the repository. Never a folder found in the CWD."""
    if data_dir:
        candidate, origin = Path(data_dir).expanduser(), "given data dir"
    elif os.environ.get("POLYALIGN_DATA"):
        candidate, origin = Path(os.environ["POLYALIGN_DATA"]).expanduser(), "POLYALIGN_DATA"
    else:
        root = source_checkout()
        if root is None:
            raise PolyalignError(
                "benchmark data not found: no --data-dir, POLYALIGN_DATA is not set, and outside "
                f"a source checkout there is no default location; {DATA_HELP}"
            )
        candidate, origin = root / CHECKOUT_DATA, "the source checkout's default"
        if Path.cwd().resolve() == root.resolve():
            candidate = CHECKOUT_DATA  # the relative form, as recorded by earlier runs started from the root
    if not candidate.is_dir():
        raise PolyalignError(f"benchmark data not found at {candidate} ({origin}); {DATA_HELP}")
    return candidate


def test_file_path(task: TaskSpec, lang: str, data_dir: Path) -> Path:
    path = data_dir / task.test_file.format(lang=lang)
    if not path.exists() and path.with_suffix(".jsonl").exists():
        return path.with_suffix(".jsonl")
    return path


def load_test_records(task: TaskSpec, lang: str, data_dir: Path) -> list[dict]:
    """Test records of one language, checked for the task's fields."""
    path = test_file_path(task, lang, data_dir)
    if not path.exists():
        raise PolyalignError(f"{path}: no {task.name} test file for language '{lang}'")
    records = read_records(path)
    for i, record in enumerate(records):
        for name in task.fields:
            if not isinstance(record.get(name), str):
                raise PolyalignError(f"{path}: record {i} lacks text field '{name}'")
    return records


@dataclass
class GoldLabels:
    """Canonical gold classes of one language's items, and how its own labels mapped."""

    classes: list[str]
    mapping: dict[str, dict[str, int]]  # file label word -> {canonical class: count}
    inconsistent: list[str]  # file label words that stand for more than one class


def gold_labels(task: TaskSpec, lang: str, records: list[dict], data_dir: Path) -> GoldLabels:
    """Gold class of every record, from the pivot file by index."""
    pivot_path = test_file_path(task, task.pivot, data_dir)
    pivot = records if lang == task.pivot else load_test_records(task, task.pivot, data_dir)
    if len(pivot) != len(records):
        raise PolyalignError(
            f"{test_file_path(task, lang, data_dir)}: {len(records)} records but the pivot "
            f"file {pivot_path} has {len(pivot)}; test sets must be item-parallel"
        )
    classes = []
    for i, record in enumerate(pivot):
        word = record.get(task.answer_field)
        cls = task.class_of_word(word) if isinstance(word, str) else None
        if cls is None:
            raise PolyalignError(
                f"{pivot_path}: record {i} has label {word!r}, not one of the task's "
                f"classes {list(task.classes)} or their answer_words"
            )
        classes.append(cls)
    mapping: dict[str, Counter] = {}
    for record, cls in zip(records, classes):
        mapping.setdefault(str(record.get(task.answer_field)), Counter())[cls] += 1
    inconsistent = [word for word, counts in mapping.items() if len(counts) > 1]
    return GoldLabels(classes, {w: dict(c) for w, c in mapping.items()}, inconsistent)
