"""numba kernels: the v6.15 rmap and owner-tracking updates over folio state in arrays.

Each function here mirrors one function of the reference model and must stay
bit-identical to it (tests/test_fast_differential.py checks every field of
every folio after every operation, for 64/32-bit and with/without per-page
mapcounts):

- :func:`_owner_add` / :func:`_owner_sub`: :func:`foliosim.owner.folio_add_return_large_mapcount`
  and :func:`foliosim.owner.folio_sub_return_large_mapcount` (include/linux/rmap.h);
- :func:`_sanity_ok`: :func:`foliosim.owner.large_mapcount_sanity_failure`;
- :func:`_precheck_ok`: :func:`foliosim.rmap.rmap_precheck`;
- :func:`_add_rmap`, :func:`_dup_rmap`, :func:`_remove_rmap`, :func:`_add_new_anon`:
  ``__folio_add_rmap()``, the fork-time dup, ``__folio_remove_rmap()`` and
  ``folio_add_new_anon_rmap()`` (mm/rmap.c) as :mod:`foliosim.rmap` models them;
- :func:`apply_op`: :meth:`foliosim.system.RmapSystem.apply`, validation included,
  but only as a yes/no: a rejected operation changes nothing and the caller asks
  the reference model for the reason.

State layout (built by :class:`foliosim.fast.state.FastState`): ``fs[f, F_*]``
holds folio ``f``'s scalar fields (raw kernel values, as the reference stores
them; the ``_mm_ids`` word is kept as its two ids and the shared bit, the lock
bit being always clear between operations), ``pmc`` every page's raw
``_mapcount`` at ``fs[f, F_OFF] + page``, ``ms[m, M_*]`` each MM, and the ground
truth ``tpte[m, page]``, ``tpmd[m, f]``, ``ttot[m, f]`` and ``agg[page]`` (PTE
mappings of a page over all MMs). Counters are int64 in ``fs``/``ms`` and
int32 per page; the per-page ground-truth counters are int32, so a trace would
need more than 2**31 mappings of one page by one MM to overflow them.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from foliosim.fast._jit import jit, jit_inline

# Folio columns of ``fs``.
(F_LIVE, F_ORDER, F_OFF, F_LARGE, F_ENTIRE, F_NPM, F_ID0, F_ID1, F_MMC0, F_MMC1,
 F_SHARED, F_PMDS, F_SEQ, F_CAP) = range(14)
F_COLS = 14
# MM columns of ``ms``.
M_LIVE, M_ID, M_NRMAP = range(3)
M_COLS = 3
# Configuration vector ``cfg``.
C_IS64, C_PAGE_MC, C_PMD_ORDER, C_MM_ID_MAX, C_MC_MAX, C_MAX_ORDER = range(6)
C_LEN = 6
# Allocator/scalar vector ``glob``.
G_LOWEST_FREE, G_SEQ = range(2)
G_LEN = 2

# Operation codes (foliosim.trace.columnar.KINDS) and levels.
K_MM_NEW, K_MM_FREE, K_FOLIO_NEW, K_FOLIO_FREE, K_MAP_NEW_ANON, K_MAP, K_DUP, K_UNMAP, K_RAW = range(9)
L_PTE, L_PMD = 0, 1

ENTIRELY_MAPPED = 0x800000

# OwnerEvent values (foliosim.owner.OwnerEvent); -1: no owner update.
EV_NONE = -1
EV_SET, EV_ADD_SLOT0, EV_ADD_SLOT1, EV_ADD_OVERFLOW0, EV_ADD_OVERFLOW1 = 0, 1, 2, 3, 4
EV_TAKE_SLOT0, EV_TAKE_SLOT0_SHARED, EV_TAKE_SLOT1, EV_ADD_UNTRACKED = 5, 6, 7, 8
EV_SUB_KEEP, EV_SUB_FREED_CLEAR, EV_SUB_FREED_KEEP = 9, 10, 11
EV_SUB_UNTRACKED_CLEAR, EV_SUB_UNTRACKED_KEEP = 12, 13

# Record columns written by :func:`replay_loop` when recording.
(R_KIND, R_FOLIO, R_MM, R_EVENT, R_MMID, R_ORDER, R_LARGE, R_ENTIRE, R_NPM, R_ID0, R_ID1,
 R_MMC0, R_MMC1, R_SHARED, R_PAGES, R_MMS, R_NMMS) = range(17)
R_COLS = 17

# replay_loop stop reasons.
STOP_END, STOP_REJECTED, STOP_BUFFER = 0, 1, 2

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
U8 = npt.NDArray[np.uint8]
I8 = npt.NDArray[np.int8]


@jit_inline
def _wrap32(x: int) -> int:
    """``int`` (and ``atomic_t``) two's complement wrap, like :data:`foliosim.cint.S32`."""
    x = int(x) & 0xFFFFFFFF  # int(): plain-Python runs may pass numpy int32 scalars
    if x >= 0x80000000:
        x -= 0x100000000
    return x


