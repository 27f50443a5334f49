"""The paper's reported numbers (arXiv 2405.13816), read from the packaged paper_numbers.yaml.

Why data and not prose: the claims report and docs/RESULTS.md put the paper's figures beside
polyalign's, and a number typed into Markdown by hand drifts from its source. Each table keeps the
paper's label ("Table 2"), the model and task it reports, and its cells as printed; settings keep
the paper's spelling ("zh/es => en"). The paper reports single runs: no seeds, intervals or tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

from polyalign.core.errors import PolyalignError

SINGLE_RUNS = "the paper reports single runs: no seeds, no confidence intervals, no tests"


@dataclass(frozen=True)
class PaperTable:
    """One table of the paper: `rows[row][j]` is the cell under `columns[j]`."""

    name: str  # the key in paper_numbers.yaml (table1, tables8_11)
    label: str  # as the paper names it ("Table 1")
    caption: str  # polyalign's words
    columns: tuple[str, ...]
    rows: dict[str, tuple[float, ...]]
    model: str | None = None  # the one model it reports (None: one column per model)
    task: str | None = None  # the one task it reports (None: one column per task)

    def cell(self, row: str, column: str) -> float:
        if row not in self.rows or column not in self.columns:
            raise PolyalignError(f"paper {self.label}: no cell ({row!r}, {column!r})")
        return self.rows[row][self.columns.index(column)]

    def row(self, row: str) -> dict[str, float]:
        """The row's cells by column name."""
        return {column: self.cell(row, column) for column in self.columns}

    def mean(self, row: str, columns: list[str] | tuple[str, ...] | None = None) -> float:
        """The row's mean over `columns` (default: all of them)."""
        chosen = self.columns if columns is None else columns
        return sum(self.cell(row, c) for c in chosen) / len(chosen)

    def cite(self, model: str | None = None) -> str:
        """'Mistral-7B, Table 2': who and where a figure comes from."""
        who = model or self.model
        return f"{who}, {self.label}" if who else self.label


def table_from(name: str, raw: dict) -> PaperTable:
    """One table of the YAML, checked: every row has one cell per column."""
    columns = tuple(str(c) for c in raw["columns"])
    rows = {str(k): tuple(float(v) for v in values) for k, values in raw["rows"].items()}
    for row, cells in rows.items():
        if len(cells) != len(columns):
            raise PolyalignError(
                f"paper_numbers.yaml {name}, row {row!r}: {len(cells)} cells for {len(columns)} columns"
            )
    return PaperTable(
        name=name,
        label=raw["label"],
        caption=raw["caption"],
        columns=columns,
        rows=rows,
        model=raw.get("model"),
        task=raw.get("task"),
    )


@lru_cache(maxsize=1)
def paper_tables() -> dict[str, PaperTable]:
    """Every table of the paper, by key (table1 ... table6, tables8_11, table12, table13)."""
    text = resources.files("polyalign.reports").joinpath("paper_numbers.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    return {name: table_from(name, body) for name, body in raw["tables"].items()}


def paper_table(name: str) -> PaperTable:
    tables = paper_tables()
    if name not in tables:
        raise PolyalignError(f"the paper has no table {name!r} (known: {', '.join(tables)})")
    return tables[name]
