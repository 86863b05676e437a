"""The simulated machine: tasks, MMs, syscalls, and the glue to the rmap core.

Public methods are the user-visible operations (fork, mmap, read, write, pin,
...). Each is one *step*: it validates its arguments first (a bad request
raises :class:`SimError` or returns ``-errno`` and changes nothing), then
applies the kernel's behaviour, emitting :class:`Event` objects to every
observer. Every rmap call goes through :class:`~foliosim.system.RmapSystem`
and is appended to :attr:`Machine.trace` as an :class:`~foliosim.system.Op`,
so ``foliosim replay`` reproduces the folio states.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from foliosim.errors import MMIdExhausted, Rejected
from foliosim.folio import folio_maybe_mapped_shared
from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD, PTE, RmapLevel, RmapResult
from foliosim.system import Op, RmapSystem
from foliosim.vm import mmapops
from foliosim.vm.events import (
    EFAULT,
    EINVAL,
    ENOMEM,
    CowDecision,
    Event,
    OracleViolation,
    SimError,
)
from foliosim.vm.memory import PAGE_SHIFT, PAGE_SIZE, ZERO_PAGE, SparsePages, filled_page, write_into
from foliosim.vm.mm import MM, Task
from foliosim.vm.oracle import GupHandle, ReferenceMemory, check_machine
from foliosim.vm.pagecache import SimFile
from foliosim.vm.pagetable import FolioKind, Pte, SimFolio
from foliosim.vm.vma import Vma

if TYPE_CHECKING:
    from foliosim.vm.split import SplitResult

#: Where the first mapping without a fixed address goes (a PMD-aligned, user-looking address).
MMAP_BASE = 0x10000000
MADVISE = ("dontneed", "cold", "pageout", "dontfork", "dofork", "hugepage", "nohugepage")


@dataclass(frozen=True, slots=True)
class MachineOptions:
    """Machine-wide settings (sysfs knobs and simulator switches).

    ``thp`` are the anon folio orders every new private anonymous VMA may use
    (the "always" sizes); ``thp_madvise`` the extra ones MADV_HUGEPAGE enables
    (None: the PMD order). ``use_zero_page`` is THP's use_zero_page (the huge
    zero page on read faults). ``check`` runs the isolation oracle and the
    invariant checks after every step.
    """

    thp: frozenset[int] = frozenset()
    thp_madvise: frozenset[int] | None = None
    use_zero_page: bool = True
    fault_around_pages: int = 16
    vmsplice_max_pages: int = 16
    check: bool = False
    keep_events: bool = True


Observer = Callable[[Event], None]
#: A pluggable "maybe mapped shared?" answer for consumer decisions: (folio, consumer) -> maybe shared.
SharingHook = Callable[[SimFolio, str], bool]


@dataclass(slots=True)
class _Gather:
    """An mmu_gather: references to drop once the TLB is flushed (tlb_finish_mmu())."""

    puts: list[tuple[SimFolio, int]] = field(default_factory=list)


class Machine:
    """A simulated Linux v6.15 machine with one physical memory and many tasks."""

    def __init__(self, config: KernelConfig | None = None, options: MachineOptions | None = None) -> None:
        self.config = config or KernelConfig()
        self.options = options or MachineOptions()
        for order in self.options.thp:
            self._check_anon_order(order)
        self.rmap = RmapSystem(self.config)
        self.trace: list[Op] = []
        self.events: list[Event] = []
        self.observers: list[Observer] = []
        self.sharing: SharingHook | None = None  # None: the kernel's folio_maybe_mapped_shared()
        self.tasks: dict[str, Task] = {}
        self.mms: dict[str, MM] = {}
        self.folios: dict[str, SimFolio] = {}
        self.files: dict[str, SimFile] = {}
        self.gup: dict[str, GupHandle] = {}
        self.holders: dict[str, tuple[MM, str]] = {}
        self.counters: Counter[str] = Counter()
        self.cow_decisions: list[CowDecision] = []
        #: every user page fault taken by read()/write(): (step, task, vpn, write), as page_fault_user reports them
        self.user_faults: list[tuple[int, str, int, bool]] = []
        self.ref = ReferenceMemory()
        self.step = 0
        self.task_name: str | None = None  # the task the current step runs for
        self._next = {"pid": 1, "mm": 1, "folio": 1, "anon_vma": 1, "shmem": 1}
        self._mmap_base = MMAP_BASE >> PAGE_SHIFT
        pmd_nr = 1 << self.config.pmd_order
        self.zero = SimFolio("zero", FolioKind.ZERO, 0, None, [ZERO_PAGE])
        self.huge_zero = SimFolio("huge_zero", FolioKind.ZERO, self.config.pmd_order, None, [ZERO_PAGE] * pmd_nr)

    # ------------------------------------------------------------------ basics
    @property
    def pmd_order(self) -> int:
        return self.config.pmd_order

    @property
    def pmd_pages(self) -> int:
        return 1 << self.config.pmd_order

    def _check_anon_order(self, order: int) -> None:
        mmapops.check_anon_order(order, self.config.pmd_order)

    def _name(self, kind: str) -> str:
        value = self._next[kind]
        self._next[kind] = value + 1
        return f"{'f' if kind == 'folio' else kind}{value}"

    def emit(self, kind: str, text: str, cow: CowDecision | None = None, **data: Any) -> Event:
        event = Event(self.step, kind, self.task_name, text, data, cow)
        if self.options.keep_events:
            self.events.append(event)
        for observer in self.observers:
            observer(event)
        return event

    def _begin(self, task: Task | None = None) -> None:
        self.step += 1
        self.task_name = task.name if task is not None else None

    def _end(self) -> None:
        for handle in self.gup.values():
            handle.track(self)
        if self.options.check:
            problems = check_machine(self)
            if problems:
                self.emit("oracle", "; ".join(problems))
                raise OracleViolation("; ".join(problems))

    def check(self) -> list[str]:
        """Run the isolation oracle and every invariant now; return the violations."""
        return check_machine(self)

    def task(self, name: str) -> Task:
        task = self.tasks.get(name)
        if task is None:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise SimError(f"no task {name!r} (tasks: {known})")
        return task

    def _runnable(self, name: str) -> Task:
        task = self.task(name)
        if task.vfork_blocked:
            raise SimError(f"task {name!r} sleeps in vfork() until its child execs or exits")
        return task

    # ------------------------------------------------------------- rmap glue
    def _record(self, op: Op) -> RmapResult | int | Any:
        try:
            result = self.rmap.apply(op)
        except Rejected as exc:  # the simulator asked for something the kernel never does
            raise OracleViolation(f"the rmap core rejected {op.to_json()}: {exc.reason}") from exc
        self.trace.append(op)
        self.counters[f"rmap {op.op}"] += 1
        owner = result.owner.name.lower() if isinstance(result, RmapResult) and result.owner is not None else None
        self.emit("rmap", op.describe(), op=op, owner=owner)
        return result

    def _map_new_anon(self, f: SimFolio, mm: MM) -> None:
        level = PMD if f.order >= self.pmd_order else PTE
        self._record(Op("map_new_anon", mm.name, f.name, None, level))

    def _rmap_add(self, f: SimFolio, mm: MM, level: RmapLevel, page: int = 0, nr: int = 1) -> None:
        self._record(Op("map", mm.name, f.name, None, level, page, nr))

    def _rmap_dup(self, f: SimFolio, mm: MM, level: RmapLevel, page: int = 0, nr: int = 1) -> None:
        self._record(Op("dup", mm.name, f.name, None, level, page, nr))

    def _rmap_remove(self, f: SimFolio, mm: MM, level: RmapLevel, page: int = 0, nr: int = 1) -> None:
        result = self._record(Op("unmap", mm.name, f.name, None, level, page, nr))
        if isinstance(result, RmapResult) and result.partially_mapped and f.is_anon and not f.deferred_split:
            f.deferred_split = True  # deferred_split_folio(folio, true)
            self.counters["deferred split queued"] += 1
            self.emit("decision", f"{f.name} is partially mapped: queued for deferred split", folio=f.name)

    def alloc_folio(self, kind: FolioKind, order: int, data: list[bytes] | None = None) -> SimFolio:
        """Allocate a folio (refcount 1, prep_compound_head()) and record folio_new."""
        f = self.new_folio(kind, order, data)
        self.counters[f"alloc {kind.value} order {order}"] += 1
        return f

    def new_folio(self, kind: FolioKind, order: int, data: list[bytes] | None = None) -> SimFolio:
        """A folio with refcount 1 under a fresh name, recorded as folio_new (no allocation counted:
        a folio split uses it for the pieces of the old folio)."""
        name = self._name("folio")
        self._record(Op("folio_new", None, name, order))
        core = self.rmap.folio(name)
        nr = 1 << order
        f = SimFolio(name, kind, order, core, data if data is not None else [ZERO_PAGE] * nr, [False] * nr)
        self.folios[name] = f
        return f

    def free_folio(self, f: SimFolio) -> None:
        """Record folio_free and forget ``f`` (its refcount already reached 0 or was frozen)."""
        self._record(Op("folio_free", None, f.name))
        f.freed = True
        del self.folios[f.name]

    def get(self, f: SimFolio, nr: int = 1) -> None:
        """folio_ref_add(): references go up before a mapcount does."""
        if f.folio is not None:
            f.folio.refcount += nr

    def put(self, f: SimFolio, nr: int = 1) -> None:
        """folio_put_refs(): drops references; the last one frees the folio."""
        if f.folio is None:
            return
        f.folio.refcount -= nr
        if f.folio.refcount < 0:
            raise OracleViolation(f"{f.name}: refcount went negative")
        if f.folio.refcount == 0:
            self.free_folio(f)
            self.emit("free", f"{f.name} (order {f.order}, {f.kind.value}) freed", folio=f.name)

    def anon_vma_prepare(self, vma: Vma) -> None:
        if vma.anon_vma is None:
            vma.anon_vma = self._next["anon_vma"]
            self._next["anon_vma"] += 1

    # ------------------------------------------------------------ MM lifetime
    def _new_mm(self, label: str) -> MM | None:
        name = self._name("mm")
        try:
            mm_id = self.rmap.mm_new(name)
        except MMIdExhausted:
            self._next["mm"] -= 1
            return None
        self.trace.append(Op("mm_new", name))
        mm = MM(name, mm_id, label=label)
        self.mms[name] = mm
        self.ref.mm_new(mm)
        self.emit("mm", f"{name} created (mm_init: MM id {mm_id})", mm=name, mm_id=mm_id)
        return mm

    def mmput(self, mm: MM) -> None:
        """``mmput()``: drop a user; the last one runs exit_mmap() and drops mm_count."""
        mm.users -= 1
        if mm.users == 0:
            self.exit_mmap(mm)
            self.mmdrop(mm)

    def mmdrop(self, mm: MM) -> None:
        """``mmdrop()``: the last reference runs __mmdrop(), which frees the MM id."""
        mm.count -= 1
        if mm.count == 0:
            self._record(Op("mm_free", mm.name))
            del self.mms[mm.name]
            self.emit("mm", f"{mm.name} freed (__mmdrop: MM id {mm.mm_id} released)", mm=mm.name, mm_id=mm.mm_id)

    def exit_mmap(self, mm: MM) -> None:
        """``exit_mmap()`` -> ``unmap_vmas()``: every VMA in turn; the cost follows the present entries."""
        gather = _Gather()
        vpns = sorted(mm.ptes)  # a PMD mapping lies inside one VMA: zapping whole VMAs never adds PTEs
        for vma in list(mm.vmas):
            lo, hi = bisect.bisect_left(vpns, vma.start), bisect.bisect_left(vpns, vma.end)
            self._zap(mm, vma.start, vma.end, gather, vpns[lo:hi])
        self._flush(gather)
        for handle in self.gup.values():
            handle.untrack(mm, 0, 1 << 62)
        mm.vmas.clear()
        mm.pte_tables.clear()
        mm.zapped = True
        self.ref.mm_gone(mm)
        self.emit("mm", f"{mm.name}: exit_mmap() unmapped everything", mm=mm.name)

    # ------------------------------------------------------------- tasks
    def spawn(self, name: str) -> int:
        """A new process with a fresh MM (as after execve() of init); returns its pid or -ENOMEM."""
        self._require_new_task(name)
        self._begin()
        mm = self._new_mm(name)
        if mm is None:
            self._end()
            return -ENOMEM
        task = self._add_task(name, mm, None)
        self.task_name = name
        self.emit("task", f"{name} (pid {task.pid}) starts on {mm.name}", pid=task.pid)
        self._end()
        return task.pid

    def _require_new_task(self, name: str) -> None:
        if not name or name in self.tasks:
            raise SimError(f"task name {name!r} is already in use" if name else "empty task name")

    def _add_task(self, name: str, mm: MM, tgid: int | None) -> Task:
        pid = self._next["pid"]
        self._next["pid"] += 1
        task = Task(pid, name, mm, tgid if tgid is not None else pid)
        self.tasks[name] = task
        return task

    def fork(self, parent: str, child: str) -> int:
        """``fork()``: a new MM, dup_mmap(), copy_page_range(); returns the child's pid or -ENOMEM."""
        from foliosim.vm.fork import dup_mmap

        task = self._runnable(parent)
        self._require_new_task(child)
        self._begin(task)
        mm = self._new_mm(child)
        if mm is None:
            self.emit("syscall", f"fork() by {parent} -> -ENOMEM (no free MM id)")
            self._end()
            return -ENOMEM
        new = self._add_task(child, mm, None)
        self.emit("task", f"{parent} forks {child} (pid {new.pid}) on {mm.name}", pid=new.pid)
        dup_mmap(self, task.mm, mm)
        self.counters["fork"] += 1
        self._end()
        return new.pid

    def clone_vm(self, parent: str, child: str, vfork: bool = False) -> int:
        """``clone(CLONE_VM)`` (a thread) or ``vfork()``: the child shares the MM and its id."""
        task = self._runnable(parent)
        self._require_new_task(child)
        self._begin(task)
        task.mm.users += 1  # mmget() in copy_mm()
        new = self._add_task(child, task.mm, None if vfork else task.tgid)
        if vfork:
            new.vfork_parent = task
            task.vfork_blocked = True
            self.emit("task", f"{parent} vforks {child} (pid {new.pid}) on {task.mm.name}; {parent} sleeps",
                      pid=new.pid)
        else:
            self.emit("task", f"{parent} creates thread {child} (pid {new.pid}) on {task.mm.name}", pid=new.pid)
        self._end()
        return new.pid

    def execve(self, name: str) -> int:
        """``execve()``: other threads die, the task gets a fresh MM, the old one is mmput()."""
        task = self._runnable(name)
        self._begin(task)
        mm = self._new_mm(name)
        if mm is None:
            self.emit("syscall", f"execve() by {name} -> -ENOMEM (no free MM id)")
            self._end()
            return -ENOMEM
        for other in [t for t in self.tasks.values() if t.tgid == task.tgid and t is not task]:
            self._exit_task(other, "killed by de_thread() in execve()")
        old = task.mm
        task.mm = mm
        task.tgid = task.pid
        self.emit("task", f"{name} execs: now on {mm.name}", mm=mm.name)
        self._release_vfork(task)
        self.mmput(old)
        self._end()
        return 0

    def exit(self, name: str) -> int:
        """``exit()``: exit_mm() -> mmput(); wakes a vfork parent."""
        task = self._runnable(name)
        self._begin(task)
        self._exit_task(task, "exits")
        self._end()
        return 0

    def _exit_task(self, task: Task, why: str) -> None:
        task.alive = False
        del self.tasks[task.name]
        self.emit("task", f"{task.name} (pid {task.pid}) {why}", pid=task.pid)
        for handle in [h for h in self.gup.values() if h.task == task.name]:
            handle.owner_exited = True
        self._release_vfork(task)
        self.mmput(task.mm)

    def _release_vfork(self, task: Task) -> None:
        if task.vfork_parent is not None:
            task.vfork_parent.vfork_blocked = False
            self.emit("task", f"{task.vfork_parent.name} wakes up from vfork()")
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
        what = "mmget (mm_users" if users else "mmgrab (mm_count"
        self.emit("mm", f"{holder}: {what} of {mm.name} -> users {mm.users}, count {mm.count})")
        self._end()
        return 0

    def mm_release(self, holder: str) -> int:
        """The matching ``mmdrop()`` / ``mmput()``."""
        if holder not in self.holders:
            raise SimError(f"no holder {holder!r} (holders: {', '.join(sorted(self.holders)) or 'none'})")
        self._begin()
        mm, how = self.holders.pop(holder)
        self.emit("mm", f"{holder}: {'mmput' if how == 'users' else 'mmdrop'} of {mm.name}")
        if how == "users":
            self.mmput(mm)
        else:
            self.mmdrop(mm)
        self._end()
        return 0

    # ------------------------------------------------------------- files
    def create_file(self, name: str, size: int, order: int = 0, fill: int = 0, shmem: bool = False) -> None:
        """A file (or shmem object) of ``size`` bytes whose page cache uses folios of ``order``.

        A shmem object has no backing store (no swap here): its data lives only in the page cache, so an
        object created with content (``fill``, zero by default) is cached whole at creation, as writing it
        page by page leaves it (mm/shmem.c shmem_get_folio_gfp() allocates a folio per aligned range).
        A regular file is read into the page cache at its first use (:meth:`pagecache_folio`).
        A shmem object is unlinked (as a memfd, or the live side's reopened anonymous shared memory):
        ``shmem_mmap()`` makes its mappings anonymous shared memory (``vma_is_anon_shmem()``).
        """
        if not name or name in self.files:
            raise SimError(f"file {name!r} already exists" if name else "empty file name")
        if size <= 0 or size % PAGE_SIZE:
            raise SimError(f"file size must be a positive multiple of {PAGE_SIZE}, not {size}")
        if not 0 <= order <= self.pmd_order:
            raise SimError(f"file folio order must be in 0..{self.pmd_order}, not {order}")
        if not 0 <= fill <= 255:
            raise SimError(f"fill must be a byte value 0..255, not {fill}")
        self._begin()
        nr = size // PAGE_SIZE
        file = SimFile(name, nr, order, shmem, SparsePages(nr, filled_page(fill)), anon=shmem)
        self.files[name] = file
        self.ref.file_new(file)
        self.emit("file", f"{'shmem' if shmem else 'file'} {name}: {nr} pages, folio order {order}")
        index = 0
        while shmem and index < nr:
            first, folio_order = self._cache_range(file, index)
            index = first + self._add_to_cache(file, first, folio_order, "cached at creation").nr_pages
        self._end()

    def pagecache_folio(self, file: SimFile, index: int, vma: Vma | None = None, vpn: int = 0) -> SimFolio:
        """filemap_fault()/shmem_fault(): the cached folio for ``index``, read in (allocated for shmem) if absent.

        ``vma``/``vpn`` are the faulting mapping and page: anonymous shared memory takes its folio order
        from them (:meth:`_cache_range`).
        """
        f = file.lookup(index)
        if f is not None:
            return f
        first, order = self._cache_range(file, index, vma, vpn)
        return self._add_to_cache(file, first, order, "allocated in" if file.shmem else "read into")

    def _cache_range(self, file: SimFile, index: int, vma: Vma | None = None, vpn: int = 0) -> tuple[int, int]:
        """The first index and order of the folio a miss at ``index`` allocates.

        The aligned range of the file's order, or a small folio where the file's tail does not fill it.
        For anonymous shared memory, mm/shmem.c shmem_suitable_orders() also falls back (here to order 0:
        it is the only large order such an object is given) when the faulting VMA is not suitable
        (thp_vma_suitable_order(): the aligned virtual range lies inside the VMA and the VMA's linear
        offset is aligned) or part of the aligned range is cached already.
        """
        first, nr = file.folio_range(index)
        if nr != 1 << file.order:
            return index, 0
        if file.anon and nr > 1:
            clash = any(i in file.cache for i in range(first, first + nr))
            fits = vma is None or ((vma.start - vma.pgoff) % nr == 0 and vma.start <= vpn - (index - first)
                                   and vpn - (index - first) + nr <= vma.end)
            if clash or not fits:
                return index, 0
        return first, file.order

    def _add_to_cache(self, file: SimFile, first: int, order: int, how: str) -> SimFolio:
        """A new page-cache folio for ``[first, first + 2**order)``: the page cache holds ``nr_pages``
        references (filemap_add_folio()), the allocation's one among them."""
        kind = FolioKind.SHMEM if file.shmem else FolioKind.FILE
        f = self.alloc_folio(kind, order, [file.disk[i] for i in range(first, first + (1 << order))])
        f.file = file
        f.index = first
        self.get(f, f.nr_pages - 1)
        for i in range(first, first + f.nr_pages):
            file.cache[i] = f
        self.emit("pagecache", f"{file.name}[{first}..{first + f.nr_pages - 1}] {how} {f.name}", folio=f.name)
        return f

    # ------------------------------------------------------------- address space
    def _range(self, addr: int, length: int) -> tuple[int, int] | None:
        return mmapops.page_range(addr, length)

    def mmap(self, task_name: str, length: int, *, file: str | None = None, offset: int = 0,
             shared: bool = False, read: bool = True, write: bool = True, addr: int | None = None,
             thp: frozenset[int] | None = None, label: str = "", execute: bool = False,
             noreserve: bool = False) -> int:
        """``mmap()``: returns the address or ``-errno``. Mappings are PMD-aligned unless ``addr`` is given.
        ``execute`` is PROT_EXEC (VM_EXEC), ``noreserve`` MAP_NORESERVE (VM_NORESERVE); like VM_ACCOUNT (mm/mmap.c
        accountable_mapping(): private, writable, not MAP_NORESERVE) they only decide which VMAs merge."""
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
        if addr is None:
            start = self._unmapped_area(nr)
        else:
            start = addr >> PAGE_SHIFT
            self._do_munmap(task.mm, start, start + nr)  # MAP_FIXED replaces what was there
        if file is None and shared:  # shmem_zero_setup(): MAP_SHARED|MAP_ANONYMOUS is shmem
            # its folios take the highest of the mapping's (else the machine's) THP orders, if below the PMD order
            order = max((thp if thp is not None else self.options.thp) or {0})
            name = f"anon-shmem{self._next['shmem']}"
            self._next["shmem"] += 1
            src = SimFile(name, nr, order if order < self.pmd_order else 0, True, anon=True)
            self.files[name] = src
            self.ref.file_new(src)
        vma_thp = (thp if thp is not None else self.options.thp) if file is None and not shared else frozenset()
        vma = Vma(start, start + nr, read, write, shared, src, pgoff, frozenset(vma_thp), label, exec=execute,
                  noreserve=noreserve, account=write and not shared and not noreserve)
        task.mm.insert_vma(vma)
        result = start << PAGE_SHIFT
        self.emit("syscall", f"mmap({nr} pages, {vma.describe()}) -> {result:#x}", result=result)
        self._end()
        return result

    def _unmapped_area(self, nr: int) -> int:
        start, self._mmap_base = mmapops.unmapped_area(self._mmap_base, nr, self.pmd_pages)
        return start

    def _fail(self, what: str, errno: int, why: str = "") -> int:
        from foliosim.vm.events import errno_name

        self.emit("syscall", f"{what} -> -{errno_name(errno)}{': ' + why if why else ''}", result=errno)
        self._end()
        return errno

    def munmap(self, task_name: str, addr: int, length: int) -> int:
        task = self._runnable(task_name)
        self._begin(task)
        rng = self._range(addr, length)
        if rng is None:
            return self._fail("munmap", -EINVAL)
        self._do_munmap(task.mm, *rng)
        self.emit("syscall", f"munmap({addr:#x}, {rng[1] - rng[0]} pages) -> 0", result=0)
        self._end()
        return 0

    def _do_munmap(self, mm: MM, start: int, end: int) -> None:
        if not mm.vmas_in(start, end):
            return
        self._split_at(mm, start)
        self._split_at(mm, end)
        gather = _Gather()
        for vma in mm.vmas_in(start, end):
            self._zap(mm, vma.start, vma.end, gather)
            mm.vmas.remove(vma)
        self._flush(gather)
        self.ref.unmap(mm, start, end)
        for handle in self.gup.values():
            handle.untrack(mm, start, end)
        self._free_pte_tables(mm, start, end)

    def _free_pte_tables(self, mm: MM, start: int, end: int) -> None:
        """free_pgtables(): page tables of PMD ranges no VMA touches any more go away."""
        shift = self.pmd_order
        for idx in self._slots_in(mm.pte_tables, start, end):
            if not mm.vmas_in(idx << shift, (idx + 1) << shift):
                mm.pte_tables.discard(idx)

    def _split_at(self, mm: MM, vpn: int) -> None:
        """Split the VMA containing ``vpn`` so that a VMA starts there (__split_vma()).

        A PMD mapping straddling the new boundary is split first (vma_adjust_trans_huge()).
        """
        vma = mm.find_vma(vpn)
        if vma is None or vma.start == vpn:
            return
        if vpn & (self.pmd_pages - 1):
            idx = vpn >> self.pmd_order
            if idx in mm.pmds:
                self.split_pmd(mm, idx, "VMA split")
        mm.insert_vma(mmapops.split_vma(vma, vpn))

    def _merge(self, mm: MM) -> None:
        """vma_merge(): adjacent compatible VMAs become one."""
        mmapops.merge_vmas(mm.vmas)

    def _vmas_for(self, mm: MM, start: int, end: int) -> list[Vma]:
        self._split_at(mm, start)
        self._split_at(mm, end)
        return mm.vmas_in(start, end)

    def mprotect(self, task_name: str, addr: int, length: int, read: bool, write: bool,
                 execute: bool | None = None) -> int:
        """``mprotect()``: -ENOMEM on a hole (checked before any change), -EINVAL on bad arguments. ``execute``
        (PROT_EXEC) sets VM_EXEC when given."""
        task = self._runnable(task_name)
        self._begin(task)
        rng = self._range(addr, length)
        if rng is None:
            return self._fail("mprotect", -EINVAL)
        mm = task.mm
        if not mm.covered(*rng):
            return self._fail("mprotect", -ENOMEM, "the range is not fully mapped")
        for vma in self._vmas_for(mm, *rng):
            upgrade = write and not vma.write
            if upgrade and not (vma.shared or vma.noreserve):  # mm/mprotect.c mprotect_fixup(): charged once
                vma.account = True
            vma.read, vma.write = read, write
            if execute is not None:
                vma.exec = execute
            self._change_protection(mm, vma, upgrade)
        self._merge(mm)
        self.emit("syscall", f"mprotect({addr:#x}, {rng[1] - rng[0]} pages, "
                             f"{'r' if read else '-'}{'w' if write else '-'}) -> 0", result=0)
        self._end()
        return 0

    def _change_protection(self, mm: MM, vma: Vma, upgrade: bool) -> None:
        """mm/mprotect.c change_protection() with the VMA's new ``vm_page_prot``: drop write bits, or
        make PTEs writable again.

        In a shared mapping without write-notify (shmem, :attr:`Vma.maps_writable`) the new
        ``vm_page_prot`` itself is writable, so every present PTE becomes writable. Otherwise
        (MM_CP_TRY_CHANGE_WRITABLE, ``can_change_pte_writable()``) a private PTE becomes writable only
        if it maps a PageAnonExclusive page, a shared one only if it is dirty; never while soft-dirty
        tracking is armed (simplified: the kernel upgrades PTEs written since the clear_refs).
        """
        for idx in self._pmds_in(mm, vma.start, vma.end):
            pmd = mm.pmds[idx]
            if not vma.write:
                pmd.write = False
            elif upgrade and not vma.shared and self._can_make_writable(vma, pmd.folio, 0):
                pmd.write = True
        for vpn in self._ptes_in(mm, vma.start, vma.end):
            pte = mm.ptes[vpn]
            if not vma.write:
                pte.write = False
            elif upgrade and self._can_make_writable(vma, pte.folio, pte.page, pte.dirty):
                pte.write = True

    @staticmethod
    def _can_make_writable(vma: Vma, f: SimFolio, page: int, dirty: bool = False) -> bool:
        if vma.maps_writable:
            return True
        if vma.softdirty_wp:
            return False
        if vma.shared:
            return dirty
        return f.is_anon and f.exclusive[page]

    def _pmd_indexes(self, start: int, end: int) -> range:
        """Every PMD slot overlapping ``[start, end)`` (present or not: O(range); walks use :meth:`_pmds_in`)."""
        return range(start >> self.pmd_order, ((end - 1) >> self.pmd_order) + 1)

    def _slots_in(self, slots: dict[int, Any] | set[int], start: int, end: int) -> list[int]:
        """The PMD slot numbers of ``slots`` that overlap ``[start, end)``, in order; the cost follows the
        smaller of the range and ``slots``, never the mapped size alone."""
        lo, hi = start >> self.pmd_order, ((end - 1) >> self.pmd_order) + 1
        if hi - lo <= len(slots):
            return [i for i in range(lo, hi) if i in slots]
        return sorted(i for i in slots if lo <= i < hi)

    def _pmds_in(self, mm: MM, start: int, end: int) -> list[int]:
        """The PMD mappings present in ``[start, end)`` (the page walk skips pmd_none() slots)."""
        return self._slots_in(mm.pmds, start, end)

    def pmd_slots_in(self, mm: MM, start: int, end: int) -> list[int]:
        """The PMD slots of ``[start, end)`` a page walk visits: a PMD mapping or a page table."""
        return sorted({*self._pmds_in(mm, start, end), *self._slots_in(mm.pte_tables, start, end)})

    @staticmethod
    def _ptes_in(mm: MM, start: int, end: int) -> list[int]:
        """The present PTEs in ``[start, end)``, in order: O(min(range, PTEs log PTEs))."""
        if end - start <= len(mm.ptes):
            return [v for v in range(start, end) if v in mm.ptes]
        return sorted(v for v in mm.ptes if start <= v < end)

    def mremap(self, task_name: str, addr: int, length: int, new_addr: int) -> int:
        """``mremap(MREMAP_MAYMOVE | MREMAP_FIXED)`` of the same size: page-table entries move, rmap does not change."""
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
        self._do_munmap(mm, dst, dst + (end - start))
        vma = self._vmas_for(mm, start, end)[0]
        delta = dst - start
        order = self.pmd_order
        for idx in self._pmds_in(mm, start, end):
            pmd = mm.pmds[idx]
            whole = start <= idx << order and (idx + 1) << order <= end
            if whole and not delta & (self.pmd_pages - 1):
                del mm.pmds[idx]  # move_huge_pmd()
                mm.pmds[idx + (delta >> order)] = pmd
            else:
                self.split_pmd(mm, idx, "mremap")
        for vpn in self._ptes_in(mm, start, end):
            mm.ptes[vpn + delta] = mm.ptes.pop(vpn)  # move_ptes()
            mm.pte_tables.add((vpn + delta) >> order)
        mm.vmas.remove(vma)
        moved = vma.clone(start=dst, end=dst + (end - start))
        mm.insert_vma(moved)
        self.ref.move(mm, start, end, dst)
        for handle in self.gup.values():
            handle.move(mm, start, end, delta)
        self._free_pte_tables(mm, start, end)
        self.emit("syscall", f"mremap({addr:#x}, {end - start} pages -> {new_addr:#x}) -> {new_addr:#x}",
                  result=new_addr)
        self._end()
        return new_addr

    def madvise(self, task_name: str, addr: int, length: int, advice: str) -> int:
        """``madvise()``: applied to the mapped parts; -ENOMEM afterwards if there was a hole."""
        from foliosim.vm.fault import madvise_cold_pageout

        task = self._runnable(task_name)
        if advice not in MADVISE:
            raise SimError(f"unknown madvise advice {advice!r} (known: {', '.join(MADVISE)})")
        self._begin(task)
        rng = self._range(addr, length)
        if rng is None:
            return self._fail("madvise", -EINVAL)
        mm = task.mm
        start, end = rng
        hole = not mm.covered(start, end)
        if advice == "dontneed":
            gather = _Gather()
            for vma in mm.vmas_in(start, end):
                self._zap(mm, max(start, vma.start), min(end, vma.end), gather)
            self._flush(gather)
            self.ref.dontneed(mm, start, end)
            for handle in self.gup.values():
                handle.untrack(mm, start, end)
        elif advice in ("cold", "pageout"):
            madvise_cold_pageout(self, mm, start, end, advice)
        else:
            for vma in self._vmas_for(mm, start, end):
                if advice in ("dontfork", "dofork"):
                    vma.dontfork = advice == "dontfork"
                elif vma.is_anon and not vma.shared:
                    madv = self.options.thp_madvise
                    vma.thp = frozenset() if advice == "nohugepage" else (
                        self.options.thp | (madv if madv is not None else frozenset({self.pmd_order})))
            self._merge(mm)
        if hole:
            return self._fail(f"madvise({advice})", -ENOMEM, "part of the range is not mapped")
        self.emit("syscall", f"madvise({addr:#x}, {end - start} pages, {advice}) -> 0", result=0)
        self._end()
        return 0

    def clear_refs(self, task_name: str) -> int:
        """``echo 4 > /proc/PID/clear_refs``: write-protect every PTE to track soft-dirty writes.

        fs/proc/task_mmu.c ``clear_refs_write()`` clears VM_SOFTDIRTY on every VMA and recomputes its
        ``vm_page_prot`` (``vma_set_page_prot()``), so a shmem mapping wants write-notify from now on
        (:attr:`Vma.wants_writenotify`); then every PTE and PMD is write-protected.
        """
        task = self._runnable(task_name)
        self._begin(task)
        mm = task.mm
        for vma in mm.vmas:
            vma.softdirty_wp = True
        for pmd in mm.pmds.values():
            pmd.write = False
        for pte in mm.ptes.values():
            pte.write = False
        self.emit("syscall", f"clear_refs(soft-dirty) on {mm.name}: every PTE write-protected")
        self._end()
        return 0

    # ------------------------------------------------------------- zap / split
    def _zap(self, mm: MM, start: int, end: int, gather: _Gather, vpns: list[int] | None = None) -> None:
        """zap_page_range_single()/unmap_vmas() on ``[start, end)``: rmap removal in batches.

        Only present entries are visited; ``vpns`` may give the present PTEs of the range in order
        (exit_mmap() sorts them once for every VMA).
        """
        order = self.pmd_order
        for idx in self._pmds_in(mm, start, end):
            pmd = mm.pmds[idx]
            if start <= idx << order and (idx + 1) << order <= end:
                del mm.pmds[idx]  # zap_huge_pmd()
                if not pmd.folio.is_zero:
                    self._rmap_remove(pmd.folio, mm, PMD)
                    gather.puts.append((pmd.folio, 1))
            else:
                self.split_pmd(mm, idx, "partial unmap")
                vpns = None  # the split added PTEs
        if vpns is None:
            vpns = self._ptes_in(mm, start, end)
        i = 0
        while i < len(vpns):
            vpn = vpns[i]
            pte = mm.ptes[vpn]
            nr = self._batch(mm, vpns, i, end)
            for k in range(nr):
                del mm.ptes[vpn + k]
            if not pte.folio.is_zero:
                self._rmap_remove(pte.folio, mm, PTE, pte.page, nr)
                gather.puts.append((pte.folio, nr))
            i += nr

    def _batch(self, mm: MM, vpns: list[int], i: int, end: int) -> int:
        """folio_pte_batch(): consecutive PTEs mapping consecutive pages of one folio, in one page table."""
        vpn = vpns[i]
        pte = mm.ptes[vpn]
        if pte.folio.order == 0 or pte.folio.is_zero:
            return 1
        limit = min(end, ((vpn >> self.pmd_order) + 1) << self.pmd_order, vpn + pte.folio.nr_pages - pte.page)
        nr = 1
        while vpn + nr < limit:
            nxt = mm.ptes.get(vpn + nr)
            if nxt is None or nxt.folio is not pte.folio or nxt.page != pte.page + nr:
                break
            nr += 1
        return nr

    def _flush(self, gather: _Gather) -> None:
        """tlb_finish_mmu(): the gathered references are dropped after the TLB flush."""
        for f, nr in gather.puts:
            self.put(f, nr)
        gather.puts.clear()

    def split_pmd(self, mm: MM, idx: int, why: str) -> None:
        """__split_huge_pmd(): remap a PMD with PTEs (AnonExclusive copied to every page)."""
        pmd = mm.pmds.pop(idx)
        base = idx << self.pmd_order
        f = pmd.folio
        mm.pte_tables.add(idx)
        self.counters["pmd split"] += 1
        if f.is_zero:
            for k in range(f.nr_pages):
                mm.ptes[base + k] = Pte(self.zero, 0, False)
            self.emit("split", f"{mm.name}: huge zero PMD at {base << PAGE_SHIFT:#x} split into zero-page PTEs ({why})",
                      what="pmd")
            return
        self.get(f, f.nr_pages - 1)
        exclusive = f.exclusive[0]
        self._rmap_add(f, mm, PTE, 0, f.nr_pages)
        if exclusive:
            f.exclusive[:] = [True] * f.nr_pages
        for k in range(f.nr_pages):
            mm.ptes[base + k] = Pte(f, k, pmd.write)
        self._rmap_remove(f, mm, PMD)
        self.emit("split", f"{mm.name}: PMD mapping {f.name} at {base << PAGE_SHIFT:#x} split into "
                           f"{f.nr_pages} PTEs ({why})", what="pmd", folio=f.name)

    def split_folio(self, f: SimFolio, why: str) -> SplitResult:
        """``split_folio()`` -> mm/huge_memory.c ``__folio_split()`` to order 0 (see :mod:`foliosim.vm.split`).

        The caller holds one reference on ``f`` (madvise's folio_get()); on success it
        is moved to ``result.folios[0]``, the folio of page 0, which the caller puts.
        """
        from foliosim.vm.split import split_folio

        return split_folio(self, f, why)

    # ------------------------------------------------------------- accesses
    def lookup(self, mm: MM, vpn: int) -> tuple[SimFolio, int, bool] | None:
        """The present mapping of ``vpn``: (folio, page, writable), or None."""
        pmd = mm.pmds.get(vpn >> self.pmd_order)
        if pmd is not None:
            return pmd.folio, vpn & (self.pmd_pages - 1), pmd.write
        pte = mm.ptes.get(vpn)
        if pte is not None:
            return pte.folio, pte.page, pte.write
        return None

    def physical_content(self, mm: MM, vma: Vma, vpn: int) -> bytes:
        """What reading ``vpn`` would return now, without faulting anything in."""
        hit = self.lookup(mm, vpn)
        if hit is not None:
            return hit[0].data[hit[1]]
        if vma.file is None:
            return ZERO_PAGE
        return vma.file.content(vma.file_index(vpn))

    def _access_check(self, task: Task, start: int, end: int, write: bool, what: str) -> bool:
        bad = mmapops.first_bad_access(task.mm.vmas, start, end, write)
        if bad is None:
            return True
        vpn, vma = bad
        why = "no mapping" if vma is None else f"the mapping is {vma.prot_name()}"
        self.counters["SIGSEGV"] += 1
        self.emit("segv", f"SIGSEGV: {task.name} {what} at {vpn << PAGE_SHIFT:#x} ({why})", addr=vpn << PAGE_SHIFT)
        return False

    def read(self, task_name: str, addr: int, length: int = 1) -> bytes | None:
        """A user read of ``length`` bytes; None (and a SIGSEGV event) on a bad access."""
        from foliosim.vm.fault import handle_mm_fault

        task = self._runnable(task_name)
        if length <= 0 or addr < 0:
            raise SimError(f"a read needs a positive length and address, not {length} at {addr}")
        self._begin(task)
        start, end = addr >> PAGE_SHIFT, (addr + length - 1 >> PAGE_SHIFT) + 1
        if not self._access_check(task, start, end, False, "read"):
            self._end()
            return None
        out = bytearray()
        mm = task.mm
        for vpn in range(start, end):
            if self.lookup(mm, vpn) is None:
                vma = mm.find_vma(vpn)
                assert vma is not None
                self.user_faults.append((self.step, task.name, vpn, False))
                handle_mm_fault(self, mm, vma, vpn, write=False)
            hit = self.lookup(mm, vpn)
            assert hit is not None
            lo = addr - (vpn << PAGE_SHIFT) if vpn == start else 0
            hi = min(PAGE_SIZE, addr + length - (vpn << PAGE_SHIFT))
            out += hit[0].data[hit[1]][lo:hi]
        self.emit("access", f"{task.name} reads {length} bytes at {addr:#x}", addr=addr, length=length)
        self._end()
        return bytes(out)

    def write(self, task_name: str, addr: int, data: bytes) -> bool:
        """A user write; False (and a SIGSEGV event) on a bad access."""
        from foliosim.vm.fault import handle_mm_fault

        task = self._runnable(task_name)
        if not data or addr < 0:
            raise SimError("a write needs at least one byte at a non-negative address")
        self._begin(task)
        start, end = addr >> PAGE_SHIFT, (addr + len(data) - 1 >> PAGE_SHIFT) + 1
        if not self._access_check(task, start, end, True, "write"):
            self._end()
            return False
        mm = task.mm
        pos = 0
        for vpn in range(start, end):
            vma = mm.find_vma(vpn)
            assert vma is not None
            hit = self.lookup(mm, vpn)
            if hit is None or not hit[2]:
                self.user_faults.append((self.step, task.name, vpn, True))
                handle_mm_fault(self, mm, vma, vpn, write=True)
                hit = self.lookup(mm, vpn)
            assert hit is not None and hit[2], "a write fault left the page read-only"
            pte = mm.ptes.get(vpn)
            if pte is not None:
                pte.dirty = True  # the store sets the hardware dirty bit
            off = addr + pos - (vpn << PAGE_SHIFT)
            chunk = data[pos:pos + PAGE_SIZE - off]
            f, page = hit[0], hit[1]
            f.data[page] = write_into(f.data[page], off, chunk)
            self.ref.write(mm, vma, vpn, off, chunk)
            pos += len(chunk)
        self.emit("access", f"{task.name} writes {len(data)} bytes at {addr:#x}", addr=addr, length=len(data))
        self._end()
        return True

    # ------------------------------------------------------------- GUP
    def pin(self, task_name: str, handle: str, addr: int, length: int, *, write: bool = False,
            longterm: bool = True, fast: bool = False) -> int:
        """``pin_user_pages()`` (FOLL_PIN): returns the number of pages pinned or ``-errno``."""
        from foliosim.vm.gup import gup

        return gup(self, task_name, handle, addr, length, write=write, longterm=longterm, foll_pin=True, fast=fast)

    def vmsplice(self, task_name: str, handle: str, addr: int, length: int) -> int:
        """``vmsplice()`` into a pipe: plain FOLL_GET references on at most 16 pages, no unsharing."""
        from foliosim.vm.gup import gup

        return gup(self, task_name, handle, addr, length, write=False, longterm=False, foll_pin=False)

    def unpin(self, handle: str) -> int:
        """``unpin_user_pages()`` / releasing the pipe buffers: drop every reference of ``handle``."""
        from foliosim.vm.gup import release

        return release(self, handle)

    def read_pinned(self, handle: str) -> bytes:
        """Read the pages ``handle`` holds (gup_test's PIN_LONGTERM_TEST_READ, or reading the pipe)."""
        h = self.gup.get(handle)
        if h is None:
            raise SimError(f"no pin or pipe {handle!r} (known: {', '.join(sorted(self.gup)) or 'none'})")
        self._begin()
        out = b"".join(f.data[page] for f, page in h.pages)
        self.emit("access", f"read through {handle}: {len(h.pages)} pages")
        self._end()
        return out

    # ------------------------------------------------------------- views
    def snapshot(self) -> dict[str, Any]:
        """A cheap, immutable picture of every task's page table and every folio (for viewers)."""
        mms = {}
        for mm in self.mms.values():
            mms[mm.name] = {
                "mm_id": mm.mm_id, "users": mm.users, "count": mm.count,
                "vmas": tuple((v.start, v.end, v.describe()) for v in mm.vmas),
                "ptes": tuple(sorted((vpn, p.folio.name, p.page, p.write) for vpn, p in mm.ptes.items())),
                "pmds": tuple(sorted((idx, p.folio.name, p.write) for idx, p in mm.pmds.items())),
            }
        folios = {name: (f.kind.value, f.core().key(), tuple(f.exclusive)) for name, f in self.folios.items()}
        tasks = {t.name: (t.pid, t.mm.name) for t in self.tasks.values()}
        return {"step": self.step, "tasks": tasks, "mms": mms, "folios": folios}

    def iter_mapped(self, mm: MM) -> Iterator[tuple[Vma, int, SimFolio, int, bool]]:
        """Every present mapping: (vma, vpn, folio, page, by_pmd)."""
        for vma in mm.vmas:
            for idx in self._pmds_in(mm, vma.start, vma.end):
                pmd = mm.pmds[idx]
                base = idx << self.pmd_order
                for k in range(self.pmd_pages):
                    yield vma, base + k, pmd.folio, k, True
            for vpn in self._ptes_in(mm, vma.start, vma.end):
                pte = mm.ptes[vpn]
                yield vma, vpn, pte.folio, pte.page, False

    def shared_verdict(self, f: SimFolio, consumer: str = "") -> bool:
        """``folio_maybe_mapped_shared()`` as consumer ``consumer`` asks it.

        An evaluator may set :attr:`sharing` to answer with another sharing-detection
        design; by default (None) this is the kernel's answer.
        """
        if self.sharing is not None:
            return self.sharing(f, consumer)
        return folio_maybe_mapped_shared(f.core())

