# mypy: disable-error-code="no-any-return"
"""The compiled VMA control plane: mmap(), munmap(), mprotect(), mremap(), the VMA-flag madvise() verbs and
vma_merge() over one MM's VMA rows (layout ``V_*``, the MM's sorted slice of the VMA index ``mv`` from ``MS_VOFF``).

The rows are the source of truth: every field of a :class:`foliosim.vm.vma.Vma` has a column (the label interned,
the THP orders as a bit mask, the file as its page-cache number) but ``anon_vma_forked``, which holds exactly when
the anon_vma is numbered below the MM's first (``FastMM.anon_birth``: it came with a fork), and
:meth:`RowCodec.vmas` / :func:`materialize` give the Vma objects back, equal to what
:class:`foliosim.fast.sim.engine.FastMachine`'s Python control plane holds. Each verb follows the Python path step
by step (mm/mmap.c ``do_mmap()``/``do_vmi_munmap()``, mm/mprotect.c ``mprotect_fixup()``, mm/madvise.c
``madvise_update_vma()``, mm/vma.c ``__split_vma()``/``vma_merge()``, mm/memory.c ``free_pgtables()``), calling the
page-table kernels of :mod:`foliosim.fast.sim.kern` (zap, PMD split, change_protection).
The verbs take only arrays and integers, like the other kernels, so that the step interpreter
can run them as opcodes.

``vst`` (``VS_*``) carries the control plane's scalars in and out: the next free VMA row and index slot, the
unmapped-area base, the room of the MM's index slice, the pages not merged since the last merge (as
``FastMM.unmerged_lo/hi``), and on return the pages whose VMAs changed (``VS_PLO``/``VS_PHI``, for the caller to
re-materialize only those), the syscall's result (``VS_RET``: 0 or a negative errno) and the start of a new mapping.
A verb checks all the room it may need first and returns RC_ROOM without changing anything (``VS_NEED``: the zap's
worst case, as FastMachine._zap() sizes it); the caller grows the arrays and calls again.

To run them as opcodes of the step interpreter, it must keep per MM what FastMachine keeps on each FastMM and loads
into ``vst`` around a call (FastMachine._kvma()): the room of its index slice (``vcap``), the unmerged window
(``unmerged_lo/hi``; an MM made by fork or exec starts with everything unmerged) and ``anon_birth`` (G_ANONVMA
when the MM was made); and the machine-wide next row/index slot and unmapped-area base.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from foliosim.fast import kernels as K
from foliosim.fast.sim import kern
from foliosim.fast.sim.kern import sjit
from foliosim.fast.sim.kfork import mm_entries, room_ok
from foliosim.fast.sim.layout import (
    FC_KIND,
    G_NTB,
    KIND_SHMEM,
    MS_NVMA,
    MS_VOFF,
    NONE,
    O_ORACLE,
    PD,
    PW,
    PW_CLEAR,
    RC_ERROR,
    RC_OK,
    RC_ROOM,
    TB_HASPT,
    TB_IDX,
    TB_NPTE,
    TB_PMDF,
    TB_PMDW,
    V_ACCOUNT,
    V_ANONVMA,
    V_DONTFORK,
    V_END,
    V_EXEC,
    V_FILE,
    V_LABEL,
    V_MAPSW,
    V_NORESERVE,
    V_PGOFF,
    V_READ,
    V_SDWP,
    V_SHARED,
    V_START,
    V_THP,
    V_WRITE,
)
from foliosim.vm.vma import Vma

if TYPE_CHECKING:
    from foliosim.vm.pagecache import SimFile

# vst slots
(VS_NVM, VS_NMV, VS_BASE, VS_VCAP, VS_ULO, VS_UHI, VS_PLO, VS_PHI, VS_RET, VS_NEED, VS_START,
 VS_MUTANT, VS_BIRTH, VS_P, VS_Q, VS_OFF, VS_N, VS_TABLES) = range(18)
VS_LEN = 18
#: an empty page window: lo = NO_LO > hi = -1
NO_LO = 1 << 62
#: VS_MUTANT: merge across a file-offset gap (vma_merge() without the pgoff test), for the tests
MUTANT_PGOFF_GAP = 1
#: madvise() verbs of :func:`madvise_flags`
MA_DONTFORK, MA_DOFORK, MA_THP = range(3)
ENOMEM = 12
#: trace rows kept free for the two PMD splits a verb may make (FastMachine._split_at() ensures 16 each)
_SPLIT_TRACE = 32
#: new VMA rows (and index entries) a verb may need: four splits (mremap: both ends of each range) and a new VMA
NEW_ROWS = 5


# ----------------------------------------------------------------------------- lookups over the MM's index slice
@sjit
def _upper(vm: Any, mv: Any, off: int, n: int, vpn: int) -> int:
    """The number of the MM's VMAs starting at or before ``vpn`` (``bisect_right`` by start)."""
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if vm[mv[off + mid], V_START] <= vpn:
            lo = mid + 1
        else:
            hi = mid
    return lo


