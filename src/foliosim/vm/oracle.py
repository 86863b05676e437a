"""The isolation oracle: a reference model of process memory, and the invariant checks.

:class:`ReferenceMemory` knows nothing about folios or page tables. It keeps
what each address space must read: private pages are copied eagerly at fork
(as the semantics of fork say), shared mappings read the file's single copy,
threads share their MM's view. :func:`check_machine` compares that with what
the simulated page tables and folios return, and checks the kernel's
invariants (rmap truth == page tables, refcount accounting, AnonExclusive
rules, soundness of folio_maybe_mapped_shared(), pins coherent with the
pinner's view, no foreign data in a pipe).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from foliosim.folio import folio_mapcount, folio_maybe_mapped_shared
from foliosim.vm.memory import PAGE_SHIFT, ZERO_PAGE, SparsePages, describe_page, write_into

if TYPE_CHECKING:
    from foliosim.vm.machine import Machine
    from foliosim.vm.mm import MM
    from foliosim.vm.pagecache import SimFile
    from foliosim.vm.pagetable import SimFolio
    from foliosim.vm.vma import Vma

GUP_PIN_COUNTING_BIAS = 1024
MAX_REPORTS = 8


class ReferenceMemory:
    """What every address space must read, by plain value semantics.

    Sparse: ``private`` holds only the pages an MM wrote (or copied at fork), ``files`` only the
    pages that differ from a file's initial content, so its size and the cost of every operation
    follow the pages touched, never the size of a mapping.
    """

    __slots__ = ("files", "private")

    def __init__(self) -> None:
        self.files: dict[str, SparsePages] = {}
        self.private: dict[str, dict[int, bytes]] = {}

    def mm_new(self, mm: MM) -> None:
        self.private[mm.name] = {}

    def mm_gone(self, mm: MM) -> None:
        self.private.pop(mm.name, None)

    def file_new(self, file: SimFile) -> None:
        self.files[file.name] = file.disk.copy()

    def expected(self, mm: MM, vma: Vma, vpn: int) -> bytes:
        if vma.file is not None and vma.shared:
            return self.files[vma.file.name][vma.file_index(vpn)]
        page = self.private[mm.name].get(vpn)
        if page is not None:
            return page
        if vma.file is None:
            return ZERO_PAGE
        return self.files[vma.file.name][vma.file_index(vpn)]

    def write(self, mm: MM, vma: Vma, vpn: int, offset: int, data: bytes) -> None:
        new = write_into(self.expected(mm, vma, vpn), offset, data)
        if vma.file is not None and vma.shared:
            self.files[vma.file.name][vma.file_index(vpn)] = new
        else:
            self.private[mm.name][vpn] = new

    def privatize(self, mm: MM, vma: Vma, vpn: int) -> None:
        """A private mapping stopped following its file at ``vpn`` (CoW broken by a GUP write
        or by unsharing for a long-term pin): from now on it keeps its own copy."""
        if vma.file is not None and not vma.shared:
            pages = self.private[mm.name]
            if vpn not in pages:
                pages[vpn] = self.expected(mm, vma, vpn)

    @staticmethod
    def _within(pages: dict[int, bytes], start: int, end: int) -> list[int]:
        """The private pages in ``[start, end)``: O(min(range, pages))."""
        if end - start <= len(pages):
            return [v for v in range(start, end) if v in pages]
        return [v for v in pages if start <= v < end]

    def unmap(self, mm: MM, start: int, end: int) -> None:
        pages = self.private[mm.name]
        for vpn in self._within(pages, start, end):
            del pages[vpn]

    dontneed = unmap  # private pages revert to zero / the file; shared ones are unaffected

    def move(self, mm: MM, start: int, end: int, dst: int) -> None:
        pages = self.private[mm.name]
        moved = {v: pages.pop(v) for v in self._within(pages, start, end)}
        for vpn, page in moved.items():
            pages[vpn - start + dst] = page

    def fork(self, src: MM, dst: MM, vmas: list[Vma]) -> None:
        """fork() copies the private pages of the VMAs the child inherits (``vmas``, in address order)."""
        if not vmas:
            return
        child = self.private[dst.name]
        starts = [v.start for v in vmas]
        for vpn, page in self.private[src.name].items():
            i = bisect.bisect_right(starts, vpn) - 1
            if i >= 0 and vpn < vmas[i].end:
                child[vpn] = page


@dataclass(slots=True, eq=False)
class GupHandle:
    """The pages one pin (FOLL_PIN) or one pipe (FOLL_GET, vmsplice) holds.

    ``vpns[i]`` is the address page i was taken at while that mapping still
    stands (None once it was unmapped, moved away or the MM is gone, or when
    the kernel does not promise coherence). ``allowed[i]`` collects every value
    the owner's view of that page had while tracked: a pipe may hold any of
    them, never anything else.
    """

    name: str
    task: str
    mm: MM
    foll_pin: bool
    write: bool
    longterm: bool
    pages: list[tuple[SimFolio, int]]
    vpns: list[int | None]
    allowed: list[set[bytes]] = field(default_factory=list)
    owner_exited: bool = False
    shared: list[tuple[str, int] | None] = field(default_factory=list)  # (file, index) of shared-mapping pages

    def track(self, m: Machine) -> None:
        if not self.allowed:
            self.allowed = [set() for _ in self.pages]
        for i, vpn in enumerate(self.vpns):
            if vpn is None:
                continue
            vma = self.mm.find_vma(vpn)
            if vma is None:
                self.vpns[i] = None
                continue
            self.allowed[i].add(m.ref.expected(self.mm, vma, vpn))

    def untrack(self, mm: MM, start: int, end: int) -> None:
        if mm is not self.mm:
            return
        self.vpns = [None if v is not None and start <= v < end else v for v in self.vpns]

    def move(self, mm: MM, start: int, end: int, delta: int) -> None:
        if mm is not self.mm:
            return
        self.vpns = [v + delta if v is not None and start <= v < end else v for v in self.vpns]


def check_machine(m: Machine) -> list[str]:
    """Every violation of isolation or of an invariant, in words (empty when all is well)."""
    problems: list[str] = []
    _check_isolation(m, problems)
    _check_gup(m, problems)
    _check_folios(m, problems)
    return problems[:MAX_REPORTS] + ([f"... and {len(problems) - MAX_REPORTS} more"]
                                     if len(problems) > MAX_REPORTS else [])


def _who(m: Machine, mm: MM) -> str:
    names = [t.name for t in m.tasks.values() if t.mm is mm]
    return f"{mm.name} ({', '.join(names) or 'no task'})"


def _check_isolation(m: Machine, problems: list[str]) -> None:
    """Every page of every live MM reads what the reference says.

    Only pages that can differ are visited: present pages, pages the reference keeps a private copy
    of, and, for file and shmem mappings, the file pages whose content differs from the reference's.
    Every other page reads zero (anonymous) or the file (file-backed) on both sides. The cost follows
    the pages touched, never the size of a mapping.
    """
    stale = _stale_file_pages(m)
    order = m.pmd_order
    for mm in m.mms.values():
        if mm.zapped:
            continue
        vpns = set(mm.ptes)
        for idx in mm.pmds:
            vpns.update(range(idx << order, (idx + 1) << order))
        vpns.update(m.ref.private.get(mm.name, ()))
        if stale:
            for mapping in mm.vmas:
                indexes = stale.get(mapping.file.name) if mapping.file is not None else None
                for index in indexes or ():
                    if mapping.pgoff <= index < mapping.pgoff + mapping.pages:
                        vpns.add(mapping.start + index - mapping.pgoff)
        for vpn in sorted(vpns):
            vma = mm.find_vma(vpn)
            if vma is None:
                continue
            want = m.ref.expected(mm, vma, vpn)
            got = m.physical_content(mm, vma, vpn)
            if got != want:
                what = "leak (sees data it must not)" if got != ZERO_PAGE else "lost write"
                problems.append(f"isolation: {_who(m, mm)} at {vpn << PAGE_SHIFT:#x} reads "
                                f"{describe_page(got)}, the reference model says {describe_page(want)}: {what}")


def _stale_file_pages(m: Machine) -> dict[str, list[int]]:
    """File name -> the page indexes whose content (page cache, else disk) is not the reference's.

    Only cached pages and pages either side changed are looked at; the rest are the file's
    initial content on both sides.
    """
    out: dict[str, list[int]] = {}
    for name, file in m.files.items():
        ref = m.ref.files.get(name)
        if ref is None:
            continue
        indexes = {*file.cache, *ref.stored(), *file.disk.stored()}
        bad = sorted(i for i in indexes if file.content(i) != ref[i])
        if bad:
            out[name] = bad
    return out


def _check_gup(m: Machine, problems: list[str]) -> None:
    for h in m.gup.values():
        for i, (f, page) in enumerate(h.pages):
            got = f.data[page]
            vpn = h.vpns[i]
            where = h.shared[i] if h.shared else None
            if where is not None:  # a page-cache page of a shared mapping: always the file's content
                want = m.ref.files[where[0]][where[1]]
                if got != want:
                    problems.append(f"{'pin' if h.foll_pin else 'pipe'} {h.name}: page {i} ({f.name}[{page}]) "
                                    f"holds {describe_page(got)}, file {where[0]} page {where[1]} is "
                                    f"{describe_page(want)}")
                continue
            if h.foll_pin:
                if vpn is None:
                    continue
                vma = h.mm.find_vma(vpn)
                if vma is None:
                    continue
                want = m.ref.expected(h.mm, vma, vpn)
                if got != want:
                    problems.append(f"pin {h.name}: page {i} ({f.name}[{page}]) holds {describe_page(got)} but "
                                    f"{h.task} reads {describe_page(want)} at {vpn << PAGE_SHIFT:#x}: stale pin")
                hit = m.lookup(h.mm, vpn)
                if f.is_anon and hit is not None and hit[0] is f:
                    by_pmd = (vpn >> m.pmd_order) in h.mm.pmds
                    if not f.exclusive[0 if by_pmd else page]:
                        problems.append(f"pin {h.name}: pinned anon page {f.name}[{page}] is not AnonExclusive")
            elif h.allowed[i] and got not in h.allowed[i]:
                problems.append(f"pipe {h.name}: page {i} ({f.name}[{page}]) holds {describe_page(got)}, "
                                f"which {h.task} never had there: leak through a plain reference")


def _check_folios(m: Machine, problems: list[str]) -> None:
    if set(m.folios) != set(m.rmap.folios):
        problems.append(f"folio tables differ: simulator {sorted(m.folios)} vs rmap {sorted(m.rmap.folios)}")
        return
    ptes: dict[str, dict[str, list[int]]] = defaultdict(dict)
    pmds: dict[str, dict[str, int]] = defaultdict(dict)
    page_mms: dict[tuple[str, int], set[str]] = defaultdict(set)
    ids: dict[int, str] = {}
    for mm in m.mms.values():
        if mm.mm_id in ids:
            problems.append(f"{mm.name} and {ids[mm.mm_id]} share MM id {mm.mm_id}")
        ids[mm.mm_id] = mm.name
        for vpn, pte in mm.ptes.items():
            f = pte.folio
            vma = mm.find_vma(vpn)
            if vma is None:
                problems.append(f"{mm.name}: PTE at {vpn << PAGE_SHIFT:#x} outside any VMA")
                continue
            if pte.write and not vma.write:
                problems.append(f"{mm.name}: writable PTE at {vpn << PAGE_SHIFT:#x} in a read-only VMA")
            if f.is_zero:
                if pte.write:
                    problems.append(f"{mm.name}: writable zero-page PTE at {vpn << PAGE_SHIFT:#x}")
                continue
            counts = ptes[f.name].setdefault(mm.name, [0] * f.nr_pages)
            counts[pte.page] += 1
            page_mms[(f.name, pte.page)].add(mm.name)
            if pte.write and vma.is_cow and not (f.is_anon and f.exclusive[pte.page]):
                problems.append(f"{mm.name}: writable PTE at {vpn << PAGE_SHIFT:#x} maps {f.name}[{pte.page}], "
                                "which is not an AnonExclusive page")
        for idx, pmd in mm.pmds.items():
            f = pmd.folio
            if f.is_zero:
                continue
            pmds[f.name][mm.name] = pmds[f.name].get(mm.name, 0) + 1
            for k in range(f.nr_pages):
                page_mms[(f.name, k)].add(mm.name)
            vma = mm.find_vma(idx << m.pmd_order)
            if pmd.write and (vma is None or not f.exclusive[0]):
                problems.append(f"{mm.name}: writable PMD maps {f.name} without AnonExclusive")
    for name, f in m.folios.items():
        core = f.core()
        truth = m.rmap.folios[name].truth
        mine_pte = {k: v for k, v in ptes.get(name, {}).items()}
        if {k: list(v) for k, v in truth.pte.items()} != mine_pte or dict(truth.pmd) != pmds.get(name, {}):
            problems.append(f"{name}: rmap ground truth {dict(truth.pte)}/{dict(truth.pmd)} disagrees with "
                            f"the page tables {mine_pte}/{pmds.get(name, {})}")
        entries = truth.total_entries()
        pin_refs = f.pins if m.config.has_pincount(f.order) else f.pins * GUP_PIN_COUNTING_BIAS
        cache = f.nr_pages if f.file is not None else 0
        want = entries + pin_refs + f.refs + cache
        if core.refcount != want:
            problems.append(f"{name}: refcount {core.refcount}, expected {want} "
                            f"({entries} mappings + {pin_refs} pin + {f.refs} GUP + {cache} page cache)")
        if core.refcount < folio_mapcount(core):
            problems.append(f"{name}: refcount {core.refcount} < mapcount {folio_mapcount(core)}")
        if core.pincount != (f.pins if m.config.has_pincount(f.order) else 0):
            problems.append(f"{name}: pincount {core.pincount} but {f.pins} pins")
        if truth.nr_mapping_mms() > 1 and not folio_maybe_mapped_shared(core):
            problems.append(f"{name}: mapped by {truth.nr_mapping_mms()} MMs but folio_maybe_mapped_shared() "
                            "says exclusive (a false negative)")
        if f.is_anon:
            for page in range(f.nr_pages):
                owners = page_mms.get((name, page), set())
                flag = f.exclusive[0] if pmds.get(name) else f.exclusive[page]
                if flag and len(owners) > 1:
                    problems.append(f"{name}[{page}] is AnonExclusive but mapped by {sorted(owners)}")
