"""``foliosim census``: the running kernel's own "maybe mapped shared" verdicts against the truth, no simulation.

For every large anonymous folio that the chosen processes map (every process with ``--all``), read as root:

* where it is mapped: each MM's private VMAs (/proc/PID/maps) and their pagemap entries (present, PFN, not
  PM_FILE), grouped by folio head PFN (/proc/kpageflags compound head/tail, anon, not the zero page);
* the kernel's fields, through the BPF folio reader: the ``_mm_ids`` word (both slot ids, the shared bit), both
  slots' mapcounts, ``_large_mapcount``, ``_entire_mapcount``, every page's ``_mapcount``, refcount, pincount;
* every task's MM id (``mm_struct.mm_id``) through a BPF task iterator (:mod:`foliosim.host.tasks`), so that
  threads and CLONE_VM siblings count as one MM and slot ids can be named by role ("the mapper", "free").

The truth is how many MMs map any page of the folio. The MMs that were read are known from their pagemaps; the
folio's own per-page mapcounts (``_mapcount + 1 + entire mapcount``, read in the same copy as the verdict's
fields) say how many page-table entries map each page in total. Where they count more than the read MMs showed,
an MM that was not read maps the folio, so it is mapped by two MMs or more even when only one of them was read
(``--pid``); where they count fewer, the folio changed between the two reads and it is left out of the rates, as
is a folio whose own fields do not add up (read while the kernel was updating it: :func:`consistent`).

The verdict is include/linux/mm.h ``folio_maybe_mapped_shared()`` as of v6.15 (v6.16 to v6.18 only inline the bit
test): a hugetlb folio is "maybe shared" when its mapcount exceeds 1; any other large folio never when its
mapcount is at most 1, else exactly when the shared bit (FOLIO_MM_IDS_SHARED_BITNUM of ``_mm_ids``) is set. There
is no entire-mapcount branch any more (that was v6.14's ``folio_likely_mapped_shared()``); CONFIG_MM_ID=y here.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import os
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from foliosim import binomial
from foliosim.host import procfs
from foliosim.host.errors import HostError, HostUnavailable

if TYPE_CHECKING:
    from foliosim.host.bpf import FolioReader, KernelFolio
    from foliosim.host.ptrace import PresentPages
    from foliosim.host.tasks import TaskIterator

#: user address space ends here on x86-64 (4-level paging); [vsyscall] lies above it and has no pagemap
USER_END = 1 << 47
#: pagemap entries read per pread
CHUNK_PAGES = 1 << 16
# PFNs closer than this share one kpageflags pread
_FLAGS_GAP = 64

TRUTH_ONE = "1 MM"
TRUTH_MANY = ">=2 MMs"
TRUTH_CHANGED = "changed while read"

SHARED = "shared"  # mapped by >= 2 MMs, verdict "maybe shared"
EXCLUSIVE = "exclusive"  # mapped by 1 MM, verdict "exclusive"
FALSE_SHARED = "false shared"  # mapped by 1 MM, verdict "maybe shared"
FALSE_EXCLUSIVE = "false exclusive"  # mapped by >= 2 MMs, verdict "exclusive": unsound, must never happen
EXCLUDED = "excluded"  # the folio changed while it was read

#: why a folio mapped by one MM is "maybe shared", by cause code
CAUSES = {
    "stuck-bit-both-slots-free": "stuck bit: both slots free, the bit still set (the tracked MMs unmapped it while "
                                 "an untracked MM still mapped it; nothing clears the bit when the last mapper is "
                                 "untracked)",
    "stuck-bit-other-slot-free": "stuck bit: the mapper holds one slot, the other is free (the other tracked MM left "
                                 "while a third, untracked MM still mapped it; that one left without a slot)",
    "stale-slot": "a slot names an MM that maps none of the folio",
    "mm-ids-unknown": "slot ids reported raw: no MM ids for the mappers (no BPF task iterator)",
}
#: why a folio mapped by >= 2 MMs is "exclusive" (a soundness failure of the kernel's rule if ever seen)
FALSE_EXCLUSIVE_CAUSES = {
    "mapcount-le-1": "the folio's mapcount is at most 1",
    "bit-clear": "the shared bit is clear",
}


class CensusError(Exception):
    """The census cannot run with these arguments (a pid that does not exist, ...): the message says which."""


# --------------------------------------------------------------------------- the verdict


def kernel_verdict(folio: KernelFolio, hugetlb: bool) -> bool:
    """``folio_maybe_mapped_shared()`` (include/linux/mm.h, v6.15-v6.18, CONFIG_MM_ID=y) from a folio's raw fields.

    Small or hugetlb folio: mapcount > 1. Other large folio: false while its mapcount (``_large_mapcount + 1``) is
    at most 1, whatever the bit says; otherwise the shared bit.
    """
    if folio.order == 0 or folio.large_mapcount is None:
        return folio.page_mapcount[0] + 1 > 1
    mapcount = folio.large_mapcount + 1
    if hugetlb:
        return mapcount > 1
    if mapcount <= 1:
        return False
    return bool(folio.shared_bit)


def precise_page_mapcounts(folio: KernelFolio) -> list[int]:
    """Each page's precise mapcount, fs/proc/internal.h ``folio_precise_page_mapcount()``: PTEs plus PMDs."""
    entire = folio.entire_mapcount + 1 if folio.entire_mapcount is not None else 0
    return [m + 1 + entire for m in folio.page_mapcount]


