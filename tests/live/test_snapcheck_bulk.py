"""The snapshot checker's bulk comparison (pages and folios agreeing counted as columns) gives the same report as its
per-item path (every page through ``_page()``, every folio through ``_folio()``), pages given as lists or as an
(N, 6) array give the same report, and so do folios given as json's object or as the columns the trace reader makes
of the recorder's form (``SnapshotFolios``), in bulk and per item: on shipped traces with snapshots damaged at random
(seeded, reproducible), on both engines. Damage includes what makes the order of first sight matter: pages moved to
another page's folio, a folio's pages split between heads, pages recorded twice, pages out of order; and folio fields
changed, left out or made null, other MM ids in the _mm_ids word."""

from __future__ import annotations

import json
import random
from dataclasses import fields, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import foliosim.live.tracesim as tracesim
from foliosim.live.snapcheck import SnapshotChecker, field_rows
from foliosim.vm.machine import Machine
from foliosim.workloads.runtrace import Conversion, RunTrace, Snapshot, SnapshotFolios, _bulk_folios, prepare

TRACES = Path(__file__).resolve().parents[2] / "examples" / "run-traces"
SMALL = ("fork-child", "sh-pipeline", "prefork-server", "redis-bgsave")


def _damage(snap: Snapshot, rng: random.Random) -> Snapshot:
    """``snap`` with random damage to its pages and folios (``rng`` decides what and how much)."""
    rows = np.asarray(snap.pages, dtype=np.int64).reshape(-1, 6).tolist()
    rate = rng.choice((0.0, 0.02, 0.1, 0.4))
    heads = [r[2] for r in rows] or [1 << 30]
    pages: list[list[int]] = []
    for vaddr, pfn, head, order, mapcount, excl in rows:
        if rng.random() >= rate:
            pages.append([vaddr, pfn, head, order, mapcount, excl])
            continue
        kind = rng.randrange(10)
        if kind == 0:
            continue  # not present live
        if kind == 1:
            mapcount += rng.choice((-1, 1))
        elif kind == 2:
            excl = 1 - excl
        elif kind == 3:
            order = rng.choice((0, 2, 4, 9))
        elif kind == 4:  # into another page's folio (a binding conflict)
            new = rng.choice(heads)
            pfn, head = new + (pfn - head), new
        elif kind == 5:  # a new live folio
            new = (1 << 36) + rng.randrange(1 << 20)
            pfn, head = new + (pfn - head), new
        elif kind == 6:
            pfn = head + rng.randrange(1 << order)
        elif kind == 7:  # recorded twice: the later record counts
            pages.append([vaddr, pfn, head, order, mapcount, excl])
            mapcount += 1
        elif kind == 8:  # a page the simulator may lack, next to this one
            pages.append([vaddr + rng.choice((-1, 1, 1 << 9)) * 4096, pfn, head, order, mapcount, excl])
        pages.append([vaddr, pfn, head, order, mapcount, excl])
    if rng.random() < 0.3:
        rng.shuffle(pages)
    folios: dict[str, dict[str, Any]] = {}
    for key, value in snap.folios.items():
        v = dict(value)
        if rng.random() < rate:
            kind = rng.randrange(12)
            if kind == 0:
                continue
            if kind == 1 and isinstance(v.get("refcount"), int):
                v["refcount"] += rng.choice((-1, 1))
            elif kind == 2 and isinstance(v.get("large_mapcount"), int):
                v["large_mapcount"] += 1
            elif kind == 3:
                v.pop(rng.choice(("mm_ids", "mm_id_mapcount", "shared_bit", "entire_mapcount", "pincount")), None)
            elif kind == 4 and isinstance(v.get("mm_id_mapcount"), list):
                v["mm_id_mapcount"] = v["mm_id_mapcount"][::-1]
            elif kind == 5 and isinstance(v.get("shared_bit"), bool):
                v["shared_bit"] = not v["shared_bit"]
            elif kind == 6 and isinstance(v.get("mm_ids"), list):
                v["mm_ids"] = v["mm_ids"][::-1]
            elif kind == 7 and isinstance(v.get("large_mapcount"), int):  # not an integer: compared per item
                v["large_mapcount"] = rng.choice((float(v["large_mapcount"]), str(v["large_mapcount"])))
            elif kind == 8:  # null: not observed (the recorder's form keeps the field)
                v[rng.choice(("large_mapcount", "entire_mapcount", "pincount", "nr_pages_mapped", "mm_ids",
                              "mm_id_mapcount", "shared_bit"))] = None
            elif kind == 9 and isinstance(v.get("mm_ids"), int):  # other ids in the slots, another shared bit
                v["mm_ids"] ^= rng.choice((1, 1 << 32, 3 << 32 | 2, 1 << 63, 1 << 31))
            elif kind == 10 and isinstance(v.get("entire_mapcount"), int):
                v["entire_mapcount"] += rng.choice((-1, 1))
            elif kind == 11 and isinstance(v.get("refcount"), int):
                v["refcount"] = rng.choice((0, -1, 10**17))
        folios[key] = v
    mm_id = None if rng.random() < 0.1 else snap.mm_id
    return replace(snap, pages=pages, folios=folios, mm_id=mm_id)


