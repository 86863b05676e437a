# mypy: disable-error-code="no-any-return"
"""numba helpers of the batched workload runner (:mod:`foliosim.fast.sim.steps`) and of fork/exit bookkeeping.

The page-table work itself is :func:`foliosim.fast.sim.kern.fork_copy` and :func:`foliosim.fast.sim.kern.zap`
(their one home); :func:`fork_dup` and :func:`exit_zap` add the room checks and table accounting around them.

``resolve`` turns a run of read/write steps, converted once to integer rows, into the access rows of
:func:`foliosim.fast.sim.kern.access` (the current MM of each task and the base page of each region looked up in
small tables); ``mm_entries`` counts an MM's PTEs, PMD mappings and tables in one pass over the table slots.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from foliosim.fast import kernels as K
from foliosim.fast.sim.kern import fork_copy, sjit, table_free, zap
from foliosim.fast.sim.layout import (
    G_HUSED,
    G_NCOW,
    G_NFOLIO,
    G_NPAGE,
    G_NTB,
    G_NTR,
    NONE,
    O_RECORD,
    RC_OK,
    RC_ROOM,
    TB_LIVE,
    TB_MM,
    TB_NPTE,
    TB_PMDF,
)

#: a region table entry for a region name not mapped yet
MISSING = -(1 << 62)

# Columns of the converted access rows.
A_TASK, A_REGION, A_FIRST, A_PAGES, A_WRITE, A_FILL = range(6)
A_COLS = 6


@sjit
def resolve(acc: Any, lo: int, hi: int, ttab: Any, rtab: Any, out: Any) -> int:
    """Access rows ``lo..hi`` of ``acc`` into ``out`` (mm, start, pages, write, fill, unshare); the number of rows
    written, stopping before the first whose task has no runnable MM (``ttab`` < 0) or whose region is unknown."""
    for i in range(lo, hi):
        mm = ttab[acc[i, A_TASK]]
        base = rtab[acc[i, A_REGION]]
        if mm < 0 or base == MISSING:
            return i - lo
        r = i - lo
        out[r, 0] = mm
        out[r, 1] = base + acc[i, A_FIRST]
        out[r, 2] = acc[i, A_PAGES]
        out[r, 3] = acc[i, A_WRITE]
        out[r, 4] = acc[i, A_FILL]
        out[r, 5] = 0
    return hi - lo


@sjit
def mm_entries(tb: Any, ntb: int, m: int) -> tuple[int, int, int]:
    """(present PTEs, PMD mappings, tables) of MM ``m``."""
    ptes = 0
    pmds = 0
    tables = 0
    for t in range(ntb):
        if tb[t, TB_LIVE] != 0 and tb[t, TB_MM] == m:
            tables += 1
            ptes += tb[t, TB_NPTE]
            if tb[t, TB_PMDF] != NONE:
                pmds += 1
    return ptes, pmds, tables


@sjit
def free_mm_tables(glob: Any, tb: Any, hk: Any, pexp: Any, ntb: int, m: int) -> None:
    """``free_pgtables()`` at exit: every table slot of MM ``m`` back to the free list, in slot order."""
    for t in range(ntb):
        if tb[t, TB_LIVE] != 0 and tb[t, TB_MM] == m:
            table_free(glob, tb, hk, pexp, t)


@sjit
def room_ok(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, hk: Any, tr: Any, cow: Any,
            folios: int, pages: int, tables: int, trace: int, cows: int) -> bool:
    """Whether :meth:`FastMachine.ensure` with these arguments would grow nothing (FastMachine._room's test)."""
    pmd_pages = np.int64(1) << cfg[K.C_PMD_ORDER]
    need_pages = pages if pages > 2 * pmd_pages else 2 * pmd_pages
    short_pages = min(pmc.shape[0], pex.shape[0], pct.shape[0])
    if glob[G_NFOLIO] + folios + 2 > fs.shape[0] or glob[G_NPAGE] + need_pages > short_pages:
        return False
    if glob[G_NTB] + tables + 2 > tb.shape[0]:
        return False
    if (glob[G_HUSED] + tables + 2) * 2 > hk.shape[0] or hk.shape[0] < 2 * tb.shape[0]:
        return False
    if opt[O_RECORD] and glob[G_NTR] + trace > tr.shape[0]:
        return False
    return glob[G_NCOW] + cows <= cow.shape[0]


@sjit
def exit_zap(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
             ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, scr: Any, m: int,
             ranges: Any, gather: Any) -> tuple[int, int]:
    """``exit_mmap()``'s page-table work in one call: :func:`zap` over ``ranges`` (every VMA), then the MM's table
    slots freed. (RC_ROOM, worst) without changing anything when the arrays lack the room FastMachine._zap() would
    have made for ``worst`` = PTEs + PMD mappings x PMD pages + 2 (the gather list and 3 x worst + 16 trace rows)."""
    ntb = glob[G_NTB]
    ptes, pmds, _ = mm_entries(tb, ntb, m)
    worst = ptes + pmds * (np.int64(1) << cfg[K.C_PMD_ORDER]) + 2
    if ranges.shape[0]:
        if gather.shape[0] < worst or not room_ok(cfg, opt, glob, fs, pmc, pex, pct, tb, hk, tr, cow, 0, 0, 2,
                                                  3 * worst + 16, 4):
            return RC_ROOM, worst
        rc = zap(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, pexp, scr, m,
                 ranges, gather)
        if rc != RC_OK:
            return rc, worst
    free_mm_tables(glob, tb, hk, pexp, glob[G_NTB], m)
    return RC_OK, worst


@sjit
def fork_dup(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
             ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, scr: Any, src: int,
             dst: int, vrows: Any, early: int) -> tuple[int, int, int, int]:
    """``dup_mmap()``'s page-table copy in one call: :func:`fork_copy` of the VMA rows ``vrows``; (rc, PTEs, PMD
    mappings, tables of ``src``), rc RC_ROOM without changing anything when the arrays lack the room
    FastMachine._dup_mmap() makes (``early`` possible early copies, 3 trace rows per entry)."""
    ptes, pmds, tables = mm_entries(tb, glob[G_NTB], src)
    if not room_ok(cfg, opt, glob, fs, pmc, pex, pct, tb, hk, tr, cow, early, early, tables + 2,
                   3 * (ptes + pmds) + 8 * early + 16, 4):
        return RC_ROOM, ptes, pmds, tables
    rc = fork_copy(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, pexp, scr, src,
                   dst, vrows)
    return rc, ptes, pmds, tables