@jit_inline
def _wrap_mc(x: int, is64: int) -> int:
    """The per-MM mapcount's type: ``int`` on 64-bit, ``short`` on 32-bit."""
    if is64:
        return _wrap32(x)
    x = int(x) & 0xFFFF
    if x >= 0x8000:
        x -= 0x10000
    return x


@jit_inline
def _has_entire(order: int, is64: int) -> bool:
    """:meth:`foliosim.kconfig.KernelConfig.has_entire_mapcount`."""
    return order >= 1 and (is64 != 0 or order > 1)


@jit_inline
def _sanity_ok(cfg: I64, fs: I64, f: int, diff: int, mm_id: int) -> bool:
    """No check of ``__folio_large_mapcount_sanity_checks()`` fires (the lock is never held here)."""
    order = fs[f, F_ORDER]
    if order == 0 or diff <= 0:
        return False
    if mm_id < 1 or mm_id > cfg[C_MM_ID_MAX]:
        return False
    nr_pages = np.int64(1) << order
    if diff > nr_pages or nr_pages - 1 > cfg[C_MC_MAX]:
        return False
    for idx in range(2):
        slot_id = fs[f, F_ID0 + idx]
        count = fs[f, F_MMC0 + idx]
        if slot_id == 0 and count != -1:
            return False
        if slot_id != 0 and count < 0:
            return False
    return not (fs[f, F_LARGE] + 1 < 1 and fs[f, F_SHARED] != 0)


@jit_inline
def _precheck_ok(cfg: I64, fs: I64, f: int, page: int, nr: int, mm_id: int, level: int) -> bool:
    """``rmap_precheck()`` passes."""
    order = fs[f, F_ORDER]
    nr_pages = np.int64(1) << order
    if nr <= 0 or page < 0 or page + nr > nr_pages:
        return False
    if level == L_PMD and (order == 0 or not _has_entire(order, cfg[C_IS64])):
        return False
    if order > 0:
        diff = 1 if level == L_PMD else nr
        return _sanity_ok(cfg, fs, f, diff, mm_id)
    return True


