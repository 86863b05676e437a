"""The compiled step interpreter (foliosim.fast.sim.kprog) against the one-step-at-a-time FastWorkloadRunner path
and against the reference runner: fork-child and prefork workloads and random anonymous programs, in all four
configurations. After a run the machine must be the same as after running the steps one by one: every used array
row, counters, the rmap trace in order, CoW decisions with their tasks, user faults, tasks, MMs with their VMAs,
the MM id allocator, the step counter."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("numba")

from hypothesis import given, settings
from hypothesis import strategies as st

from foliosim.evaluate.runner import WorkloadRunner
from foliosim.fast.sim import kprog
from foliosim.fast.sim import layout as L
from foliosim.fast.sim.engine import FastMachine
from foliosim.fast.sim.steps import FastWorkloadRunner
from foliosim.fast.sim.timeline import fast_state, reference_state
from foliosim.kconfig import KernelConfig
from foliosim.vm.events import OracleViolation
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.workloads.generators import build_workload
from foliosim.workloads.steps import Step, WorkloadError

CONFIGS = [KernelConfig(64, False), KernelConfig(64, True), KernelConfig(32, False), KernelConfig(32, True)]
IDS = ["64", "64-nopmc", "32", "32-nopmc"]


class OneByOne(FastWorkloadRunner):
    """The existing path: a runner whose execute() is overridden never uses the compiled interpreter."""

    def execute(self, step: Step, index: int) -> None:
        super().execute(step, index)


def _anon_only(steps: list[Step]) -> list[Step]:
    return [s for s in steps if not (s.verb == "file" or (s.verb == "mmap" and s.args[2] != "anon")
                                     or (s.verb in ("read", "write", "madvise") and s.args[0] == "lib"))]


def snapshot(m: FastMachine, runner: FastWorkloadRunner) -> dict[str, Any]:
    """Everything a run leaves: used array rows, Python objects, recorded streams (the table hash aside -- its
    layout and G_HUSED, its fill with deleted entries, depend on when it was last rebuilt -- and the scratch global
    G_NGATHER: neither is state)."""
    g = m.glob
    nf, ntb, npg = int(g[L.G_NFOLIO]), int(g[L.G_NTB]), int(g[L.G_NPAGE])
    for mm in m.mms.values():
        m._sync(mm)
    ms_cols = [L.MS_LIVE, L.MS_ID, L.MS_PINNED, L.MS_ZAPPED, L.MS_VOFF, L.MS_NVMA, L.MS_NMAP]
    return {
        "glob": [x for i, x in enumerate(g.tolist()) if i not in (L.G_NGATHER, L.G_HUSED)],
        "folios": (m.fs[:nf].tolist(), m.pmc[:npg].tolist(), m.pex[:npg].tolist(), m.pct[:npg].tolist()),
        "tables": (m.tb[:ntb].tolist(), m.ptf[:ntb].tolist(), m.ptp[:ntb].tolist(), m.ptw[:ntb].tolist(),
                   m.pexp[:ntb].tolist() if m.opt[L.O_ORACLE] else None),
        "ms": m.ms[:m._next["mm"]][:, ms_cols].tolist(),
        "vmas": (m.nvm, m.nmv, m.vm[:m.nvm].tolist(), m.mv[:m.nmv].tolist()),
        "counters": dict(m.counters),
        "trace": list(m.trace),
        # the task of each decision is compared with the reference's (assert_like_reference): the one-step path
        # names the first task that faulted at the decision's MM and address in its batch, which is wrong when
        # two threads of one MM fault there in one batch (a read mapping the zero page, then a write)
        "decisions": [replace(d, task="") for d in m.cow_decisions],
        "user_faults": list(m.user_faults),
        "tasks": [(n, t.pid, t.name, t.mm.num, t.tgid, t.alive, t.vfork_blocked,
                   None if t.vfork_parent is None else t.vfork_parent.name) for n, t in m.tasks.items()],
        "mms": [(n, mm.num, mm.mm_id, mm.users, mm.count, mm.zapped, mm.label, mm.has_pinned, list(mm.rows),
                 [(v.start, v.end, v.read, v.write, v.shared, v.thp, v.label, v.dontfork, v.anon_vma,
                   v.anon_vma_forked, v.exec, v.noreserve, v.account, v.softdirty_wp) for v in mm.vmas],
                 [mm.rowmap[id(v)] for v in mm.vmas]) for n, mm in m.mms.items()],
        "ids": (m.ids._next, list(m.ids._freed), sorted(m.ids._freed_set)),
        "step": (m.step, m.task_name, dict(m._next), m.pinned_pages),
        "stats": (runner.stats.steps, runner.stats.scans, dict(runner.stats.errors)),
    }


def fast_run(cls: type[FastWorkloadRunner], steps: list[Step], config: KernelConfig, **kw: Any
             ) -> tuple[FastMachine, FastWorkloadRunner]:
    m = FastMachine(config, MachineOptions(), reference=False, **kw)
    runner = cls(m)
    runner.run(steps)
    return m, runner


def assert_like_one_by_one(steps: list[Step], config: KernelConfig, **kw: Any) -> FastMachine:
    fast, fast_runner = fast_run(FastWorkloadRunner, steps, config, **kw)
    slow, slow_runner = fast_run(OneByOne, steps, config, **kw)
    a, b = snapshot(fast, fast_runner), snapshot(slow, slow_runner)
    for key in b:
        assert a[key] == b[key], f"{key} differs ({config.describe()}, {kw})"
    return fast


def assert_like_reference(steps: list[Step], config: KernelConfig) -> None:
    ref = Machine(config, MachineOptions(keep_events=False))
    WorkloadRunner(ref).run(steps)
    fast, _ = fast_run(FastWorkloadRunner, steps, config)
    assert ref.trace == fast.trace
    assert ref.cow_decisions == fast.cow_decisions
    assert reference_state(ref) == fast_state(fast)
    assert ref.counters["fault"] == fast.counters["fault"]
    assert ref.counters["fork"] == fast.counters["fork"]


WORKLOADS = [
    ("fork-child", {"pages": 512, "order": 4, "rounds": 8, "child_writes": 12, "parent_writes": 24, "probe_rate": 0}),
    ("fork-child", {"pages": 1024, "order": 9, "rounds": 4, "child_writes": 12, "parent_writes": 24,
                    "probe_rate": 0}),
    ("prefork", {"pages": 256, "order": 4, "children": 4, "requests": 60, "parent_write_rate": 0.2,
                 "probe_rate": 0}),
]


def _workload(name: str, params: dict[str, Any]) -> list[Step]:
    return _anon_only(build_workload(name, params, seed=3))


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@pytest.mark.parametrize(("name", "params"), WORKLOADS, ids=["fork-child-4", "fork-child-9", "prefork"])
def test_workloads_like_one_by_one_and_reference(config: KernelConfig, name: str, params: dict[str, Any]) -> None:
    steps = _workload(name, params)
    m = assert_like_one_by_one(steps, config, record=True, keep_decisions=True)
    assert m.counters["fork"] >= 4 and m.counters["fault"] > 100
    assert_like_one_by_one(steps, config, record=False, keep_decisions=False, fast_oracle=True)
    assert_like_reference(steps, config)


@pytest.mark.parametrize("name", ["prefork", "shared-file"])
def test_workloads_with_files_like_one_by_one(name: str) -> None:
    """Accesses of an MM with file or shared mappings go through the one-step path (file faults are finished in
    Python), the other MMs' steps through the interpreter."""
    params = {"prefork": dict(WORKLOADS[2][1]), "shared-file": {"probe_rate": 0}}[name]
    steps = build_workload(name, params, seed=3)
    assert any(s.verb == "file" for s in steps)
    m = assert_like_one_by_one(steps, KernelConfig(), record=True, keep_decisions=True)
    assert m.counters["fault"] > 20


