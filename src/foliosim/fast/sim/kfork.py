# mypy: disable-error-code="no-any-return"
"""numba helpers of the batched workload runner (:mod:`foliosim.fast.sim.steps`) and of fork/exit bookkeeping.

``resolve`` turns a run of read/write steps, converted once to integer rows, into the access rows of
:func:`foliosim.fast.sim.kern.access` (the current MM of each task and the base page of each region looked up in
small tables); ``mm_entries`` counts an MM's PTEs, PMD mappings and tables in one pass over the table slots.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from foliosim.fast import kernels as K
from foliosim.fast.sim import kern
from foliosim.fast.sim.kern import sjit, table_free
from foliosim.fast.sim.layout import (
    G_HUSED,
    G_NCOW,
    G_NFOLIO,
    G_NPAGE,
    G_NTB,
    G_NTR,
    G_RMAP,
    HUGE_ZERO,
    KIND_ANON,
    MS_NMAP,
    MS_PINNED,
    NONE,
    O_ORACLE,
    O_RECORD,
    PD,
    PW,
    RC_ERROR,
    RC_OK,
    RC_ROOM,
    TB_HASPT,
    TB_IDX,
    TB_LIVE,
    TB_MM,
    TB_NPTE,
    TB_PMDF,
    TB_PMDW,
    V_END,
    V_SHARED,
    V_START,
    X_KIND,
    X_NAME,
    X_REF,
    ZERO,
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
def fork_copy(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
              ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, scr: Any, src: int,
              dst: int, vrows: Any) -> int:
    """:func:`foliosim.fast.sim.kern.fork_copy` (``copy_page_range()``) with the small-folio PTE copy inlined.

    Same steps and results in the same order; a compiled call costs ~10 ns per array argument set, which was most
    of a small page's copy. A source MM that ever pinned pages (the early-copy paths) goes to the original.
    """
    if ms[src, MS_PINNED] != 0:
        return kern.fork_copy(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, pexp,
                              scr, src, dst, vrows)
    po = cfg[K.C_PMD_ORDER]
    rec = opt[O_RECORD] != 0
    for v in vrows:
        start = vm[v, V_START]
        end = vm[v, V_END]
        cow_mapping = vm[v, V_SHARED] == 0
        ntabs = kern.mm_tables(glob, tb, hk, hv, src, start >> po, (end - 1) >> po, scr)
        tabs = scr[0, :ntabs]
        for t in tabs:  # copy_huge_pmd() (no pinned source: never split here)
            f = tb[t, TB_PMDF]
            if f == NONE:
                continue
            idx = tb[t, TB_IDX]
            if f == HUGE_ZERO:
                dt = kern.table_get(glob, tb, ptf, hk, hv, dst, idx, True)
                tb[dt, TB_PMDF] = HUGE_ZERO
                tb[dt, TB_PMDW] = 0
                continue
            kern.get(fs, f, 1)
            pex[fs[f, K.F_OFF]] = 0
            if not kern.rmap(cfg, glob, opt, fs, pmc, ms, tr, K.K_DUP, f, dst, K.L_PMD, 0, 1):
                return RC_ERROR
            tb[t, TB_PMDW] = 0
            dt = kern.table_get(glob, tb, ptf, hk, hv, dst, idx, True)
            tb[dt, TB_PMDF] = f
            tb[dt, TB_PMDW] = 0
        for t in tabs:  # the PTEs, in address order
            if not tb[t, TB_HASPT] or tb[t, TB_NPTE] == 0:
                continue
            idx = tb[t, TB_IDX]
            base = idx << po
            vpn = start if start > base else base
            hi = base + ptf.shape[1]
            if end < hi:
                hi = end
            dt = -1
            while vpn < hi:
                s = vpn - base
                f = ptf[t, s]
                if f == NONE:
                    vpn += 1
                    continue
                if dt < 0:
                    dt = kern.table_get(glob, tb, ptf, hk, hv, dst, idx, True)
                    tb[dt, TB_HASPT] = 1
                if f == ZERO:
                    ptf[dt, s] = ZERO
                    ptp[dt, s] = 0
                    ptw[dt, s] = 0
                    tb[dt, TB_NPTE] += 1
                    vpn += 1
                    continue
                page = ptp[t, s]
                off = fs[f, K.F_OFF]
                anon = fs[f, X_KIND] == KIND_ANON
                nr = 1
                if fs[f, K.F_ORDER] > 0 or page != 0:  # a batch of a large folio (or a bad page: rmap says so)
                    nr = kern.batch(fs, ptf, ptp, t, s, vpn, end, po)
                    kern.get(fs, f, nr)
                    if anon:
                        for k in range(nr):
                            pex[off + page + k] = 0
                    if not kern.rmap(cfg, glob, opt, fs, pmc, ms, tr, K.K_DUP, f, dst, K.L_PTE, page, nr):
                        return RC_ERROR
                    kern.install(tb, ptf, ptp, ptw, t, dt, s, nr, cow_mapping)
                    vpn += nr
                    continue
                # a small folio: get, __folio_dup_anon/file_rmap() (the page's _mapcount), install, inlined
                fs[f, X_REF] += 1
                if anon:
                    pex[off] = 0
                glob[G_RMAP] += 1
                pmc[off] = K._wrap32(pmc[off] + 1)
                ms[dst, MS_NMAP] += 1
                if rec:
                    kern.record(glob, opt, tr, K.K_DUP, dst, fs[f, X_NAME], 0, K.L_PTE, 0, 1)
                if cow_mapping:
                    ptw[t, s] &= ~PW
                w = ptw[t, s]
                ptf[dt, s] = f
                ptp[dt, s] = 0
                ptw[dt, s] = (w & PW) | ((w & PD) if cow_mapping else 0)
                tb[dt, TB_NPTE] += 1
                vpn += 1
        if opt[O_ORACLE]:  # ReferenceMemory.fork(): the child's view starts as the parent's
            for t in tabs:
                base = tb[t, TB_IDX] << po
                dt = kern.hfind(hk, hv, kern._hkey(dst, tb[t, TB_IDX]))
                if dt < 0:
                    continue
                for vpn in range(max(start, base), min(end, base + ptf.shape[1])):
                    pexp[dt, vpn - base] = pexp[t, vpn - base]
    return RC_OK


@sjit
def zap(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
        ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, scr: Any, m: int,
        ranges: Any, gather: Any) -> int:
    """:func:`foliosim.fast.sim.kern.zap` (``_zap()`` over each range, then ``_flush()``) with a small folio's PTE
    unmap and the puts that free nothing inlined; same steps and results in the same order."""
    po = cfg[K.C_PMD_ORDER]
    rec = opt[O_RECORD] != 0
    ng = 0
    for r in range(ranges.shape[0]):
        start = ranges[r, 0]
        end = ranges[r, 1]
        if end <= start:
            continue
        ntabs = kern.mm_tables(glob, tb, hk, hv, m, start >> po, (end - 1) >> po, scr)
        tabs = scr[0, :ntabs]
        for t in tabs:
            f = tb[t, TB_PMDF]
            if f == NONE:
                continue
            idx = tb[t, TB_IDX]
            if start <= idx << po and (idx + 1) << po <= end:
                tb[t, TB_PMDF] = NONE
                tb[t, TB_PMDW] = 0
                if f != HUGE_ZERO:
                    if not kern.rmap(cfg, glob, opt, fs, pmc, ms, tr, K.K_UNMAP, f, m, K.L_PMD, 0, 1):
                        return RC_ERROR
                    gather[ng, 0] = f
                    gather[ng, 1] = 1
                    ng += 1
            elif not kern.split_pmd(cfg, opt, glob, fs, pmc, pex, tb, ptf, ptp, ptw, ms, tr, m, t):
                return RC_ERROR
        for t in tabs:
            if opt[O_ORACLE]:  # the private pages revert to zero (ReferenceMemory.unmap()/dontneed())
                base = tb[t, TB_IDX] << po
                for vpn in range(max(start, base), min(end, base + ptf.shape[1])):
                    pexp[t, vpn - base] = 0
            if not tb[t, TB_HASPT] or tb[t, TB_NPTE] == 0:
                continue
            base = tb[t, TB_IDX] << po
            vpn = start if start > base else base
            hi = base + ptf.shape[1]
            if end < hi:
                hi = end
            while vpn < hi:
                s = vpn - base
                f = ptf[t, s]
                if f == NONE:
                    vpn += 1
                    continue
                page = ptp[t, s]
                if f >= 0 and fs[f, K.F_ORDER] == 0 and page == 0:  # a small folio, inlined
                    ptf[t, s] = NONE
                    ptw[t, s] = 0
                    tb[t, TB_NPTE] -= 1
                    glob[G_RMAP] += 1
                    off = fs[f, K.F_OFF]
                    pmc[off] = K._wrap32(pmc[off] - 1)
                    ms[m, MS_NMAP] -= 1
                    if rec:
                        kern.record(glob, opt, tr, K.K_UNMAP, m, fs[f, X_NAME], 0, K.L_PTE, 0, 1)
                    gather[ng, 0] = f
                    gather[ng, 1] = 1
                    ng += 1
                    vpn += 1
                    continue
                nr = kern.batch(fs, ptf, ptp, t, s, vpn, end, po)
                for k in range(nr):
                    ptf[t, s + k] = NONE
                    ptw[t, s + k] = 0
                tb[t, TB_NPTE] -= nr
                if f >= 0:
                    if not kern.rmap(cfg, glob, opt, fs, pmc, ms, tr, K.K_UNMAP, f, m, K.L_PTE, page, nr):
                        return RC_ERROR
                    gather[ng, 0] = f
                    gather[ng, 1] = nr
                    ng += 1
                vpn += nr
    for g in range(ng):
        f = gather[g, 0]
        if fs[f, X_REF] > gather[g, 1]:  # folio_put_refs() that frees nothing
            fs[f, X_REF] -= gather[g, 1]
        elif not kern.put(cfg, glob, opt, fs, pmc, tr, f, gather[g, 1]):
            return RC_ERROR
    return RC_OK


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
