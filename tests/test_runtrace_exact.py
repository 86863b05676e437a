"""The run-trace conversion gives exactly what it gave before it was made fast (workloads/runtrace.py).

The digests below were computed with the plain converter (a whole-list pass and a sort per unmapping, every field
checked through parse_event) before the bisected address spaces and the quick per-kind line check replaced it:
any change of a step, a race or snapshot marker, a statistic or its order fails here. A deliberate change of the
conversion's output must recompute them (``_digest`` below) and say why in its commit.
The address-space picture is also checked against that plain list algorithm step by step (random calls, lengths
zero and negative included), and the quick line check against parse_event (its messages) on mutated lines.
"""

from __future__ import annotations

import bisect
import copy
import gzip
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import astuple, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foliosim.workloads.runtrace import (
    RunTrace,
    RunTraceError,
    Snapshot,
    _Area,
    _event_ok,
    _Space,
    parse_event,
    prepare,
)
from foliosim.workloads.steps import Step

TRACES = Path(__file__).resolve().parent.parent / "examples" / "run-traces"

#: sha256 of the conversion (see _digest), computed with the plain converter before it was made fast
SHIPPED = {
    "chromium.census": "08f3c57d03a902b24f9ba6b326f62ae8bdab25776d4730276d38c6aed27715d6",
    "fork-child": "d210a92a59e62cc957b997512bece628fa4b9b2be9e6c39072d4b63724c3d04c",
    "make.census": "36ab74f3e6bba0038f5c3c451ba15bd725c838a24737b2abc382e5791abd9d5b",
    "make": "9bc60fbd3962d4d5b69ba58c3eaee60126968a7fc116cf6bb57e6a6b80fc4ebe",
    "pool.census": "66af71abbbb9a67d38ba874c123563a61b52f8ca284a7df6dad15cfb3ba28af7",
    "pool": "796bc23501f2e454476888ba0b41808a81fc401a707377086314a3fd58ace8e8",
    "prefork-server.census": "063d79a8b34e2495c3af8211a995e253b402722baec995a9e0ee2ba1f6a65859",
    "prefork-server": "0cb9d18eb23afc7813e3d788641a6ed6a1ad299203225c2380edb5d23d701f2b",
    "redis-bgsave.census": "062a2a6c178bddb44fddebc245808569fc52a78bcc3b95df672eb307b60f9af0",
    "redis-bgsave": "ae984d8fd87839e94cfd851ab325b46db4af5b82c5b793180aa9b624de2be64b",
    "sh-pipeline.census": "333028ae1da00ab10774216a8cf45b06db7e3647a74052c36b3898ce1dfface4",
    "sh-pipeline": "9eee4c22a25b2eebd60200179342dccc58ad904399a84de98775043e9410eecb",
    "stuck-bit.census": "a99ca3327a01c6b4a9d0d53d846aeffe3fa5f3ea393f25d045c21ac539ab8d40",
}


def _pinned_text(item: Any) -> str:
    """``item``'s repr as the pins saw it: a Snapshot's pages as json's lists (exclusive a bool; every shipped trace
    writes true/false), not the array the conversion now gives, and without the ``khugepaged`` field the pins
    predate (no shipped trace records a snapshot's count: it is None in every one)."""
    if isinstance(item, Snapshot):
        assert item.khugepaged is None, "a shipped trace with per-snapshot khugepaged counts: recompute the pins"
        text = repr(replace(item, pages=[[*row[:5], bool(row[5])] for row in item.pages.tolist()]))
        assert text.endswith(", khugepaged=None)")
        return text.removesuffix(", khugepaged=None)") + ")"
    return repr(item)


def _digest(trace: RunTrace) -> tuple[str, int]:
    """sha256 over the first pass's figures, every item's repr (in order) and the second pass's statistics."""
    h = hashlib.sha256()
    conv = prepare(trace)
    h.update(repr((conv.file_pages, conv.file_shmem, conv.stats, conv.lines, sorted(conv.racy))).encode())
    n = 0
    for item in conv.items():
        h.update(_pinned_text(item).encode())
        h.update(b"\n")
        n += 1
    h.update(repr(conv.stats).encode())
    return h.hexdigest(), n


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_trace_converts_exactly_as_before(name: str) -> None:
    digest, items = _digest(RunTrace.open(TRACES / f"{name}.trace.gz"))
    assert items > 100
    assert digest == SHIPPED[name]


# ------------------------------------------------------------------------------ calls of length zero
P = 4096
B = 0x7F0000000000