def test_the_interpreter_runs_the_workload() -> None:
    """Not vacuous: only the steps it does not model (spawn, mmap) go through the one-step path."""
    steps = _workload(*WORKLOADS[2])
    calls: list[str] = []

    class Counting(FastWorkloadRunner):
        def _step(self, step: Step, index: int) -> None:
            calls.append(step.verb)
            super()._step(step, index)

    m = FastMachine(KernelConfig(), MachineOptions(), reference=False)
    stats = Counting(m).run(steps)
    assert stats.steps == len(steps)
    assert sorted(set(calls)) == ["mmap", "spawn"]
    assert m.counters["fork"] >= 4
    assert sum(1 for s in steps if s.verb == "madvise") > 5


def test_reference_memory_keeps_the_one_step_path() -> None:
    assert kprog.compiled_unsupported(FastMachine(KernelConfig(), MachineOptions())) is not None
    assert kprog.compiled_unsupported(FastMachine(KernelConfig(), MachineOptions(), reference=False)) is None


def test_the_mutant_is_caught() -> None:
    """Large-folio reuse without the shared-bit test: the decisions (and the state) differ from the reference."""
    steps = _workload(*WORKLOADS[0])
    ref = Machine(KernelConfig(), MachineOptions(keep_events=False))
    WorkloadRunner(ref).run(steps)
    fast, _ = fast_run(FastWorkloadRunner, steps, KernelConfig(), mutant=L.MUTANT_NO_SHARED_TEST)
    assert ref.cow_decisions != fast.cow_decisions


