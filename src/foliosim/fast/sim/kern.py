# mypy: disable-error-code="no-any-return"
"""numba kernels of the compiled process simulator: faults, copy-on-write, fork's page-table copy, zap, PMD split.

Each function mirrors one function of :mod:`foliosim.vm` (named in its docstring) over the arrays laid out in
:mod:`foliosim.fast.sim.layout`; every rmap update goes through the shared compiled rmap/owner core
(:func:`foliosim.fast.kernels._add_new_anon`, ``_add_rmap``, ``_dup_rmap``, ``_remove_rmap_partial``).
A kernel that would run out of array room stops before changing anything for the unit of work it is on and
returns RC_ROOM with the index to resume from; the caller grows the arrays and calls again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from foliosim.fast import kernels as K
from foliosim.fast._jit import jit_inline, unify_calls
from foliosim.fast.sim.layout import (
    ALLOC_ORDERS,
    C_FOLIO,
    C_LEVEL,
    C_MAPCOUNT,
    C_MM,
    C_NEW,
    C_ORDER,
    C_OUTCOME,
    C_PAGE,
    C_REFCOUNT,
    C_RULE,
    C_SHBIT,
    C_UNSHARE,
    C_VPN,
    E_FREE,
    E_ISOLATION,
    E_REFCOUNT,
    E_RMAP,
    E_WRITE_RO,
    FC_ANON,
    FC_BASE,
    FC_CONTENT,
    FC_KIND,
    FC_NR,
    FC_ORDER,
    G_ALLOC,
    G_ANONVMA,
    G_COPY,
    G_EARLY,
    G_ERR,
    G_ERRF,
    G_FAULTS,
    G_FREE,
    G_FREE_TB,
    G_FSPLIT,
    G_HUSED,
    G_LIVE,
    G_MADV,
    G_NAME,
    G_NCOW,
    G_NFOLIO,
    G_NGATHER,
    G_NPAGE,
    G_NTB,
    G_NTR,
    G_PMDSPLIT,
    G_REUSE,
    G_RMAP,
    G_SEGV,
    G_SEQ,
    G_SHMEM_WHOLE,
    HUGE_ZERO,
    KIND_ANON,
    MS_ID,
    MS_LIVE,
    MS_NMAP,
    MS_NVMA,
    MS_PINNED,
    MS_VOFF,
    MUTANT_NO_SHARED_TEST,
    NONE,
    O_FAULT_AROUND,
    O_HANDBACK,
    O_MUTANT,
    O_ORACLE,
    O_RECORD,
    O_USE_ZERO,
    OC_COPY,
    OC_NEW_THP,
    OC_REUSE,
    OC_SPLIT,
    OC_WRITABLE,
    PD,
    PW,
    PW_CLEAR,
    R_ANON_EXCL,
    R_HUGE_ZERO,
    R_LARGE_EXCL,
    R_LARGE_EXTRA,
    R_LARGE_MC_ONE,
    R_LARGE_SHARED,
    R_NOT_ANON,
    R_PMD_ONE,
    R_PMD_SPLIT,
    R_SHARED_MAPPING,
    R_SMALL_EXTRA,
    R_SMALL_ONE,
    R_ZERO,
    RC_ERROR,
    RC_OK,
    RC_ROOM,
    RC_UNSUPPORTED,
    T_FOLIO,
    T_KIND,
    T_LEVEL,
    T_MM,
    T_NR,
    T_ORDER,
    T_PAGE,
    TB_HASPT,
    TB_IDX,
    TB_LIVE,
    TB_MM,
    TB_NEXT,
    TB_NPTE,
    TB_PMDF,
    TB_PMDW,
    U_BEYOND_EOF,
    U_FILE_FAULT,
    V_ANONVMA,
    V_END,
    V_FILE,
    V_MAPSW,
    V_PGOFF,
    V_READ,
    V_SHARED,
    V_START,
    V_THP,
    V_WRITE,
    X_DEFER,
    X_KIND,
    X_NAME,
    X_NEXT,
    X_PCFILE,
    X_PCIDX,
    X_PINCOUNT,
    X_REF,
)
from foliosim.fast.sim.layout import (
    ZERO as ZERO_SLOT,
)
from foliosim.vm.fault import fault_around_bounds

try:  # pragma: no cover - depends on the environment
    from numba import njit

    _OPTIONS: dict[str, Any] = {"cache": True, "nogil": True, "_nrt": False}  # nothing allocates: no refcounts

    def sjit(fn: Any) -> Any:
        return unify_calls(njit(**_OPTIONS)(fn))
except ImportError:  # pragma: no cover
    def sjit(fn: Any) -> Any:
        return fn

GUP_PIN_COUNTING_BIAS = 1024
#: :func:`access`'s ops column 5: bit 0 unshare; above it the row + 1 of a VMA the caller checked (0: none)
A_VMA_SHIFT = 1


class St:
    """Documentation only: the state tuple every kernel takes, in this order (see FastMachine.args())."""


# ----------------------------------------------------------------------------- hash: (mm, pmd index) -> table slot
@sjit
def _hkey(m: int, idx: int) -> int:
    return (m << 40) | idx


@sjit
def _hslot(key: int, mask: int) -> int:
    x = key * -7046029254386353131
    x ^= x >> 31
    return x & mask


@sjit
def hfind(hk: Any, hv: Any, key: int) -> int:
    mask = hk.shape[0] - 1
    h = _hslot(key, mask)
    while True:
        k = hk[h]
        if k == key:
            return int(hv[h])
        if k == -1:
            return -1
        h = (h + 1) & mask


@sjit
def hinsert(glob: Any, hk: Any, hv: Any, key: int, val: int) -> None:
    mask = hk.shape[0] - 1
    h = _hslot(key, mask)
    while hk[h] >= 0:
        h = (h + 1) & mask
    if hk[h] == -1:
        glob[G_HUSED] += 1
    hk[h] = key
    hv[h] = val


@sjit
def hdelete(hk: Any, key: int) -> None:
    mask = hk.shape[0] - 1
    h = _hslot(key, mask)
    while True:
        k = hk[h]
        if k == key:
            hk[h] = -2
            return
        if k == -1:
            return
        h = (h + 1) & mask


# ----------------------------------------------------------------------------- tables
@sjit
def table_get(glob: Any, tb: Any, ptf: Any, hk: Any, hv: Any, m: int, idx: int, create: bool) -> int:
    key = _hkey(m, idx)
    t = hfind(hk, hv, key)
    if t >= 0 or not create:
        return t
    t = glob[G_FREE_TB]
    if t >= 0:
        glob[G_FREE_TB] = tb[t, TB_NEXT]
    else:
        t = glob[G_NTB]
        glob[G_NTB] += 1
    tb[t, TB_LIVE] = 1
    tb[t, TB_MM] = m
    tb[t, TB_IDX] = idx
    tb[t, TB_PMDF] = NONE
    tb[t, TB_PMDW] = 0
    tb[t, TB_HASPT] = 0
    tb[t, TB_NPTE] = 0
    for s in range(ptf.shape[1]):
        ptf[t, s] = NONE
    hinsert(glob, hk, hv, key, t)
    return t


@sjit
def table_free(glob: Any, tb: Any, hk: Any, pexp: Any, t: int) -> None:
    hdelete(hk, _hkey(tb[t, TB_MM], tb[t, TB_IDX]))
    if t < pexp.shape[0]:  # the expected contents exist with the fast oracle only
        for s in range(pexp.shape[1]):
            pexp[t, s] = 0
    tb[t, TB_LIVE] = 0
    tb[t, TB_NEXT] = glob[G_FREE_TB]
    glob[G_FREE_TB] = t


@sjit
def room(glob: Any, opt: Any, fs: Any, pmc: Any, tb: Any, hk: Any, tr: Any, cow: Any, folios: int, pages: int,
         tables: int, trace: int) -> bool:
    """Whether ``folios`` new folios of ``pages`` pages in all, ``tables`` tables and ``trace`` trace rows fit."""
    if glob[G_NFOLIO] + folios > fs.shape[0] or glob[G_NPAGE] + pages > pmc.shape[0]:
        return False
    if glob[G_NTB] + tables > tb.shape[0]:
        return False
    if (glob[G_HUSED] + tables) * 2 > hk.shape[0]:
        return False
    if opt[O_RECORD] and glob[G_NTR] + trace > tr.shape[0]:
        return False
    return glob[G_NCOW] + 2 <= cow.shape[0]


@sjit
def mm_tables(glob: Any, tb: Any, hk: Any, hv: Any, m: int, lo: int, hi: int, scr: Any) -> int:
    """The live table slots of MM ``m`` with PMD index in ``[lo, hi]``, sorted by index, into ``scr[0, :n]``;
    returns n. Hash lookups over a short range, a scan of the used table slots over a long one."""
    ntb = glob[G_NTB]
    n = 0
    if hi - lo + 1 <= ntb:
        for idx in range(lo, hi + 1):
            t = hfind(hk, hv, _hkey(m, idx))
            if t >= 0:
                scr[0, n] = t
                n += 1
        return n
    for t in range(ntb):
        if tb[t, TB_LIVE] and tb[t, TB_MM] == m and lo <= tb[t, TB_IDX] <= hi:
            scr[0, n] = t
            scr[1, n] = tb[t, TB_IDX]
            n += 1
    # heapsort of (scr[1], scr[0]) by index
    for start in range(n // 2 - 1, -1, -1):
        _sift(scr, start, n)
    for end in range(n - 1, 0, -1):
        for r in range(2):
            tmp = scr[r, 0]
            scr[r, 0] = scr[r, end]
            scr[r, end] = tmp
        _sift(scr, 0, end)
    return n


@sjit
def _sift(scr: Any, root: int, n: int) -> None:
    while True:
        child = 2 * root + 1
        if child >= n:
            return
        if child + 1 < n and scr[1, child + 1] > scr[1, child]:
            child += 1
        if scr[1, root] >= scr[1, child]:
            return
        for r in range(2):
            tmp = scr[r, root]
            scr[r, root] = scr[r, child]
            scr[r, child] = tmp
        root = child


# ----------------------------------------------------------------------------- folios
@sjit
def record(glob: Any, opt: Any, tr: Any, kind: int, mm: int, folio: int, order: int, level: int, page: int,
           nr: int) -> None:
    if not opt[O_RECORD]:
        return
    n = glob[G_NTR]
    tr[n, T_KIND] = kind
    tr[n, T_MM] = mm
    tr[n, T_FOLIO] = folio
    tr[n, T_ORDER] = order
    tr[n, T_LEVEL] = level
    tr[n, T_PAGE] = page
    tr[n, T_NR] = nr
    glob[G_NTR] = n + 1


@sjit
def alloc(glob: Any, opt: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tr: Any, kind: int, order: int,
          content: int) -> int:
    """``Machine.alloc_folio()``: a folio with refcount 1 (prep_compound_head()), recorded as folio_new."""
    f = glob[G_FREE + order]
    if f >= 0:
        glob[G_FREE + order] = fs[f, X_NEXT]
    else:
        f = glob[G_NFOLIO]
        glob[G_NFOLIO] += 1
        fs[f, K.F_OFF] = glob[G_NPAGE]
        fs[f, K.F_CAP] = np.int64(1) << order
        glob[G_NPAGE] += np.int64(1) << order
    off = fs[f, K.F_OFF]
    for p in range(off, off + (np.int64(1) << order)):
        pmc[p] = -1
        pex[p] = 0
        pct[p] = content
    fs[f, K.F_LIVE] = 1
    fs[f, K.F_ORDER] = order
    fs[f, K.F_LARGE] = -1
    fs[f, K.F_ENTIRE] = -1
    fs[f, K.F_NPM] = 0
    fs[f, K.F_ID0] = 0
    fs[f, K.F_ID1] = 0
    fs[f, K.F_MMC0] = -1
    fs[f, K.F_MMC1] = -1
    fs[f, K.F_SHARED] = 0
    fs[f, K.F_PMDS] = 0
    fs[f, K.F_SEQ] = glob[G_SEQ]
    glob[G_SEQ] += 1
    fs[f, X_REF] = 1
    fs[f, X_PINCOUNT] = 0
    fs[f, X_KIND] = kind
    fs[f, X_NAME] = glob[G_NAME]
    glob[G_NAME] += 1
    for c in range(X_KIND + 2, fs.shape[1]):  # pins, refs, deferred, next
        fs[f, c] = 0
    glob[G_LIVE] += 1
    glob[G_ALLOC + kind * ALLOC_ORDERS + order] += 1
    record(glob, opt, tr, K.K_FOLIO_NEW, -1, fs[f, X_NAME], order, 0, 0, 1)
    return f


@sjit
def get(fs: Any, f: int, nr: int) -> None:
    if f >= 0:
        fs[f, X_REF] += nr


@sjit
def put(cfg: Any, glob: Any, opt: Any, fs: Any, pmc: Any, tr: Any, f: int, nr: int) -> bool:
    """``folio_put_refs()``; the last reference frees the folio (folio_free). False: a bad state."""
    if f < 0:
        return True
    fs[f, X_REF] -= nr
    if fs[f, X_REF] < 0:
        glob[G_ERR] = E_REFCOUNT
        glob[G_ERRF] = fs[f, X_NAME]
        return False
    if fs[f, X_REF] == 0:
        if not K._free_check_ok(cfg, fs, pmc, f):
            glob[G_ERR] = E_FREE
            glob[G_ERRF] = fs[f, X_NAME]
            return False
        record(glob, opt, tr, K.K_FOLIO_FREE, -1, fs[f, X_NAME], 0, 0, 0, 1)
        fs[f, K.F_LIVE] = 0
        order = fs[f, K.F_ORDER]
        fs[f, X_NEXT] = glob[G_FREE + order]
        glob[G_FREE + order] = f
        glob[G_LIVE] -= 1
    return True


@sjit
def rmap(cfg: Any, glob: Any, opt: Any, fs: Any, pmc: Any, ms: Any, tr: Any, kind: int, f: int, m: int,
         level: int, page: int, nr: int) -> bool:
    """One rmap call through the shared compiled core (``Machine._record`` and friends)."""
    mm_id = ms[m, MS_ID]
    order = fs[f, K.F_ORDER]
    nr_pages = np.int64(1) << order
    ok = True
    if kind == K.K_MAP_NEW_ANON or level == K.L_PMD:
        ok = K._precheck_ok(cfg, fs, f, 0, nr_pages, mm_id, level)
    else:
        ok = K._precheck_ok(cfg, fs, f, page, nr, mm_id, level)
    if not ok:
        glob[G_ERR] = E_RMAP
        glob[G_ERRF] = fs[f, X_NAME]
        return False
    step = nr if level == K.L_PTE else 1
    glob[G_RMAP] += 1
    if kind == K.K_MAP_NEW_ANON:
        K._add_new_anon(cfg, fs, pmc, f, mm_id)
        ms[m, MS_NMAP] += nr_pages if level == K.L_PTE else 1
    elif kind == K.K_MAP:
        K._add_rmap(cfg, fs, pmc, f, page, nr, mm_id, level)
        ms[m, MS_NMAP] += step
    elif kind == K.K_DUP:
        K._dup_rmap(cfg, fs, pmc, f, page, nr, mm_id, level)
        ms[m, MS_NMAP] += step
    else:
        partially = K._remove_rmap_partial(cfg, fs, pmc, f, page, nr, mm_id, level)
        ms[m, MS_NMAP] -= step
        if partially and fs[f, X_KIND] == KIND_ANON and not fs[f, X_DEFER]:
            fs[f, X_DEFER] = 1  # deferred_split_folio(folio, true)
    if level == K.L_PMD or kind == K.K_MAP_NEW_ANON:
        record(glob, opt, tr, kind, m, fs[f, X_NAME], 0, level, 0, 1)
    else:
        record(glob, opt, tr, kind, m, fs[f, X_NAME], 0, level, page, nr)
    return True


@jit_inline
def _pte_rmap_ok(cfg: Any, glob: Any, fs: Any, f: int, mm_id: int, page: int, nr: int) -> bool:
    """``rmap_precheck()`` of a PTE-level rmap call on ``nr`` pages of folio ``f`` from ``page``; counted when it
    passes, the error noted (E_RMAP) when not. The prologue of :func:`_dup_ptes` and :func:`_unmap_ptes`."""
    if not K._precheck_ok(cfg, fs, f, page, nr, mm_id, K.L_PTE):
        glob[G_ERR] = E_RMAP
        glob[G_ERRF] = fs[f, X_NAME]
        return False
    glob[G_RMAP] += 1
    return True


@jit_inline
def _dup_ptes(cfg: Any, glob: Any, opt: Any, fs: Any, pmc: Any, ms: Any, tr: Any, f: int, m: int, page: int,
              nr: int) -> bool:
    """:func:`rmap` of K_DUP at PTE level, inlined into fork_copy's batches of large folios (a compiled call passes
    every array's shape and strides, more than the work of a 16-page batch)."""
    mm_id = ms[m, MS_ID]
    if not _pte_rmap_ok(cfg, glob, fs, f, mm_id, page, nr):
        return False
    K._dup_rmap(cfg, fs, pmc, f, page, nr, mm_id, K.L_PTE)
    ms[m, MS_NMAP] += nr
    record(glob, opt, tr, K.K_DUP, m, fs[f, X_NAME], 0, K.L_PTE, page, nr)
    return True


