"""The run store: one SQLite file per run folder (RUN_DIR/results.sqlite).

Tables:
  samples(model, setting, task, mode, scoring, lang, idx, gold, pred, scores_json, step)
      every per-item evaluation result of the experiment as it is now configured; `step` is
      the key of the eval step that produced the row (rows of replaced steps are pruned).
  steps(kind, key, config_json, status, outputs, updated)
      the ledger of every step ever started in this folder: 'running' or 'done'.
  meta(name, value)      JSON values: the resolved experiment, the current plan of steps.
  digests(path, size, mtime_ns, sha256)   content hashes of input files, reused while a
      file's size and modification time are unchanged.

Steps themselves (their keys, folders and done.json markers) live in polyalign.study.steps;
running them in polyalign.study.executor. Only the standard library's sqlite3 is used; each
write is one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from polyalign.core.errors import PolyalignError
from polyalign.core.files import file_sha256

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples(model TEXT NOT NULL, setting TEXT NOT NULL, task TEXT NOT NULL, mode TEXT NOT NULL,
  scoring TEXT NOT NULL, lang TEXT NOT NULL, idx INTEGER NOT NULL, gold TEXT, pred TEXT, scores_json TEXT,
  step TEXT NOT NULL, PRIMARY KEY (model, setting, task, mode, scoring, lang, idx));
CREATE INDEX IF NOT EXISTS samples_step ON samples(step);
CREATE TABLE IF NOT EXISTS steps(kind TEXT NOT NULL, key TEXT PRIMARY KEY, config_json TEXT NOT NULL,
  status TEXT NOT NULL, outputs TEXT, updated REAL);
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS digests(path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT);
"""
STORE_NAME = "results.sqlite"
BUSY_TIMEOUT_S = 120.0  # how long a write waits for another process's transaction
SAMPLE_COLUMNS = ("model", "setting", "task", "mode", "scoring", "lang", "idx", "gold", "pred", "scores_json")


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Another process holds the file (a lock), which is not damage."""
    return "locked" in str(exc) or "busy" in str(exc)


class Store:
    """A run folder's results.sqlite (created on first open unless `create` is False)."""

    def __init__(self, run_dir: str | Path | None, create: bool = True):
        """run_dir None: an in-memory store (validation, nothing written)."""
        self.path = Path(run_dir) / STORE_NAME if run_dir is not None else None
        if self.path and not create and not self.path.is_file():
            raise PolyalignError(f"{run_dir}: no {STORE_NAME} here; is it the folder of a `polyalign run`?")
        existed = bool(self.path and self.path.is_file())
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # several processes may write one store (two `polyalign run` on a folder): a writer waits
        # for the other's transaction (timeout) and, in WAL mode, readers never block it
        self.db = sqlite3.connect(str(self.path) if self.path else ":memory:", timeout=BUSY_TIMEOUT_S)
        self.db.row_factory = sqlite3.Row
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:  # a corrupt store is reported, never written to
                self._open(existed)
                return
            except sqlite3.OperationalError as exc:
                if _busy(exc) and time.monotonic() < deadline:
                    time.sleep(0.05)  # another process opening the store at once: wait, it is not damage
                    continue
                self._unreadable(exc)
            except sqlite3.DatabaseError as exc:
                self._unreadable(exc)

    def _open(self, existed: bool) -> None:
        if existed and self.db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("integrity check failed")
        if self.path:
            self.db.execute("PRAGMA journal_mode=WAL")
        with self.db:
            self.db.executescript(SCHEMA)

    def _unreadable(self, exc: sqlite3.DatabaseError) -> None:
        self.db.close()
        raise PolyalignError(
            f"{self.path}: unreadable store ({exc}); restore it, or move it away to start the run over"
        ) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # meta -------------------------------------------------------------------------------
    def set_meta(self, name: str, value) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, json.dumps(value, ensure_ascii=False)))

    def get_meta(self, name: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return default if row is None else json.loads(row["value"])

    def claim(self, experiment: str) -> None:
        """Record that this folder holds `experiment`; refuse another one, whose plan would prune
        this one's samples (a store keeps one experiment's results; the same one, edited, is fine)."""
        held = self.get_meta("experiment_name") or (self.get_meta("experiment") or {}).get("name")
        if held and held != experiment:
            where = self.path.parent if self.path else "this store"
            raise PolyalignError(
                f"{where} holds the results of experiment '{held}'; run '{experiment}' with another --out "
                "(its plan would replace them)"
            )
        self.set_meta("experiment_name", experiment)

    # steps ------------------------------------------------------------------------------
    def record_step(self, kind: str, key: str, config: dict, status: str, outputs: dict | None = None) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    key,
                    json.dumps(config, sort_keys=True, ensure_ascii=False),
                    status,
                    json.dumps(outputs or {}, ensure_ascii=False),
                    time.time(),
                ),
            )

    def step(self, key: str) -> dict | None:
        row = self.db.execute("SELECT * FROM steps WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return {**dict(row), "config": json.loads(row["config_json"]), "outputs": json.loads(row["outputs"] or "{}")}

    # samples ----------------------------------------------------------------------------
    def replace_samples(self, step: str, labels: dict, rows: Iterable[dict]) -> int:
        """Make `rows` (lang, idx, gold, pred, scores) the results of (model, setting, task, mode,
        scoring) = `labels`, dropping whatever an earlier step stored for the same labels."""
        ident = tuple(labels[k] for k in SAMPLE_COLUMNS[:5])
        values = [
            (
                *ident,
                r["lang"],
                int(r["idx"]),
                r["gold"],
                r["pred"],
                json.dumps(r.get("scores"), ensure_ascii=False),
                step,
            )
            for r in rows
        ]
        with self.db:
            self.db.execute(
                "DELETE FROM samples WHERE model=? AND setting=? AND task=? AND mode=? AND scoring=?", ident
            )
            self.db.executemany(f"INSERT INTO samples VALUES ({', '.join('?' * 11)})", values)
        return len(values)

    def count_samples(self, step: str, labels: dict | None = None) -> int:
        """Rows stored by `step` (under exactly these labels, when given)."""
        where, args = "step = ?", [step]
        for name in SAMPLE_COLUMNS[:5] if labels else ():
            where, args = where + f" AND {name} = ?", args + [labels[name]]  # type: ignore[index]
        return self.db.execute(f"SELECT COUNT(*) FROM samples WHERE {where}", args).fetchone()[0]

    def prune_samples(self, keep: Iterable[tuple[str, dict]]) -> int:
        """Drop rows that no (step key, labels) pair of the experiment's current plan produces
        (steps edited away, renamed settings)."""
        wanted = {(step, *(labels[k] for k in SAMPLE_COLUMNS[:5])) for step, labels in keep}
        held = self.db.execute(f"SELECT DISTINCT step, {', '.join(SAMPLE_COLUMNS[:5])} FROM samples").fetchall()
        stale = [tuple(row) for row in held if tuple(row) not in wanted]
        with self.db:
            for row in stale:
                self.db.execute(
                    "DELETE FROM samples WHERE step=? AND model=? AND setting=? AND task=? AND mode=? AND scoring=?",
                    row,
                )
        return len(stale)

    def samples(self) -> Iterator[dict]:
        for row in self.db.execute(
            f"SELECT {', '.join(SAMPLE_COLUMNS)}, step FROM samples "
            "ORDER BY model, setting, task, mode, scoring, lang, idx"
        ):
            yield dict(row)

    # content hashes ---------------------------------------------------------------------
    def digest_rows(self) -> list[tuple]:
        """Every cached content hash, (path, size, mtime_ns, sha256): a Ray worker plans with them."""
        return [tuple(row) for row in self.db.execute("SELECT path, size, mtime_ns, sha256 FROM digests")]

    def load_digests(self, rows: Iterable[tuple]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?)", list(rows))

    def digest(self, path: str | Path) -> str | None:
        """sha256 of a file (None if absent), cached while its size and mtime are unchanged."""
        path = Path(path).resolve()
        try:
            stat = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        row = self.db.execute("SELECT size, mtime_ns, sha256 FROM digests WHERE path = ?", (str(path),)).fetchone()
        if row and row["size"] == stat.st_size and row["mtime_ns"] == stat.st_mtime_ns:
            return row["sha256"]
        value = file_sha256(path)
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?)", (str(path), stat.st_size, stat.st_mtime_ns, value)
            )
        return value
