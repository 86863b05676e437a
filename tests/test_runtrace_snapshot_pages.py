"""A snapshot's pages read in bulk (runtrace._snapshot_event, _bulk_pages) against json and the checks: a line the
bulk reader takes gives the array json's lists give; any other line (whitespace, floats, strings, nulls, pages of
another length, nesting, numbers beyond int64, keys written twice or with escapes) reads, or fails with the
message, exactly as parse_event says; and the shipped traces' snapshots read the same both ways."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foliosim.workloads.runtrace import (
    RunTrace,
    RunTraceError,
    Snapshot,
    _bulk_pages,
    _pages_array,
    _snapshot_event,
    parse_event,
    prepare,
)
from tests.test_runtrace_fastpath import BASE, HEADER

TRACES = Path(__file__).resolve().parent.parent / "examples" / "run-traces"
I64 = 1 << 63
#: integers at the edges: int64's bounds and beyond them, 18 and 19 digits, zero and small ones
EDGE_INTS = st.sampled_from([0, 1, -1, 20, 21, -0, I64 - 1, -I64, I64, -I64 - 1, 10**18 - 1, -(10**18 - 1), 10**18,
                             2**64, -(2**64), 10**25])
INTS = st.one_of(st.integers(0, 30), st.integers(-(2**66), 2**66), st.integers(0, 2**48), EDGE_INTS)
PAGE = st.tuples(INTS, INTS, INTS, st.one_of(st.integers(0, 20), INTS), INTS,
                 st.one_of(st.booleans(), st.booleans(), INTS))
#: text put into (or over) a page list: what json refuses, reads otherwise or reads as another type
TOKENS = st.sampled_from([" ", "\t", "1.0", ".5", "e3", "E+1", "-", "--1", "+1", "0", "00", "01", "-0", "true", "false",
                          "null", '"1"', "[", "]", "[]", ",", ";", "\\", "١", "NaN", "Infinity", "9" * 19, "9" * 25,
                          "[1,2,3,4,5,true]", ",6", "]],[[", '"pages":[]', "tru", "fals"])


def _line(pages: Any, **more: Any) -> str:
    """A snapshot line as the recorder writes it (compact JSON), by the task BASE spawns."""
    return json.dumps({"t": 2, "ev": "snapshot", "pid": 10, "tid": 10, "at": "fork", "scope": "anon",
                       "pages": pages, "folios": {"0x10": {"order": 0, "refcount": 1}}, "mm_id": 3, **more},
                      separators=(",", ":"))


def _want(line: str) -> tuple[str, Any]:
    """json's reading of the line and the checks': the event (a snapshot's pages as the array, in lists), or the
    error."""
    try:
        ev = parse_event(line, "t line 3")
    except RunTraceError as exc:
        return "error", str(exc)
    return "ok", {**ev, "pages": _pages_array(ev["pages"]).tolist()} if ev["ev"] == "snapshot" else ev


def readings(line: str, event: Callable[[dict[str, Any]], Any],
             snapshot: Callable[[Snapshot], Any]) -> list[tuple[str, Any]]:
    """The trace readers' results for the line (after a header and a spawn): RunTrace.events()'s event for it
    through ``event``, and prepare()'s snapshots through ``snapshot``; each ("ok", value) or ("error", message)."""
    text = "\n".join([HEADER, json.dumps(BASE[0]), line])
    out: list[tuple[str, Any]] = []
    try:
        out.append(("ok", event(list(RunTrace("t", text=text).events())[-1][1])))
    except RunTraceError as exc:
        out.append(("error", str(exc)))
    try:
        out.append(("ok", [snapshot(item) for item in prepare(RunTrace("t", text=text)).items()
                           if isinstance(item, Snapshot)]))
    except RunTraceError as exc:
        out.append(("error", str(exc)))
    return out


def agree_with_json(line: str, want: tuple[str, Any], got: list[tuple[str, Any]], key: str) -> None:
    """Both readings (:func:`readings`, the snapshots' ``key`` from prepare()) are json's and the checks' (``want``):
    the same event, or the same error."""
    events, conversion = got
    assert events == want, line
    assert conversion == (want if want[0] == "error" else
                          ("ok", [want[1][key]] if want[1]["ev"] == "snapshot" else [])), line


def _event(ev: dict[str, Any]) -> dict[str, Any]:
    if ev["ev"] == "snapshot":
        assert type(ev["pages"]) in (list, np.ndarray)
        pages = ev["pages"] if type(ev["pages"]) is np.ndarray else _pages_array(ev["pages"])
        return {**ev, "pages": pages.tolist()}
    assert type(ev.get("pages", [])) is list  # another event's field named pages: json's value
    return ev


def _snapshot(snap: Snapshot) -> list[list[int]]:
    assert type(snap.pages) is np.ndarray and snap.pages.dtype == np.int64 and snap.pages.shape[1:] == (6,)
    pages: list[list[int]] = snap.pages.tolist()
    return pages


def _same(line: str) -> None:
    want = _want(line)
    agree_with_json(line, want, readings(line, _event, _snapshot), "pages")
    bulk = _snapshot_event(line)
    if bulk is not None:  # the bulk reader never takes a line the checks refuse, and gives json's values
        assert want[0] == "ok" and want[1]["ev"] == "snapshot"
        assert bulk["pages"].dtype == np.int64
        assert {**bulk, "pages": bulk["pages"].tolist()} == want[1]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(PAGE, max_size=8))