@sjit
def _end_ge(vm: Any, mv: Any, off: int, n: int, vpn: int) -> int:
    """The first of the MM's VMAs ending at or after ``vpn`` (``bisect_left`` by end)."""
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if vm[mv[off + mid], V_END] < vpn:
            lo = mid + 1
        else:
            hi = mid
    return lo


@sjit
def _find_from(vm: Any, mv: Any, off: int, n: int, vpn: int, h: int, by_end: bool) -> int:
    """:func:`_upper` (``by_end`` False) or :func:`_end_ge` (True), searched outward from position ``h`` (galloping,
    then bisection): the same result, but a search that starts next to its answer reads a few rows, not log n
    scattered ones (each row a cache line of its own). ``h`` < 0: bisection only."""
    if h < 0:
        return _end_ge(vm, mv, off, n, vpn) if by_end else _upper(vm, mv, off, n, vpn)
    if h > n:
        h = n
    # pred(p): the answer lies after p (p's start <= vpn, or p's end < vpn); pred is true up to the answer
    if h < n and ((vm[mv[off + h], V_END] < vpn) if by_end else (vm[mv[off + h], V_START] <= vpn)):
        lo = h + 1
        step = 1
        p = h + 1
        while p < n and ((vm[mv[off + p], V_END] < vpn) if by_end else (vm[mv[off + p], V_START] <= vpn)):
            lo = p + 1
            step *= 2
            p = h + step
        hi = p if p < n else n
    else:
        hi = h
        step = 1
        p = h - 1
        while p >= 0 and not ((vm[mv[off + p], V_END] < vpn) if by_end else (vm[mv[off + p], V_START] <= vpn)):
            hi = p
            step *= 2
            p = h - step
        lo = p + 1 if p >= 0 else 0
    while lo < hi:
        mid = (lo + hi) >> 1
        if (vm[mv[off + mid], V_END] < vpn) if by_end else (vm[mv[off + mid], V_START] <= vpn):
            lo = mid + 1
        else:
            hi = mid
    return lo


@sjit
def _covered_at(ms: Any, vm: Any, mv: Any, m: int, start: int, end: int) -> int:
    """:func:`covered`: the position of the VMA holding ``start`` when VMAs cover ``[start, end)``, else -1."""
    off = ms[m, MS_VOFF]
    n = ms[m, MS_NVMA]
    pos = start
    i0 = _end_ge(vm, mv, off, n, start + 1)
    i = i0
    while i < n and pos < end:
        r = mv[off + i]
        if vm[r, V_START] >= end:
            break
        if vm[r, V_START] > pos:
            return -1
        pos = vm[r, V_END]
        i += 1
    return i0 if pos >= end else -1


@sjit
def covered(ms: Any, vm: Any, mv: Any, m: int, start: int, end: int) -> bool:
    """``VmaList.covered()``: VMAs cover every page of ``[start, end)`` without holes."""
    return _covered_at(ms, vm, mv, m, start, end) >= 0


@sjit
def _touch(vst: Any, lo: int, hi: int) -> None:
    """FastMachine._touch(): VMAs touching pages ``[lo, hi]`` changed (to merge next time, and to re-materialize)."""
    if lo < vst[VS_ULO]:
        vst[VS_ULO] = lo
    if hi > vst[VS_UHI]:
        vst[VS_UHI] = hi
    if lo < vst[VS_PLO]:
        vst[VS_PLO] = lo
    if hi > vst[VS_PHI]:
        vst[VS_PHI] = hi


@sjit
def maps_writable(fc: Any, vm: Any, r: int) -> int:
    """``Vma.maps_writable`` of row ``r``: shared, writable and no write-notify (a shmem file not soft-dirty
    armed; mm/mmap.c ``vma_wants_writenotify()``)."""
    if vm[r, V_SHARED] == 0 or vm[r, V_WRITE] == 0:
        return 0
    f = vm[r, V_FILE]
    if f < 0:
        return 1
    return 1 if fc[f, FC_KIND] == KIND_SHMEM and vm[r, V_SDWP] == 0 else 0


# ----------------------------------------------------------------------------- rows and the index slice
@sjit
def _ensure_index(ms: Any, mv: Any, vst: Any, m: int, extra: int) -> None:
    """Room for ``extra`` more VMAs in the MM's index slice: moved to the end of the index (twice the room) when
    short. The caller checked that the index has that room."""
    n = ms[m, MS_NVMA]
    cap = vst[VS_VCAP] if vst[VS_VCAP] > n else n
    if n + extra <= cap:
        return
    new_cap = 2 * (n + extra)
    nmv = vst[VS_NMV]
    off = ms[m, MS_VOFF]
    for k in range(n):
        mv[nmv + k] = mv[off + k]
    ms[m, MS_VOFF] = nmv
    vst[VS_NMV] = nmv + new_cap
    vst[VS_VCAP] = new_cap


@sjit
def _insert(ms: Any, mv: Any, m: int, pos: int, row: int) -> None:
    """``row`` into the MM's index slice at ``pos``, the tail moved up by one. The moves index by unsigned
    integers (no negative-index wraparound test per element), which lets them compile to a block move: an MM of
    thousands of VMAs moves its tail ~10x faster."""
    off = ms[m, MS_VOFF]
    n = ms[m, MS_NVMA]
    one = np.uint64(1)
    for k in range(np.uint64(off + n), np.uint64(off + pos), -1):
        mv[k] = mv[k - one]
    mv[off + pos] = row
    ms[m, MS_NVMA] = n + 1


