"""The compiled VMA control plane (foliosim.fast.sim.kvma) against FastMachine's Python control plane: random
sequences of mmap/munmap/mprotect/madvise/merge/fork/exit/clear_refs/mremap and faults over anonymous, shmem and
file mappings, private and shared, in all four configurations. After every step both machines must hold the same
Vma lists (and the compiled one's rows must materialize to its list), the same page tables, folios, rmap trace,
counters and results; a mutant of the compiled merge (across a file-offset gap) is caught."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import pytest

pytest.importorskip("numba")

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from foliosim.fast.sim import kvma
from foliosim.fast.sim import layout as L
from foliosim.fast.sim.engine import FastMachine
from foliosim.kconfig import KernelConfig
from foliosim.vm.machine import MachineOptions
from foliosim.vm.memory import PAGE_SIZE
from foliosim.vm.vma import Vma

PO = 4  # a small PMD (16 pages), so that ranges cross PMDs and unaligned cuts split PMD-mapped THPs
CONFIGS = [KernelConfig(64, False, pmd_order=PO), KernelConfig(64, True, pmd_order=PO),
           KernelConfig(32, False, pmd_order=PO), KernelConfig(32, True, pmd_order=PO)]
IDS = ["64", "64-nopmc", "32", "32-nopmc"]
BASE = 1 << 20  # page number of the test's window (PMD-aligned)
SPAN = 64  # pages of the window the steps touch


def machines(config: KernelConfig, fast_oracle: bool = False) -> tuple[FastMachine, FastMachine]:
    """(compiled control plane, Python control plane), each with a task t0 and a file and a shmem object."""
    out = []
    for compiled in (True, False):
        m = FastMachine(config, MachineOptions(thp=frozenset({2}), thp_madvise=frozenset({PO})), compiled_vmas=compiled,
                        fast_oracle=fast_oracle)
        m.spawn("t0")
        m.create_file("f", 48 * PAGE_SIZE, order=2)
        m.create_file("s", 32 * PAGE_SIZE, shmem=True)
        out.append(m)
    return out[0], out[1]


def _fields(v: Vma) -> tuple[Any, ...]:
    """Every field of a Vma, the file by name (each machine has its own file objects)."""
    return tuple(getattr(v, f.name) if f.name != "file" else (v.file.name if v.file else None) for f in fields(Vma))


def state(m: FastMachine) -> dict[str, Any]:
    g = m.glob
    nf, ntb, npg = int(g[L.G_NFOLIO]), int(g[L.G_NTB]), int(g[L.G_NPAGE])
    mms = {}
    for name, mm in m.mms.items():
        m._sync(mm)
        mms[name] = ([_fields(v) for v in mm.vmas], m.mappings(mm), mm.zapped)
    return {
        "glob": [x for i, x in enumerate(g.tolist()) if i not in (L.G_NGATHER, L.G_HUSED)],
        "folios": (m.fs[:nf].tolist(), m.pmc[:npg].tolist(), m.pex[:npg].tolist(), m.pct[:npg].tolist()),
        "tables": (m.tb[:ntb].tolist(), m.ptf[:ntb].tolist(), m.ptp[:ntb].tolist(), m.ptw[:ntb].tolist(),
                   m.pexp[:ntb].tolist() if m.opt[L.O_ORACLE] else None),
        "pins": sorted((n, h.pages, h.vpns) for n, h in m.gup.items()),
        "mms": mms,
        "trace": list(m.trace),
        "decisions": list(m.cow_decisions),
        "counters": dict(m.counters),
        "base": m._mmap_base,
        "tasks": sorted(m.tasks),
    }


def check_rows(m: FastMachine) -> None:
    """The compiled machine's rows are the truth: they materialize to its Vma lists, and the index agrees."""
    for mm in m.mms.values():
        if mm.zapped:
            continue
        got = kvma.materialize(m.vm, m.mv, m.ms, mm.num, mm.anon_birth if mm.anon_birth >= 0 else m._anon_birth(mm),
                               m.codec)
        assert got == mm.vmas, mm.name
        off = int(m.ms[mm.num, L.MS_VOFF])
        assert m.mv[off:off + len(mm.vmas)].tolist() == mm.rows
        assert all(mm.rowmap[id(v)] == r for v, r in zip(mm.vmas, mm.rows, strict=True))
        for v, r in zip(mm.vmas, mm.rows, strict=True):
            assert int(m.vm[r, L.V_MAPSW]) == int(v.maps_writable)


