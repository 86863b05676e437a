"""Workload steps (foliosim.workloads.steps) on the fast engine, with the accesses batched into compiled calls.

Runs what :class:`foliosim.evaluate.runner.WorkloadRunner` runs, with the same meaning per step, for the verbs the
fast engine models: consecutive reads and writes go to the kernels in one call (one row per step). ``khugepaged``
and ``numa`` steps change nothing without a design to score them (the evaluator's runner skips them without a
probe) and are counted only. Anything else the fast engine does not model raises
:class:`~foliosim.fast.sim.engine.Unsupported` naming the step.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from foliosim.fast.sim import layout as L
from foliosim.fast.sim.engine import FastMachine, Unsupported
from foliosim.vm.events import SimError
from foliosim.vm.memory import PAGE_SHIFT, PAGE_SIZE
from foliosim.workloads.steps import PROT_FLAGS, Step, WorkloadError


@dataclass(slots=True)
class FastRunStats:
    steps: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # syscalls that returned -errno, SIGSEGVs
    scans: int = 0  # khugepaged/numa steps (nothing to do without a design)


class FastWorkloadRunner:
    """Executes workload steps on one :class:`FastMachine`, accesses in batches of up to ``batch`` steps."""

    def __init__(self, machine: FastMachine, batch: int = 4096) -> None:
        self.m = machine
        self.batch = batch
        self.regions: dict[str, int] = {}
        self.stats = FastRunStats()
        self._ops: list[tuple[int, int, int, int, int, int]] = []
        self._tasks: list[str] = []
        self._segv = int(machine.glob[L.G_SEGV])

    def run(self, steps: list[Step]) -> FastRunStats:
        m = self.m
        tasks = m.tasks
        regions = self.regions
        ops = self._ops
        names = self._tasks
        batch = self.batch
        for index, step in enumerate(steps):
            verb = step.verb
            if verb in ("write", "read"):  # the hot path, inlined
                task = tasks.get(step.task)
                a = step.args
                region = a[0]
                if task is not None and not task.vfork_blocked and region in regions:
                    write = verb == "write"
                    ops.append((task.mm.num, regions[region] + a[1], a[2], int(write),
                                1 + (index * 37) % 255 if write else -1, 0))
                    names.append(step.task)
                    if len(ops) >= batch:
                        self.flush()
                    self.stats.steps += 1
                    continue
            try:
                self.execute(step, index)
            except (SimError, WorkloadError) as exc:
                raise WorkloadError(f"step {index + 1} ({step.verb} {step.task}): {exc}") from None
            except Unsupported as exc:
                raise Unsupported(f"step {index + 1} ({step.verb} {step.task}): {exc}") from None
            self.stats.steps += 1
        self.flush()
        self.stats.errors["SIGSEGV"] += int(self.m.glob[L.G_SEGV]) - self._segv
        return self.stats

    def flush(self) -> None:
        if self._ops:
            ops = np.array(self._ops, dtype=np.int64)
            tasks = list(self._tasks)
            self._ops.clear()
            self._tasks.clear()
            self.m._run_access(ops, tasks)

    def _vpn(self, region: Any) -> int:
        if isinstance(region, int):
            return region
        try:
            return self.regions[region]
        except KeyError:
            raise WorkloadError(f"unknown region {region!r}") from None

    def _rc(self, what: str, value: int) -> None:
        if value < 0:
            self.stats.errors[what] += 1

    def execute(self, step: Step, index: int) -> None:
        m, t, a, verb = self.m, step.task, step.args, step.verb
        if verb in ("write", "read"):  # the kernels check the protections (SIGSEGV) themselves
            task = m.tasks.get(t)
            if task is None or task.vfork_blocked:
                task = m._runnable(t)
            region = a[0]
            start = (region if isinstance(region, int) else self.regions[region]) + a[1]
            write = verb == "write"
            self._ops.append((task.mm.num, start, a[2], int(write), 1 + (index * 37) % 255 if write else -1, 0))
            self._tasks.append(t)
            if len(self._ops) >= self.batch:
                self.flush()
            return
        self.flush()
        if verb in ("khugepaged", "numa"):
            m.task(t)
            self.stats.scans += 1
        elif verb == "spawn":
            self._rc("spawn", m.spawn(t))
        elif verb == "fork":
            self._rc("fork", m.fork(t, a[0]))
        elif verb in ("vfork", "thread"):
            self._rc(verb, m.clone_vm(t, a[0], vfork=verb == "vfork"))
        elif verb == "exec":
            self._rc("exec", m.execve(t))
        elif verb == "exit":
            self._rc("exit", m.exit(t))
        elif verb == "mmap":
            region, pages, kind, _file, thp, prot, _offset = a
            if kind != "anon":
                raise Unsupported(f"{kind} mappings")
            read, write, execute, noreserve = PROT_FLAGS[prot]
            fixed = region << PAGE_SHIFT if isinstance(region, int) else None
            addr = m.mmap(t, pages * PAGE_SIZE, read=read, write=write, addr=fixed,
                          thp=frozenset(thp) if thp is not None else None, label=str(region), execute=execute,
                          noreserve=noreserve)
            self._rc("mmap", addr)
            if addr >= 0 and isinstance(region, str):
                self.regions[region] = addr >> PAGE_SHIFT
        elif verb == "munmap":
            self._rc("munmap", m.munmap(t, (self._vpn(a[0]) + a[1]) << PAGE_SHIFT, a[2] * PAGE_SIZE))
        elif verb == "mprotect":
            read, write, execute, _noreserve = PROT_FLAGS[a[3]]
            self._rc("mprotect", m.mprotect(t, (self._vpn(a[0]) + a[1]) << PAGE_SHIFT, a[2] * PAGE_SIZE, read, write,
                                            execute))
        elif verb == "madvise":
            self._rc("madvise", m.madvise(t, (self._vpn(a[0]) + a[1]) << PAGE_SHIFT, a[2] * PAGE_SIZE, a[3]))
        elif verb == "thp":
            for order in (*a[0], *a[1]):
                m._check_anon_order(order)
            m.options = replace(m.options, thp=frozenset(a[0]), thp_madvise=frozenset(a[1]))
        elif verb == "pin":
            self._rc("pin", m.pin(t, a[0], (self._vpn(a[1]) + a[2]) << PAGE_SHIFT, a[3] * PAGE_SIZE, write=bool(a[4]),
                                  longterm=bool(a[5])))
        elif verb == "unpin":
            self._rc("unpin", m.unpin(a[0]))
        elif verb == "merge":
            mm = m.task(t).mm
            m._sync(mm)
            m._merge(mm)
            m._publish(mm)
        else:
            raise Unsupported(f"the {verb!r} step")
