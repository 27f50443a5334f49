"""Question-alignment training data: (source-language question -> target-language question) pairs.

The method (Zhang et al. 2024) LoRA-tunes a model to translate task *questions* (never answers)
into the target language. Both sides are rendered with `PromptPack.query`, the renderer used
by evaluation, so the model is aligned on exactly the text it later reads at test time.

Parallel records come, in this order of preference, from (a) files the user names
(`--pair-file LANG=PATH`, `--target-file PATH`), (b) the benchmark's `*_question.json`
files (task `question_file`), or (c) a seq2seq machine translator (`--translator`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from polyalign.core.errors import PolyalignError
from polyalign.core.files import read_records, write_jsonl
from polyalign.core.item_range import ItemRange, parse_items
from polyalign.core.languages import get_language, parse_languages
from polyalign.core.prompts import PromptPack
from polyalign.core.tasks import TaskSpec, load_task, load_test_records, resolve_data_dir, test_file_path

FORMATS = ("jsonl", "llamafactory")
PAIRINGS = ("parallel", "shuffled")  # shuffled: the control, each source paired with another item's target
# "<label>: text" with an ASCII or full-width colon; labels themselves never hold a colon.
_LABELLED = re.compile(r"^[^:：]*[:：] ?(.*)$", re.S)
_INSTRUCTION = re.compile(r"\nTranslate the input from [^\n]* to [^\n]*:\n?$")


def instruction(source: str, target: str) -> str:
    """The paper's instruction line, with English language names from the registry."""
    return f"Translate the input from {get_language(source).name} to {get_language(target).name}:"


def _check_fields(task: TaskSpec, records: list[dict], where: str) -> None:
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


def _sample(population: list[int], k: int, seed: int, lang: str) -> list[int]:
    """k distinct indices of `population`, seeded per language so a language's sample does not
    change when other languages are added to the mixture."""
    return sorted(random.Random(f"{seed}:{lang}").sample(population, k))


def derangement(items: Sequence[int], seed: int | str) -> list[int]:
    """A seeded reordering of distinct `items` that leaves none in place (drawn uniformly among
    derangements by rejection): result[k] is the partner of items[k], so a shuffled control pairs
    the same questions, in the same numbers, with no item's own translation."""
    items = list(items)
    if len(set(items)) != len(items):
        raise PolyalignError("a shuffled pairing needs distinct items")
    if len(items) < 2:
        raise PolyalignError(f"a shuffled pairing needs at least 2 items to exchange (got {len(items)})")
    rng, order = random.Random(str(seed)), list(items)
    while True:  # about e shuffles on average, whatever the number of items
        rng.shuffle(order)
        if all(a != b for a, b in zip(items, order)):
            return order


def _targets(task: TaskSpec, target: str, data_dir, target_file) -> tuple[list[dict], str]:
    """Target records: the user's file, else the task's (English) train file."""
    if target_file:
        path = Path(target_file)
    elif target == task.pivot and task.train_file:
        path = resolve_data_dir(data_dir) / task.train_file
    elif target == task.pivot:
        raise PolyalignError(
            f"the benchmark ships no {task.name} training questions: take held-out test items "
            f"with --items START:STOP (e.g. 250:500) or give --pair-file/--target-file"
        )
    else:
        raise PolyalignError(
            f"no '{target}' records for task {task.name}: use --items START:STOP, give "
            f"--target-file (item-parallel with the --pair-file files) or use target '{task.pivot}'"
        )
    records = read_records(path)
    _check_fields(task, records, str(path))
    return records, str(path)


