"""Generic file IO that every layer uses: atomic writes, JSONL, records, text, content hashes.

Evaluation results (per-item sample logs, summaries) build on these in polyalign.evaluation.results.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from polyalign.core.errors import PolyalignError


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def read_text(path: Path, what: str) -> str:
    """A UTF-8 file's text, or one line saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolyalignError(f"{path}: cannot read {what}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise PolyalignError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def file_sha256(path: Path) -> str:
    """Content hash of a file, read in blocks (model weights do not fit in memory twice)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def jsonl_text(rows) -> str:
    """One JSON object per line, UTF-8 kept as is."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_jsonl(path: Path, rows) -> None:
    atomic_write_text(path, jsonl_text(rows))


def read_jsonl_tolerant(path: Path) -> list[dict]:
    """Lines of a log that may end in a line cut short by a crash (that line is dropped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def read_records(path: Path) -> list[dict]:
    """Records from a JSON list or a JSONL file, with a one-line error on bad content."""
    if not path.is_file():
        raise PolyalignError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PolyalignError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if not text.strip():
        raise PolyalignError(f"{path}: file is empty")
    if path.suffix == ".jsonl":
        records = [_json_line(path, number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolyalignError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(records, list) or not records:
        raise PolyalignError(f"{path}: expected a non-empty list of records")
    if not all(isinstance(r, dict) for r in records):
        raise PolyalignError(f"{path}: every record must be a JSON object")
    return records


def _json_line(path: Path, number: int, line: str):
    """One JSONL line; an error names the line of the file (each line parses on its own as line 1)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise PolyalignError(f"{path}: malformed JSON at line {number} ({exc.msg}, column {exc.colno})") from None


class AppendOnlyJsonl:
    """Append-only JSONL log (translation caches, per-item samples) that survives being killed mid-run.

    `rows`: what an earlier, interrupted run had written; a line it tore is dropped.
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rows = read_jsonl_tolerant(path)
        write_jsonl(path, self.rows)  # without any torn last line, so appends start on a clean line
        self._handle = path.open("a", encoding="utf-8")

    def append(self, rows: list[dict]) -> None:
        self._handle.write(jsonl_text(rows))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table (the report, `eval`'s summary, PCA correlations)."""
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]