@jit_inline
def _owner_add(cfg: I64, fs: I64, f: int, diff: int, mm_id: int) -> tuple[int, int]:
    """``folio_add_return_large_mapcount()``: (new logical large mapcount, event)."""
    is64 = cfg[C_IS64]
    new_val = _wrap32(fs[f, F_LARGE] + diff)
    fs[f, F_LARGE] = new_val
    event = EV_ADD_UNTRACKED
    if fs[f, F_ID0] == mm_id or fs[f, F_ID1] == mm_id:
        idx = 0 if fs[f, F_ID0] == mm_id else 1
        count = _wrap_mc(fs[f, F_MMC0 + idx] + diff, is64)
        event = EV_ADD_SLOT0 + idx
        if is64 == 0 and count < 0:  # the 32-bit short overflowed
            count = -1
            fs[f, F_ID0 + idx] = 0
            fs[f, F_SHARED] = 1
            event = EV_ADD_OVERFLOW0 + idx
        fs[f, F_MMC0 + idx] = count
    elif fs[f, F_ID0] == 0:
        fs[f, F_ID0] = mm_id
        fs[f, F_MMC0] = _wrap_mc(diff - 1, is64)
        event = EV_TAKE_SLOT0
        if new_val != diff - 1:
            fs[f, F_SHARED] = 1
            event = EV_TAKE_SLOT0_SHARED
    elif fs[f, F_ID1] == 0:
        fs[f, F_ID1] = mm_id
        fs[f, F_MMC1] = _wrap_mc(diff - 1, is64)
        fs[f, F_SHARED] = 1
        event = EV_TAKE_SLOT1
    return new_val + 1, event


@jit_inline
def _owner_sub(cfg: I64, fs: I64, f: int, diff: int, mm_id: int) -> tuple[int, int]:
    """``folio_sub_return_large_mapcount()``: (new logical large mapcount, event)."""
    is64 = cfg[C_IS64]
    new_val = _wrap32(fs[f, F_LARGE] - diff)
    fs[f, F_LARGE] = new_val
    freed = False
    for idx in range(2):
        if fs[f, F_ID0 + idx] == mm_id:
            count = _wrap_mc(fs[f, F_MMC0 + idx] - diff, is64)
            if count >= 0:
                fs[f, F_MMC0 + idx] = count
                return new_val + 1, EV_SUB_KEEP
            fs[f, F_MMC0 + idx] = -1
            fs[f, F_ID0 + idx] = 0
            freed = True
            break
    if fs[f, F_MMC0] == new_val or fs[f, F_MMC1] == new_val:
        fs[f, F_SHARED] = 0
        return new_val + 1, (EV_SUB_FREED_CLEAR if freed else EV_SUB_UNTRACKED_CLEAR)
    return new_val + 1, (EV_SUB_FREED_KEEP if freed else EV_SUB_UNTRACKED_KEEP)


@jit_inline
def _add_new_anon(cfg: I64, fs: I64, pmc: I32, f: int, mm_id: int) -> int:
    """``folio_add_new_anon_rmap()`` (validated by the caller); returns the event."""
    order = fs[f, F_ORDER]
    off = fs[f, F_OFF]
    nr_pages = np.int64(1) << order
    if order == 0:
        pmc[off] = 0
        return EV_NONE
    if order < cfg[C_PMD_ORDER]:
        if cfg[C_PAGE_MC]:
            for p in range(nr_pages):
                pmc[off + p] = 0
        fs[f, F_LARGE] = _wrap32(nr_pages - 1)
        fs[f, F_MMC0] = _wrap_mc(nr_pages - 1, cfg[C_IS64])
        fs[f, F_ID0] = mm_id
        if cfg[C_PAGE_MC]:
            fs[f, F_NPM] = nr_pages
        return EV_SET
    fs[f, F_ENTIRE] = 0
    fs[f, F_LARGE] = 0
    fs[f, F_MMC0] = 0
    fs[f, F_ID0] = mm_id
    if cfg[C_PAGE_MC]:
        fs[f, F_NPM] = ENTIRELY_MAPPED
    return EV_SET