def consistent(folio: KernelFolio, hugetlb: bool) -> bool:
    """Whether the fields read form a state the kernel can be in between two rmap updates, so that the verdict and
    the mapcounts belong together: the lock bit is clear, and ``_large_mapcount + 1`` counts every PTE mapping
    (each page's ``_mapcount + 1``) plus every PMD mapping (``_entire_mapcount + 1``), as mm/rmap.c
    __folio_add_rmap() and __folio_remove_rmap() keep it. A copy taken while another CPU was between the per-page
    and the per-folio update (a census of running processes) fails this and is left out of the rates.
    """
    if hugetlb or folio.large_mapcount is None:
        return True
    if folio.lock_bit:
        return False
    entire = folio.entire_mapcount + 1 if folio.entire_mapcount is not None else 0
    return folio.large_mapcount + 1 == sum(m + 1 for m in folio.page_mapcount) + entire


# --------------------------------------------------------------------------- statistics


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval of k/n (:mod:`foliosim.binomial`); (0, 1) when n is 0."""
    return binomial.clopper_pearson(k, n, confidence) or (0.0, 1.0)


@dataclass(frozen=True, slots=True)
class Rate:
    """k of n, with its 95 % Clopper-Pearson interval."""

    k: int
    n: int
    low: float
    high: float

    @classmethod
    def of(cls, k: int, n: int) -> Rate:
        low, high = clopper_pearson(k, n)
        return cls(k, n, low, high)

    @property
    def rate(self) -> float | None:
        return self.k / self.n if self.n else None

    def to_json(self) -> dict[str, Any]:
        return {"k": self.k, "n": self.n, "rate": self.rate, "ci95": [self.low, self.high]}

    def describe(self) -> str:
        if not self.n:
            return "0/0 (no folio to judge)"
        pct = 100 * self.k / self.n
        return f"{self.k}/{self.n} = {pct:.2f} % (95 % CI {100 * self.low:.2f}-{100 * self.high:.2f} %)"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Mapper:
    """One MM that maps pages of a folio: its MM id (None if unknown), its processes, how many entries map pages."""

    mm_id: int | None
    tgids: tuple[int, ...]
    comm: str
    entries: int

    def to_json(self) -> dict[str, Any]:
        return {"mm_id": self.mm_id, "tgids": list(self.tgids), "comm": self.comm, "entries": self.entries}


@dataclass(frozen=True, slots=True)
class FolioCensus:
    """One large anonymous folio: the kernel's fields and verdict, the truth, and the outcome."""

    head_pfn: int
    order: int
    hugetlb: bool
    mapcount: int  # folio_mapcount(): _large_mapcount + 1
    entire_mapcount: int  # PMD mappings: _entire_mapcount + 1
    slots: tuple[tuple[int, int], tuple[int, int]]  # (MM id, its mapcount) per slot; id 0 = free
    shared_bit: bool
    lock_bit: bool
    refcount: int
    pincount: int
    maybe_shared: bool  # the kernel's verdict
    mappers: tuple[Mapper, ...]  # the MMs read that map it
    unseen: int  # page-table entries the folio counts and no MM read showed: MMs outside the read set
    stale: int  # entries the MMs read showed and the folio no longer counts: it changed in between
    truth: str
    outcome: str
    cause: str | None

    def to_json(self) -> dict[str, Any]:
        return {"head_pfn": f"{self.head_pfn:#x}", "order": self.order, "hugetlb": self.hugetlb,
                "mapcount": self.mapcount, "entire_mapcount": self.entire_mapcount,
                "slots": [list(s) for s in self.slots], "shared_bit": self.shared_bit, "lock_bit": self.lock_bit,
                "refcount": self.refcount, "pincount": self.pincount, "maybe_shared": self.maybe_shared,
                "mappers": [m.to_json() for m in self.mappers], "unseen_entries": self.unseen,
                "stale_entries": self.stale, "truth": self.truth, "outcome": self.outcome, "cause": self.cause}