@jit_inline
def _unmap_ptes(cfg: Any, glob: Any, opt: Any, fs: Any, pmc: Any, ms: Any, tr: Any, f: int, m: int, page: int,
                nr: int) -> bool:
    """:func:`rmap` of K_UNMAP at PTE level, inlined into zap's batches of large folios."""
    mm_id = ms[m, MS_ID]
    if not _pte_rmap_ok(cfg, glob, fs, f, mm_id, page, nr):
        return False
    partially = K._remove_rmap_partial(cfg, fs, pmc, f, page, nr, mm_id, K.L_PTE)
    ms[m, MS_NMAP] -= nr
    if partially and fs[f, X_KIND] == KIND_ANON and not fs[f, X_DEFER]:
        fs[f, X_DEFER] = 1  # deferred_split_folio(folio, true)
    record(glob, opt, tr, K.K_UNMAP, m, fs[f, X_NAME], 0, K.L_PTE, page, nr)
    return True


@sjit
def mapcount(fs: Any, pmc: Any, f: int) -> int:
    """``folio_mapcount()``."""
    if fs[f, K.F_ORDER] == 0:
        return pmc[fs[f, K.F_OFF]] + 1
    return fs[f, K.F_LARGE] + 1


@sjit
def maybe_shared(fs: Any, pmc: Any, f: int) -> bool:
    """``folio_maybe_mapped_shared()`` (v6.15)."""
    mc = mapcount(fs, pmc, f)
    if fs[f, K.F_ORDER] == 0:
        return mc > 1
    if mc <= 1:
        return False
    return fs[f, K.F_SHARED] != 0


@sjit
def maybe_dma_pinned(cfg: Any, fs: Any, f: int) -> bool:
    """``folio_maybe_dma_pinned()``."""
    order = fs[f, K.F_ORDER]
    if order >= 1 and (cfg[K.C_IS64] != 0 or order > 1):
        return fs[f, X_PINCOUNT] > 0
    return fs[f, X_REF] >= GUP_PIN_COUNTING_BIAS


# ----------------------------------------------------------------------------- VMAs
@sjit
def find_vma(ms: Any, vm: Any, mv: Any, m: int, vpn: int) -> int:
    """``vma_lookup()``: the VMA row containing ``vpn`` or -1 (binary search over the MM's sorted VMAs)."""
    off = ms[m, MS_VOFF]
    lo = 0
    hi = ms[m, MS_NVMA]
    while lo < hi:
        mid = (lo + hi) >> 1
        if vm[mv[off + mid], V_START] <= vpn:
            lo = mid + 1
        else:
            hi = mid
    if lo == 0:
        return -1
    v = mv[off + lo - 1]
    return v if vm[v, V_END] > vpn else -1


@sjit
def anon_vma_prepare(glob: Any, vm: Any, v: int) -> None:
    if vm[v, V_ANONVMA] == 0:
        vm[v, V_ANONVMA] = glob[G_ANONVMA]
        glob[G_ANONVMA] += 1


# ----------------------------------------------------------------------------- CoW decisions
@sjit
def decide(glob: Any, fs: Any, pmc: Any, cow: Any, mmname: int, vpn: int, f: int, page: int, level: int,
           rule: int, outcome: int, unshare: bool, pmd_order: int) -> int:
    n = glob[G_NCOW]
    c = cow[n]
    c[C_MM] = mmname
    c[C_VPN] = vpn
    c[C_PAGE] = page
    c[C_LEVEL] = level
    c[C_RULE] = rule
    c[C_OUTCOME] = outcome
    c[C_UNSHARE] = 1 if unshare else 0
    c[C_NEW] = -1
    if f < 0:
        c[C_FOLIO] = f
        c[C_ORDER] = pmd_order if f == HUGE_ZERO else 0
        c[C_MAPCOUNT] = 0
        c[C_REFCOUNT] = 0
        c[C_SHBIT] = -1
    else:
        c[C_FOLIO] = fs[f, X_NAME]
        c[C_ORDER] = fs[f, K.F_ORDER]
        c[C_MAPCOUNT] = mapcount(fs, pmc, f)
        c[C_REFCOUNT] = fs[f, X_REF]
        c[C_SHBIT] = fs[f, K.F_SHARED] if fs[f, K.F_ORDER] else -1
    glob[G_NCOW] = n + 1
    if outcome == OC_REUSE:
        glob[G_REUSE] += 1
    elif outcome == OC_COPY:
        glob[G_COPY] += 1
    return n


