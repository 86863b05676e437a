# mypy: disable-error-code="no-any-return"
"""numba helpers of the batched workload runner (:mod:`foliosim.fast.sim.steps`) and of fork/exit bookkeeping.

``resolve`` turns a run of read/write steps, converted once to integer rows, into the access rows of
:func:`foliosim.fast.sim.kern.access` (the current MM of each task and the base page of each region looked up in
small tables); ``mm_entries`` counts an MM's PTEs, PMD mappings and tables in one pass over the table slots.
"""

from __future__ import annotations

from typing import Any

from foliosim.fast.sim.kern import sjit, table_free
from foliosim.fast.sim.layout import NONE, TB_LIVE, TB_MM, TB_NPTE, TB_PMDF

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