@jit_inline
def _add_rmap(cfg: I64, fs: I64, pmc: I32, f: int, page: int, nr: int, mm_id: int, level: int) -> int:
    """``__folio_add_rmap()``; returns the owner event."""
    order = fs[f, F_ORDER]
    off = fs[f, F_OFF]
    if order == 0:
        pmc[off] = _wrap32(pmc[off] + 1)
        return EV_NONE
    if level == L_PTE:
        if cfg[C_PAGE_MC]:
            first = 0
            for p in range(off + page, off + page + nr):
                v = _wrap32(pmc[p] + 1)
                pmc[p] = v
                if v == 0:
                    first += 1
            if first:
                fs[f, F_NPM] = _wrap32(fs[f, F_NPM] + first)
        return _owner_add(cfg, fs, f, nr, mm_id)[1]
    entire = _wrap32(fs[f, F_ENTIRE] + 1)
    fs[f, F_ENTIRE] = entire
    if cfg[C_PAGE_MC] and entire == 0:
        fs[f, F_NPM] = _wrap32(fs[f, F_NPM] + ENTIRELY_MAPPED)
    return _owner_add(cfg, fs, f, 1, mm_id)[1]


@jit_inline
def _dup_rmap(cfg: I64, fs: I64, pmc: I32, f: int, page: int, nr: int, mm_id: int, level: int) -> int:
    """Fork-time dup (``__folio_dup_file_rmap()`` / ``__folio_try_dup_anon_rmap()`` counting)."""
    order = fs[f, F_ORDER]
    off = fs[f, F_OFF]
    if order == 0:
        pmc[off] = _wrap32(pmc[off] + 1)
        return EV_NONE
    if level == L_PTE:
        if cfg[C_PAGE_MC]:
            for p in range(off + page, off + page + nr):
                pmc[p] = _wrap32(pmc[p] + 1)
        return _owner_add(cfg, fs, f, nr, mm_id)[1]
    fs[f, F_ENTIRE] = _wrap32(fs[f, F_ENTIRE] + 1)
    return _owner_add(cfg, fs, f, 1, mm_id)[1]


@jit_inline
def _remove_rmap(cfg: I64, fs: I64, pmc: I32, f: int, page: int, nr: int, mm_id: int, level: int) -> int:
    """``__folio_remove_rmap()``; returns the owner event."""
    order = fs[f, F_ORDER]
    off = fs[f, F_OFF]
    if order == 0:
        pmc[off] = _wrap32(pmc[off] - 1)
        return EV_NONE
    if level == L_PTE:
        if not cfg[C_PAGE_MC]:
            return _owner_sub(cfg, fs, f, nr, mm_id)[1]
        event = _owner_sub(cfg, fs, f, nr, mm_id)[1]  # large mapcount first, then the pages
        last = 0
        for p in range(off + page, off + page + nr):
            v = _wrap32(pmc[p] - 1)
            pmc[p] = v
            if v < 0:
                last += 1
        if last:
            fs[f, F_NPM] = _wrap32(fs[f, F_NPM] - last)
        return event
    if not cfg[C_PAGE_MC]:
        fs[f, F_ENTIRE] = _wrap32(fs[f, F_ENTIRE] - 1)  # entire mapcount first without page mapcounts
        return _owner_sub(cfg, fs, f, 1, mm_id)[1]
    event = _owner_sub(cfg, fs, f, 1, mm_id)[1]
    entire = _wrap32(fs[f, F_ENTIRE] - 1)
    fs[f, F_ENTIRE] = entire
    if entire < 0:
        fs[f, F_NPM] = _wrap32(fs[f, F_NPM] - ENTIRELY_MAPPED)
    return event