@sjit
def can_reuse_anon(opt: Any, fs: Any, pmc: Any, f: int) -> int:
    """``wp_can_reuse_anon_folio()`` / ``__wp_can_reuse_large_anon_folio()``: the rule that decides."""
    ref = fs[f, X_REF]
    if fs[f, K.F_ORDER] == 0:
        return R_SMALL_ONE if ref == 1 else R_SMALL_EXTRA
    large = fs[f, K.F_LARGE] + 1
    if large <= 1:
        return R_LARGE_MC_ONE
    test_shared = opt[O_MUTANT] != MUTANT_NO_SHARED_TEST
    if test_shared and maybe_shared(fs, pmc, f):
        return R_LARGE_SHARED
    if large != ref:
        return R_LARGE_EXTRA
    ok = (not test_shared or not maybe_shared(fs, pmc, f)) and large == ref
    return R_LARGE_EXCL if ok else R_LARGE_EXTRA


# ----------------------------------------------------------------------------- the state tuple helpers
# Every entry point takes: cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow
# and indexes them by name; helpers below take what they need.


@jit_inline
def new_anon(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, ms: Any, vm: Any, tr: Any,
             m: int, v: int, order: int, level: int, content: int) -> int:
    """A new exclusive anon folio of ``order`` mapped once at ``level`` in MM ``m`` (``folio_add_new_anon_rmap()``
    after ``anon_vma_prepare()`` of VMA row ``v``); the folio, or -1 when the rmap update failed."""
    f = alloc(glob, opt, fs, pmc, pex, pct, tr, KIND_ANON, order, content)
    anon_vma_prepare(glob, vm, v)
    if not rmap(cfg, glob, opt, fs, pmc, ms, tr, K.K_MAP_NEW_ANON, f, m, level, 0, 1):
        return -1
    pex[fs[f, K.F_OFF]] = 1
    return f


@sjit
def split_pmd(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, tb: Any, ptf: Any, ptp: Any, ptw: Any,
              ms: Any, tr: Any, m: int, t: int) -> bool:
    """``Machine.split_pmd()`` (__split_huge_pmd()): remap a PMD with PTEs, AnonExclusive copied to every page."""
    f = tb[t, TB_PMDF]
    write = tb[t, TB_PMDW]
    tb[t, TB_PMDF] = NONE
    tb[t, TB_PMDW] = 0
    tb[t, TB_HASPT] = 1
    glob[G_PMDSPLIT] += 1
    nr = ptf.shape[1]
    if f == HUGE_ZERO:
        for k in range(nr):
            ptf[t, k] = -2
            ptp[t, k] = 0
            ptw[t, k] = 0
        tb[t, TB_NPTE] += nr
        return True
    get(fs, f, nr - 1)
    off = fs[f, K.F_OFF]
    exclusive = pex[off]
    if not rmap(cfg, glob, opt, fs, pmc, ms, tr, K.K_MAP, f, m, K.L_PTE, 0, nr):
        return False
    if exclusive:
        for k in range(nr):
            pex[off + k] = 1
    for k in range(nr):
        ptf[t, k] = f
        ptp[t, k] = k
        ptw[t, k] = PW if write else 0
    tb[t, TB_NPTE] += nr
    return rmap(cfg, glob, opt, fs, pmc, ms, tr, K.K_UNMAP, f, m, K.L_PMD, 0, 1)


@sjit
def fault(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
          ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, tr: Any, cow: Any, fc: Any, pcs: Any, m: int, v: int,
          vpn: int, write: bool, unshare: bool) -> int:
    """``handle_mm_fault()`` (foliosim.vm.fault) for an access already checked against the VMA."""
    po = cfg[K.C_PMD_ORDER]
    glob[G_FAULTS] += 1
    idx = vpn >> po
    base = idx << po
    s = vpn - base
    t = table_get(glob, tb, ptf, hk, hv, m, idx, False)
    if t >= 0 and tb[t, TB_PMDF] != NONE:
        if not ((write and not tb[t, TB_PMDW]) or unshare):
            return RC_OK
        rc = huge_wp(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, ms, vm, tr, cow, m, v, vpn, t, unshare)
        if rc != RC_OK or tb[t, TB_PMDF] != NONE:
            return rc
    if t < 0 or ptf[t, s] == NONE:
        if vm[v, V_FILE] >= 0:
            if opt[O_HANDBACK] and write and not vm[v, V_SHARED]:  # the caller privatizes its reference view
                glob[G_ERR] = U_FILE_FAULT
                return RC_UNSUPPORTED
            return file_fault(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, tr, cow, fc, pcs,
                              m, v, vpn, write, unshare)
        rc = do_anonymous_page(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, tr, m, v,
                               vpn, write)
        if rc != RC_OK:
            return rc
        t = table_get(glob, tb, ptf, hk, hv, m, idx, False)
        if tb[t, TB_PMDF] != NONE or ptf[t, s] == NONE or not unshare:
            return RC_OK
    if (write and not ptw[t, s] & PW) or unshare:
        return do_wp_page(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, ms, vm, tr, cow, m, v, vpn, t, s,
                          unshare)
    return RC_OK


@jit_inline  # inlined: a call passes ~20 arrays, each 7-9 words
def do_anonymous_page(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any,
                      ptp: Any, ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, tr: Any, m: int, v: int, vpn: int,
                      write: bool) -> int:
    """``do_huge_pmd_anonymous_page()`` / ``do_anonymous_page()`` with ``alloc_anon_folio()``."""
    po = cfg[K.C_PMD_ORDER]
    nrp = np.int64(1) << po
    idx = vpn >> po
    base = idx << po
    t = table_get(glob, tb, ptf, hk, hv, m, idx, False)
    thp = vm[v, V_THP]
    vwrite = vm[v, V_WRITE]
    if ((thp >> po) & 1 and vm[v, V_START] <= base and base + nrp <= vm[v, V_END]
            and (t < 0 or (tb[t, TB_PMDF] == NONE and tb[t, TB_HASPT] == 0))):
        t = table_get(glob, tb, ptf, hk, hv, m, idx, True)
        if not write and opt[O_USE_ZERO]:
            tb[t, TB_PMDF] = HUGE_ZERO
            tb[t, TB_PMDW] = 0
            return RC_OK
        f = new_anon(cfg, opt, glob, fs, pmc, pex, pct, ms, vm, tr, m, v, po, K.L_PMD, 0)
        if f < 0:
            return RC_ERROR
        tb[t, TB_PMDF] = f
        tb[t, TB_PMDW] = vwrite
        return RC_OK
    t = table_get(glob, tb, ptf, hk, hv, m, idx, True)
    s = vpn - base
    if not write:
        ptf[t, s] = -2
        ptp[t, s] = 0
        ptw[t, s] = 0
        tb[t, TB_HASPT] = 1
        tb[t, TB_NPTE] += 1
        return RC_OK
    order = 0
    for o in range(po - 1, 1, -1):  # alloc_anon_folio(): the highest allowed order that fits and is empty
        if not (thp >> o) & 1:
            continue
        nr = np.int64(1) << o
        first = vpn & ~(nr - 1)
        if first < vm[v, V_START] or first + nr > vm[v, V_END]:
            continue
        empty = True
        for k in range(nr):
            if ptf[t, first - base + k] != NONE:
                empty = False
                break
        if empty:
            order = o
            break
    nr = np.int64(1) << order
    first = vpn & ~(nr - 1)
    f = alloc(glob, opt, fs, pmc, pex, pct, tr, KIND_ANON, order, 0)
    get(fs, f, nr - 1)
    anon_vma_prepare(glob, vm, v)
    if not rmap(cfg, glob, opt, fs, pmc, ms, tr, K.K_MAP_NEW_ANON, f, m, K.L_PTE, 0, 1):
        return RC_ERROR
    off = fs[f, K.F_OFF]
    for k in range(nr):
        pex[off + k] = 1
        ptf[t, first - base + k] = f
        ptp[t, first - base + k] = k
        ptw[t, first - base + k] = PW if vwrite else 0
    tb[t, TB_NPTE] += nr
    tb[t, TB_HASPT] = 1
    return RC_OK


@sjit
def do_wp_page(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
               ptw: Any, ms: Any, vm: Any, tr: Any, cow: Any, m: int, v: int, vpn: int, t: int, s: int,
               unshare: bool) -> int:
    """``do_wp_page()`` on a present read-only (or to-be-unshared) PTE (foliosim.vm.cow)."""
    po = cfg[K.C_PMD_ORDER]
    f = ptf[t, s]
    page = ptp[t, s]
    if vm[v, V_SHARED]:  # a shared mapping: never unshared; wp_page_shared() makes the PTE writable and dirty
        if not unshare:
            decide(glob, fs, pmc, cow, m, vpn, f, page, K.L_PTE, R_SHARED_MAPPING, OC_WRITABLE, False, po)
            ptw[t, s] |= PW | PD
        return RC_OK
    if f == -2:
        rule = R_ZERO
    elif fs[f, X_KIND] != KIND_ANON:
        rule = R_NOT_ANON
    elif pex[fs[f, K.F_OFF] + page]:
        rule = R_ANON_EXCL
    else:
        rule = can_reuse_anon(opt, fs, pmc, f)
    if rule in (R_ANON_EXCL, R_SMALL_ONE, R_LARGE_EXCL):
        decide(glob, fs, pmc, cow, m, vpn, f, page, K.L_PTE, rule, OC_REUSE, unshare, po)
        pex[fs[f, K.F_OFF] + page] = 1
        if not unshare:
            ptw[t, s] = (ptw[t, s] & PD) | (PW if vm[v, V_WRITE] else 0)
        return RC_OK
    n = decide(glob, fs, pmc, cow, m, vpn, f, page, K.L_PTE, rule, OC_COPY, unshare, po)
    # wp_page_copy(): copy the faulting page into a new order-0 anon folio
    content = 0 if f < 0 else pct[fs[f, K.F_OFF] + page]
    get(fs, f, 1)
    new = new_anon(cfg, opt, glob, fs, pmc, pex, pct, ms, vm, tr, m, v, 0, K.L_PTE, content)
    if new < 0:
        return RC_ERROR
    ptf[t, s] = new
    ptp[t, s] = 0
    ptw[t, s] = PW if (vm[v, V_WRITE] and not unshare) else 0
    if f >= 0:
        if not rmap(cfg, glob, opt, fs, pmc, ms, tr, K.K_UNMAP, f, m, K.L_PTE, page, 1):
            return RC_ERROR
        if not put(cfg, glob, opt, fs, pmc, tr, f, 1):
            return RC_ERROR
    if not put(cfg, glob, opt, fs, pmc, tr, f, 1):
        return RC_ERROR
    cow[n, C_NEW] = fs[new, X_NAME]
    return RC_OK