@sjit
def _delete(ms: Any, mv: Any, m: int, i: int, j: int) -> None:
    """Positions ``[i, j)`` out of the MM's index slice, the tail moved down (unsigned indices, as in
    :func:`_insert`)."""
    off = ms[m, MS_VOFF]
    n = ms[m, MS_NVMA]
    d = np.uint64(j - i)
    for k in range(np.uint64(off + j), np.uint64(off + n)):
        mv[k - d] = mv[k]
    ms[m, MS_NVMA] = n - (j - i)


@sjit
def _copy_row(vm: Any, vst: Any, src: int) -> int:
    r = vst[VS_NVM]
    vst[VS_NVM] = r + 1
    for c in range(vm.shape[1]):
        vm[r, c] = vm[src, c]
    return r


#: a zap over at most this many PMDs sizes its worst case from their tables (hash lookups), a longer one from all of
#: the MM's (a scan of the table slots)
_ZAP_LOOKUPS = 64


@sjit
def _zap_worst(cfg: Any, glob: Any, tb: Any, hk: Any, hv: Any, m: int, start: int, end: int) -> int:
    """The most entries a zap of pages ``[start, end)`` (split at both ends first) can gather: the present PTEs of
    the tables there plus a PMD's pages per PMD mapping, + 2; the whole MM's count (FastMachine._zap()'s) when the
    range spans many PMDs. Only the room asked for depends on it, never a result."""
    po = cfg[K.C_PMD_ORDER]
    lo = start >> po
    hi = (end - 1) >> po
    if hi - lo + 1 > _ZAP_LOOKUPS:
        ptes, pmds, _ = mm_entries(tb, glob[G_NTB], m)
        return ptes + pmds * (np.int64(1) << po) + 2
    worst = 2
    for idx in range(lo, hi + 1):
        t = kern.hfind(hk, hv, kern._hkey(m, idx))
        if t >= 0:
            worst += tb[t, TB_NPTE]
            if tb[t, TB_PMDF] != NONE:
                worst += np.int64(1) << po
    return worst


@sjit
def _room(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, hk: Any, hv: Any, tr: Any,
          cow: Any, ms: Any, vm: Any, mv: Any, vst: Any, rg: Any, gather: Any, m: int, zap: bool, zs: int, ze: int,
          tables: int) -> bool:
    """Whether the arrays have all the room a verb may need (NEW_ROWS new rows, the index slice grown by as many,
    the gather list and trace rows of a zap of pages ``[zs, ze)`` when ``zap``, ``tables`` new page tables);
    VS_NEED: the zap's worst case, VS_TABLES: ``tables``."""
    n = ms[m, MS_NVMA]
    worst = 0
    if zap:
        worst = _zap_worst(cfg, glob, tb, hk, hv, m, zs, ze)
    vst[VS_NEED] = worst
    vst[VS_TABLES] = tables
    cap = vst[VS_VCAP] if vst[VS_VCAP] > n else n
    if vst[VS_NVM] + NEW_ROWS > vm.shape[0] or (n + NEW_ROWS > cap
                                                and vst[VS_NMV] + 2 * (n + NEW_ROWS) > mv.shape[0]):
        return False
    if rg.shape[0] < n + NEW_ROWS or gather.shape[0] < worst:
        return False
    return room_ok(cfg, opt, glob, fs, pmc, pex, pct, tb, hk, tr, cow, 0, 0, tables, 3 * worst + 16 + _SPLIT_TRACE,
                   4)


# ----------------------------------------------------------------------------- split, merge, unmap
@sjit
def _split_at(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
              ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, vst: Any, m: int,
              vpn: int, h: int) -> int:
    """FastMachine._split_at(): the VMA containing ``vpn`` cut there (mm/vma.c ``__split_vma()``), a PMD mapping
    across an unaligned cut split first; the tail is a new row after it. ``h``: a position to search from."""
    off = ms[m, MS_VOFF]
    i = _find_from(vm, mv, off, ms[m, MS_NVMA], vpn, h, False) - 1
    if i < 0:
        return RC_OK
    r = mv[off + i]
    if vm[r, V_END] <= vpn or vm[r, V_START] == vpn:
        return RC_OK
    po = cfg[K.C_PMD_ORDER]
    if vpn & ((np.int64(1) << po) - 1):
        rc = kern.split_pmd_at(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, m,
                               vpn >> po)
        if rc != RC_OK:
            return rc
    t = _copy_row(vm, vst, r)
    vm[t, V_START] = vpn
    if vm[r, V_FILE] >= 0:
        vm[t, V_PGOFF] = vm[r, V_PGOFF] + (vpn - vm[r, V_START])
    vm[r, V_END] = vpn
    _insert(ms, mv, m, i + 1, t)
    _touch(vst, vpn, vpn)
    return RC_OK