@jit_inline
def _remove_rmap_partial(cfg: I64, fs: I64, pmc: I32, f: int, page: int, nr: int, mm_id: int, level: int) -> bool:
    """``__folio_remove_rmap()`` (:func:`_remove_rmap`) returning ``RmapResult.partially_mapped`` of the reference:
    whether an anon folio is now to be queued for deferred split. Used by the compiled process simulator."""
    _remove_rmap(cfg, fs, pmc, f, page, nr, mm_id, level)
    order = fs[f, F_ORDER]
    if order == 0:
        return False
    nr_pages = np.int64(1) << order
    total = fs[f, F_LARGE] + 1
    if level == L_PTE:
        if not cfg[C_PAGE_MC]:
            return bool(total != 0 and total < nr_pages and fs[f, F_ENTIRE] + 1 == 0)
        off = fs[f, F_OFF]
        last = 0
        for p in range(off + page, off + page + nr):
            if pmc[p] < 0:
                last += 1
        return bool(last > 0 and fs[f, F_NPM] < ENTIRELY_MAPPED and fs[f, F_NPM] != 0)
    if not cfg[C_PAGE_MC]:
        return bool(total != 0 and fs[f, F_ENTIRE] < 0 and total < nr_pages)
    if fs[f, F_ENTIRE] < 0:
        mapped = fs[f, F_NPM]
        if mapped < ENTIRELY_MAPPED:
            unmapped = nr_pages - (mapped & (ENTIRELY_MAPPED - 1))
            return bool(0 < unmapped < nr_pages)
    return False


@jit_inline
def _free_check_ok(cfg: I64, fs: I64, pmc: I32, f: int) -> bool:
    """No check of :func:`foliosim.system.free_page_check_failure` fires."""
    order = fs[f, F_ORDER]
    off = fs[f, F_OFF]
    if order == 0:
        return bool(pmc[off] == -1)
    if fs[f, F_LARGE] + 1 != 0:
        return False
    if cfg[C_PAGE_MC] and fs[f, F_NPM] != 0:
        return False
    if fs[f, F_MMC0] != -1 or fs[f, F_MMC1] != -1:
        return False
    if _has_entire(order, cfg[C_IS64]) and fs[f, F_ENTIRE] + 1 != 0:
        return False  # the pincount is never raised by rmap operations
    for p in range(off, off + (np.int64(1) << order)):  # noqa: SIM110 - a plain loop for numba
        if pmc[p] != -1:
            return False
    return True


@jit_inline
def _truth_pte(agg: I32, tpte: I32, ttot: I64, ms: I64, f: int, m: int, start: int, nr: int, step: int) -> None:
    """:meth:`foliosim.truth.FolioTruth.add_ptes` / ``remove_ptes`` plus the MM's mapping count."""
    for p in range(start, start + nr):
        tpte[m, p] += step
        agg[p] += step
    ttot[m, f] += step * nr
    ms[m, M_NRMAP] += step * nr


@jit_inline
def _truth_pmd(fs: I64, tpmd: I32, ttot: I64, ms: I64, f: int, m: int, step: int) -> None:
    tpmd[m, f] += step
    fs[f, F_PMDS] += step
    ttot[m, f] += step
    ms[m, M_NRMAP] += step


