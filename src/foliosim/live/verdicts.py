"""The live kernel's own verdicts stored in a run trace: the header's ``census`` record (docs/run-trace.md).

``foliosim trace --census`` runs :func:`foliosim.live.census.run_census` over the traced processes at forks, exits
(and periodically) and stores, per census, how many checks of "maybe mapped shared" it made on large anonymous
folios mapped by exactly one MM and how many of those the kernel answered wrongly "shared" (false shared), the
same for folios mapped by two MMs or more (false "exclusive": unsound, must be 0), and the stuck-bit cases.
This module builds that record (:func:`snapshot_record`, :func:`census_record`) and reads it back
(:func:`live_verdicts_from_trace`), checking every field and that the totals are the sums of the snapshots.

The record lives in the header (the first line) because every reader of version-1 traces rejects an event line
with an unknown ``ev`` but ignores header fields it does not know: older foliosim versions read these traces
unchanged.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foliosim.live.census import (
    CAUSES,
    FALSE_EXCLUSIVE,
    FALSE_EXCLUSIVE_CAUSES,
    FALSE_SHARED,
    TRUTH_CHANGED,
    TRUTH_MANY,
    TRUTH_ONE,
    CensusResult,
    Rate,
)

#: header key of the record
CENSUS_KEY = "census"
#: version of the record's layout
CENSUS_FORMAT = 1
#: census modes of ``foliosim trace --census``
MODES = ("none", "events", "periodic")
#: when a census was taken: before an exit, after a fork, or by the periodic timer
AT = ("exit", "fork", "periodic")
#: counters every snapshot and the totals carry (non-negative integers; the totals are their sums)
COUNTS = ("processes", "folios", "one_mm", "false_shared", "many_mms", "false_exclusive", "changed",
          "unreadable", "bit_ignored", "stuck_bit")
#: per-order counters (``by_order``)
ORDER_COUNTS = ("one_mm", "false_shared", "many_mms", "false_exclusive")
#: the run-trace header's "format" (docs/run-trace.md)
FORMAT = "foliosim-run-trace"
STUCK_BIT_CAUSES = tuple(code for code in CAUSES if code.startswith("stuck-bit"))
_KNOWN_CAUSES = frozenset(CAUSES) | frozenset(FALSE_EXCLUSIVE_CAUSES)


class CensusRecordError(ValueError):
    """A run trace's census record is malformed: the message names the file, the line and the field."""


# --------------------------------------------------------------------------- writing


def snapshot_record(result: CensusResult, t: float, at: str, pid: int | None, frozen: bool,
                    seconds: float) -> dict[str, Any]:
    """One census as the trace stores it: counts only (no PFNs), with its time, occasion and process."""
    by_order: dict[str, dict[str, int]] = {}
    for f in result.folios:
        if f.truth == TRUTH_CHANGED:
            continue
        row = by_order.setdefault(str(f.order), dict.fromkeys(ORDER_COUNTS, 0))
        if f.truth == TRUTH_ONE:
            row["one_mm"] += 1
            row["false_shared"] += f.outcome == FALSE_SHARED
        elif f.truth == TRUTH_MANY:
            row["many_mms"] += 1
            row["false_exclusive"] += f.outcome == FALSE_EXCLUSIVE
    causes = result.causes()
    fs, fe = result.false_shared, result.false_exclusive
    return {
        "t": round(t, 3), "at": at, "pid": pid, "processes": result.processes,
        "folios": len(result.folios), "one_mm": fs.n, "false_shared": fs.k, "many_mms": fe.n,
        "false_exclusive": fe.k, "changed": sum(f.truth == TRUTH_CHANGED for f in result.folios),
        "unreadable": result.unreadable, "bit_ignored": result.bit_ignored(),
        "stuck_bit": sum(causes[c] for c in STUCK_BIT_CAUSES),
        "causes": dict(sorted(causes.items())), "by_order": dict(sorted(by_order.items(), key=lambda kv: int(kv[0]))),
        "frozen": frozen, "s": round(seconds, 4),
    }