@sjit
def mergeable(vm: Any, a: int, b: int, mutant: int, birth: int) -> bool:
    """``Vma.mergeable_with()``: row ``b`` (starting at ``a``'s end) can merge into row ``a`` (mm/vma.c
    ``vma_merge()``: same flags, file and THP orders, contiguous file offsets, compatible anon_vmas). An anon_vma
    numbered below ``birth`` (the MM's first) was cloned at fork (``Vma.anon_vma_forked``)."""
    if vm[a, V_END] != vm[b, V_START]:
        return False
    if (vm[a, V_READ] != vm[b, V_READ] or vm[a, V_WRITE] != vm[b, V_WRITE] or vm[a, V_EXEC] != vm[b, V_EXEC]
            or vm[a, V_NORESERVE] != vm[b, V_NORESERVE] or vm[a, V_ACCOUNT] != vm[b, V_ACCOUNT]
            or vm[a, V_SHARED] != vm[b, V_SHARED] or vm[a, V_FILE] != vm[b, V_FILE] or vm[a, V_THP] != vm[b, V_THP]
            or vm[a, V_DONTFORK] != vm[b, V_DONTFORK] or vm[a, V_SDWP] != vm[b, V_SDWP]):
        return False
    if (vm[a, V_FILE] >= 0 and mutant != MUTANT_PGOFF_GAP
            and vm[b, V_PGOFF] != vm[a, V_PGOFF] + (vm[a, V_END] - vm[a, V_START])):
        return False
    av = vm[a, V_ANONVMA]
    bv = vm[b, V_ANONVMA]
    if av != 0 and bv != 0:
        return av == bv
    if av != 0:
        return av >= birth
    if bv != 0:
        return bv >= birth
    return True


@sjit
def merge(ms: Any, vm: Any, mv: Any, vst: Any, m: int) -> None:
    """FastMachine._merge(): ``mmapops.merge_vmas()`` over the VMAs that can have become mergeable since the last
    merge (those touching the pages VS_ULO..VS_UHI, and one more on each side); the window is emptied."""
    _merge_from(ms, vm, mv, vst, m, -1)


@sjit
def _merge_from(ms: Any, vm: Any, mv: Any, vst: Any, m: int, h: int) -> None:
    """:func:`merge`, its window searched from position ``h`` (< 0: by bisection)."""
    lo = vst[VS_ULO]
    hi = vst[VS_UHI]
    vst[VS_ULO] = NO_LO
    vst[VS_UHI] = -1
    if lo > hi:
        return
    off = ms[m, MS_VOFF]
    n = ms[m, MS_NVMA]
    i = _find_from(vm, mv, off, n, lo, h, True) - 1
    if i < 0:
        i = 0
    j = _find_from(vm, mv, off, n, hi, i, False) + 1
    if j > n:
        j = n
    if i >= j:
        return
    mutant = vst[VS_MUTANT]
    birth = vst[VS_BIRTH]
    w = i
    for k in range(i + 1, j):
        a = mv[off + w]
        b = mv[off + k]
        if mergeable(vm, a, b, mutant, birth):  # the pair's pages changed (only theirs: re-materialized)
            if vm[a, V_START] < vst[VS_PLO]:
                vst[VS_PLO] = vm[a, V_START]
            if vm[b, V_END] > vst[VS_PHI]:
                vst[VS_PHI] = vm[b, V_END]
            vm[a, V_END] = vm[b, V_END]
            if vm[a, V_ANONVMA] == 0:  # with it, whether it was cloned at fork
                vm[a, V_ANONVMA] = vm[b, V_ANONVMA]
            if vm[a, V_LABEL] == 0:
                vm[a, V_LABEL] = vm[b, V_LABEL]
        else:
            w += 1
            mv[off + w] = b
    if w + 1 < j:
        _delete(ms, mv, m, w + 1, j)


@sjit
def _free_pte_tables(glob: Any, tb: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, pexp: Any, scr: Any, m: int,
                     start: int, end: int, po: int) -> None:
    """FastMachine._free_pte_tables() (``free_pgtables()``): the tables of PMD ranges in ``[start, end)`` that no
    VMA touches any more are freed, in slot order."""
    n = kern.mm_tables(glob, tb, hk, hv, m, start >> po, (end - 1) >> po, scr)
    off = ms[m, MS_VOFF]
    nv = ms[m, MS_NVMA]
    k = 0
    for x in range(n):
        t = scr[0, x]
        a = tb[t, TB_IDX] << po
        i = _end_ge(vm, mv, off, nv, a + 1)
        if i < nv and vm[mv[off + i], V_START] < a + (np.int64(1) << po):
            continue
        scr[1, k] = t
        k += 1
    for x in range(1, k):  # slot order (the free list's order)
        t = scr[1, x]
        y = x - 1
        while y >= 0 and scr[1, y] > t:
            scr[1, y + 1] = scr[1, y]
            y -= 1
        scr[1, y + 1] = t
    for x in range(k):
        kern.table_free(glob, tb, hk, pexp, scr[1, x])