def test_the_fast_oracle_catches_an_isolation_failure() -> None:
    """The mutant reuses a folio the parent still maps: the parent then reads the child's data."""
    steps = _workload(*WORKLOADS[0])
    with pytest.raises(OracleViolation, match="isolation: a page does not read what its MM last wrote"):
        fast_run(FastWorkloadRunner, steps, KernelConfig(), mutant=L.MUTANT_NO_SHARED_TEST, fast_oracle=True,
                 record=False, keep_decisions=False)
    m, _ = fast_run(FastWorkloadRunner, steps, KernelConfig(), fast_oracle=True, record=False, keep_decisions=False)
    assert m.counters["fault"] > 100  # without the mutant the same run passes


# ----------------------------------------------------------------------------- random anonymous programs
def random_program(seed: int) -> list[Step]:
    """Anonymous memory with mTHP orders: forks, exits (names reused), accesses, MADV_DONTNEED/COLD/PAGEOUT and
    scans (the interpreter's steps) mixed with threads, vfork, exec, mprotect, munmap, mmap and pins (the steps it
    hands to Python), so that it stops and resumes often."""
    rng = random.Random(seed)
    order = rng.choice([0, 2, 4, 9])
    pages = rng.choice([16, 64, 600, 1024])
    steps = [Step("spawn", "P"), Step("mmap", "P", ("heap", pages, "anon", None, (order,) if order else None, "rw", 0))]
    regions = {"heap": pages}
    alive = ["P"]
    blocked: dict[str, str] = {}  # vfork child -> sleeping parent
    tgid = {"P": "P"}
    for n in range(rng.randint(20, 70)):
        runnable = [t for t in alive if t not in blocked.values()]
        t = rng.choice(runnable)
        region = rng.choice(sorted(regions))
        size = regions[region]
        first = rng.randrange(size)
        span = rng.randint(1, min(8, size - first))
        r = rng.random()
        if r < 0.40:
            steps.append(Step(rng.choice(["write", "write", "read"]), t, (region, first, span)))
        elif r < 0.55 and len(alive) < 6:
            child = rng.choice([c for c in ("C0", "C1", "C2", "C3", "C4", "C5", "C6") if c not in alive])
            steps.append(Step("fork", t, (child,)))
            alive.append(child)
            tgid[child] = child
        elif r < 0.67 and t != "P":
            steps.append(Step("exit", t))
            alive.remove(t)
            blocked.pop(t, None)
        elif r < 0.77:
            steps.append(Step("madvise", t, (region, first, span, rng.choice(["dontneed", "cold", "pageout"]))))
        elif r < 0.81:
            steps.append(Step(rng.choice(["khugepaged", "numa"]), t, ()))
        elif r < 0.84 and len(alive) < 6 and not {"T0", "T1", "V0"} <= set(alive):
            child = rng.choice([c for c in ("T0", "T1", "V0") if c not in alive])
            vfork = child == "V0"
            steps.append(Step("vfork" if vfork else "thread", t, (child,)))
            alive.append(child)
            tgid[child] = child if vfork else tgid[t]
            if vfork:
                blocked[child] = t
        elif r < 0.87:
            steps.append(Step("mprotect", t, (region, first, span, rng.choice(["r", "rw"]))))
        elif r < 0.89:
            steps.append(Step("munmap", t, (region, first, span)))
        elif r < 0.91:
            name = f"r{n}"
            regions[name] = rng.choice([8, 32, 512])
            steps.append(Step("mmap", t, (name, regions[name], "anon", None, rng.choice([None, (2,), (4,)]), "rw",
                                          0)))
        elif r < 0.92 and tgid[t] != "P":  # a new, empty MM; the other threads of its group exit
            steps.append(Step("exec", t, ()))
            for other in [o for o in alive if o != t and tgid[o] == tgid[t]]:
                alive.remove(other)
                blocked.pop(other, None)
                for child in [c for c, parent in blocked.items() if parent == other]:
                    del blocked[child]
            blocked.pop(t, None)
            tgid[t] = t
        elif r < 0.93 and n > 40:  # late: while a pin is held every step goes one by one
            steps.append(Step("pin", t, (f"pin{n}", region, first, span, False, True)))
        else:
            steps.append(Step("write", t, (region, first, span)))
    return steps


