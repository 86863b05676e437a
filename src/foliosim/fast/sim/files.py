"""Files, shmem objects and shared mappings on the compiled process simulator, over the same arrays.

The page cache (which folio caches which file page) is kept in Python dictionaries; every page-table, folio,
refcount and rmap change goes through the compiled helpers of :mod:`foliosim.fast.sim.kern` (``alloc``, ``get``,
``put``, ``rmap`` -> the shared rmap/owner core of :mod:`foliosim.fast.kernels`). The compiled fault loop hands a
fault in a file or shmem mapping (``U_FILE_FAULT``) and a write fault in a shared mapping (``U_SHARED_WP``) back
to :func:`service`, which finishes it as foliosim.vm.fault ``do_file_fault()`` / foliosim.vm.cow ``do_wp_page()``
do (mm/memory.c do_read_fault() with fault-around, do_cow_fault(), do_shared_fault(), finish_fault(),
wp_page_shared()), then the loop resumes after the faulting page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from foliosim.fast import kernels as K
from foliosim.fast.sim import kern
from foliosim.fast.sim import layout as L
from foliosim.system import Op
from foliosim.vm.events import OracleViolation
from foliosim.vm.fault import fault_around_window
from foliosim.vm.pagecache import SimFile
from foliosim.vm.vma import Vma

if TYPE_CHECKING:
    from foliosim.fast.sim.engine import FastMachine, FastMM


@dataclass(slots=True)
class PageCache:
    """The fast engine's page cache: per file, page index -> folio slot; per cached folio, its file and index."""

    by_file: dict[str, dict[int, int]] = field(default_factory=dict)
    file_of: dict[int, SimFile] = field(default_factory=dict)  # folio slot -> its file
    index_of: dict[int, int] = field(default_factory=dict)  # folio slot -> file index of its page 0
    ids: dict[str, int] = field(default_factory=dict)  # file name -> V_FILE number

    def add_file(self, file: SimFile) -> None:
        self.by_file[file.name] = {}
        self.ids[file.name] = len(self.ids)

    def lookup(self, file: SimFile, index: int) -> int:
        return self.by_file[file.name].get(index, -1)

    def drop(self, f: int) -> None:
        """Folio slot ``f`` left the page cache (split: its pieces replace it)."""
        self.file_of.pop(f, None)
        self.index_of.pop(f, None)


def _check(m: FastMachine, ok: bool) -> None:
    if not ok:
        m._check_rc(L.RC_ERROR)


def cache_range(m: FastMachine, file: SimFile, index: int, vma: Vma | None = None, vpn: int = 0) -> tuple[int, int]:
    """``Machine._cache_range()``: the first index and order of the folio a miss at ``index`` allocates."""
    first, nr = file.folio_range(index)
    if nr != 1 << file.order:
        return index, 0
    if file.anon and nr > 1:
        cached = m.pcache.by_file[file.name]
        clash = any(i in cached for i in range(first, first + nr))
        fits = vma is None or ((vma.start - vma.pgoff) % nr == 0 and vma.start <= vpn - (index - first)
                               and vpn - (index - first) + nr <= vma.end)
        if clash or not fits:
            return index, 0
    return first, file.order


def add_to_cache(m: FastMachine, file: SimFile, first: int, order: int, drain: bool = True) -> int:
    """``Machine._add_to_cache()``: a new page-cache folio holding ``nr_pages`` references (filemap_add_folio()).
    ``drain``: move its trace row out at once (False inside a fault: the caller drains)."""
    kind = L.KIND_SHMEM if file.shmem else L.KIND_FILE
    m.ensure(folios=2, pages=2 << order, trace=8)
    content = m.content_id(file.disk[first])  # the disk is never written: one content for the whole range
    f = int(kern.alloc(m.glob, m.opt, m.fs, m.pmc, m.pex, m.pct, m.tr, kind, order, content))
    for k in range(1, 1 << order):
        m.pct[int(m.fs[f, K.F_OFF]) + k] = m.content_id(file.disk[first + k])
    kern.get(m.fs, f, (1 << order) - 1)
    cached = m.pcache.by_file[file.name]
    for i in range(first, first + (1 << order)):
        cached[i] = f
    m.pcache.file_of[f] = file
    m.pcache.index_of[f] = first
    if drain:
        m._drain()
    return f


