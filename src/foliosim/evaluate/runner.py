"""Run a workload's steps on the simulated machine, with a probe attached.

Regions named by ``mmap`` steps are resolved to the addresses the machine
gave them; integer regions are absolute page numbers (imported traces map at
the program's own addresses). In strict mode (generated workloads) a step
the machine refuses is an error naming the step; otherwise (imported traces,
whose model is approximate) it is counted as skipped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from foliosim.evaluate.consumers import khugepaged_scan, numa_migrate
from foliosim.evaluate.probe import Probe
from foliosim.vm.events import SimError
from foliosim.vm.machine import Machine
from foliosim.vm.memory import PAGE_SHIFT, PAGE_SIZE
from foliosim.workloads.steps import PROT_FLAGS, Step, WorkloadError, region_vpn

PROT = {name: flags[:2] for name, flags in PROT_FLAGS.items()}  # (read, write)


@dataclass(slots=True)
class RunStats:
    steps: int = 0
    skipped: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # syscalls that returned -errno, SIGSEGVs
    first_skip: str | None = None
    skips: list[str] = field(default_factory=list)  # the first few refused steps (the first is first_skip)
    faults: Counter[str] = field(default_factory=Counter)  # recorded faults (``fault`` steps) by outcome


#: what became of a recorded fault (a ``fault`` step): taken, or why the simulator did not take it
FAULT_TAKEN = "taken"
FAULT_MAPPED = "already mapped writable"
FAULT_PRESENT = "read of a page already present"
FAULT_NO_VMA = "outside any VMA of the simulator"
FAULT_PROT = "not permitted by the VMA's protection"


class _Permits(Protocol):
    read: bool
    write: bool


def refused_fault(vma: _Permits | None, write: bool) -> str | None:
    """Why the simulator takes no fault for a recorded one at a page in ``vma`` (None when the VMA lets the
    access through): outside any VMA, or not permitted by its protection (both engines' recorded-fault paths)."""
    if vma is None:
        return FAULT_NO_VMA
    if not (vma.write if write else vma.read):
        return FAULT_PROT
    return None


class WorkloadRunner:
    """Executes steps on one machine; a probe (if any) is told after each step."""

    def __init__(self, machine: Machine, probe: Probe | None = None, strict: bool = True) -> None:
        self.m = machine
        self.probe = probe
        self.strict = strict
        self.regions: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        self.stats = RunStats()

    def run(self, steps: list[Step], tick: Callable[[int], None] | None = None) -> RunStats:
        for index, step in enumerate(steps):
            try:
                self.execute(step, index)
            except (SimError, WorkloadError) as exc:
                if self.strict:
                    raise WorkloadError(f"step {index + 1} ({step.verb} {step.task}): {exc}") from None
                self.stats.skipped += 1
                where = f"step {index + 1} ({step.verb} {step.task}): {exc}"
                if self.stats.first_skip is None:
                    self.stats.first_skip = where
                if len(self.stats.skips) < 3:
                    self.stats.skips.append(where)
            self.stats.steps += 1
            if self.probe is not None:
                self.probe.after_step()
            if tick is not None:
                tick(index)
        return self.stats

    def _vpn(self, region: Any) -> int:
        return region_vpn(self.regions, region)

    def _rc(self, what: str, value: int) -> None:
        if value < 0:
            self.stats.errors[what] += 1

    def execute(self, step: Step, index: int) -> None:
        m, t, a, verb = self.m, step.task, step.args, step.verb
        if verb == "file":
            m.create_file(a[0], a[1] * PAGE_SIZE, a[2], shmem=bool(a[3]))
        elif verb == "spawn":
            self._rc("spawn", m.spawn(t))
        elif verb == "fork":
            self._rc("fork", m.fork(t, a[0]))
            if self.probe is not None:
                self.probe.census()  # after every fork, as `foliosim trace --census events` does live
        elif verb in ("vfork", "thread"):
            self._rc(verb, m.clone_vm(t, a[0], vfork=verb == "vfork"))
        elif verb == "exec":
            self._rc("exec", m.execve(t))
        elif verb == "exit":
            if self.probe is not None:
                self.probe.census()  # before every exit, as the live census does
            self._rc("exit", m.exit(t))
        elif verb == "mmap":
            self._mmap(step)
        elif verb == "munmap":
            self._rc("munmap", m.munmap(t, (self._vpn(a[0]) + a[1]) << PAGE_SHIFT, a[2] * PAGE_SIZE))
        elif verb == "mprotect":
            read, write, execute, _noreserve = PROT_FLAGS[a[3]]
            self._rc("mprotect", m.mprotect(t, (self._vpn(a[0]) + a[1]) << PAGE_SHIFT, a[2] * PAGE_SIZE, read, write,
                                            execute))
        elif verb == "mremap":
            self._mremap(step)
        elif verb == "write":
            value = 1 + (index * 37) % 255
            if not m.write(t, (self._vpn(a[0]) + a[1]) << PAGE_SHIFT, bytes([value]) * (a[2] * PAGE_SIZE)):
                self.stats.errors["SIGSEGV"] += 1
        elif verb == "read":
            if m.read(t, (self._vpn(a[0]) + a[1]) << PAGE_SHIFT, a[2] * PAGE_SIZE) is None:
                self.stats.errors["SIGSEGV"] += 1
        elif verb == "madvise":
            self._rc("madvise", m.madvise(t, (self._vpn(a[0]) + a[1]) << PAGE_SHIFT, a[2] * PAGE_SIZE, a[3]))
        elif verb in ("khugepaged", "numa"):
            self._scan(step)
        elif verb == "fault":
            self._fault(step, index)
        elif verb == "thp":
            for order in (*a[0], *a[1]):
                m._check_anon_order(order)
            m.options = replace(m.options, thp=frozenset(a[0]), thp_madvise=frozenset(a[1]))
        elif verb == "pin":
            self._rc("pin", m.pin(t, a[0], (self._vpn(a[1]) + a[2]) << PAGE_SHIFT, a[3] * PAGE_SIZE, write=bool(a[4]),
                                  longterm=bool(a[5])))
        elif verb == "unpin":
            self._rc("unpin", m.unpin(a[0]))
        elif verb == "vmsplice":
            self._rc("vmsplice", m.vmsplice(t, a[0], (self._vpn(a[1]) + a[2]) << PAGE_SHIFT, a[3] * PAGE_SIZE))
        elif verb == "merge":
            m._merge(m.task(t).mm)
        else:  # pragma: no cover - check_step() rejects unknown verbs
            raise WorkloadError(f"unknown verb {verb!r}")

    def _fault(self, step: Step, index: int) -> None:
        """One recorded user fault: the access, unless the simulator would not fault there (counted by cause)."""
        m = self.m
        mm = m.task(step.task).mm
        vpn = self._vpn(step.args[0]) + step.args[1]
        write = step.args[2]
        refused = refused_fault(mm.find_vma(vpn), write)
        if refused is not None:
            self.stats.faults[refused] += 1
            return
        hit = m.lookup(mm, vpn)
        if hit is not None and (hit[2] or not write):
            self.stats.faults[FAULT_MAPPED if write else FAULT_PRESENT] += 1
            return
        if write:
            m.write(step.task, vpn << PAGE_SHIFT, bytes([1 + (index * 37) % 255]))
        else:
            m.read(step.task, vpn << PAGE_SHIFT, 1)
        self.stats.faults[FAULT_TAKEN] += 1

    def _mmap(self, step: Step) -> None:
        region, pages, kind, file, thp, prot, offset = step.args
        read, write, execute, noreserve = PROT_FLAGS[prot]
        orders = frozenset(thp) if thp is not None else None
        fixed = region << PAGE_SHIFT if isinstance(region, int) else None
        if kind in ("anon", "shared-anon"):
            addr = self.m.mmap(step.task, pages * PAGE_SIZE, shared=kind == "shared-anon", read=read, write=write,
                               addr=fixed, thp=orders, label=str(region), execute=execute, noreserve=noreserve)
        else:
            addr = self.m.mmap(step.task, pages * PAGE_SIZE, file=file, offset=offset * PAGE_SIZE,
                               shared=kind == "file-shared", read=read, write=write, addr=fixed, label=str(region),
                               execute=execute, noreserve=noreserve)
        self._rc("mmap", addr)
        if addr >= 0 and isinstance(region, str):
            self.regions[region] = addr >> PAGE_SHIFT
            self.sizes[region] = pages

    def _mremap(self, step: Step) -> None:
        region, pages, new = step.args
        start = self._vpn(region)
        if isinstance(new, int):
            dst = new
        else:
            dst = self.m._unmapped_area(pages)
            self.regions[new] = dst
        self._rc("mremap", self.m.mremap(step.task, start << PAGE_SHIFT, pages * PAGE_SIZE, dst << PAGE_SHIFT))

    def _scan(self, step: Step) -> None:
        task = self.m.task(step.task)
        if self.probe is None:
            return  # nothing to score without a design
        if step.verb == "khugepaged":
            khugepaged_scan(self.m, self.probe, task.mm)
            return
        region = step.args[0]
        if region is None:
            start, end = 0, 1 << 62
        else:
            start = self._vpn(region)
            end = start + self.sizes.get(region, 1) if isinstance(region, str) else start + 1
        numa_migrate(self.m, self.probe, task.mm, start, end)
