"""A snapshot's folios read in bulk (runtrace._bulk_folios, SnapshotFolios) against json and the checks: a line whose
folios have exactly the recorder's form gives json's object (as a mapping) and columns holding its values, read the
way the snapshot checker reads json's object; any other line (whitespace, escapes, keys written twice or not in
decimal, fields missing, extra or out of order, floats, strings, numbers beyond int64, nesting, empty lists) reads,
or fails with the message, exactly as parse_event says; and the shipped traces' snapshots are all read in bulk."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from foliosim.live.snapcheck import _LiveFolios
from foliosim.workloads.runtrace import (
    _FOLIO_KEYS,
    FOLIO_NULL,
    RunTraceError,
    Snapshot,
    SnapshotFolios,
    _bulk_folios,
    _snapshot_event,
    parse_event,
)
from tests.test_runtrace_snapshot_pages import agree_with_json, readings

TRACES = Path(__file__).resolve().parent.parent / "examples" / "run-traces"
I64 = 1 << 63
#: integers at the edges: int64's and uint64's bounds, 18, 19 and 20 digits, zero and small ones
EDGE_INTS = st.sampled_from([0, 1, -1, I64 - 1, -I64, I64, -I64 - 1, 10**18 - 1, -(10**18 - 1), 10**18, -(10**18),
                             10**19 - 1, 10**19, 2**64 - 1, 2**64, 10**25])
INTS = st.one_of(st.integers(-2, 40), st.integers(-(2**66), 2**66), EDGE_INTS)
SCALARS = st.one_of(INTS, st.booleans(), st.none())
COUNTER = st.one_of(st.none(), st.none(), INTS)
#: the raw _mm_ids word: two slot ids (31 bits each), a lock bit, the shared bit (1 << 63 alone: the null mark)
WORDS = st.builds(lambda a, b, lock, shared: a | lock << 31 | b << 32 | shared << 63, st.integers(0, 2**31 - 1),
                  st.integers(0, 2**31 - 1), st.integers(0, 1), st.integers(0, 1))
FOLIO = st.fixed_dictionaries({
    "order": st.one_of(st.integers(0, 9), INTS, st.booleans(), st.none()),
    "refcount": st.one_of(st.integers(0, 600), INTS, st.booleans()),
    "large_mapcount": COUNTER, "entire_mapcount": COUNTER, "pincount": COUNTER, "nr_pages_mapped": COUNTER,
    "mm_ids": st.one_of(st.none(), WORDS, st.just(I64), INTS, st.lists(INTS, min_size=2, max_size=2)),
    "mm_id_mapcount": st.one_of(st.none(), st.lists(st.integers(-1, 600), min_size=2, max_size=2),
                                st.lists(INTS, max_size=3)),
    "shared_bit": st.one_of(st.none(), st.booleans(), st.integers(0, 1)),
    "slots": st.one_of(st.none(), st.lists(SCALARS, max_size=3), SCALARS),
    "lock_bit": SCALARS, "is_anon": SCALARS,
    "page_mapcount": st.one_of(st.lists(st.integers(-1, 3), max_size=4), st.lists(SCALARS, max_size=3), SCALARS),
    "anon_exclusive": st.one_of(st.lists(st.booleans(), max_size=4), st.lists(SCALARS, max_size=3), SCALARS),
}).map(lambda folio: {name: folio[name] for name in _FOLIO_KEYS})
I18 = st.one_of(st.integers(-2, 600), st.sampled_from([10**18 - 1, -(10**18 - 1), 2**59, -(2**59)]))
#: folios of the recorder's form, with any values it may hold
RECORDED = st.fixed_dictionaries({
    "order": st.integers(0, 9), "refcount": I18, "large_mapcount": st.one_of(st.none(), I18),
    "entire_mapcount": st.one_of(st.none(), I18), "pincount": st.one_of(st.none(), I18),
    "nr_pages_mapped": st.one_of(st.none(), I18), "mm_ids": st.one_of(st.none(), WORDS),
    "mm_id_mapcount": st.one_of(st.none(), st.lists(I18, min_size=2, max_size=2)),
    "shared_bit": st.one_of(st.none(), st.booleans()),
    "slots": st.one_of(st.none(), st.lists(st.integers(0, 2**31 - 1), min_size=2, max_size=2)),
    "lock_bit": st.one_of(st.none(), st.booleans()), "is_anon": st.booleans(),
    "page_mapcount": st.lists(st.integers(-1, 3), min_size=1, max_size=4),
    "anon_exclusive": st.lists(st.booleans(), min_size=1, max_size=4),
}).map(lambda folio: {name: folio[name] for name in _FOLIO_KEYS})  # (in the recorder's order)
KEYS = st.one_of(st.integers(0, 2**40).map(str), st.integers(0, 2**40).map(str), st.integers(0, 2**40).map(str),
                 st.integers(0, 2**40).map(str), INTS.map(str), st.sampled_from(["0x10", "010", "00", "1e3", " 5",
                                                                                  "", "a", "1.0", "+1", "-0"]))
#: text put into (or over) the folios: what json refuses, reads otherwise or reads as another type
TOKENS = st.sampled_from([" ", "\t", "1.0", ".5", "e3", "-", "--1", "+1", "0", "00", "01", "-0", "true", "false",
                          "null", '"1"', '"', "[", "]", "[]", "{", "}", "{}", ",", ":", "\\", "\\u0030", "NaN",
                          "9" * 19, "9" * 20, "[1,2]", '"order":1,', '"x":1,', '"1":{}', "]}}", "]},", "tru", "fals"])


def _line(folios: Any, **more: Any) -> str:
    """A snapshot line as the recorder writes it (compact JSON), by the task BASE spawns."""
    return json.dumps({"t": 2, "ev": "snapshot", "pid": 10, "tid": 10, "at": "fork", "scope": "anon",
                       "pages": [[4096, 16, 16, 0, 1, True]], "folios": folios, "mm_id": 3, **more},
                      separators=(",", ":"))


def _recorder(order: int = 0, **fields: Any) -> dict[str, Any]:
    """A folio as the recorder writes it (live/record.py _folio_json)."""
    large = order > 0
    folio: dict[str, Any] = {
        "order": order, "refcount": 3, "large_mapcount": 1 if large else None, "entire_mapcount": -1 if large else None,
        "pincount": 0 if large else None, "nr_pages_mapped": 2 if large else None,
        "mm_ids": (1 << 63) | 5 << 32 | 3 if large else None, "mm_id_mapcount": [1, 0] if large else None,
        "shared_bit": True if large else None, "slots": [3, 5] if large else None, "lock_bit": False if large else None,
        "is_anon": True, "page_mapcount": [1] * (1 << order), "anon_exclusive": [False] * (1 << order)}
    folio.update(fields)
    return folio


def _plain(folios: Any) -> Any:
    return dict(folios) if isinstance(folios, SnapshotFolios) else folios


def _want(line: str) -> tuple[str, Any]:
    """json's reading of the line and the checks': the event (pages in lists), or the error."""
    try:
        ev = parse_event(line, "t line 3")
    except RunTraceError as exc:
        return "error", str(exc)
    if ev["ev"] == "snapshot":
        ev = {**ev, "pages": [[*p[:5], bool(p[5])] for p in ev["pages"]]}
    return "ok", ev


def _event(ev: dict[str, Any]) -> dict[str, Any]:
    if ev["ev"] == "snapshot":
        pages = ev["pages"] if type(ev["pages"]) is list else [[*p[:5], bool(p[5])] for p in ev["pages"].tolist()]
        return {**ev, "pages": pages, "folios": _plain(ev["folios"])}
    return ev


def _snapshot(snap: Snapshot) -> Any:
    return _plain(snap.folios)


def _columns(folios: dict[str, dict[str, Any]]) -> list[list[int]]:
    """The values SnapshotFolios.columns holds, from json's object (mm_ids as int64 bits)."""
    rows = []
    for k in folios.values():
        pair = k["mm_id_mapcount"] or [None, None]
        word = k["mm_ids"]
        row = [k["order"], k["refcount"], k["large_mapcount"], k["entire_mapcount"], k["pincount"],
               k["nr_pages_mapped"], None if word is None else int(np.uint64(word).view(np.int64)), *pair,
               k["shared_bit"]]
        rows.append([FOLIO_NULL if v is None else int(v) for v in row])
    return rows