@sjit
def _split_range(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
                 ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, vst: Any, m: int,
                 start: int, end: int, h: int) -> tuple[int, int, int]:
    """Split the VMAs at ``start`` and ``end`` (mm/vma.c split_vma() at both ends of a range, as every verb that
    changes part of a mapping does): (rc, i, j), the MM's index positions of the VMAs now inside the range. ``h``:
    a position near ``start`` to search from."""
    rc = _split_at(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, vst, m, start, h)
    if rc != RC_OK:
        return rc, 0, 0
    off = ms[m, MS_VOFF]
    i = _find_from(vm, mv, off, ms[m, MS_NVMA], start + 1, h, True)
    rc = _split_at(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, vst, m, end, i)
    if rc != RC_OK:
        return rc, 0, 0
    return RC_OK, i, _find_from(vm, mv, off, ms[m, MS_NVMA], end - 1, i, False)


@sjit
def _isolate(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
             ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, vst: Any, rg: Any, gather: Any,
             m: int, start: int, end: int, h: int) -> tuple[int, int, int]:
    """The range ``[start, end)`` as VMAs of its own before their flags change (mprotect, madvise): room for two
    splits (RC_ROOM before anything changes), index room, then :func:`_split_range`'s (rc, i, j)."""
    if not _room(cfg, opt, glob, fs, pmc, pex, pct, tb, hk, hv, tr, cow, ms, vm, mv, vst, rg, gather, m, False, 0, 0,
                 2):
        return RC_ROOM, 0, 0
    _ensure_index(ms, mv, vst, m, NEW_ROWS)
    return _split_range(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, vst, m,
                        start, end, h)


@sjit
def _munmap(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
            ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, scr: Any, vst: Any,
            rg: Any, gather: Any, m: int, start: int, end: int) -> int:
    """FastMachine._do_munmap() (``do_vmi_munmap()``): split at both ends, zap the VMAs in between, drop them,
    free the page tables nothing maps any more. Nothing when no VMA overlaps the range."""
    off = ms[m, MS_VOFF]
    n = ms[m, MS_NVMA]
    i = _end_ge(vm, mv, off, n, start + 1)
    if i >= n or vm[mv[off + i], V_START] >= end:
        return RC_OK
    rc, i, j = _split_range(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, vst, m,
                            start, end, i)
    if rc != RC_OK:
        return rc
    off = ms[m, MS_VOFF]
    for k in range(i, j):
        r = mv[off + k]
        rg[k - i, 0] = vm[r, V_START]
        rg[k - i, 1] = vm[r, V_END]
    rc = kern.zap(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, pexp, scr, m,
                  rg[:j - i], gather)
    if rc != RC_OK:
        return rc
    _delete(ms, mv, m, i, j)
    _touch(vst, start, end)
    vst[VS_P] = i  # a position next to the range, for _done()
    _free_pte_tables(glob, tb, hk, hv, ms, vm, mv, pexp, scr, m, start, end, cfg[K.C_PMD_ORDER])
    return RC_OK


@sjit
def _done(ms: Any, vm: Any, mv: Any, vst: Any, m: int) -> int:
    """A verb's report of what changed: VS_OFF/VS_N the MM's index slice, VS_P the VMAs before the changed pages
    and VS_Q those after them (the same before and after the verb: the caller re-materializes the rest)."""
    return _done_from(ms, vm, mv, vst, m, -1)


@sjit
def _done_from(ms: Any, vm: Any, mv: Any, vst: Any, m: int, h: int) -> int:
    """:func:`_done`, its positions searched from position ``h`` (< 0: by bisection)."""
    off = ms[m, MS_VOFF]
    n = ms[m, MS_NVMA]
    vst[VS_OFF] = off
    vst[VS_N] = n
    if vst[VS_PLO] <= vst[VS_PHI]:
        p = _find_from(vm, mv, off, n, vst[VS_PLO], h, True)
        vst[VS_P] = p
        vst[VS_Q] = n - _find_from(vm, mv, off, n, vst[VS_PHI], p, False)
    return RC_OK


@sjit
def _begin(vst: Any) -> None:
    vst[VS_PLO] = NO_LO
    vst[VS_PHI] = -1
    vst[VS_RET] = 0
    vst[VS_NEED] = 0