def _totals(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = dict.fromkeys(COUNTS, 0)
    causes: Counter[str] = Counter()
    by_order: dict[str, dict[str, int]] = {}
    n = 0
    for snap in snapshots:
        n += 1
        for name in COUNTS:
            totals[name] += snap[name]
        causes.update(snap["causes"])
        for order, row in snap["by_order"].items():
            acc = by_order.setdefault(order, dict.fromkeys(ORDER_COUNTS, 0))
            for name in ORDER_COUNTS:
                acc[name] += row[name]
    totals["snapshots"] = n
    totals["causes"] = dict(sorted(causes.items()))
    totals["by_order"] = dict(sorted(by_order.items(), key=lambda kv: int(kv[0])))
    return totals


def census_record(mode: str, interval_ms: float | None, budget: float, snapshots: list[dict[str, Any]],
                  skipped: Mapping[str, int], seconds: float) -> dict[str, Any]:
    """The header's ``census`` value: the mode, every snapshot, their totals (sums), the censuses skipped by
    reason, and the seconds they took."""
    return {"format": CENSUS_FORMAT, "mode": mode, "interval_ms": interval_ms, "budget": budget,
            "source": "foliosim census (BPF folio reader, pagemaps) of the traced processes",
            "snapshots": snapshots, "totals": _totals(snapshots), "skipped": dict(skipped),
            "seconds": round(seconds, 4)}


def unavailable_record(mode: str, why: str) -> dict[str, Any]:
    """The ``census`` value when no census could be taken (e.g. no BPF here): no verdicts, and why."""
    return {"format": CENSUS_FORMAT, "mode": mode, "unavailable": why}


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class LiveVerdicts:
    """The live kernel's verdicts over a recorded program, summed over its censuses.

    ``questions_exclusive``: checks of large anonymous folios mapped by exactly one MM; ``false_shared``: of those,
    the kernel said "maybe shared". ``questions_shared``: checks of folios mapped by >= 2 MMs; ``false_exclusive``:
    of those, the kernel said "exclusive" (unsound: 0 expected). A folio counts once per census it was seen in.
    """

    questions_exclusive: int
    false_shared: int
    questions_shared: int
    false_exclusive: int
    snapshots: int
    source: str
    stuck_bit: int = 0
    changed: int = 0
    mode: str = "events"
    by_at: dict[str, int] = field(default_factory=dict)
    by_order: dict[int, dict[str, int]] = field(default_factory=dict)
    causes: dict[str, int] = field(default_factory=dict)

    @property
    def false_shared_rate(self) -> Rate:
        """False "shared" of ``questions_exclusive``, with its exact 95 % interval."""
        return Rate.of(self.false_shared, self.questions_exclusive)

    @property
    def false_exclusive_rate(self) -> Rate:
        """False "exclusive" of ``questions_shared``, with its exact 95 % interval."""
        return Rate.of(self.false_exclusive, self.questions_shared)


def _header_line(path_or_text: str | os.PathLike[str]) -> tuple[str, int, str | None]:
    """(name, line number, text) of the first non-empty line of a trace file or of trace text."""
    if isinstance(path_or_text, str) and ("\n" in path_or_text or path_or_text.lstrip().startswith("{")):
        text, pos, lineno = path_or_text, 0, 0
        while pos < len(text):  # line by line up to the first non-empty one (a trace's text may be many MB)
            end = text.find("\n", pos)
            end = len(text) if end < 0 else end
            lineno += 1
            line = text[pos:end].rstrip("\r")
            if line.strip():
                return "trace text", lineno, line
            pos = end + 1
        return "trace text", 0, None
    path = Path(path_or_text)
    name = str(path)
    try:
        with path.open("rb") as probe:
            gz = probe.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rt", encoding="utf-8") if gz else path.open(encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if line.strip():
                    return name, lineno, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise CensusRecordError(f"{name}: the gzip stream is truncated or corrupt ({exc})") from None
    except UnicodeDecodeError:
        raise CensusRecordError(f"{name}: not UTF-8 text") from None
    except OSError as exc:
        raise CensusRecordError(f"cannot read {name}: {exc.strerror or exc}") from None
    return name, 0, None


def _count(obj: Mapping[str, Any], name: str, where: str) -> int:
    if name not in obj:
        raise CensusRecordError(f"{where}: missing field {name!r}")
    value = obj[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CensusRecordError(f"{where}: field {name!r} must be a non-negative integer, not "
                                f"{json.dumps(value)[:40]}")
    return value


def _object(obj: Mapping[str, Any], name: str, where: str) -> dict[str, Any]:
    value = obj.get(name)
    if not isinstance(value, dict):
        raise CensusRecordError(f"{where}: field {name!r} must be an object")
    return value


def _check_counts(obj: Mapping[str, Any], where: str) -> None:
    """Every counter present and sane, and the identities between them."""
    for name in COUNTS:
        _count(obj, name, where)
    for k, n in (("false_shared", "one_mm"), ("false_exclusive", "many_mms"), ("stuck_bit", "false_shared")):
        if obj[k] > obj[n]:
            raise CensusRecordError(f"{where}: field {k!r} ({obj[k]}) exceeds {n!r} ({obj[n]})")
    judged = obj["one_mm"] + obj["many_mms"] + obj["changed"]
    if judged != obj["folios"]:
        raise CensusRecordError(f"{where}: 'one_mm' + 'many_mms' + 'changed' = {judged} is not 'folios' "
                                f"({obj['folios']})")
    causes = _object(obj, "causes", where)
    for code in causes:
        if code not in _KNOWN_CAUSES:
            raise CensusRecordError(f"{where}: field 'causes': unknown cause {code!r}")
        _count(causes, code, f"{where}: field 'causes'")
    false_answers = obj["false_shared"] + obj["false_exclusive"]
    if sum(causes.values()) > false_answers:
        raise CensusRecordError(f"{where}: field 'causes' counts {sum(causes.values())} false answers, more than "
                                f"'false_shared' + 'false_exclusive' ({false_answers})")
    stuck = sum(causes.get(c, 0) for c in STUCK_BIT_CAUSES)
    if stuck != obj["stuck_bit"]:
        raise CensusRecordError(f"{where}: field 'stuck_bit' ({obj['stuck_bit']}) is not the stuck-bit causes' "
                                f"sum ({stuck})")
    by_order = _object(obj, "by_order", where)
    sums = dict.fromkeys(ORDER_COUNTS, 0)
    for order, row in by_order.items():
        w = f"{where}: field 'by_order' order {order!r}"
        if not order.isdigit() or int(order) > 20:
            raise CensusRecordError(f"{w}: the key must be a folio order")
        if not isinstance(row, dict):
            raise CensusRecordError(f"{w} must be an object")
        for name in ORDER_COUNTS:
            sums[name] += _count(row, name, w)
    for name in ORDER_COUNTS:
        if sums[name] != obj[name]:
            raise CensusRecordError(f"{where}: field 'by_order' sums {name!r} to {sums[name]}, not {obj[name]}")


def parse_census(record: Any, where: str) -> dict[str, Any]:
    """Check a header's ``census`` value (CensusRecordError names ``where`` and the field); returns it."""
    if not isinstance(record, dict):
        raise CensusRecordError(f"{where}: header field 'census' must be an object")
    where = f"{where}: header field 'census'"
    fmt = record.get("format")
    if fmt != CENSUS_FORMAT:
        raise CensusRecordError(f"{where}: format {fmt!r} is not supported (this foliosim reads {CENSUS_FORMAT})")
    mode = record.get("mode")
    if mode not in MODES:
        raise CensusRecordError(f"{where}: field 'mode' must be one of {', '.join(MODES)}, not {mode!r}")
    if "unavailable" in record:
        if not isinstance(record["unavailable"], str):
            raise CensusRecordError(f"{where}: field 'unavailable' must be a string (why no census was taken)")
        return record
    snapshots = record.get("snapshots")
    if not isinstance(snapshots, list):
        raise CensusRecordError(f"{where}: field 'snapshots' must be a list")
    for i, snap in enumerate(snapshots):
        w = f"{where} snapshot {i}"
        if not isinstance(snap, dict):
            raise CensusRecordError(f"{w} must be an object")
        t = snap.get("t")
        if not isinstance(t, int | float) or isinstance(t, bool):
            raise CensusRecordError(f"{w}: field 't' must be a number (microseconds, CLOCK_MONOTONIC)")
        if snap.get("at") not in AT:
            raise CensusRecordError(f"{w}: field 'at' must be one of {', '.join(AT)}, not {snap.get('at')!r}")
        pid = snap.get("pid")
        if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool)):
            raise CensusRecordError(f"{w}: field 'pid' must be an integer or null")
        _check_counts(snap, w)
    totals = _object(record, "totals", where)
    w = f"{where} totals"
    _check_counts(totals, w)
    if _count(totals, "snapshots", w) != len(snapshots):
        raise CensusRecordError(f"{w}: field 'snapshots' is {totals['snapshots']}, but {len(snapshots)} "
                                "snapshots are listed")
    expected = _totals(snapshots)
    for name in (*COUNTS, "causes", "by_order"):
        if totals[name] != expected[name]:
            raise CensusRecordError(f"{w}: field {name!r} is {json.dumps(totals[name])[:60]}, but the snapshots "
                                    f"sum to {json.dumps(expected[name])[:60]}")
    return record


