"""One picture of the live side after a scenario line: every page of every task's scenario mappings, and its folio.

Per page: present, PFN, the folio's head PFN and order (kpageflags), the precise mapcount (kpagecount), the
pagemap "exclusively mapped" bit and the kpageflags AnonExclusive bit (the head page's, on this kernel). Per
folio, when the BPF reader is there: its raw fields (refcount, large/entire mapcount, pincount, the ``_mm_ids``
word and both slots' mapcounts, ``_nr_pages_mapped``, each page's ``_mapcount`` and PG_anon_exclusive).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from foliosim.host import procfs

if TYPE_CHECKING:
    from foliosim.host.bpf import FolioReader, KernelFolio

PAGE_SHIFT = 12
#: where scenario mappings live (the simulator's MMAP_BASE up to 64 GiB above it): nothing of the agents' own
WINDOW = (0x10000000, 0x1000000000)


@dataclass(frozen=True, slots=True)
class PageObs:
    """What procfs tells about one virtual page of a task."""

    present: bool
    pfn: int = 0
    head_pfn: int = 0
    order: int = 0
    mapcount: int = 0  # /proc/kpagecount: the page's precise mapcount
    exclusive: bool = False  # pagemap bit 56 (PM_MMAP_EXCLUSIVE)
    head_anon_exclusive: bool = False  # kpageflags' PG_anon_exclusive bit (the head page's for a large folio)
    anon: bool = False
    zero: bool = False  # the shared zero page or the huge zero page (kpageflags ZERO_PAGE)

    @property
    def page(self) -> int:
        return self.pfn - self.head_pfn


@dataclass(slots=True)
class LiveState:
    """The live side after one line: pages per process (by tgid), folios by head PFN, MM ids by tgid."""

    pages: dict[int, dict[int, PageObs]] = field(default_factory=dict)
    folios: dict[int, KernelFolio] = field(default_factory=dict)
    orders: dict[int, int] = field(default_factory=dict)  # head PFN -> order, for every folio seen
    mm_ids: dict[int, int | None] = field(default_factory=dict)

    def to_json(self, names: dict[int, list[str]]) -> dict[str, Any]:
        """Every observation, for --json (addresses and PFNs in hex)."""
        return {
            "tasks": {",".join(v): {"tgid": k, "mm_id": self.mm_ids.get(k),
                                    "pages": {f"{vpn << PAGE_SHIFT:#x}": _page_json(p)
                                              for vpn, p in sorted(self.pages.get(k, {}).items())}}
                      for k, v in names.items()},
            "folios": {f"{pfn:#x}": _folio_json(f) for pfn, f in sorted(self.folios.items())},
        }


def _page_json(p: PageObs) -> dict[str, Any]:
    if not p.present:
        return {"present": False}
    return {"present": True, "pfn": f"{p.pfn:#x}", "folio": f"{p.head_pfn:#x}", "order": p.order,
            "page": p.page, "mapcount": p.mapcount, "exclusive": p.exclusive, "anon": p.anon,
            "head_anon_exclusive": p.head_anon_exclusive}


def _folio_json(f: KernelFolio) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("order", "refcount", "large_mapcount", "entire_mapcount", "pincount", "nr_pages_mapped",
                 "mm_ids", "mm_id_mapcount", "page_mapcount", "anon_exclusive", "is_anon"):
        value = getattr(f, name, None)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def scenario_vmas(tgid: int) -> list[tuple[int, int]]:
    """The task's VMAs inside the scenario window, as page-number ranges."""
    out = []
    for vma in procfs.Maps.read(tgid):
        lo, hi = max(vma.start, WINDOW[0]), min(vma.end, WINDOW[1])
        if lo < hi:
            out.append((lo >> PAGE_SHIFT, hi >> PAGE_SHIFT))
    return out


def observe(tgids: list[int], reader: FolioReader | None, mm_ids: dict[int, int | None] | None = None,
            vmas: Callable[[int], list[tuple[int, int]]] = scenario_vmas) -> LiveState:
    """Read every page of the given processes' ``vmas`` (page-number ranges; default: the scenario window) and
    (with a reader) every folio they map."""
    state = LiveState()
    pfns: set[int] = set()
    raw: dict[int, dict[int, procfs.PagemapEntry]] = {}
    for tgid in tgids:
        entries: dict[int, procfs.PagemapEntry] = {}
        for start, end in vmas(tgid):
            for i, e in enumerate(procfs.read_pagemap(tgid, start << PAGE_SHIFT, end - start)):
                entries[start + i] = e
                if e.present and e.pfn:
                    pfns.add(e.pfn)
        raw[tgid] = entries
    ordered = sorted(pfns)
    with procfs.PhysReader() as phys:
        counts = dict(zip(ordered, phys.kpagecount(ordered), strict=True))
        flags = dict(zip(ordered, phys.kpageflags(ordered), strict=True))
        extents: dict[int, tuple[int, int]] = {}
        for pfn in ordered:
            if pfn not in extents:
                head, order = phys.folio_extent(pfn)
                for p in range(head, head + (1 << order)):
                    extents[p] = (head, order)
        head_list = sorted({extents[p][0] for p in ordered})
        head_flags = dict(zip(head_list, phys.kpageflags(head_list), strict=True))
    heads: dict[int, int] = {}
    for tgid, entries in raw.items():
        pages: dict[int, PageObs] = {}
        for vpn, e in entries.items():
            if not (e.present and e.pfn):
                pages[vpn] = PageObs(False)
                continue
            head, order = extents[e.pfn]
            heads[head] = order
            hf = head_flags[head]
            pf = flags[e.pfn]
            pages[vpn] = PageObs(True, e.pfn, head, order, counts[e.pfn], e.exclusive,
                                 bool(hf >> procfs.KPF_ANON_EXCLUSIVE & 1), bool(pf >> procfs.KPF_ANON & 1),
                                 bool(pf >> procfs.KPF_ZERO_PAGE & 1))
        state.pages[tgid] = pages
    state.orders = heads
    if reader is not None:
        for head, order in sorted(heads.items()):
            if head_flags[head] >> procfs.KPF_ZERO_PAGE & 1:
                continue
            state.folios[head] = reader.read_folio(head, order)
        for tgid in tgids:
            state.mm_ids[tgid] = reader.mm_id_of(tgid)
    return state