# ----------------------------------------------------------------------------- the verbs
@sjit
def mmap(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
         ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, scr: Any, fc: Any,
         vst: Any, rg: Any, gather: Any, m: int, nr: int, fid: int, pgoff: int, shared: int, read: int, write: int,
         addr: int, thp: int, label: int, exe: int, noreserve: int) -> int:
    """FastMachine.mmap() after its argument checks: a new VMA of ``nr`` pages at page ``addr`` (what was mapped
    there unmapped first, MAP_FIXED) or, ``addr`` < 0, at the unmapped area above VS_BASE (``_unmapped_area()``:
    PMD-aligned, a PMD's gap after it); ``fid`` the page-cache file (-1: anonymous), ``thp`` the orders as a mask,
    ``label`` interned. Not merged here (the next merge does). VS_START: its first page."""
    _begin(vst)
    n = ms[m, MS_NVMA]
    if not _room(cfg, opt, glob, fs, pmc, pex, pct, tb, hk, hv, tr, cow, ms, vm, mv, vst, rg, gather, m, addr >= 0,
                 addr, addr + nr, 2):
        return RC_ROOM
    _ensure_index(ms, mv, vst, m, NEW_ROWS)
    big = np.int64(1) << cfg[K.C_PMD_ORDER]
    if addr < 0:
        start = (vst[VS_BASE] + big - 1) & ~(big - 1)
        vst[VS_BASE] = start + nr + big
    else:
        start = addr
        rc = _munmap(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, pexp, scr,
                     vst, rg, gather, m, start, start + nr)
        if rc != RC_OK:
            return rc
    r = vst[VS_NVM]
    vst[VS_NVM] = r + 1
    for c in range(vm.shape[1]):
        vm[r, c] = 0
    vm[r, V_START] = start
    vm[r, V_END] = start + nr
    vm[r, V_READ] = read
    vm[r, V_WRITE] = write
    vm[r, V_SHARED] = shared
    vm[r, V_THP] = thp
    vm[r, V_FILE] = fid
    vm[r, V_PGOFF] = pgoff
    vm[r, V_EXEC] = exe
    vm[r, V_NORESERVE] = noreserve
    vm[r, V_ACCOUNT] = 1 if write and not shared and not noreserve else 0
    vm[r, V_LABEL] = label
    vm[r, V_MAPSW] = maps_writable(fc, vm, r)
    off = ms[m, MS_VOFF]
    n = ms[m, MS_NVMA]
    pos = _upper(vm, mv, off, n, start)
    _insert(ms, mv, m, pos, r)
    _touch(vst, start, start + nr)
    vst[VS_START] = start
    return _done_from(ms, vm, mv, vst, m, pos)


@sjit
def munmap(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
           ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, scr: Any, fc: Any,
           vst: Any, rg: Any, gather: Any, m: int, start: int, end: int) -> int:
    """FastMachine._do_munmap() of pages ``[start, end)``."""
    _begin(vst)
    if not _room(cfg, opt, glob, fs, pmc, pex, pct, tb, hk, hv, tr, cow, ms, vm, mv, vst, rg, gather, m, True, start,
                 end, 2):
        return RC_ROOM
    _ensure_index(ms, mv, vst, m, NEW_ROWS)
    vst[VS_P] = -1
    rc = _munmap(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, pexp, scr, vst, rg,
                 gather, m, start, end)
    return rc if rc != RC_OK else _done_from(ms, vm, mv, vst, m, vst[VS_P])


@sjit
def _protect_shared(cfg: Any, glob: Any, tb: Any, ptf: Any, ptw: Any, hk: Any, hv: Any, vm: Any, scr: Any, m: int,
                    r: int, upgrade: bool) -> None:
    """files.change_protection_shared() of row ``r``: every present PTE writable without write-notify, else write
    bits dropped, or restored on dirty PTEs while soft-dirty is not armed."""
    po = cfg[K.C_PMD_ORDER]
    vs = vm[r, V_START]
    ve = vm[r, V_END]
    n = kern.mm_tables(glob, tb, hk, hv, m, vs >> po, (ve - 1) >> po, scr)
    write = vm[r, V_WRITE] != 0
    mapsw = vm[r, V_MAPSW] != 0
    sdwp = vm[r, V_SDWP] != 0
    for x in range(n):
        t = scr[0, x]
        base = tb[t, TB_IDX] << po
        lo = vs if vs > base else base
        hi = base + ptf.shape[1]
        if ve < hi:
            hi = ve
        for vpn in range(lo, hi):
            s = vpn - base
            if ptf[t, s] == NONE:
                continue
            w = ptw[t, s]
            if not write:
                ptw[t, s] = w & PW_CLEAR
            elif upgrade and (mapsw or (not sdwp and (w & PD) != 0)):
                ptw[t, s] = w | PW


@sjit
def mprotect(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
             ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, scr: Any, fc: Any,
             vst: Any, rg: Any, gather: Any, m: int, start: int, end: int, read: int, write: int, exe: int) -> int:
    """FastMachine.mprotect() of pages ``[start, end)`` (``exe`` < 0: VM_EXEC unchanged): VS_RET -ENOMEM when the
    range is not fully mapped (nothing changed); else split, new flags (VM_ACCOUNT on a private writable upgrade),
    the PTEs changed (kern.change_protection(), or the shared mapping's rule), merged."""
    _begin(vst)
    h = _covered_at(ms, vm, mv, m, start, end)
    if h < 0:
        vst[VS_RET] = -ENOMEM
        return RC_OK
    rc, i, j = _isolate(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, vst, rg,
                        gather, m, start, end, h)
    if rc != RC_OK:
        return rc
    off = ms[m, MS_VOFF]
    for k in range(i, j):
        r = mv[off + k]
        upgrade = write != 0 and vm[r, V_WRITE] == 0
        if upgrade and vm[r, V_SHARED] == 0 and vm[r, V_NORESERVE] == 0:
            vm[r, V_ACCOUNT] = 1
        vm[r, V_READ] = read
        vm[r, V_WRITE] = write
        if exe >= 0:
            vm[r, V_EXEC] = exe
        vm[r, V_MAPSW] = maps_writable(fc, vm, r)
        if vm[r, V_SHARED] != 0:
            _protect_shared(cfg, glob, tb, ptf, ptw, hk, hv, vm, scr, m, r, upgrade)
            continue
        kern.change_protection(cfg, glob, fs, pex, tb, ptf, ptp, ptw, hk, hv, m, vm[r, V_START], vm[r, V_END],
                               write != 0, upgrade and vm[r, V_SDWP] == 0, scr)
    _touch(vst, start, end)
    _merge_from(ms, vm, mv, vst, m, i)
    return _done_from(ms, vm, mv, vst, m, i - 1)