def live_verdicts_from_trace(path_or_text: str | os.PathLike[str]) -> LiveVerdicts | None:
    """The live verdicts a run trace recorded with ``foliosim trace --census`` holds; None if it has none.

    ``path_or_text``: a trace file (``.gz`` or not), or the trace's text (anything with a newline or starting
    with ``{``). Only the header is read. None for a trace recorded without a census (older recordings,
    ``--census none``) or whose census could not be taken. CensusRecordError (naming the file, the line and the
    field) if the header is not a run-trace header or the record is malformed or its totals do not add up.
    """
    name, lineno, line = _header_line(path_or_text)
    if line is None:
        raise CensusRecordError(f"{name}: empty (no run-trace header)")
    where = f"{name} line {lineno}"
    try:
        header = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CensusRecordError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CensusRecordError(f"{where}: not a run-trace header (\"format\": \"{FORMAT}\")")
    if CENSUS_KEY not in header:
        return None
    record = parse_census(header[CENSUS_KEY], where)
    if "unavailable" in record or record["mode"] == "none":
        return None
    totals = record["totals"]
    command = header.get("command")
    shown = " ".join(str(c) for c in command) if isinstance(command, list) else "?"
    by_at = Counter(str(s["at"]) for s in record["snapshots"])
    source = (f"live census of `{shown}` ({name if name != 'trace text' else 'a run trace'}): "
              f"{totals['snapshots']} censuses ({', '.join(f'{n} at {a}' for a, n in sorted(by_at.items())) or 'none'})"
              f" of the traced processes' large anonymous folios, Linux {header.get('kernel', '?')}")
    return LiveVerdicts(
        questions_exclusive=totals["one_mm"], false_shared=totals["false_shared"],
        questions_shared=totals["many_mms"], false_exclusive=totals["false_exclusive"],
        snapshots=totals["snapshots"], source=source, stuck_bit=totals["stuck_bit"], changed=totals["changed"],
        mode=record["mode"], by_at=dict(by_at),
        by_order={int(k): dict(v) for k, v in totals["by_order"].items()}, causes=dict(totals["causes"]))
