"""Benchmark item ranges and the leak guard between training questions and evaluated items.

The benchmark's test files are item-parallel, so "item i" names one example in all 20
languages. Question alignment may take its (answer-free) questions from a range of items,
e.g. 250:500, and evaluation then uses a disjoint range, e.g. 0:250. An adapter folder keeps
the ranges it was trained on (`PROVENANCE_FILE`), so any later evaluation, lens or PCA of that
adapter on overlapping items of the same task is refused unless the user allows it.
Light on purpose: no torch, importable by declarations and `--help`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from polyalign.core.errors import PolyalignError

PROVENANCE_FILE = "polyalign_provenance.json"
_RANGE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True)
class ItemRange:
    """Half-open range [start, stop) of benchmark item indices."""

    start: int
    stop: int

    def __str__(self) -> str:
        return f"{self.start}:{self.stop}"

    def __len__(self) -> int:
        return self.stop - self.start

    def indices(self) -> range:
        return range(self.start, self.stop)

    def overlap(self, other: ItemRange) -> ItemRange | None:
        start, stop = max(self.start, other.start), min(self.stop, other.stop)
        return ItemRange(start, stop) if start < stop else None

    def check_within(self, count: int, where: str, key: str = "--items") -> None:
        """Refuse a range that runs past the `count` items a test file holds; `key` names the flag
        or YAML key the range came from."""
        if self.stop > count:
            raise PolyalignError(
                f"{key} {self} is out of range: {where} holds {count} items (ranges must lie within 0:{count})"
            )


def parse_items(text: str | None, flag: str = "--items") -> ItemRange | None:
    """'START:STOP' (half-open, benchmark indices) -> ItemRange; None stays None."""
    if text is None:
        return None
    match = _RANGE.match(str(text))
    if not match:
        raise PolyalignError(f"{flag} {text}: expected START:STOP with whole numbers, e.g. 0:250")
    start, stop = int(match.group(1)), int(match.group(2))
    if start >= stop:
        raise PolyalignError(f"{flag} {text}: start must be below stop (the range is half-open)")
    return ItemRange(start, stop)


def evaluated_range(items: ItemRange | None, limit: int | None, count: int) -> ItemRange:
    """The items an evaluation scores: the range (first `limit` of it), else the first `limit`, else all."""
    base = items or ItemRange(0, count)
    stop = base.stop if limit is None else min(base.stop, base.start + limit)
    return ItemRange(base.start, min(stop, count))


def provenance_record(task: str, items: ItemRange, pairs: int) -> dict:
    return {"task": task, "items": str(items), "pairs": pairs}


def write_provenance(adapter_dir: Path, records: list[dict]) -> None:
    """Record in an adapter folder which benchmark items its training questions came from."""
    from polyalign.core.files import atomic_write_json

    atomic_write_json(Path(adapter_dir) / PROVENANCE_FILE, {"benchmark_items": records})


def read_provenance(adapter_dir: str | Path | None) -> list[dict]:
    """The benchmark item ranges an adapter was trained on ([] for adapters trained elsewhere)."""
    if not adapter_dir:
        return []
    path = Path(adapter_dir) / PROVENANCE_FILE
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["benchmark_items"]
        return [{"task": r["task"], "items": str(parse_items(r["items"], "provenance"))} for r in records]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, PolyalignError):
        raise PolyalignError(f"{path}: malformed provenance file; restore it or retrain the adapter") from None


def check_overlap(trained: list[dict], task: str, evaluated: ItemRange, what: str, allow: bool) -> None:
    """Refuse to score items whose questions the adapter was trained on (unless `allow`)."""
    for record in trained:
        if record["task"] != task:
            continue
        hit = parse_items(record["items"], "provenance").overlap(evaluated)  # type: ignore[union-attr]  # a str
        if hit and not allow:
            raise PolyalignError(
                f"{what} was trained on {task} items {record['items']}; evaluating items "
                f"{evaluated} overlaps {hit}: choose disjoint --items or pass --allow-overlap"
            )