def pagecache_folio(m: FastMachine, file: SimFile, index: int, vma: Vma | None = None, vpn: int = 0) -> int:
    """``Machine.pagecache_folio()``: the cached folio for ``index``, read in (allocated for shmem) if absent."""
    f = m.pcache.lookup(file, index)
    if f >= 0:
        return f
    first, order = cache_range(m, file, index, vma, vpn)
    return add_to_cache(m, file, first, order, drain=False)


def _table(m: FastMachine, mm: FastMM, vpn: int) -> int:
    m.ensure(tables=2)
    return int(kern.table_get(m.glob, m.tb, m.ptf, m.hk, m.hv, mm.num, vpn >> m.po, True))


def _pte(m: FastMachine, mm: FastMM, vpn: int) -> int:
    """The folio value of the PTE at ``vpn`` (NONE when empty or no page table)."""
    t = int(kern.hfind(m.hk, m.hv, (mm.num << 40) | (vpn >> m.po)))
    if t < 0:
        return L.NONE
    return int(m.ptf[t, vpn & (m.P - 1)])


def _map_file_ptes(m: FastMachine, mm: FastMM, vpn: int, f: int, page: int, nr: int, writable: bool,
                   dirty: bool) -> None:
    """``_map_file_ptes()``: references first, one batched rmap call, then the PTEs."""
    m.ensure(trace=8)
    kern.get(m.fs, f, nr)
    _check(m, bool(kern.rmap(m.cfg, m.glob, m.opt, m.fs, m.pmc, m.ms, m.tr, K.K_MAP, f, mm.num, K.L_PTE, page, nr)))
    t = _table(m, mm, vpn)
    s = vpn & (m.P - 1)
    bits = (L.PW if writable else 0) | (L.PD if dirty else 0)
    for k in range(nr):
        m.ptf[t, s + k] = f
        m.ptp[t, s + k] = page + k
        m.ptw[t, s + k] = bits
    m.tb[t, L.TB_NPTE] += nr
    m.tb[t, L.TB_HASPT] = 1


def finish_fault(m: FastMachine, mm: FastMM, vma: Vma, vpn: int, f: int, write: bool) -> int:
    """``finish_fault()``: the faulting page, or the whole folio in anonymous shared memory; returns pages mapped."""
    page = vma.file_index(vpn) - m.pcache.index_of[f]
    writable = write or vma.maps_writable
    nr = 1 << int(m.fs[f, K.F_ORDER])
    first = vpn - page
    if nr > 1 and vma.file is not None and vma.file.anon:
        last = first + nr - 1
        if (first >= vma.start and last < vma.end and first >> m.po == last >> m.po
                and all(_pte(m, mm, first + k) == L.NONE for k in range(nr))):
            _map_file_ptes(m, mm, first, f, 0, nr, writable, write)
            m.pycount["fault whole shmem folio"] += 1
            return nr
    _map_file_ptes(m, mm, vpn, f, page, 1, writable, write)
    return 1


def fault_around(m: FastMachine, mm: FastMM, vma: Vma, vpn: int) -> int:
    """``_fault_around()`` (do_fault_around()/filemap_map_pages()): map cached pages near the fault."""
    nr = m.options.fault_around_pages
    if nr <= 1:
        return 0
    file = vma.file
    assert file is not None
    cached = m.pcache.by_file[file.name]
    lo, hi = fault_around_window(vpn, nr, vma, m.po)
    mapped = 0
    cur = lo
    while cur < hi:
        f = cached.get(vma.file_index(cur), -1)
        if f < 0 or _pte(m, mm, cur) != L.NONE:
            cur += 1
            continue
        page = vma.file_index(cur) - m.pcache.index_of[f]
        fnr = 1 << int(m.fs[f, K.F_ORDER])
        run = 1
        while cur + run < hi and _pte(m, mm, cur + run) == L.NONE and page + run < fnr:
            run += 1
        _map_file_ptes(m, mm, cur, f, page, run, vma.maps_writable, False)
        mapped += run
        cur += run
    return mapped


