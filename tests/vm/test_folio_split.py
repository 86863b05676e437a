"""Folio split by MADV_COLD/PAGEOUT (mm/madvise.c, mm/huge_memory.c __folio_split()) against the live kernel.

The rows of the measured table in shared/reference/live-kernel.md that involve
MADV_COLD, for PTE-mapped mTHPs of order 2, 4 and 5 and for the PMD-mapped
THP (PMD order 6 here to stay small), in every configuration: the outcome
(split or not), the new folios' orders, mapcounts, refcounts, AnonExclusive
and write bits, the oracle after every step, and a bit-for-bit replay of the
rmap trace. Plus the kernel's refusals (pins, vmsplice references), the
zero-filled pages that go to the shared zero page, shmem folios, a split seen
through a foreign sharing answer, and a scenario file.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from foliosim.folio import folio_mapcount, folio_test_large_maybe_mapped_shared
from foliosim.kconfig import KernelConfig
from foliosim.report.timeline import render_step
from foliosim.report.view_scenario import scenario_frames
from foliosim.system import RmapSystem
from foliosim.trace.format import folio_record
from foliosim.trace.replay import replay
from foliosim.vm import Machine, MachineOptions
from foliosim.vm.events import EBUSY, EINVAL, CowRule, Event
from foliosim.vm.memory import PAGE_SIZE, filled_page
from foliosim.vm.mm import MM
from foliosim.vm.pagetable import SimFolio
from foliosim.vm.scenario import run
from foliosim.vm.stats import pagemap

PMD_ORDER = 6
ORDERS = [2, 4, 5, PMD_ORDER]
MAP_OPS = ("map_new_anon", "map", "dup", "unmap")


def order_id(order: int) -> str:
    return "pmd" if order == PMD_ORDER else f"pte{order}"


class Sim:
    """A checked machine that records every folio state after every rmap call, and the events."""

    def __init__(self, config: KernelConfig, order: int = 0, **opts: Any) -> None:
        self.config = KernelConfig(config.word_bits, config.no_page_mapcount, pmd_order=PMD_ORDER)
        thp = frozenset({order}) if order else frozenset()
        self.m = Machine(self.config, MachineOptions(check=True, thp=thp, **opts))
        self.order = order
        self.n = 1 << order
        self.live: list[dict[str, Any]] = []
        self.events: list[Event] = []
        self.m.observers.append(self._observe)

    def _observe(self, event: Event) -> None:
        self.events.append(event)
        op = event.data.get("op") if event.kind == "rmap" else None
        if op is not None and op.op in MAP_OPS:
            self.live.append(folio_record(self.m.rmap.folios[op.folio]))

    def mm(self, task: str) -> MM:
        return self.m.task(task).mm

    def folio_at(self, task: str, addr: int) -> SimFolio:
        hit = self.m.lookup(self.mm(task), addr // PAGE_SIZE)
        assert hit is not None
        return hit[0]

    def setup(self, task: str = "P", fill: bool = True) -> int:
        """``task`` maps one naturally aligned folio of ``order`` and writes page k with byte k+1 (or page 0 only)."""
        self.m.spawn(task)
        addr = self.m.mmap(task, self.n * PAGE_SIZE)
        if fill:
            self.m.write(task, addr, b"".join(self.value(k) for k in range(self.n)))
        else:
            self.m.write(task, addr, b"\x01")
        f = self.folio_at(task, addr)
        assert f.order == self.order and f.is_anon
        return addr

    @staticmethod
    def value(k: int) -> bytes:
        return filled_page(k % 250 + 1)

    def decisions(self) -> list[tuple[str, str, str]]:
        return [(e.data["folio"], e.data["verdict"], e.data["reason"]) for e in self.events if e.kind == "decision"]

    def splits(self, what: str) -> list[Event]:
        return [e for e in self.events if e.kind == "split" and e.data.get("what") == what]

    def assert_replays(self) -> None:
        """The trace replays without a rejection to the same state after every rmap call, and at the end."""
        assert self.m.check() == []
        lines = [json.dumps(op.to_json()) for op in self.m.trace]
        system = RmapSystem(self.config)
        records = list(replay(lines, self.config, system=system))
        assert all("error" not in r for r in records), [r for r in records if "error" in r][:1]
        replayed = [r for r in records if r["op"] in MAP_OPS]
        for rec in replayed:
            for key in ("step", "op", "mm", "owner"):
                rec.pop(key, None)
        assert replayed == self.live
        assert set(system.folios) == set(self.m.rmap.folios) and set(system.mms) == set(self.m.rmap.mms)
        for name, handle in system.folios.items():  # refcount and pincount are the simulator's
            assert handle.folio.key()[:7] == self.m.rmap.folios[name].folio.key()[:7]
            assert handle.folio.page_mapcount == self.m.rmap.folios[name].folio.page_mapcount

    def assert_split(self, task: str, addr: int, old: SimFolio, *, mapcount: int = 1, exclusive: bool = True,
                     writable: bool = True) -> list[SimFolio]:
        """Every page of the old folio is now its own order-0 anon folio with the page's data."""
        mm = self.mm(task)
        vpn = addr // PAGE_SIZE
        assert old.freed and old.name not in self.m.folios and old.name not in self.m.rmap.folios
        assert vpn >> PMD_ORDER not in mm.pmds
        pieces = []
        for k in range(self.n):
            pte = mm.ptes[vpn + k]
            f = pte.folio
            assert f.order == 0 and f.is_anon and f is not old
            assert folio_mapcount(f.core()) == mapcount and f.core().refcount == mapcount
            assert f.exclusive == [exclusive] and pte.write == writable and pte.page == 0
            assert f.data[0] == self.value(k)
            pieces.append(f)
        assert len({f.name for f in pieces}) == self.n
        split = self.splits("folio")
        assert len(split) == 1 and split[0].data["folio"] == old.name
        assert split[0].data["new"] == [f.name for f in pieces] and split[0].data["zero_pages"] == []
        assert self.m.counters["folio split"] == 1
        return pieces

    def assert_not_split(self, task: str, addr: int, f: SimFolio) -> None:
        assert not f.freed and f.name in self.m.folios
        for k in range(self.n):
            assert self.folio_at(task, addr + k * PAGE_SIZE) is f
        assert self.m.counters["folio split"] == 0 and not self.splits("folio")