@dataclass(frozen=True, slots=True)
class OrderRow:
    """Counts for one folio order."""

    order: int
    folios: int
    one_mm: int
    many_mms: int
    changed: int
    maybe_shared: int
    false_shared: int
    false_exclusive: int


@dataclass(slots=True)
class CensusResult:
    """Everything one census read and concluded."""

    mode: str  # "all" or "pids"
    pids: tuple[int, ...]  # the tgids asked for (all numeric /proc entries with --all)
    processes: int = 0  # processes whose pagemaps were read
    mms: int = 0  # distinct MMs read
    anon_pages: int = 0  # present anonymous pagemap entries seen
    no_mm: int = 0  # processes without an mm (kernel threads, exiting): nothing to read
    skipped: list[tuple[int, str]] = field(default_factory=list)  # tgid, why not read (exited, no access)
    folios: list[FolioCensus] = field(default_factory=list)
    unreadable: int = 0  # folios that were gone or had changed shape when the BPF reader read them
    mm_ids_source: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    def rows(self) -> list[OrderRow]:
        """One row per order, increasing."""
        out: list[OrderRow] = []
        for order in sorted({f.order for f in self.folios}):
            fs = [f for f in self.folios if f.order == order]
            out.append(OrderRow(order, len(fs), sum(f.truth == TRUTH_ONE for f in fs),
                                sum(f.truth == TRUTH_MANY for f in fs), sum(f.truth == TRUTH_CHANGED for f in fs),
                                sum(f.maybe_shared for f in fs), sum(f.outcome == FALSE_SHARED for f in fs),
                                sum(f.outcome == FALSE_EXCLUSIVE for f in fs)))
        return out

    @property
    def false_shared(self) -> Rate:
        """Folios mapped by exactly one MM whose verdict is "maybe shared", of all folios mapped by one MM."""
        one = [f for f in self.folios if f.truth == TRUTH_ONE]
        return Rate.of(sum(f.maybe_shared for f in one), len(one))

    @property
    def false_exclusive(self) -> Rate:
        """Folios mapped by two MMs or more whose verdict is "exclusive", of all such folios (must be 0)."""
        many = [f for f in self.folios if f.truth == TRUTH_MANY]
        return Rate.of(sum(not f.maybe_shared for f in many), len(many))

    def causes(self) -> Counter[str]:
        """Cause code -> false answers with that cause."""
        return Counter(f.cause for f in self.folios
                       if f.outcome in (FALSE_SHARED, FALSE_EXCLUSIVE) and f.cause is not None)

    def outside(self) -> int:
        """Folios known to be mapped by >= 2 MMs only through mappings outside the MMs read."""
        return sum(1 for f in self.folios if f.truth == TRUTH_MANY and len(f.mappers) < 2)

    def bit_ignored(self) -> int:
        """Folios with the shared bit set whose verdict is "exclusive" by the mapcount rule (mapcount <= 1)."""
        return sum(1 for f in self.folios if f.shared_bit and not f.hugetlb and f.mapcount <= 1)

    def summary_json(self) -> dict[str, Any]:
        """The one-line machine-readable summary."""
        truth = Counter(f.truth for f in self.folios)
        return {
            "record": "census", "mode": self.mode, "processes": self.processes, "mms": self.mms,
            "anon_pages": self.anon_pages, "no_mm": self.no_mm, "skipped": len(self.skipped),
            "large_anon_folios": len(self.folios) + self.unreadable,
            "read": len(self.folios), "unreadable": self.unreadable,
            "by_order": {str(r.order): {"folios": r.folios, "one_mm": r.one_mm, "many_mms": r.many_mms,
                                        "changed": r.changed, "maybe_shared": r.maybe_shared,
                                        "false_shared": r.false_shared, "false_exclusive": r.false_exclusive}
                         for r in self.rows()},
            "truth": {"one_mm": truth[TRUTH_ONE], "many_mms": truth[TRUTH_MANY],
                      "many_mms_via_unread_mms": self.outside(), "changed_while_read": truth[TRUTH_CHANGED]},
            "maybe_shared": sum(f.maybe_shared for f in self.folios),
            "bit_set_but_mapcount_le_1": self.bit_ignored(),
            "false_shared": self.false_shared.to_json(),
            "false_exclusive": self.false_exclusive.to_json(),
            "causes": dict(sorted(self.causes().items())),
            "mm_ids": self.mm_ids_source,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }

    def false_answers(self) -> list[FolioCensus]:
        """Every false "shared" and false "exclusive" folio, by head PFN."""
        return [f for f in self.folios if f.outcome in (FALSE_SHARED, FALSE_EXCLUSIVE)]

    def to_json(self) -> dict[str, Any]:
        """Everything, for --json."""
        return {"summary": self.summary_json(), "pids": list(self.pids),
                "skipped": [{"tgid": t, "why": w} for t, w in self.skipped],
                "causes": {**CAUSES, **FALSE_EXCLUSIVE_CAUSES},
                "folios": [f.to_json() for f in self.folios]}


