"""A hand-made process-level run for the viewer: fork, a copy-on-write copy, exit, a reuse.

Until the process simulator is merged this stands in for its output. The folio
states are real (driven through RmapSystem); the tasks, page tables and CoW
decisions are written by hand as the simulator would report them:

    spawn P; mmap P buf 16K anon private; write P buf 16K      (one order-2 anon folio f1)
    fork P C                                                    (f1 maybe mapped shared)
    write C buf 4K     -> copy (large: maybe mapped shared), C gets small folio f2
    exit C             -> f1 mapped by P only again
    write P buf+4K 4K  -> reuse (large: exclusive, refcount == mapcount)
"""

from __future__ import annotations

from foliosim.kconfig import KernelConfig
from foliosim.owner import OwnerEvent
from foliosim.report.view import (
    CowView,
    FolioView,
    Frame,
    MMView,
    PageRun,
    ProcessView,
    TaskView,
    ViewModel,
    VmaView,
    folio_view,
    mm_names,
)
from foliosim.rmap import PTE, RmapResult
from foliosim.system import FolioHandle, RmapSystem
from foliosim.truth import FolioTruth

BUF = 0x7F000  # first virtual page number of "buf" (address 0x7f000000)
LARGE_SHARED = "large: maybe mapped shared"
LARGE_EXCLUSIVE = "large: exclusive, refcount == mapcount (rechecked under lock)"


def process_model(config: KernelConfig | None = None) -> ViewModel:
    config = config or KernelConfig()
    s = RmapSystem(config)
    model = ViewModel(config, "hand-made process run: fork, CoW copy, exit, CoW reuse", "tests/view_fixture.py")
    frames = model.frames

    def touched(calls: list[tuple[str, str, object]]) -> tuple[FolioView, ...]:
        """Views of the folios the step's rmap calls touched (the last call on each explains it)."""
        last: dict[str, tuple[str, OwnerEvent | None]] = {}
        for folio, mm, result in calls:
            last[folio] = (mm, result.owner if isinstance(result, RmapResult) else None)
        names = mm_names(s)
        return tuple(folio_view(s.folio_handle(f), names, ev, mm, updated=True) for f, (mm, ev) in last.items()
                     if f in s.folios)

    def vma(runs: tuple[PageRun, ...]) -> VmaView:
        return VmaView("anon private rw (buf)", BUF, 4, runs)

    none4 = (PageRun(BUF, 4, None),)
    s.mm_new("mm1")
    frames.append(Frame(0, "spawn", "spawn P", 1, "P starts on a new MM",
                        process=ProcessView((TaskView("P", 1, "mm1"),), (MMView("mm1", 1, 1, 1, ()),))))
    frames.append(Frame(1, "mmap", "mmap P buf 16K anon private", 2,
                        process=ProcessView((TaskView("P", 1, "mm1"),), (MMView("mm1", 1, 1, 1, (vma(none4),)),))))
    s.folio_new("f1", 2)
    r = s.map_new_anon("f1", "mm1", PTE)
    p_rw = (PageRun(BUF, 4, "f1", 0, write=True),)
    frames.append(Frame(2, "write", "write P buf 16K 0x01", 3, "a write fault allocates an order-2 anon folio",
                        folios=touched([("f1", "mm1", r)]),
                        process=ProcessView((TaskView("P", 1, "mm1"),), (MMView("mm1", 1, 1, 1, (vma(p_rw),)),))))
    s.mm_new("mm2")
    r = s.dup("f1", "mm2", PTE, 0, 4)
    ro = (PageRun(BUF, 4, "f1", 0),)
    both = (TaskView("P", 1, "mm1"), TaskView("C", 2, "mm2"))
    frames.append(Frame(3, "fork", "fork P C", 4, "fork write-protects both page tables",
                        folios=touched([("f1", "mm2", r)]),
                        process=ProcessView(both, (MMView("mm1", 1, 1, 1, (vma(ro),)),
                                                   MMView("mm2", 2, 1, 1, (vma(ro),))))))
    f1 = s.folio("f1")
    # P and C hold one reference per mapped page: refcount 8 == mapcount 8, but maybe shared.
    cow_copy = CowView("C", "mm2", BUF, "f1", 0, "pte", LARGE_SHARED, "copy", False,
                       f1.large_mapcount + 1, 8, True, "f2")
    s.folio_new("f2", 0)
    r2 = s.map_new_anon("f2", "mm2", PTE)
    r1 = s.unmap("f1", "mm2", PTE, 0, 1)
    c_runs = (PageRun(BUF, 1, "f2", 0, write=True), PageRun(BUF + 1, 3, "f1", 1))
    frames.append(Frame(4, "write", "write C buf 4K 0x02", 5, folios=touched([("f2", "mm2", r2), ("f1", "mm2", r1)]),
                        process=ProcessView(both, (MMView("mm1", 1, 1, 1, (vma(ro),)),
                                                   MMView("mm2", 2, 1, 1, (vma(c_runs),)))),
                        cow=(cow_copy,)))
    r1 = s.unmap("f1", "mm2", PTE, 1, 3)
    s.unmap("f2", "mm2", PTE, 0, 1)
    f2 = s.folio_free("f2")
    s.mm_free("mm2")
    freed = folio_view(FolioHandle("f2", f2, FolioTruth(1)), mm_names(s), freed=True)
    frames.append(Frame(5, "exit", "exit C", 6, folios=(*touched([("f1", "mm2", r1)]), freed),
                        process=ProcessView((TaskView("P", 1, "mm1"),), (MMView("mm1", 1, 1, 1, (vma(ro),)),))))
    f1 = s.folio("f1")
    cow_reuse = CowView("P", "mm1", BUF + 1, "f1", 1, "pte", LARGE_EXCLUSIVE, "reuse", False,
                        f1.large_mapcount + 1, 4, False)
    p_runs = (PageRun(BUF, 1, "f1", 0), PageRun(BUF + 1, 1, "f1", 1, write=True), PageRun(BUF + 2, 2, "f1", 2))
    frames.append(Frame(6, "write", "write P buf+4K 4K 0x03", 7, "nothing else maps f1 now: reused in place",
                        process=ProcessView((TaskView("P", 1, "mm1"),), (MMView("mm1", 1, 1, 1, (vma(p_runs),)),)),
                        cow=(cow_reuse,)))
    return model