def do_file_fault(m: FastMachine, mm: FastMM, vma: Vma, vpn: int, write: bool) -> None:
    """``do_file_fault()``: do_cow_fault() (private write), do_shared_fault() or do_read_fault()."""
    file = vma.file
    assert file is not None
    index = vma.file_index(vpn)
    if write and not vma.shared:  # do_cow_fault(): a private copy; the page-cache page is not mapped
        src = pagecache_folio(m, file, index)
        if m.keep_reference:
            m.ref.privatize(mm, vma, vpn)  # type: ignore[arg-type]
        m.ensure(folios=2, pages=2, trace=8)
        kern.get(m.fs, src, 1)
        content = int(m.pct[int(m.fs[src, K.F_OFF]) + index - m.pcache.index_of[src]])
        new = int(kern.alloc(m.glob, m.opt, m.fs, m.pmc, m.pex, m.pct, m.tr, L.KIND_ANON, 0, content))
        kern.anon_vma_prepare(m.glob, m.vm, mm.rowmap[id(vma)])
        _check(m, bool(kern.rmap(m.cfg, m.glob, m.opt, m.fs, m.pmc, m.ms, m.tr, K.K_MAP_NEW_ANON, new, mm.num,
                                 K.L_PTE, 0, 1)))
        m.pex[int(m.fs[new, K.F_OFF])] = 1
        t = _table(m, mm, vpn)
        s = vpn & (m.P - 1)
        m.ptf[t, s] = new
        m.ptp[t, s] = 0
        m.ptw[t, s] = L.PW if vma.write else 0
        m.tb[t, L.TB_NPTE] += 1
        m.tb[t, L.TB_HASPT] = 1
        _check(m, bool(kern.put(m.cfg, m.glob, m.opt, m.fs, m.pmc, m.tr, src, 1)))
        m.glob[L.G_COPY] += 1
        return
    if write:  # do_shared_fault(): the page-cache folio mapped writable and dirty, no fault-around
        finish_fault(m, mm, vma, vpn, pagecache_folio(m, file, index, vma, vpn), True)
        return
    fault_around(m, mm, vma, vpn)
    if _pte(m, mm, vpn) == L.NONE:
        finish_fault(m, mm, vma, vpn, pagecache_folio(m, file, index, vma, vpn), False)


def shared_wp(m: FastMachine, mm: FastMM, vpn: int, unshare: bool) -> None:
    """``do_wp_page()`` in a shared mapping: never unshared; wp_page_shared() makes the PTE writable and dirty."""
    if unshare:
        return
    t = int(kern.hfind(m.hk, m.hv, (mm.num << 40) | (vpn >> m.po)))
    s = vpn & (m.P - 1)
    f = int(m.ptf[t, s])
    m.ensure(cows=2)
    kern.decide(m.glob, m.fs, m.pmc, m.cow, mm.num, vpn, f, int(m.ptp[t, s]), K.L_PTE, L.R_SHARED_MAPPING,
                L.OC_WRITABLE, False, m.po)
    m.ptw[t, s] |= L.PW | L.PD


def service(m: FastMachine, ops: np.ndarray, i: int, task: str | None, drain: bool = True) -> None:
    """Finish the fault the compiled loop handed back at op ``i`` (its current page), then the access there.

    The loop counted the fault and listed it; this does the rest of ``handle_mm_fault()`` for that page and the
    access itself (the store of :func:`foliosim.fast.sim.kern.access`), and moves the op past the page so the loop
    resumes after it. ``drain``: move the trace rows and CoW decisions out (decisions named for ``task``); the
    scoring machine drains them itself, fault by fault.
    """
    reason = int(m.glob[L.G_ERR])
    m.glob[L.G_ERR] = 0
    mm = m.mms[f"mm{int(ops[i, 0])}"]
    vpn = int(ops[i, 1])
    write = bool(ops[i, 3])
    fill = int(ops[i, 4])
    unshare = bool(ops[i, 5])
    vma = mm.find_vma(vpn)
    assert vma is not None
    if reason == L.U_FILE_FAULT:
        do_file_fault(m, mm, vma, vpn, write)
        f = _pte(m, mm, vpn)
        if unshare and f != L.NONE and not vma.shared:  # handle_mm_fault(): the new PTE is unshared at once
            t = int(kern.hfind(m.hk, m.hv, (mm.num << 40) | (vpn >> m.po)))
            m.ensure(folios=2, pages=2, trace=8, cows=2)
            rc = kern.do_wp_page(*m.args()[:11], m.ms, m.vm, m.tr, m.cow, mm.num, mm.rowmap[id(vma)], vpn, t,
                                 vpn & (m.P - 1), True)
            m._check_rc(int(rc))
    else:
        shared_wp(m, mm, vpn, unshare)
    if fill != -2:  # the access itself: the store (whole-page fills) and the dirty bit
        t = int(kern.hfind(m.hk, m.hv, (mm.num << 40) | (vpn >> m.po)))
        s = vpn & (m.P - 1)
        f = int(m.ptf[t, s])
        if write:
            m.ptw[t, s] |= L.PD
            if not m.ptw[t, s] & L.PW or f < 0:
                m.glob[L.G_ERR] = L.E_WRITE_RO
                m.glob[L.G_ERRF] = vpn
                m._check_rc(L.RC_ERROR)
            if fill >= 0:
                m.pct[int(m.fs[f, K.F_OFF]) + int(m.ptp[t, s])] = fill
    ops[i, 1] = vpn + 1
    ops[i, 2] -= 1
    if drain:
        privatize_copies(m)
        pending = int(m.glob[L.G_NCOW])
        m._drain([task] * pending if task is not None and pending else None)