# --------------------------------------------------------------------------- causes


def false_shared_cause(slots: tuple[tuple[int, int], tuple[int, int]], mapper_mm_id: int | None) -> str:
    """Why a folio mapped by one MM (``mapper_mm_id``) says "maybe shared", from its slots (see :data:`CAUSES`)."""
    if mapper_mm_id is None:
        return "mm-ids-unknown"
    ids = (slots[0][0], slots[1][0])
    if ids == (0, 0):
        return "stuck-bit-both-slots-free"
    others = [i for i in ids if i not in (0, mapper_mm_id)]
    if others:
        return "stale-slot"
    return "stuck-bit-other-slot-free"


def false_exclusive_cause(folio: KernelFolio) -> str:
    """Why a folio mapped by >= 2 MMs says "exclusive" (see :data:`FALSE_EXCLUSIVE_CAUSES`)."""
    large = folio.large_mapcount if folio.large_mapcount is not None else folio.page_mapcount[0]
    return "mapcount-le-1" if large + 1 <= 1 else "bit-clear"


# --------------------------------------------------------------------------- processes


def tgid_of(pid: int) -> int:
    """The thread-group id of task ``pid`` (a thread id gives its process), from /proc/PID/status."""
    path = f"/proc/{pid}/status"
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        raise CensusError(f"no process {pid}") from None
    except OSError as exc:
        raise CensusError(f"cannot read {path}: {exc.strerror or exc}") from None
    raise CensusError(f"{path} has no Tgid line")


def all_tgids() -> list[int]:
    """Every process of the machine (the numeric entries of /proc), increasing."""
    return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())


