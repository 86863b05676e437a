"""Random task/memory operations with the isolation oracle and the core's invariants checked every step.

The machine runs with ``check=True``: after every operation it compares each
task's memory with the reference model, every pin and pipe with the owner's
view, and the rmap ground truth, refcounts, pincounts, AnonExclusive flags
and folio_maybe_mapped_shared() soundness with the page tables. At teardown
the recorded rmap trace is replayed and must reproduce every folio.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from foliosim.kconfig import KernelConfig
from foliosim.system import RmapSystem
from foliosim.trace.replay import replay
from foliosim.vm import Machine, MachineOptions
from foliosim.vm.memory import PAGE_SIZE

PMD_ORDER = 3
REGION_PAGES = 2 << PMD_ORDER


class SimulatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.m: Machine
        self.config: KernelConfig
        self.counter = 0
        self.regions: list[int] = []
        self.value = 1

    @initialize(word_bits=st.sampled_from([64, 32]), npm=st.booleans(),
                thp=st.sets(st.sampled_from([2, PMD_ORDER])))
    def start(self, word_bits: int, npm: bool, thp: set[int]) -> None:
        self.config = KernelConfig(word_bits=word_bits, no_page_mapcount=npm, pmd_order=PMD_ORDER)
        self.m = Machine(self.config, MachineOptions(check=True, thp=frozenset(thp), fault_around_pages=4))
        self.m.create_file("F", REGION_PAGES * PAGE_SIZE, order=2, fill=9, shmem=True)
        self.m.spawn("t0")
        for kind in ("anon", "anon", "file-private", "file-shared"):
            file = None if kind == "anon" else "F"
            addr = self.m.mmap("t0", REGION_PAGES * PAGE_SIZE, file=file, shared=kind == "file-shared")
            self.regions.append(addr)

    def _name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def _task(self, data: st.DataObject) -> str | None:
        runnable = sorted(t.name for t in self.m.tasks.values() if not t.vfork_blocked)
        return data.draw(st.sampled_from(runnable)) if runnable else None

    def _addr(self, data: st.DataObject) -> int:
        base = data.draw(st.sampled_from(self.regions))
        return base + data.draw(st.integers(0, REGION_PAGES - 1)) * PAGE_SIZE

    @rule(data=st.data())
    def fork(self, data: st.DataObject) -> None:
        task = self._task(data)
        if task is not None and len(self.m.tasks) < 5:
            self.m.fork(task, self._name("t"))

    @rule(data=st.data(), vfork=st.booleans())
    def clone(self, data: st.DataObject, vfork: bool) -> None:
        task = self._task(data)
        if task is not None and len(self.m.tasks) < 5:
            self.m.clone_vm(task, self._name("v" if vfork else "th"), vfork=vfork)

    @rule(data=st.data())
    def exit(self, data: st.DataObject) -> None:
        task = self._task(data)
        if task is not None and len(self.m.tasks) > 1:
            self.m.exit(task)

    @rule(data=st.data(), lazy=st.booleans())
    def exit_with_lazy_tlb(self, data: st.DataObject, lazy: bool) -> None:
        task = self._task(data)
        if task is not None and len(self.m.tasks) > 1:
            holder = self._name("cpu")
            self.m.mm_hold(holder, task, users=not lazy)
            self.m.exit(task)
            self.m.mm_release(holder)

    @rule(data=st.data(), pages=st.integers(1, 5))
    def write(self, data: st.DataObject, pages: int) -> None:
        task = self._task(data)
        if task is not None:
            self.value = self.value % 250 + 1
            self.m.write(task, self._addr(data), bytes([self.value]) * (pages * PAGE_SIZE - 3))

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        task = self._task(data)
        if task is not None:
            self.m.read(task, self._addr(data), 2 * PAGE_SIZE)

    @rule(data=st.data(), pages=st.integers(1, 6),
          advice=st.sampled_from(["dontneed", "cold", "pageout", "dontfork", "dofork"]))
    def madvise(self, data: st.DataObject, pages: int, advice: str) -> None:
        task = self._task(data)
        if task is not None:
            self.m.madvise(task, self._addr(data), pages * PAGE_SIZE, advice)

    @rule(data=st.data(), pages=st.integers(1, 6), write=st.booleans())
    def mprotect(self, data: st.DataObject, pages: int, write: bool) -> None:
        task = self._task(data)
        if task is not None:
            self.m.mprotect(task, self._addr(data), pages * PAGE_SIZE, True, write)

    @rule(data=st.data(), pages=st.integers(1, 4))
    def munmap_and_remap(self, data: st.DataObject, pages: int) -> None:
        task = self._task(data)
        if task is not None:
            addr = self._addr(data)
            self.m.munmap(task, addr, pages * PAGE_SIZE)
            if data.draw(st.booleans()):
                self.m.mmap(task, pages * PAGE_SIZE, addr=addr)

    @rule(data=st.data(), pages=st.integers(1, 4))
    def mremap(self, data: st.DataObject, pages: int) -> None:
        task = self._task(data)
        if task is not None:
            src = self._addr(data)
            dst = self._addr(data)
            self.m.mremap(task, src, pages * PAGE_SIZE, dst)

    @rule(data=st.data(), pages=st.integers(1, 3), write=st.booleans(), longterm=st.booleans())
    def pin(self, data: st.DataObject, pages: int, write: bool, longterm: bool) -> None:
        task = self._task(data)
        if task is not None and len(self.m.gup) < 4:
            name = self._name("pin")
            if data.draw(st.booleans()):
                self.m.pin(task, name, self._addr(data), pages * PAGE_SIZE, write=write, longterm=longterm)
            else:
                self.m.vmsplice(task, name, self._addr(data), pages * PAGE_SIZE)

    @rule(data=st.data())
    def unpin(self, data: st.DataObject) -> None:
        if self.m.gup:
            self.m.unpin(data.draw(st.sampled_from(sorted(self.m.gup))))

    @rule(data=st.data())
    def clear_refs(self, data: st.DataObject) -> None:
        task = self._task(data)
        if task is not None:
            self.m.clear_refs(task)

    @rule(data=st.data())
    def execve(self, data: st.DataObject) -> None:
        task = self._task(data)
        if task is not None and len(self.m.tasks) > 1 and data.draw(st.integers(0, 3)) == 0:
            self.m.execve(task)

    @invariant()
    def oracle_holds(self) -> None:
        if hasattr(self, "m"):
            assert self.m.check() == []

    def teardown(self) -> None:
        if not hasattr(self, "m"):
            return
        lines = [json.dumps(op.to_json()) for op in self.m.trace]
        system = RmapSystem(self.config)
        records = list(replay(lines, self.config, system=system))
        assert all("error" not in r for r in records), records[-1]
        assert set(system.folios) == set(self.m.rmap.folios)
        for name, handle in system.folios.items():
            assert handle.folio.key()[:7] == self.m.rmap.folios[name].folio.key()[:7]
            assert handle.folio.page_mapcount == self.m.rmap.folios[name].folio.page_mapcount


SimulatorMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSimulator = SimulatorMachine.TestCase
