"""The one-pass reader of run traces (workloads/runtrace.py _Converter.run_fast, prepare's kept items) against
the reference reading (RunTrace.events() + _Converter.run, twice): the same items, figures and errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foliosim.workloads import runtrace
from foliosim.workloads.runtrace import (
    Conversion,
    ConvertStats,
    Race,
    RunTrace,
    RunTraceError,
    Snapshot,
    Step,
    _Converter,
    prepare,
)

TRACES = sorted((Path(__file__).resolve().parents[1] / "examples" / "run-traces").glob("*.trace.gz"))


def _reference(trace: RunTrace) -> tuple[ConvertStats, list[Any], ConvertStats, set[int], dict[str, int]]:
    """The two readings as they were before the one-pass reader: first-pass figures, items, second-pass figures."""
    header = trace.header
    first = _Converter(header, None)
    for _item in first.run(trace.events()):
        pass
    second = _Converter(header, dict(first.file_pages))
    second.file_shmem = dict(first.file_shmem)
    second.racy = first.races.lines
    items = []
    for item in second.run(trace.events()):
        if isinstance(item, Step):
            second.stats.steps += 1
        items.append(item)
    return first.stats, items, second.stats, set(first.races.lines), dict(first.file_pages)


def _same_items(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert type(g) is type(w)
        assert g == w


def _check(trace: RunTrace) -> Conversion:
    first, items, second, racy, files = _reference(trace)
    conv = prepare(trace)
    assert conv.stats.to_json() == first.to_json()
    assert list(conv.stats.events) == list(first.events)  # the same key order too (JSON output)
    assert conv.racy == racy and conv.file_pages == files and conv.lines == first.lines
    got = list(conv.items())
    _same_items(got, items)
    assert conv.stats.to_json() == second.to_json()
    assert json.dumps(conv.stats.to_json()) == json.dumps(second.to_json())
    return conv


@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.name)
def test_shipped_traces_read_the_same(path: Path) -> None:
    conv = _check(RunTrace.open(path))
    assert conv.kept is not None  # held, not read again
    again = list(conv.items())  # a second reading of the kept items gives them again
    assert len(again) == conv.stats.steps + sum(1 for i in again if isinstance(i, Snapshot | Race))


def test_traces_with_races_place_the_markers() -> None:
    hits = 0
    for path in TRACES:
        conv = prepare(RunTrace.open(path))
        if conv.racy:
            hits += 1
            races = [i for i in conv.items() if isinstance(i, Race)]
            assert races and {r.line for r in races} <= conv.racy
    assert hits  # some shipped trace has races (else this test shows nothing)


@pytest.mark.parametrize("path", TRACES[:4], ids=lambda p: p.name)
def test_read_again_when_too_long(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond CACHE_ITEMS the items are read a second time (in batches): the same."""
    monkeypatch.setattr(runtrace, "CACHE_ITEMS", 50)
    monkeypatch.setattr(runtrace, "BATCH_LINES", 37)
    conv = _check(RunTrace.open(path))
    assert conv.kept is None