def _run_or_error(runner_cls: type[FastWorkloadRunner], steps: list[Step], config: KernelConfig
                  ) -> tuple[str | None, dict[str, Any] | None]:
    try:
        m, runner = fast_run(runner_cls, steps, config, record=True, keep_decisions=True)
    except WorkloadError as exc:
        return str(exc), None
    return None, snapshot(m, runner)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_programs(seed: int) -> None:
    steps = random_program(seed)
    for config in CONFIGS:
        err_a, a = _run_or_error(FastWorkloadRunner, steps, config)
        err_b, b = _run_or_error(OneByOne, steps, config)
        assert err_a == err_b, f"seed {seed} ({config.describe()})"
        if a is None or b is None:
            continue
        for key in b:
            assert a[key] == b[key], f"seed {seed} ({config.describe()}): {key} differs"
        assert_like_reference(steps, config)


@pytest.mark.parametrize(("extra", "message"), [
    ([Step("write", "Q", ("heap", 0, 1))], r"step 4 \(write Q\): no task 'Q'"),
    ([Step("read", "P", ("nowhere", 0, 1))], r"step 4 \(read P\): unknown region 'nowhere'"),
    ([Step("vfork", "P", ("C",)), Step("write", "C", ("heap", 0, 1)), Step("write", "P", ("heap", 1, 1))],
     r"step 6 \(write P\): task 'P' sleeps in vfork"),
    ([Step("fork", "P", ("C",)), Step("exit", "C"), Step("write", "C", ("heap", 0, 1))],
     r"step 6 \(write C\): no task 'C'"),
    ([Step("fork", "P", ("C",)), Step("fork", "P", ("C",))], r"step 5 \(fork P\): task name 'C' is already in use"),
    ([Step("exit", "Q")], r"step 4 \(exit Q\): no task 'Q'"),
])
def test_errors_name_the_step(extra: list[Step], message: str) -> None:
    base = [Step("spawn", "P"), Step("mmap", "P", ("heap", 16, "anon", None, None, "rw", 0)),
            Step("write", "P", ("heap", 0, 4))]
    with pytest.raises(WorkloadError, match=message):
        fast_run(FastWorkloadRunner, [*base, *extra], KernelConfig())


