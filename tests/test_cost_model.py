"""The per-update cost model (foliosim.schemes.cost, docs/cost-model.md).

The expected costs for ``kernel`` come from an explicit walk of the v6.15 rmap code
path written here, separately from the implementation: every memory write the
path makes is listed with the function that makes it, the field it writes, its
byte address in the memmap (from struct folio / struct page offsets: the 64-bit
ones measured from this machine's BTF, the 32-bit ones from the 32-bit layout)
and whether it is an atomic read-modify-write. Atomics, locks and cache lines are
then counted from that list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD, PTE, RmapLevel
from foliosim.schemes import UpdateCost, make_design
from foliosim.schemes.base import Design
from foliosim.system import Op

CONFIGS = [KernelConfig(64, False), KernelConfig(64, True), KernelConfig(32, False), KernelConfig(32, True)]
IDS = ["64-PAGE_MAPCOUNT", "64-NO_PAGE_MAPCOUNT", "32-PAGE_MAPCOUNT", "32-NO_PAGE_MAPCOUNT"]

# -- the layout, written out by hand ------------------------------------------------------------------
# 64-bit: struct page is 64 bytes, _mapcount at 48; struct folio page[1] holds _large_mapcount (80),
# _nr_pages_mapped (84), _entire_mapcount (88), _mm_id_mapcount[2] (96) and _mm_ids (104).
# 32-bit: struct page is 32 bytes (flags + 5 words, then _mapcount at 24); page[1] holds _large_mapcount
# (40), _nr_pages_mapped (44), _mm_id_mapcount[2] (48, shorts) and _mm_ids (52); page[2] holds
# _entire_mapcount (72).
LAYOUT = {
    64: {"page": 64, "_mapcount": 48, "_large_mapcount": 80, "_nr_pages_mapped": 84, "_entire_mapcount": 88,
         "_mm_id_mapcount": 96, "_mm_ids": 104},
    32: {"page": 32, "_mapcount": 24, "_large_mapcount": 40, "_nr_pages_mapped": 44, "_entire_mapcount": 72,
         "_mm_id_mapcount": 48, "_mm_ids": 52},
}


@dataclass
class Write:
    function: str
    address: int
    atomic: bool  # an atomic read-modify-write (a lock acquire is one)
    lock: bool = False


@dataclass
class Walk:
    """The kernel's state as the walk needs it, and the writes of the current call."""

    config: KernelConfig
    pages: list[int]
    entire: int = 0
    writes: list[Write] = field(default_factory=list)

    def at(self, name: str, page: int | None = None) -> int:
        lay = LAYOUT[self.config.word_bits]
        if page is not None:
            return page * lay["page"] + lay[name]
        return lay[name]

    def write(self, function: str, name: str, atomic: bool, page: int | None = None, lock: bool = False) -> None:
        self.writes.append(Write(function, self.at(name, page), atomic, lock))

    def large_mapcount_locked(self, function: str) -> None:
        """folio_add/sub_return_large_mapcount(): bit_spin_lock on _mm_ids, plain stores, __bit_spin_unlock."""
        self.write(function, "_mm_ids", atomic=True, lock=True)  # test_and_set_bit_lock
        self.write(function, "_large_mapcount", atomic=False)  # atomic_read + atomic_set
        self.write(function, "_mm_id_mapcount", atomic=False)
        self.write(function, "_mm_ids", atomic=False)  # __bit_spin_unlock: a release store

    def result(self) -> tuple[int, int, int]:
        atomics = sum(w.atomic for w in self.writes)
        locks = sum(w.lock for w in self.writes)
        lines = len({w.address // 64 for w in self.writes})
        self.writes = []
        return atomics, locks, lines


def walk(w: Walk, kind: str, level: RmapLevel, first: int, nr: int, pmd_order: int) -> tuple[int, int, int]:
    """The v6.15 path of one rmap call on a large folio, as a list of writes."""
    page_mapcount = w.config.page_mapcount
    nr_pages = len(w.pages)
    if kind == "map_new_anon":  # folio_add_new_anon_rmap()
        if nr_pages.bit_length() - 1 < pmd_order:
            for i in range(nr_pages):
                if page_mapcount:
                    w.write("folio_add_new_anon_rmap", "_mapcount", atomic=False, page=i)  # atomic_set
                w.pages[i] = 1
            w.write("folio_set_large_mapcount", "_large_mapcount", atomic=False)
            w.write("folio_set_large_mapcount", "_mm_id_mapcount", atomic=False)
            w.write("folio_set_mm_id", "_mm_ids", atomic=False)
            if page_mapcount:
                w.write("folio_add_new_anon_rmap", "_nr_pages_mapped", atomic=False)
        else:
            w.write("folio_add_new_anon_rmap", "_entire_mapcount", atomic=False)
            w.entire = 1
            w.write("folio_set_large_mapcount", "_large_mapcount", atomic=False)
            w.write("folio_set_large_mapcount", "_mm_id_mapcount", atomic=False)
            w.write("folio_set_mm_id", "_mm_ids", atomic=False)
            if page_mapcount:
                w.write("folio_add_new_anon_rmap", "_nr_pages_mapped", atomic=False)
        return w.result()
    if kind in ("map", "dup"):
        fn = "__folio_add_rmap" if kind == "map" else "__folio_dup_file_rmap"
        if level is PTE:
            newly = 0
            for i in range(first, first + nr):
                w.pages[i] += 1
                if page_mapcount:  # atomic_inc_and_test / atomic_inc
                    w.write(fn, "_mapcount", atomic=True, page=i)
                newly += w.pages[i] == 1
            if page_mapcount and kind == "map" and newly:
                w.write(fn, "_nr_pages_mapped", atomic=True)  # atomic_add_return_relaxed
        else:
            w.entire += 1
            w.write(fn, "_entire_mapcount", atomic=True)  # atomic_inc_and_test / atomic_inc
            if page_mapcount and kind == "map" and w.entire == 1:
                w.write(fn, "_nr_pages_mapped", atomic=True)  # += ENTIRELY_MAPPED
        w.large_mapcount_locked("folio_add_return_large_mapcount")
        return w.result()
    assert kind == "unmap"  # __folio_remove_rmap()
    if level is PTE:
        w.large_mapcount_locked("folio_sub_return_large_mapcount")
        gone = 0
        for i in range(first, first + nr):
            w.pages[i] -= 1
            if page_mapcount:  # atomic_add_negative(-1)
                w.write("__folio_remove_rmap", "_mapcount", atomic=True, page=i)
            gone += w.pages[i] == 0
        if page_mapcount and gone:
            w.write("__folio_remove_rmap", "_nr_pages_mapped", atomic=True)  # atomic_sub_return_relaxed
    else:
        w.large_mapcount_locked("folio_sub_return_large_mapcount")
        w.entire -= 1
        w.write("__folio_remove_rmap", "_entire_mapcount", atomic=True)  # atomic_add_negative(-1)
        if page_mapcount and w.entire == 0:
            w.write("__folio_remove_rmap", "_nr_pages_mapped", atomic=True)  # -= ENTIRELY_MAPPED
    return w.result()


Step = tuple[str, str, RmapLevel, int, int]  # kind, mm, level, first page, nr


def pte_scenario(order: int, first: int, nr: int) -> list[Step]:
    """Fault in P, fork C (dup of everything), P and C unmap a range, P maps it back, C maps it too."""
    whole = 1 << order
    return [("map_new_anon", "P", PTE, 0, whole), ("dup", "C", PTE, 0, whole),
            ("unmap", "P", PTE, first, nr),  # C still maps them: no page goes away
            ("unmap", "C", PTE, first, nr),  # now they do
            ("map", "P", PTE, first, nr),  # newly mapped again
            ("map", "C", PTE, first, nr),  # already mapped by P
            ("dup", "X", PTE, first, nr)]


def pmd_scenario(first: int, nr: int) -> list[Step]:
    """A PMD THP: fault, fork (PMD dup), a PTE range mapped beside the PMDs, the PMDs go."""
    return [("map_new_anon", "P", PMD, 0, 1), ("dup", "C", PMD, 0, 1),
            ("map", "X", PTE, first, nr), ("unmap", "P", PMD, 0, 1), ("unmap", "C", PMD, 0, 1),
            ("map", "P", PMD, 0, 1), ("unmap", "X", PTE, first, nr)]


def run(design: Design, order: int, steps: list[Step]) -> list[UpdateCost]:
    for mm in ("P", "C", "X"):
        design.apply(Op("mm_new", mm))
    design.apply(Op("folio_new", folio="F", order=order))
    costs = []
    for kind, mm, level, first, nr in steps:
        if kind == "map_new_anon":
            costs.append(design.apply(Op(kind, mm, "F", None, level)))
        else:
            costs.append(design.apply(Op(kind, mm, "F", None, level, first, nr)))
    return costs


def walked(config: KernelConfig, order: int, steps: list[Step]) -> list[tuple[int, int, int]]:
    w = Walk(config, [0] * (1 << order))
    return [walk(w, kind, level, first, nr, config.pmd_order) for kind, _mm, level, first, nr in steps]


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@pytest.mark.parametrize(("order", "first", "nr"), [(2, 0, 1), (2, 1, 3), (4, 0, 16), (4, 3, 5), (4, 15, 1),
                                                    (9, 0, 512), (9, 100, 37), (9, 1, 2)])
def test_kernel_pte_costs_equal_the_walked_code_path(config: KernelConfig, order: int, first: int, nr: int) -> None:
    steps = pte_scenario(order, first, nr)
    if order >= config.pmd_order:
        steps = steps[1:]  # a PMD-order folio is not faulted in by PTEs: start from PTE maps
        steps = [("map", "P", PTE, 0, 1 << order), *steps]
    got = [(c.atomics, c.locks, c.cache_lines) for c in run(make_design("kernel", config), order, steps)]
    assert got == walked(config, order, steps)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@pytest.mark.parametrize(("first", "nr"), [(0, 1), (0, 512), (33, 64)])
def test_kernel_pmd_costs_equal_the_walked_code_path(config: KernelConfig, first: int, nr: int) -> None:
    steps = pmd_scenario(first, nr)
    got = [(c.atomics, c.locks, c.cache_lines) for c in run(make_design("kernel", config), 9, steps)]
    assert got == walked(config, 9, steps)


def test_kernel_costs_by_hand() -> None:
    """A few numbers worked out on paper (64-bit, 16-page folio)."""
    page, nopage = KernelConfig(64, False), KernelConfig(64, True)
    steps = pte_scenario(4, 0, 16)
    # map_new_anon: stores only, 16 _mapcount lines (page[1] among them); dup 16: 16 atomic_inc + bit lock;
    # unmap by P: lock + 16 add_negative, nothing goes away; unmap by C: + _nr_pages_mapped.
    assert [(c.atomics, c.locks, c.cache_lines) for c in run(make_design("kernel", page), 4, steps)][:4] == [
        (0, 0, 16), (17, 1, 16), (17, 1, 16), (18, 1, 16)]
    assert [(c.atomics, c.locks, c.cache_lines) for c in run(make_design("kernel", nopage), 4, steps)][:4] == [
        (0, 0, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1)]
    # 32-bit: two struct pages per line, _entire_mapcount in page[2] (line 1), the rest of page[1] in line 0.
    pmd32 = [(c.atomics, c.locks, c.cache_lines) for c in run(make_design("kernel", KernelConfig(32)), 9,
                                                              pmd_scenario(0, 1))]
    assert pmd32[:2] == [(0, 0, 2), (2, 1, 2)]


def test_small_folios_cost_the_same_in_every_design() -> None:
    for spec in ("kernel", "exact", "slots:3", "stopped", "legacy", "precise-rmapid"):
        design = make_design(spec, KernelConfig())
        design.apply(Op("mm_new", "P"))
        design.apply(Op("mm_new", "C"))
        design.apply(Op("folio_new", folio="S", order=0))
        new = design.apply(Op("map_new_anon", "P", "S", None, PTE))
        dup = design.apply(Op("dup", "C", "S", None, PTE, 0, 1))
        assert (new.atomics, new.cache_lines) == (0, 1), spec  # atomic_set(&folio->_mapcount, 0)
        assert (dup.atomics, dup.locks, dup.cache_lines) == (1, 0, 1), spec  # atomic_inc


@pytest.mark.parametrize("config", CONFIGS[:2], ids=IDS[:2])
def test_other_designs_pay_the_configs_page_bookkeeping(config: KernelConfig) -> None:
    """Every design runs on the same kernel: only the tracking part differs from ``kernel``'s."""
    steps = pte_scenario(4, 2, 6)
    kernel = run(make_design("kernel", config), 4, steps)
    exact = run(make_design("exact", config), 4, steps)
    legacy = run(make_design("legacy", config), 4, steps)
    precise = run(make_design("precise-rmapid", config), 4, steps)
    slots3 = run(make_design("slots:3", config), 4, steps)
    for k, e, s3 in zip(kernel, exact, slots3, strict=True):
        assert (e.atomics, e.locks, e.cache_lines) == (k.atomics, k.locks, k.cache_lines + 1)  # + the table's line
        assert (s3.atomics, s3.locks) == (k.atomics, k.locks)
    # precise: no lock; seqcount begin + end, the total mapcount and 2 rmap values (order 4) instead of the lock
    assert [(p.atomics, p.locks) for p in precise[1:]] == [(k.atomics - 1 + 5, 0) for k in kernel[1:]]
    # legacy (v6.14) always keeps per-page mapcounts: atomic_add on _large_mapcount instead of the lock
    page_legacy = run(make_design("legacy", KernelConfig(64, False)), 4, steps)
    assert [(c.atomics, c.locks) for c in legacy] == [(c.atomics, c.locks) for c in page_legacy]
    assert legacy[1].atomics == 16 + 1 and legacy[1].locks == 0


def test_stopped_costs_one_atomic_once_stopped() -> None:
    config = KernelConfig()
    design = make_design("stopped", config)
    costs = run(design, 4, [("map_new_anon", "P", PTE, 0, 16), ("dup", "C", PTE, 0, 16),
                            ("dup", "X", PTE, 0, 16), ("unmap", "X", PTE, 0, 16)])
    assert (costs[1].atomics, costs[1].locks) == (16 + 1, 1)  # tracked: the bit spinlock
    assert (costs[2].atomics, costs[2].locks) == (16 + 1, 1)  # the update that stops tracking
    assert (costs[3].atomics, costs[3].locks) == (16 + 1, 0)  # stopped: atomic_sub on the total only


def test_update_cost_keeps_its_old_constructor() -> None:
    assert UpdateCost(2, 1) == UpdateCost(atomics=2, locks=1, cache_lines=0)
    assert UpdateCost().cache_lines == 0


def test_docs_cost_table_matches_the_code() -> None:
    """docs/cost-model.md's numeric table is the output of foliosim.schemes.cost_table."""
    from pathlib import Path

    from foliosim.schemes.costtable import markdown_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "cost-model.md").read_text()
    assert markdown_table() in doc