def _sources(
    task: TaskSpec,
    lang: str,
    targets: list[dict],
    data_dir,
    source_files: dict,
    from_train_file: bool,
    can_translate: bool,
) -> tuple[list[dict] | None, str]:
    """Source records of one language (None: to be machine-translated), in order of preference."""
    if lang in source_files:
        path = Path(source_files[lang])
        records = read_records(path)
    elif (
        task.question_file
        and from_train_file
        and (resolve_data_dir(data_dir) / task.question_file.format(lang=lang)).exists()
    ):
        path = resolve_data_dir(data_dir) / task.question_file.format(lang=lang)
        records = question_file_records(task, lang, resolve_data_dir(data_dir), targets)
    elif can_translate:
        return None, f"machine translation into '{lang}'"
    else:
        raise PolyalignError(
            f"no parallel '{lang}' records for task {task.name}: give --pair-file "
            f"{lang}=PATH (and --target-file) or use --translator MODEL"
        )
    if len(records) != len(targets):
        raise PolyalignError(
            f"{path}: {len(records)} records but the target file has {len(targets)}; pair files must be item-parallel"
        )
    _check_fields(task, records, str(path))
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


def _check_mixture(
    sources: list[str], target: str, per_language: int, source_files: dict, mixed: bool, pairing: str
) -> None:
    """What build_pairs refuses before reading any file; `mixed`: --items with other record sources."""
    get_language(target)
    if pairing not in PAIRINGS:
        raise PolyalignError(f"unknown pairing '{pairing}' (choose from {', '.join(PAIRINGS)})")
    if target in sources:
        raise PolyalignError(f"source language '{target}' is the target language; pairs need two languages")
    stray = sorted(set(source_files) - set(sources))
    if stray:
        raise PolyalignError(f"--pair-file given for {', '.join(stray)}, not among the sources {','.join(sources)}")
    if per_language < 1:
        raise PolyalignError(f"--per-language must be at least 1 (got {per_language})")
    if mixed:
        raise PolyalignError(
            "--items takes questions from the benchmark's test files; it cannot be combined "
            "with --pair-file, --target-file or --translator"
        )


def build_pairs(
    task: TaskSpec | str,
    sources: list[str],
    target: str,
    per_language: int,
    seed: int,
    data_dir: str | Path | None,
    pack: PromptPack,
    source_files: dict | None = None,
    target_file: str | Path | None = None,
    translate: Callable | None = None,
    items: ItemRange | str | None = None,
    pairing: str = "parallel",
) -> list[dict]:
    """The shuffled mixture: `per_language` pairs from each source language into `target`.

    `translate(records, src, tgt)` supplies source records for languages with no file
    (see `translate_records`); it is only called on the sampled target records. With
    `items` the questions (never the answers) of that range of the benchmark's item-parallel
    test files are paired by item; each pair row keeps its task and item index, so the
    adapter can later refuse evaluation on the same items. `pairing` "shuffled" pairs each sampled
    source question with the target question of another sampled item (`derangement`).
    """
    task = load_task(task) if isinstance(task, str) else task
    items = parse_items(items) if isinstance(items, str) else items
    source_files = dict(source_files or {})
    sources = parse_languages(list(sources))
    mixed = items is not None and bool(source_files or target_file or translate)
    _check_mixture(sources, target, per_language, source_files, mixed, pairing)
    targets, population, records = _target_population(task, target, sources, data_dir, target_file, items)
    if per_language > len(population):
        raise PolyalignError(
            f"--per-language {per_language} is more than the {len(population)} parallel "
            f"records available" + (f" in items {items}" if items else "")
        )
    from_train_file = not target_file and target == task.pivot
    pairs, used = [], {}  # used: the records each language's side of the pairs came from
    for lang in sources:
        source: list[dict] | None
        if records is not None:
            source, where = records[lang], f"{task.name} test items {items}"
        else:
            source, where = _sources(
                task, lang, targets, data_dir, source_files, from_train_file, translate is not None
            )
        indices = _sample(population, per_language, seed, lang)
        if source is None:
            assert translate is not None  # _sources gives no records only when it can translate
            picked = translate([targets[i] for i in indices], target, lang)
            _check_fields(task, picked, where)
        else:
            picked = [source[i] for i in indices]
        partners = indices if pairing == "parallel" else derangement(indices, f"{seed}:{lang}:{pairing}")
        pairs.extend(_pair_rows(task, pack, lang, target, list(zip(indices, partners)), picked, targets, items))
        used[lang], used[target] = picked, [*used.get(target, []), *(targets[j] for j in partners)]
    if items is None:  # files the user named may be the benchmark's own test files
        _mark_test_items(task, data_dir, pairs, used)
    random.Random(seed).shuffle(pairs)
    return pairs