@sjit
def huge_wp(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
            ptw: Any, ms: Any, vm: Any, tr: Any, cow: Any, m: int, v: int, vpn: int, t: int, unshare: bool) -> int:
    """``do_huge_pmd_wp_page()`` / ``do_huge_zero_wp_pmd()``."""
    po = cfg[K.C_PMD_ORDER]
    f = tb[t, TB_PMDF]
    base = tb[t, TB_IDX] << po
    if f == HUGE_ZERO:
        n = decide(glob, fs, pmc, cow, m, vpn, f, vpn - base, K.L_PMD, R_HUGE_ZERO, OC_NEW_THP, unshare, po)
        new = new_anon(cfg, opt, glob, fs, pmc, pex, pct, ms, vm, tr, m, v, po, K.L_PMD, 0)
        if new < 0:
            return RC_ERROR
        tb[t, TB_PMDF] = new
        tb[t, TB_PMDW] = 1 if (vm[v, V_WRITE] and not unshare) else 0
        cow[n, C_NEW] = fs[new, X_NAME]
        return RC_OK
    off = fs[f, K.F_OFF]
    rule = -1
    if pex[off]:
        rule = R_ANON_EXCL
    elif fs[f, X_REF] == 1:
        rule = R_PMD_ONE
    if rule >= 0:
        decide(glob, fs, pmc, cow, m, vpn, f, vpn - base, K.L_PMD, rule, OC_REUSE, unshare, po)
        pex[off] = 1
        if not unshare:
            tb[t, TB_PMDW] = vm[v, V_WRITE]
        return RC_OK
    decide(glob, fs, pmc, cow, m, vpn, f, vpn - base, K.L_PMD, R_PMD_SPLIT, OC_SPLIT, unshare, po)
    if not split_pmd(cfg, opt, glob, fs, pmc, pex, tb, ptf, ptp, ptw, ms, tr, m, t):
        return RC_ERROR
    return RC_OK


# ----------------------------------------------------------------------------- files, shmem, shared mappings
# The page cache: file number (V_FILE, a row of ``fc``) and page index -> folio slot in ``pcs`` (one int32 per
# file page from fc[file, FC_BASE], -1: not cached); a cached folio's file and first index are in its X_PCFILE
# (1 + file number) and X_PCIDX columns. foliosim.fast.sim.files reads and writes the same arrays.
# numba's on-disk cache of this file's kernels does not notice a change to foliosim/vm/fault.py (nor to
# foliosim/fast/kernels.py): after changing fault_around_bounds(), delete foliosim/fast/sim/__pycache__/*.nb[ic].
fault_around_bounds_c = sjit(fault_around_bounds)


@sjit
def pte_at(glob: Any, tb: Any, ptf: Any, hk: Any, hv: Any, m: int, vpn: int, po: int) -> int:
    """The folio value of the PTE at ``vpn`` (NONE without a page table)."""
    t = table_get(glob, tb, ptf, hk, hv, m, vpn >> po, False)
    if t < 0:
        return NONE
    return ptf[t, vpn & ((np.int64(1) << po) - 1)]


@sjit
def cache_range(fs: Any, fc: Any, pcs: Any, fid: int, index: int, vstart: int, vend: int, pgoff: int,
                vpn: int) -> tuple[int, int]:
    """``Machine._cache_range()``: the first index and order of the folio a miss at ``index`` allocates
    (``vend`` < 0: no VMA to fit)."""
    order = fc[fid, FC_ORDER]
    full = np.int64(1) << order
    first = index & ~(full - 1)
    nr = min(full, fc[fid, FC_NR] - first)  # SimFile.folio_range()
    if nr != full:
        return index, 0
    if fc[fid, FC_ANON] and nr > 1:
        base = fc[fid, FC_BASE]
        for i in range(first, first + nr):
            if pcs[base + i] >= 0:
                return index, 0
        head = vpn - (index - first)
        if vend >= 0 and not ((vstart - pgoff) % nr == 0 and vstart <= head and head + nr <= vend):
            return index, 0
    return first, order


@sjit
def add_to_cache(glob: Any, opt: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tr: Any, fc: Any, pcs: Any,
                 fid: int, first: int, order: int) -> int:
    """``Machine._add_to_cache()``: a new page-cache folio holding ``nr_pages`` references (filemap_add_folio());
    its pages read the file's disk."""
    f = alloc(glob, opt, fs, pmc, pex, pct, tr, fc[fid, FC_KIND], order, fc[fid, FC_CONTENT])
    nr = np.int64(1) << order
    get(fs, f, nr - 1)
    base = fc[fid, FC_BASE]
    for i in range(first, first + nr):
        pcs[base + i] = f
    fs[f, X_PCFILE] = fid + 1
    fs[f, X_PCIDX] = first
    return f


@jit_inline  # inlined: a call passes ~20 arrays, each 7-9 words
def pagecache_folio(glob: Any, opt: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tr: Any, fc: Any, pcs: Any,
                    fid: int, index: int, vstart: int, vend: int, pgoff: int, vpn: int) -> int:
    """``Machine.pagecache_folio()``: the cached folio for ``index``, read in (allocated for shmem) if absent."""
    f = pcs[fc[fid, FC_BASE] + index]
    if f >= 0:
        return f
    first, order = cache_range(fs, fc, pcs, fid, index, vstart, vend, pgoff, vpn)
    return add_to_cache(glob, opt, fs, pmc, pex, pct, tr, fc, pcs, fid, first, order)


@jit_inline  # inlined: a call passes ~20 arrays, each 7-9 words
def map_file_ptes(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, tb: Any, ptf: Any, ptp: Any, ptw: Any,
                  hk: Any, hv: Any, ms: Any, tr: Any, m: int, vpn: int, f: int, page: int, nr: int, writable: bool,
                  dirty: bool) -> bool:
    """``_map_file_ptes()``: references first, one batched rmap call, then the PTEs."""
    po = cfg[K.C_PMD_ORDER]
    get(fs, f, nr)
    if not rmap(cfg, glob, opt, fs, pmc, ms, tr, K.K_MAP, f, m, K.L_PTE, page, nr):
        return False
    t = table_get(glob, tb, ptf, hk, hv, m, vpn >> po, True)
    s = vpn & ((np.int64(1) << po) - 1)
    bits = (PW if writable else 0) | (PD if dirty else 0)
    for k in range(nr):
        ptf[t, s + k] = f
        ptp[t, s + k] = page + k
        ptw[t, s + k] = bits
    tb[t, TB_NPTE] += nr
    tb[t, TB_HASPT] = 1
    return True


@jit_inline  # inlined: a call passes ~20 arrays, each 7-9 words
def finish_fault(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, tb: Any, ptf: Any, ptp: Any, ptw: Any,
                 hk: Any, hv: Any, ms: Any, vm: Any, tr: Any, fc: Any, m: int, v: int, vpn: int, f: int,
                 write: bool) -> bool:
    """``finish_fault()``: the faulting page, or the whole folio in anonymous shared memory."""
    po = cfg[K.C_PMD_ORDER]
    page = vm[v, V_PGOFF] + vpn - vm[v, V_START] - fs[f, X_PCIDX]
    writable = write or vm[v, V_MAPSW] != 0
    nr = np.int64(1) << fs[f, K.F_ORDER]
    first = vpn - page
    if nr > 1 and fc[vm[v, V_FILE], FC_ANON]:
        last = first + nr - 1
        if first >= vm[v, V_START] and last < vm[v, V_END] and first >> po == last >> po:
            empty = True
            for k in range(nr):
                if pte_at(glob, tb, ptf, hk, hv, m, first + k, po) != NONE:
                    empty = False
                    break
            if empty:
                glob[G_SHMEM_WHOLE] += 1
                return map_file_ptes(cfg, opt, glob, fs, pmc, tb, ptf, ptp, ptw, hk, hv, ms, tr, m, first, f, 0,
                                     nr, writable, write)
    return map_file_ptes(cfg, opt, glob, fs, pmc, tb, ptf, ptp, ptw, hk, hv, ms, tr, m, vpn, f, page, 1,
                         writable, write)


@jit_inline  # inlined: a call passes ~20 arrays, each 7-9 words
def fault_around(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, tb: Any, ptf: Any, ptp: Any, ptw: Any,
                 hk: Any, hv: Any, ms: Any, vm: Any, tr: Any, fc: Any, pcs: Any, m: int, v: int, vpn: int) -> bool:
    """``_fault_around()`` (do_fault_around()/filemap_map_pages()): map cached pages near the fault."""
    nr = opt[O_FAULT_AROUND]
    if nr <= 1:
        return True
    po = cfg[K.C_PMD_ORDER]
    fid = vm[v, V_FILE]
    base = fc[fid, FC_BASE]
    delta = vm[v, V_PGOFF] - vm[v, V_START]  # file index - vpn
    lo, hi = fault_around_bounds_c(vpn, nr, vm[v, V_START], vm[v, V_END], po)
    writable = vm[v, V_MAPSW] != 0
    nrp = fc[fid, FC_NR]
    mask = (np.int64(1) << po) - 1
    t = table_get(glob, tb, ptf, hk, hv, m, vpn >> po, False)  # the window is in this one page table
    cur = lo
    while cur < hi:
        index = cur + delta
        f = pcs[base + index] if 0 <= index < nrp else -1
        if f < 0 or (t >= 0 and ptf[t, cur & mask] != NONE):
            cur += 1
            continue
        page = cur + delta - fs[f, X_PCIDX]
        fnr = np.int64(1) << fs[f, K.F_ORDER]
        run = 1
        while cur + run < hi and (t < 0 or ptf[t, (cur + run) & mask] == NONE) and page + run < fnr:
            run += 1
        if not map_file_ptes(cfg, opt, glob, fs, pmc, tb, ptf, ptp, ptw, hk, hv, ms, tr, m, cur, f, page, run,
                             writable, False):
            return False
        cur += run  # (when there was no table, the one just made maps only the pages passed: t stays -1)
    return True