def _same(line: str) -> bool:
    """The readers say what json and the checks say; returns whether the bulk reader took the folios."""
    want = _want(line)
    agree_with_json(line, want, readings(line, _event, _snapshot), "folios")
    bulk = _snapshot_event(line)
    if bulk is None or not isinstance(bulk["folios"], SnapshotFolios):
        return False
    # the bulk reader never takes a line the checks refuse; it gives json's object, and columns of its values
    assert want[0] == "ok" and want[1]["ev"] == "snapshot"
    folios: SnapshotFolios = bulk["folios"]
    wanted = want[1]["folios"]
    assert folios == wanted and dict(folios) == wanted and list(folios) == list(wanted) and len(folios) == len(wanted)
    assert repr(folios) == repr(wanted)
    assert folios.heads.tolist() == [int(k, 0) for k in wanted]
    assert folios.columns.tolist() == _columns(wanted)
    # ... which the checker reads as it reads json's object: the same rows, the same folio one by one
    cols, plain = _LiveFolios.of(folios), _LiveFolios.of(wanted)
    heads = np.array([int(k) for k in wanted] + [1 << 41], dtype=np.int64)
    at, at_plain = cols.find(heads), plain.find(heads)
    assert at.tolist() == at_plain.tolist() and at[-1] == -1
    rows, whole = cols.rows(at[:-1])
    assert whole.all()
    want_rows, want_whole = plain.rows(at_plain[:-1])
    assert want_whole.all() and rows.tolist() == want_rows.tolist()
    for i in at[:-1].tolist():
        assert _LiveFolios.of({"1": cols.item(i)}).rows(np.zeros(1, dtype=np.int64))[0].tolist() == \
            plain.rows(np.array([i]))[0].tolist()
    return True