def privatize_copies(m: FastMachine) -> None:
    """``ReferenceMemory.privatize()`` for every pending copy of a page-cache page (wp_page_copy() in a private
    file mapping): from now on that MM keeps its own copy."""
    n = int(m.glob[L.G_NCOW])
    if not m.keep_reference:
        return
    for row in m.cow[:n].tolist():
        if row[L.C_OUTCOME] != L.OC_COPY or row[L.C_RULE] != L.R_NOT_ANON:
            continue
        mm = m.mms.get(f"mm{row[L.C_MM]}")
        if mm is None:
            continue
        vma = mm.find_vma(row[L.C_VPN])
        if vma is not None:
            m.ref.privatize(mm, vma, row[L.C_VPN])  # type: ignore[arg-type]


def change_protection_shared(m: FastMachine, mm: FastMM, vma: Vma, upgrade: bool) -> None:
    """``Machine._change_protection()`` for a shared mapping (never PMD-mapped here): every PTE writable without
    write-notify (shmem), else write bits dropped, or restored on dirty PTEs while soft-dirty is not armed."""
    for vpn in m._ptes_in(mm, vma.start, vma.end):
        t = int(kern.hfind(m.hk, m.hv, (mm.num << 40) | (vpn >> m.po)))
        s = vpn & (m.P - 1)
        w = int(m.ptw[t, s])
        if not vma.write:
            m.ptw[t, s] = w & ~L.PW
        elif upgrade and (vma.maps_writable or (not vma.softdirty_wp and w & L.PD)):
            m.ptw[t, s] = w | L.PW


def split_pieces(m: FastMachine, ops: list[Op]) -> None:
    """The page cache after page-cache folios were split (foliosim.vm.split ``_split_unmapped_folio()``): each
    piece replaces its page's cache entry. A split shows in the rmap trace as the folio's ``folio_free`` followed
    by one ``folio_new`` per page, in page order."""
    cached = {int(m.fs[f, L.X_NAME]): f for f in m.pcache.file_of if not m.fs[f, K.F_LIVE]}
    if not cached:
        return
    n = int(m.glob[L.G_NFOLIO])
    live = np.flatnonzero(m.fs[:n, K.F_LIVE])
    slot_of = dict(zip(m.fs[live, L.X_NAME].tolist(), live.tolist(), strict=True))
    for i, op in enumerate(ops):
        if op.op != "folio_free" or op.folio is None or int(op.folio[1:]) not in cached:
            continue
        old = cached.pop(int(op.folio[1:]))
        file = m.pcache.file_of[old]
        first = m.pcache.index_of[old]
        nr = 1 << int(m.fs[old, K.F_ORDER])
        pieces = [o for o in ops[i + 1:i + 1 + nr] if o.op == "folio_new"]
        if len(pieces) != nr:
            raise OracleViolation(f"fast engine: the split of page-cache folio {op.folio} left {len(pieces)} pieces "
                                  f"in the trace, not {nr}")
        m.pcache.drop(old)
        table = m.pcache.by_file[file.name]
        for k, piece_op in enumerate(pieces):
            assert piece_op.folio is not None
            piece = slot_of[int(piece_op.folio[1:])]
            table[first + k] = piece
            m.pcache.file_of[piece] = file
            m.pcache.index_of[piece] = first + k
