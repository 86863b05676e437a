"""The SQLite results database: one row per finished cell, one row per metric.

Schema (docs/evaluator.md has the metric list)::

    cells(cell_id PRIMARY KEY, design, workload, params JSON, seed, word_bits,
          no_page_mapcount, oracle, identity JSON, foliosim_version, seconds,
          skipped, notes JSON, finished, mode, driver, run_key, questions, question_digest)
    metrics(cell_id, metric, consumer, folio_order, mms, value,
            PRIMARY KEY (cell_id, metric, consumer, folio_order, mms))
    live_verdicts(workload, source, questions_exclusive, false_shared, questions_shared,
                  false_exclusive, recorded, PRIMARY KEY (workload, source))
    meta(key PRIMARY KEY, value)         -- schema version, application

``mode`` is ``open`` (the design answered the questions of ``driver``'s run) or
``closed`` (its own run); the cells of one driving run share ``run_key`` and,
open loop, ``question_digest``. ``live_verdicts`` holds the running kernel's
own answers on a real program (:meth:`ResultsDB.put_live`), shown beside the
simulated designs.

The file's SQLite ``application_id`` marks it as foliosim's (see ResultsDB).

A cell and its metrics are written in one transaction, so an interrupted
sweep leaves only whole cells behind and resumes where it stopped.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from foliosim import __version__
from foliosim.errors import FoliosimError
from foliosim.evaluate.cell import RESULTS_SCHEMA, CellResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY, design TEXT NOT NULL, workload TEXT NOT NULL, params TEXT NOT NULL,
    seed INTEGER NOT NULL, word_bits INTEGER NOT NULL, no_page_mapcount INTEGER NOT NULL, oracle TEXT NOT NULL,
    identity TEXT NOT NULL, foliosim_version TEXT NOT NULL, seconds REAL NOT NULL, skipped INTEGER NOT NULL,
    notes TEXT NOT NULL, finished TEXT NOT NULL, mode TEXT NOT NULL, driver TEXT NOT NULL, run_key TEXT NOT NULL,
    questions INTEGER NOT NULL, question_digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS metrics (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id), metric TEXT NOT NULL, consumer TEXT NOT NULL,
    folio_order INTEGER NOT NULL, mms INTEGER NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (cell_id, metric, consumer, folio_order, mms));
CREATE TABLE IF NOT EXISTS live_verdicts (
    workload TEXT NOT NULL, source TEXT NOT NULL, questions_exclusive INTEGER NOT NULL,
    false_shared INTEGER NOT NULL, questions_shared INTEGER NOT NULL, false_exclusive INTEGER NOT NULL,
    recorded TEXT NOT NULL, PRIMARY KEY (workload, source));
"""
CSV_COLUMNS = ("cell_id", "design", "workload", "params", "seed", "word_bits", "no_page_mapcount", "metric",
               "consumer", "folio_order", "mms", "value")


class StoreError(FoliosimError):
    """The results database cannot be used (names the file and why)."""


#: SQLite ``PRAGMA application_id`` of a foliosim results database ("FoSm").
APPLICATION_ID = 0x466F536D
APPLICATION = "foliosim results"
_OUR_TABLES = {"meta", "cells", "metrics"}