def pages(off: int, n: int) -> tuple[int, int]:
    return (BASE + off) * PAGE_SIZE, n * PAGE_SIZE


RANGE = st.tuples(st.integers(0, SPAN - 1), st.integers(1, 24))
STEP = st.one_of(
    st.tuples(st.just("mmap"), st.integers(0, 3), st.sampled_from(["anon", "shared", "file", "file-shared", "shmem"]),
              st.one_of(st.none(), st.just(-1), st.integers(0, SPAN - 1)), st.integers(1, 24), st.booleans(),
              st.integers(0, 8),
              st.sampled_from([None, frozenset(), frozenset({2}), frozenset({PO}), frozenset({2, PO})]),
              st.sampled_from(["", "a", "b"]), st.booleans()),
    st.tuples(st.just("munmap"), st.integers(0, 3), RANGE),
    st.tuples(st.just("mprotect"), st.integers(0, 3), RANGE, st.booleans(), st.booleans(),
              st.sampled_from([None, False, True])),
    st.tuples(st.just("madvise"), st.integers(0, 3), RANGE,
              st.sampled_from(["dontfork", "dofork", "hugepage", "nohugepage", "dontneed", "cold", "pageout"])),
    st.tuples(st.just("merge"), st.integers(0, 3)),
    st.tuples(st.just("fork"), st.integers(0, 3)),
    st.tuples(st.just("exit"), st.integers(1, 3)),
    st.tuples(st.just("clear_refs"), st.integers(0, 3)),
    st.tuples(st.just("mremap"), st.integers(0, 3), RANGE, st.integers(0, SPAN - 1)),
    st.tuples(st.just("access"), st.integers(0, 3), RANGE, st.booleans(), st.integers(1, 250)),
    st.tuples(st.just("pin"), st.integers(0, 3), RANGE, st.booleans()),
    st.tuples(st.just("move"), st.integers(0, 3), st.integers(0, 9), st.integers(0, 15), st.integers(1, 20),
              st.integers(4, 7), st.sampled_from([0, 0, 3])),
    st.tuples(st.just("unpin"), st.integers(0, 3)),
)


#: steps over file mappings placed side by side, so that neighbours often could merge
FILE_STEP = st.one_of(
    st.tuples(st.just("mmap"), st.just(0), st.sampled_from(["file", "file-shared"]),
              st.one_of(st.just(-1), st.integers(0, SPAN - 1)), st.integers(1, 8), st.just(False), st.integers(0, 40),
              st.none(), st.sampled_from(["", "a"]), st.just(False)),
    st.tuples(st.just("mprotect"), st.just(0), RANGE, st.just(True), st.just(False), st.none()),
    st.tuples(st.just("merge"), st.just(0)),
    st.tuples(st.just("access"), st.just(0), RANGE, st.just(False), st.just(1)),
)


