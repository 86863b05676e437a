"""Files, shmem objects and shared mappings on the compiled process simulator, over the same arrays.

The page cache (which folio caches which file page) is a pair of arrays the compiled kernels read and write
(:class:`PageCache`); faults in file and shmem mappings are finished by the compiled fault loop
(:func:`foliosim.fast.sim.kern.do_file_fault`: mm/memory.c do_read_fault() with fault-around, do_cow_fault(),
do_shared_fault(), finish_fault(); wp_page_shared() in ``kern.do_wp_page``). What stays here is the control
plane's view of the same arrays: files, the page cache's Python API, the reference view's privatization (a
scenario run hands its copy-on-write faults in private file mappings back to :func:`service` for it), mprotect of
shared mappings and the page cache after folio splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from foliosim.fast import kernels as K
from foliosim.fast.sim import kern
from foliosim.fast.sim import layout as L
from foliosim.system import Op
from foliosim.vm.events import OracleViolation
from foliosim.vm.pagecache import SimFile
from foliosim.vm.vma import Vma

if TYPE_CHECKING:
    from foliosim.fast.sim.engine import FastMachine, FastMM


@dataclass(slots=True)
class PageCache:
    """The fast engine's page cache: per file (its number, ``V_FILE``) a row of :attr:`fc` (layout ``FC_*``) and
    one folio slot (or -1) per page in :attr:`pcs`; a cached folio's file and first index are its ``X_PCFILE`` /
    ``X_PCIDX`` columns. The compiled kernels use the same arrays."""

    fc: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros((8, L.FC_COLS), dtype=np.int64))
    pcs: npt.NDArray[np.int32] = field(default_factory=lambda: np.full(64, -1, dtype=np.int32))
    files: list[SimFile] = field(default_factory=list)  # file number -> file
    ids: dict[str, int] = field(default_factory=dict)  # file name -> file number
    used: int = 0  # entries of pcs in use

    def add_file(self, file: SimFile, content: int) -> None:
        """A new file whose disk pages read content id ``content`` (the fast engine never writes a disk)."""
        fid = len(self.files)
        if fid == self.fc.shape[0]:
            self.fc = np.concatenate([self.fc, np.zeros_like(self.fc)])
        if self.used + file.nr_pages > self.pcs.shape[0]:
            grown = np.full(max(2 * self.pcs.shape[0], self.used + file.nr_pages), -1, dtype=np.int32)
            grown[:self.used] = self.pcs[:self.used]
            self.pcs = grown
        kind = L.KIND_SHMEM if file.shmem else L.KIND_FILE
        self.fc[fid] = (self.used, file.nr_pages, file.order, kind, int(file.anon), content)
        self.used += file.nr_pages
        self.files.append(file)
        self.ids[file.name] = fid

    def lookup(self, file: SimFile, index: int) -> int:
        """The folio slot caching page ``index`` of ``file``, or -1."""
        return int(self.pcs[int(self.fc[self.ids[file.name], L.FC_BASE]) + index])

    def file_of(self, fs: npt.NDArray[np.int32], f: int) -> SimFile | None:
        """The file whose page cache holds folio slot ``f`` (None: not a page-cache folio)."""
        fid = int(fs[f, L.X_PCFILE])
        return self.files[fid - 1] if fid else None

    def set(self, fs: npt.NDArray[np.int32], file: SimFile, index: int, f: int) -> None:
        """Folio slot ``f`` caches ``file`` from page ``index`` on (one page per folio page)."""
        fid = self.ids[file.name]
        base = int(self.fc[fid, L.FC_BASE])
        self.pcs[base + index:base + index + (1 << int(fs[f, K.F_ORDER]))] = f
        fs[f, L.X_PCFILE] = fid + 1
        fs[f, L.X_PCIDX] = index


def create_file(m: FastMachine, file: SimFile, whole: bool) -> None:
    """A new file in the page cache; ``whole``: cached whole at once (a shmem object: ``Machine.create_file()``)."""
    m.pcache.add_file(file, m.content_id(file.disk[0]) if file.nr_pages else 0)
    if not whole:
        return
    fid = m.pcache.ids[file.name]
    index = 0
    while index < file.nr_pages:
        first, order = (int(x) for x in kern.cache_range(m.fs, m.pcache.fc, m.pcache.pcs, fid, index, 0, -1, 0, 0))
        m.ensure(folios=2, pages=2 << order, trace=8)
        kern.add_to_cache(m.glob, m.opt, m.fs, m.pmc, m.pex, m.pct, m.tr, m.pcache.fc, m.pcache.pcs, fid, first,
                          order)
        m._drain()
        index = first + (1 << order)


def service(m: FastMachine, ops: np.ndarray, i: int, task: str | None, drain: bool = True) -> None:
    """Finish the copy-on-write fault in a private file mapping the compiled loop handed back at op ``i`` (its
    current page; only with ``O_HANDBACK``, when the reference view is kept): the reference view privatizes the
    page first (ReferenceMemory.privatize()), then the compiled ``file_fault()`` does the fault and this the
    access itself (the store of :func:`foliosim.fast.sim.kern.access`), and moves the op past the page so the loop
    resumes after it. The loop counted the fault and listed it. ``drain``: move the trace rows and CoW decisions
    out (decisions named for ``task``).
    """
    m.glob[L.G_ERR] = 0
    mm = m.mms[f"mm{int(ops[i, 0])}"]
    vpn = int(ops[i, 1])
    write = bool(ops[i, 3])
    fill = int(ops[i, 4])
    unshare = bool(ops[i, 5])
    vma = mm.find_vma(vpn)
    assert vma is not None and vma.file is not None and write and not vma.shared
    m.ref.privatize(mm, vma, vpn)  # type: ignore[arg-type]
    m.ensure(folios=4, pages=2 << m.po, trace=64 + int(m.opt[L.O_FAULT_AROUND]), cows=4)
    rc = kern.file_fault(m.cfg, m.opt, m.glob, m.fs, m.pmc, m.pex, m.pct, m.tb, m.ptf, m.ptp, m.ptw, m.hk, m.hv, m.ms,
                         m.vm, m.tr, m.cow, m.pcache.fc, m.pcache.pcs, mm.num, mm.rowmap[id(vma)], vpn, True, unshare)
    m._check_rc(int(rc))
    if fill != -2:  # the access itself: the store (whole-page fills) and the dirty bit
        t = int(kern.hfind(m.hk, m.hv, (mm.num << 40) | (vpn >> m.po)))
        s = vpn & (m.P - 1)
        f = int(m.ptf[t, s])
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
            m.ptw[t, s] = w & L.PW_CLEAR
        elif upgrade and (vma.maps_writable or (not vma.softdirty_wp and w & L.PD)):
            m.ptw[t, s] = w | L.PW


def split_pieces(m: FastMachine, ops: list[Op]) -> None:
    """The page cache after page-cache folios were split (foliosim.vm.split ``_split_unmapped_folio()``): each
    piece replaces its page's cache entry. A split shows in the rmap trace as the folio's ``folio_free`` followed
    by one ``folio_new`` per page, in page order."""
    n = int(m.glob[L.G_NFOLIO])
    fs = m.fs
    gone = np.flatnonzero((fs[:n, L.X_PCFILE] != 0) & (fs[:n, K.F_LIVE] == 0))
    if not len(gone):
        return
    cached = dict(zip(fs[gone, L.X_NAME].tolist(), gone.tolist(), strict=True))
    live = np.flatnonzero(fs[:n, K.F_LIVE])
    slot_of = dict(zip(fs[live, L.X_NAME].tolist(), live.tolist(), strict=True))
    for i, op in enumerate(ops):
        if op.op != "folio_free" or op.folio is None or int(op.folio[1:]) not in cached:
            continue
        old = cached.pop(int(op.folio[1:]))
        file = m.pcache.file_of(fs, old)
        assert file is not None
        first = int(fs[old, L.X_PCIDX])
        nr = 1 << int(fs[old, K.F_ORDER])
        pieces = [o for o in ops[i + 1:i + 1 + nr] if o.op == "folio_new"]
        if len(pieces) != nr:
            raise OracleViolation(f"fast engine: the split of page-cache folio {op.folio} left {len(pieces)} pieces "
                                  f"in the trace, not {nr}")
        fs[old, L.X_PCFILE] = 0
        for k, piece_op in enumerate(pieces):
            assert piece_op.folio is not None
            m.pcache.set(fs, file, first + k, slot_of[int(piece_op.folio[1:])])