def _recorders_form(folios: dict[str, Any]) -> bool:
    """Whether json's object has the form the bulk reader takes (its docstring)."""
    def i18(x: Any) -> bool:
        return type(x) is int and -(10**18) < x < 10**18

    def scalar(x: Any) -> bool:
        return x is None or type(x) is bool or (type(x) is int and -(10**19) < x < 10**19)

    def items(x: Any) -> bool:
        return type(x) is list and len(x) > 0 and all(map(scalar, x))

    for key, k in folios.items():
        if not (key.isdigit() and key == str(int(key)) and len(key) <= 18 and list(k) == list(_FOLIO_KEYS)):
            return False
        counters = [k[name] for name in _FOLIO_KEYS[2:6]]
        pair = k["mm_id_mapcount"]
        word = k["mm_ids"]
        if not (i18(k["order"]) and i18(k["refcount"]) and all(c is None or i18(c) for c in counters)
                and (word is None or (type(word) is int and 0 <= word < 10**19 and word != I64))
                and (pair is None or (type(pair) is list and len(pair) == 2 and all(map(i18, pair))))
                and (k["shared_bit"] is None or type(k["shared_bit"]) is bool)
                and (scalar(k["slots"]) or items(k["slots"])) and scalar(k["lock_bit"]) and scalar(k["is_anon"])
                and items(k["page_mapcount"]) and items(k["anon_exclusive"])):
            return False
    return True


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(KEYS, st.one_of(RECORDED, RECORDED, FOLIO)), max_size=4), st.data())
def test_folios_read_as_json_reads_them(folios: list[tuple[str, dict[str, Any]]], data: st.DataObject) -> None:
    """Folios of any values (int64's edges and beyond, nulls, booleans for integers, lists of any length), some with
    a field left out, added or moved: the same object or the same error as json and the checks, and the recorder's
    form (only it) is read in bulk."""
    obj: dict[str, dict[str, Any]] = {}
    for key, folio in folios:
        change = data.draw(st.sampled_from(["none"] * 12 + ["drop", "extra", "move"]))
        names = list(folio)
        if change == "drop":
            del folio[data.draw(st.sampled_from(names))]
        elif change == "extra":
            folio[data.draw(st.sampled_from(["x", "order2", "pages"]))] = data.draw(SCALARS)
        elif change == "move":
            name = data.draw(st.sampled_from(names))
            folio[name] = folio.pop(name)
        obj[key] = folio
    line = _line(obj)
    taken = _same(line)
    event(f"read in bulk: {taken}")
    assert taken == _recorders_form(obj)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 9), min_size=1, max_size=3), st.data())