def apply(m: FastMachine, step: tuple[Any, ...]) -> Any:
    """One step on one machine; its result (a return value or the exception's type and text)."""
    tasks = sorted(m.tasks)
    verb, who = step[0], step[1]
    task = tasks[who % len(tasks)] if verb != "exit" else (tasks[who % len(tasks)] if len(tasks) > 1 else None)
    try:
        if verb == "mmap":
            _, _, kind, at, n, write, offset, thp, label, execute = step
            if at == -1:  # right after the MM's last mapping (neighbours that may merge)
                vmas = m.task(task).mm.vmas
                addr = (vmas[-1].end if vmas else BASE) * PAGE_SIZE
            else:
                addr = None if at is None else (BASE + at) * PAGE_SIZE
            if kind == "anon":
                return m.mmap(task, n * PAGE_SIZE, addr=addr, write=write, thp=thp, label=label, execute=execute)
            if kind == "shared":
                return m.mmap(task, n * PAGE_SIZE, addr=addr, write=write, shared=True, label=label)
            name, size = ("s", 32) if kind == "shmem" else ("f", 48)
            off = min(offset, size - n) if n <= size else 0
            return m.mmap(task, min(n, size) * PAGE_SIZE, addr=addr, file=name, offset=off * PAGE_SIZE, write=write,
                          shared=kind != "file", label=label, execute=execute)
        if verb == "munmap":
            return m.munmap(task, *pages(*step[2]))
        if verb == "mprotect":
            return m.mprotect(task, *pages(*step[2]), step[3], step[4], step[5])
        if verb == "madvise":
            return m.madvise(task, *pages(*step[2]), step[3])
        if verb == "merge":
            mm = m.task(task).mm
            m._sync(mm)
            m._merge(mm)
            m._publish_changed(mm)
            return None
        if verb == "fork":
            return m.fork(task, f"c{m.step}") if len(tasks) < 5 else None
        if verb == "exit":
            return None if task is None else m.exit(task)
        if verb == "clear_refs":
            return m.clear_refs(task)
        if verb == "mremap":
            addr, length = pages(*step[2])
            return m.mremap(task, addr, length, (BASE + SPAN + step[3]) * PAGE_SIZE)
        if verb == "move":  # mremap of part of one of the MM's mappings, often by whole PMDs
            _, _, k, off, n, j, skew = step
            vmas = m.task(task).mm.vmas
            if not vmas:
                return None
            v = vmas[k % len(vmas)]
            start = min(v.start + off, v.end - 1)
            end = min(start + n, v.end)
            dst = start + (j << PO) + skew
            return m.mremap(task, start * PAGE_SIZE, (end - start) * PAGE_SIZE, dst * PAGE_SIZE)
        if verb == "pin":
            return m.pin(task, f"p{m.step}", *pages(*step[2]), write=step[3])
        if verb == "unpin":
            return m.unpin(sorted(m.gup)[who % len(m.gup)]) if m.gup else None
        addr, length = pages(*step[2])
        if step[3]:
            return m.write(task, addr, bytes([step[4]]) * length)
        return m.read(task, addr, length)
    except Exception as exc:  # the same refusal on both sides
        return type(exc).__name__, str(exc)


def run_both(config: KernelConfig, steps: list[tuple[Any, ...]], mutant: int = 0, fast_oracle: bool = False) -> None:
    fast, slow = machines(config, fast_oracle)
    fast.kvma_mutant = mutant
    for i, step in enumerate(steps):
        got, want = apply(fast, step), apply(slow, step)
        assert got == want, (i, step)
        check_rows(fast)
        a, b = state(fast), state(slow)
        for key in b:
            assert a[key] == b[key], (i, step, key)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.one_of(STEP, FILE_STEP), min_size=1, max_size=40))
def test_random_sequences_match_python_control_plane(config: KernelConfig, steps: list[tuple[Any, ...]]) -> None:
    run_both(config, steps)


@settings(max_examples=20, deadline=None)
@given(steps=st.lists(st.one_of(STEP, FILE_STEP), min_size=1, max_size=40))
def test_random_sequences_with_the_fast_oracle(steps: list[tuple[Any, ...]]) -> None:
    """The fast oracle's expected contents (cleared by munmap's zap, dropped with the freed tables) too."""
    run_both(CONFIGS[0], steps, fast_oracle=True)


