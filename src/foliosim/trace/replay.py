"""Replay an rmap trace: parse each line, apply it, produce the state record.

Pure: takes lines, yields records; the CLI does the reading and printing.
Exit statuses follow the contract: 0 all valid, 3 an operation was rejected,
1 a line that is not a JSON object (or undecodable bytes).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from foliosim.errors import Rejected
from foliosim.folio import Folio
from foliosim.kconfig import KernelConfig
from foliosim.rmap import RmapResult
from foliosim.system import MAP_OPS, FolioHandle, Op, RmapSystem
from foliosim.trace.format import folio_record, parse_op
from foliosim.truth import FolioTruth

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_REJECTED = 3


@dataclass(slots=True)
class ReplayStatus:
    """How a replay ended: its exit status and what it counted."""

    exit_code: int = EXIT_OK
    steps: int = 0
    rejected: int = 0


def iter_trace_lines(lines: Iterable[str | bytes]) -> Iterator[tuple[int, str | None, str | None]]:
    """Yield ``(line_number, text, decode_error)`` for each line that is not blank or a comment."""
    for lineno, raw in enumerate(lines, 1):
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, None, f"line {lineno}: not UTF-8 text ({exc.reason} at byte {exc.start})"
                continue
        else:
            text = raw
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        yield lineno, stripped, None


def decode_line(lineno: int, text: str) -> dict[str, Any]:
    """One trace line as a JSON object, or ValueError naming the line."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise ValueError(f"line {lineno}: not a JSON object ({msg})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"line {lineno}: not a JSON object (a JSON {type(obj).__name__})")
    return obj


def apply_op(system: RmapSystem, op: Op, step: int) -> dict[str, Any]:
    """Apply ``op`` and build its output record (Rejected propagates, state unchanged)."""
    result = system.apply(op)
    if op.op in ("mm_new", "mm_free"):
        assert isinstance(result, int)
        return {"step": step, "op": op.op, "mm": op.mm, "mm_id": result}
    rec: dict[str, Any] = {"step": step, "op": op.op}
    if op.op in MAP_OPS:
        rec["mm"] = op.mm
    assert op.folio is not None
    if isinstance(result, Folio):  # folio_free: report the state it was freed in
        rec.update(folio_record(FolioHandle(op.folio, result, FolioTruth(result.nr_pages))))
        return rec
    rec.update(folio_record(system.folios[op.folio]))
    if isinstance(result, RmapResult) and result.owner is not None:
        rec["owner"] = result.owner.name.lower()
    return rec


def replay(
    lines: Iterable[str | bytes],
    config: KernelConfig | None = None,
    keep_going: bool = False,
    status: ReplayStatus | None = None,
    system: RmapSystem | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one record per operation; ``status`` is filled in as the replay goes."""
    status = status if status is not None else ReplayStatus()
    system = system if system is not None else RmapSystem(config)
    step = 0
    for lineno, text, decode_error in iter_trace_lines(lines):
        if decode_error is not None or text is None:
            status.exit_code = EXIT_BAD_INPUT
            yield {"step": step, "line": lineno, "error": decode_error}
            return
        try:
            obj = decode_line(lineno, text)
        except ValueError as exc:
            status.exit_code = EXIT_BAD_INPUT
            yield {"step": step, "line": lineno, "error": str(exc)}
            return
        try:
            op = parse_op(obj)
            rec = apply_op(system, op, step)
        except Rejected as exc:
            status.rejected += 1
            status.exit_code = EXIT_REJECTED
            kind = obj.get("op")
            yield {
                "step": step,
                "op": kind if isinstance(kind, str) else None,
                "line": lineno,
                "error": exc.reason,
                **({"check": exc.check} if exc.check else {}),
            }
            step += 1
            status.steps = step
            if not keep_going:
                return
            continue
        yield rec
        step += 1
        status.steps = step