@jit_inline  # inlined: a call passes ~20 arrays, each 7-9 words
def do_file_fault(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any,
                  ptp: Any, ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, tr: Any, fc: Any, pcs: Any, m: int, v: int,
                  vpn: int, write: bool) -> int:
    """``do_file_fault()``: do_cow_fault() (private write), do_shared_fault() or do_read_fault()."""
    po = cfg[K.C_PMD_ORDER]
    fid = vm[v, V_FILE]
    index = vm[v, V_PGOFF] + vpn - vm[v, V_START]
    if index < 0 or index >= fc[fid, FC_NR]:
        glob[G_ERR] = U_BEYOND_EOF
        return RC_UNSUPPORTED
    vstart = vm[v, V_START]
    vend = vm[v, V_END]
    pgoff = vm[v, V_PGOFF]
    if write and not vm[v, V_SHARED]:  # do_cow_fault(): a private copy; the page-cache page is not mapped
        src = pagecache_folio(glob, opt, fs, pmc, pex, pct, tr, fc, pcs, fid, index, 0, -1, 0, 0)
        get(fs, src, 1)
        content = pct[fs[src, K.F_OFF] + index - fs[src, X_PCIDX]]
        new = alloc(glob, opt, fs, pmc, pex, pct, tr, KIND_ANON, 0, content)
        anon_vma_prepare(glob, vm, v)
        if not rmap(cfg, glob, opt, fs, pmc, ms, tr, K.K_MAP_NEW_ANON, new, m, K.L_PTE, 0, 1):
            return RC_ERROR
        pex[fs[new, K.F_OFF]] = 1
        t = table_get(glob, tb, ptf, hk, hv, m, vpn >> po, True)
        s = vpn & ((np.int64(1) << po) - 1)
        ptf[t, s] = new
        ptp[t, s] = 0
        ptw[t, s] = PW if vm[v, V_WRITE] else 0
        tb[t, TB_NPTE] += 1
        tb[t, TB_HASPT] = 1
        if not put(cfg, glob, opt, fs, pmc, tr, src, 1):
            return RC_ERROR
        glob[G_COPY] += 1
        return RC_OK
    if write:  # do_shared_fault(): the page-cache folio mapped writable and dirty, no fault-around
        f = pagecache_folio(glob, opt, fs, pmc, pex, pct, tr, fc, pcs, fid, index, vstart, vend, pgoff, vpn)
        ok = finish_fault(cfg, opt, glob, fs, pmc, tb, ptf, ptp, ptw, hk, hv, ms, vm, tr, fc, m, v, vpn, f, True)
        return RC_OK if ok else RC_ERROR
    if not fault_around(cfg, opt, glob, fs, pmc, tb, ptf, ptp, ptw, hk, hv, ms, vm, tr, fc, pcs, m, v, vpn):
        return RC_ERROR
    if pte_at(glob, tb, ptf, hk, hv, m, vpn, po) == NONE:
        f = pagecache_folio(glob, opt, fs, pmc, pex, pct, tr, fc, pcs, fid, index, vstart, vend, pgoff, vpn)
        if not finish_fault(cfg, opt, glob, fs, pmc, tb, ptf, ptp, ptw, hk, hv, ms, vm, tr, fc, m, v, vpn, f, False):
            return RC_ERROR
    return RC_OK


@jit_inline  # inlined: a call passes ~20 arrays, each 7-9 words
def file_fault(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
               ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, tr: Any, cow: Any, fc: Any, pcs: Any, m: int, v: int,
               vpn: int, write: bool, unshare: bool) -> int:
    """``handle_mm_fault()`` where no PTE is present in a file or shmem mapping: :func:`do_file_fault`, then the
    new PTE unshared at once when asked (a shared mapping is never unshared)."""
    rc = do_file_fault(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, tr, fc, pcs, m, v, vpn,
                       write)
    if rc != RC_OK or not unshare:
        return rc
    po = cfg[K.C_PMD_ORDER]
    t = table_get(glob, tb, ptf, hk, hv, m, vpn >> po, False)
    s = vpn & ((np.int64(1) << po) - 1)
    if t < 0 or ptf[t, s] == NONE:
        return RC_OK
    return do_wp_page(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, ms, vm, tr, cow, m, v, vpn, t, s, True)


# ----------------------------------------------------------------------------- entry points
@sjit
def access(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
           ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, fc: Any, pcs: Any,
           ops: Any, first: int, faults: Any) -> tuple[int, int]:
    """Run access ops ``first..`` (rows of ``ops``: mm, start vpn, pages, write, fill byte or -1, unshare).

    Reads fault where nothing is mapped, writes where nothing writable is mapped (Machine.read()/write());
    a write with a fill byte stores it in every page's content, and the store sets the PTE's dirty bit; fill -2 is
    a GUP fault (no store). With the fast oracle (``O_ORACLE``) every access first checks that the page reads what
    this MM last wrote there (``pexp``, per PTE slot), and every store must hit an AnonExclusive page.
    Every fault taken is appended to ``faults`` (row: op index, vpn) for the caller's user_faults.
    Column 5's bits above bit 0 (unshare), when not 0, are ``(v + 1) << A_VMA_SHIFT``: the caller found VMA row
    ``v`` holding the whole range and checked its protection, in this same call's state (run-trace's recorded
    faults), so neither lookup is made again. Returns (rc, op index reached).
    """
    po = cfg[K.C_PMD_ORDER]
    mask = (np.int64(1) << po) - 1
    nf = 0
    oracle = opt[O_ORACLE] != 0
    for i in range(first, ops.shape[0]):
        m = ops[i, 0]
        start = ops[i, 1]
        end = start + ops[i, 2]
        write = ops[i, 3] != 0
        fill = ops[i, 4]
        unshare = (ops[i, 5] & 1) != 0
        v0 = (ops[i, 5] >> A_VMA_SHIFT) - 1  # the VMA at ``start``: the caller's, else the check's first
        if v0 < 0 and fill != -2 and start < end:  # Machine._access_check(): every page mapped with the access's
            v = find_vma(ms, vm, mv, m, start)    # protection, else SIGSEGV
            v0 = v
            segv = False
            while True:
                if v < 0 or not vm[v, V_WRITE if write else V_READ]:
                    segv = True
                    break
                if vm[v, V_END] >= end:
                    break
                v = find_vma(ms, vm, mv, m, vm[v, V_END])
            if segv:
                glob[G_SEGV] += 1
                continue
        vpn = start
        tidx = -1  # the PMD index of table slot ``t``: only a fault changes which slot (mm, index) has, if any
        t = -1
        while vpn < end:
            v = v0 if vpn == start and v0 >= 0 else find_vma(ms, vm, mv, m, vpn)
            vend = vm[v, V_END] if vm[v, V_END] < end else end
            while vpn < vend:
                if vpn >> po != tidx:  # a run of pages in one table looks the table up once
                    tidx = vpn >> po
                    t = table_get(glob, tb, ptf, hk, hv, m, tidx, False)
                s = vpn & mask
                need = unshare
                if t < 0:
                    need = True
                elif tb[t, TB_PMDF] != NONE:
                    need = need or (write and not tb[t, TB_PMDW])
                elif ptf[t, s] == NONE:
                    need = True
                else:
                    need = need or (write and not ptw[t, s] & PW)
                if need:
                    if not room(glob, opt, fs, pmc, tb, hk, tr, cow, 2, 2 << po, 2, 64 + opt[O_FAULT_AROUND]) or \
                            nf >= faults.shape[0]:
                        ops[i, 1] = vpn
                        ops[i, 2] = end - vpn
                        glob[G_NGATHER] = nf
                        return RC_ROOM, i
                    faults[nf, 0] = i
                    faults[nf, 1] = vpn
                    nf += 1
                    rc = fault(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, tr, cow, fc, pcs,
                               m, v, vpn, write, unshare)
                    if rc != RC_OK:
                        ops[i, 1] = vpn
                        ops[i, 2] = end - vpn
                        glob[G_NGATHER] = nf
                        return rc, i
                    t = table_get(glob, tb, ptf, hk, hv, m, vpn >> po, False)
                if fill == -2:  # a GUP fault: no store
                    vpn += 1
                    continue
                if tb[t, TB_PMDF] != NONE:
                    f = tb[t, TB_PMDF]
                    page = s
                    ok = tb[t, TB_PMDW] != 0
                else:
                    f = ptf[t, s]
                    page = ptp[t, s]
                    ok = ptw[t, s] & PW != 0
                anon_vma = vm[v, V_FILE] < 0  # the fast oracle checks anonymous memory only
                if oracle and anon_vma:  # the page reads what this MM last wrote there (0: never written)
                    got = 0 if f < 0 else pct[fs[f, K.F_OFF] + page]
                    if got != pexp[t, s]:
                        glob[G_ERR] = E_ISOLATION
                        glob[G_ERRF] = vpn
                        glob[G_NGATHER] = nf
                        return RC_ERROR, i
                if write:
                    ptw[t, s] |= PD if tb[t, TB_PMDF] == NONE else 0
                    head = 0 if tb[t, TB_PMDF] != NONE else page  # a PMD's AnonExclusive is the head page's
                    if not ok or f < 0 or (oracle and anon_vma and not pex[fs[f, K.F_OFF] + head]):
                        glob[G_ERR] = E_WRITE_RO
                        glob[G_ERRF] = vpn
                        glob[G_NGATHER] = nf
                        return RC_ERROR, i
                    if fill >= 0:
                        pct[fs[f, K.F_OFF] + page] = fill
                        if oracle:
                            pexp[t, s] = fill
                vpn += 1
    glob[G_NGATHER] = nf
    return RC_OK, ops.shape[0]


#: the step of the page-table loops that index with unsigned integers: numba then leaves out the negative-index
#: wraparound (a sign test and an add per access, and the arrays' shapes kept live), a third of a PTE's instructions
#: in fork's and zap's runs of small folios (their indices are never negative)
_U1 = np.uint64(1)


@sjit
def batch(fs: Any, sf: Any, sp: Any, s: int, vpn: int, end: int, po: int) -> int:
    """``folio_pte_batch()``: consecutive PTEs mapping consecutive pages of one folio, in one page table (its rows
    ``sf``, ``sp``; entry ``s`` maps ``vpn``)."""
    f = int(sf[s])
    if f < 0 or fs[f, K.F_ORDER] == 0:
        return 1
    page = int(sp[s])
    limit = ((vpn >> po) + 1) << po
    if end < limit:
        limit = end
    last = vpn + (np.int64(1) << fs[f, K.F_ORDER]) - page
    if last < limit:
        limit = last
    n = limit - vpn
    if n <= 1:
        return 1
    u = np.uint64(s)
    un = np.uint64(n)
    k = _U1  # unsigned indices (:data:`_U1`)
    while k < un and sf[u + k] == f and sp[u + k] == page + np.int64(k):
        k += _U1
    return int(np.int64(k))