MOVE_STEP = st.one_of(
    st.tuples(st.just("move"), st.integers(0, 3), st.integers(0, 9), st.integers(0, 15), st.integers(1, 20),
              st.integers(4, 7), st.sampled_from([0, 0, 3])),
    st.tuples(st.just("access"), st.integers(0, 3), RANGE, st.booleans(), st.integers(1, 250)),
    st.tuples(st.just("fork"), st.integers(0, 3)),
    st.tuples(st.just("munmap"), st.integers(0, 3), RANGE),
)
#: populated mappings to move: a PMD-THP heap written whole, a file mapping read, a shared one written
POPULATED = [("mmap", 0, "anon", 0, 40, True, 0, frozenset({PO}), "heap", False), ("access", 0, (0, 40), True, 9),
             ("mmap", 0, "file", 40, 12, False, 4, None, "lib", False), ("access", 0, (40, 12), False, 1),
             ("mmap", 0, "shared", 52, 8, True, 0, None, "shm", False), ("access", 0, (52, 8), True, 5)]


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@settings(max_examples=15, deadline=None)
@given(steps=st.lists(MOVE_STEP, min_size=1, max_size=20))
def test_mremap_of_populated_mappings(config: KernelConfig, steps: list[tuple[Any, ...]]) -> None:
    """mremap moving whole PMDs, splitting the others, moving PTEs (with the fast oracle's expectations)."""
    run_both(config, POPULATED + steps, fast_oracle=True)


# a file mapped twice side by side with a hole in its offsets, made to merge by an mprotect over both
GAP = [("mmap", 0, "file", 0, 4, False, 0, None, "", False), ("mmap", 0, "file", 4, 4, False, 8, None, "", False),
       ("access", 0, (0, 8), False, 1), ("mprotect", 0, (0, 8), True, False, None)]


@pytest.mark.parametrize("config", CONFIGS[:1], ids=IDS[:1])
def test_mutant_merging_across_a_pgoff_gap_is_caught(config: KernelConfig) -> None:
    run_both(config, GAP)
    with pytest.raises(AssertionError):
        run_both(config, GAP, mutant=kvma.MUTANT_PGOFF_GAP)

    @settings(max_examples=200, deadline=None, database=None, phases=[Phase.generate])
    @given(steps=st.lists(FILE_STEP, min_size=2, max_size=12))
    def random_file_steps(steps: list[tuple[Any, ...]]) -> None:
        run_both(config, steps, mutant=kvma.MUTANT_PGOFF_GAP)

    with pytest.raises(AssertionError):  # random sequences find it too
        random_file_steps()


def test_fixed_mmap_replaces_and_regions_merge_as_python() -> None:
    """A hand-made case: MAP_FIXED over the middle of a THP-backed mapping (unaligned: the PMD is split), then
    mprotect back to the old protection merges the three pieces into one again."""
    config = CONFIGS[0]
    fast, slow = machines(config)
    steps = [("mmap", 0, "anon", 0, 32, True, 0, frozenset({PO}), "heap", False),
             ("access", 0, (0, 32), True, 7), ("mmap", 0, "anon", 5, 3, True, 0, frozenset({PO}), "heap", False),
             ("merge", 0)]
    for step in steps:
        assert apply(fast, step) == apply(slow, step)
    mm = fast.task("t0").mm
    assert [(v.start - BASE, v.end - BASE) for v in mm.vmas] == [(0, 32)]  # merged back (same flags, anon_vma ok)
    assert state(fast) == state(slow)
    check_rows(fast)


def test_room_is_grown_for_many_vmas() -> None:
    """More VMAs than the first arrays hold: the verbs say RC_ROOM and the machine grows the rows and index."""
    fast, slow = machines(CONFIGS[0])
    for k in range(150):  # alternating protections: nothing merges
        step = ("mmap", 0, "anon", None, 1 + k % 3, bool(k % 2), 0, None, "", False)
        assert apply(fast, step) == apply(slow, step)
    for k in range(0, 150, 7):
        mm = fast.task("t0").mm
        v = mm.vmas[k % len(mm.vmas)]
        for m in (fast, slow):
            assert m.munmap("t0", v.start * PAGE_SIZE, PAGE_SIZE) == 0
    assert state(fast) == state(slow)
    check_rows(fast)
    assert fast.vm.shape[0] > 64 and np.all(fast.mv[:fast.nmv] >= 0)