def _columns(snap: Snapshot) -> Snapshot:
    """``snap`` with its folios as the trace reader reads them from their compact JSON text: columns when they have
    the recorder's form (else json's object, as the reader leaves it)."""
    bulk = _bulk_folios(json.dumps(snap.folios, separators=(",", ":")))
    return replace(snap, folios=bulk) if bulk is not None else snap


class _Twins(SnapshotChecker):
    """The bulk checker on pages as lists and folios as json's object, with twins given the same snapshots: the
    per-item checker on pages as an array, the bulk checker on pages as an array, and the bulk and per-item checkers
    on folios as columns. (They share the racy folios the simulation notes.)"""

    rng: random.Random

    def __init__(self) -> None:
        super().__init__()
        self.per_item = SnapshotChecker(bulk=False)
        self.as_array = SnapshotChecker()
        self.columns = SnapshotChecker()
        self.columns_per_item = SnapshotChecker(bulk=False)
        self.columns_read = 0  # snapshots whose damaged folios the columns twins got as columns
        self.per_item.racy = self.as_array.racy = self.columns.racy = self.columns_per_item.racy = self.racy

    def check(self, m: Machine, snap: Snapshot) -> None:
        snap = _damage(snap, self.rng)
        dead = getattr(m, "dead_folios", None)
        if dead is not None:  # the compiled view's answer at once is the one name by name
            names = [*self.folio_of, "f0", "f1", "f123456789"]
            live = m.folios  # a property that builds the set: read once, not once per name
            assert dead(names) == [n for n in names if n not in live]
            task = m.tasks.get(snap.task)
            if task is not None:  # ... and its folios' rows are their fields one by one
                side = m.snapshot_pages(task.mm, True)  # type: ignore[attr-defined]
                assert np.array_equal(side.rows(side.keys), field_rows(side.folios(side.keys)))
        array = replace(snap, pages=np.asarray(snap.pages, dtype=np.int64).reshape(-1, 6))
        columns = _columns(array)
        self.columns_read += isinstance(columns.folios, SnapshotFolios)
        super().check(m, snap)
        self.per_item.check(m, array)
        self.as_array.check(m, array)
        self.columns.check(m, columns)
        self.columns_per_item.check(m, columns)


@cache
def _conversion(name: str) -> tuple[RunTrace, Conversion]:
    trace = RunTrace.open(TRACES / f"{name}.trace.gz")
    return trace, prepare(trace)


def _reports(name: str, engine: str, seed: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    trace, conv = _conversion(name)
    conv = Conversion(*[getattr(conv, f.name) for f in fields(conv)])
    made: list[_Twins] = []

    def checker() -> _Twins:
        c = _Twins()
        c.rng = random.Random(seed)
        made.append(c)
        return c

    with monkeypatch.context() as mp:
        mp.setattr(tracesim, "SnapshotChecker", checker)
        run = simulate(trace, engine, conv)
    assert run.engine == engine and len(made) == 1
    c = made[0]
    assert c.columns_read > 0
    return tuple(json.loads(json.dumps(x.to_json())) for x in (c, c.per_item, c.as_array, c.columns,
                                                                 c.columns_per_item))


def simulate(trace: RunTrace, engine: str, conv: Conversion) -> Any:
    return tracesim.simulate(trace, engine=engine, conversion=conv)


@pytest.mark.parametrize("engine", ["reference", "fast"])
@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(SMALL), seed=st.integers(0, 2**32 - 1))
def test_bulk_and_per_item_reports_are_equal(engine: str, name: str, seed: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if engine == "fast":
        pytest.importorskip("numba")
    bulk, per_item, as_array, columns, columns_per_item = _reports(name, engine, seed, monkeypatch)
    assert bulk["snapshots"] > 0
    assert per_item == bulk
    assert as_array == bulk
    assert columns == bulk
    assert columns_per_item == bulk


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_damage_reaches_disagreements(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The random damage reaches the per-item classification (else the equality above would test little)."""
    if engine == "fast":
        pytest.importorskip("numba")
    bulk, *_twins, columns, _columns_per_item = _reports("prefork-server", engine, 7, monkeypatch)
    fields_hit = {d["field"] for d in bulk["disagreements"]}
    assert {"present", "folio order", "page in folio", "folio identity", "precise mapcount",
            "pagemap exclusive", "refcount"} <= fields_hit
    assert bulk["agreed"] < bulk["compared"]
    assert columns == bulk  # ... also through the folios read as columns, their large folios' fields included
    assert {"refcount", "_large_mapcount", "_entire_mapcount", "slot 0 MM", "slot 0 mapcount", "shared bit"} <= {
        d["field"] for d in columns["disagreements"]}