def _degenerate_trace() -> str:
    """madvise/mprotect of length 0 inside a mapping (the kernel returns 0), mremap to size 0, munmap of 0."""
    header = {"format": "foliosim-run-trace", "version": 1, "command": ["prog"], "kernel": "6.18.0",
              "page_size": 4096, "thp_set": {}, "recorder": {}, "check_live": False,
              "thp": {"enabled": "madvise", "shmem_enabled": "never", "anon": {"4": "always", "9": "madvise"},
                      "shmem": {}}}
    events: list[dict[str, Any]] = []

    def ev(kind: str, pid: int = 1, **fields: Any) -> None:
        events.append({"t": float(len(events)), "ev": kind, "pid": pid, "tid": pid, **fields})

    def call(name: str, args: list[int], ret: int = 0, pid: int = 1) -> None:
        ev("syscall", pid, name=name, args=args, ret=ret)

    ev("spawn", path="/p", argv=["p"])
    call("mmap", [0, 32 * P, 3, 0x22, -1, 0], B)
    call("madvise", [B + 8 * P, 0, 14])
    call("mprotect", [B + 12 * P, 0, 1])
    ev("fault", addr=B + 8 * P, write=True, ip=1, error_code=6)
    ev("fault", addr=B + 9 * P, write=True, ip=1, error_code=6)
    call("madvise", [B + 4 * P, 16 * P, 10])
    call("mremap", [B + 20 * P, 4 * P, 0, 0, 0], B + 20 * P)
    call("mlock", [B, 32 * P])
    ev("fork", child_pid=2, child_tid=2, clone_flags=0x11, thread=False, vfork=False)
    ev("fault", pid=2, addr=B + 2 * P, write=True, ip=1, error_code=6)
    call("munmap", [B + 2 * P, 0], 0, pid=2)
    call("madvise", [B, 32 * P, 14], 0, pid=2)
    call("mlockall", [1], 0, pid=2)
    ev("exit", pid=2, group=True, code=0)
    ev("exit", group=True, code=0)
    return "\n".join(json.dumps(x) for x in [header, *events]) + "\n"


def test_calls_of_length_zero_do_nothing() -> None:
    """madvise/mprotect of length 0 succeed and do nothing in the kernel: no step, and the mapping is not split
    (the converter used to cut it there and leave an empty piece, so the next faults fell outside the mappings)."""
    conv = prepare(RunTrace("t", text=_degenerate_trace()))
    items = list(conv.items())
    steps = [i for i in items if isinstance(i, Step)]
    assert not [s for s in steps if s.verb in ("madvise", "mprotect") and s.args[2] == 0]
    base = B >> 12
    assert [s.args[0] - base for s in steps if s.verb == "fault" and s.task == "p1"] == [8, 9]
    assert conv.stats.ignored["madvise of length 0"] == 1
    assert conv.stats.ignored["mprotect of length 0"] == 1
    assert not conv.stats.fault_skips
    assert len(items) == 20


# ------------------------------------------------------------------------------ the address-space picture
class _ListSpace:
    """The plain algorithm: every change is a pass over the whole list, then a (stable) sort by start."""

    def __init__(self, areas: list[_Area] | None = None) -> None:
        self.areas: list[_Area] = list(areas or [])

    def remove(self, start: int, end: int) -> list[_Area]:
        keep: list[_Area] = []
        gone: list[_Area] = []
        for a in self.areas:
            if a.end <= start or a.start >= end:
                keep.append(a)
                continue
            if a.start < start:
                keep.append(a.cut(a.start, start))
            if a.end > end:
                keep.append(a.cut(end, a.end))
            gone.append(a.cut(max(a.start, start), min(a.end, end)))
        self.areas = sorted(keep, key=lambda a: a.start)
        return gone

    def insert(self, area: _Area) -> None:
        self.remove(area.start, area.end)
        bisect.insort(self.areas, area, key=lambda a: a.start)

    def update(self, start: int, end: int, change: Callable[[_Area], _Area]) -> None:
        for piece in self.remove(start, end):
            bisect.insort(self.areas, change(piece), key=lambda a: a.start)

    def find(self, vpn: int) -> _Area | None:
        starts = [a.start for a in self.areas]
        i = bisect.bisect_right(starts, vpn) - 1
        return self.areas[i] if i >= 0 and self.areas[i].end > vpn else None

    def covered_parts(self, start: int, end: int) -> list[_Area]:
        return [a for a in self.areas if a.start < end and a.end > start]