# ----------------------------------------------------------------------------- the program encoding
def _encode_one_by_one(steps: list[Step]) -> tuple[list[list[int]], list[str], dict[Any, int]]:
    """kprog.encode()'s meaning, step by step: task numbers in order of first appearance (step tasks, then fork
    children), region numbers in order of first appearance (accesses, then modelled madvise steps)."""
    names = {name: i for i, name in enumerate(dict.fromkeys(s.task for s in steps))}
    regions: dict[Any, int] = {}
    for s in steps:
        if s.verb in ("read", "write"):
            regions.setdefault(s.args[0], len(regions))
    codes = {"read": kprog.OP_READ, "write": kprog.OP_WRITE, "khugepaged": kprog.OP_SCAN, "numa": kprog.OP_SCAN,
             "exit": kprog.OP_EXIT, "fork": kprog.OP_FORK}
    madv = {"dontneed": kprog.OP_DONTNEED, "cold": kprog.OP_COLD, "pageout": kprog.OP_PAGEOUT}
    prog = []
    for i, s in enumerate(steps):
        row = [codes.get(s.verb, kprog.OP_OTHER), names[s.task], 0, 0, 0, 0, 0]
        a = s.args
        if s.verb in ("read", "write"):
            row[kprog.P_REG:kprog.P_PAGES + 1] = [regions[a[0]], a[1], a[2]]
            row[kprog.P_FILL] = 1 + (i * 37) % 255 if s.verb == "write" else -1
        elif s.verb == "fork":
            row[kprog.P_ARG] = names.setdefault(a[0], len(names))
        elif s.verb == "madvise" and a[3] in madv and isinstance(a[1], int) and isinstance(a[2], int):
            row[kprog.P_OP] = madv[a[3]]
            row[kprog.P_REG:kprog.P_PAGES + 1] = [regions.setdefault(a[0], len(regions)), a[1], a[2]]
        prog.append(row)
    return prog, list(names), regions


@pytest.mark.parametrize("seed", range(12))
def test_encode_is_the_step_by_step_encoding(seed: int) -> None:
    steps = random_program(seed)
    rng = random.Random(seed)
    odd = [Step("madvise", "P", ("late", 0, 2, "cold")), Step("madvise", "P", ("heap", True, 2, "pageout")),
           Step("madvise", "P", ("heap", 0, 2, "willneed")), Step("madvise", "P", ("other", "x", 1, "dontneed")),
           Step("fork", "P", ("Z9",)), Step("fork", "Z9", ("P",)), Step("madvise", "P", ("heap", 1, 3, "dontneed"))]
    for step in odd:  # madvise it does not model (OP_OTHER), regions and names seen first here, bools as ints
        steps.insert(rng.randrange(len(steps) + 1), step)
    prog, names, regions = kprog.encode(steps)
    want, want_names, want_regions = _encode_one_by_one(steps)
    assert prog.tolist() == want
    assert names == want_names
    assert list(regions.items()) == list(want_regions.items())


@pytest.mark.parametrize("extra", [[], [Step("madvise", "P", ("late", 0, 2, "dontneed"))],
                                   [Step("fork", "P", ("C",)), Step("write", "C", ("heap", 1, 1))]])
def test_encode_one_task_one_region(extra: list[Step]) -> None:
    """encode() leaves the task and region columns at 0 when one task and one region are all the accesses use;
    a region or task that a later madvise or fork brings is still numbered."""
    steps = [Step("write", "P", ("heap", 0, 4)), Step("read", "P", ("heap", 2, 1)), *extra,
             Step("madvise", "P", ("heap", 1, 2, "cold")), Step("write", "P", ("heap", 3, 1))]
    prog, names, regions = kprog.encode(steps)
    want, want_names, want_regions = _encode_one_by_one(steps)
    assert prog.tolist() == want
    assert names == want_names
    assert list(regions.items()) == list(want_regions.items())


def test_encode_numbers_tasks_by_first_appearance_across_runs() -> None:
    """Tasks that come back after another's run keep the number of their first appearance (_encode looks every
    step's task up in one numbering; a FaultSteps list's told tasks are numbered by runs, test_fault_columns)."""
    tasks = ["a", "a", "b", "b", "a", "c", "b", "c", "c", "a"]
    steps = [Step("write", t, ("heap", i, 1)) for i, t in enumerate(tasks)]
    prog, names, _regions = kprog.encode(steps)
    assert names == ["a", "b", "c"]
    assert prog[:, kprog.P_TASK].tolist() == [names.index(t) for t in tasks]


@pytest.mark.parametrize("seed", range(6))
def test_encode_indexes_its_rows(seed: int) -> None:
    """The row index _encode() hands ProgramRun (made in the same compiled call as the rows, in memory the
    classification used before) is _row_index() of the finished program: fork rows, fork/exit rows, the rows Python
    runs (madvise it does not model included), recorded faults."""
    steps = random_program(seed)
    rng = random.Random(seed)
    for step in [Step("madvise", "P", ("heap", 0, 2, "willneed")), Step("fault", "P", (0x7F00, 0, True)),
                 Step("madvise", "P", ("heap", 1, 2, "dontneed")), Step("exit", "Q"), Step("fork", "P", ("Z",))]:
        steps.insert(rng.randrange(len(steps) + 1), step)
    prog, *_rest, rows, index = kprog._encode(steps)
    fresh = np.full((3, len(steps)), -5, dtype=np.int64)
    want = kprog._row_index(prog[:, kprog.P_OP], fresh, False)
    assert index == want and want[0] and want[1] > want[0] and want[2] and want[7]
    for k, n in enumerate(want[:3]):
        assert rows[k, :n].tolist() == fresh[k, :n].tolist()