def _comm(tgid: int) -> str:
    try:
        with open(f"/proc/{tgid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "?"


def anon_pfns(tgid: int, present: PresentPages | None = None) -> array[int]:
    """PFNs of every present anonymous page (pagemap entry present, not PM_FILE) in ``tgid``'s private VMAs.

    fs/proc/task_mmu.c: one PFN per mapping entry (a page mapped at two addresses appears twice); shared
    VMAs are skipped (their pages are shmem or file pages, never anonymous). With ``present`` (a
    :class:`foliosim.host.ptrace.PresentPages`), one PAGEMAP_SCAN ioctl per run of adjacent VMAs finds the runs of
    present non-file pages first and only those entries are read, so reservations of GiBs cost nothing.
    """
    import numpy as np

    out: array[int] = array("Q")
    present_bit, file_bit = np.uint64(procfs.PM_PRESENT), np.uint64(procfs.PM_FILE)
    mask = np.uint64(procfs.PM_PFN_MASK)
    maps = [vma for vma in procfs.Maps.read(tgid) if vma.start < USER_END]
    if present is not None:
        # one scan per run of adjacent VMAs: the shared ones in between hold file/shmem pages only, which the scan
        # leaves out like every file page
        spans: list[tuple[int, int]] = []
        for vma in maps:
            first, end = vma.start >> procfs.PAGE_SHIFT, vma.end >> procfs.PAGE_SHIFT
            if spans and spans[-1][1] == first:
                spans[-1] = (spans[-1][0], end)
            elif vma.private:
                spans.append((first, end))
        runs = present.runs(tgid, spans, anon_only=True)
    else:
        runs = [(vma.start >> procfs.PAGE_SHIFT, vma.end >> procfs.PAGE_SHIFT) for vma in maps if vma.private]
    with procfs.Pagemap(tgid) as pagemap:
        for first, end in runs:
            while first < end:
                nr = min(CHUNK_PAGES, end - first)
                words = np.frombuffer(pagemap.read_raw(first << procfs.PAGE_SHIFT, nr), dtype=np.uint64)
                pfns = words[((words & present_bit) != 0) & ((words & file_bit) == 0)] & mask
                out.frombytes(pfns[pfns != 0].tobytes())
                first += nr
    return out


@dataclass(slots=True)
class _Mm:
    key: int  # the MM id when known, else -tgid
    mm_id: int | None
    tgids: list[int]
    comm: str = ""
    pfns: array[int] = field(default_factory=lambda: array("Q"))


def _group(tgids: Iterable[int], ids: dict[int, int] | None) -> list[_Mm]:
    """Processes grouped by MM (threads are one process already; CLONE_VM siblings share an MM id).

    A process without an MM id (the iterator did not see it, or it has no mm) is keyed by its own tgid.
    """
    groups: dict[int, _Mm] = {}
    for tgid in tgids:
        mm_id = ids.get(tgid) if ids is not None else None
        key = mm_id if mm_id else -tgid
        group = groups.get(key)
        if group is None:
            groups[key] = _Mm(key, mm_id or None, [tgid])
        else:
            group.tgids.append(tgid)
    return list(groups.values())


# --------------------------------------------------------------------------- the census


def run_census(pids: Sequence[int] | None, reader: FolioReader | None = None,
               tasks: TaskIterator | None = None, missing_ok: bool = False) -> CensusResult:
    """Read every large anonymous folio mapped by ``pids`` (every process when None) and judge the verdicts.

    ``pids`` may name threads (their process is read). Opens (and closes) a BPF folio reader and task iterator
    unless given. Raises CensusError for a pid that does not exist (with ``missing_ok`` it is listed in
    ``skipped`` instead: a traced process that ended meanwhile), HostUnavailable when not root or without BPF,
    HostError when the kernel reads fail.
    """
    from foliosim.host.bpf import FolioReader
    from foliosim.host.tasks import TaskIterator

    start = time.perf_counter()
    missing: list[tuple[int, str]] = []
    if pids is not None:
        if not pids:
            raise CensusError("no pid given")
        found: set[int] = set()
        for pid in pids:
            try:
                found.add(tgid_of(pid))
            except CensusError as exc:
                if not missing_ok:
                    raise
                missing.append((pid, str(exc)))
        tgids = sorted(found)
        mode = "pids"
    else:
        tgids = all_tgids()
        mode = "all"
    result = CensusResult(mode, tuple(tgids))
    result.skipped.extend(missing)
    if os.geteuid() != 0:
        raise HostUnavailable("census: not root (pagemap PFNs, /proc/kpageflags and BPF need root)")
    with contextlib.ExitStack() as stack:
        t = time.perf_counter()
        if reader is None:
            reader = stack.enter_context(FolioReader())
        result.seconds["bpf_startup"] = time.perf_counter() - t
        t = time.perf_counter()
        ids_before: dict[int, int] | None = None
        try:
            if tasks is None:
                tasks = stack.enter_context(TaskIterator(reader.btf))
            ids_before = tasks.mm_ids()
            result.mm_ids_source = "kernel mm_id of every task (BPF task iterator)"
        except HostUnavailable as exc:
            tasks = None
            result.mm_ids_source = f"unavailable ({exc}): slots reported raw, MMs keyed by process"
        result.seconds["mm_ids"] = time.perf_counter() - t

        t = time.perf_counter()
        mms = _read_pagemaps(tgids, ids_before, result)
        result.seconds["pagemaps"] = time.perf_counter() - t

        t = time.perf_counter()
        extents, hugetlb = _large_anon_folios(mms)
        result.seconds["kpageflags"] = time.perf_counter() - t

        t = time.perf_counter()
        page_counts, per_mm = _mapping_entries(mms, extents)
        result.seconds["group"] = time.perf_counter() - t

        t = time.perf_counter()
        kernel: dict[int, KernelFolio] = {}
        for head, order in sorted(extents.items()):
            try:
                folio = reader.read_folio(head, order)
            except HostError:
                result.unreadable += 1
                continue
            if not folio.is_anon:
                result.unreadable += 1
                continue
            kernel[head] = folio
        result.seconds["bpf_reads"] = time.perf_counter() - t

        changed_mms: set[int] = set()
        if tasks is not None and ids_before is not None:
            ids_after = tasks.mm_ids()
            changed_mms = {mm.key for mm in mms if any(ids_after.get(tg) != mm.mm_id for tg in mm.tgids)
                           and mm.mm_id is not None}
    t = time.perf_counter()
    by_key = {mm.key: mm for mm in mms}
    for head, folio in kernel.items():
        result.folios.append(_judge(folio, hugetlb[head], page_counts[head], per_mm[head], by_key, changed_mms))
    result.seconds["judge"] = time.perf_counter() - t
    result.seconds["total"] = time.perf_counter() - start
    return result


def _read_pagemaps(tgids: Sequence[int], ids: dict[int, int] | None, result: CensusResult) -> list[_Mm]:
    """Each MM's anonymous PFNs, read from one of its processes; processes that vanish are recorded as skipped."""
    from foliosim.host.ptrace import PresentPages

    present = PresentPages()
    mms: list[_Mm] = []
    for mm in _group(tgids, ids):
        for tgid in mm.tgids:
            try:
                if mm.mm_id is None and not procfs.Maps.read(tgid):
                    break  # no VMA at all: a kernel thread, or a process past exit_mm()
                mm.pfns = anon_pfns(tgid, present)
            except HostError as exc:
                result.skipped.append((tgid, str(exc)))
                continue
            mm.comm = _comm(tgid)
            break
        else:
            continue
        if mm.mm_id is None and not mm.comm:
            result.no_mm += len(mm.tgids)
            continue
        result.processes += len(mm.tgids)
        if mm.pfns:
            mms.append(mm)
        result.mms += 1
        result.anon_pages += len(mm.pfns)
    return mms


def _flags_of(phys: procfs.PhysReader, pfns: Any) -> tuple[Any, dict[int, int]]:
    """The kpageflags word of each of the sorted unique ``pfns`` (numpy int64), one pread per run of PFNs less than
    ``_FLAGS_GAP`` apart, and the order of every folio head among them whose pages the runs cover: the tail pages
    that follow a head up to the next page that is not a tail (each run is read one PFN further for that)."""
    import numpy as np

    if not len(pfns):
        return np.empty(0, dtype=np.int64), {}
    head_bit, tail_bit = 1 << procfs.KPF_COMPOUND_HEAD, 1 << procfs.KPF_COMPOUND_TAIL
    bounds = [0, *(np.flatnonzero(np.diff(pfns) > _FLAGS_GAP) + 1).tolist(), len(pfns)]
    blocks: list[Any] = []
    firsts: list[int] = []
    for lo, hi in itertools.pairwise(bounds):
        first = int(pfns[lo])
        count = int(pfns[hi - 1]) - first + 1
        try:
            raw = phys.kpageflags_range(first, count + 1)
        except HostError:  # the run ends at the last PFN
            raw = phys.kpageflags_range(first, count)
        blocks.append(np.frombuffer(raw, dtype=np.int64))
        firsts.append(first)
    words = np.concatenate(blocks)
    lengths = np.array([len(b) for b in blocks], dtype=np.int64)
    starts = np.concatenate((np.zeros(1, dtype=np.int64), np.cumsum(lengths)[:-1]))
    pfn_of = np.repeat(np.array(firsts, dtype=np.int64) - starts, lengths) + np.arange(len(words), dtype=np.int64)
    out = words[np.searchsorted(pfn_of, pfns)]
    heads = np.flatnonzero((words & head_bit) != 0)
    not_tail = np.flatnonzero((words & tail_bit) == 0)
    after = np.searchsorted(not_tail, heads, side="right")
    found = after < len(not_tail)
    heads, ends = heads[found], not_tail[after[found]]
    sizes = ends - heads
    # the next page that is not a tail must follow in the same run (contiguous PFNs), a power of two pages on
    ok = (pfn_of[ends] - pfn_of[heads] == sizes) & (sizes > 1) & ((sizes & (sizes - 1)) == 0)
    orders = dict(zip(pfn_of[heads[ok]].tolist(), [int(x).bit_length() - 1 for x in sizes[ok].tolist()],
                      strict=True))
    return out, orders


def _large_anon_folios(mms: Sequence[_Mm]) -> tuple[dict[int, int], dict[int, bool]]:
    """(head -> order, head -> hugetlb) for every large anonymous folio behind the MMs' PFNs (/proc/kpageflags).

    The flags of every PFN are read in bulk (:func:`_flags_of`); a folio whose head was not among them is found
    with PhysReader.folio_extent; the PFNs inside a folio are skipped."""
    import numpy as np

    extents: dict[int, int] = {}
    hugetlb: dict[int, bool] = {}
    arrays = [np.frombuffer(mm.pfns, dtype=np.uint64).astype(np.int64) for mm in mms if len(mm.pfns)]
    if not arrays:
        return extents, hugetlb
    pfns = np.sort(np.concatenate(arrays))
    pfns = pfns[np.concatenate((np.ones(1, dtype=bool), pfns[1:] != pfns[:-1]))]  # unique (np.unique hashes)
    compound = (1 << procfs.KPF_COMPOUND_HEAD) | (1 << procfs.KPF_COMPOUND_TAIL)
    anon, zero, huge = 1 << procfs.KPF_ANON, 1 << procfs.KPF_ZERO_PAGE, 1 << procfs.KPF_HUGE
    with procfs.PhysReader() as phys:
        flags, orders = _flags_of(phys, pfns)
        keep = ((flags & compound) != 0) & ((flags & anon) != 0) & ((flags & zero) == 0)
        candidates, cand_flags = pfns[keep].tolist(), flags[keep].tolist()
        i, n = 0, len(candidates)
        while i < n:
            pfn = candidates[i]
            if pfn in orders:
                head, order = pfn, orders[pfn]
            else:
                try:
                    head, order = phys.folio_extent(pfn)
                except HostError:  # split or freed since pagemap was read
                    i += 1
                    continue
            if order:
                extents[head] = order
                hugetlb[head] = bool(cand_flags[i] & huge)
            i = max(i + 1, bisect.bisect_left(candidates, head + (1 << order), i))
    return extents, hugetlb


def _mapping_entries(mms: Sequence[_Mm], extents: dict[int, int]) -> tuple[dict[int, list[int]],
                                                                          dict[int, dict[int, int]]]:
    """(head -> entries per page over every MM read, head -> MM key -> its entries) for the folios ``extents``.

    Vectorised (numpy): each MM's PFNs are located in the sorted folio extents by binary search."""
    import numpy as np

    heads_list = sorted(extents)
    page_counts: dict[int, list[int]] = {}
    per_mm: dict[int, dict[int, int]] = {head: {} for head in heads_list}
    if not heads_list:
        return page_counts, per_mm
    heads = np.array(heads_list, dtype=np.int64)
    sizes = np.array([1 << extents[h] for h in heads_list], dtype=np.int64)
    base = np.concatenate((np.zeros(1, dtype=np.int64), np.cumsum(sizes)[:-1]))
    total = np.zeros(int(sizes.sum()), dtype=np.int64)
    for mm in mms:
        if not mm.pfns:
            continue
        pfns = np.frombuffer(mm.pfns, dtype=np.uint64).astype(np.int64)
        index = np.searchsorted(heads, pfns, side="right") - 1
        keep = index >= 0
        index, pfns = index[keep], pfns[keep]
        offset = pfns - heads[index]
        inside = offset < sizes[index]
        index, offset = index[inside], offset[inside]
        if not len(index):
            continue
        total += np.bincount(base[index] + offset, minlength=len(total))
        per_folio = np.bincount(index, minlength=len(heads))
        for i in np.flatnonzero(per_folio).tolist():
            per_mm[heads_list[i]][mm.key] = int(per_folio[i])
    for i, head in enumerate(heads_list):
        page_counts[head] = total[base[i] : base[i] + sizes[i]].tolist()
    return page_counts, per_mm


def _judge(folio: KernelFolio, hugetlb: bool, counts: Sequence[int], seen: dict[int, int], mms: dict[int, _Mm],
           changed_mms: set[int]) -> FolioCensus:
    """The verdict, the truth and the outcome of one folio; ``counts``: page-table entries per page that the MMs
    read showed, ``seen``: MM key -> its entries."""
    precise = precise_page_mapcounts(folio)
    unseen = sum(max(0, p - c) for p, c in zip(precise, counts, strict=True))
    stale = sum(max(0, c - p) for p, c in zip(precise, counts, strict=True))
    mappers = tuple(Mapper(mms[key].mm_id, tuple(mms[key].tgids), mms[key].comm, entries)
                    for key, entries in sorted(seen.items()))
    if stale or any(key in changed_mms for key in seen) or not consistent(folio, hugetlb):
        truth = TRUTH_CHANGED
    elif len(mappers) >= 2 or unseen:
        truth = TRUTH_MANY
    else:
        truth = TRUTH_ONE
    verdict = kernel_verdict(folio, hugetlb)
    slots = ((folio.mm_id(0) or 0, (folio.mm_id_mapcount or (-1, -1))[0] + 1),
             (folio.mm_id(1) or 0, (folio.mm_id_mapcount or (-1, -1))[1] + 1))
    cause: str | None = None
    if truth == TRUTH_CHANGED:
        outcome = EXCLUDED
    elif truth == TRUTH_ONE:
        outcome = FALSE_SHARED if verdict else EXCLUSIVE
        if verdict:
            cause = false_shared_cause(slots, mappers[0].mm_id if mappers else None)
    else:
        outcome = SHARED if verdict else FALSE_EXCLUSIVE
        if not verdict:
            cause = false_exclusive_cause(folio)
    return FolioCensus(
        head_pfn=folio.head_pfn, order=folio.order, hugetlb=hugetlb,
        mapcount=(folio.large_mapcount if folio.large_mapcount is not None else folio.page_mapcount[0]) + 1,
        entire_mapcount=(folio.entire_mapcount + 1) if folio.entire_mapcount is not None else 0,
        slots=slots, shared_bit=bool(folio.shared_bit), lock_bit=bool(folio.lock_bit), refcount=folio.refcount,
        pincount=folio.pincount or 0, maybe_shared=verdict, mappers=mappers, unseen=unseen, stale=stale,
        truth=truth, outcome=outcome, cause=cause)


# --------------------------------------------------------------------------- the human view


def _pct(rate: Rate) -> str:
    return "-" if not rate.n else f"{100 * rate.k / rate.n:.1f} %"


def render(result: CensusResult) -> list[Any]:
    """Rich renderables for the terminal (stderr): the table by order, the two rates, the causes."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"Large anonymous folios ({'every process' if result.mode == 'all' else 'the given pids'})",
                  title_justify="left")
    for name in ("order", "folios", "1 MM", ">=2 MMs", "changed", "maybe shared", "false shared",
                 "false exclusive"):
        table.add_column(name, justify="right")
    rows = result.rows()
    for r in rows:
        table.add_row(str(r.order), str(r.folios), str(r.one_mm), str(r.many_mms), str(r.changed),
                      str(r.maybe_shared), str(r.false_shared), str(r.false_exclusive))
    if len(rows) > 1:
        table.add_row("all", *(str(sum(getattr(r, a) for r in rows)) for a in
                               ("folios", "one_mm", "many_mms", "changed", "maybe_shared", "false_shared",
                                "false_exclusive")), style="bold")
    out: list[Any] = [Text(f"{result.processes} processes ({result.mms} MMs, {result.no_mm} without an mm), "
                           f"{result.anon_pages} anonymous pages; MM ids: {result.mm_ids_source}")]
    out.append(table if rows else Text("no large anonymous folio mapped"))
    out.append(Text(f"false \"shared\" (mapped by 1 MM, verdict maybe shared): {result.false_shared.describe()}"))
    fe = result.false_exclusive
    out.append(Text(f"false \"exclusive\" (mapped by >=2 MMs, verdict exclusive; must be 0): {fe.describe()}",
                    style="bold red" if fe.k else ""))
    for code, n in sorted(result.causes().items()):
        out.append(Text(f"  {n} x {code}: {CAUSES.get(code) or FALSE_EXCLUSIVE_CAUSES.get(code, code)}"))
    extra = []
    if result.outside():
        extra.append(f"{result.outside()} folios counted as >=2 MMs through mappings of MMs not read")
    if result.bit_ignored():
        extra.append(f"{result.bit_ignored()} folios have the shared bit set but mapcount <= 1 (verdict exclusive)")
    if result.unreadable:
        extra.append(f"{result.unreadable} folios were gone or had changed shape when read")
    if result.skipped:
        extra.append(f"{len(result.skipped)} processes not read: " + "; ".join(
            f"{tgid} ({why})" for tgid, why in result.skipped[:3]) + (" ..." if len(result.skipped) > 3 else ""))
    out.extend(Text(line, style="dim") for line in extra)
    secs = result.seconds
    out.append(Text(f"{secs.get('total', 0.0):.2f} s (BPF start-up {secs.get('bpf_startup', 0.0):.2f}, pagemaps "
                    f"{secs.get('pagemaps', 0.0):.2f}, kpageflags {secs.get('kpageflags', 0.0):.2f}, folio reads "
                    f"{secs.get('bpf_reads', 0.0):.2f})", style="dim"))
    return out
