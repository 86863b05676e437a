"""The SQLite results database: one row per finished cell, one row per metric.

Schema (docs/evaluator.md has the metric list)::

    cells(cell_id PRIMARY KEY, design, workload, params JSON, seed, word_bits,
          no_page_mapcount, oracle, identity JSON, foliosim_version, seconds,
          skipped, notes JSON, finished)
    metrics(cell_id, metric, consumer, folio_order, mms, value,
            PRIMARY KEY (cell_id, metric, consumer, folio_order, mms))
    meta(key PRIMARY KEY, value)         -- schema version

A cell and its metrics are written in one transaction, so an interrupted
sweep leaves only whole cells behind and resumes where it stopped.
"""

from __future__ import annotations

import csv
import importlib
import json
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
    notes TEXT NOT NULL, finished TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS metrics (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id), metric TEXT NOT NULL, consumer TEXT NOT NULL,
    folio_order INTEGER NOT NULL, mms INTEGER NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (cell_id, metric, consumer, folio_order, mms));
"""
CSV_COLUMNS = ("cell_id", "design", "workload", "params", "seed", "word_bits", "no_page_mapcount", "metric",
               "consumer", "folio_order", "mms", "value")


class StoreError(FoliosimError):
    """The results database cannot be used (names the file and why)."""


class ResultsDB:
    """A results database file (created on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.conn = sqlite3.connect(self.path)
            self.conn.executescript(SCHEMA)
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                self.conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(RESULTS_SCHEMA),))
                self.conn.commit()
            elif row[0] != str(RESULTS_SCHEMA):
                raise StoreError(f"{self.path}: results schema {row[0]}, this foliosim writes {RESULTS_SCHEMA}; "
                                 "use a new database file")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable SQLite results database ({exc})") from None

    def close(self) -> None:
        self.conn.close()

    def done(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT cell_id FROM cells")}

    def put(self, result: CellResult) -> None:
        spec = result.spec
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (result.cell_id, spec.design, spec.workload, json.dumps(dict(spec.params), sort_keys=True),
                 spec.seed, spec.word_bits, int(spec.no_page_mapcount), spec.oracle,
                 json.dumps(spec.identity(), sort_keys=True), __version__, result.seconds, result.skipped,
                 json.dumps(result.notes), time.strftime("%Y-%m-%dT%H:%M:%S")))
            self.conn.execute("DELETE FROM metrics WHERE cell_id = ?", (result.cell_id,))
            self.conn.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?)",
                                  ((result.cell_id, *row) for row in result.rows))

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
        """Write the joined long table; returns the number of rows."""
        count = 0
        with open(out, "w", newline="", encoding="utf-8") as handle:
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
                target = str(out).replace("'", "''")
                con.execute(f"COPY (SELECT * FROM read_csv('{staged}', header=true, columns={cols})) "
                            f"TO '{target}' (FORMAT parquet)")
            finally:
                con.close()
        return count