CHANGES: dict[str, Callable[[_Area], _Area]] = {
    "hugepage": lambda a: replace(a, hugepage=True) if a.kind == "anon" else a,
    "prot": lambda a: a if a.kind == "opaque" else replace(a, prot="r"),
    "dontfork": lambda a: replace(a, dontfork=True),
    "shift": lambda a: replace(a, start=a.start + 1, end=a.end + 1),  # moves pieces: the space re-sorts
}
KINDS = ("anon", "file-private", "opaque", "shared-anon")

op = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 40), st.integers(-2, 14), st.sampled_from(KINDS)),
    st.tuples(st.just("remove"), st.integers(0, 40), st.integers(-2, 14), st.just("")),
    st.tuples(st.just("update"), st.integers(0, 40), st.integers(-2, 14), st.sampled_from(sorted(CHANGES))),
    st.tuples(st.just("fork"), st.just(0), st.just(0), st.just("")),
)


def _fields(areas: list[_Area]) -> list[tuple[Any, ...]]:
    return [astuple(a) for a in areas]


@given(st.lists(op, max_size=40))
def test_the_bisected_space_gives_the_pieces_of_the_plain_list_algorithm(ops: list[tuple[str, int, int, str]]
                                                                        ) -> None:
    space, plain = _Space(described=True), _ListSpace()
    for verb, start, length, what in ops:
        end = start + length
        if verb == "insert":
            area = _Area(start, end, what, "rw", "f [0:1]" if what.startswith("file") else None, start % 3)
            space.insert(area)
            plain.insert(area)
        elif verb == "remove":
            assert _fields(space.remove(start, end)) == _fields(plain.remove(start, end))
        elif verb == "update":
            space.update(start, end, CHANGES[what])
            plain.update(start, end, CHANGES[what])
        else:
            space = space.fork()
            plain = _ListSpace([a for a in plain.areas if not a.dontfork])
        assert _fields(space.areas) == _fields(plain.areas)
        assert space.starts == [a.start for a in plain.areas]
        for lo, hi in ((start, end), (start - 3, start + 2), (0, 60), (end, start)):
            assert _fields(space.covered_parts(lo, hi)) == _fields(plain.covered_parts(lo, hi))
        for vpn in range(start - 1, start + 3):
            found, want = space.find(vpn), plain.find(vpn)
            assert (found and astuple(found)) == (want and astuple(want))


# ------------------------------------------------------------------------------ the quick line check
BASE_EVENTS: list[dict[str, Any]] = [
    {"t": 1, "ev": "spawn", "pid": 1, "tid": 1, "path": "/p", "argv": ["p"]},
    {"t": 1, "ev": "fork", "pid": 1, "tid": 1, "child_pid": 2, "child_tid": 2, "clone_flags": 17, "thread": False,
     "vfork": False, "t_begin": 0.5},
    {"t": 1, "ev": "exec", "pid": 1, "tid": 1, "path": "/x", "populated": [4096],
     "maps": [[4096, 8192, "rw-p", 0, "00:00", 0, "[stack]"]]},
    {"t": 1, "ev": "exit", "pid": 1, "tid": 1, "group": True, "code": 0},
    {"t": 1, "ev": "exit", "pid": 1, "tid": 1, "group": False, "signal": 9},
    {"t": 1.5, "ev": "fault", "pid": 1, "tid": 1, "addr": 4096, "write": True, "ip": 1, "error_code": 6},
    {"t": 1, "ev": "syscall", "pid": 1, "tid": 1, "name": "mmap", "args": [0, 4096, 3, 34, -1, 0], "ret": 4096},
    {"t": 1, "ev": "syscall", "pid": 1, "tid": 1, "name": "mmap", "args": [0, 4096, 3, 2, 3, 0], "ret": 4096,
     "file": {"dev": "0:1", "ino": 3, "path": "/x", "shmem": False}},
    {"t": 1, "ev": "syscall", "pid": 1, "tid": 1, "name": "munmap", "args": [4096, 4096], "ret": -22},
    {"t": 1, "ev": "syscall", "pid": 1, "tid": 1, "name": "madvise", "args": [4096, 4096, 4], "ret": 0},
    {"t": 1, "ev": "syscall", "pid": 1, "tid": 1, "name": "shmat", "args": [1, 0, 0], "ret": 4096, "size": 8192,
     "file": {"dev": "0:1", "ino": 3}},
    {"t": 1, "ev": "syscall", "pid": 1, "tid": 1, "name": "io_uring_register", "args": [3, 0, 1, 1], "ret": 0,
     "buffers": [[4096, 100]]},
    {"t": 1, "ev": "syscall", "pid": 1, "tid": 1, "name": "vmsplice", "args": [3, 0, 1, 1], "ret": 0,
     "ranges": [[4096, 100]]},
    {"t": 1, "ev": "snapshot", "pid": 1, "tid": 1, "at": "fork", "mm_id": 3,
     "pages": [[4096, 5, 5, 0, 1, True], [8192, 6, 6, 2, 1, 0]],
     "folios": {"0x5": {"order": 0, "refcount": 1, "mm_ids": [1, 2], "mm_id_mapcount": [0, 1], "shared_bit": True,
                        "pincount": 0, "large_mapcount": None},
                "6": {"order": 2, "refcount": 1, "mm_ids": 7}}},
]
VALUES: list[Any] = [None, True, False, 0, 1, -1, 21, 1 << 40, 2.5, "x", "0x10", "012", [], [1], [1, 2], [True, 2], {},
                     {"a": 1}, [1, 2, 3, 4, 5, 6], "snapshot", "fault"]