@pytest.mark.parametrize("order", ORDERS, ids=order_id)
def test_cold_on_page0_of_an_exclusive_folio_splits_it(config: KernelConfig, order: int) -> None:
    """Row "MADV_COLD on page 0 of an exclusive ... large folio": split into n order-0 folios (PMD: PMD split first)."""
    s = Sim(config, order)
    addr = s.setup()
    old = s.folio_at("P", addr)
    assert s.m.madvise("P", addr, PAGE_SIZE, "cold") == 0
    pieces = s.assert_split("P", addr, old)
    assert len(s.splits("pmd")) == (1 if order == PMD_ORDER else 0)
    assert (addr // PAGE_SIZE) >> PMD_ORDER in s.mm("P").pte_tables
    # the split, then the walk looks at page 0 again: now an order-0 folio mapped once
    assert [d[:2] for d in s.decisions()] == [(old.name, "split"), (pieces[0].name, "take")]
    e0, e1 = pagemap(s.m, s.mm("P"), addr // PAGE_SIZE), pagemap(s.m, s.mm("P"), addr // PAGE_SIZE + 1)
    assert e0.folio != e1.folio and e0.exclusive and e1.exclusive
    assert s.m.read("P", addr, s.n * PAGE_SIZE) == b"".join(s.value(k) for k in range(s.n))
    s.m.write("P", addr + PAGE_SIZE, b"w")  # the PTEs stayed writable: no fault, no copy
    assert s.m.cow_decisions == [] and s.folio_at("P", addr + PAGE_SIZE) is pieces[1]
    s.assert_replays()


@pytest.mark.parametrize("advice", ["cold", "pageout"])
@pytest.mark.parametrize("order", ORDERS, ids=order_id)
def test_any_partial_range_splits_the_whole_folio_and_a_full_range_does_not(
        config: KernelConfig, order: int, advice: str) -> None:
    s = Sim(config, order)
    addr = s.setup()
    old = s.folio_at("P", addr)
    s.m.madvise("P", addr, s.n * PAGE_SIZE, advice)  # the whole folio: taken as it is
    assert s.decisions() == [(old.name, "take", "PMD-mapped folio mapped exclusively" if order == PMD_ORDER
                              else "mapped once per page")]
    s.assert_not_split("P", addr, old)
    s.m.madvise("P", addr + PAGE_SIZE, 2 * PAGE_SIZE, advice)  # pages 1..2: the whole folio is split
    s.assert_split("P", addr, old)
    assert [d[1] for d in s.decisions()[1:]] == ["split", "take", "take"]
    s.assert_replays()


@pytest.mark.parametrize("order", ORDERS, ids=order_id)
def test_a_child_mapping_the_folio_prevents_the_split(config: KernelConfig, order: int) -> None:
    """Row "MADV_COLD on page 0 while a child maps the folio": not split (maybe shared)."""
    s = Sim(config, order)
    addr = s.setup()
    f = s.folio_at("P", addr)
    s.m.fork("P", "C")
    refcount = f.core().refcount
    assert refcount == (2 if order == PMD_ORDER else 2 * s.n)
    s.m.madvise("P", addr, PAGE_SIZE, "cold")
    s.assert_not_split("P", addr, f)
    s.assert_not_split("C", addr, f)
    assert f.core().refcount == refcount
    [(name, verdict, reason)] = s.decisions()
    assert name == f.name and verdict == "skip" and "maybe mapped shared" in reason
    s.assert_replays()


@pytest.mark.parametrize("order", ORDERS, ids=order_id)
def test_after_the_stuck_shared_bit_only_the_pmd_mapped_thp_is_split(config: KernelConfig, order: int) -> None:
    """Row "same, after the stuck-bit case (C2 alone, bit set)": PTE-mapped not split; PMD: split (mapcount 1)."""
    s = Sim(config, order)
    addr = s.setup()
    f = s.folio_at("P", addr)
    s.m.fork("P", "C1")
    s.m.fork("P", "C2")  # no free slot: C2 is untracked
    s.m.exit("P")
    s.m.exit("C1")  # both slots free, the shared bit stays set
    assert folio_test_large_maybe_mapped_shared(f.core())
    s.m.madvise("C2", addr, PAGE_SIZE, "cold")
    if order != PMD_ORDER:
        s.assert_not_split("C2", addr, f)
        assert s.decisions()[0][1] == "skip" and "maybe mapped shared" in s.decisions()[0][2]
    else:  # the PMD was write-protected and not exclusive at fork: read-only, non-exclusive pieces
        pieces = s.assert_split("C2", addr, f, exclusive=False, writable=False)
        s.m.write("C2", addr + PAGE_SIZE, b"w")
        [d] = s.m.cow_decisions
        assert d.folio == pieces[1].name and d.outcome == "reuse" and d.rule is CowRule.SMALL_REFCOUNT_ONE
    s.assert_replays()


@pytest.mark.parametrize("holder", ["rw-longterm-pin", "vmsplice"])
@pytest.mark.parametrize("order", ORDERS, ids=order_id)
def test_a_pinned_or_referenced_folio_is_not_split(config: KernelConfig, order: int, holder: str) -> None:
    """can_split_folio(): an io_uring-like R/W long-term pin or a vmsplice reference makes the split -EAGAIN."""
    s = Sim(config, order)
    addr = s.setup()
    f = s.folio_at("P", addr)
    if holder == "vmsplice":
        assert s.m.vmsplice("P", "pipe", addr, PAGE_SIZE) == 1
    else:
        assert s.m.pin("P", "ring", addr, PAGE_SIZE, write=True, longterm=True) == 1
    key = f.core().key()
    s.m.madvise("P", addr, PAGE_SIZE, "cold")
    s.assert_not_split("P", addr, f)
    assert f.core().key() == key  # nothing changed, the caller's reference included
    [(name, verdict, reason)] = s.decisions()
    assert name == f.name and verdict == "skip" and "-EAGAIN" in reason and "can_split_folio" in reason
    assert s.m.counters["folio split failed"] == 1
    s.m.unpin("pipe" if holder == "vmsplice" else "ring")
    s.m.madvise("P", addr, PAGE_SIZE, "cold")  # nothing holds it any more
    s.assert_split("P", addr, f)
    s.assert_replays()


@pytest.mark.parametrize("order", [4, PMD_ORDER], ids=order_id)
def test_zero_filled_pages_are_mapped_to_the_shared_zero_page(config: KernelConfig, order: int) -> None:
    """remap_page(RMP_USE_SHARED_ZEROPAGE): try_to_map_unused_to_zeropage() for every zero-filled piece."""
    s = Sim(config, order)
    addr = s.setup(fill=False)  # only page 0 was written
    old = s.folio_at("P", addr)
    s.m.madvise("P", addr, PAGE_SIZE, "cold")
    mm = s.mm("P")
    vpn = addr // PAGE_SIZE
    first = mm.ptes[vpn].folio
    assert first.order == 0 and first.data[0][:1] == b"\x01" and first.core().refcount == 1
    for k in range(1, s.n):
        pte = mm.ptes[vpn + k]
        assert pte.folio is s.m.zero and not pte.write
    [split] = s.splits("folio")
    assert split.data["zero_pages"] == list(range(1, s.n)) and len(split.data["new"]) == s.n
    assert [name for name in split.data["new"] if name in s.m.folios] == [first.name]  # the others are freed
    assert old.name not in s.m.folios
    assert s.m.read("P", addr + 5 * PAGE_SIZE, 2) == b"\0\0"
    s.m.write("P", addr + 5 * PAGE_SIZE, b"z")  # the zero page is copied on write
    assert s.m.cow_decisions[-1].rule is CowRule.ZERO_PAGE
    assert mm.ptes[vpn + 5].folio.data[0][:1] == b"z"
    s.assert_replays()


def test_a_shmem_folio_is_split_in_the_page_cache_and_unmapped(config: KernelConfig) -> None:
    """A file/shmem folio: try_to_unmap() clears its PTEs, the page cache gets order-0 folios, the data stays."""
    s = Sim(config)
    s.m.create_file("F", 8 * PAGE_SIZE, order=2, fill=9, shmem=True)
    s.m.spawn("P")
    addr = s.m.mmap("P", 8 * PAGE_SIZE, file="F", shared=True)
    s.m.write("P", addr + PAGE_SIZE, b"\x42" * PAGE_SIZE)
    s.m.read("P", addr, 4 * PAGE_SIZE)
    old = s.folio_at("P", addr)
    assert old.order == 2 and all(s.folio_at("P", addr + k * PAGE_SIZE) is old for k in range(4))
    s.m.madvise("P", addr, PAGE_SIZE, "cold")
    assert old.freed and old.name not in s.m.folios
    assert all(addr // PAGE_SIZE + k not in s.mm("P").ptes for k in range(4))
    file = s.m.files["F"]
    pieces = [file.cache[k] for k in range(4)]
    assert [(p.order, p.index, p.core().refcount, folio_mapcount(p.core())) for p in pieces] == \
        [(0, k, 1, 0) for k in range(4)]
    assert pieces[1].data[0] == b"\x42" * PAGE_SIZE and pieces[0].data[0] == filled_page(9)
    assert s.m.read("P", addr + PAGE_SIZE, 1) == b"\x42"  # refaults from the page cache
    assert s.folio_at("P", addr + PAGE_SIZE) is pieces[1]
    s.assert_replays()


@pytest.mark.parametrize("order", ORDERS, ids=order_id)
def test_a_foreign_sharing_answer_splits_a_folio_mapped_by_two_mms(config: KernelConfig, order: int) -> None:
    """With a design that wrongly says "exclusive" (Machine.sharing), v6.15 splits the folio in every MM."""
    s = Sim(config, order)
    addr = s.setup()
    old = s.folio_at("P", addr)
    s.m.fork("P", "C")
    s.m.sharing = lambda f, consumer: False
    s.m.madvise("P", addr, PAGE_SIZE, "cold")
    pieces = s.assert_split("P", addr, old, mapcount=2, exclusive=False, writable=False)
    assert [s.folio_at("C", addr + k * PAGE_SIZE) for k in range(s.n)] == pieces
    assert len(s.splits("pmd")) == (2 if order == PMD_ORDER else 0)
    s.m.write("C", addr, b"c")  # still shared: copied, the parent keeps its data
    assert s.m.cow_decisions[-1].outcome == "copy"
    assert s.m.read("P", addr, 1) == s.value(0)[:1]
    s.assert_replays()


SCENARIO = """\
option thp=4
spawn P
mmap P buf 64K anon private
write P buf 64K 0x11
expect P buf shared=no
madvise P buf 4K cold          # a sub-range of an exclusive large folio: split
pagemap P buf 2p
fork P Q                       # probe: does page 1 still share a folio with page 0?
munmap Q buf+4K 60K
expect P buf+4K shared=no      # split: page 1 is an order-0 folio mapped once
read P buf 64K expect=0x11
read Q buf 4K expect=0x11
exit Q
write P buf+8K 0x22
read P buf+8K expect=0x22
"""


def test_a_scenario_file_splits_and_the_timeline_and_viewer_show_it(config: KernelConfig) -> None:
    cfg = KernelConfig(config.word_bits, config.no_page_mapcount, pmd_order=PMD_ORDER)
    result = run(SCENARIO, cfg)
    assert result.error is None and result.violation is None and result.failures == []
    m = result.machine
    assert m.counters["folio split"] == 1 and m.counters["madvise cold split"] == 1
    [cold] = [step for step in result.steps if step.command.verb == "madvise"]
    splits = [e for e in cold.events if e.kind == "split"]
    assert len(splits) == 1 and splits[0].data["what"] == "folio" and len(splits[0].data["new"]) == 16
    lines = render_step(cold, m)
    assert any(line.strip().startswith("split") and "split into 16 order-0 folios" in line for line in lines)
    model, _ = scenario_frames(SCENARIO, cfg)
    [frame] = [f for f in model.frames if f.kind == "madvise"]
    freed = [v for v in frame.folios if v.freed]
    assert [v.record["folio"] for v in freed] == [splits[0].data["folio"]]
    assert sum(1 for v in frame.folios if v.record["order"] == 0) == 16
    # the same file with the child still mapping the folio: not split
    shared = SCENARIO.replace("expect P buf shared=no\nmadvise", "fork P C\nexpect P buf shared=yes\nmadvise") \
        .replace("expect P buf+4K shared=no", "expect P buf+4K shared=yes")
    result = run(shared, cfg)
    assert result.error is None and result.violation is None and result.failures == []
    assert result.machine.counters["folio split"] == 0


def test_split_folio_refuses_what_the_kernel_refuses(config: KernelConfig) -> None:
    """__folio_split(): the huge zero page (-EBUSY), a small folio (-EINVAL), an unmapped anon folio (-EBUSY)."""
    s = Sim(config, 4)
    addr = s.setup()
    f = s.folio_at("P", addr)
    small = Sim(config)
    small_addr = small.setup()
    assert small.m.split_folio(small.folio_at("P", small_addr), "test").err == -EINVAL
    assert s.m.split_folio(s.m.huge_zero, "test").err == -EBUSY
    s.m.vmsplice("P", "pipe", addr, PAGE_SIZE)
    s.m.munmap("P", addr, s.n * PAGE_SIZE)  # only the pipe holds it now
    assert f.name in s.m.folios and folio_mapcount(f.core()) == 0
    result = s.m.split_folio(f, "test")
    assert result.err == -EBUSY and "anon_vma" in result.reason and result.folios == ()
    assert s.m.check() == [] and not f.freed
