"""Replay a columnar rmap trace through the compiled kernels.

:class:`FastReplay` produces the same records as :func:`foliosim.trace.replay.replay`
(``records=True``), or only the rejections and the final state of every live
folio (``final_only``), which is what makes long traces fast: per-operation
records are bounded by building and printing JSON, not by the kernels.

Rejections: the kernels only decide *whether* the reference rejects an
operation. The reason is produced by the reference model itself, applied to
the relevant part of the state exported as model objects, so the messages are
the reference's by construction (and an operation the fast path rejects but
the reference accepts raises :class:`FastPathMismatch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from foliosim.errors import FoliosimError, Rejected
from foliosim.fast import kernels as K
from foliosim.fast.state import FastState, capacity_orders
from foliosim.folio import Folio
from foliosim.kconfig import KernelConfig
from foliosim.owner import OwnerEvent
from foliosim.system import MAP_OPS, FolioHandle, RmapSystem
from foliosim.trace.columnar import KINDS, ColumnarTrace
from foliosim.trace.format import folio_record, parse_op
from foliosim.trace.replay import EXIT_BAD_INPUT, EXIT_REJECTED, ReplayStatus, replay
from foliosim.truth import FolioTruth

#: Operations per kernel call when building per-operation records.
RECORD_CHUNK = 4096
_OWNER_NAMES = {int(e): e.name.lower() for e in OwnerEvent}


class FastPathMismatch(FoliosimError):
    """The fast path and the reference model disagree: a bug in foliosim."""


class _RecordedTruth(FolioTruth):
    """Ground truth reduced to what a state record shows: the MMs that map the folio."""

    __slots__ = ("_names",)

    def __init__(self, nr_pages: int, names: list[str]) -> None:
        super().__init__(nr_pages)
        self._names = names

    def mapped_mms(self) -> list[Any]:
        return sorted(self._names, key=str)


def rejection_record(step: int, obj: dict[str, Any], line: int, exc: Rejected) -> dict[str, Any]:
    """The record replay prints for a rejected operation (as :func:`foliosim.trace.replay.replay`)."""
    kind = obj.get("op")
    return {
        "step": step,
        "op": kind if isinstance(kind, str) else None,
        "line": line,
        "error": exc.reason,
        **({"check": exc.check} if exc.check else {}),
    }


def final_records(system: RmapSystem, steps: int) -> Iterator[dict[str, Any]]:
    """The final state of every live folio, in creation order: ``{"step": steps, "op": "final", ...}``."""
    for handle in system.folios.values():
        rec: dict[str, Any] = {"step": steps, "op": "final"}
        rec.update(folio_record(handle))
        yield rec


class FastReplay:
    """The state for one trace under one configuration, and the loops that drive it.

    ``loop`` replaces :func:`foliosim.fast.kernels.replay_loop` by a function
    with the same signature and behaviour (the ahead-of-time build of the same
    source, :mod:`foliosim.replay_aot`).
    """

    def __init__(self, trace: ColumnarTrace, config: KernelConfig | None = None,
                 loop: Callable[..., tuple[int, int]] | None = None) -> None:
        self.trace = trace
        self.config = config or KernelConfig()
        self._loop = loop if loop is not None else K.replay_loop
        caps = capacity_orders(trace.kind, trace.folio, trace.order, len(trace.folio_names))
        self.state = FastState(self.config, trace.folio_names, trace.mm_names, caps)
        self.position = 0  # next operation to apply
        self._folio_index = {name: i for i, name in enumerate(trace.folio_names)}

    # -- the apply loop ------------------------------------------------------------
    def apply_range(self, start: int, end: int) -> tuple[int, int]:
        """Apply operations ``start..end-1`` without records; (index reached, stop reason)."""
        t = self.trace
        empty64 = np.zeros((0, K.R_COLS), dtype=np.int64)
        empty32 = np.zeros(0, dtype=np.int32)
        return self._loop(*self.state.arrays(), t.kind, t.folio, t.mm, t.level, t.page, t.nr, t.order,
                          start, end, False, empty64, empty32, empty32)

    def apply_all(self) -> int:
        """Apply every operation; the number applied before the first rejection (or the total)."""
        reached, _reason = self.apply_range(0, len(self.trace))
        self.position = reached
        return reached

    def reject(self, idx: int, step: int) -> dict[str, Any]:
        """The reference model's rejection record for operation ``idx`` (which the kernels rejected)."""
        obj = self.trace.json_obj(idx)
        line = int(self.trace.line[idx])
        folio = obj.get("folio")
        wanted = []
        if isinstance(folio, str) and folio in self._folio_index:
            wanted.append(self._folio_index[folio])
        system = self.state.export_system(wanted)
        try:
            system.apply(parse_op(obj))
        except Rejected as exc:
            return rejection_record(step, obj, line, exc)
        raise FastPathMismatch(
            f"operation {idx} (line {line}: {obj}) was rejected by the fast path but accepted by the reference")

    # -- records ---------------------------------------------------------------------
    def _record(self, step: int, row: list[int], pagebuf: list[int], mmbuf: list[int]) -> dict[str, Any]:
        kind = KINDS[row[K.R_KIND]]
        names = self.trace.mm_names
        if row[K.R_KIND] in (K.K_MM_NEW, K.K_MM_FREE):
            return {"step": step, "op": kind, "mm": names[row[K.R_MM]], "mm_id": row[K.R_MMID]}
        rec: dict[str, Any] = {"step": step, "op": kind}
        if kind in MAP_OPS:
            rec["mm"] = names[row[K.R_MM]]
        folio = Folio(self.config, row[K.R_ORDER])
        start = row[K.R_PAGES]
        folio.page_mapcount = pagebuf[start:start + folio.nr_pages]
        folio.large_mapcount = row[K.R_LARGE]
        folio.entire_mapcount = row[K.R_ENTIRE]
        folio.nr_pages_mapped = row[K.R_NPM]
        folio.mm_id_mapcount = [row[K.R_MMC0], row[K.R_MMC1]]
        cfg = self.config
        folio.mm_ids = row[K.R_ID0] | (row[K.R_ID1] << cfg.slot_shift) | (cfg.shared_bit if row[K.R_SHARED] else 0)
        mstart = row[K.R_MMS]
        mapped = [names[i] for i in mmbuf[mstart:mstart + row[K.R_NMMS]]]
        handle = FolioHandle(self.trace.folio_names[row[K.R_FOLIO]], folio, _RecordedTruth(folio.nr_pages, mapped))
        rec.update(folio_record(handle))
        if row[K.R_EVENT] >= 0:
            rec["owner"] = _OWNER_NAMES[row[K.R_EVENT]]
        return rec

    def records(self, keep_going: bool = False, status: ReplayStatus | None = None,
                final_only: bool = False) -> Iterator[dict[str, Any]]:
        """Yield the replay's records (every operation's, or rejections and the final states).

        ``status`` is filled in like :func:`foliosim.trace.replay.replay` fills it.
        """
        status = status if status is not None else ReplayStatus()
        t = self.trace
        n = len(t)
        st = self.state
        chunk = 1 if final_only else RECORD_CHUNK
        rec = np.zeros((chunk, K.R_COLS), dtype=np.int64)
        pagebuf = np.zeros(max(st.max_pages, 1 << 16), dtype=np.int32)
        mmbuf = np.zeros(max(len(t.mm_names), 1 << 16), dtype=np.int32)
        idx = self.position
        stopped = False
        while idx < n:
            if final_only:
                reached, reason = self.apply_range(idx, n)
            else:
                reached, reason = self._loop(*st.arrays(), t.kind, t.folio, t.mm, t.level, t.page, t.nr,
                                             t.order, idx, min(n, idx + chunk), True, rec, pagebuf, mmbuf)
                if reached > idx:
                    rows = rec[:reached - idx].tolist()
                    used = max((r[K.R_PAGES] + (1 << r[K.R_ORDER]) for r in rows
                                if r[K.R_KIND] not in (K.K_MM_NEW, K.K_MM_FREE)), default=0)
                    pages = pagebuf[:used].tolist()
                    used_mms = max((r[K.R_MMS] + r[K.R_NMMS] for r in rows
                                    if r[K.R_KIND] not in (K.K_MM_NEW, K.K_MM_FREE)), default=0)
                    mms = mmbuf[:used_mms].tolist()
                    for j, row in enumerate(rows):
                        yield self._record(idx + j, row, pages, mms)
            status.steps = reached
            idx = reached
            if reason == K.STOP_REJECTED:
                status.rejected += 1
                status.exit_code = EXIT_REJECTED
                yield self.reject(idx, idx)
                idx += 1
                status.steps = idx
                if not keep_going:
                    stopped = True
                    break
        self.position = idx
        if not stopped and t.bad_line is not None:
            status.exit_code = EXIT_BAD_INPUT
            yield {"step": idx, "line": t.bad_line.line, "error": t.bad_line.error}
        if final_only:
            yield from final_records(st.export_system(), status.steps)


def reference_records(lines: Iterable[str | bytes], config: KernelConfig | None = None, keep_going: bool = False,
                      status: ReplayStatus | None = None, final_only: bool = False) -> Iterator[dict[str, Any]]:
    """The reference replay, optionally reduced like ``final_only`` (errors, then the final states)."""
    status = status if status is not None else ReplayStatus()
    system = RmapSystem(config)
    for rec in replay(lines, config, keep_going, status, system):
        if not final_only or "error" in rec:
            yield rec
    if final_only:
        yield from final_records(system, status.steps)