@jit_inline
def apply_op(cfg: I64, glob: I64, fs: I64, ms: I64, id_used: U8, pmc: I32, agg: I32, tpte: I32,
             tpmd: I32, ttot: I64, kind: int, f: int, m: int, level: int, page: int, nr: int,
             order: int) -> int:
    """Apply one operation as :meth:`foliosim.system.RmapSystem.apply` does.

    Returns the owner event (``EV_NONE`` when there is none), or -2 when the
    reference rejects the operation; then nothing has changed.
    """
    if kind == K_MM_NEW:
        if ms[m, M_LIVE]:
            return -2
        mm_id = glob[G_LOWEST_FREE]
        while mm_id < id_used.shape[0] and id_used[mm_id]:
            mm_id += 1
        if mm_id > cfg[C_MM_ID_MAX]:
            return -2  # every id taken: -ENOSPC
        id_used[mm_id] = 1
        glob[G_LOWEST_FREE] = mm_id + 1
        ms[m, M_LIVE] = 1
        ms[m, M_ID] = mm_id
        ms[m, M_NRMAP] = 0
        return EV_NONE
    if kind == K_MM_FREE:
        if not ms[m, M_LIVE] or ms[m, M_NRMAP] != 0:
            return -2
        mm_id = ms[m, M_ID]
        id_used[mm_id] = 0
        if mm_id < glob[G_LOWEST_FREE]:
            glob[G_LOWEST_FREE] = mm_id
        ms[m, M_LIVE] = 0
        return EV_NONE
    if kind == K_FOLIO_NEW:
        if fs[f, F_LIVE] or order < 0 or order > cfg[C_MAX_ORDER]:
            return -2
        nr_pages = np.int64(1) << order
        if nr_pages > fs[f, F_CAP]:
            return -3  # the state was sized for a smaller folio: caller bug
        off = fs[f, F_OFF]
        for p in range(off, off + nr_pages):
            pmc[p] = -1
        fs[f, F_LIVE] = 1
        fs[f, F_ORDER] = order
        fs[f, F_LARGE] = -1
        fs[f, F_ENTIRE] = -1
        fs[f, F_NPM] = 0
        fs[f, F_ID0] = 0
        fs[f, F_ID1] = 0
        fs[f, F_MMC0] = -1
        fs[f, F_MMC1] = -1
        fs[f, F_SHARED] = 0
        fs[f, F_PMDS] = 0
        fs[f, F_SEQ] = glob[G_SEQ]
        glob[G_SEQ] += 1
        return EV_NONE
    if kind == K_FOLIO_FREE:
        if not fs[f, F_LIVE] or not _free_check_ok(cfg, fs, pmc, f):
            return -2
        fs[f, F_LIVE] = 0
        # The folio's ground truth goes with it (the MMs' counts stay, as in the reference).
        off = fs[f, F_OFF]
        nr_pages = np.int64(1) << fs[f, F_ORDER]
        for mm in range(tpte.shape[0]):
            if ttot[mm, f] != 0:
                for p in range(off, off + nr_pages):
                    agg[p] -= tpte[mm, p]
                    tpte[mm, p] = 0
                tpmd[mm, f] = 0
                ttot[mm, f] = 0
        fs[f, F_PMDS] = 0
        return EV_NONE
    if kind == K_RAW or f < 0 or m < 0 or not fs[f, F_LIVE] or not ms[m, M_LIVE]:
        return -2
    mm_id = ms[m, M_ID]
    folio_order = fs[f, F_ORDER]
    off = fs[f, F_OFF]
    if kind == K_MAP_NEW_ANON:
        mapcount = fs[f, F_LARGE] + 1 if folio_order > 0 else pmc[off] + 1
        if mapcount >= 1:
            return -2
        for mm in range(ttot.shape[0]):
            if ttot[mm, f] != 0:
                return -2
        want = L_PMD if folio_order >= cfg[C_PMD_ORDER] else L_PTE
        nr_pages = np.int64(1) << folio_order
        if level != want or not _precheck_ok(cfg, fs, f, 0, nr_pages, mm_id, level):
            return -2
        if folio_order > 0 and (fs[f, F_ID0] != 0 or fs[f, F_ID1] != 0):
            return -2
        event = _add_new_anon(cfg, fs, pmc, f, mm_id)
        if level == L_PMD:
            _truth_pmd(fs, tpmd, ttot, ms, f, m, 1)
        else:
            _truth_pte(agg, tpte, ttot, ms, f, m, off, nr_pages, 1)
        return event
    if level == L_PMD:
        page = 0
        nr = np.int64(1) << folio_order
    if not _precheck_ok(cfg, fs, f, page, nr, mm_id, level):
        return -2
    if kind == K_MAP:
        event = _add_rmap(cfg, fs, pmc, f, page, nr, mm_id, level)
    elif kind == K_DUP:
        if level == L_PTE:
            for p in range(off + page, off + page + nr):
                if agg[p] <= 0:
                    return -2
        elif fs[f, F_PMDS] <= 0:
            return -2
        event = _dup_rmap(cfg, fs, pmc, f, page, nr, mm_id, level)
    else:  # K_UNMAP
        if level == L_PTE:
            for p in range(off + page, off + page + nr):
                if tpte[m, p] <= 0:
                    return -2
        elif tpmd[m, f] <= 0:
            return -2
        event = _remove_rmap(cfg, fs, pmc, f, page, nr, mm_id, level)
        if level == L_PMD:
            _truth_pmd(fs, tpmd, ttot, ms, f, m, -1)
        else:
            _truth_pte(agg, tpte, ttot, ms, f, m, off + page, nr, -1)
        return event
    if level == L_PMD:
        _truth_pmd(fs, tpmd, ttot, ms, f, m, 1)
    else:
        _truth_pte(agg, tpte, ttot, ms, f, m, off + page, nr, 1)
    return event