#: :func:`batch` inlined into fork_copy and zap
_batch_i = jit_inline(getattr(batch, "py_func", batch))


@jit_inline
def pte_span(tb: Any, t: int, start: int, end: int, po: int, width: int) -> tuple[int, int, int]:
    """(first VPN of table ``t``, first VPN of ``[start, end)`` in it, the end of that run in it)."""
    base = tb[t, TB_IDX] << po
    vpn = start if start > base else base
    hi = base + width
    if end < hi:
        hi = end
    return base, vpn, hi


@jit_inline
def _small_page0(fs: Any, f: int, page: int) -> bool:
    """Whether a present PTE (folio ``f``, ``page``) maps page 0 of a small folio, i.e. whether a run of small folios
    (:func:`_zap_small_run`, :func:`_dup_small_run`) takes it."""
    return f >= 0 and fs[f, K.F_ORDER] == 0 and page == 0


@jit_inline
def _put_or_gather(fs: Any, gather: Any, ng: int, f: int, nr: int) -> int:
    """The ``nr`` references a zap drops from folio ``f`` (mmu_gather): dropped at once when that cannot free it
    (more are held: the gathered folio_put_refs() would only count down, and nothing reads the count before the
    flush), else gathered for the flush (:func:`zap`'s end) in order, so the folios are freed as before. The gather
    rows in use after it."""
    if fs[f, X_REF] > nr:
        fs[f, X_REF] -= nr
        return ng
    gather[ng, 0] = f
    gather[ng, 1] = nr
    return ng + 1


@sjit
def _zap_small_run(opt: Any, glob: Any, fs: Any, pmc: Any, tr: Any, sf: Any, sp: Any, sw: Any, m: int, base: int,
                   vpn: int, hi: int, gather: Any, ng: int, rec: bool) -> tuple[int, int, int]:
    """:func:`zap` over a run of small folios' PTEs (the table's rows ``sf``, ``sp``, ``sw``) from ``vpn`` (holes
    skipped), up to the first other entry or ``hi``: each one's ``__folio_remove_rmap()`` of its page inlined, its
    put gathered (:func:`_put_or_gather`). (VPN reached, gather rows, PTEs zapped); the caller counts the PTEs once.
    One flat loop indexed with unsigned integers (:data:`_U1`)."""
    n = 0
    s = np.uint64(vpn - base)
    stop = np.uint64(hi - base)
    while s < stop:
        f = int(sf[s])
        if f == NONE:
            s += _U1
            continue
        if f < 0 or sp[s] != 0:  # not page 0 of a small folio (_small_page0())
            break
        u = np.uint64(f)
        if fs[u, K.F_ORDER] != 0:
            break
        sf[s] = NONE
        sw[s] = 0
        off = np.uint64(fs[u, K.F_OFF])
        pmc[off] = K._wrap32(pmc[off] - 1)
        if rec:
            record(glob, opt, tr, K.K_UNMAP, m, fs[u, X_NAME], 0, K.L_PTE, 0, 1)
        ng = _put_or_gather(fs, gather, ng, int(u), 1)  # numba's int() keeps it unsigned
        n += 1
        s += _U1
    return int(np.int64(s)) + base, ng, n


@sjit
def _dup_small_run(opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, tr: Any, sf: Any, sp: Any, sw: Any, df: Any,
                   dp: Any, dw: Any, dst: int, base: int, vpn: int, hi: int, cow_mapping: bool,
                   rec: bool) -> tuple[int, int]:
    """:func:`fork_copy` over a run of small folios' PTEs (the source table's rows ``sf``, ``sp``, ``sw``, the
    child's ``df``, ``dp``, ``dw``) from ``vpn`` (holes skipped), up to the first other entry or ``hi``: each one's
    get, ``__folio_dup_file/anon_rmap()`` of its page and install inlined. Only when the source MM never pinned
    pages (no early copy possible). (VPN reached, PTEs copied); the caller counts them once. One flat loop indexed
    with unsigned integers (:data:`_U1`)."""
    n = 0
    s = np.uint64(vpn - base)
    stop = np.uint64(hi - base)
    while s < stop:
        f = int(sf[s])
        if f == NONE:
            s += _U1
            continue
        if f < 0 or sp[s] != 0:  # not page 0 of a small folio (_small_page0())
            break
        u = np.uint64(f)
        if fs[u, K.F_ORDER] != 0:
            break
        off = np.uint64(fs[u, K.F_OFF])
        fs[u, X_REF] += 1
        if fs[u, X_KIND] == KIND_ANON:
            pex[off] = 0
        pmc[off] = K._wrap32(pmc[off] + 1)
        if rec:
            record(glob, opt, tr, K.K_DUP, dst, fs[u, X_NAME], 0, K.L_PTE, 0, 1)
        w = sw[s]
        if cow_mapping:  # write-protect both sides; the child keeps the dirty bit
            w &= PW_CLEAR
            sw[s] = w
            dw[s] = w & PD
        else:
            dw[s] = w & PW
        df[s] = f
        dp[s] = 0
        n += 1
        s += _U1
    return int(np.int64(s)) + base, n


@sjit
def zap(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
        ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, scr: Any, m: int,
        ranges: Any, gather: Any) -> int:
    """``_zap()`` over each ``[start, end)`` of ``ranges`` in turn, then ``_flush()`` (tlb_finish_mmu()).

    A small folio's PTE unmap (``__folio_remove_rmap()`` of one page) and the puts that free nothing are inlined:
    a compiled call costs ~10 ns per array argument, most of a small page's unmap. A PTE-mapped folio's references
    are dropped at once when that frees nothing (:func:`_put_or_gather`; a child's exit frees almost nothing), the
    rest at the end in gather order (the folios freed, and the trace, as with every put at the end).
    """
    po = cfg[K.C_PMD_ORDER]
    rec = opt[O_RECORD] != 0
    ng = 0
    for r in range(ranges.shape[0]):
        start = ranges[r, 0]
        end = ranges[r, 1]
        if end <= start:
            continue
        ntabs = mm_tables(glob, tb, hk, hv, m, start >> po, (end - 1) >> po, scr)
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
                    if not rmap(cfg, glob, opt, fs, pmc, ms, tr, K.K_UNMAP, f, m, K.L_PMD, 0, 1):
                        return RC_ERROR
                    gather[ng, 0] = f
                    gather[ng, 1] = 1
                    ng += 1
            elif not split_pmd(cfg, opt, glob, fs, pmc, pex, tb, ptf, ptp, ptw, ms, tr, m, t):
                return RC_ERROR
        for t in tabs:
            if opt[O_ORACLE]:  # the private pages revert to zero (ReferenceMemory.unmap()/dontneed())
                base = tb[t, TB_IDX] << po
                for vpn in range(max(start, base), min(end, base + ptf.shape[1])):
                    pexp[t, vpn - base] = 0
            if not tb[t, TB_HASPT] or tb[t, TB_NPTE] == 0:
                continue
            base, vpn, hi = pte_span(tb, t, start, end, po, ptf.shape[1])
            sf, sp, sw = ptf[t], ptp[t], ptw[t]  # the table's rows
            while vpn < hi:
                s = vpn - base
                f = int(sf[s])
                if f == NONE:
                    vpn += 1
                    continue
                page = int(sp[s])
                if _small_page0(fs, f, page):
                    vpn, ng, n = _zap_small_run(opt, glob, fs, pmc, tr, sf, sp, sw, m, base, vpn, hi, gather, ng,
                                                rec)
                    tb[t, TB_NPTE] -= n
                    glob[G_RMAP] += n
                    ms[m, MS_NMAP] -= n
                    continue
                nr = _batch_i(fs, sf, sp, s, vpn, end, po)
                for k in range(np.uint64(s), np.uint64(s + nr)):
                    sf[k] = NONE
                    sw[k] = 0
                tb[t, TB_NPTE] -= nr
                if f >= 0:
                    if not _unmap_ptes(cfg, glob, opt, fs, pmc, ms, tr, f, m, page, nr):
                        return RC_ERROR
                    ng = _put_or_gather(fs, gather, ng, f, nr)
                vpn += nr
    for g in range(ng):
        f = gather[g, 0]
        if fs[f, X_REF] > gather[g, 1]:  # folio_put_refs() that frees nothing
            fs[f, X_REF] -= gather[g, 1]
        elif not put(cfg, glob, opt, fs, pmc, tr, f, gather[g, 1]):
            return RC_ERROR
    return RC_OK


@jit_inline
def install(sw: Any, df: Any, dp: Any, dw: Any, s: int, nr: int, f: int, page: int, cow_mapping: bool) -> None:
    """``__copy_present_ptes()`` of the ``nr`` PTEs from entry ``s`` of the parent's table (rows ``sw``: they map
    pages ``page``.. of folio ``f``, as :func:`batch` found): write-protect both sides in a CoW mapping (the child
    keeps the dirty bit), then set the child's PTEs (rows ``df``, ``dp``, ``dw``)."""
    u = np.uint64(s)  # unsigned indices (:data:`_U1`)
    e = np.uint64(s + nr)
    if cow_mapping:
        for k in range(u, e):
            w = sw[k] & PW_CLEAR
            sw[k] = w
            dw[k] = w & PD
    else:
        for k in range(u, e):
            dw[k] = sw[k] & PW
    for k in range(u, e):
        df[k] = f
        dp[k] = page + np.int64(k - u)