def test_pages_read_as_json_reads_them(pages: list[tuple[Any, ...]]) -> None:
    """Pages of any integers (int64's edges and beyond, negative, orders out of range, an integer for exclusive):
    the same array, or the same error, as json and the checks; the recorder's form within int64 is read in bulk."""
    line = _line([list(p) for p in pages])
    _same(line)
    recorders = all(type(p[5]) is bool and 0 <= p[3] <= 20 and all(-(10**18) < x < 10**18 for x in p[:5])
                    for p in pages)
    assert (_snapshot_event(line) is not None) == recorders


SMALL = st.one_of(st.integers(0, 30), st.integers(-(10**17), 10**17))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(SMALL, SMALL, SMALL, st.integers(0, 20), SMALL, st.booleans()), min_size=1, max_size=4),
       st.data())
def test_mutated_page_text_reads_as_json_reads_it(pages: list[tuple[Any, ...]], data: st.DataObject) -> None:
    """The recorder's page list with something put in or written over, at any place or where a field starts or
    ends: whatever json and the checks say (an error naming the line and field, or the values) the readers say."""
    line = _line([list(p) for p in pages])
    start = line.index('"pages":')
    end = line.index(',"folios"') + 1
    edges = [i for i in range(start, end) if line[i] in "[],:" or line[i - 1] in "[],:"]
    at = data.draw(st.one_of(st.integers(start, end), st.sampled_from(edges)))
    token = data.draw(TOKENS)
    over = data.draw(st.integers(0, 3))
    _same(line[:at] + token + line[at + over:])


