"""The run trace's census record (docs/run-trace.md, "The live kernel's verdicts"): built from census results, read
back by live_verdicts_from_trace(), every malformed record refused with the file, line and field named.

No kernel: hand-written trace texts and synthetic census results.
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from foliosim.live.census import (
    EXCLUDED,
    EXCLUSIVE,
    FALSE_EXCLUSIVE,
    FALSE_SHARED,
    SHARED,
    TRUTH_CHANGED,
    TRUTH_MANY,
    TRUTH_ONE,
    CensusResult,
    FolioCensus,
)
from foliosim.live.verdicts import (
    CensusRecordError,
    LiveVerdicts,
    census_record,
    live_verdicts_from_trace,
    snapshot_record,
    unavailable_record,
)

ROOT = Path(__file__).resolve().parents[2]
HEADER = {"format": "foliosim-run-trace", "version": 1, "command": ["python3", "stuck-bit.py"], "kernel": "6.18.0",
          "page_size": 4096, "clock": "CLOCK_MONOTONIC", "thp": {"enabled": "madvise", "anon": {"4": "always"}}}
EVENT = {"t": 2.0, "ev": "spawn", "pid": 7, "tid": 7, "path": "/usr/bin/python3", "argv": ["python3"]}


def snap(t: float, at: str, pid: int | None, one: int, fs: int, many: int, fe: int = 0, changed: int = 0,
         stuck: int | None = None, order: str = "4") -> dict[str, Any]:
    """A census snapshot as the recorder writes it (every false "shared" a stuck bit unless told)."""
    stuck = fs if stuck is None else stuck
    causes = {}
    if stuck:
        causes["stuck-bit-both-slots-free"] = stuck
    if fs - stuck:
        causes["stale-slot"] = fs - stuck
    if fe:
        causes["bit-clear"] = fe
    return {"t": t, "at": at, "pid": pid, "processes": 2, "folios": one + many + changed, "one_mm": one,
            "false_shared": fs, "many_mms": many, "false_exclusive": fe, "changed": changed, "unreadable": 0,
            "bit_ignored": 0, "stuck_bit": stuck, "causes": causes,
            "by_order": {order: {"one_mm": one, "false_shared": fs, "many_mms": many, "false_exclusive": fe}}
            if one + many else {},
            "frozen": at != "periodic", "s": 0.01}


SNAPS = [snap(10.0, "fork", 7, 0, 0, 8), snap(20.0, "exit", 7, 2, 0, 8, changed=1),
         snap(30.0, "periodic", None, 4, 1, 4, stuck=0), snap(40.0, "exit", 9, 8, 8, 0)]


def trace_text(census: Any = None, with_census: bool = True) -> str:
    header = dict(HEADER)
    if with_census:
        header["census"] = census if census is not None else census_record("periodic", 20.0, 0.5, SNAPS, {}, 0.04)
    return json.dumps(header) + "\n" + json.dumps(EVENT) + "\n"


def test_hand_written_trace_gives_the_sums() -> None:
    v = live_verdicts_from_trace(trace_text())
    assert isinstance(v, LiveVerdicts)
    assert (v.questions_exclusive, v.false_shared, v.questions_shared, v.false_exclusive) == (14, 9, 20, 0)
    assert (v.snapshots, v.stuck_bit, v.changed, v.mode) == (4, 8, 1, "periodic")
    assert v.by_at == {"fork": 1, "exit": 2, "periodic": 1}
    assert v.by_order == {4: {"one_mm": 14, "false_shared": 9, "many_mms": 20, "false_exclusive": 0}}
    assert v.causes == {"stuck-bit-both-slots-free": 8, "stale-slot": 1}
    rate = v.false_shared_rate
    assert (rate.k, rate.n) == (9, 14) and 0 < rate.low < 9 / 14 < rate.high < 1
    assert "python3 stuck-bit.py" in v.source and "4 censuses" in v.source and "6.18.0" in v.source


def test_files_plain_and_gzip(tmp_path: Path) -> None:
    plain, gz = tmp_path / "run.trace", tmp_path / "run.trace.gz"
    plain.write_text(trace_text())
    gz.write_bytes(gzip.compress(trace_text().encode()))
    a, b = live_verdicts_from_trace(plain), live_verdicts_from_trace(gz)
    assert a is not None and b is not None
    assert (a.false_shared, a.questions_exclusive) == (b.false_shared, b.questions_exclusive) == (9, 14)
    assert str(plain) in a.source
    v = live_verdicts_from_trace(str(plain))  # a path given as a string
    assert v is not None and v.false_shared == 9


def test_old_traces_have_none() -> None:
    assert live_verdicts_from_trace(trace_text(with_census=False)) is None
    # a trace recorded before the census existed, as shipped
    assert live_verdicts_from_trace(ROOT / "examples" / "run-traces" / "fork-child.trace.gz") is None
    # a census that could not be taken (no BPF) holds no verdicts
    assert live_verdicts_from_trace(trace_text(unavailable_record("events", "BPF folio reader unavailable"))) is None


def test_old_reader_accepts_the_record() -> None:
    """The record is a header field: the run-trace reader (which rejects unknown events) reads the file as before."""
    from foliosim.workloads.runtrace import RunTrace

    run = RunTrace("run.trace", text=trace_text())
    events = list(run.events())
    assert [e["ev"] for _n, e in events] == ["spawn"]
    assert run.header.command == ("python3", "stuck-bit.py")


def bad(mutate: Any) -> str:
    record = copy.deepcopy(census_record("events", None, 0.5, SNAPS, {}, 0.04))
    mutate(record)
    with pytest.raises(CensusRecordError) as info:
        live_verdicts_from_trace(trace_text(record))
    return str(info.value)


@pytest.mark.parametrize(("mutate", "expect"), [
    (lambda r: r["snapshots"][1].update(one_mm=-1), "snapshot 1: field 'one_mm' must be a non-negative integer"),
    (lambda r: r["snapshots"][1].pop("false_shared"), "snapshot 1: missing field 'false_shared'"),
    (lambda r: r["snapshots"][3].update(false_shared=9, stuck_bit=9), "snapshot 3: field 'false_shared' (9) exceeds"),
    (lambda r: r["snapshots"][0].update(at="lunch"), "snapshot 0: field 'at' must be one of"),
    (lambda r: r["snapshots"][0].update(t="soon"), "snapshot 0: field 't' must be a number"),
    (lambda r: r["snapshots"][2].update(folios=99), "snapshot 2: 'one_mm' + 'many_mms' + 'changed' = 8"),
    (lambda r: r["snapshots"][3]["causes"].update({"gremlins": 1}), "unknown cause 'gremlins'"),
    (lambda r: r["snapshots"][3].update(stuck_bit=3), "snapshot 3: field 'stuck_bit' (3)"),
    (lambda r: r["snapshots"][3]["by_order"]["4"].update(one_mm=7), "snapshot 3: field 'by_order' sums 'one_mm'"),
    (lambda r: r["totals"].update(false_shared=10), "totals: field 'by_order' sums 'false_shared' to 9, not 10"),
    (lambda r: r["totals"].update(bit_ignored=1), "totals: field 'bit_ignored' is 1, but the snapshots sum to 0"),
    (lambda r: r["totals"].update(snapshots=5), "totals: field 'snapshots' is 5, but 4 snapshots are listed"),
    (lambda r: r.update(format=2), "format 2 is not supported"),
    (lambda r: r.update(mode="always"), "field 'mode' must be one of"),
    (lambda r: r.update(snapshots={}), "field 'snapshots' must be a list"),
    (lambda r: r.pop("totals"), "field 'totals' must be an object"),
])
def test_garbled_records_name_the_line_and_field(mutate: Any, expect: str) -> None:
    message = bad(mutate)
    assert message.startswith("trace text line 1: header field 'census'"), message
    assert expect in message, message


def test_not_a_census_object_or_not_a_trace(tmp_path: Path) -> None:
    with pytest.raises(CensusRecordError, match=r"line 1: header field 'census' must be an object"):
        live_verdicts_from_trace(trace_text([1, 2]))
    with pytest.raises(CensusRecordError, match=r"trace text line 2: not a run-trace header"):
        live_verdicts_from_trace('\n{"format": "something else"}\n')
    path = tmp_path / "broken.trace"
    path.write_text('{"format": "foliosim-run-trace", "census": \n')
    with pytest.raises(CensusRecordError, match=rf"{path} line 1: not JSON"):
        live_verdicts_from_trace(path)
    with pytest.raises(CensusRecordError, match="cannot read"):
        live_verdicts_from_trace(tmp_path / "missing.trace")
    (tmp_path / "empty.trace").write_text("\n\n")
    with pytest.raises(CensusRecordError, match="empty"):
        live_verdicts_from_trace(tmp_path / "empty.trace")


def folio(head: int, order: int, truth: str, outcome: str, cause: str | None = None) -> FolioCensus:
    return FolioCensus(head_pfn=head, order=order, hugetlb=False, mapcount=2, entire_mapcount=0,
                       slots=((0, 0), (0, 0)), shared_bit=outcome in (SHARED, FALSE_SHARED), lock_bit=False,
                       refcount=3, pincount=0, maybe_shared=outcome in (SHARED, FALSE_SHARED), mappers=(), unseen=0,
                       stale=0, truth=truth, outcome=outcome, cause=cause)


def test_snapshot_record_of_a_census_round_trips() -> None:
    result = CensusResult("pids", (7, 9), processes=2)
    result.folios = [folio(1, 4, TRUTH_ONE, FALSE_SHARED, "stuck-bit-both-slots-free"),
                     folio(2, 4, TRUTH_ONE, FALSE_SHARED, "stale-slot"), folio(3, 2, TRUTH_ONE, EXCLUSIVE),
                     folio(4, 4, TRUTH_MANY, SHARED), folio(5, 2, TRUTH_MANY, FALSE_EXCLUSIVE, "bit-clear"),
                     folio(6, 4, TRUTH_CHANGED, EXCLUDED)]
    s = snapshot_record(result, 123.4567, "exit", 9, True, 0.5)
    assert (s["one_mm"], s["false_shared"], s["many_mms"], s["false_exclusive"], s["changed"]) == (3, 2, 2, 1, 1)
    assert (s["folios"], s["stuck_bit"], s["t"], s["at"], s["pid"]) == (6, 1, 123.457, "exit", 9)
    assert s["by_order"] == {"2": {"one_mm": 1, "false_shared": 0, "many_mms": 1, "false_exclusive": 1},
                             "4": {"one_mm": 2, "false_shared": 2, "many_mms": 1, "false_exclusive": 0}}
    v = live_verdicts_from_trace(trace_text(census_record("events", None, 0.5, [s, s], {}, 1.0)))
    assert v is not None
    assert (v.questions_exclusive, v.false_shared, v.questions_shared, v.false_exclusive) == (6, 4, 4, 2)
    assert v.false_exclusive_rate.k == 2 and v.stuck_bit == 2
