"""Question-alignment training data: (source-language question -> target-language question) pairs.

The method (Zhang et al. 2024) LoRA-tunes a model to translate task *questions* (never answers)
into the target language. Both sides are rendered with `PromptPack.query`, the renderer used
by evaluation, so the model is aligned on exactly the text it later reads at test time.

Parallel records come, in this order of preference, from (a) files the user names
(`--pair-file LANG=PATH`, `--target-file PATH`), (b) the benchmark's train file and `*_question.json`
files (task `question_file`), for any target, or (c) a seq2seq machine translator (`--translator`);
polyalign.alignment.pair_records reads them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from polyalign.alignment.pair_records import Targets, check_fields, held_out_records, source_records, target_records
from polyalign.core.errors import PolyalignError
from polyalign.core.files import write_jsonl
from polyalign.core.item_range import ItemRange, parse_items
from polyalign.core.languages import get_language, parse_languages
from polyalign.core.prompts import PromptPack
from polyalign.core.tasks import TaskSpec, load_task, load_test_records, resolve_data_dir, test_file_path

FORMATS = ("jsonl", "llamafactory")
PAIRINGS = ("parallel", "shuffled")  # shuffled: the control, each source paired with another item's target


def instruction(source: str, target: str) -> str:
    """The paper's instruction line, with English language names from the registry."""
    return f"Translate the input from {get_language(source).name} to {get_language(target).name}:"


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


@dataclass(frozen=True)
class PairRequest:
    """One alignment mixture, as `polyalign data build` and an experiment's data step declare it.

    `translate(records, src, tgt)` supplies source records for languages with no file (see
    polyalign.alignment.translation); it is only called on the sampled target records. With `items`
    the questions (never the answers) of that range of the benchmark's item-parallel test files are
    paired by item. `pairing` "shuffled" pairs each sampled source question with the target question
    of another sampled item (`derangement`): the control.
    """

    task: TaskSpec | str
    sources: Sequence[str]
    target: str
    per_language: int
    seed: int
    data_dir: str | Path | None
    pack: PromptPack
    source_files: Mapping[str, str | Path] = field(default_factory=dict)
    target_file: str | Path | None = None
    translate: Callable | None = None
    items: ItemRange | str | None = None
    pairing: str = "parallel"


def build_pairs(request: PairRequest) -> list[dict]:
    """The shuffled mixture: `per_language` pairs from each source language into the target. Each pair
    row from benchmark test questions keeps its task and item span, so the adapter can later refuse
    evaluation on the same items (the leak guard)."""
    r = request
    task = load_task(r.task) if isinstance(r.task, str) else r.task
    items = parse_items(r.items) if isinstance(r.items, str) else r.items
    source_files, target = dict(r.source_files), r.target
    sources = parse_languages(list(r.sources))
    mixed = items is not None and bool(source_files or r.target_file or r.translate)
    _check_mixture(sources, target, r.per_language, source_files, mixed, r.pairing)
    targets, population, records = _target_population(task, target, sources, r.data_dir, r.target_file, items)
    if r.per_language > len(population):
        raise PolyalignError(
            f"--per-language {r.per_language} is more than the {len(population)} parallel "
            f"records available" + (f" in items {items}" if items else "")
        )
    pairs, used = [], {}  # used: the records each language's side of the pairs came from
    for lang in sources:
        source: list[dict] | None
        if records is not None:
            source, where = records[lang], f"{task.name} test items {items}"
        else:
            source, where = source_records(task, lang, r.data_dir, source_files, targets, r.translate is not None)
        indices = _sample(population, r.per_language, r.seed, lang)
        if source is None:
            assert r.translate is not None  # source_records gives no records only when it can translate
            picked = r.translate([targets.records[i] for i in indices], target, lang)
            check_fields(task, picked, where)
        else:
            picked = [source[i] for i in indices]
        partners = indices if r.pairing == "parallel" else derangement(indices, f"{r.seed}:{lang}:{r.pairing}")
        rows = _pair_rows(task, r.pack, lang, target, list(zip(indices, partners)), picked, targets.records, items)
        pairs.extend(rows)
        used[lang], used[target] = picked, [*used.get(target, []), *(targets.records[j] for j in partners)]
    if items is None:  # files the user named may be the benchmark's own test files
        _mark_test_items(task, r.data_dir, pairs, used)
    random.Random(r.seed).shuffle(pairs)
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
) -> tuple[Targets, list[int], dict[str, list[dict]] | None]:
    """Target records, the indices pairs may be drawn from, and (with `items`) every language's records."""
    if items is None:
        targets = target_records(task, target, data_dir, target_file)
        return targets, list(range(len(targets.records))), None
    records = held_out_records(task, [target, *sources], data_dir, items)
    return Targets(records[target], f"{task.name} test items {items}", None), list(items.indices()), records


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