@pytest.mark.parametrize("line", [
    _line([]),
    _line([[1, 2, 3, 4, 5, True]]),
    _line([[1, 2, 3, 4, 5, 1]]),  # an integer for exclusive: json's way, then 0/1
    _line([[1, 2, 3, 4, 5, 7]]),
    _line([[1, 2, 3, 4, 5, -(2**70)]]),
    _line([[1, 2, 3, 4, 5, None]]),
    _line([[1, 2, 3, 4, 5, True, 7]]),
    _line([[1, 2, 3, 4, True]]),
    _line([[1, 2, 3, 4, 5, True], [1, 2, 3, 4, 5]]),
    _line([[[1, 2, 3, 4, 5, True]]]),
    _line([[1.0, 2, 3, 4, 5, True]]),
    _line([[1, "2", 3, 4, 5, True]]),
    _line([[1, 2, 3, 21, 5, True]]),
    _line([[1, 2, 3, -1, 5, True]]),
    _line([[I64 - 1, -I64, 0, 0, 5, False]]),  # int64's bounds: accepted
    _line([[I64, 2, 3, 4, 5, True]]),  # beyond: refused (the array holds int64)
    _line([[1, 2, 3, 4, -I64 - 1, True]]),
    _line([[1, 2, 3, 4, 5, True]]).replace('"pages":[[', '"pages": [['),
    _line([[1, 2, 3, 4, 5, True]]).replace('"mm_id":3', '"mm_id":3,"pages":[]'),  # the key twice: json keeps the last
    _line([[1, 2, 3, 4, 5, True]]).replace('"mm_id":3', '"mm_id":3,"pag\\u0065s":[]'),  # ... written with an escape
    _line([[1, 2, 3, 4, 5, True]]).replace('"pages"', '"pag\\u0065s"'),
    _line([[1, 2, 3, 4, 5, True]]).replace('"folios":{', '"folios":{"0x20":{"order":0,"refcount":1,"pages":[]},'),
    _line([[1, 2, 3, 4, 5, True]]).replace('"folios":{"0x10":{"order":0,"refcount":1}}', '"folios":[]'),
    _line([[1, 2, 3, 4, 5, True]]).replace('"at":"fork"', '"at":"exec"'),
    _line([[1, 2, 3, 4, 5, True]]).replace('"ev":"snapshot"', '"ev":"exit","code":0,"group":true'),
    _line([[1, 2, 3, 4, 5, True]]).replace("[[1,", "[[01,"),  # a leading zero
    _line([[1, 2, 3, 4, 5, True]]).replace("[[1,", "[[-0,"),
    _line([[1, 2, 3, 4, 5, True]]).replace("[[1,", "[[1-1,"),
    _line([[1, 2, 3, 4, 5, True]]).replace("[[1,", "[[+1,"),
    _line([[1, 2, 3, 4, 5, True]]).replace("[[1,", "[[\u0661,"),
    _line([[1, 2, 3, 4, 5, 1], [1, 2, 3, 4, 5, True]]).replace("5,1],[", "5,1;"),  # the bulk reader's own separator
    _line([[1, 2, 3, 4, 5, True]]).replace('"pages":', '"x":"y" "pages":'),
    _line([[1, 2, 3, 4, 5, True]]).replace('"scope":"anon",', '"scope":"anon","x":"'),
    _line([[1, 2, 3, 4, 5, 1, 7, 8, 9, 10, 11, True]]),  # twelve fields in one page
    _line([[1, 2, True], [4, 5, True], [7, 8, 9, 10, 11, True]]),  # twelve fields in three pages
    _line([[1, 2, 3, 4, 5, True], [1, 2, 3, 4, 5, True, 1, 2, 3, 4, 5, 6]]),
    _line([[1, 2, 3, 4, 5, True], [1, 2, 3, 4, 5, True]]).replace("],[", "],,["),
    _line([[1, 2, 3, 4, 5, True]]) + " ",
    _line([[1, 2, 3, 4, 5, True]]) + "x",
    _line([[1, 2, 3, 4, 5, True]]) + "{}",
    " " + _line([[1, 2, 3, 4, 5, True]]),
    _line([[1, 2, 3, 4, 5, True]])[:-1],
    _line([[1, 2, 3, 4, 5, True]], note="a \"pages\":[[1,2,3,4,5,true]] in a string"),
])
def test_odd_lines_read_as_json_reads_them(line: str) -> None:
    _same(line)


def test_a_field_beyond_int64_is_refused_with_the_pages_message() -> None:
    """The one line json reads that the readers now refuse: a page field outside int64 (no kernel writes one)."""
    kind, message = _want(_line([[1, 2, 3, 4, 2**64, True]]))
    assert kind == "error"
    assert message == ("t line 3 (snapshot): field 'pages' item 0 must be [vaddr, pfn, head_pfn, order, mapcount, "
                       "exclusive]")


def test_bulk_pages_of_the_recorders_form() -> None:
    assert _bulk_pages("[]") is not None and _bulk_pages("[]").shape == (0, 6)  # type: ignore[union-attr]
    got = _bulk_pages("[[1,-2,3,20,0,true],[-999999999999999999,0,0,0,-7,false]]")
    assert got is not None and got.dtype == np.int64
    assert got.tolist() == [[1, -2, 3, 20, 0, 1], [-999999999999999999, 0, 0, 0, -7, 0]]
    for span in ("[[1,2,3,4,5,true],]", "[[1,2,3,4,5,true][1,2,3,4,5,true]]", "[[1,2,3,4,5,true]", "[[-,2,3,4,5,true]]",
                 "[[1,2,3,4,5,1]]", "[[1,2,3,4,5;true]]", "[[1,2,3,4,5,True]]", "[[1,2,3,21,5,true]]",
                 "[[1000000000000000000,2,3,4,5,true]]"):
        assert _bulk_pages(span) is None, span


@pytest.mark.parametrize("name", ["make", "pool", "redis-bgsave", "prefork-server", "fork-child", "sh-pipeline"])
def test_shipped_snapshots_read_in_bulk_as_json_reads_them(name: str) -> None:
    """Every snapshot line of the shipped traces is read in bulk, to json's values."""
    with gzip.open(TRACES / f"{name}.trace.gz", "rt", encoding="utf-8") as handle:
        lines = [line for line in handle if '"ev":"snapshot"' in line]
    assert lines
    for line in lines:
        bulk = _snapshot_event(line)
        assert bulk is not None
        want = json.loads(line)
        assert bulk["pages"].dtype == np.int64
        assert bulk.pop("pages").tolist() == _pages_array(want.pop("pages")).tolist()
        assert bulk == want