_DELETE = object()
HEADER = json.dumps({"format": "foliosim-run-trace", "version": 1, "page_size": 4096, "thp": {}})


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj[:7]):
            out += _paths(value, (*prefix, i))
    return out


def _every_single_change() -> list[dict[str, Any]]:
    """Each base event with one field (at any depth) deleted or given each of VALUES."""
    out: list[dict[str, Any]] = []
    for event in BASE_EVENTS:
        for path in _paths(event):
            for value in [_DELETE, *VALUES]:
                changed = copy.deepcopy(event)
                parent: Any = changed
                for key in path[:-1]:
                    parent = parent[key]
                if value is not _DELETE:
                    parent[path[-1]] = copy.deepcopy(value)
                elif isinstance(parent, dict):
                    del parent[path[-1]]
                else:
                    continue
                out.append(changed)
    return out


def _mutate(rng: random.Random, obj: dict[str, Any]) -> dict[str, Any]:
    """One or two fields deleted, added or given a value of another kind (at any depth)."""
    obj = copy.deepcopy(obj)
    for _ in range(rng.choice((1, 1, 2))):
        path = rng.choice(_paths(obj))
        parent: Any = obj
        for key in path[:-1]:
            parent = parent[key]
        key, roll = path[-1], rng.random()
        if roll < 0.25 and isinstance(parent, dict):
            del parent[key]
        elif roll < 0.3 and isinstance(parent, dict):
            parent[rng.choice(("zz", "12", "code", "signal", "file", "populated", "maps"))] = copy.deepcopy(
                rng.choice(VALUES))
        elif roll < 0.35 and isinstance(parent, list):
            parent.append(copy.deepcopy(rng.choice(VALUES)))
        else:
            parent[key] = copy.deepcopy(rng.choice(VALUES))
    return obj


def _verdict(read: Callable[[str], Any], line: str) -> tuple[str, Any]:
    try:
        return "ok", read(line)
    except RunTraceError as exc:
        return "error", str(exc)


def test_the_quick_line_check_accepts_and_rejects_what_parse_event_does() -> None:
    """Lines with each field changed in turn, and with one or two changed at random: the events the reader yields,
    or the error it raises (line and field named), are parse_event's own."""
    rng = random.Random(13)
    rejected = 0
    lines = [json.dumps(e) for e in BASE_EVENTS]
    lines += [json.dumps(e) for e in _every_single_change()]
    lines += [json.dumps(_mutate(rng, rng.choice(BASE_EVENTS))) for _ in range(1500)]
    lines += [" " + lines[0], lines[5] + " \t", "[1]", "null", '{"t": 1, "ev": "fault"', '{"ev": ["fault"], "t": 1}']
    for line in lines:
        want = _verdict(lambda text: parse_event(text, "t line 2"), line)
        got = _verdict(lambda text: next(RunTrace("t", text=f"{HEADER}\n{text}\n").events())[1], line)
        assert got == want, line
        rejected += want[0] == "error"
    assert rejected > 1000 and len(lines) - rejected > 200  # both sides of the check were exercised


@pytest.mark.parametrize("name", ["sh-pipeline", "prefork-server"])
def test_the_shipped_lines_all_pass_the_quick_check(name: str) -> None:
    """Every event line of a recording (snapshots included) is accepted without parse_event (the fast path)."""
    with gzip.open(TRACES / f"{name}.trace.gz", "rt", encoding="utf-8") as handle:
        lines = [line for line in handle if line.strip()][1:]
    assert lines and all(_event_ok(json.loads(line)) for line in lines)
    assert any('"snapshot"' in line for line in lines)