@sjit
def madvise_flags(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
                  ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, scr: Any,
                  fc: Any, vst: Any, rg: Any, gather: Any, m: int, start: int, end: int, verb: int, thp: int) -> int:
    """FastMachine.madvise() of the advice that only changes VMA flags: MADV_DONTFORK/DOFORK (MA_DONTFORK,
    MA_DOFORK), MADV_HUGEPAGE/NOHUGEPAGE (MA_THP: the THP order mask ``thp`` on private anonymous VMAs); split,
    merged; VS_RET -ENOMEM when part of the range is not mapped (the mapped part still changed)."""
    _begin(vst)
    hole = not covered(ms, vm, mv, m, start, end)
    off = ms[m, MS_VOFF]
    h = _end_ge(vm, mv, off, ms[m, MS_NVMA], start + 1)
    rc, i, j = _isolate(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, vst, rg,
                        gather, m, start, end, h)
    if rc != RC_OK:
        return rc
    off = ms[m, MS_VOFF]
    for k in range(i, j):
        r = mv[off + k]
        if verb != MA_THP:
            vm[r, V_DONTFORK] = 1 if verb == MA_DONTFORK else 0
        elif vm[r, V_FILE] < 0 and vm[r, V_SHARED] == 0:
            vm[r, V_THP] = thp
    _touch(vst, start, end)
    _merge_from(ms, vm, mv, vst, m, i)
    if hole:
        vst[VS_RET] = -ENOMEM
    return _done(ms, vm, mv, vst, m)