def test_encode_packs_many_tasks() -> None:
    """Task numbers past one byte (a plain list's verb code and task number travel packed in one integer) keep
    every verb's code and every task's number."""
    steps = [Step("spawn", "P"), Step("mmap", "P", ("heap", 16, "anon", None, None, "rw", 0))]
    verbs = ["write", "read", "fork", "exit", "madvise", "khugepaged", "numa", "mprotect"]
    for k in range(700):
        t = f"T{k}"
        verb = verbs[k % len(verbs)]
        args = {"write": ("heap", k % 16, 1), "read": ("heap", k % 16, 1), "fork": (f"C{k}",),
                "madvise": ("heap", 0, 2, "dontneed"), "mprotect": ("heap", 0, 1, "r"), "numa": (None,)}
        steps.append(Step(verb, t, args.get(verb, ())))
    prog, names, regions = kprog.encode(steps)
    want, want_names, want_regions = _encode_one_by_one(steps)
    assert len(names) > 700 and prog.tolist() == want
    assert names == want_names
    assert list(regions.items()) == list(want_regions.items())


def test_forks_alive_across_stretches_like_one_by_one() -> None:
    """Children forked in one stretch of the loop and still alive, a step Python runs, then more forks and exits:
    the MMs the loop made (numbered from where the tables were made) become the same objects as one by one."""
    steps = [Step("spawn", "P"), Step("mmap", "P", ("heap", 64, "anon", None, (4,), "rw", 0)),
             Step("write", "P", ("heap", 0, 64))]
    for k in range(3):
        steps += [Step("fork", "P", (f"A{k}",)), Step("write", f"A{k}", ("heap", 4 * k, 2))]
    steps += [Step("exit", "A1"), Step("mprotect", "P", ("heap", 32, 4, "r")), Step("fork", "A0", ("B",)),
              Step("write", "B", ("heap", 1, 1)), Step("exit", "A0"), Step("fork", "P", ("A1",)),
              Step("read", "A1", ("heap", 40, 2))]
    for config in CONFIGS:
        m = assert_like_one_by_one(steps, config, record=True, keep_decisions=True)
        assert sorted(m.tasks) == ["A1", "A2", "B", "P"]


@pytest.mark.parametrize("rid", [{}, {0x7F00: 0, 12: 1, 5: 2}, {0x7F00: 0, "heap": 1, 12: 2, "x": 3},
                                 {"heap": 0}, {True: 0, "b": 1},
                                 {(r if k % 3 else f"r{r}"): k for k, r in enumerate(range(100, 120))}])
def test_region_table(rid: dict[Any, int]) -> None:
    """The region table holds each address (an int) at its number; the names come back as (name, number) in
    order (a few regions by a loop, many by maps)."""
    rtab = np.full(max(len(rid), 1), -7, dtype=np.int64)
    named = kprog._region_table(rid, rtab)
    assert named == [(r, i) for r, i in rid.items() if not isinstance(r, int)]
    want = [-7] * max(len(rid), 1)
    for r, i in rid.items():
        if isinstance(r, int):
            want[i] = int(r)
    assert rtab.tolist() == want