def test_mutated_folio_text_reads_as_json_reads_it(orders: list[int], data: st.DataObject) -> None:
    """The recorder's folios with something put in or written over, at any place or where a value starts or ends:
    whatever json and the checks say (an error naming the line and field, or the values) the readers say."""
    folios = {str(0x1000 + 0x200 * i): _recorder(min(order, 3)) for i, order in enumerate(orders)}
    line = _line(folios)
    assert _same(line)
    start = line.index('"folios":')
    end = line.index(',"mm_id":3') + 1
    edges = [i for i in range(start, end) if line[i] in '[]{},:"' or line[i - 1] in '[]{},:"']
    at = data.draw(st.one_of(st.integers(start, end), st.sampled_from(edges)))
    token = data.draw(TOKENS)
    over = data.draw(st.integers(0, 3))
    event(f"read in bulk: {_same(line[:at] + token + line[at + over:])}")


ONE = _line({"4096": _recorder(4)})


@pytest.mark.parametrize(("line", "bulk"), [
    (_line({}), True),
    (ONE, True),
    (_line({"16": _recorder(), "4096": _recorder(4), "0": _recorder(0, refcount=-(10**18 - 1))}), True),
    (_line({"4096": _recorder(4, mm_ids=2**64 - 1 - I64)}), True),  # the largest word of 19 digits
    (_line({"4096": _recorder(4, mm_ids=2**64 - 1)}), False),  # 20 digits: json's way
    (_line({"4096": _recorder(4, mm_ids=I64)}), False),  # the null mark's bits: json's way
    (_line({"4096": _recorder(4, mm_ids=[3, 5])}), False),  # the ids as a list: json's way, the same values
    (_line({"4096": _recorder(4, refcount=10**18)}), False),
    (_line({"4096": _recorder(4, page_mapcount=[])}), False),
    (_line({"4096": _recorder(4, page_mapcount=[[1]])}), False),
    (_line({"4096": _recorder(4, shared_bit=1)}), False),  # refused by the checks
    (_line({"4096": {**_recorder(4), "order": True}}), False),
    (_line({"4096": _recorder(4, refcount=None)}), False),
    (_line({"4096": _recorder(4, refcount=2.0)}), False),
    (_line({"4096": _recorder(4, mm_id_mapcount=[1, 2, 3])}), False),
    (_line({"4096": _recorder(4, large_mapcount="1")}), False),
    (_line({"4096": _recorder(4, slots={"a": 1})}), False),
    (_line({"0x1000": _recorder(4)}), False),  # not decimal: json's way (the checker reads it as hex)
    (_line({"04096": _recorder(4)}), False),
    (ONE.replace('"folios":{"4096":{', '"folios":{"4096":{"order":0,"refcount":1},"4096":{'), False),  # twice
    (ONE.replace('"folios":{', '"folios":{"4096":{"order":0,"refcount":1},'), False),
    (ONE.replace('"folios":{', '"folios": {'), False),
    (ONE.replace('"refcount":3', '"refcount": 3'), False),
    (ONE.replace('"refcount":3', '"refcount":3 '), False),
    (ONE.replace('"refcount":3', '"ref\\u0063ount":3'), False),
    (ONE.replace('"folios"', '"fol\\u0069os"'), False),
    (ONE.replace('"mm_id":3', '"mm_id":3,"folios":{}'), False),  # the key twice: json keeps the last
    (ONE.replace('"mm_id":3', '"mm_id":3,"x":"\\"folios\\":{}"'), False),
    (ONE.replace('"mm_id":3', '"mm_id":3,"x":"]}}"'), True),
    (ONE.replace('"mm_id":3', '"mm_id":3,"x":{"folios":1}'), False),
    (ONE.replace("]}}", "]}}}"), False),
    (ONE.replace("]}}", "]},}"), False),
    (ONE.replace("]}}", "]}"), False),
    (ONE.replace('"anon_exclusive":[false', '"anon_exclusive":[fals'), False),
    (ONE.replace('"anon_exclusive":[false', '"anon_exclusive":[falsefalse'), False),
    (ONE.replace('"anon_exclusive":[false', '"anon_exclusive":[false,'), False),
    (ONE.replace('"page_mapcount":[1', '"page_mapcount":[01'), False),
    (ONE.replace('"page_mapcount":[1', '"page_mapcount":[-'), False),
    (ONE.replace('"page_mapcount":[1', '"page_mapcount":[-0'), True),
    (ONE.replace('"page_mapcount":[1', '"page_mapcount":[1e3'), False),
    (ONE.replace('"page_mapcount":[1', '"page_mapcount":[' + "9" * 19), True),
    (ONE.replace('"page_mapcount":[1', '"page_mapcount":[' + "9" * 20), False),
    (ONE.replace('"page_mapcount":[1', '"page_mapcount":[' + "9" * 5000), False),  # json refuses (int digits)
    (ONE.replace('"large_mapcount":1', '"large_mapcount":-0'), True),
    (ONE.replace('"large_mapcount":1', '"large_mapcount":-999999999999999999'), True),
    (ONE.replace('"large_mapcount":1', '"large_mapcount":-1000000000000000000'), False),
])
def test_odd_folios_read_as_json_reads_them(line: str, bulk: bool) -> None:
    try:
        assert _same(line) == bulk
    except ValueError:  # json's own refusal of a number of too many digits (not a JSONDecodeError): the same on both
        with pytest.raises(ValueError):
            json.loads(line)


