"""Where each side of the question-alignment pairs comes from, in this order of preference: (a) files
the user names (`--pair-file LANG=PATH`, `--target-file PATH`), (b) the benchmark: the pivot's
(English) train file and the `*_question.json` files of other languages, parsed back into fields and
checked item-parallel with the train file, for a source or a target alike, (c) a seq2seq machine
translator (`--translator`) for sources only; with `--items`, the benchmark's test files.
polyalign.alignment.alignment_data samples and renders the pairs from these records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from polyalign.core.errors import PolyalignError
from polyalign.core.files import read_records
from polyalign.core.item_range import ItemRange
from polyalign.core.tasks import TaskSpec, load_test_records, resolve_data_dir

# "<label>: text" with an ASCII or full-width colon; labels themselves never hold a colon.
_LABELLED = re.compile(r"^[^:：]*[:：] ?(.*)$", re.S)
_INSTRUCTION = re.compile(r"\nTranslate the input from [^\n]* to [^\n]*:\n?$")


def check_fields(task: TaskSpec, records: list[dict], where: str) -> None:
    """Every record must hold non-empty text in each task field: an empty question teaches nothing."""
    for i, record in enumerate(records):
        for name in task.fields:
            value = record.get(name)
            if not isinstance(value, str):
                raise PolyalignError(f"{where}: record {i} lacks text field '{name}'")
            if not value.strip():
                raise PolyalignError(f"{where}: record {i} has empty question text in field '{name}'")


def _parse_question(text: str, fields: tuple[str, ...], where: str) -> dict:
    """Field values from a question rendered by the paper's template ("<label>: value" per line).

    The lines are one per field, in task order, then the answer-cue line; labels are
    stripped and values kept verbatim, so re-rendering them with our pack is exact.
    """
    lines = _INSTRUCTION.sub("", text).split("\n")
    if len(lines) != len(fields) + 1:
        raise PolyalignError(f"{where}: expected {len(fields)} field lines and an answer cue, got {len(lines)} lines")
    out = {}
    for name, line in zip(fields, lines):
        match = _LABELLED.match(line)
        if not match:
            raise PolyalignError(f"{where}: line {line[:40]!r} is not '<label>: text'")
        out[name] = match.group(1)
    return out


def question_file(task: TaskSpec, lang: str, data_dir: str | Path | None) -> Path | None:
    """The benchmark's question file of `lang`, where it ships one beside the pivot's train file
    (the file its questions are checked against), else None."""
    if not (task.question_file and task.train_file):
        return None
    try:
        path = resolve_data_dir(data_dir) / task.question_file.format(lang=lang)
    except PolyalignError:
        return None  # no benchmark here: it ships nothing
    return path if path.exists() else None


def question_file_records(task: TaskSpec, lang: str, data_dir: Path, targets: list[dict]) -> list[dict]:
    """Source records parsed out of the benchmark's `question_file` for `lang`.

    The files hold the source question inside `input`; we parse the field values back out
    (rather than using `input` verbatim) so the prompt comes from our renderer like at
    evaluation. Their `answer` must match the train-file record of the same index: that
    proves item-parallelism instead of assuming it.
    """
    if task.question_file is None:
        raise PolyalignError(f"task '{task.name}' ships no question files")
    path = data_dir / task.question_file.format(lang=lang)
    rows = read_records(path)
    if len(rows) != len(targets):
        raise PolyalignError(
            f"{path}: {len(rows)} records but the target file has {len(targets)}; pair files must be item-parallel"
        )
    records = []
    for i, row in enumerate(rows):
        if not isinstance(row.get("input"), str) or not isinstance(row.get("answer"), str):
            raise PolyalignError(f"{path}: record {i} lacks 'input'/'answer' text")
        records.append(_parse_question(row["input"], task.fields, f"{path}: record {i}"))
        english = _parse_question(row["answer"], task.fields, f"{path}: record {i} answer")
        if any(english[f].strip() != str(targets[i].get(f, "")).strip() for f in task.fields):
            raise PolyalignError(
                f"{path}: record {i} does not match record {i} of the target file; the files are not item-parallel"
            )
    return records


def pivot_records(task: TaskSpec, data_dir: str | Path | None) -> tuple[list[dict], Path]:
    """The pivot language's train file: the benchmark's questions every question file parallels."""
    if not task.train_file:
        raise PolyalignError(
            f"the benchmark ships no {task.name} training questions: take held-out test items "
            f"with --items START:STOP (e.g. 250:500) or give --pair-file/--target-file"
        )
    path = resolve_data_dir(data_dir) / task.train_file
    return read_records(path), path


@dataclass(frozen=True)
class Targets:
    """The target side's records, where they came from, and the pivot's records when they are the
    benchmark's (its source question files parallel those; None: the user named the target file)."""

    records: list[dict]
    where: str
    pivot: list[dict] | None


def target_records(task: TaskSpec, target: str, data_dir, target_file) -> Targets:
    """Target records: the user's file, else the benchmark's: the pivot's train file, or for
    another target its question file (item-parallel with the train file)."""
    pivot = None
    if target_file:
        path = Path(target_file)
        records = read_records(path)
    elif target == task.pivot:
        records, path = pivot_records(task, data_dir)
        pivot = records
    elif found := question_file(task, target, data_dir):
        path, pivot = found, pivot_records(task, data_dir)[0]
        records = question_file_records(task, target, resolve_data_dir(data_dir), pivot)
    else:
        raise PolyalignError(
            f"no '{target}' records for task {task.name}: use --items START:STOP, give "
            f"--target-file (item-parallel with the --pair-file files) or use target '{task.pivot}'"
        )
    check_fields(task, records, str(path))
    return Targets(records, str(path), pivot)


def source_records(
    task: TaskSpec, lang: str, data_dir, source_files: dict, targets: Targets, can_translate: bool
) -> tuple[list[dict] | None, str]:
    """Source records of one language (None: to be machine-translated), in order of preference. The
    benchmark's questions pair only with a benchmark target, being item-parallel with it alone."""
    found = question_file(task, lang, data_dir) if targets.pivot is not None else None
    if lang in source_files:
        path = Path(source_files[lang])
        records = read_records(path)
    elif found and targets.pivot is not None:
        path, records = found, question_file_records(task, lang, resolve_data_dir(data_dir), targets.pivot)
    elif lang == task.pivot and targets.pivot is not None:
        path, records = resolve_data_dir(data_dir) / str(task.train_file), targets.pivot
    elif can_translate:
        return None, f"machine translation into '{lang}'"
    else:
        raise PolyalignError(
            f"no parallel '{lang}' records for task {task.name}: give --pair-file "
            f"{lang}=PATH (and --target-file) or use --translator MODEL"
        )
    if len(records) != len(targets.records):
        raise PolyalignError(
            f"{path}: {len(records)} records but the target file has {len(targets.records)}; "
            "pair files must be item-parallel"
        )
    check_fields(task, records, str(path))
    return records, str(path)


def held_out_records(
    task: TaskSpec, langs: list[str], data_dir, items: ItemRange, key: str = "--items"
) -> dict[str, list[dict]]:
    """Every language's test records, checked to be item-parallel and to hold the range (`key`:
    the flag or YAML key the range came from)."""
    data = resolve_data_dir(data_dir)
    out = {lang: load_test_records(task, lang, data) for lang in langs}
    counts = {lang: len(records) for lang, records in out.items()}
    if len(set(counts.values())) != 1:
        raise PolyalignError(f"{task.name} test files differ in length {counts}; they must be item-parallel")
    items.check_within(min(counts.values()), f"each {task.name} test file", key)
    return out