#: steps anywhere over an MM of many VMAs (made by MANY_SETUP): ranges by VMA number, so that the verbs' searches
#: start far from and next to their answers, and merges run over wide and narrow windows
MANY_STEP = st.one_of(
    st.tuples(st.just("mprotect"), st.integers(0, 599), st.integers(0, 3), st.integers(1, 40), st.booleans()),
    st.tuples(st.just("munmap"), st.integers(0, 599), st.integers(0, 3), st.integers(1, 12), st.booleans()),
    st.tuples(st.just("mmap"), st.integers(0, 599), st.integers(0, 3), st.integers(1, 12), st.booleans()),
    st.tuples(st.just("madvise"), st.integers(0, 599), st.integers(0, 3), st.integers(1, 40),
              st.sampled_from(["dontfork", "dofork", "hugepage", "nohugepage"])),
    st.tuples(st.just("merge"), st.just(0), st.just(0), st.just(0), st.just(False)),
)


def many_vmas(m: FastMachine, count: int) -> None:
    """``count`` mappings side by side, alternately writable (and written) and read-only: nothing merges."""
    addr = BASE * PAGE_SIZE
    for k in range(count):
        n = 1 + k % 3
        m.mmap("t0", n * PAGE_SIZE, addr=addr, write=bool(k % 2), label="ab"[k % 4 // 2])
        if k % 2:
            m.write("t0", addr, bytes([k % 250 + 1]) * PAGE_SIZE)
        addr += n * PAGE_SIZE


def apply_many(m: FastMachine, step: tuple[Any, ...]) -> Any:
    """A MANY_STEP on one machine: its range starts inside VMA number ``step[1]`` (modulo their count)."""
    verb, k, off, n, flag = step
    mm = m.task("t0").mm
    if verb == "merge" or not mm.vmas:
        m._sync(mm)
        m._merge(mm)
        m._publish_changed(mm)
        return None
    v = mm.vmas[k % len(mm.vmas)]
    start = min(v.start + off, v.end - 1)
    try:
        if verb == "mprotect":
            return m.mprotect("t0", start * PAGE_SIZE, n * PAGE_SIZE, True, flag)
        if verb == "munmap":
            return m.munmap("t0", start * PAGE_SIZE, n * PAGE_SIZE)
        if verb == "mmap":
            return m.mmap("t0", n * PAGE_SIZE, addr=None if flag else start * PAGE_SIZE, write=True)
        return m.madvise("t0", start * PAGE_SIZE, n * PAGE_SIZE, flag)
    except Exception as exc:  # the same refusal on both sides
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[3]], ids=[IDS[0], IDS[3]])
@settings(max_examples=15, deadline=None)
@given(steps=st.lists(MANY_STEP, min_size=1, max_size=30))
def test_many_vmas_match_python_control_plane(config: KernelConfig, steps: list[tuple[Any, ...]]) -> None:
    """An MM of 600 VMAs (chromium's hold ~650-860): mprotect, munmap, mmap (MAP_FIXED or new), madvise and merge
    anywhere in it give the Python control plane's VMAs, tables and folios after every step."""
    fast, slow = machines(config)
    for m in (fast, slow):
        many_vmas(m, 600)
    assert state(fast) == state(slow)
    for i, step in enumerate(steps):
        got, want = apply_many(fast, step), apply_many(slow, step)
        assert got == want, (i, step)
        check_rows(fast)
        a, b = state(fast), state(slow)
        for key in b:
            assert a[key] == b[key], (i, step, key)
    assert len(fast.task("t0").mm.vmas) > 100
