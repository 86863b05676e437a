"""The compiled process simulator: :class:`FastMachine`, the reference :class:`foliosim.vm.machine.Machine`'s public
API over arrays, with the page-level hot paths in numba (:mod:`foliosim.fast.sim.kern`).

Tasks, MMs, exec, exit and mremap stay in Python and follow :mod:`foliosim.vm.machine` step by step; mmap, munmap,
mprotect, the VMA-flag madvise verbs and VMA merging run compiled over the VMA rows (:mod:`foliosim.fast.sim.kvma`,
``compiled_vmas=True``; the Python path over the Vma objects remains as its differential reference), the Vma objects
re-made from the rows that changed; faults, copy-on-write, fork's page-table copy, zap and PMD split run compiled and
call the shared rmap/owner kernels of :mod:`foliosim.fast.kernels`. Page contents are
content ids (0..255: a page filled with that byte; larger: an interned page), so the oracle compares integers.

What it does not model raises :class:`Unsupported` before any state changes; callers fall back to the reference.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from foliosim.errors import FoliosimError
from foliosim.fast import kernels as K
from foliosim.fast.sim import files as FF
from foliosim.fast.sim import kern, kfork, kvma
from foliosim.fast.sim import layout as L
from foliosim.fast.state import config_vector
from foliosim.folio import Folio
from foliosim.kconfig import KernelConfig
from foliosim.mmid import MMIdAllocator
from foliosim.rmap import PMD, PTE, RmapLevel
from foliosim.system import Op
from foliosim.vm import mmapops
from foliosim.vm.events import EFAULT, EINVAL, ENOMEM, CowDecision, OracleViolation, SimError
from foliosim.vm.machine import MADVISE, MMAP_BASE, MachineOptions
from foliosim.vm.memory import PAGE_SHIFT, PAGE_SIZE, ZERO_PAGE, SparsePages, filled_page, write_into
from foliosim.vm.oracle import ReferenceMemory
from foliosim.vm.pagecache import SimFile
from foliosim.vm.vma import Vma, VmaList

I64 = npt.NDArray[np.int64]
KIND_NAMES = ("anon", "file", "shmem")
OP_NAMES = {K.K_MM_NEW: "mm_new", K.K_MM_FREE: "mm_free", K.K_FOLIO_NEW: "folio_new", K.K_FOLIO_FREE: "folio_free",
            K.K_MAP_NEW_ANON: "map_new_anon", K.K_MAP: "map", K.K_DUP: "dup", K.K_UNMAP: "unmap"}
UNSUPPORTED_ADVICE: frozenset[str] = frozenset()
#: every init field of a Vma, in order (a fast clone: ``Vma(*_VMA_FIELDS(vma))``)
_VMA_FIELDS = attrgetter(*(f.name for f in fields(Vma) if f.init))
_START, _END = attrgetter("start"), attrgetter("end")  # the sort keys of a sorted VMA list
_OP_FIELDS = ("op", "mm", "folio", "order", "level", "page", "nr")
if tuple(f.name for f in fields(Op)) != _OP_FIELDS:  # pragma: no cover - a developer changed Op
    raise ImportError("foliosim.system.Op's fields changed: update foliosim.fast.sim.engine._new_op()")
_OP_SETTERS = tuple(getattr(Op, name).__set__ for name in _OP_FIELDS)
#: FastMachine._sync() reads an MM with at most this many VMAs one scalar at a time
_SYNC_SCALAR = 16


def _new_op(op: str, mm: str | None, folio: str | None, order: int | None, level: RmapLevel | None, page: int,
            nr: int) -> Op:
    """``Op(op, mm, folio, order, level, page, nr)`` without the frozen dataclass's ``__init__`` (a third of the
    time): the same object, every slot set through its descriptor."""
    new = object.__new__(Op)
    s_op, s_mm, s_folio, s_order, s_level, s_page, s_nr = _OP_SETTERS
    s_op(new, op)
    s_mm(new, mm)
    s_folio(new, folio)
    s_order(new, order)
    s_level(new, level)
    s_page(new, page)
    s_nr(new, nr)
    return new


class Unsupported(FoliosimError):
    """A step the fast engine does not model; nothing was changed. The caller runs the reference engine instead."""


@dataclass(slots=True, eq=False)
class FastMM(VmaList):
    """The Python side of an mm_struct: name, VMAs (reference :class:`Vma` objects) and their array rows."""

    num: int
    mm_id: int
    vmas: list[Vma] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    rowmap: dict[int, int] = field(default_factory=dict)  # id(vma) -> its array row
    published: list[Vma] = field(default_factory=list)  # the VMA list rows was published for
    vcap: int = 0  # room of the MM's slice of the VMA index (mv) from MS_VOFF
    # Pages [unmerged_lo, unmerged_hi]: only VMAs touching them can have become mergeable with a neighbour since
    # the last merge (FastMachine._touch() by every change to the VMA list or to a VMA; empty when lo > hi).
    unmerged_lo: int = -1
    unmerged_hi: int = 1 << 62
    # Pages [unpublished_lo, unpublished_hi]: only VMAs touching them changed since the last publish.
    unpublished_lo: int = -1
    unpublished_hi: int = 1 << 62
    # the MM's first anon_vma number (G_ANONVMA when it was made): its VMAs' older anon_vmas were cloned at fork
    # (Vma.anon_vma_forked, which the VMA rows do not hold); -1: not known yet (FastMachine._anon_birth())
    anon_birth: int = -1
    users: int = 1
    count: int = 1
    has_pinned: bool = False
    zapped: bool = False
    label: str = ""
    pmds: PmdSet | None = None  # ``idx in mm.pmds`` as foliosim.vm.stats.pagemap() asks it

    @property
    def name(self) -> str:
        return f"mm{self.num}"

    def vma_ranges(self) -> npt.NDArray[np.int64]:
        """(start, end) of each VMA in order, one row each (what exit_mmap() zaps)."""
        return np.array([(v.start, v.end) for v in self.vmas], dtype=np.int64).reshape(-1, 2)

    def forget_vmas(self) -> None:
        """The VMA list emptied (exit_mmap(), after the zap and with the MM's rows counted as none)."""
        self.vmas.clear()
        self.rows.clear()
        self.rowmap.clear()

    @property
    def ptes(self) -> dict[int, MappingView]:
        """vpn -> the PTE there (a snapshot, for foliosim.vm.stats)."""
        assert self.pmds is not None
        m = self.pmds.machine
        ptes, _ = m.mappings(self)
        return {vpn: MappingView(m.view(f), page, w) for vpn, (f, page, w, _d) in ptes.items()}


class PmdSet:
    """``idx in mm.pmds``: whether a PMD maps PMD slot ``idx`` of the MM (for foliosim.vm.stats.pagemap())."""

    __slots__ = ("machine", "mm")

    def __init__(self, machine: FastMachine, mm: FastMM) -> None:
        self.machine = machine
        self.mm = mm

    def __contains__(self, idx: object) -> bool:
        return isinstance(idx, int) and self.machine._has_pmd(self.mm, idx)

    def items(self) -> list[tuple[int, MappingView]]:
        """(PMD index, its mapping) of every PMD of the MM (for foliosim.vm.stats.smaps_rollup())."""
        _, pmds = self.machine.mappings(self.mm)
        return [(idx, MappingView(self.machine.view(f), 0, w)) for idx, (f, w) in sorted(pmds.items())]


@dataclass(frozen=True, slots=True)
class MappingView:
    """A PTE or PMD as foliosim.vm.stats reads it: ``folio``, ``page``, ``write``."""

    folio: FolioView
    page: int
    write: bool


@dataclass(slots=True, eq=False)
class FastTask:
    pid: int
    name: str
    mm: FastMM
    tgid: int
    vfork_parent: FastTask | None = None
    vfork_blocked: bool = False
    alive: bool = True


@dataclass(frozen=True, slots=True)
class FolioView:
    """What scenario expectations ask of a mapped folio (``SimFolio``'s name, is_zero, core())."""

    name: str
    is_zero: bool
    order: int
    machine: FastMachine | None = None
    slot: int = -1
    kind: int = L.KIND_ANON
    file: SimFile | None = None  # the file a page-cache folio caches

    @property
    def is_anon(self) -> bool:
        return not self.is_zero and self.kind == L.KIND_ANON

    @property
    def nr_pages(self) -> int:
        return 1 << self.order

    def core(self) -> Folio:
        assert self.machine is not None and self.slot >= 0, f"{self.name} has no rmap state"
        return self.machine.export_folio(self.slot)


@dataclass(slots=True)
class PinHandle:
    name: str
    task: str
    mm: FastMM
    foll_pin: bool
    pages: list[tuple[int, int]]  # (folio slot or ZERO, page)
    vpns: list[int | None]
    allowed: list[set[bytes]] = field(default_factory=list)  # a pipe: every value the owner's view had there
    shared: list[tuple[str, int] | None] = field(default_factory=list)  # (file, index) of shared-mapping pages


class _NoReference(ReferenceMemory):
    """No upkeep of the reference view (runs without :meth:`FastMachine.check`)."""

    def mm_new(self, mm: Any) -> None:
        pass

    def mm_gone(self, mm: Any) -> None:
        pass

    def write(self, mm: Any, vma: Vma, vpn: int, offset: int, data: bytes) -> None:
        pass

    def unmap(self, mm: Any, start: int, end: int) -> None:
        pass

    dontneed = unmap

    def move(self, mm: Any, start: int, end: int, dst: int) -> None:
        pass

    def privatize(self, mm: Any, vma: Vma, vpn: int) -> None:
        pass

    def fork(self, src: Any, dst: Any, vmas: list[Vma]) -> None:
        pass


class FastMachine:
    """A simulated Linux v6.15 machine on arrays; same public methods and results as the reference Machine.

    ``record`` keeps the rmap trace (:attr:`trace`, as reference Ops); ``keep_decisions`` the CoW decisions as
    :class:`CowDecision` objects; ``mutant`` switches a deliberately wrong reuse test on (for the tests).
    ``fast_oracle`` checks isolation incrementally in the kernels (every access reads what its MM last wrote,
    every store hits an AnonExclusive page; whole-page writes only; pages of file and shmem mappings are not
    checked by it); ``reference`` keeps the reference's
    :class:`ReferenceMemory` for :meth:`check` (off: check() is not available, which is what makes runs fast).
    """

    def __init__(self, config: KernelConfig | None = None, options: MachineOptions | None = None, *,
                 record: bool = True, keep_decisions: bool = True, mutant: int = L.MUTANT_NONE,
                 fast_oracle: bool = False, reference: bool = True, compiled_vmas: bool = True) -> None:
        self.config = config or KernelConfig()
        self.options = options or MachineOptions()
        if self.config.pmd_order > 12:
            raise Unsupported(f"PMD order {self.config.pmd_order}: the fast engine's page tables hold up to 2**12")
        for order in self.options.thp:
            self._check_anon_order(order)
        self.po = self.config.pmd_order
        self.P = 1 << self.po
        self.record = record
        self.keep_decisions = keep_decisions
        self.cfg = config_vector(self.config)
        self.opt = np.zeros(L.O_LEN, dtype=np.int64)
        self.opt[L.O_RECORD] = int(record)
        self.opt[L.O_MUTANT] = mutant
        self.opt[L.O_USE_ZERO] = int(self.options.use_zero_page)
        self.opt[L.O_ORACLE] = int(fast_oracle)
        self.opt[L.O_FAULT_AROUND] = self.options.fault_around_pages
        self.opt[L.O_HANDBACK] = int(reference)  # copy-on-write file faults come back to privatize the reference view
        self.keep_reference = reference
        self.glob = np.zeros(L.G_LEN, dtype=np.int64)
        self.glob[L.G_FREE:L.G_MADV] = -1  # the free lists (empty); counters after them start at 0
        self.glob[L.G_FREE_TB] = -1
        self.glob[L.G_NAME] = 1
        self.glob[L.G_ANONVMA] = 1
        self.fs = np.zeros((64, L.FS_COLS), dtype=np.int32)  # int32: every field fits (the kernels wrap them)
        self.pmc = np.full(1024, -1, dtype=np.int32)
        self.pex = np.zeros(1024, dtype=np.uint8)
        self.pct = np.zeros(1024, dtype=np.int32)
        self.tb = np.zeros((16, L.TB_COLS), dtype=np.int64)
        self.ptf = np.full((16, self.P), L.NONE, dtype=np.int32)
        self.ptp = np.zeros((16, self.P), dtype=np.int16)
        self.ptw = np.zeros((16, self.P), dtype=np.uint8)
        self.pexp = np.zeros((16 if fast_oracle else 1, self.P), dtype=np.int32)  # expected contents (oracle)
        self.hk = np.full(64, -1, dtype=np.int64)
        self.hv = np.zeros(64, dtype=np.int32)
        self.ms = np.zeros((64, L.MS_COLS), dtype=np.int64)  # an MM per row: a fork-heavy run's without growing
        self.vm = np.zeros((64, L.VM_COLS), dtype=np.int64)
        self.nvm = 0
        self.mv = np.zeros(64, dtype=np.int32)
        self.nmv = 0
        self.tr = np.zeros((256 if record else 1, L.T_COLS), dtype=np.int64)
        self.cow = np.zeros((64, L.C_COLS), dtype=np.int64)
        self.faultbuf = np.zeros((1024, 2), dtype=np.int64)
        self.scr = np.zeros((2, 64), dtype=np.int64)
        self._gather = np.empty((64, 2), dtype=np.int64)  # zap's deferred puts at exit
        self.scr2 = np.zeros((2, 64), dtype=np.int64)  # the folio split's own table list and pieces
        self.ent = np.zeros((0, 5), dtype=np.int64)  # the folio split's migration entries
        self.trace: list[Op] = []
        self.events: list[Any] = []
        self.cow_decisions: list[CowDecision] = []
        self.user_faults: list[tuple[int, str, int, bool]] = []
        self.pycount: Counter[str] = Counter()
        self.ids = MMIdAllocator(self.config)
        self.tasks: dict[str, FastTask] = {}
        self.mms: dict[str, FastMM] = {}
        self.gup: dict[str, PinHandle] = {}
        self.holders: dict[str, tuple[FastMM, str]] = {}
        self.pinned_pages = 0  # pages of the folios pinned (an upper bound on fork's early copies)
        self.ref = ReferenceMemory() if reference else _NoReference()
        self.pages: list[bytes] = []  # content ids 256.. -> page bytes
        self._page_ids: dict[bytes, int] = {}
        self.step = 0
        self.task_name: str | None = None
        self._next = {"pid": 1, "mm": 1, "shmem": 1}
        self.files: dict[str, SimFile] = {}
        self.pcache = FF.PageCache()
        self.codec = kvma.RowCodec(self.pcache.files)  # the rows' labels, THP masks and files
        #: the control plane (mmap, munmap, mprotect, VMA-flag madvise) runs compiled over the VMA rows
        #: (:mod:`foliosim.fast.sim.kvma`); False: the Python path over the Vma objects
        self.compiled_vmas = compiled_vmas
        self.kvma_mutant = 0  # kvma.MUTANT_* (the tests' mutant of the compiled merge)
        self._vst = kvma.new_state()
        self._rg = np.zeros((64, 2), dtype=np.int64)
        self._anon_seen: dict[int, int] = {}  # MM number -> the anon_vma counter at its last _sync()
        self._mmap_base = MMAP_BASE >> PAGE_SHIFT

    # ------------------------------------------------------------------ basics
    @property
    def pmd_order(self) -> int:
        return self.po

    @property
    def pmd_pages(self) -> int:
        return self.P

    @property
    def nbytes(self) -> int:
        """Bytes held by the state arrays (capacity, not only what is in use)."""
        arrays = (self.fs, self.pmc, self.pex, self.pct, self.tb, self.ptf, self.ptp, self.ptw, self.pexp, self.hk,
                  self.hv, self.ms, self.vm, self.mv, self.tr, self.cow, self.faultbuf, self.scr)
        return sum(int(a.nbytes) for a in arrays)

    def args(self) -> tuple[Any, ...]:
        return (self.cfg, self.opt, self.glob, self.fs, self.pmc, self.pex, self.pct, self.tb, self.ptf, self.ptp,
                self.ptw, self.hk, self.hv, self.ms, self.vm, self.mv, self.tr, self.cow)

    @property
    def counters(self) -> Counter[str]:
        c = Counter(self.pycount)
        g = self.glob
        for key, col in (("fault", L.G_FAULTS), ("SIGSEGV", L.G_SEGV), ("cow reuse", L.G_REUSE), ("cow copy", L.G_COPY),
                         ("pmd split", L.G_PMDSPLIT), ("fork early copy", L.G_EARLY),
                         ("fault whole shmem folio", L.G_SHMEM_WHOLE)):
            if g[col]:
                c[key] = int(g[col])
        for d in self.cow_decisions:
            c[f"cow rule: {d.rule.value}"] += 1
        return c

    def _check_anon_order(self, order: int) -> None:
        mmapops.check_anon_order(order, self.config.pmd_order)

    def _begin(self, task: FastTask | None = None) -> None:
        self.step += 1
        self.task_name = task.name if task is not None else None

    def _end(self) -> None:
        if self.keep_reference:
            for h in self.gup.values():  # GupHandle.track(): what each tracked page's owner view reads now
                for i, vpn in enumerate(h.vpns):
                    if vpn is None:
                        continue
                    vma = h.mm.find_vma(vpn)
                    if vma is None:
                        h.vpns[i] = None
                        continue
                    h.allowed[i].add(self.ref.expected(h.mm, vma, vpn))  # type: ignore[arg-type]
        if self.options.check:
            problems = self.check()
            if problems:
                raise OracleViolation("; ".join(problems))

    def task(self, name: str) -> FastTask:
        task = self.tasks.get(name)
        if task is None:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise SimError(f"no task {name!r} (tasks: {known})")
        return task

    def _runnable(self, name: str) -> FastTask:
        task = self.task(name)
        if task.vfork_blocked:
            raise SimError(f"task {name!r} sleeps in vfork() until its child execs or exits")
        return task

    def _fail(self, what: str, errno: int, why: str = "") -> int:
        self._end()
        return errno

    # ------------------------------------------------------------------ array room
    def _grow_rows(self, name: str, need: int, fill: int | None = 0, used: int | None = None) -> None:
        """``name`` grown to at least ``need`` rows (doubling), its new rows ``fill``; None: left undefined (for an
        array whose rows past its count ``used`` are never read before they are written whole: only the rows below
        it are copied, none on a fresh machine)."""
        arr = getattr(self, name)
        if need <= arr.shape[0]:
            return
        size = max(need, 2 * arr.shape[0])
        shape = (size, *arr.shape[1:])
        if fill is None:  # malloc()ed, not zeroed: the pages of the rows never used are never touched
            new = np.empty(shape, dtype=arr.dtype)
            keep = arr.shape[0] if used is None else used
            if keep:  # a copy costs microseconds even of no rows (tens in a cold cache)
                new[:keep] = arr[:keep]
        else:  # zeros: the rows not used yet are not written (their pages stay untouched until used)
            new = np.zeros(shape, dtype=arr.dtype) if fill == 0 else np.full(shape, fill, dtype=arr.dtype)
            new[:arr.shape[0]] = arr
        setattr(self, name, new)

    def ensure(self, folios: int = 2, pages: int = 0, tables: int = 2, trace: int = 64, cows: int = 4) -> None:
        """Make room for that many more folios (of ``pages`` pages in all), tables, trace rows and decisions."""
        g = self.glob
        # folio rows and page slots are made only by kern.alloc(), which writes every column of a row past
        # G_NFOLIO and every page slot past G_NPAGE before any read (everything else reads below them): not
        # cleared, so that a fresh machine sized ahead for a whole program (ProgramRun) takes page faults for the
        # rows it uses only (calloc() clears them all, faulting every page in)
        nfolio, npage = int(g[L.G_NFOLIO]), int(g[L.G_NPAGE])
        self._grow_rows("fs", nfolio + folios + 2, None, nfolio)
        pages = max(pages, 2 * self.P)
        self._grow_rows("pmc", npage + pages, None, npage)
        self._grow_rows("pex", self.pmc.shape[0], None, npage)
        self._grow_rows("pct", self.pmc.shape[0], None, npage)
        ntb = int(g[L.G_NTB]) + tables + 2
        if ntb > self.tb.shape[0]:
            self._grow_rows("tb", ntb)
            self._grow_rows("ptf", self.tb.shape[0], L.NONE)
            self._grow_rows("ptp", self.tb.shape[0])
            self._grow_rows("ptw", self.tb.shape[0])
            if self.opt[L.O_ORACLE]:
                self._grow_rows("pexp", self.tb.shape[0])
        if (int(g[L.G_HUSED]) + tables + 2) * 2 > self.hk.shape[0] or self.hk.shape[0] < 2 * self.tb.shape[0]:
            size = self.hk.shape[0]
            live = int(self.tb[:int(g[L.G_NTB]), L.TB_LIVE].sum())
            while size < 4 * (live + tables + 2) or size < 2 * self.tb.shape[0]:
                size *= 2
            self.hk = np.full(size, -1, dtype=np.int64)
            self.hv = np.zeros(size, dtype=np.int32)
            kern.rehash(self.glob, self.tb, self.hk, self.hv, int(g[L.G_NTB]))
        if self.record:
            self._grow_rows("tr", int(g[L.G_NTR]) + trace)
        self._grow_rows("cow", int(g[L.G_NCOW]) + cows)

    def _grow_after_room(self) -> None:
        """A kernel said RC_ROOM: grow what is short (each array doubles when it grows)."""
        g = self.glob
        folios = 2 if int(g[L.G_NFOLIO]) + 2 <= self.fs.shape[0] else self.fs.shape[0]
        pages = 2 * self.P if int(g[L.G_NPAGE]) + 2 * self.P <= self.pmc.shape[0] else self.pmc.shape[0]
        short_tables = int(g[L.G_NTB]) + 2 > self.tb.shape[0] or (int(g[L.G_HUSED]) + 2) * 2 > self.hk.shape[0]
        tables = self.tb.shape[0] + 4 if short_tables else 2
        margin = 64 + int(self.opt[L.O_FAULT_AROUND])  # the fault loop's room for one fault's trace rows
        trace = self.tr.shape[0] + margin if self.record and int(g[L.G_NTR]) + margin > self.tr.shape[0] else margin
        cows = self.cow.shape[0] + 4 if int(g[L.G_NCOW]) + 2 > self.cow.shape[0] else 4
        self.ensure(folios=folios, pages=pages, tables=tables, trace=trace, cows=cows)

    def _scratch(self, tables: int = 0) -> npt.NDArray[np.int64]:
        """A scratch buffer for the kernels' lists of table slots (room for every table, or ``tables``)."""
        need = max(int(self.glob[L.G_NTB]), tables) + 1
        if self.scr.shape[1] < need:
            self.scr = np.zeros((2, max(need, 2 * self.scr.shape[1])), dtype=np.int64)
        return self.scr

    def _room(self, folios: int, pages: int, tables: int, trace: int, cows: int = 4) -> None:
        """:meth:`ensure` with the same arguments, skipped when every array already has the room it would make."""
        g = self.glob
        if (int(g[L.G_NFOLIO]) + folios + 2 > self.fs.shape[0]
                or int(g[L.G_NPAGE]) + max(pages, 2 * self.P) > min(self.pmc.shape[0], self.pex.shape[0],
                                                                    self.pct.shape[0])
                or int(g[L.G_NTB]) + tables + 2 > self.tb.shape[0]
                or (int(g[L.G_HUSED]) + tables + 2) * 2 > self.hk.shape[0] or self.hk.shape[0] < 2 * self.tb.shape[0]
                or (self.record and int(g[L.G_NTR]) + trace > self.tr.shape[0])
                or int(g[L.G_NCOW]) + cows > self.cow.shape[0]):
            self.ensure(folios=folios, pages=pages, tables=tables, trace=trace, cows=cows)

    def _gather_rows(self, n: int) -> I64:
        """A scratch (folio, pages) list of at least ``n`` rows for zap's deferred puts (contents undefined)."""
        if self._gather.shape[0] < n:
            self._gather = np.empty((max(n, 2 * self._gather.shape[0]), 2), dtype=np.int64)
        return self._gather

    # ------------------------------------------------------------------ kernel results
    def _check_rc(self, rc: int) -> None:
        if rc == L.RC_OK:
            return
        reason = L.REASONS.get(int(self.glob[L.G_ERR]), f"code {int(self.glob[L.G_ERR])}")
        if rc == L.RC_UNSUPPORTED:
            raise Unsupported(f"the fast engine does not model {reason}")
        raise OracleViolation(f"fast engine: {reason} (folio f{int(self.glob[L.G_ERRF])})")

    def _drain(self, cow_tasks: list[str] | None = None) -> None:
        """Move recorded trace rows and CoW decisions out of the kernels' buffers."""
        g = self.glob
        n = int(g[L.G_NTR])
        if n:
            for row in self.tr[:n].tolist():
                self.trace.append(self._op(row))
            g[L.G_NTR] = 0
        n = int(g[L.G_NCOW])
        if n:
            if self.keep_decisions:
                for i, row in enumerate(self.cow[:n].tolist()):
                    self.cow_decisions.append(self._decision(row, cow_tasks[i] if cow_tasks else None))
            g[L.G_NCOW] = 0

    def _op(self, row: list[int]) -> Op:
        kind = row[L.T_KIND]
        name = OP_NAMES[kind]
        folio = f"f{row[L.T_FOLIO]}"
        if kind == K.K_FOLIO_NEW:
            return _new_op(name, None, folio, row[L.T_ORDER], None, 0, 1)
        if kind == K.K_FOLIO_FREE:
            return _new_op(name, None, folio, None, None, 0, 1)
        mm = f"mm{row[L.T_MM]}"
        if kind in (K.K_MM_NEW, K.K_MM_FREE):
            return _new_op(name, mm, None, None, None, 0, 1)
        level = PMD if row[L.T_LEVEL] == K.L_PMD else PTE
        if kind == K.K_MAP_NEW_ANON:
            return _new_op(name, mm, folio, None, level, 0, 1)
        return _new_op(name, mm, folio, None, level, row[L.T_PAGE], row[L.T_NR])

    def _folio_name(self, value: int) -> str:
        if value == L.ZERO:
            return "zero"
        if value == L.HUGE_ZERO:
            return "huge_zero"
        return f"f{value}"

    def _decision(self, row: list[int], task: str | None = None) -> CowDecision:
        sh = row[L.C_SHBIT]
        return CowDecision(
            task=task or self.task_name or "?", mm=f"mm{row[L.C_MM]}", addr=row[L.C_VPN] << PAGE_SHIFT,
            folio=self._folio_name(row[L.C_FOLIO]), page=row[L.C_PAGE], order=row[L.C_ORDER],
            level="pmd" if row[L.C_LEVEL] == K.L_PMD else "pte", rule=L.RULES[row[L.C_RULE]],
            outcome=L.OUTCOMES[row[L.C_OUTCOME]], unshare=bool(row[L.C_UNSHARE]), mapcount=row[L.C_MAPCOUNT],
            refcount=row[L.C_REFCOUNT], shared_bit=None if sh < 0 else bool(sh),
            new_folio=None if row[L.C_NEW] < 0 else f"f{row[L.C_NEW]}")

    def _sync(self, mm: FastMM) -> None:
        """Anon_vma ids the kernels assigned (anon_vma_prepare()) back into the Vma objects (nothing to do when no
        anon_vma was assigned anywhere since this MM's last sync)."""
        counter = int(self.glob[L.G_ANONVMA])
        seen = self._anon_seen.get(mm.num)
        if seen == counter:
            return
        self._anon_seen[mm.num] = counter
        if seen is not None and len(mm.rows) == len(mm.published):
            # anon_vma ids count up: what the kernels assigned since this MM's last sync is >= seen
            if len(mm.rows) <= _SYNC_SCALAR:  # a few VMAs: scalar reads (a numpy pass costs tens of us when cold)
                item = self.vm.item
                for vma, r in zip(mm.published, mm.rows, strict=True):
                    if vma.anon_vma is None:
                        av = item(r, L.V_ANONVMA)
                        if av >= seen:
                            vma.anon_vma = av
                return
            fresh = np.flatnonzero(self.vm[mm.rows, L.V_ANONVMA] >= seen).tolist()
            published = mm.published
            for i in fresh:
                vma = published[i]
                if vma.anon_vma is None:
                    vma.anon_vma = int(self.vm[mm.rows[i], L.V_ANONVMA])
            return
        col = self.vm[:, L.V_ANONVMA]
        rows = mm.rowmap
        for vma in mm.vmas:
            row = rows.get(id(vma))
            if row is not None and vma.anon_vma is None and col[row]:
                vma.anon_vma = int(col[row])

    def _publish(self, mm: FastMM) -> None:
        """Write the MM's sorted VMAs into fresh array rows (after any control-plane change). The change is not
        known: the next merge walks every VMA (:meth:`_publish_changed` is the cheaper way for changes noted by
        :meth:`_touch`)."""
        self._touch(mm, -1, 1 << 62)
        self._sync(mm)
        n = len(mm.vmas)
        if self.nvm + n > self.vm.shape[0] or self.nmv + n > self.mv.shape[0]:
            self._compact_vmas(n)
        self._publish_raw(mm)

    def _vma_rows(self, vmas: list[Vma]) -> npt.NDArray[np.int64]:
        """VMAs as rows of the VMA table (one array built at once)."""
        ids = self.pcache.ids
        thp = self.codec.thp
        label = self.codec.label
        return np.array([(vma.start, vma.end, vma.read, vma.write, vma.shared, thp(vma.thp),
                          vma.anon_vma or 0, -1 if vma.file is None else ids[vma.file.name], vma.pgoff,
                          vma.maps_writable, vma.exec, vma.noreserve, vma.account, vma.dontfork, vma.softdirty_wp,
                          label(vma.label))
                         for vma in vmas], dtype=np.int64).reshape(-1, L.VM_COLS)

    def _publish_changed(self, mm: FastMM) -> None:
        """:meth:`_publish` after control-plane changes recorded by :meth:`_touch` (and merges): only the VMAs
        touching the pages changed since the last publish get new rows (the VMAs before and after them are the same
        objects, unchanged); the MM's slice of the VMA index is rewritten in place when it has room."""
        lo, hi = mm.unpublished_lo, mm.unpublished_hi
        if self.compiled_vmas and lo > hi:  # the compiled control plane keeps the rows up to date
            return
        old, new = mm.published, mm.vmas
        n_old, n = len(old), len(new)
        p = bisect.bisect_left(new, lo, key=_END)  # VMAs ending before lo
        q = n - bisect.bisect_right(new, hi, key=_START)  # VMAs starting after hi
        if (len(mm.rows) != n_old or p + q > n_old or (p and old[p - 1] is not new[p - 1])
                or (q and old[n_old - q] is not new[n - q])):  # not what the touched range says: publish all
            self._publish(mm)
            return
        self._sync(mm)
        mm.unpublished_lo, mm.unpublished_hi = 1 << 62, -1
        mid = new[p:n - q]
        k = len(mid)
        need_index = 0 if n <= mm.vcap else 2 * n
        if self.nvm + k > self.vm.shape[0] or self.nmv + need_index > self.mv.shape[0]:
            self._compact_vmas(n)  # publishes every MM whole
            return
        rowmap = mm.rowmap
        for vma in old[p:n_old - q]:
            rowmap.pop(id(vma), None)
        fresh = list(range(self.nvm, self.nvm + k))
        if k:
            self.vm[self.nvm:self.nvm + k] = self._vma_rows(mid)
            self.nvm += k
            for vma, row in zip(mid, fresh, strict=True):
                rowmap[id(vma)] = row
        rows = mm.rows
        rows[p:n_old - q] = fresh  # in place: only the tail moves, and only when the count changed
        old[p:n_old - q] = mid
        if need_index:
            self.ms[mm.num, L.MS_VOFF] = self.nmv
            self.mv[self.nmv:self.nmv + n] = rows
            self.nmv += need_index
            mm.vcap = need_index
        elif n:
            off = int(self.ms[mm.num, L.MS_VOFF])
            last = n if n != n_old else p + k
            self.mv[off + p:off + last] = rows[p:last]
        self.ms[mm.num, L.MS_NVMA] = n

    def _compact_vmas(self, extra: int) -> None:
        live = [mm for mm in self.mms.values() if not mm.zapped]
        for mm in live:
            self._sync(mm)
        total = sum(len(mm.vmas) for mm in live) + extra
        size = max(64, 4 * total)  # room for several republishes of the largest MM before the next compaction
        self.vm = np.zeros((size, L.VM_COLS), dtype=np.int64)
        self.mv = np.zeros(size, dtype=np.int32)
        self.nvm = self.nmv = 0
        for mm in live:
            self._publish_raw(mm)

    def _publish_raw(self, mm: FastMM, same_as: list[int] | None = None) -> None:
        """Write the MM's VMAs into the next VMA rows (the caller made the room); ``same_as``: the rows already
        holding what each VMA's row must hold (a fork child's copies of its parent's VMAs), copied as arrays."""
        n = len(mm.vmas)
        rows = list(range(self.nvm, self.nvm + n))
        if n and same_as is not None:
            self.vm[self.nvm:self.nvm + n] = self.vm[same_as]
        elif n:
            self.vm[self.nvm:self.nvm + n] = self._vma_rows(mm.vmas)
        self.nvm += n
        mm.rows = rows
        mm.rowmap = {id(vma): row for vma, row in zip(mm.vmas, rows, strict=True)}
        mm.published = list(mm.vmas)
        mm.vcap = n
        mm.unpublished_lo, mm.unpublished_hi = 1 << 62, -1
        if n:
            self.mv[self.nmv:self.nmv + n] = rows
        self.ms[mm.num, L.MS_VOFF] = self.nmv
        self.ms[mm.num, L.MS_NVMA] = n
        self.nmv += n

    # ------------------------------------------------------------------ MMs and tasks
    def _new_mm(self, label: str, publish: bool = True) -> FastMM | None:
        """A fresh MM with no VMAs; ``publish=False`` (fork, whose _dup_mmap() publishes the copied VMAs) only
        points its empty VMA list at the end of the VMA rows, which is all publishing an empty MM does."""
        if self.ids.peek() is None:
            return None
        num = self._next["mm"]
        self._next["mm"] += 1
        mm_id = self.ids.alloc()
        if num >= self.ms.shape[0]:
            self._grow_rows("ms", num + 1)
        row = [0] * L.MS_COLS  # the whole row in one write (each numpy store costs microseconds in a cold cache)
        row[L.MS_LIVE] = row[L.MS_USERS] = row[L.MS_COUNT] = 1
        row[L.MS_ID] = mm_id
        row[L.MS_VOFF] = self.nmv  # its (empty) slice of the VMA index: at the end
        self.ms[num] = row
        birth = int(self.glob[L.G_ANONVMA])
        mm = FastMM(num, mm_id, label=label, anon_birth=birth)
        mm.pmds = PmdSet(self, mm)
        self.mms[mm.name] = mm
        self.ref.mm_new(mm)  # type: ignore[arg-type]
        if self.record:
            self.trace.append(Op("mm_new", mm.name))
        if publish:  # what _publish() leaves of an MM without VMAs: synced, nothing left to publish
            self._anon_seen[num] = birth
            mm.unpublished_lo, mm.unpublished_hi = 1 << 62, -1
        return mm

    def mmput(self, mm: FastMM) -> None:
        mm.users -= 1
        if mm.users == 0:
            self.exit_mmap(mm)
            self.mmdrop(mm)

    def mmdrop(self, mm: FastMM) -> None:
        mm.count -= 1
        if mm.count == 0:
            if self.ms[mm.num, L.MS_NMAP] != 0:
                raise OracleViolation(f"fast engine: {mm.name} freed with mappings left")
            self.ids.free(mm.mm_id)
            self.ms[mm.num, L.MS_LIVE] = 0
            if self.record:
                self.trace.append(Op("mm_free", mm.name))
            del self.mms[mm.name]

    def _mm_tables(self, mm: FastMM) -> npt.NDArray[np.int64]:
        n = int(self.glob[L.G_NTB])
        tb = self.tb[:n]
        return np.flatnonzero((tb[:, L.TB_LIVE] != 0) & (tb[:, L.TB_MM] == mm.num))

    def _entries(self, mm: FastMM) -> tuple[int, int, int]:
        """(present PTEs, PMD mappings, tables) of ``mm`` (one compiled pass over the table slots)."""
        ptes, pmds, tables = kfork.mm_entries(self.tb, int(self.glob[L.G_NTB]), mm.num)
        return int(ptes), int(pmds), int(tables)

    def _zap(self, mm: FastMM, ranges: list[tuple[int, int]]) -> None:
        """``_zap()`` over the ranges in turn, then ``_flush()``."""
        if not ranges:
            return
        ptes, pmds, _ = self._entries(mm)
        worst = ptes + pmds * self.P + 2
        self._room(0, 0, 2, 3 * worst + 16)
        rc = kern.zap(*self.args(), self.pexp, self._scratch(), mm.num,
                      np.array(ranges, dtype=np.int64).reshape(-1, 2), self._gather_rows(worst))
        self._drain()
        self._check_rc(rc)

    def exit_mmap(self, mm: FastMM) -> None:
        # _zap() over every VMA and free_pgtables() in one compiled call, which says when it needs more room
        ranges = mm.vma_ranges()
        while True:
            rc, worst = kfork.exit_zap(*self.args(), self.pexp, self._scratch(), mm.num, ranges, self._gather)
            if rc != L.RC_ROOM:
                break
            self._room(0, 0, 2, 3 * worst + 16)
            self._gather_rows(worst)
        self._drain()
        self._check_rc(rc)
        for handle in self.gup.values():
            if handle.mm is mm:
                handle.vpns = [None] * len(handle.vpns)
        mm.forget_vmas()
        self.ms[mm.num, L.MS_NVMA] = 0
        mm.zapped = True
        self.ms[mm.num, L.MS_ZAPPED] = 1
        self.ref.mm_gone(mm)  # type: ignore[arg-type]

    def _require_new_task(self, name: str) -> None:
        if not name or name in self.tasks:
            raise SimError(f"task name {name!r} is already in use" if name else "empty task name")

    def _add_task(self, name: str, mm: FastMM, tgid: int | None) -> FastTask:
        pid = self._next["pid"]
        self._next["pid"] += 1
        task = FastTask(pid, name, mm, tgid if tgid is not None else pid)
        self.tasks[name] = task
        return task

    def spawn(self, name: str) -> int:
        self._require_new_task(name)
        self._begin()
        mm = self._new_mm(name)
        if mm is None:
            self._end()
            return -ENOMEM
        task = self._add_task(name, mm, None)
        self.task_name = name
        self._end()
        return task.pid

    def fork(self, parent: str, child: str) -> int:
        task = self._runnable(parent)
        self._require_new_task(child)
        self._begin(task)
        mm = self._new_mm(child, publish=False)
        if mm is None:
            self._end()
            return -ENOMEM
        new = self._add_task(child, mm, None)
        self._dup_mmap(task.mm, mm)
        self.pycount["fork"] += 1
        self._end()
        return new.pid

    def _dup_mmap(self, src: FastMM, dst: FastMM) -> None:
        self._sync(src)
        copied: list[Vma] = []
        rows: list[int] = []
        for vma, row in zip(src.vmas, src.rows, strict=True):
            if vma.dontfork:
                continue
            child_vma = Vma(*_VMA_FIELDS(vma))  # Vma.clone(), without dataclasses.replace()'s cost
            if vma.anon_vma is not None:
                child_vma.anon_vma_forked = True
            dst.vmas.append(child_vma)  # src.vmas is sorted by start: so is dst.vmas
            copied.append(vma)
            if vma.anon_vma is not None:
                rows.append(row)
        if rows:  # copy_page_range() of each, in one compiled call that says when it needs more room
            early = self.pinned_pages + 1  # early copies at fork are of pinned folios' pages only
            vrows = np.array(rows, dtype=np.int64)
            while True:
                rc, ptes, pmds, tables = kfork.fork_dup(*self.args(), self.pexp, self._scratch(), src.num, dst.num,
                                                        vrows, early)
                if rc != L.RC_ROOM:
                    break
                self._room(early, early, tables + 2, 3 * (ptes + pmds) + 8 * early + 16)
            self._drain()
            self._check_rc(rc)
        n = len(dst.vmas)
        if self.nvm + n <= self.vm.shape[0] and self.nmv + n <= self.mv.shape[0]:  # the parent's rows, copied
            self._publish_raw(dst, [src.rowmap[id(vma)] for vma in copied])
        else:
            self._publish(dst)
        self.ref.fork(src, dst, copied)  # type: ignore[arg-type]

    def clone_vm(self, parent: str, child: str, vfork: bool = False) -> int:
        task = self._runnable(parent)
        self._require_new_task(child)
        self._begin(task)
        task.mm.users += 1
        new = self._add_task(child, task.mm, None if vfork else task.tgid)
        if vfork:
            new.vfork_parent = task
            task.vfork_blocked = True
        self._end()
        return new.pid

    def execve(self, name: str) -> int:
        task = self._runnable(name)
        self._begin(task)
        mm = self._new_mm(name)
        if mm is None:
            self._end()
            return -ENOMEM
        for other in [t for t in self.tasks.values() if t.tgid == task.tgid and t is not task]:
            self._exit_task(other)
        old = task.mm
        task.mm = mm
        task.tgid = task.pid
        self._release_vfork(task)
        self.mmput(old)
        self._end()
        return 0

    def exit(self, name: str) -> int:
        task = self._runnable(name)
        self._begin(task)
        self._exit_task(task)
        self._end()
        return 0

    def _exit_task(self, task: FastTask) -> None:
        task.alive = False
        del self.tasks[task.name]
        self._release_vfork(task)
        self.mmput(task.mm)

    def _release_vfork(self, task: FastTask) -> None:
        if task.vfork_parent is not None:
            task.vfork_parent.vfork_blocked = False
            task.vfork_parent = None

    def mm_hold(self, holder: str, task_name: str, users: bool = False) -> int:
        """``mmgrab()`` (users=False, e.g. a CPU's lazy-TLB reference) or ``mmget()`` by ``holder``."""
        if not holder or holder in self.holders:
            raise SimError(f"holder name {holder!r} is already in use")
        task = self.task(task_name)
        self._begin(task)
        mm = task.mm
        if users:
            mm.users += 1
        else:
            mm.count += 1
        self.holders[holder] = (mm, "users" if users else "count")
        self._end()
        return 0

    def mm_release(self, holder: str) -> int:
        """The matching ``mmdrop()`` / ``mmput()``."""
        if holder not in self.holders:
            raise SimError(f"no holder {holder!r} (holders: {', '.join(sorted(self.holders)) or 'none'})")
        self._begin()
        mm, how = self.holders.pop(holder)
        if how == "users":
            self.mmput(mm)
        else:
            self.mmdrop(mm)
        self._end()
        return 0

    def create_file(self, name: str, size: int, order: int = 0, fill: int = 0, shmem: bool = False) -> None:
        """``Machine.create_file()``: a file (or shmem object, cached whole at creation) of ``size`` bytes whose
        page cache uses folios of ``order``."""
        if not name or name in self.files:
            raise SimError(f"file {name!r} already exists" if name else "empty file name")
        if size <= 0 or size % PAGE_SIZE:
            raise SimError(f"file size must be a positive multiple of {PAGE_SIZE}, not {size}")
        if not 0 <= order <= self.po:
            raise SimError(f"file folio order must be in 0..{self.po}, not {order}")
        if not 0 <= fill <= 255:
            raise SimError(f"fill must be a byte value 0..255, not {fill}")
        self._begin()
        nr = size // PAGE_SIZE
        file = SimFile(name, nr, order, shmem, SparsePages(nr, filled_page(fill)), anon=shmem)
        self.files[name] = file
        FF.create_file(self, file, shmem)
        self.ref.file_new(file)
        self._end()

    # ------------------------------------------------------------------ address space
    def _range(self, addr: int, length: int) -> tuple[int, int] | None:
        return mmapops.page_range(addr, length)

    def mmap(self, task_name: str, length: int, *, file: str | None = None, offset: int = 0,
             shared: bool = False, read: bool = True, write: bool = True, addr: int | None = None,
             thp: frozenset[int] | None = None, label: str = "", execute: bool = False,
             noreserve: bool = False) -> int:
        task = self._runnable(task_name)
        src = self.files.get(file) if file is not None else None
        if file is not None and src is None:
            raise SimError(f"no file {file!r} (files: {', '.join(sorted(self.files)) or 'none'})")
        for order in thp or ():
            self._check_anon_order(order)
        self._begin(task)
        why = mmapops.mmap_args_error(length, offset, addr, src.nr_pages if src is not None else None)
        if why is not None:
            return self._fail("mmap", -EINVAL, why)
        nr = (length + PAGE_SIZE - 1) // PAGE_SIZE
        pgoff = offset >> PAGE_SHIFT
        if self.compiled_vmas:
            return self._kvma_mmap(task.mm, nr, pgoff, src, shared, read, write, addr, thp, label, execute, noreserve)
        if addr is None:
            start = self._unmapped_area(nr)
        else:
            start = addr >> PAGE_SHIFT
            self._do_munmap(task.mm, start, start + nr, publish=False)  # published below, with the new VMA
        if file is None and shared:
            src = self._shmem_zero_setup(nr, thp)
        vma_thp = (thp if thp is not None else self.options.thp) if file is None and not shared else frozenset()
        vma = Vma(start, start + nr, read, write, shared, src, pgoff, frozenset(vma_thp), label, exec=execute,
                  noreserve=noreserve, account=write and not shared and not noreserve)
        task.mm.insert_vma(vma)
        self._touch(task.mm, start, start + nr)
        self._publish_changed(task.mm)
        self._end()
        return start << PAGE_SHIFT

    def _shmem_zero_setup(self, nr: int, thp: frozenset[int] | None) -> SimFile:
        """``shmem_zero_setup()``: MAP_SHARED|MAP_ANONYMOUS memory is an unlinked shmem file, nothing cached until
        faulted."""
        order = max((thp if thp is not None else self.options.thp) or {0})
        name = f"anon-shmem{self._next['shmem']}"
        self._next["shmem"] += 1
        src = SimFile(name, nr, order if order < self.po else 0, True, anon=True)
        self.files[name] = src
        FF.create_file(self, src, False)
        self.ref.file_new(src)
        return src

    def _kvma_mmap(self, mm: FastMM, nr: int, pgoff: int, src: SimFile | None, shared: bool, read: bool, write: bool,
                   addr: int | None, thp: frozenset[int] | None, label: str, execute: bool, noreserve: bool) -> int:
        """mmap() after its argument checks, on the compiled control plane (:func:`kvma.mmap`)."""
        start = -1 if addr is None else addr >> PAGE_SHIFT
        had = start >= 0 and bool(mm.vmas_in(start, start + nr))
        anon = src is None
        if anon and shared:
            src = self._shmem_zero_setup(nr, thp)
        vma_thp = (thp if thp is not None else self.options.thp) if anon and not shared else frozenset()
        fid = -1 if src is None else self.pcache.ids[src.name]
        first = self._kvma(mm, kvma.mmap, nr, fid, pgoff, int(shared), int(read), int(write), start,
                           self.codec.thp(frozenset(vma_thp)), self.codec.label(label), int(execute),
                           int(noreserve))[kvma.VS_START]
        if had:
            self._unmapped(mm, first, first + nr)
        self._end()
        return first << PAGE_SHIFT

    def _unmapped(self, mm: FastMM, start: int, end: int) -> None:
        """What _do_munmap() does besides the VMAs and page tables: the reference view and the pins' pages."""
        self.ref.unmap(mm, start, end)  # type: ignore[arg-type]
        for handle in self.gup.values():
            if handle.mm is mm:
                handle.vpns = [None if v is not None and start <= v < end else v for v in handle.vpns]

    def _kvma(self, mm: FastMM, verb: Any, *args: int) -> list[int]:
        """Run a compiled control-plane verb of :mod:`foliosim.fast.sim.kvma` over ``mm``'s VMA rows (growing the
        arrays when it asks for room), then re-materialize the Vma objects of the pages it changed; ``vst`` after
        it as a list (VS_RET: its result). ``vst`` is written once before and read once after each call (each
        numpy store or read costs microseconds in a cold cache, and a one-mmap run is cold)."""
        vst = self._vst
        birth = mm.anon_birth if mm.anon_birth >= 0 else self._anon_birth(mm)
        while True:  # VS_PLO..VS_START as the verb's _begin() leaves them (it writes them all before reading)
            vst[:kvma.VS_BIRTH + 1] = (self.nvm, self.nmv, self._mmap_base, mm.vcap, mm.unmerged_lo, mm.unmerged_hi,
                                       kvma.NO_LO, -1, 0, 0, 0, self.kvma_mutant, birth)
            rc = verb(*self.args(), self.pexp, self._scratch(), self.pcache.fc, vst, self._rg, self._gather, mm.num,
                      *args)
            state: list[int] = vst.tolist()
            self.nvm, self.nmv, self._mmap_base, mm.vcap, mm.unmerged_lo, mm.unmerged_hi = state[:kvma.VS_UHI + 1]
            if rc != L.RC_ROOM:
                break
            self._kvma_room(mm, state[kvma.VS_NEED], state[kvma.VS_TABLES])
        self._drain()
        self._check_rc(rc)
        self._materialize(mm, state)
        return state

    def _anon_birth(self, mm: FastMM) -> int:
        """FastMM.anon_birth of an MM the step interpreter forked: above every anon_vma its VMAs got at fork (those
        it makes later are numbered higher still)."""
        mm.anon_birth = 1 + max((v.anon_vma for v in mm.vmas if v.anon_vma is not None and v.anon_vma_forked),
                                default=0)
        return mm.anon_birth

    def _kvma_room(self, mm: FastMM, worst: int, tables: int) -> None:
        """What a compiled control-plane verb said it lacked (kvma._room()): VMA rows or index room (compacted),
        its scratch ranges, the zap's gather list and trace rows."""
        n, k = len(mm.vmas), kvma.NEW_ROWS
        if self.nvm + k > self.vm.shape[0] or (n + k > max(mm.vcap, n) and self.nmv + 2 * (n + k) > self.mv.shape[0]):
            self._compact_vmas(n + k)
        if self._rg.shape[0] < n + k:
            self._rg = np.zeros((2 * (n + k), 2), dtype=np.int64)
        self._gather_rows(worst)
        self._room(0, 0, tables, 3 * worst + 16 + 32)

    def _materialize(self, mm: FastMM, state: list[int] | None = None) -> None:
        """The Vma objects of the VMAs a compiled verb changed (pages VS_PLO..VS_PHI) made anew from their rows;
        the others are the same objects (their rows did not change). ``state``: ``vst`` as a list, when the caller
        read it already."""
        mm.unpublished_lo, mm.unpublished_hi = 1 << 62, -1
        plo, phi, _, _, _, _, birth, p, q, off, n = (self._vst.tolist() if state is None
                                                     else state)[kvma.VS_PLO:kvma.VS_N + 1]
        if plo > phi:
            return
        old = mm.vmas
        n_old = len(old)
        if p + q > n or p + q > n_old or len(mm.rows) != n_old:  # pragma: no cover - the verb's report is wrong
            raise OracleViolation(f"fast engine: the compiled control plane's report of {mm.name} is inconsistent")
        rows_l = self.mv[off + p:off + n - q].tolist()
        # one VMA (an mmap): its row as a slice, not a gather (which costs tens of microseconds in a cold cache)
        mid = self.codec.vmas(self.vm[rows_l[0]:rows_l[0] + 1] if len(rows_l) == 1 else self.vm[rows_l], birth)
        rowmap = mm.rowmap
        for vma in old[p:n_old - q]:
            del rowmap[id(vma)]
        for vma, row in zip(mid, rows_l, strict=True):
            rowmap[id(vma)] = row
        old[p:n_old - q] = mid
        mm.rows[p:n_old - q] = rows_l
        mm.published[p:n_old - q] = mid

    def _unmapped_area(self, nr: int) -> int:
        """``Machine._unmapped_area()``: PMD-aligned, with a gap so that mappings never merge by accident."""
        start, self._mmap_base = mmapops.unmapped_area(self._mmap_base, nr, self.P)
        return start

    def munmap(self, task_name: str, addr: int, length: int) -> int:
        task = self._runnable(task_name)
        self._begin(task)
        rng = self._range(addr, length)
        if rng is None:
            return self._fail("munmap", -EINVAL)
        self._do_munmap(task.mm, *rng)
        self._end()
        return 0

    def _do_munmap(self, mm: FastMM, start: int, end: int, publish: bool = True) -> None:
        """``do_vmi_munmap()``; ``publish=False``: the caller publishes the MM's VMAs itself (mmap() over an old
        mapping, once for both changes)."""
        if not mm.vmas_in(start, end):
            return
        if self.compiled_vmas:
            self._kvma(mm, kvma.munmap, start, end)
            self._unmapped(mm, start, end)
            return
        self._sync(mm)
        self._split_at(mm, start)
        self._split_at(mm, end)
        gone = mm.vmas_in(start, end)
        self._zap(mm, [(v.start, v.end) for v in gone])
        vmas = mm.vmas
        first = bisect.bisect_left(vmas, gone[0].start, key=_START)  # the gone VMAs: a run of the sorted list
        del vmas[first:first + len(gone)]
        self._touch(mm, start, end)
        if publish:
            self._publish_changed(mm)
        self.ref.unmap(mm, start, end)  # type: ignore[arg-type]
        for handle in self.gup.values():
            if handle.mm is mm:
                handle.vpns = [None if v is not None and start <= v < end else v for v in handle.vpns]
        self._free_pte_tables(mm, start, end)

    def _cold_pageout(self, mm: FastMM, ranges: list[tuple[int, int]], advice: str) -> None:
        """``madvise_cold_pageout()`` (foliosim.vm.fault): decisions counted, folios split where it splits them."""
        if not ranges:
            return
        self.ensure(trace=64)
        need = max(int(self.glob[L.G_NTB]) + 1, self.P)
        if self.scr2.shape[1] < need:
            self.scr2 = np.zeros((2, 2 * need), dtype=np.int64)
        before = self.glob[L.G_MADV:L.G_MADV + 3].tolist()
        traced = len(self.trace)
        splits = int(self.glob[L.G_FSPLIT])
        rows = np.array(ranges, dtype=np.int64).reshape(-1, 2)
        first = 0
        while True:
            rc = kern.cold_pageout(*self.args(), self._scratch(), self.scr2, self.ent, mm.num, rows, first)
            self._drain()
            if rc != L.RC_ROOM:
                break
            first = int(self.glob[L.G_NGATHER])  # a folio split needs more room: grow, resume at that folio
            mms = len(self.mms) + 1
            self.ensure(folios=self.P + 2, pages=self.P + 2, trace=3 * mms * self.P + 2 * self.P + 16)
            if self.ent.shape[0] < mms * self.P:  # one migration entry per page and mapping
                self.ent = np.zeros((2 * mms * self.P, 5), dtype=np.int64)
        self._check_rc(rc)
        if self.pcache.files and int(self.glob[L.G_FSPLIT]) != splits:
            FF.split_pieces(self, self.trace[traced:])
        for k, verdict in enumerate(("take", "skip", "split")):
            delta = int(self.glob[L.G_MADV + k]) - int(before[k])
            if delta:
                self.pycount[f"madvise {advice} {verdict}"] += delta

    def _free_pte_tables(self, mm: FastMM, start: int, end: int) -> None:
        """free_pgtables(): page tables of PMD ranges no VMA touches any more go away."""
        lo, hi = start >> self.po, (end - 1) >> self.po
        scr = self._scratch()
        n = int(kern.mm_tables(self.glob, self.tb, self.hk, self.hv, mm.num, lo, hi, scr))
        ts = scr[0, :n].tolist()
        idx = self.tb[ts, L.TB_IDX].tolist()
        gone = sorted(t for t, i in zip(ts, idx, strict=True) if not mm.vmas_in(i << self.po, (i + 1) << self.po))
        if gone:  # in slot order (the free list's order)
            kern.free_tables(self.glob, self.tb, self.hk, self.pexp, np.array(gone, dtype=np.int64))

    def _split_pmd(self, mm: FastMM, idx: int) -> None:
        self.ensure(trace=16)
        rc = kern.split_pmd_at(*self.args(), mm.num, idx)
        self._drain()
        self._check_rc(rc)

    def _has_pmd(self, mm: FastMM, idx: int) -> bool:
        t = kern.hfind(self.hk, self.hv, (mm.num << 40) | idx)
        return bool(t >= 0 and self.tb[t, L.TB_PMDF] != L.NONE)

    def _split_at(self, mm: FastMM, vpn: int) -> None:
        vma = mm.find_vma(vpn)
        if vma is None or vma.start == vpn:
            return
        if vpn & (self.P - 1):
            idx = vpn >> self.po
            if self._has_pmd(mm, idx):
                self._split_pmd(mm, idx)
        # every caller publishes the MM's VMAs once it is done (no kernel reads them before)
        mm.insert_vma(mmapops.split_vma(vma, vpn))
        self._touch(mm, vpn, vpn)

    def _touch(self, mm: FastMM, lo: int, hi: int) -> None:
        """VMAs touching pages ``[lo, hi]`` changed: they may merge with their neighbours at the next merge."""
        mm.unmerged_lo = min(mm.unmerged_lo, lo)
        mm.unmerged_hi = max(mm.unmerged_hi, hi)
        mm.unpublished_lo = min(mm.unpublished_lo, lo)
        mm.unpublished_hi = max(mm.unpublished_hi, hi)

    def _merge(self, mm: FastMM) -> None:
        """``mmapops.merge_vmas()`` over the MM's VMAs. Since the last merge left no two neighbours mergeable, only
        pairs with a VMA touching the pages changed since (:meth:`_touch`) can merge: the merge walks those, from
        the VMA before the first to the one after the last, and gives what merging the whole list gives."""
        if self.compiled_vmas:
            self._kvma(mm, kvma.merge_mm)
            return
        lo, hi = mm.unmerged_lo, mm.unmerged_hi
        mm.unmerged_lo, mm.unmerged_hi = 1 << 62, -1
        if lo > hi:
            return
        vmas = mm.vmas
        i = max(0, bisect.bisect_left(vmas, lo, key=_END) - 1)
        j = min(len(vmas), bisect.bisect_right(vmas, hi, key=_START) + 1)
        if i < j:  # the VMAs the merge can change
            mm.unpublished_lo = min(mm.unpublished_lo, vmas[i].start)
            mm.unpublished_hi = max(mm.unpublished_hi, vmas[j - 1].end)
        if i == 0 and j == len(vmas):
            mmapops.merge_vmas(vmas)
            return
        part = vmas[i:j]
        mmapops.merge_vmas(part)
        vmas[i:j] = part

    def _vmas_for(self, mm: FastMM, start: int, end: int) -> list[Vma]:
        self._sync(mm)
        self._split_at(mm, start)
        self._split_at(mm, end)
        return mm.vmas_in(start, end)

    def mprotect(self, task_name: str, addr: int, length: int, read: bool, write: bool,
                 execute: bool | None = None) -> int:
        task = self._runnable(task_name)
        self._begin(task)
        rng = self._range(addr, length)
        if rng is None:
            return self._fail("mprotect", -EINVAL)
        mm = task.mm
        if self.compiled_vmas:
            ret = self._kvma(mm, kvma.mprotect, *rng, int(read), int(write),
                             -1 if execute is None else int(execute))[kvma.VS_RET]
            if ret:
                return self._fail("mprotect", ret, "the range is not fully mapped")
            self._end()
            return 0
        if not mm.covered(*rng):
            return self._fail("mprotect", -ENOMEM, "the range is not fully mapped")
        for vma in self._vmas_for(mm, *rng):
            upgrade = write and not vma.write
            if upgrade and not (vma.shared or vma.noreserve):
                vma.account = True
            vma.read, vma.write = read, write
            if execute is not None:
                vma.exec = execute
            if vma.shared:
                FF.change_protection_shared(self, mm, vma, upgrade)
                continue
            # can_change_pte_writable(): never while soft-dirty tracking is armed (private mappings)
            kern.change_protection(self.cfg, self.glob, self.fs, self.pex, self.tb, self.ptf, self.ptp, self.ptw,
                                   self.hk, self.hv, mm.num, vma.start, vma.end, write,
                                   upgrade and not vma.softdirty_wp, self._scratch())
        self._touch(mm, *rng)
        self._merge(mm)
        self._publish_changed(mm)
        self._end()
        return 0

    def mremap(self, task_name: str, addr: int, length: int, new_addr: int) -> int:
        """``mremap(MREMAP_MAYMOVE | MREMAP_FIXED)`` of the same size (``Machine.mremap()``): page-table entries
        move (whole PMDs when the move keeps their alignment, else the PMD is split first), rmap does not change."""
        task = self._runnable(task_name)
        self._begin(task)
        rng = self._range(addr, length)
        if rng is None or new_addr % PAGE_SIZE or new_addr < 0:
            return self._fail("mremap", -EINVAL)
        start, end = rng
        dst = new_addr >> PAGE_SHIFT
        if dst < end and start < dst + (end - start):
            return self._fail("mremap", -EINVAL, "the old and new ranges overlap")
        mm = task.mm
        vma = mm.find_vma(start)
        if vma is None or vma.end < end:
            return self._fail("mremap", -EFAULT, "the old range is not inside one mapping")
        if self.compiled_vmas:
            delta = dst - start
            had = bool(mm.vmas_in(dst, dst + (end - start)))
            self._kvma(mm, kvma.mremap, start, end, dst)
            if had:
                self._unmapped(mm, dst, dst + (end - start))
            self.ref.move(mm, start, end, dst)  # type: ignore[arg-type]
            for handle in self.gup.values():
                if handle.mm is mm:
                    handle.vpns = [v + delta if v is not None and start <= v < end else v for v in handle.vpns]
            self._end()
            return dst << PAGE_SHIFT
        self._do_munmap(mm, dst, dst + (end - start))
        vma = self._vmas_for(mm, start, end)[0]
        delta = dst - start
        po, nrp = self.po, self.P
        ptes, pmds = self.mappings(mm)
        self.ensure(tables=2 * (len(pmds) + len(ptes) // nrp + 2) + 4)
        args = (self.glob, self.tb, self.ptf, self.hk, self.hv, mm.num)
        for idx in sorted(i for i in pmds if start >> po <= i <= (end - 1) >> po):
            whole = start <= idx << po and (idx + 1) << po <= end
            if whole and not delta & (nrp - 1):  # move_huge_pmd()
                t = kern.hfind(self.hk, self.hv, (mm.num << 40) | idx)
                f, w = int(self.tb[t, L.TB_PMDF]), int(self.tb[t, L.TB_PMDW])
                self.tb[t, L.TB_PMDF] = L.NONE
                self.tb[t, L.TB_PMDW] = 0
                d = kern.table_get(*args, idx + (delta >> po), True)
                self.tb[d, L.TB_PMDF] = f
                self.tb[d, L.TB_PMDW] = w
            else:
                self._split_pmd(mm, idx)
        ptes, _ = self.mappings(mm)
        moved = sorted(v for v in ptes if start <= v < end)
        self.ensure(tables=len(moved) // nrp + 4)
        oracle = bool(self.opt[L.O_ORACLE])
        for vpn in moved:  # move_ptes()
            s, t = vpn & (nrp - 1), kern.hfind(self.hk, self.hv, (mm.num << 40) | (vpn >> po))
            nv = vpn + delta
            d = kern.table_get(*args, nv >> po, True)
            ds = nv & (nrp - 1)
            self.ptf[d, ds], self.ptp[d, ds], self.ptw[d, ds] = self.ptf[t, s], self.ptp[t, s], self.ptw[t, s]
            if oracle:
                self.pexp[d, ds], self.pexp[t, s] = self.pexp[t, s], 0
            self.ptf[t, s] = L.NONE
            self.ptw[t, s] = 0
            self.tb[t, L.TB_NPTE] -= 1
            self.tb[d, L.TB_NPTE] += 1
            self.tb[d, L.TB_HASPT] = 1
        mm.vmas.remove(vma)
        mm.insert_vma(vma.clone(start=dst, end=dst + (end - start)))
        self._touch(mm, start, end)
        self._touch(mm, dst, dst + (end - start))
        self._publish(mm)
        self.ref.move(mm, start, end, dst)  # type: ignore[arg-type]
        for handle in self.gup.values():
            if handle.mm is mm:
                handle.vpns = [v + delta if v is not None and start <= v < end else v for v in handle.vpns]
        self._free_pte_tables(mm, start, end)
        self._end()
        return dst << PAGE_SHIFT

    def clear_refs(self, task_name: str) -> int:
        """``echo 4 > /proc/PID/clear_refs``: soft-dirty armed on every VMA, every PTE and PMD write-protected."""
        task = self._runnable(task_name)
        self._begin(task)
        mm = task.mm
        self._sync(mm)
        for vma in mm.vmas:
            vma.softdirty_wp = True
        self._touch(mm, -1, 1 << 62)
        self.vm[mm.rows, L.V_MAPSW] = 0  # Vma.maps_writable: write-notify now (soft-dirty armed)
        self.vm[mm.rows, L.V_SDWP] = 1
        ts = self._mm_tables(mm)
        self.tb[ts, L.TB_PMDW] = 0
        self.ptw[ts] &= np.uint8(L.PW_CLEAR)
        self._end()
        return 0

    def madvise(self, task_name: str, addr: int, length: int, advice: str) -> int:
        task = self._runnable(task_name)
        if advice not in MADVISE:
            raise SimError(f"unknown madvise advice {advice!r} (known: {', '.join(MADVISE)})")
        if advice in UNSUPPORTED_ADVICE:
            raise Unsupported(f"MADV_{advice.upper()} (its folio split)")
        rng0 = self._range(addr, length)
        if advice in ("cold", "pageout") and not self.record and rng0 is not None and any(
                v.file is not None for v in task.mm.vmas_in(*rng0)):
            raise Unsupported(f"MADV_{advice.upper()} over a file or shmem mapping without the rmap trace (the "
                              "page cache follows a page-cache folio's split through the trace)")
        self._begin(task)
        rng = self._range(addr, length)
        if rng is None:
            return self._fail("madvise", -EINVAL)
        mm = task.mm
        start, end = rng
        hole = not mm.covered(start, end)
        if advice in ("cold", "pageout"):
            self._cold_pageout(mm, [(max(start, v.start), min(end, v.end)) for v in mm.vmas_in(start, end)], advice)
        elif advice == "dontneed":
            self._zap(mm, [(max(start, v.start), min(end, v.end)) for v in mm.vmas_in(start, end)])
            self.ref.dontneed(mm, start, end)  # type: ignore[arg-type]
            for handle in self.gup.values():
                if handle.mm is mm:
                    handle.vpns = [None if v is not None and start <= v < end else v for v in handle.vpns]
        elif self.compiled_vmas:
            if advice in ("dontfork", "dofork"):
                verb, mask = kvma.MA_DONTFORK if advice == "dontfork" else kvma.MA_DOFORK, 0
            else:
                madv = self.options.thp_madvise
                verb, mask = kvma.MA_THP, self.codec.thp(frozenset() if advice == "nohugepage" else (
                    self.options.thp | (madv if madv is not None else frozenset({self.po}))))
            self._kvma(mm, kvma.madvise_flags, start, end, verb, mask)
        else:
            for vma in self._vmas_for(mm, start, end):
                if advice in ("dontfork", "dofork"):
                    vma.dontfork = advice == "dontfork"
                elif vma.is_anon and not vma.shared:
                    madv = self.options.thp_madvise
                    vma.thp = frozenset() if advice == "nohugepage" else (
                        self.options.thp | (madv if madv is not None else frozenset({self.po})))
            self._touch(mm, start, end)
            self._merge(mm)
            self._publish_changed(mm)
        if hole:
            return self._fail(f"madvise({advice})", -ENOMEM, "part of the range is not mapped")
        self._end()
        return 0

    # ------------------------------------------------------------------ accesses
    def _access_check(self, task: FastTask, start: int, end: int, write: bool) -> bool:
        if mmapops.first_bad_access(task.mm.vmas, start, end, write) is None:
            return True
        self.pycount["SIGSEGV"] += 1
        return False

    def _run_access(self, ops: I64, task_names: list[str] | None = None) -> None:
        """Run access rows (mm, start, pages, write, fill, unshare) through the compiled fault loop.

        ``task_names`` (one per row) name the tasks of the faults (:attr:`user_faults`) and of the CoW decisions.
        """
        first = 0
        while True:
            rc, first = kern.access(*self.args(), self.pexp, self.pcache.fc, self.pcache.pcs, ops, first, self.faultbuf)
            nf = int(self.glob[L.G_NGATHER])
            cow_tasks: list[str] | None = None
            if task_names is not None and (self.keep_decisions or self.record):
                faults = self.faultbuf[:nf].tolist()
                for i, vpn in faults:
                    self.user_faults.append((self.step, task_names[i], vpn, bool(ops[i, 3])))
                cow_tasks = self._decision_tasks(ops, faults, task_names)
            FF.privatize_copies(self)
            self._drain(cow_tasks)
            if rc == L.RC_UNSUPPORTED and int(self.glob[L.G_ERR]) == L.U_FILE_FAULT:
                FF.service(self, ops, first, task_names[first] if task_names is not None else self.task_name)
                continue
            if rc == L.RC_ROOM:
                if nf >= self.faultbuf.shape[0] - 1:  # the fault list is full: only a caller that keeps it grows it
                    if task_names is not None and (self.keep_decisions or self.record):
                        self.faultbuf = np.zeros((2 * self.faultbuf.shape[0], 2), dtype=np.int64)
                else:
                    self._grow_after_room()
                continue
            self._check_rc(rc)
            return

    def _decision_tasks(self, ops: I64, faults: list[list[int]], task_names: list[str]) -> list[str]:
        """The task of each pending CoW decision: that of the fault (in order) at the decision's MM and address."""
        out = []
        k = 0
        for row in self.cow[:int(self.glob[L.G_NCOW])].tolist():
            while k < len(faults) and not (faults[k][1] == row[L.C_VPN] and ops[faults[k][0], 0] == row[L.C_MM]):
                k += 1
            out.append(task_names[faults[k][0]] if k < len(faults) else (self.task_name or "?"))
        return out

    def lookup_slot(self, mm: FastMM, vpn: int) -> tuple[int, int, bool, bool]:
        """(folio slot or ZERO/HUGE_ZERO/NONE, page, writable, by PMD)."""
        f, page, write, by_pmd = kern.lookup(self.cfg, self.glob, self.tb, self.ptf, self.ptp, self.ptw, self.hk,
                                             self.hv, mm.num, vpn)
        return int(f), int(page), bool(write), bool(by_pmd)

    def lookup(self, mm: FastMM, vpn: int) -> tuple[FolioView, int, bool] | None:
        f, page, write, _ = self.lookup_slot(mm, vpn)
        if f == L.NONE:
            return None
        return self.view(f), page, write

    def view(self, f: int) -> FolioView:
        if f == L.ZERO:
            return FolioView("zero", True, 0)
        if f == L.HUGE_ZERO:
            return FolioView("huge_zero", True, self.po)
        return FolioView(f"f{int(self.fs[f, L.X_NAME])}", False, int(self.fs[f, K.F_ORDER]), self, f,
                         int(self.fs[f, L.X_KIND]), self.pcache.file_of(self.fs, f))

    def content(self, f: int, page: int) -> bytes:
        if f < 0:
            return ZERO_PAGE
        cid = int(self.pct[int(self.fs[f, K.F_OFF]) + page])
        return filled_page(cid) if cid < 256 else self.pages[cid - 256]

    def content_id(self, data: bytes) -> int:
        if data.count(data[0]) == PAGE_SIZE:
            return data[0]
        cid = self._page_ids.get(data)
        if cid is None:
            cid = self._page_ids[data] = 256 + len(self.pages)
            self.pages.append(data)
        return cid

    def read(self, task_name: str, addr: int, length: int = 1) -> bytes | None:
        task = self._runnable(task_name)
        if length <= 0 or addr < 0:
            raise SimError(f"a read needs a positive length and address, not {length} at {addr}")
        self._begin(task)
        start, end = addr >> PAGE_SHIFT, (addr + length - 1 >> PAGE_SHIFT) + 1
        if not self._access_check(task, start, end, False):
            self._end()
            return None
        mm = task.mm
        self._run_access(np.array([[mm.num, start, end - start, 0, -1, 0]], dtype=np.int64), [task.name])
        self._sync(mm)
        out = bytearray()
        for vpn in range(start, end):
            f, page, _, _ = self.lookup_slot(mm, vpn)
            lo = addr - (vpn << PAGE_SHIFT) if vpn == start else 0
            hi = min(PAGE_SIZE, addr + length - (vpn << PAGE_SHIFT))
            out += self.content(f, page)[lo:hi]
        self._end()
        return bytes(out)

    def write(self, task_name: str, addr: int, data: bytes) -> bool:
        task = self._runnable(task_name)
        if not data or addr < 0:
            raise SimError("a write needs at least one byte at a non-negative address")
        self._begin(task)
        start, end = addr >> PAGE_SHIFT, (addr + len(data) - 1 >> PAGE_SHIFT) + 1
        if not self._access_check(task, start, end, True):
            self._end()
            return False
        mm = task.mm
        whole = addr % PAGE_SIZE == 0 and len(data) % PAGE_SIZE == 0 and data.count(data[0]) == len(data)
        fill = data[0] if whole else -1
        self._run_access(np.array([[mm.num, start, end - start, 1, fill, 0]], dtype=np.int64), [task.name])
        self._sync(mm)
        pos = 0
        for vpn in range(start, end):
            vma = mm.find_vma(vpn)
            assert vma is not None
            off = addr + pos - (vpn << PAGE_SHIFT)
            chunk = data[pos:pos + PAGE_SIZE - off]
            if not whole:
                f, page, _, _ = self.lookup_slot(mm, vpn)
                new = write_into(self.content(f, page), off, chunk)
                self.pct[int(self.fs[f, K.F_OFF]) + page] = self.content_id(new)
            self.ref.write(mm, vma, vpn, off, chunk)  # type: ignore[arg-type]
            pos += len(chunk)
        self._end()
        return True

    # ------------------------------------------------------------------ pins
    def pin(self, task_name: str, handle: str, addr: int, length: int, *, write: bool = False,
            longterm: bool = True, fast: bool = False) -> int:
        """``pin_user_pages()`` (foliosim.vm.gup.gup with FOLL_PIN)."""
        return self._gup(task_name, handle, addr, length, write=write, longterm=longterm, foll_pin=True)

    def vmsplice(self, task_name: str, handle: str, addr: int, length: int) -> int:
        """``vmsplice()`` into a pipe: plain FOLL_GET references on at most ``vmsplice_max_pages`` pages."""
        return self._gup(task_name, handle, addr, length, write=False, longterm=False, foll_pin=False)

    def _gup(self, task_name: str, handle: str, addr: int, length: int, *, write: bool, longterm: bool,
             foll_pin: bool) -> int:
        """foliosim.vm.gup.gup(): every page of the range pinned (or referenced), all or nothing."""
        task = self._runnable(task_name)
        if not handle or handle in self.gup:
            raise SimError(f"pin/pipe name {handle!r} is already in use" if handle else "empty pin name")
        self._begin(task)
        what = "pin" if foll_pin else "vmsplice"
        if addr < 0 or addr % PAGE_SIZE or length <= 0:
            return self._fail(what, -EINVAL)
        start = addr >> PAGE_SHIFT
        nr = (length + PAGE_SIZE - 1) // PAGE_SIZE
        if not foll_pin:
            nr = min(nr, self.options.vmsplice_max_pages)
        mm = task.mm
        for vpn in range(start, start + nr):
            vma = mm.find_vma(vpn)
            if vma is None or not vma.read or (write and not vma.write):
                return self._fail(what, -EFAULT)
        if foll_pin and not mm.has_pinned:
            mm.has_pinned = True
            self.ms[mm.num, L.MS_PINNED] = 1
        pages: list[tuple[int, int]] = []
        vpns: list[int | None] = []
        shared: list[tuple[str, int] | None] = []
        for vpn in range(start, start + nr):
            f, page = self._follow(task, mm, vpn, write, longterm, foll_pin)
            if f >= 0:
                if not foll_pin:
                    self.fs[f, L.X_REF] += 1
                    self.fs[f, L.X_REFS] += 1
                elif self.config.has_pincount(int(self.fs[f, K.F_ORDER])):
                    self.fs[f, L.X_REF] += 1
                    self.fs[f, L.X_PINCOUNT] += 1
                else:
                    self.fs[f, L.X_REF] += kern.GUP_PIN_COUNTING_BIAS
                if foll_pin:
                    self.fs[f, L.X_PINS] += 1
                    self.pinned_pages += 1 << int(self.fs[f, K.F_ORDER])
            pages.append((f, page))
            vma = mm.find_vma(vpn)
            coherent = (f >= 0 and self.fs[f, L.X_KIND] == L.KIND_ANON) or (vma is not None and vma.shared) or (
                foll_pin and longterm)
            vpns.append(vpn if coherent else None)  # where the kernel promises coherence
            shared.append((vma.file.name, vma.file_index(vpn)) if vma is not None and vma.shared
                          and vma.file is not None else None)
        self.gup[handle] = PinHandle(handle, task.name, mm, foll_pin, pages, vpns, [set() for _ in pages], shared)
        self.pycount[what] += 1
        self._sync(mm)
        self._end()
        return nr

    def _follow(self, task: FastTask, mm: FastMM, vpn: int, write: bool, longterm: bool,
                foll_pin: bool = True) -> tuple[int, int]:
        """``follow_page_mask()`` + ``faultin_page()`` until the page can be grabbed (foliosim.vm.gup._follow)."""
        for _ in range(4):
            f, page, writable, by_pmd = self.lookup_slot(mm, vpn)
            if f == L.NONE:
                self._fault(task, mm, vpn, write, False)
                continue
            if write and not writable:
                self._fault(task, mm, vpn, True, False)
                continue
            if not foll_pin or write:
                return f, page
            if f >= 0 and self.fs[f, L.X_KIND] != L.KIND_ANON:  # gup_must_unshare() of a page-cache page
                vma = mm.find_vma(vpn)
                if longterm and vma is not None and not vma.shared:
                    self._fault(task, mm, vpn, False, True)
                    continue
                return f, page
            if f >= 0 and not self.pex[int(self.fs[f, K.F_OFF]) + (0 if by_pmd else page)]:
                self._fault(task, mm, vpn, False, True)  # gup_must_unshare(): FAULT_FLAG_UNSHARE
                continue
            if f < 0 and longterm:  # gup_must_unshare(): a long-term R/O pin of the zero page
                self._fault(task, mm, vpn, False, True)
                continue
            return f, page
        raise AssertionError(f"GUP did not converge at {vpn << PAGE_SHIFT:#x}")

    def _fault(self, task: FastTask, mm: FastMM, vpn: int, write: bool, unshare: bool) -> None:
        self._run_access(np.array([[mm.num, vpn, 1, int(write), -2, int(unshare)]], dtype=np.int64))

    def unpin(self, handle: str) -> int:
        h = self.gup.get(handle)
        if h is None:
            raise SimError(f"no pin or pipe {handle!r} (known: {', '.join(sorted(self.gup)) or 'none'})")
        self._begin()
        del self.gup[handle]
        self.ensure(trace=4 * len(h.pages) + 8)
        for f, _page in h.pages:
            if f < 0:
                continue
            if not h.foll_pin:
                self.fs[f, L.X_REFS] -= 1
                ok = kern.put(self.cfg, self.glob, self.opt, self.fs, self.pmc, self.tr, f, 1)
                self._drain()
                if not ok:
                    self._check_rc(L.RC_ERROR)
                continue
            self.fs[f, L.X_PINS] -= 1
            self.pinned_pages -= 1 << int(self.fs[f, K.F_ORDER])
            if self.config.has_pincount(int(self.fs[f, K.F_ORDER])):
                self.fs[f, L.X_PINCOUNT] -= 1
                nr = 1
            else:
                nr = kern.GUP_PIN_COUNTING_BIAS
            ok = kern.put(self.cfg, self.glob, self.opt, self.fs, self.pmc, self.tr, f, nr)
            self._drain()
            if not ok:
                self._check_rc(L.RC_ERROR)
        self._end()
        return 0

    def read_pinned(self, handle: str) -> bytes:
        h = self.gup.get(handle)
        if h is None:
            raise SimError(f"no pin or pipe {handle!r} (known: {', '.join(sorted(self.gup)) or 'none'})")
        self._begin()
        out = b"".join(self.content(f, page) for f, page in h.pages)
        self._end()
        return out

    # ------------------------------------------------------------------ views and checks
    def export_folio(self, f: int) -> Folio:
        """Folio slot ``f`` as a reference :class:`Folio` (every field, refcount and pincount included)."""
        row = self.fs[f].tolist()
        folio = Folio(self.config, int(row[K.F_ORDER]))
        off = int(row[K.F_OFF])
        folio.page_mapcount = self.pmc[off:off + folio.nr_pages].tolist()
        folio.large_mapcount = row[K.F_LARGE]
        folio.entire_mapcount = row[K.F_ENTIRE]
        folio.nr_pages_mapped = row[K.F_NPM]
        folio.mm_id_mapcount = [row[K.F_MMC0], row[K.F_MMC1]]
        word = int(row[K.F_ID0]) | (int(row[K.F_ID1]) << self.config.slot_shift)
        if row[K.F_SHARED]:
            word |= self.config.shared_bit
        folio.mm_ids = word
        folio.refcount = row[L.X_REF]
        folio.pincount = row[L.X_PINCOUNT]
        return folio

    def live_folios(self) -> list[int]:
        """Live folio slots in allocation order (the reference's dict order)."""
        n = int(self.glob[L.G_NFOLIO])
        idx = np.flatnonzero(self.fs[:n, K.F_LIVE])
        return [int(i) for i in idx[np.argsort(self.fs[idx, L.X_NAME], kind="stable")]]

    def mappings(self, mm: FastMM) -> tuple[dict[int, tuple[int, int, bool, bool]], dict[int, tuple[int, bool]]]:
        """(vpn -> (folio, page, write, dirty)) of the PTEs and (pmd index -> (folio, write)) of the PMDs."""
        ptes: dict[int, tuple[int, int, bool, bool]] = {}
        pmds: dict[int, tuple[int, bool]] = {}
        for t in self._mm_tables(mm).tolist():
            idx = int(self.tb[t, L.TB_IDX])
            if self.tb[t, L.TB_PMDF] != L.NONE:
                pmds[idx] = (int(self.tb[t, L.TB_PMDF]), bool(self.tb[t, L.TB_PMDW]))
            if self.tb[t, L.TB_NPTE]:
                row = self.ptf[t]
                present = np.flatnonzero(row != L.NONE)
                w = self.ptw[t, present]
                ptes.update(zip((present + (idx << self.po)).tolist(),
                                zip(row[present].tolist(), self.ptp[t, present].tolist(), ((w & L.PW) != 0).tolist(),
                                    ((w & L.PD) != 0).tolist(), strict=True), strict=True))
        return ptes, pmds

    def _ptes_in(self, mm: FastMM, start: int, end: int) -> list[int]:
        """The present PTEs in ``[start, end)``, in order (``Machine._ptes_in()``)."""
        ptes, _ = self.mappings(mm)
        return sorted(v for v in ptes if start <= v < end)

    def _pmds_in(self, mm: FastMM, start: int, end: int) -> list[int]:
        _, pmds = self.mappings(mm)
        lo, hi = start >> self.po, ((end - 1) >> self.po) + 1
        return sorted(i for i in pmds if lo <= i < hi)

    def check(self) -> list[str]:
        """The isolation oracle (every present or privately written page reads what the reference says) and the
        folio invariants (refcount accounting, no AnonExclusive page mapped twice, no false "exclusive")."""
        from foliosim.fast.sim.oracle import check_fast

        if not self.keep_reference:
            raise Unsupported("check() on a FastMachine made with reference=False")
        return check_fast(self)
