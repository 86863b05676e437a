"""The snapshot checker's whole report (``SnapshotChecker.to_json()``: every count, cause, example and
per-snapshot line) on the shipped run traces with live snapshots, on both engines, pinned to what the checker
computed before it read the simulated side in bulk; also on snapshots perturbed so that every comparison rule
and cause is taken (missing, extra, moved and re-counted pages, folios with other fields)."""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterator
from dataclasses import fields, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from foliosim.live.tracesim import simulate
from foliosim.workloads.runtrace import Conversion, Race, RunTrace, Snapshot, prepare
from foliosim.workloads.steps import Step

TRACES = Path(__file__).resolve().parents[2] / "examples" / "run-traces"
PINNED = Path(__file__).resolve().parent / "data" / "snapcheck_pinned.json.gz"
NAMES = ("make", "redis-bgsave", "pool", "prefork-server", "sh-pipeline", "fork-child")
PERTURBED = ("redis-bgsave", "prefork-server", "sh-pipeline", "fork-child")


def _perturb(snap: Snapshot) -> Snapshot:
    """``snap`` with deterministic damage: pages dropped, added, moved to another PFN or folio, other counts; folio
    fields changed or left out."""
    pages: list[list[int]] = []
    for i, p in enumerate(snap.pages.tolist()):
        vaddr, pfn, head, order, mapcount, excl = p
        k = (i * 7 + snap.line) % 29
        if k == 0:
            continue  # reclaimed live
        if k == 1:
            mapcount += 1
        elif k == 2:
            excl = 1 - int(excl)
        elif k == 3 and order:
            order -= 1  # a smaller folio live
        elif k == 4:
            head, pfn = head + (1 << 20), pfn + (1 << 20)  # another folio
        elif k == 5:
            pfn = head + ((pfn - head + 1) % (1 << order))
        elif k == 6:
            pages.append([vaddr + (1 << 40), pfn, head, order, mapcount, excl])  # a page the simulator lacks
        elif k == 7 and not order:
            order = 2
        pages.append([vaddr, pfn, head, order, mapcount, excl])
    folios: dict[str, dict[str, Any]] = {}
    for i, (key, value) in enumerate(snap.folios.items()):
        k = (i * 5 + snap.line) % 23
        v = dict(value)
        if k == 0:
            continue
        if k == 1 and isinstance(v.get("refcount"), int):
            v["refcount"] += 1
        elif k == 2 and isinstance(v.get("large_mapcount"), int):
            v["large_mapcount"] += 1
        elif k == 3:
            v.pop("mm_ids", None)
        elif k == 4 and isinstance(v.get("mm_id_mapcount"), list):
            v["mm_id_mapcount"] = [c + 1 for c in v["mm_id_mapcount"]]
        elif k == 5 and isinstance(v.get("shared_bit"), bool):
            v["shared_bit"] = not v["shared_bit"]
        elif k == 6:
            v.pop("entire_mapcount", None)
            v.pop("mm_id_mapcount", None)
        folios[key] = v
    return replace(snap, pages=np.array(pages, dtype=np.int64).reshape(-1, 6), folios=folios,
                   mm_id=None if snap.line % 5 == 0 else snap.mm_id)


class _Perturbed(Conversion):
    def items(self) -> Iterator[Step | Snapshot | Race]:
        for item in Conversion.items(self):
            yield _perturb(item) if isinstance(item, Snapshot) else item


@cache
def _conversion(name: str) -> tuple[RunTrace, Conversion]:
    trace = RunTrace.open(TRACES / f"{name}.trace.gz")
    return trace, prepare(trace)


def report(name: str, engine: str, perturbed: bool) -> dict[str, Any]:
    trace, conv = _conversion(name)
    if perturbed:
        conv = _Perturbed(*[getattr(conv, f.name) for f in fields(conv)])
    run = simulate(trace, engine=engine, conversion=conv)
    assert run.engine == engine and run.check is not None
    out: dict[str, Any] = json.loads(json.dumps(run.check.to_json()))
    return out


def _keys() -> list[tuple[str, str, bool]]:
    return ([(n, e, False) for n in NAMES for e in ("reference", "fast")]
            + [(n, e, True) for n in PERTURBED for e in ("reference", "fast")])


@cache
def _pinned() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(gzip.decompress(PINNED.read_bytes()))
    return data


@pytest.mark.parametrize(("name", "engine", "perturbed"), _keys())
def test_checker_report_is_pinned(name: str, engine: str, perturbed: bool) -> None:
    if engine == "fast":
        pytest.importorskip("numba")
    want = _pinned()[f"{name}/{engine}/{'perturbed' if perturbed else 'as recorded'}"]
    got = report(name, engine, perturbed)
    assert got["compared"] > 0 and got["snapshots"] > 0
    assert got == want


def test_perturbed_snapshots_take_the_rules() -> None:
    """The perturbation reaches the disagreement paths (else the pinned reports would pin little of them)."""
    causes = {(d["field"], d["cause"]) for key, rep in _pinned().items() if key.endswith("perturbed")
              for d in rep["disagreements"]}
    fields_hit = {f for f, _c in causes}
    assert {"present", "folio order", "page in folio", "folio identity", "precise mapcount", "pagemap exclusive",
            "refcount"} <= fields_hit
    assert len(causes) >= 10


if __name__ == "__main__":  # regenerate: python tests/live/test_snapcheck_pinned.py (only with the checker unchanged)
    table = {f"{n}/{e}/{'perturbed' if p else 'as recorded'}": report(n, e, p) for n, e, p in _keys()}
    PINNED.write_bytes(gzip.compress(json.dumps(table, sort_keys=True).encode(), mtime=0))
    print(f"wrote {PINNED}", file=sys.stderr)
