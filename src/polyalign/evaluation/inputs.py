"""The inputs of an evaluation or analysis, checked before any model is loaded.

Why a module of its own: `eval`, the lens, PCA and an experiment's dry run all check the same
things (task, languages, prompt pack, item range, benchmark files, held-out items), and none of
them should import torch or build an evaluation config to do it.
"""

from __future__ import annotations

from pathlib import Path

from polyalign.core.item_range import check_overlap, evaluated_range, parse_items, read_provenance
from polyalign.core.languages import parse_languages
from polyalign.core.prompts import PromptPack, check_mode
from polyalign.core.tasks import TaskSpec, load_task, load_test_records, resolve_data_dir, test_file_path


def check_inputs(
    task: str,
    langs: str | list[str],
    mode: str,
    items: str | None = None,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    prompts: str | Path | None = None,
    adapter: str | None = None,
    allow_overlap: bool = False,
    model: str | None = None,
    items_key: str = "--items",
) -> tuple[TaskSpec, PromptPack, list[str]]:
    """(task, pack, language codes), once every chosen item renders and neither the adapter nor the
    model (a merged one records what its adapter was trained on) was trained on it. `items_key`:
    the flag or YAML key `items` came from, as messages name it."""
    check_mode(mode)
    spec = load_task(task)
    pack = PromptPack.load(prompts)
    codes = parse_languages(langs, pack.languages(spec.name))
    chosen_items = parse_items(items, items_key)
    folder = resolve_data_dir(data_dir)
    trained = [(f"adapter {adapter}", read_provenance(adapter))]
    if model and Path(model).is_dir():
        trained.append((f"model {model}", read_provenance(model)))
    for lang in codes:
        records = load_test_records(spec, lang, folder)
        if chosen_items is not None:
            chosen_items.check_within(len(records), f"{test_file_path(spec, lang, folder)}", items_key)
        chosen = evaluated_range(chosen_items, limit, len(records))
        for what, ranges in trained:
            check_overlap(ranges, spec.name, chosen, what, allow_overlap)
        pack.render(spec, lang, mode, records[chosen.start])
        pack.label_words(spec, lang, mode)
    return spec, pack, codes