def _inspect(path: Path) -> str:
    """``"new"`` (no file, an empty file, or an SQLite file without tables) or ``"ours"``; StoreError otherwise.

    Reads the file through a read-only connection, so a refused file is never changed.
    """
    if path.is_dir():
        raise StoreError(f"{path}: is a directory, not a results database file")
    folder = path.absolute().parent
    if not path.exists():
        if not folder.is_dir():
            raise StoreError(f"cannot create the results database {path}: the directory {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise StoreError(f"cannot create the results database {path}: the directory {folder} is not writable")
        return "new"
    try:
        if path.stat().st_size == 0:
            return "new"
        conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
    except (OSError, sqlite3.DatabaseError) as exc:
        raise StoreError(f"{path}: cannot open it ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        legacy = False
        if app_id == 0 and tables >= _OUR_TABLES:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(cells)")}
            schema = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            legacy = schema is not None and {"cell_id", "identity", "notes"} <= columns
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a usable SQLite results database ({exc})") from None
    finally:
        conn.close()
    if app_id == APPLICATION_ID or legacy:
        return "ours"
    if app_id != 0:
        raise StoreError(f"{path}: an SQLite database of another program (application id {app_id:#x}); "
                         "foliosim leaves it alone: give a new --db file")
    if not tables:
        return "new"
    raise StoreError(f"{path}: an SQLite database that foliosim did not write (tables: {', '.join(sorted(tables))}); "
                     "foliosim leaves it alone: give a new --db file")


class ResultsDB:
    """A results database file (created on first use).

    Only foliosim's own databases are opened: a new or empty file becomes one
    (SQLite ``application_id`` :data:`APPLICATION_ID` plus the ``meta`` table);
    an existing file must carry that id, or be a database foliosim wrote before
    the id existed (``meta`` with a schema row, ``cells`` and ``metrics``).
    Anything else is refused before a single byte is written to it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.created = _inspect(self.path) == "new"
        try:
            self.conn = sqlite3.connect(self.path)
            if self.created:
                self.conn.executescript(SCHEMA)
                self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(RESULTS_SCHEMA),))
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('application', ?)", (APPLICATION,))
                self.conn.commit()
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None or row[0] != str(RESULTS_SCHEMA):
                found = row[0] if row is not None else "missing"
                self.conn.close()
                raise StoreError(f"{self.path}: results schema {found}, this foliosim writes {RESULTS_SCHEMA}; "
                                 "use a new database file")
            self.conn.executescript(SCHEMA)  # tables added within this schema version (live_verdicts)
            if not self.created and self.conn.execute("PRAGMA application_id").fetchone()[0] == 0:
                self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")  # written before the marker
                self.conn.commit()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable SQLite results database ({exc})") from None

    def discard_if_unused(self) -> bool:
        """Close and delete the file if this object created it and no cell was stored; True if deleted."""
        if not self.created or self.done():
            return False
        self.close()
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        return True

    def close(self) -> None:
        self.conn.close()

    def done(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT cell_id FROM cells")}

    def put(self, result: CellResult) -> None:
        self.put_run([result])

    def put_run(self, results: list[CellResult]) -> None:
        """Store the cells of one driving run in one transaction."""
        with self.conn:
            for result in results:
                spec = result.spec
                self.conn.execute(
                    "INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (result.cell_id, spec.design, spec.workload, json.dumps(dict(spec.params), sort_keys=True),
                     spec.seed, spec.word_bits, int(spec.no_page_mapcount), spec.oracle,
                     json.dumps(spec.identity(), sort_keys=True), __version__, result.seconds, result.skipped,
                     json.dumps(result.notes), time.strftime("%Y-%m-%dT%H:%M:%S"), spec.mode,
                     spec.driver if spec.mode == "open" else spec.design, spec.run_key, result.questions,
                     result.digest))
                self.conn.execute("DELETE FROM metrics WHERE cell_id = ?", (result.cell_id,))
                self.conn.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?)",
                                      ((result.cell_id, *row) for row in result.rows))

    def put_live(self, workload: str, questions_exclusive: int, false_shared: int, questions_shared: int,
                 false_exclusive: int, source: str) -> None:
        """Store the live kernel's own verdicts on a real program (a census, no simulation in it).

        ``workload``: the program as the report names it (a workload file's label ``file:NAME@HASH`` or just
        NAME, e.g. ``pool``); ``questions_exclusive``: folio checks where one MM mapped the folio, of which
        ``false_shared`` had the shared bit set; ``questions_shared``: checks where several MMs mapped it, of
        which ``false_exclusive`` said exclusive; ``source``: where the verdicts come from (e.g. ``census
        pool.trace.gz``). One row per (workload, source): a second put replaces it. ValueError for counts that
        cannot be (negative, or more false answers than questions).
        """
        for name, value in (("questions_exclusive", questions_exclusive), ("false_shared", false_shared),
                            ("questions_shared", questions_shared), ("false_exclusive", false_exclusive)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"put_live({workload!r}): {name} must be a whole number >= 0, not {value!r}")
        if false_shared > questions_exclusive or false_exclusive > questions_shared:
            raise ValueError(f"put_live({workload!r}): more false answers than questions "
                             f"({false_shared}/{questions_exclusive} false shared, "
                             f"{false_exclusive}/{questions_shared} false exclusive)")
        if not workload or not source:
            raise ValueError("put_live: workload and source must be named")
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO live_verdicts VALUES (?,?,?,?,?,?,?)",
                              (workload, source, questions_exclusive, false_shared, questions_shared,
                               false_exclusive, time.strftime("%Y-%m-%dT%H:%M:%S")))

    def live_verdicts(self) -> list[dict[str, Any]]:
        """Every stored live verdict row, by workload and source."""
        cur = self.conn.execute("SELECT * FROM live_verdicts ORDER BY workload, source")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def cells(self) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM cells ORDER BY design, workload, seed, cell_id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def metric_rows(self, cell_ids: Iterable[str] | None = None) -> Iterator[tuple[Any, ...]]:
        """Joined rows in CSV_COLUMNS order, sorted (so exports are reproducible)."""
        query = ("SELECT c.cell_id, c.design, c.workload, c.params, c.seed, c.word_bits, c.no_page_mapcount, "
                 "m.metric, m.consumer, m.folio_order, m.mms, m.value FROM metrics m JOIN cells c USING (cell_id)")
        wanted = set(cell_ids) if cell_ids is not None else None
        for row in self.conn.execute(query + " ORDER BY c.design, c.workload, c.seed, c.cell_id, m.metric, "
                                             "m.consumer, m.folio_order, m.mms"):
            if wanted is None or row[0] in wanted:
                yield row

    def metrics_of(self, cell_id: str) -> list[tuple[str, str, int, int, float]]:
        return [tuple(r) for r in self.conn.execute(
            "SELECT metric, consumer, folio_order, mms, value FROM metrics WHERE cell_id = ? "
            "ORDER BY metric, consumer, folio_order, mms", (cell_id,))]

    def export_csv(self, out: str | Path) -> int:
        """Write the joined long table; returns the number of rows.

        The rows go to a temporary file beside ``out`` that is renamed over it only when complete, so a full
        disk or an interruption never leaves a truncated file (an existing ``out`` stays as it was).
        """
        from foliosim.outfile import replaced_on_success

        count = 0
        with replaced_on_success(str(out)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for row in self.metric_rows():
                writer.writerow(row)
                count += 1
        return count

    def export_parquet(self, out: str | Path) -> int:
        """The same table as Parquet, through DuckDB (the ``parquet`` extra)."""
        try:
            duckdb: Any = importlib.import_module("duckdb")
        except ImportError:
            raise StoreError("Parquet export needs DuckDB: pip install 'foliosim[parquet]'") from None
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp) / "metrics.csv"
            count = self.export_csv(staged)
            con = duckdb.connect()
            try:
                types = {"cell_id": "VARCHAR", "design": "VARCHAR", "workload": "VARCHAR", "params": "VARCHAR",
                         "seed": "BIGINT", "word_bits": "INTEGER", "no_page_mapcount": "INTEGER",
                         "metric": "VARCHAR", "consumer": "VARCHAR", "folio_order": "INTEGER", "mms": "INTEGER",
                         "value": "DOUBLE"}
                cols = "{" + ", ".join(f"'{k}': '{v}'" for k, v in types.items()) + "}"
                built = Path(tmp) / "metrics.parquet"
                con.execute(f"COPY (SELECT * FROM read_csv('{staged}', header=true, columns={cols})) "
                            f"TO '{built}' (FORMAT parquet)")
            except duckdb.Error as exc:
                raise StoreError(f"cannot write {out}: DuckDB failed ({exc})") from None
            finally:
                con.close()
            _move_into_place(built, Path(out))
        return count


def _move_into_place(src: Path, dest: Path) -> None:
    """Copy ``src`` beside ``dest`` and rename it there: ``dest`` is either untouched or complete."""
    import shutil

    from foliosim.outfile import replaced_on_success

    try:
        with replaced_on_success(str(dest)) as tmp, open(tmp, "wb") as handle, open(src, "rb") as data:
            shutil.copyfileobj(data, handle)
    except OSError as exc:
        raise StoreError(f"cannot write {dest}: {exc.strerror or exc}") from None