@sjit
def fork_copy(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
              ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, scr: Any, src: int,
              dst: int, vrows: Any) -> int:
    """``copy_page_range()`` for each VMA row of ``vrows`` (foliosim.vm.fork): PMDs first, then PTEs.

    A small folio's PTE copy (get, ``__folio_dup_file/anon_rmap()`` of one page, install) is inlined when the
    source MM never pinned pages (no early copy possible): a compiled call costs ~10 ns per array argument.
    """
    po = cfg[K.C_PMD_ORDER]
    rec = opt[O_RECORD] != 0
    src_pinned = ms[src, MS_PINNED] != 0
    for v in vrows:
        start = vm[v, V_START]
        end = vm[v, V_END]
        vwrite = vm[v, V_WRITE]
        cow_mapping = vm[v, V_SHARED] == 0
        ntabs = mm_tables(glob, tb, hk, hv, src, start >> po, (end - 1) >> po, scr)
        tabs = scr[0, :ntabs]
        for t in tabs:  # copy_huge_pmd()
            f = tb[t, TB_PMDF]
            if f == NONE:
                continue
            idx = tb[t, TB_IDX]
            if f == HUGE_ZERO:
                dt = table_get(glob, tb, ptf, hk, hv, dst, idx, True)
                tb[dt, TB_PMDF] = HUGE_ZERO
                tb[dt, TB_PMDW] = 0
                continue
            get(fs, f, 1)
            off = fs[f, K.F_OFF]
            if pex[off] and src_pinned and maybe_dma_pinned(cfg, fs, f):
                if not put(cfg, glob, opt, fs, pmc, tr, f, 1):
                    return RC_ERROR
                if not split_pmd(cfg, opt, glob, fs, pmc, pex, tb, ptf, ptp, ptw, ms, tr, src, t):
                    return RC_ERROR
                continue
            pex[off] = 0
            if not rmap(cfg, glob, opt, fs, pmc, ms, tr, K.K_DUP, f, dst, K.L_PMD, 0, 1):
                return RC_ERROR
            tb[t, TB_PMDW] = 0
            dt = table_get(glob, tb, ptf, hk, hv, dst, idx, True)
            tb[dt, TB_PMDF] = f
            tb[dt, TB_PMDW] = 0
        prealloc = False
        for t in tabs:  # the PTEs, in address order
            if not tb[t, TB_HASPT] or tb[t, TB_NPTE] == 0:
                continue
            idx = tb[t, TB_IDX]
            base, vpn, hi = pte_span(tb, t, start, end, po, ptf.shape[1])
            sf, sp, sw = ptf[t], ptp[t], ptw[t]  # the parent's table's rows
            dt = -1
            df, dp, dw = sf, sp, sw  # the child's, once it has the table
            while vpn < hi:
                s = vpn - base
                f = int(sf[s])
                if f == NONE:
                    vpn += 1
                    continue
                if dt < 0:
                    dt = table_get(glob, tb, ptf, hk, hv, dst, idx, True)
                    tb[dt, TB_HASPT] = 1
                    df, dp, dw = ptf[dt], ptp[dt], ptw[dt]
                if f == ZERO_SLOT:
                    df[s] = ZERO_SLOT
                    dp[s] = 0
                    dw[s] = 0
                    tb[dt, TB_NPTE] += 1
                    vpn += 1
                    continue
                page = int(sp[s])
                if not src_pinned and _small_page0(fs, f, page):
                    vpn, n = _dup_small_run(opt, glob, fs, pmc, pex, tr, sf, sp, sw, df, dp, dw, dst, base, vpn, hi,
                                            cow_mapping, rec)
                    glob[G_RMAP] += n
                    ms[dst, MS_NMAP] += n
                    tb[dt, TB_NPTE] += n
                    continue
                off = fs[f, K.F_OFF]
                anon = fs[f, X_KIND] == KIND_ANON
                if not prealloc and fs[f, K.F_ORDER] > 0:  # a batch of a large folio
                    nr = _batch_i(fs, sf, sp, s, vpn, end, po)
                    fs[f, X_REF] += nr
                    if anon:
                        if src_pinned and maybe_dma_pinned(cfg, fs, f):
                            excl = False
                            for k in range(nr):
                                if pex[off + page + k]:
                                    excl = True
                            if excl:
                                if not put(cfg, glob, opt, fs, pmc, tr, f, nr):
                                    return RC_ERROR
                                prealloc = True
                                continue
                        for k in range(np.uint64(off + page), np.uint64(off + page + nr)):
                            pex[k] = 0
                    if not _dup_ptes(cfg, glob, opt, fs, pmc, ms, tr, f, dst, page, nr):
                        return RC_ERROR
                    install(sw, df, dp, dw, s, nr, f, page, cow_mapping)
                    tb[dt, TB_NPTE] += nr
                    vpn += nr
                    continue
                get(fs, f, 1)
                if anon and src_pinned and maybe_dma_pinned(cfg, fs, f) and pex[off + page]:
                    if not put(cfg, glob, opt, fs, pmc, tr, f, 1):
                        return RC_ERROR
                    if not prealloc:
                        prealloc = True
                        continue
                    # copy_present_page(): the child gets its own copy now
                    new = alloc(glob, opt, fs, pmc, pex, pct, tr, KIND_ANON, 0, pct[off + page])
                    if not rmap(cfg, glob, opt, fs, pmc, ms, tr, K.K_MAP_NEW_ANON, new, dst, K.L_PTE, 0, 1):
                        return RC_ERROR
                    pex[fs[new, K.F_OFF]] = 1
                    ptf[dt, s] = new
                    ptp[dt, s] = 0
                    ptw[dt, s] = PW if vwrite else 0
                    tb[dt, TB_NPTE] += 1
                    glob[G_EARLY] += 1
                    prealloc = False
                    vpn += 1
                    continue
                if anon:
                    pex[off + page] = 0
                if not rmap(cfg, glob, opt, fs, pmc, ms, tr, K.K_DUP, f, dst, K.L_PTE, page, 1):
                    return RC_ERROR
                install(sw, df, dp, dw, s, 1, f, page, cow_mapping)
                tb[dt, TB_NPTE] += 1
                vpn += 1
        if opt[O_ORACLE]:  # ReferenceMemory.fork(): the child's view starts as the parent's
            for t in tabs:
                base = tb[t, TB_IDX] << po
                dt = hfind(hk, hv, _hkey(dst, tb[t, TB_IDX]))
                if dt < 0:
                    continue
                for vpn in range(max(start, base), min(end, base + ptf.shape[1])):
                    pexp[dt, vpn - base] = pexp[t, vpn - base]
    return RC_OK


@sjit
def change_protection(cfg: Any, glob: Any, fs: Any, pex: Any, tb: Any, ptf: Any, ptp: Any, ptw: Any, hk: Any, hv: Any,
                      m: int, start: int, end: int, vwrite: bool, upgrade: bool, scr: Any) -> None:
    """``Machine._change_protection()`` for a private mapping: drop write bits, or restore them on exclusive anon
    pages (can_change_pte_writable())."""
    po = cfg[K.C_PMD_ORDER]
    ntabs = mm_tables(glob, tb, hk, hv, m, start >> po, (end - 1) >> po, scr)
    tabs = scr[0, :ntabs]
    for t in tabs:
        f = tb[t, TB_PMDF]
        if f != NONE:
            if not vwrite:
                tb[t, TB_PMDW] = 0
            elif upgrade and f >= 0 and fs[f, X_KIND] == KIND_ANON and pex[fs[f, K.F_OFF]]:
                tb[t, TB_PMDW] = 1
    for t in tabs:
        if not tb[t, TB_HASPT]:
            continue
        base = tb[t, TB_IDX] << po
        lo = start if start > base else base
        hi = base + ptf.shape[1]
        if end < hi:
            hi = end
        for vpn in range(lo, hi):
            s = vpn - base
            f = ptf[t, s]
            if f == NONE:
                continue
            if not vwrite:
                ptw[t, s] &= PW_CLEAR
            elif upgrade and f >= 0 and fs[f, X_KIND] == KIND_ANON and pex[fs[f, K.F_OFF] + ptp[t, s]]:
                ptw[t, s] |= PW


@sjit
def lookup(cfg: Any, glob: Any, tb: Any, ptf: Any, ptp: Any, ptw: Any, hk: Any, hv: Any, m: int,
           vpn: int) -> tuple[int, int, int, int]:
    """``Machine.lookup()``: (folio slot or ZERO/HUGE_ZERO or NONE, page, writable, by PMD)."""
    po = cfg[K.C_PMD_ORDER]
    t = hfind(hk, hv, _hkey(m, vpn >> po))
    if t < 0:
        return NONE, 0, 0, 0
    s = vpn & ((np.int64(1) << po) - 1)
    if tb[t, TB_PMDF] != NONE:
        return tb[t, TB_PMDF], s, tb[t, TB_PMDW], 1
    if ptf[t, s] == NONE:
        return NONE, 0, 0, 0
    return ptf[t, s], ptp[t, s], ptw[t, s] & PW, 0


@sjit
def free_tables(glob: Any, tb: Any, hk: Any, pexp: Any, ts: Any) -> None:
    for t in ts:
        table_free(glob, tb, hk, pexp, t)


@sjit
def rehash(glob: Any, tb: Any, hk: Any, hv: Any, ntb: int) -> None:
    """Fill an empty hash table from the live table slots."""
    glob[G_HUSED] = 0
    for t in range(ntb):
        if tb[t, TB_LIVE]:
            hinsert(glob, hk, hv, _hkey(tb[t, TB_MM], tb[t, TB_IDX]), t)


@sjit
def split_pmd_at(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
                 ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, m: int, idx: int) -> int:
    """``Machine.split_pmd()`` of MM ``m``'s PMD at index ``idx`` (a no-op without one)."""
    t = hfind(hk, hv, _hkey(m, idx))
    if t < 0 or tb[t, TB_PMDF] == NONE:
        return RC_OK
    return RC_OK if split_pmd(cfg, opt, glob, fs, pmc, pex, tb, ptf, ptp, ptw, ms, tr, m, t) else RC_ERROR


# ----------------------------------------------------------------------------- MADV_COLD/PAGEOUT and folio split
@jit_inline
def unmap_plain(cfg: Any, glob: Any, opt: Any, fs: Any, pmc: Any, ms: Any, tr: Any, f: int, m: int, level: int,
                page: int, nr: int) -> bool:
    """An unmap as ``Machine._record()`` makes it directly (no deferred-split queueing): the folio split's."""
    mm_id = ms[m, MS_ID]
    nr_pages = np.int64(1) << fs[f, K.F_ORDER]
    if not K._precheck_ok(cfg, fs, f, page, nr_pages if level == K.L_PMD else nr, mm_id, level):
        glob[G_ERR] = E_RMAP
        glob[G_ERRF] = fs[f, X_NAME]
        return False
    glob[G_RMAP] += 1
    K._remove_rmap(cfg, fs, pmc, f, page, nr, mm_id, level)
    ms[m, MS_NMAP] -= nr if level == K.L_PTE else 1
    if level == K.L_PMD:
        record(glob, opt, tr, K.K_UNMAP, m, fs[f, X_NAME], 0, level, 0, 1)
    else:
        record(glob, opt, tr, K.K_UNMAP, m, fs[f, X_NAME], 0, level, page, nr)
    return True