def _mark_test_items(task: TaskSpec, data_dir, pairs: list[dict], used: dict[str, list[dict]]) -> None:
    """Give every pair the task and item span of the benchmark test questions among `used`, if any."""
    span = benchmark_item_span(task, data_dir, used)
    for row in pairs if span else []:
        row.update(task=task.name, items=str(span))


def benchmark_item_span(
    task: TaskSpec, data_dir: str | Path | None, records: dict[str, list[dict]]
) -> ItemRange | None:
    """The smallest item range holding every benchmark test item whose question (all task fields) is
    among `records` (language -> records), else None. Why: pairs built from copies of the test files
    must carry provenance like `--items` pairs do, or the leak guard never sees them."""
    try:
        folder = resolve_data_dir(data_dir)
    except PolyalignError:
        return None  # no benchmark here: the records cannot be its test items
    found: list[int] = []
    for lang, rows in records.items():
        if not test_file_path(task, lang, folder).is_file():
            continue
        index = {_question(task, r): i for i, r in enumerate(load_test_records(task, lang, folder))}
        found += [index[key] for key in (_question(task, r) for r in rows) if key in index]
    return ItemRange(min(found), max(found) + 1) if found else None


def _question(task: TaskSpec, record: dict) -> tuple[str, ...]:
    return tuple(str(record.get(name, "")).strip() for name in task.fields)


def _target_population(
    task: TaskSpec,
    target: str,
    sources: list[str],
    data_dir: str | Path | None,
    target_file: str | Path | None,
    items: ItemRange | None,
) -> tuple[list[dict], list[int], dict[str, list[dict]] | None]:
    """Target records, the indices pairs may be drawn from, and (with `items`) every language's records."""
    if items is None:
        targets, _ = _targets(task, target, data_dir, target_file)
        return targets, list(range(len(targets))), None
    records = held_out_records(task, [target, *sources], data_dir, items)
    return records[target], list(items.indices()), records


def _pair_rows(
    task: TaskSpec,
    pack: PromptPack,
    lang: str,
    target: str,
    indices: list[tuple[int, int]],
    picked: list[dict],
    targets: list[dict],
    items: ItemRange | None,
) -> list[dict]:
    """One training row per sampled record: the source question, the instruction, the target
    question of its partner item (itself, unless the pairing is shuffled)."""
    line = instruction(lang, target)
    rows = []
    for (i, j), record in zip(indices, picked):
        row = {
            "source_lang": lang,
            "target_lang": target,
            "index": i,
            "prompt": pack.query(task, lang, record) + "\n" + line + "\n",
            "completion": pack.query(task, target, targets[j]),
            **({"target_index": j} if j != i else {}),
        }
        if items is not None:
            row.update(task=task.name, items=str(items))
        rows.append(row)
    return rows


def write_pairs(
    records: list[dict], out: str | Path, fmt: str = "jsonl", model: str | None = None, train_config=None
) -> list[Path]:
    """Write the pairs as JSONL (atomically); `llamafactory` also writes an alpaca JSON list that
    carries MODEL's special tokens, registers it in dataset_info.json next to it (merged, so other
    datasets stay) and writes the LLaMA-Factory settings (polyalign.alignment.llamafactory)."""
    if fmt not in FORMATS:
        raise PolyalignError(f"unknown format '{fmt}' (choose from {', '.join(FORMATS)})")
    if fmt == "llamafactory" and not model:
        raise PolyalignError("--format llamafactory needs --model: the export carries that tokenizer's BOS/EOS")
    out = Path(out)
    write_jsonl(out, records)
    if fmt != "llamafactory" or model is None:
        return [out]
    from polyalign.alignment.llamafactory import write_llamafactory
    from polyalign.alignment.train_config import load_config

    return [out, *write_llamafactory(records, out, model, train_config or load_config())]