@jit
def replay_loop(cfg: I64, glob: I64, fs: I64, ms: I64, id_used: U8, pmc: I32, agg: I32, tpte: I32,
                tpmd: I32, ttot: I64, kind: U8, folio: I32, mm: I32, level: U8, page: I32, nr: I32,
                order: I8, start: int, end: int, record: bool, rec: I64, pagebuf: I32, mmbuf: I32) -> tuple[int, int]:
    """Apply operations ``start..end-1``; returns (index reached, stop reason).

    Stops at the first rejected operation (``STOP_REJECTED``, index of that
    operation, nothing applied for it). With ``record``, row ``i - start`` of
    ``rec`` describes the state after operation ``i`` (see ``R_*``), with the
    folio's raw page mapcounts in ``pagebuf`` and the indices of the MMs that
    map it in ``mmbuf``; when either buffer or ``rec`` is full it stops early
    with ``STOP_BUFFER``.
    """
    npages = 0
    nmms = 0
    n_mm_names = ms.shape[0]
    for i in range(start, end):
        k = int(kind[i])
        f = int(folio[i])
        m = int(mm[i])
        if record:
            row = i - start
            if row >= rec.shape[0]:
                return i, STOP_BUFFER
            # The caller sizes the buffers for at least one record of the largest folio.
            if f >= 0 and (npages + fs[f, F_CAP] > pagebuf.shape[0] or nmms + n_mm_names > mmbuf.shape[0]):
                return i, STOP_BUFFER
        event = apply_op(cfg, glob, fs, ms, id_used, pmc, agg, tpte, tpmd, ttot, k, f, m,
                         int(level[i]), int(page[i]), int(nr[i]), int(order[i]))
        if event < -1:
            return i, STOP_REJECTED
        if record:
            r = rec[i - start]
            r[R_KIND] = k
            r[R_FOLIO] = f
            r[R_MM] = m
            r[R_EVENT] = event
            if k == K_MM_NEW or k == K_MM_FREE:  # noqa: SIM109 - scalar compares for numba
                r[R_MMID] = ms[m, M_ID]
                continue
            r[R_ORDER] = fs[f, F_ORDER]
            r[R_LARGE] = fs[f, F_LARGE]
            r[R_ENTIRE] = fs[f, F_ENTIRE]
            r[R_NPM] = fs[f, F_NPM]
            r[R_ID0] = fs[f, F_ID0]
            r[R_ID1] = fs[f, F_ID1]
            r[R_MMC0] = fs[f, F_MMC0]
            r[R_MMC1] = fs[f, F_MMC1]
            r[R_SHARED] = fs[f, F_SHARED]
            off = fs[f, F_OFF]
            cnt = np.int64(1) << fs[f, F_ORDER]
            r[R_PAGES] = npages
            for p in range(cnt):
                pagebuf[npages + p] = pmc[off + p]
            npages += cnt
            r[R_MMS] = nmms
            c = 0
            for mmi in range(n_mm_names):
                if ttot[mmi, f] != 0:
                    mmbuf[nmms + c] = mmi
                    c += 1
            r[R_NMMS] = c
            nmms += c
    return end, STOP_END