@sjit
def mremap(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
           ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, scr: Any, fc: Any,
           vst: Any, rg: Any, gather: Any, m: int, start: int, end: int, dst: int) -> int:
    """FastMachine.mremap() after its checks (``[start, end)`` inside one VMA, the ranges apart): what was mapped
    at ``dst`` unmapped, the VMA cut to the range and moved there (its file offset kept); whole PMDs move when the
    move keeps their alignment (``move_huge_pmd()``), other PMDs in the range are split first, then each present PTE
    moves (``move_ptes()``; the rmap does not change); the page tables left empty are freed. Everything may merge
    at the next merge (the Python path publishes the MM whole)."""
    _begin(vst)
    po = cfg[K.C_PMD_ORDER]
    big = np.int64(1) << po
    ptes, pmds, _ = mm_entries(tb, glob[G_NTB], m)
    tables = 2 * (pmds + ptes // big + 2) + 4 + ptes // big + 4
    if not _room(cfg, opt, glob, fs, pmc, pex, pct, tb, hk, hv, tr, cow, ms, vm, mv, vst, rg, gather, m, True, 0,
                 NO_LO, tables):  # the whole MM's worst case (its tables estimate scans them anyway)
        return RC_ROOM
    _ensure_index(ms, mv, vst, m, NEW_ROWS)
    nr = end - start
    rc = _munmap(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, pexp, scr, vst, rg,
                 gather, m, dst, dst + nr)
    if rc != RC_OK:
        return rc
    rc, _, _ = _split_range(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, vst, m,
                            start, end, -1)
    if rc != RC_OK:
        return rc
    delta = dst - start
    n = kern.mm_tables(glob, tb, hk, hv, m, start >> po, (end - 1) >> po, scr)
    for x in range(n):  # the PMDs, by index
        t = scr[0, x]
        f = tb[t, TB_PMDF]
        if f == NONE:
            continue
        idx = tb[t, TB_IDX]
        if start <= idx << po and (idx + 1) << po <= end and (delta & (big - 1)) == 0:
            w = tb[t, TB_PMDW]
            tb[t, TB_PMDF] = NONE
            tb[t, TB_PMDW] = 0
            d = kern.table_get(glob, tb, ptf, hk, hv, m, idx + (delta >> po), True)
            tb[d, TB_PMDF] = f
            tb[d, TB_PMDW] = w
        elif not kern.split_pmd(cfg, opt, glob, fs, pmc, pex, tb, ptf, ptp, ptw, ms, tr, m, t):
            return RC_ERROR
    oracle = opt[O_ORACLE] != 0
    n = kern.mm_tables(glob, tb, hk, hv, m, start >> po, (end - 1) >> po, scr)
    for x in range(n):  # the PTEs, by address
        t = scr[0, x]
        if tb[t, TB_NPTE] == 0:
            continue
        base = tb[t, TB_IDX] << po
        lo = start if start > base else base
        hi = end if end < base + big else base + big
        for vpn in range(lo, hi):
            s = vpn - base
            if ptf[t, s] == NONE:
                continue
            nv = vpn + delta
            d = kern.table_get(glob, tb, ptf, hk, hv, m, nv >> po, True)
            ds = nv & (big - 1)
            ptf[d, ds] = ptf[t, s]
            ptp[d, ds] = ptp[t, s]
            ptw[d, ds] = ptw[t, s]
            if oracle:
                pexp[d, ds] = pexp[t, s]
                pexp[t, s] = 0
            ptf[t, s] = NONE
            ptw[t, s] = 0
            tb[t, TB_NPTE] -= 1
            tb[d, TB_NPTE] += 1
            tb[d, TB_HASPT] = 1
    off = ms[m, MS_VOFF]
    i = _upper(vm, mv, off, ms[m, MS_NVMA], start) - 1
    r = mv[off + i]
    vm[r, V_START] = dst
    vm[r, V_END] = dst + nr
    _delete(ms, mv, m, i, i + 1)
    _insert(ms, mv, m, _upper(vm, mv, off, ms[m, MS_NVMA], dst), r)
    _touch(vst, start, end)
    _touch(vst, dst, dst + nr)
    vst[VS_ULO] = -1  # FastMachine._publish(): every VMA may merge next time
    vst[VS_UHI] = NO_LO
    _free_pte_tables(glob, tb, hk, hv, ms, vm, mv, pexp, scr, m, start, end, po)
    return _done(ms, vm, mv, vst, m)


@sjit
def merge_mm(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
             ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, scr: Any, fc: Any,
             vst: Any, rg: Any, gather: Any, m: int) -> int:
    """FastMachine._merge() as a verb (the workloads' ``merge`` step): :func:`merge` of the pages touched since."""
    _begin(vst)
    merge(ms, vm, mv, vst, m)
    return _done(ms, vm, mv, vst, m)


# ----------------------------------------------------------------------------- rows <-> Vma objects
class RowCodec:
    """The Python side of the rows' interned columns: labels <-> numbers, THP order sets <-> masks, page-cache
    file numbers -> files."""

    __slots__ = ("files", "label_ids", "labels", "thp_masks", "thp_sets")

    def __init__(self, files: list[SimFile]) -> None:
        self.files = files  # PageCache.files: file number -> file
        self.labels: list[str] = [""]
        self.label_ids: dict[str, int] = {"": 0}
        self.thp_masks: dict[frozenset[int], int] = {}
        self.thp_sets: dict[int, frozenset[int]] = {}

    def label(self, name: str) -> int:
        lid = self.label_ids.get(name)
        if lid is None:
            lid = self.label_ids[name] = len(self.labels)
            self.labels.append(name)
        return lid

    @staticmethod
    def address_label(vpn: int) -> int:
        """The number of the label ``str(vpn)`` an mmap at page ``vpn`` >= 0 gives its VMA (a run trace's mmaps are
        nearly all at an address, each its own label): ``~vpn``, negative, told from an interned label's number by
        its sign and not interned (a string and two dictionary operations per mmap saved); :meth:`vmas` turns it
        back into the text."""
        return ~vpn

    def thp(self, orders: frozenset[int]) -> int:
        mask = self.thp_masks.get(orders)
        if mask is None:
            mask = 0
            for o in orders:  # a loop, not sum() over a generator (which costs microseconds more when cold)
                mask |= 1 << o
            self.thp_masks[orders] = mask
            self.thp_sets.setdefault(mask, orders)
        return mask

    def vmas(self, rows: npt.NDArray[np.int64], birth: int) -> list[Vma]:
        """The Vma objects the rows of an MM whose first anon_vma number is ``birth`` hold (``==`` to the Python
        control plane's)."""
        files, labels, sets = self.files, self.labels, self.thp_sets
        out = []
        for (start, end, read, write, shared, thp, anon_vma, fid, pgoff, _mapsw, exe, noreserve, account, dontfork,
             sdwp, label) in rows.tolist():
            out.append(Vma(start, end, read != 0, write != 0, shared != 0, None if fid < 0 else files[fid], pgoff,
                           sets[thp], labels[label] if label >= 0 else str(~label), dontfork != 0, sdwp != 0,
                           anon_vma or None, 0 < anon_vma < birth, exe != 0, noreserve != 0, account != 0))
        return out


def materialize(vm: npt.NDArray[np.int64], mv: npt.NDArray[np.int32], ms: npt.NDArray[np.int64], m: int,
                birth: int, codec: RowCodec) -> list[Vma]:
    """MM ``m``'s VMA list from its rows (a fresh list of fresh objects); ``birth``: FastMM.anon_birth."""
    off = int(ms[m, MS_VOFF])
    return codec.vmas(vm[mv[off:off + int(ms[m, MS_NVMA])]], birth)


def new_state() -> npt.NDArray[np.int64]:
    """A ``vst`` array."""
    vst = np.zeros(VS_LEN, dtype=np.int64)
    vst[VS_ULO] = NO_LO
    vst[VS_UHI] = -1
    return vst