@pytest.mark.parametrize("keep", [True, False])
def test_stopped_early_gives_the_figures_at_that_item(keep: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer that stops after k items sees the figures of the reference reading after k items."""
    if not keep:
        monkeypatch.setattr(runtrace, "CACHE_ITEMS", 10)
        monkeypatch.setattr(runtrace, "BATCH_LINES", 50)
    path = next(p for p in TRACES if p.name == "sh-pipeline.trace.gz")
    trace = RunTrace.open(path)
    conv = prepare(trace)
    total = sum(1 for _ in conv.items())
    for k in (1, 2, 7, 100, total // 2, total - 1, total):
        want = _Converter(trace.header, conv.file_pages)
        want.file_shmem = dict(conv.file_shmem)
        want.racy = conv.racy
        for n, item in enumerate(want.run(trace.events()), 1):
            if isinstance(item, Step):
                want.stats.steps += 1
            if n == k:
                break
        items = conv.items()
        for _n, _item in zip(range(k), items, strict=False):
            pass
        items.close()
        assert conv.stats.to_json() == want.stats.to_json(), k


# ------------------------------------------------------------------ malformed and mutated lines
HEADER = json.dumps({"format": "foliosim-run-trace", "version": 1, "page_size": 4096,
                     "thp": {"enabled": "always", "anon": {"4": "always"}}})
BASE = [
    {"t": 1, "ev": "spawn", "pid": 10, "tid": 10, "path": "/bin/x", "argv": []},
    {"t": 2, "ev": "syscall", "pid": 10, "tid": 10, "name": "mmap", "args": [0, 65536, 3, 0x22, -1, 0],
     "ret": 0x7F0000000000},
    {"t": 3, "ev": "fault", "pid": 10, "tid": 10, "addr": 0x7F0000001000, "write": True, "ip": 0, "error_code": 2},
    {"t": 4, "ev": "fork", "pid": 10, "tid": 10, "child_pid": 11, "child_tid": 11, "clone_flags": 17,
     "thread": False, "vfork": False},
    {"t": 5, "ev": "fault", "pid": 11, "tid": 11, "addr": 0x7F0000001008, "write": True, "ip": 0, "error_code": 7},
    {"t": 5.5, "ev": "fault", "pid": 10, "tid": 10, "addr": 0x7F0000002000, "write": False, "ip": 0,
     "error_code": 4, "kernel": True, "kernel_ip": "x"},
    {"t": 6, "ev": "fault", "pid": 12, "tid": 12, "addr": 0x7F0000001000, "write": True, "ip": 0, "error_code": 2},
    {"t": 7, "ev": "fault", "pid": 10, "tid": 10, "addr": 0x10000, "write": True, "ip": 0, "error_code": 2},
    {"t": 8, "ev": "exit", "pid": 11, "tid": 11, "group": True, "code": 0},
    {"t": 9, "ev": "fault", "pid": 11, "tid": 11, "addr": 0x7F0000003000, "write": True, "ip": 0, "error_code": 6},
]


def _outcome(text: str) -> tuple[str, Any]:
    """The reference's and the new reader's result for one trace text: items and figures, or the error."""
    trace = RunTrace("t", text=text)
    try:
        first, items, second, racy, _files = _reference(trace)
        want: tuple[str, Any] = ("ok", (first.to_json(), items, second.to_json(), racy))
    except RunTraceError as exc:
        want = ("error", str(exc))
    try:
        conv = prepare(RunTrace("t", text=text))
        p = conv.stats.to_json()
        got_items = list(conv.items())
        got: tuple[str, Any] = ("ok", (p, got_items, conv.stats.to_json(), conv.racy))
    except RunTraceError as exc:
        got = ("error", str(exc))
    return want, got


def test_base_trace_reads_the_same() -> None:
    want, got = _outcome("\n".join([HEADER, *map(json.dumps, BASE)]))
    assert want[0] == "ok"
    assert got == want


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_batch_boundary_before_the_first_fault(batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand-over of the fault tallies before any fault line adds no "fault" event key early (nor one at all
    in a trace without faults): the event counts keep the reference's keys and their order (the JSON's)."""
    monkeypatch.setattr(runtrace, "BATCH_LINES", batch)
    _check(RunTrace("t", text="\n".join([HEADER, *map(json.dumps, BASE)])))
    no_faults = [e for e in BASE if e["ev"] != "fault"]
    conv = _check(RunTrace("t", text="\n".join([HEADER, *map(json.dumps, no_faults)])))
    assert "fault" not in conv.stats.events


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**64), st.floats(allow_nan=False, width=32),
                   st.text(max_size=3), st.just([]), st.just({}), st.just([1, 2]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(BASE) - 1), st.sampled_from(["t", "ev", "pid", "tid", "addr", "write", "ip",
                                                        "error_code", "kernel", "extra"]),
       st.one_of(VALUES, st.just("fault"), st.just("drop")))
def test_mutated_event_same_outcome(index: int, key: str, value: Any) -> None:
    events = [dict(e) for e in BASE]
    if value == "drop":
        events[index].pop(key, None)
    else:
        events[index][key] = value
    want, got = _outcome("\n".join([HEADER, *map(json.dumps, events)]))
    assert got == want


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(BASE) - 1), st.sampled_from(["spaces", "blank", "tail", "cut", "leading0", "dupkey",
                                                        "crlf", "minus0", "intexp", "texp"]))
def test_mutated_line_text_same_outcome(index: int, how: str) -> None:
    lines = [json.dumps(e, separators=(",", ":")) for e in BASE]
    line = lines[index]
    t_text = line.split(",", 1)[0]  # '{"t":<number>'
    lines[index] = {"spaces": f"  {line} ", "blank": f"{line}\n   \n", "tail": f"{line}x", "cut": line[:-3],
                    "leading0": line.replace('"pid":1', '"pid":01', 1), "dupkey": line[:-1] + ',"tid":99}',
                    "crlf": line + "\r", "minus0": line.replace('"ip":0', '"ip":-0', 1),
                    "intexp": line.replace('"ip":0', '"ip":0e0', 1),
                    "texp": line.replace(t_text, t_text + "e0", 1)}[how]
    want, got = _outcome("\n".join([HEADER, *lines]))
    assert got == want


def test_file_errors_same_line(tmp_path: Path) -> None:
    """A truncated gzip stream and a bad line in a file: the same message from both readers."""
    src = next(p for p in TRACES if p.name == "sh-pipeline.trace.gz")
    data = gzip.decompress(src.read_bytes())
    for name, blob in (("cut.gz", gzip.compress(data)[:-4000]),
                       ("bad.gz", gzip.compress(data.replace(b'"ev":"fault"', b'"ev":"faulty"', 1))),
                       ("late.gz", gzip.compress(data[: len(data) // 2] + b'{"t":0,"ev":"fault"}\n'))):
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(RunTraceError) as want:
            _reference(RunTrace(name, path=path))
        with pytest.raises(RunTraceError) as got:
            prepare(RunTrace(name, path=path))
        assert str(got.value) == str(want.value)