# ----------------------------------------------------------------------------- batched accesses
@pytest.mark.parametrize("oracle", [False, True], ids=["plain", "oracle"])
@pytest.mark.parametrize("tight", [False, True], ids=["roomy", "tight"])
@pytest.mark.parametrize("seed", range(8))
def test_batched_accesses_like_one_by_one(seed: int, tight: bool, oracle: bool, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """Without decisions, trace or user faults to keep, run_program() hands up to _BATCH consecutive reads and
    writes to one access() call: the machine ends as after the steps one by one, also when the call stops in the
    middle of a batch for room (no folio rows made ahead, a fault list of 3 rows) and resumes there."""
    if tight:
        monkeypatch.setattr(kprog, "_AHEAD_MAX", 1)
        monkeypatch.setattr(kprog, "_FAULT_ROWS", 3)
    steps = random_program(seed)
    config = CONFIGS[seed % len(CONFIGS)]
    kw = {"record": False, "keep_decisions": False, "fast_oracle": oracle}
    try:
        fast, fast_runner = fast_run(FastWorkloadRunner, steps, config, **kw)
    except WorkloadError as exc:
        with pytest.raises(WorkloadError) as slow_exc:
            fast_run(OneByOne, steps, config, **kw)
        assert str(slow_exc.value) == str(exc)
        return
    slow, slow_runner = fast_run(OneByOne, steps, config, **kw)
    a, b = snapshot(fast, fast_runner), snapshot(slow, slow_runner)
    for key in b:
        assert a[key] == b[key], f"seed {seed}: {key} differs"
    assert fast.counters["fault"] > 0


@pytest.mark.parametrize("tight", [False, True], ids=["roomy", "tight"])
@pytest.mark.parametrize(("name", "params"), WORKLOADS, ids=["fork-child-4", "fork-child-9", "prefork"])
def test_batched_workloads_like_one_by_one(name: str, params: dict[str, Any], tight: bool,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if tight:
        monkeypatch.setattr(kprog, "_AHEAD_MAX", 1)
        monkeypatch.setattr(kprog, "_FAULT_ROWS", 3)
    fast = assert_like_one_by_one(_workload(name, params), KernelConfig(), record=False, keep_decisions=False)
    assert fast.counters["fault"] > 50


def test_access_rows_stop_where_python_must_run() -> None:
    """_access_rows() takes consecutive reads and writes, at most ``most``, and stops at any other row (a recorded
    fault too: it runs alone), a task that cannot run (gone, or asleep in vfork), an unknown region; its rows are
    execute()'s."""
    steps = [Step("write", "P", ("heap", 0, 2)), Step("read", "C", ("heap", 3, 1)), Step("write", "P", ("heap", 5, 4)),
             Step("exit", "C"), Step("write", "P", ("heap", 1, 1)), Step("write", "V", ("heap", 1, 1)),
             Step("write", "P", ("other", 0, 1)), Step("fault", "P", ("heap", 0, 1)),
             Step("write", "P", ("heap", 2, 1))]
    prog, names, regions = kprog.encode(steps)
    n = len(names)
    tst = np.full(n, kprog.T_PY, dtype=np.int64)
    tst[names.index("V")] = kprog.T_BLOCKED
    tmm = np.arange(n, dtype=np.int64)
    rtab = np.full(len(regions), kprog.MISSING, dtype=np.int64)
    rtab[regions["heap"]] = 100
    ops = np.zeros((8, 6), dtype=np.int64)
    assert kprog._access_rows(prog, 0, len(steps), 8, tst, tmm, rtab, ops) == 3
    assert ops[:3].tolist() == [[0, 100, 2, 1, 1, 0], [1, 103, 1, 0, -1, 0], [0, 105, 4, 1, 1 + 2 * 37, 0]]
    assert kprog._access_rows(prog, 0, len(steps), 2, tst, tmm, rtab, ops) == 2
    assert kprog._access_rows(prog, 0, 1, 8, tst, tmm, rtab, ops) == 1
    assert kprog._access_rows(prog, 3, len(steps), 8, tst, tmm, rtab, ops) == 0  # exit
    assert kprog._access_rows(prog, 4, len(steps), 8, tst, tmm, rtab, ops) == 1  # then V sleeps
    assert kprog._access_rows(prog, 6, len(steps), 8, tst, tmm, rtab, ops) == 0  # unknown region
    assert kprog._access_rows(prog, 7, len(steps), 8, tst, tmm, rtab, ops) == 0  # a recorded fault
    assert kprog._access_rows(prog, 8, len(steps), 8, tst, tmm, rtab, ops) == 1
    tst[names.index("C")] = kprog.T_NONE
    assert kprog._access_rows(prog, 0, len(steps), 8, tst, tmm, rtab, ops) == 1  # C is gone