@sjit
def split_folio(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
                ptw: Any, hk: Any, hv: Any, ms: Any, tr: Any, scr2: Any, ent: Any, f: int) -> tuple[int, int]:
    """``split_folio()`` to order 0 (foliosim.vm.split): (0 or -errno, slot of page 0's piece). The caller holds a
    reference on ``f``; on success it moves to page 0's piece."""
    po = cfg[K.C_PMD_ORDER]
    order = fs[f, K.F_ORDER]
    if order == 0 or not fs[f, K.F_LIVE]:
        return -22, -1
    mc = mapcount(fs, pmc, f)
    anon = fs[f, X_KIND] == KIND_ANON
    if anon and mc == 0:
        return -16, -1
    cache = 0 if anon else np.int64(1) << order  # a page-cache folio: the page cache's references
    if mc != fs[f, X_REF] - 1 - cache:  # can_split_folio(): nothing but the mappings, the caller and the cache
        return -11, -1
    off = fs[f, K.F_OFF]
    nr = np.int64(1) << order
    ne = 0
    for m in range(ms.shape[0]):  # unmap_folio(): every MM in creation order, its PMDs, then its PTEs
        if not ms[m, MS_LIVE]:
            continue
        n = mm_tables(glob, tb, hk, hv, m, 0, np.int64(1) << 40, scr2)
        for j in range(n):
            t = scr2[0, j]
            if tb[t, TB_PMDF] != f:
                continue
            write = tb[t, TB_PMDW]
            excl = pex[off]
            pex[off] = 0
            tb[t, TB_PMDF] = NONE
            tb[t, TB_PMDW] = 0
            tb[t, TB_HASPT] = 1
            if not unmap_plain(cfg, glob, opt, fs, pmc, ms, tr, f, m, K.L_PMD, 0, 1):
                return -1, -1
            if not put(cfg, glob, opt, fs, pmc, tr, f, 1):
                return -1, -1
            glob[G_PMDSPLIT] += 1
            base = tb[t, TB_IDX] << po
            for k in range(nr):
                ent[ne, 0] = m
                ent[ne, 1] = base + k
                ent[ne, 2] = k
                ent[ne, 3] = write
                ent[ne, 4] = 1 if (write or excl) else 0
                ne += 1
        for j in range(n):
            t = scr2[0, j]
            if not tb[t, TB_HASPT] or tb[t, TB_NPTE] == 0:
                continue
            base = tb[t, TB_IDX] << po
            for s in range(ptf.shape[1]):
                if ptf[t, s] != f:
                    continue
                page = ptp[t, s]
                write = 1 if ptw[t, s] & PW else 0
                excl = pex[off + page]
                pex[off + page] = 0
                ent[ne, 0] = m
                ent[ne, 1] = base + s
                ent[ne, 2] = page
                ent[ne, 3] = write
                ent[ne, 4] = 1 if (write or excl) else 0
                ne += 1
                ptf[t, s] = NONE
                ptw[t, s] = 0
                tb[t, TB_NPTE] -= 1
                if not unmap_plain(cfg, glob, opt, fs, pmc, ms, tr, f, m, K.L_PTE, page, 1):
                    return -1, -1
                if fs[f, X_REF] > 1:  # a put that frees nothing, inlined
                    fs[f, X_REF] -= 1
                elif not put(cfg, glob, opt, fs, pmc, tr, f, 1):
                    return -1, -1
    if fs[f, X_REF] != 1 + cache:
        glob[G_ERR] = E_REFCOUNT
        glob[G_ERRF] = fs[f, X_NAME]
        return -1, -1
    kind = fs[f, X_KIND]
    fs[f, X_REF] = 1
    if not put(cfg, glob, opt, fs, pmc, tr, f, 1):  # the freeze: the old folio is freed
        return -1, -1
    for k in range(nr):  # __split_unmapped_folio(): one order-0 folio per page, page k keeping its contents
        scr2[0, k] = alloc(glob, opt, fs, pmc, pex, pct, tr, kind, 0, pct[off + k])
        glob[G_ALLOC + kind * ALLOC_ORDERS] -= 1  # a piece, not an allocation (Machine.new_folio())
        if not anon:
            get(fs, scr2[0, k], 1)  # folio_ref_unfreeze(1 + 1): the page cache's reference
    if anon:  # remap_page(RMP_USE_SHARED_ZEROPAGE): piece by piece, each piece's entries in entry order
        for k in range(nr):  # the entries of each page linked (in entry order) through their page column
            scr2[1, k] = -1
        for e in range(ne - 1, -1, -1):
            k = ent[e, 2]
            ent[e, 2] = scr2[1, k]
            scr2[1, k] = e
        rec = opt[O_RECORD] != 0
        for k in range(nr):
            piece = scr2[0, k]
            poff = fs[piece, K.F_OFF]
            e = scr2[1, k]
            while e >= 0:
                m = ent[e, 0]
                vpn = ent[e, 1]
                t = hfind(hk, hv, _hkey(m, vpn >> po))
                s = vpn - ((vpn >> po) << po)
                if pct[poff] == 0:  # try_to_map_unused_to_zeropage()
                    ptf[t, s] = ZERO_SLOT
                    ptp[t, s] = 0
                    ptw[t, s] = 0
                else:  # get, and the order-0 piece's __folio_add_rmap() of its page, inlined (rmap())
                    fs[piece, X_REF] += 1
                    glob[G_RMAP] += 1
                    pmc[poff] = K._wrap32(pmc[poff] + 1)
                    ms[m, MS_NMAP] += 1
                    if rec:
                        record(glob, opt, tr, K.K_MAP, m, fs[piece, X_NAME], 0, K.L_PTE, 0, 1)
                    if ent[e, 4]:
                        pex[poff] = 1
                    ptf[t, s] = piece
                    ptp[t, s] = 0
                    ptw[t, s] = PW if ent[e, 3] else 0
                tb[t, TB_NPTE] += 1
                e = ent[e, 2]
    glob[G_FSPLIT] += 1
    for k in range(1, nr):
        piece = scr2[0, k]
        if fs[piece, X_REF] > 1:  # a put that frees nothing, inlined
            fs[piece, X_REF] -= 1
        elif not put(cfg, glob, opt, fs, pmc, tr, piece, 1):
            return -1, -1
    return 0, scr2[0, 0]


@sjit
def _has_entire_mc(cfg: Any, fs: Any, f: int) -> bool:
    order = fs[f, K.F_ORDER]
    return order >= 1 and (cfg[K.C_IS64] != 0 or order > 1)


@sjit
def _cold_split(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
                ptw: Any, hk: Any, hv: Any, ms: Any, tr: Any, cow: Any, scr2: Any, ent: Any, f: int) -> int:
    """``_split()`` of foliosim.vm.fault: folio_get(), split_folio(), folio_put() of the holder; 0 or -errno;
    -2: no room for the pieces (nothing changed)."""
    nr = np.int64(1) << fs[f, K.F_ORDER]
    ents = mapcount(fs, pmc, f)  # one migration entry per PTE mapping, nr per PMD mapping
    if _has_entire_mc(cfg, fs, f):
        ents += (fs[f, K.F_ENTIRE] + 1) * nr
    if ents > ent.shape[0] or nr > scr2.shape[1] or \
            not room(glob, opt, fs, pmc, tb, hk, tr, cow, nr + 2, nr + 2, 0, 3 * ents + 2 * nr + 8):
        return -2
    get(fs, f, 1)
    err, piece = split_folio(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, tr, scr2, ent, f)
    if err == -1:
        return -1
    if not put(cfg, glob, opt, fs, pmc, tr, piece if err == 0 else f, 1):
        return -1
    glob[G_MADV + 1 if err else G_MADV + 2] += 1  # skip (split failed) or split
    return err


@sjit
def cold_pageout(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any,
                 ptp: Any, ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, scr: Any,
                 scr2: Any, ent: Any, m: int, ranges: Any, first: int) -> int:
    """``madvise_cold_or_pageout_pte_range()`` over each ``[lo, hi)`` of ``ranges`` (one per VMA, anonymous
    private memory): take, skip or split each folio as foliosim.vm.fault.madvise_cold_pageout() decides."""
    po = cfg[K.C_PMD_ORDER]
    for r in range(first, ranges.shape[0]):
        lo = ranges[r, 0]
        hi = ranges[r, 1]
        n = mm_tables(glob, tb, hk, hv, m, lo >> po, (hi - 1) >> po, scr)
        for j in range(n):
            t = scr[0, j]
            if tb[t, TB_PMDF] == NONE and not tb[t, TB_HASPT]:
                continue  # the page walk skips pmd_none() slots
            base = tb[t, TB_IDX] << po
            a = lo if lo > base else base
            b = base + ptf.shape[1]
            if hi < b:
                b = hi
            f = tb[t, TB_PMDF]
            if f != NONE:  # _cold_pmd()
                if f == HUGE_ZERO:
                    continue
                if maybe_shared(fs, pmc, f):
                    glob[G_MADV + 1] += 1
                    continue
                if b - a != ptf.shape[1]:
                    err = _cold_split(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, tr, cow,
                                      scr2, ent, f)
                    if err == -2:  # resume here once the caller made room
                        ranges[r, 0] = a
                        glob[G_NGATHER] = r
                        return RC_ROOM
                    if err == -1:
                        return RC_ERROR
                    if err != 0:
                        continue
                else:
                    glob[G_MADV] += 1
                    continue
            vpn = a  # _cold_ptes()
            while vpn < b:
                s = vpn - base
                f = ptf[t, s]
                if f == NONE or f < 0:
                    vpn += 1
                    continue
                nr = 1
                order = fs[f, K.F_ORDER]
                if order:
                    page = ptp[t, s]
                    limit = b - vpn
                    if (np.int64(1) << order) - page < limit:
                        limit = (np.int64(1) << order) - page
                    while nr < limit and ptf[t, s + nr] == f and ptp[t, s + nr] == page + nr:
                        nr += 1
                    if nr < (np.int64(1) << order):
                        if maybe_shared(fs, pmc, f):
                            glob[G_MADV + 1] += 1
                        else:
                            err = _cold_split(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, tr,
                                              cow, scr2, ent, f)
                            if err == -2:
                                ranges[r, 0] = vpn
                                glob[G_NGATHER] = r
                                return RC_ROOM
                            if err == -1:
                                return RC_ERROR
                            if err == 0:
                                continue  # the same address again, now an order-0 folio (or none)
                        vpn += nr
                        continue
                if mapcount(fs, pmc, f) != (np.int64(1) << order):
                    glob[G_MADV + 1] += 1
                else:
                    glob[G_MADV] += 1
                vpn += nr
    return RC_OK