def test_bulk_folios_columns() -> None:
    text = json.dumps({"16": _recorder(), "4096": _recorder(4, entire_mapcount=-1, mm_id_mapcount=[-1, 7],
                                                            shared_bit=None, mm_ids=1 << 63 | 9 << 32 | 4)},
                      separators=(",", ":"))
    got = _bulk_folios(text)
    assert got is not None
    n = FOLIO_NULL
    assert got.heads.tolist() == [16, 4096]
    assert got.columns.tolist() == [[0, 3, n, n, n, n, n, n, n, n],
                                    [4, 3, 1, -1, 0, 2, -(1 << 63) + (9 << 32) + 4, -1, 7, n]]
    assert _bulk_folios(text.replace("4096", "16")) is None  # a key twice
    assert _bulk_folios("{}") is not None and len(_bulk_folios("{}")) == 0  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["make", "pool", "redis-bgsave", "prefork-server", "fork-child", "sh-pipeline"])
def test_shipped_snapshots_folios_are_read_in_bulk(name: str) -> None:
    """Every snapshot line of the shipped traces has its folios read in bulk, to json's object and values."""
    with gzip.open(TRACES / f"{name}.trace.gz", "rt", encoding="utf-8") as handle:
        lines = [line for line in handle if '"ev":"snapshot"' in line]
    assert lines
    for line in lines:
        bulk = _snapshot_event(line)
        assert bulk is not None and isinstance(bulk["folios"], SnapshotFolios)
        want = json.loads(line)["folios"]
        assert bulk["folios"].columns.tolist() == _columns(want)
        assert bulk["folios"].heads.tolist() == [int(k) for k in want]
        assert dict(bulk["folios"]) == want


@pytest.mark.parametrize("value", [2**63, -(2**63), 2**70, -(2**70)])
def test_checker_compares_a_json_folio_beyond_int64_per_item(value: int) -> None:
    """A folio json read with a value the int64 rows cannot hold (or that is their null mark) is compared per item
    (not counted in bulk as unobserved, nor an OverflowError)."""
    folio = _recorder(4, refcount=3)
    live = _LiveFolios.of({"16": folio, "32": {**folio, "large_mapcount": value}, "48": {**folio, "refcount": value}})
    rows, whole = live.rows(live.find(np.array([16, 32, 48], dtype=np.int64)))
    assert whole.tolist() == [True, False, False]
    assert rows[0].tolist()[:2] == [3, 1]
