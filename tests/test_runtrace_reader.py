"""The run-trace reader's quick structures (workloads/runtrace.py): the recorder's fault lines read without json
(_FAULT_LINE) and the converter's picture of an address space (_Space) against plain models."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import astuple, replace
from itertools import pairwise
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foliosim.workloads.runtrace import (
    _FAULT_LINE,
    _PROTS,
    NORESERVE,
    RunTrace,
    RunTraceError,
    _Area,
    _Converter,
    _event_ok,
    _prot,
    _Space,
    parse_header,
    prepare,
)
from foliosim.workloads.steps import Step
from tests.test_runtrace_exact import _ListSpace
from tests.test_runtrace_fastpath import BASE, HEADER, _outcome, _reference

# ------------------------------------------------------------------ fault lines without json
NUMBERS = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
                    st.floats(allow_nan=False, allow_infinity=False, width=32))
FIELD_VALUES = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=4), st.just([]), st.just({}),
                         st.just("true"), st.just("false"))
KERNEL_IPS = st.text(alphabet=st.sampled_from(['a', '"', '\\', '\x01', '\x7f', 'é', '\u2028', '/', ' ']),
                     max_size=6)


def _fault(t: Any = 5, pid: Any = 10, tid: Any = 10, addr: Any = 0x7F0000001000, write: Any = True, ip: Any = 0,
           code: Any = 2, **more: Any) -> dict[str, Any]:
    return {"t": t, "ev": "fault", "pid": pid, "tid": tid, "addr": addr, "write": write, "ip": ip,
            "error_code": code, **more}


def _compact(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["t", "pid", "tid", "addr", "write", "ip", "error_code", "kernel", "kernel_ip"]),
       st.one_of(FIELD_VALUES, KERNEL_IPS), st.booleans(), st.booleans())
def test_fault_line_match_is_what_json_reads(key: str, value: Any, kernel: bool, newline: bool) -> None:
    """A line the pattern matches is a fault event parse_event() accepts, and the groups are json's values
    (t an int or a float as json gives it); a compact fault line with other types does not match."""
    event = _fault(kernel=True, kernel_ip="x") if kernel else _fault()
    event[key] = value
    line = _compact(event) + ("\n" if newline else "")
    m = _FAULT_LINE(line)
    obj = json.loads(line)
    if m is None:
        shape = {k: type(v) for k, v in obj.items()}
        canonical = (shape.get("t") in (int, float) and all(shape.get(k) is int for k in ("pid", "tid", "addr",
                     "ip", "error_code")) and shape.get("write") is bool and set(obj) <= set(_fault(kernel=1,
                     kernel_ip=1)) and ("kernel" not in obj or shape["kernel"] is bool)
                     and ("kernel_ip" not in obj or ("kernel" in obj and shape["kernel_ip"] is str)))
        # the pattern leaves out only what the recorder never writes: escapes or control characters in kernel_ip,
        # integers of more than 20 digits
        long = any(type(v) is int and len(str(abs(v))) > 20 for v in obj.values())
        assert not canonical or "\\" in line or long
        return
    assert _event_ok(obj)
    t_float, t_int, pid, tid, addr, write, kern = m.groups()
    t = float(t_float) if t_float is not None else int(t_int)
    assert type(t) is type(obj["t"]) and t == obj["t"]
    assert (int(pid), int(tid), int(addr), write == "true", kern == "true") == (
        obj["pid"], obj["tid"], obj["addr"], obj["write"], obj.get("kernel") is True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(BASE) - 1), st.sampled_from(["t", "pid", "tid", "addr", "write", "ip", "error_code",
                                                        "kernel", "kernel_ip", "extra"]),
       st.one_of(FIELD_VALUES, KERNEL_IPS, st.just("drop")))
def test_mutated_compact_event_same_outcome(index: int, key: str, value: Any) -> None:
    """As test_runtrace_fastpath's mutated events, written compactly as the recorder does (the lines the
    pattern reads): the same items, figures and errors as the reference reading."""
    events = [dict(e) for e in BASE]
    if value == "drop":
        events[index].pop(key, None)
    else:
        events[index][key] = value
    want, got = _outcome("\n".join([HEADER, *map(_compact, events)]))
    assert got == want


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from([0, 1, 2, 4, 8]), st.integers(0, 3),
                          st.one_of(st.integers(0, 40), st.floats(0, 40, allow_nan=False)), st.booleans()),
                min_size=1, max_size=12))
def test_fault_stream_same_outcome(faults: list[tuple[int, int, int, float, bool]]) -> None:
    """Compact fault lines of several tasks and pages, out of order at times (an error at the right line), racy
    or not, in and out of the mapping: the same outcome as the reference reading."""
    events = [dict(e) for e in BASE[:5]]
    t = 5.0
    for task, page, kern, dt, write in faults:
        pid = (10, 11, 13)[task]
        t = t + dt if dt < 30 else t - 1
        more: dict[str, Any] = {"kernel": bool(kern & 1), "kernel_ip": "k"} if kern else {}
        events.append(_fault(t=int(t) if kern == 3 else t, pid=pid, tid=pid, addr=0x7F0000000000 + page * 4096 + 8,
                             write=write, **more))
    want, got = _outcome("\n".join([HEADER, *map(_compact, events)]))
    assert got == want


# ------------------------------------------------------------------ _Space against a plain list
def _plain_remove(areas: list[_Area], start: int, end: int) -> tuple[list[_Area], list[_Area]]:
    """Unmap [start, end) from a list of areas with test_runtrace_exact's plain list algorithm: (areas left, pieces
    gone)."""
    plain = _ListSpace(areas)
    gone = plain.remove(start, end)
    return plain.areas, gone


def _insort(areas: list[_Area], area: _Area) -> None:
    at = len(areas)
    for i, a in enumerate(areas):
        if a.start > area.start:
            at = i
            break
    areas.insert(at, area)


CHANGES: list[Callable[[_Area], _Area]] = [
    lambda a: a.with_prot("r"),
    lambda a: a if a.kind == "opaque" else a.with_prot("rw"),
    lambda a: replace(a, hugepage=True) if a.kind == "anon" else a,
    lambda a: replace(a, dontfork=not a.dontfork),
    lambda a: replace(a, start=a.start + 1) if a.end - a.start > 1 else a,  # moves a piece: the slow path
]
KINDS = ["anon", "file-private", "opaque"]
OPS = st.lists(st.tuples(st.sampled_from(["insert", "remove", "update", "fork"]), st.integers(0, 40),
                         st.integers(-2, 12), st.integers(0, len(KINDS) - 1), st.integers(0, len(CHANGES) - 1)),
               max_size=40)


def _fields(areas: list[_Area]) -> list[tuple[Any, ...]]:
    return [astuple(a) for a in areas]


def _one(area: _Area | None) -> tuple[Any, ...] | None:
    return None if area is None else astuple(area)


@settings(max_examples=400, deadline=None)
@given(OPS)
def test_space_against_a_plain_list(ops: list[tuple[str, int, int, int, int]]) -> None:
    """Every insert, remove and update gives the pieces of the plain list algorithm, in order (lengths of zero
    or less included: they may leave the space unclean), and find/above/below/covered_parts agree with it."""
    space = _Space(described=True)
    model: list[_Area] = []
    for op, start, length, kind, change in ops:
        end = start + length
        if op == "insert":
            area = _Area(start, end, KINDS[kind], "rw", "f" if kind == 1 else None, start * 3)
            space.insert(area)
            model, _gone = _plain_remove(model, start, end)
            _insort(model, area)
        elif op == "remove":
            gone = space.remove(start, end)
            model, want = _plain_remove(model, start, end)
            assert _fields(gone) == _fields(want)
        elif op == "update":
            space.update(start, end, CHANGES[change])
            model, pieces = _plain_remove(model, start, end)
            for piece in pieces:
                _insort(model, CHANGES[change](piece))
        else:
            space = space.fork()
            model = [a for a in model if not a.dontfork]
        assert _fields(space.areas) == _fields(model)
        assert space.starts == [a.start for a in model]
        if space.clean:
            assert all(a.start < a.end for a in model)
            assert all(x.end <= y.start for x, y in pairwise(model))
        for vpn in range(-1, 55):
            found = space.find(vpn)
            if space.clean:
                assert _one(found) == next((astuple(a) for a in model if a.start <= vpn < a.end), None)
                assert _fields(space.covered_parts(vpn, vpn + 3)) == _fields(
                    [a for a in model if a.start < vpn + 3 and a.end > vpn])
                assert _one(space.above(vpn)) == next((astuple(a) for a in model if a.start > vpn), None)
                assert _one(space.below(vpn)) == next((astuple(a) for a in reversed(model) if a.start < vpn), None)


def _copy(space: _Space) -> _Space:
    twin = _Space(space.described)
    twin.areas = list(space.areas)
    twin._reindex()
    return twin


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 8), st.integers(0, len(KINDS) - 1), st.booleans()),
                max_size=10),
       st.lists(st.tuples(st.integers(0, 40), st.integers(-1, 12), st.integers(0, 7)), min_size=1, max_size=6))
def test_mprotect_as_runs_then_update(maps: list[tuple[int, int, int, bool]],
                                      calls: list[tuple[int, int, int]]) -> None:
    """sys_mprotect (one cut of the range) gives the steps, the figures and the mappings of the plain
    formulation: the runs of the range (_over_runs), then update() of every piece."""
    conv = _Converter(parse_header(HEADER, "header"), None)
    space = _Space(described=True)
    for start, length, kind, noreserve in maps:
        space.insert(_Area(start, start + length, KINDS[kind], "rw" + (NORESERVE if noreserve else ""),
                           "f" if kind == 1 else None, start))
    for start, length, prot in calls:
        model = _copy(space)
        args = [start << 12, length << 12, prot]
        before = Counter(conv.stats.skipped)
        got = list(conv.sys_mprotect("p1", space, args, 0, {}))
        mine = Counter(conv.stats.skipped)
        p = _prot(prot)
        want = [Step("mprotect", "p1", (lo, 0, hi - lo, p)) for lo, hi in conv._over_runs("mprotect", model, start,
                                                                                          start + length)]
        model.update(start, start + length, lambda a, p=p: a if a.kind == "opaque" else a.with_prot(
            p + NORESERVE if a.prot.endswith(NORESERVE) else p))
        assert got == want
        assert mine - before == conv.stats.skipped - mine
        assert _fields(space.areas) == _fields(model.areas) and space.starts == model.starts


def _result(text: str, read: Callable[[RunTrace], Any]) -> tuple[str, str]:
    try:
        return "ok", repr(read(RunTrace("t", text=text)))
    except (RunTraceError, ValueError) as exc:
        return type(exc).__name__, str(exc)


def test_a_number_too_long_for_int_goes_to_json() -> None:
    """A fault line with an integer of more digits than int() reads (sys.get_int_max_str_digits()): the pattern
    leaves it to json, so the reader fails (or not) as the reference does; 20 digits are read by the pattern."""
    for field in ("pid", "addr", "ip", "error_code", "t"):
        for digits in (20, 21, 5000):
            event = _fault(**{"code" if field == "error_code" else field: 0})
            line = _compact(event).replace(f'"{field}":0', f'"{field}":' + "7" * digits, 1)
            assert (_FAULT_LINE(line) is not None) == (digits == 20)
            text = "\n".join([HEADER, *map(_compact, BASE[:3]), line])

            def reference(trace: RunTrace) -> Any:
                return _reference(trace)[1]

            def one_pass(trace: RunTrace) -> Any:
                return list(prepare(trace).items())

            assert _result(text, one_pass) == _result(text, reference)


@given(st.integers(-(2**40), 2**40))
def test_the_protection_table_is_prot(prot: int) -> None:
    """The handlers' table of protections (by the low three bits) gives what _prot() says for any value."""
    assert _PROTS[prot & 7] == _prot(prot)
