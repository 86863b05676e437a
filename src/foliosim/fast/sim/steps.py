"""Workload steps (foliosim.workloads.steps) on the fast engine, with the accesses batched into compiled calls.

Runs what :class:`foliosim.evaluate.runner.WorkloadRunner` runs, with the same meaning per step, for the verbs the
fast engine models. The whole step list is converted once (C-level maps over the steps) into integer access rows
(task number, region number, first page, pages, write, fill); each maximal run of reads and writes between two other
steps is resolved by one compiled lookup (each task's current MM, each region's base page) and goes to the kernels
in one call (one row per step). ``khugepaged`` and ``numa`` steps change nothing without a design to score them (the
evaluator's runner skips them without a probe): they are counted only and do not end a run. Anything else the
fast engine does not model raises :class:`~foliosim.fast.sim.engine.Unsupported` naming the step.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from itertools import compress
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np

from foliosim.fast.sim import kfork, kprog
from foliosim.fast.sim import layout as L
from foliosim.fast.sim.engine import I64, FastMachine, Unsupported
from foliosim.vm.events import SimError
from foliosim.vm.memory import PAGE_SHIFT, PAGE_SIZE
from foliosim.workloads.steps import PROT_FLAGS, Step, WorkloadError, region_vpn

_READ, _WRITE = 1, 2
_ACCESS_CODES = {"read": _READ, "write": _WRITE}
_SCANS = frozenset({"khugepaged", "numa"})  # change nothing without a design to score them
_VERB, _TASK, _ARGS = attrgetter("verb"), attrgetter("task"), attrgetter("args")
_ARG0, _ARG1, _ARG2 = itemgetter(0), itemgetter(1), itemgetter(2)
#: steps after which tasks' MMs or regions may differ
_TABLE_VERBS = frozenset({"spawn", "fork", "vfork", "thread", "exec", "exit", "mmap", "mremap", "munmap"})


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
        """Run the steps: each maximal run of reads and writes is converted to access rows at once (the whole
        list in one pass, then one compiled lookup per run) and goes to the kernels in batches; every other step
        through :meth:`execute`. Where the compiled step interpreter applies (:func:`kprog.compiled_unsupported`,
        and :meth:`execute` not overridden: a subclass that hooks it needs every step through it), whole stretches
        of steps run in one compiled call instead (:class:`kprog.ProgramRun`)."""
        m = self.m
        if type(self).execute is FastWorkloadRunner.execute and kprog.compiled_unsupported(m) is None:
            kprog.ProgramRun(self, steps).run()
            self.flush()
            self.stats.errors["SIGSEGV"] += int(m.glob[L.G_SEGV]) - self._segv
            return self.stats
        n = len(steps)
        flags = list(map(defaultdict(int, _ACCESS_CODES).__getitem__, map(_VERB, steps)))  # 0: not an access
        codes = np.array(flags, dtype=np.int8)
        acc_idx = np.flatnonzero(codes)
        ctrl = np.flatnonzero(codes == 0).tolist()
        nacc = len(acc_idx)
        acc_steps = list(compress(steps, flags))
        tnames = list(map(_TASK, acc_steps))
        acc = np.empty((nacc, kfork.A_COLS), dtype=np.int64)
        tid: dict[str, int] = {}
        rid: dict[Any, int] = {}
        if nacc:
            args = list(map(_ARGS, acc_steps))
            regs = list(map(_ARG0, args))
            tid = {name: i for i, name in enumerate(dict.fromkeys(tnames))}
            rid = {r: i for i, r in enumerate(dict.fromkeys(regs))}
            acc[:, kfork.A_TASK] = np.fromiter(map(tid.__getitem__, tnames), dtype=np.int64, count=nacc)
            acc[:, kfork.A_REGION] = np.fromiter(map(rid.__getitem__, regs), dtype=np.int64, count=nacc)
            acc[:, kfork.A_FIRST] = np.fromiter(map(_ARG1, args), dtype=np.int64, count=nacc)
            acc[:, kfork.A_PAGES] = np.fromiter(map(_ARG2, args), dtype=np.int64, count=nacc)
            write = codes[acc_idx] == _WRITE
            acc[:, kfork.A_WRITE] = write
            acc[:, kfork.A_FILL] = np.where(write, 1 + (acc_idx * 37) % 255, -1)
        ttab = np.full(max(len(tid), 1), -1, dtype=np.int64)
        rtab = np.full(max(len(rid), 1), kfork.MISSING, dtype=np.int64)
        self._lookup_tables(tid, ttab, rid, rtab)
        out = np.empty((max(min(self.batch, nacc), 1), 6), dtype=np.int64)
        a_lo = 0
        for k, c in enumerate([*ctrl, n]):
            a_hi = c - k  # the accesses before step c
            if c == n:
                if a_hi > a_lo:
                    self._accesses(steps, acc_idx, tnames, acc, a_lo, a_hi, ttab, rtab, out)
                break
            step = steps[c]
            if step.verb in _SCANS and step.task in m.tasks:  # nothing to do (see execute()): the run goes on
                self.stats.scans += 1
                self.stats.steps += 1
                continue
            if a_hi > a_lo:
                self._accesses(steps, acc_idx, tnames, acc, a_lo, a_hi, ttab, rtab, out)
                a_lo = a_hi
            try:
                self.execute(step, c)
            except (SimError, WorkloadError) as exc:
                raise WorkloadError(f"step {c + 1} ({step.verb} {step.task}): {exc}") from None
            except Unsupported as exc:
                raise Unsupported(f"step {c + 1} ({step.verb} {step.task}): {exc}") from None
            self.stats.steps += 1
            if step.verb in _TABLE_VERBS:
                self._lookup_tables(tid, ttab, rid, rtab)
        self.flush()
        self.stats.errors["SIGSEGV"] += int(m.glob[L.G_SEGV]) - self._segv
        return self.stats

    def _lookup_tables(self, tid: dict[str, int], ttab: I64, rid: dict[Any, int], rtab: I64) -> None:
        """The MM of each runnable task and the base page of each region, by their numbers in the access rows."""
        ttab.fill(-1)
        for name, task in self.m.tasks.items():
            i = tid.get(name)
            if i is not None and not task.vfork_blocked:
                ttab[i] = task.mm.num
        for region, i in rid.items():
            if isinstance(region, int):
                rtab[i] = region
            else:
                base = self.regions.get(region)
                if base is not None:
                    rtab[i] = base

    def _accesses(self, steps: list[Step], acc_idx: I64, tnames: list[str], acc: I64, lo: int, hi: int, ttab: I64,
                  rtab: I64, out: I64) -> None:
        """Access rows ``lo..hi`` (a run of reads and writes between two other steps) through the kernels."""
        self.flush()
        batch = out.shape[0]
        pos = lo
        while pos < hi:
            want = min(hi - pos, batch)
            done = kfork.resolve(acc, pos, pos + want, ttab, rtab, out)
            if done:
                self.m._run_access(out[:done], tnames[pos:pos + done])
                self.stats.steps += done
                pos += done
            if done < want:  # a step the tables cannot resolve: the per-step path says why
                self._slow(steps, acc_idx[pos:hi].tolist())
                return

    def _slow(self, steps: list[Step], indices: list[int]) -> None:
        """Reads and writes one step at a time (an unknown task or region, a sleeping vfork parent)."""
        for index in indices:
            self._step(steps[index], index)
        self.flush()

    def _step(self, step: Step, index: int) -> None:
        """Execute one step and count it; an error names the step."""
        try:
            self.execute(step, index)
        except (SimError, WorkloadError) as exc:
            raise WorkloadError(f"step {index + 1} ({step.verb} {step.task}): {exc}") from None
        except Unsupported as exc:
            raise Unsupported(f"step {index + 1} ({step.verb} {step.task}): {exc}") from None
        self.stats.steps += 1

    def flush(self) -> None:
        if self._ops:
            ops = np.array(self._ops, dtype=np.int64)
            tasks = list(self._tasks)
            self._ops.clear()
            self._tasks.clear()
            self.m._run_access(ops, tasks)

    def _vpn(self, region: Any) -> int:
        return region_vpn(self.regions, region)

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
            start = self._vpn(region) + a[1]
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
        elif verb == "file":
            m.create_file(a[0], a[1] * PAGE_SIZE, a[2], shmem=bool(a[3]))
        elif verb == "mmap":
            region, pages, kind, file, thp, prot, offset = a
            read, write, execute, noreserve = PROT_FLAGS[prot]
            fixed = region << PAGE_SHIFT if isinstance(region, int) else None
            if kind in ("anon", "shared-anon"):
                addr = m.mmap(t, pages * PAGE_SIZE, shared=kind == "shared-anon", read=read, write=write, addr=fixed,
                              thp=frozenset(thp) if thp is not None else None, label=str(region), execute=execute,
                              noreserve=noreserve)
            else:  # file-private / file-shared (as foliosim.evaluate.runner.WorkloadRunner._mmap())
                addr = m.mmap(t, pages * PAGE_SIZE, file=file, offset=offset * PAGE_SIZE, shared=kind == "file-shared",
                              read=read, write=write, addr=fixed, label=str(region), execute=execute,
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
        elif verb == "vmsplice":
            self._rc("vmsplice", m.vmsplice(t, a[0], (self._vpn(a[1]) + a[2]) << PAGE_SHIFT, a[3] * PAGE_SIZE))
        elif verb == "mremap":  # WorkloadRunner._mremap(): a named destination gets a fresh unmapped area
            region, pages, new = a
            start = self._vpn(region)
            if isinstance(new, int):
                dst = new
            else:
                dst = m._unmapped_area(pages)
                self.regions[new] = dst
            self._rc("mremap", m.mremap(t, start << PAGE_SHIFT, pages * PAGE_SIZE, dst << PAGE_SHIFT))
        elif verb == "merge":
            mm = m.task(t).mm
            m._sync(mm)
            m._merge(mm)
            m._publish_changed(mm)
        else:
            raise Unsupported(f"the {verb!r} step")
