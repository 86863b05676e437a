"""run-trace's control-plane steps (mmap, munmap, mprotect, VMA-flag madvise, merge, mremap) as opcodes of the
compiled step interpreter (kprog._control() through kvma's verbs) against the same engine one step at a time: the
whole run-trace JSON and the machine left at the end are the same, failing calls included (they go through
Python, which counts their errno), with room asked for in the middle of a stretch, in all four configurations; a
perturbed control row is caught."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("numba")

from foliosim.fast.sim import kprog, kvma, tracerun
from foliosim.fast.sim import layout as L
from foliosim.kconfig import KernelConfig
from foliosim.live.tracesim import TraceRun
from foliosim.workloads.runtrace import Conversion
from foliosim.workloads.steps import Step
from tests.fastsim.test_runtrace_kprog import CONFIGS, _figures, _run, _state, _trace

_P = "p"
#: a run trace's steps through every control opcode, the failing calls of each verb among them
GIVEN: tuple[Step, ...] = (
    Step("spawn", _P), Step("file", "", ("f1", 64, 0, 0)),
    Step("file", "", ("f2", 200, 2, 0)),  # more than the page cache's first arrays hold
    Step("file", "", ("f1", 4, 0, 0)),  # refused: the name is taken
    Step("file", "", ("f3", 8, 0, 0)), Step("mmap", _P, ("lib2", 8, "file-private", "f3", None, "r", 0)),
    Step("mmap", _P, ("lib3", 50, "file-shared", "f2", None, "rw", 100)), Step("fault", _P, ("lib2", 1, 0)),
    Step("fault", _P, ("lib3", 5, 1)),
    Step("file", "", ("shm1", 40, 2, 1)), Step("file", "", ("shm2", 3, 0, 1)),  # shmem: cached whole at once
    Step("mmap", _P, ("sh", 40, "file-shared", "shm1", None, "rw", 0)), Step("fault", _P, ("sh", 6, 1)),
    Step("fault", _P, ("sh", 9, 0)),
    Step("mmap", _P, ("heap", 64, "anon", None, None, "rw", 0)),  # no address: the unmapped area
    Step("mmap", _P, (0x7000000, 32, "anon", None, [4], "rw", 0)),  # MAP_FIXED, THP orders given
    Step("mmap", _P, ("lib", 16, "file-private", "f1", None, "r", 4)),
    Step("mmap", _P, ("shm", 8, "file-shared", "f1", None, "rw", 0)),
    Step("mmap", _P, ("big", 1024, "anon", None, [9], "rw", 0)),
    *[Step("fault", _P, ("heap", k, 1)) for k in range(16)],
    *[Step("fault", _P, ("lib", k, 0)) for k in range(4)],
    *[Step("fault", _P, ("shm", k, 1)) for k in range(4)],
    *[Step("fault", _P, (0x7000000, k, 1)) for k in range(8)],
    Step("fault", _P, ("big", 3, 1)),
    Step("mprotect", _P, ("heap", 8, 8, "r")), Step("fault", _P, ("heap", 9, 1)),
    Step("mprotect", _P, ("heap", 8, 8, "rw")), Step("merge", _P),
    Step("madvise", _P, ("heap", 0, 16, "dontfork")), Step("madvise", _P, ("heap", 0, 16, "dofork")),
    Step("madvise", _P, ("heap", 16, 16, "hugepage")), Step("fault", _P, ("heap", 20, 1)),
    Step("madvise", _P, ("heap", 16, 16, "nohugepage")), Step("merge", _P),
    Step("mprotect", _P, ("heap", 60, 16, "r")),  # past the end: -ENOMEM
    Step("madvise", _P, ("heap", 60, 16, "dontfork")),  # a hole: -ENOMEM (the mapped part changed)
    Step("munmap", _P, ("heap", 32, 8)), Step("munmap", _P, ("heap", 32, 8)),  # the second: nothing mapped
    Step("munmap", _P, ("big", 0, 1024)),  # a PMD: the zap's gather list grows
    Step("mmap", _P, (0x7000004, 4, "anon", None, None, "rw", 0)),  # MAP_FIXED over faulted pages
    Step("fault", _P, (0x7000004, 1, 1)),
    Step("mremap", _P, ("heap", 8, "moved")), Step("fault", _P, ("moved", 0, 1)),
    Step("mremap", _P, (0x7000000, 4, 0x7100000)), Step("fault", _P, (0x7100000, 1, 0)),
    Step("mremap", _P, ("heap", 8, 0x9000000)),  # the old range is not mapped now: -EFAULT
    Step("mmap", _P, ("bad", 100, "file-private", "f1", None, "r", 0)),  # past the file's end: -EINVAL
    Step("mmap", _P, ("nofile", 4, "file-private", "nope", None, "r", 0)),  # refused: no such file
    Step("munmap", _P, ("nowhere", 0, 4)),  # refused: no such region
    *[Step("mmap", _P, (f"r{k}", 2, "anon", None, None, "rw" if k % 3 else "r", 0)) for k in range(40)],
    *[Step("fault", _P, (f"r{k}", 1, 1)) for k in range(0, 40, 3)],
    Step("fault", _P, ("heap", 61, 1)),  # a page of the VM_DONTFORK VMA: not the child's
    Step("merge", _P), Step("fork", _P, ("c",)),
    Step("fault", "c", ("heap", 61, 1)),
    Step("fault", "c", ("heap", 10, 1)), Step("mmap", "c", ("cheap", 8, "anon", None, None, "rw", 0)),
    Step("fault", "c", ("cheap", 0, 1)), Step("mprotect", "c", ("heap", 8, 8, "r")),
    Step("munmap", "c", ("lib", 0, 16)), Step("merge", "c"), Step("exit", "c"),
    Step("fork", _P, ("d",)), Step("fault", "d", ("heap", 11, 1)), Step("exit", "d"),
    Step("mprotect", _P, ("heap", 10, 2, "rwx")), Step("merge", _P),
    Step("thread", _P, ("t1",)), Step("thread", "t1", ("t2",)), Step("thread", _P, ("t2",)),  # the last refused
    Step("fault", "t1", ("heap", 12, 1)), Step("mmap", "t2", ("tmap", 4, "anon", None, None, "rw", 0)),
    Step("fault", "t2", ("tmap", 0, 1)), Step("exit", "t1"), Step("fork", "t2", ("e",)), Step("thread", "e", ("t3",)),
    Step("fault", "t3", ("heap", 13, 1)), Step("exit", "e"),
    *[Step("fault", _P, ("heap", k, 1)) for k in range(8, 16)],
    Step("vfork", _P, ("v1",)), Step("fault", "v1", ("heap", 14, 0)), Step("exec", "v1"),
    Step("mmap", "v1", ("img", 16, "file-private", "f1", None, "rx", 0)), Step("fault", "v1", ("img", 2, 0)),
    Step("mmap", "v1", ("vheap", 8, "anon", None, None, "rw", 0)), Step("fault", "v1", ("vheap", 1, 1)),
    Step("mprotect", "v1", ("vheap", 0, 4, "r")), Step("merge", "v1"), Step("fault", _P, ("heap", 15, 1)),
    Step("vfork", "v1", ("v2",)), Step("fault", "v1", ("vheap", 5, 1)),  # refused: v1 sleeps in vfork()
    Step("exit", "v2"), Step("vfork", _P, ("v3",)), Step("exec", "v3"), Step("exit", "v3"), Step("exit", "v1"),
    Step("fork", _P, ("x1",)), Step("fault", "x1", ("heap", 12, 1)), Step("exec", "x1"),  # its old MM's last user
    Step("mmap", "x1", ("xh", 4, "anon", None, None, "rw", 0)), Step("fault", "x1", ("xh", 0, 1)),
    Step("exit", "x1"),
    Step("thread", _P, ("t9",)), Step("exec", _P),  # another task of its thread group lives: Python
    Step("mmap", _P, ("late", 4, "anon", None, None, "rw", 0)), Step("fault", _P, ("late", 0, 1)),
    Step("spawn", "q"), Step("mmap", "q", ("qh", 32, "anon", None, None, "rw", 0)),
    *[Step("fault", "q", ("qh", k, 1)) for k in range(0, 32, 3)],
    Step("mprotect", "q", ("qh", 4, 8, "r")), Step("fork", "q", ("q1",)),  # the VMAs changed in the stretch
    Step("fault", "q1", ("qh", 0, 1)), Step("fault", "q1", ("qh", 6, 0)), Step("mprotect", "q", ("qh", 4, 8, "rw")),
    Step("merge", "q"), Step("madvise", "q", ("qh", 20, 4, "dontfork")), Step("madvise", "q", ("qh", 20, 4, "dofork")),
    Step("fork", "q1", ("q2",)), Step("fork", "q", ("q3",)), Step("fault", "q3", ("qh", 3, 1)),
    Step("mmap", "q3", ("q3h", 4, "anon", None, None, "rw", 0)), Step("fault", "q3", ("q3h", 1, 1)),  # forked here
    Step("mprotect", "q3", ("qh", 0, 6, "r")), Step("munmap", "q3", ("qh", 0, 2)), Step("merge", "q3"),
    Step("fork", "q3", ("q4",)), Step("fault", "q4", ("qh", 3, 0)), Step("mmap", "q4", ("q4h", 2, "anon", None, None,
                                                                                     "rw", 0)),
    Step("exit", "q1"), Step("fault", "q2", ("qh", 9, 1)),
    Step("file", "", ("f1", 1, 0, 0)),  # refused: the stretch returns, q4 (forked in the loop) is Python's now
    Step("mprotect", "q4", ("q4h", 0, 2, "r")), Step("mmap", "q4", ("q4i", 2, "anon", None, None, "rw", 0)),
    Step("merge", "q4"), Step("fault", "q4", ("q4i", 0, 1)),
)
#: the steps Python runs: the failing calls (a file whose name is taken among them: the page cache's arrays are
#: grown ahead for the files the program makes, the VMA rows and index for its control steps), the thread whose
#: name is taken, the fault of a task asleep in vfork(), the exit of a vfork child (it wakes its parent), the exec
#: of a task with another task in its thread group (the forks of an MM with a VM_DONTFORK VMA -- the madvise over
#: the hole left one -- run in the loop, the VMA skipped)
PYTHON = Counter({"spawn": 2, "file": 2, "mprotect": 1, "madvise": 1, "mremap": 1, "mmap": 2, "munmap": 1,
                  "thread": 1, "fault": 1, "exit": 1, "exec": 1})


def _given(steps: tuple[Step, ...]) -> Conversion:
    _, conv = _trace("fork-child")

    class Given(Conversion):
        def items(self) -> Iterator[Step]:
            return iter(steps)

    return Given(*[getattr(conv, f) for f in conv.__dataclass_fields__])


def _watched(monkeypatch: pytest.MonkeyPatch) -> tuple[Counter[str], Counter[int]]:
    """Count the steps the stretches hand to Python (by verb) and the room kinds the loop asks for at a control
    step."""
    python: Counter[str] = Counter()
    rooms: Counter[int] = Counter()
    init, call = tracerun.TraceProgram.__init__, kprog.run_program

    def watched_init(self: tracerun.TraceProgram, runner: Any, steps: list[Step], base: int, on_step: Any,
                     races: Any = None) -> None:
        def counted(step: Step, at: int) -> None:
            python[step.verb] += steps != list(tracerun._WARM_STEPS)
            on_step(step, at)

        init(self, runner, steps, base, counted, races)

    def watched_call(*args: Any) -> tuple[int, int]:
        pos, why = call(*args)
        prog, st = args[25], args[28]
        if why == kprog.WHY_ROOM and int(prog[pos, kprog.P_OP]) >= kprog.OP_MMAP:
            rooms[int(st[kprog.S_ROOM])] += 1
        return pos, why

    monkeypatch.setattr(tracerun.TraceProgram, "__init__", watched_init)
    monkeypatch.setattr(kprog, "run_program", watched_call)
    return python, rooms


def _both(steps: tuple[Step, ...], config: KernelConfig) -> tuple[TraceRun, TraceRun]:
    conversion = _given(steps)
    fast, stretches = _run("fork-child", config, conversion=conversion)
    slow, _ = _run("fork-child", config, compiled=False, conversion=conversion)
    assert stretches == 1
    assert _figures(fast) == _figures(slow)
    for run in (fast, slow):  # the Vma objects' anon_vma is a cache of the rows', brought up to date lazily
        m = run.machine
        for mm in m.mms.values():
            m._anon_seen.pop(mm.num, None)
            m._sync(mm)
    assert _state(fast) == _state(slow)
    return fast, slow


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_control_opcodes_like_one_step_at_a_time(monkeypatch: pytest.MonkeyPatch, cfg: str) -> None:
    python, rooms = _watched(monkeypatch)
    fast, slow = _both(GIVEN, CONFIGS[cfg])
    groups = {t.name: (t.pid, t.tgid) for t in fast.machine.tasks.values()}
    assert groups == {t.name: (t.pid, t.tgid) for t in slow.machine.tasks.values()}
    assert groups["t3"][1] != groups["t3"][0]  # a thread: its group's pid
    assert "t2" not in groups and "t9" not in groups  # p's exec ended the other tasks of its group
    assert python == PYTHON  # every other control step ran in the loop
    assert rooms[kprog.RK_ROOM] >= 1  # the munmap of the PMD asked for the zap's room and ran again
    assert fast.rejected == Counter({"mprotect -> -ENOMEM": 1, "madvise -> -ENOMEM": 1, "mremap -> -EFAULT": 1,
                                     "mmap -> -EINVAL": 1, "mmap refused by the simulator": 1,
                                     "munmap refused by the simulator": 1, "file refused by the simulator": 2,
                                     "thread refused by the simulator": 1, "fault refused by the simulator": 1})
    labels = {v.label for mm in fast.machine.mms.values() for v in mm.vmas}
    assert {"heap", "r39", str(0x7000004)} <= labels
    assert [[v.label for v in mm.vmas] for mm in fast.machine.mms.values()] == [
        [v.label for v in mm.vmas] for mm in slow.machine.mms.values()]


@pytest.mark.parametrize("ahead", [True, False])
def test_control_opcodes_room_for_vma_rows(monkeypatch: pytest.MonkeyPatch, ahead: bool) -> None:
    """Many mappings in one stretch: the VMA rows and index are grown ahead, or (``ahead`` off) they run out (the
    verb refuses, Python's own call compacts them) and the loop goes on with the arrays Python made."""
    steps = (Step("spawn", _P), *[Step("mmap", _P, (f"m{k}", 1 + k % 3, "anon", None, None, "rw" if k % 2 else "r",
                                                   0)) for k in range(120)],
             *[Step("fault", _P, (f"m{k}", 0, 1)) for k in range(1, 120, 2)],
             *[Step("mprotect", _P, (f"m{k}", 0, 1, "r")) for k in range(0, 120, 5)],
             *[Step("munmap", _P, (f"m{k}", 0, 1)) for k in range(0, 120, 7)], Step("merge", _P))
    python, _ = _watched(monkeypatch)
    if not ahead:
        monkeypatch.setattr(kprog.ProgramRun, "grow_vma_arrays", lambda self, pos: None)
    _both(steps, KernelConfig())
    refused = python["mmap"] + python["mprotect"] + python["munmap"]
    assert refused == 0 if ahead else 1 <= refused <= 8


def test_encode_control_rows() -> None:
    """The rows of each control step: region, pages, first page or file offset, flags with the label's number,
    the THP mask or the file's number; steps of another form stay OP_OTHER."""
    from foliosim.fast.sim.tracerun import TraceMachine

    m = TraceMachine(KernelConfig(), False)
    steps = [Step("mmap", "a", ("x", 4, "anon", None, [4, 9], "rw", 0)),
             Step("mmap", "a", (512, 2, "file-shared", "f", None, "r+noreserve", 3)),
             Step("mmap", "a", ("s", 4, "shared-anon", None, None, "rw", 0)),
             Step("munmap", "a", ("x", 1, 2)), Step("mprotect", "a", ("x", 0, 4, "rx")),
             Step("madvise", "a", ("x", 0, 4, "hugepage")), Step("madvise", "a", ("x", 0, 4, "dontneed")),
             Step("mremap", "a", ("x", 4, "y")), Step("mremap", "a", ("x", 4, 1024)), Step("merge", "a"),
             Step("mmap", "a", ("z", 4, "anon", None, [1], "rw", 0))]
    prog, _names, regions = kprog.encode(steps)
    files = kprog.encode_control(steps, prog, regions, m)
    assert files == ["f"] and regions == {"x": 0, "y": 2, 512: 1}
    ops = prog[:, kprog.P_OP].tolist()
    assert ops == [kprog.OP_MMAP, kprog.OP_MMAP, kprog.OP_OTHER, kprog.OP_MUNMAP, kprog.OP_MPROTECT, kprog.OP_MADVF,
                   kprog.OP_DONTNEED, kprog.OP_MREMAP, kprog.OP_MREMAP, kprog.OP_MERGE, kprog.OP_OTHER]
    lx, l512 = m.codec.label("x"), kvma.RowCodec.address_label(512)
    assert m.codec.labels[lx] == "x"  # numbered inline: the codec's list follows
    assert l512 < 0 and "512" not in m.codec.label_ids  # an address's label: numbered by it, not interned
    assert prog[0].tolist() == [kprog.OP_MMAP, 0, 0, 0, 4, kprog.MF_READ | kprog.MF_WRITE | kprog.MF_NAMED
                                | kprog.MF_THP | (lx << kprog.MF_LABEL_SHIFT), (1 << 4) | (1 << 9)]
    assert prog[1].tolist() == [kprog.OP_MMAP, 0, 1, 3, 2, kprog.MF_READ | kprog.MF_NORESERVE | kprog.MF_FILE
                                | kprog.MF_SHARED | (l512 << kprog.MF_LABEL_SHIFT), 0]
    assert prog[4, kprog.P_ARG] == 1 | 4 and prog[5, kprog.P_ARG] == kvma.MA_THP and prog[5, kprog.P_FILL] == 1
    assert prog[7, kprog.P_ARG] == 2 and prog[8, kprog.P_ARG] == -1 and prog[8, kprog.P_FIRST] == 1024


def test_encode_control_numbering_in_row_order() -> None:
    """Regions and files are numbered in program order over the rows that become control rows, whatever their verb
    (a region first seen at a munmap, an mprotect or an mremap's destination between mmaps, a file named by an mmap
    before its file step), and a step with too few or too many arguments stays OP_OTHER and numbers nothing."""
    from foliosim.fast.sim.tracerun import TraceMachine

    m = TraceMachine(KernelConfig(), False)
    steps = [Step("munmap", "a", (900, 0, 2)), Step("mmap", "a", (512, 4, "anon", None, None, "rw", 0)),
             Step("mmap", "a", (700, 4, "anon", None, None, "rw")),  # six arguments
             Step("mmap", "a", (900, 2, "file-private", "lib", [4], "r", 7)),
             Step("mprotect", "a", (1024, 0, 1, "r")), Step("mprotect", "a", (800, 0, 1)),  # three arguments
             Step("madvise", "a", (600, 0, 1, "dontfork", 0)),  # five arguments
             Step("mmap", "a", (1024, 8, "anon", None, [4], "rw", 0)), Step("file", "", ("shm", 8, 0, 1)),
             Step("mmap", "a", (2048, 8, "file-shared", "shm", None, "rw", 0)), Step("mremap", "a", (512, 4, "dest")),
             Step("mmap", "a", (4096, 1, "anon", None, None, "rx", 0)), Step("merge", "a"),
             Step("mmap", "a", (8192, 1, "anon", None, None, "bogus", 0))]
    prog, _names, regions = kprog.encode(steps)
    created: dict[int, tuple[str, int, int, bool]] = {}
    files = kprog.encode_control(steps, prog, regions, m, created)
    assert files == ["lib", "shm"] and created == {1: ("shm", 8, 0, True)}
    assert list(regions.items()) == [(900, 0), (512, 1), (1024, 2), (2048, 3), ("dest", 4), (4096, 5)]
    lab = kvma.RowCodec.address_label
    r, w, x = kprog.MF_READ, kprog.MF_WRITE, kprog.MF_EXEC
    other = [kprog.OP_OTHER, 0, 0, 0, 0, 0]
    want = [[kprog.OP_MUNMAP, 0, 0, 2, 0, 0],
            [kprog.OP_MMAP, 1, 0, 4, r | w | (lab(512) << kprog.MF_LABEL_SHIFT), 0], other,
            [kprog.OP_MMAP, 0, 7, 2, r | kprog.MF_FILE | (lab(900) << kprog.MF_LABEL_SHIFT), 0],
            [kprog.OP_MPROTECT, 2, 0, 1, 1, 0], other, other,
            [kprog.OP_MMAP, 2, 0, 8, r | w | kprog.MF_THP | (lab(1024) << kprog.MF_LABEL_SHIFT), 1 << 4],
            [kprog.OP_FILE, 0, 0, 8, 1 << 8, 1],
            [kprog.OP_MMAP, 3, 0, 8, r | w | kprog.MF_FILE | kprog.MF_SHARED | (lab(2048) << kprog.MF_LABEL_SHIFT), 1],
            [kprog.OP_MREMAP, 1, 0, 4, 4, 0],
            [kprog.OP_MMAP, 5, 0, 1, r | x | (lab(4096) << kprog.MF_LABEL_SHIFT), 0],
            [kprog.OP_MERGE, 0, 0, 0, 0, 0], other]
    cols = [kprog.P_OP, kprog.P_REG, kprog.P_FIRST, kprog.P_PAGES, kprog.P_ARG, kprog.P_FILL]
    assert prog[:, cols].tolist() == want
    assert m.codec.labels == [""]  # addresses' labels are not interned


def test_encode_control_make_rows_pinned() -> None:
    """make's recorded steps (2,251 control rows: 1,515 mmaps, 323 merges, 200 mprotects, ...) encode to the rows,
    regions, files, thread names and codec state main's encode_control() gave them (their digest, taken before its
    verbs were reordered)."""
    import gzip
    import hashlib

    from foliosim.fast.sim.tracerun import TraceMachine
    from foliosim.workloads.runtrace import run_trace_steps
    from tests.fastsim.test_score_traces import TRACES

    steps = run_trace_steps(gzip.decompress((TRACES / "make.trace.gz").read_bytes()).decode(), "make")
    m = TraceMachine(KernelConfig(), False)
    prog, names, regions = kprog.encode(steps)
    created: dict[int, tuple[str, int, int, bool]] = {}
    files = kprog.encode_control(steps, prog, regions, m, created, names)
    assert int(np.count_nonzero(prog[:, kprog.P_OP] >= kprog.OP_MMAP)) == 2251
    digest = hashlib.sha256(prog.tobytes())
    digest.update(repr((list(regions.items()), files, list(created.items()), names, m.codec.labels,
                        m.codec.thp_masks)).encode())
    assert digest.hexdigest()[:16] == "48cdf121d0867339"


def test_address_labels_round_trip() -> None:
    """An address's label number (negative, not interned) and an interned label's both come back as their text in
    the Vma objects, address 0 (whose number is not the empty label's 0) included."""
    codec = kvma.RowCodec([])
    addrs = [0, 512, 1 << 35]
    rows = np.zeros((len(addrs) + 2, L.V_LABEL + 1), dtype=np.int64)
    rows[:, L.V_START] = [*addrs, 1 << 36, 1 << 37]
    rows[:, L.V_END] = rows[:, L.V_START] + 4
    rows[:, L.V_THP] = codec.thp(frozenset())
    rows[:, L.V_FILE] = -1  # anonymous
    rows[:, L.V_LABEL] = [*map(codec.address_label, addrs), codec.label("heap"), 0]
    assert [v.label for v in codec.vmas(rows, 1)] == ["0", "512", str(1 << 35), "heap", ""]
    assert codec.labels == ["", "heap"]


def _perturbed(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    original = kprog.encode_control

    def encode_control(steps: list[Step], prog: Any, regions: dict[Any, int], m: Any, *more: Any) -> list[str]:
        files = original(steps, prog, regions, m, *more)
        codes = prog[:, kprog.P_OP]
        if how == "prot":  # every mprotect keeps the write bit
            prog[codes == kprog.OP_MPROTECT, kprog.P_ARG] |= 2
        elif how == "pages":  # every mapping a page longer
            prog[codes == kprog.OP_MMAP, kprog.P_PAGES] += 1
        elif how == "advice":  # MADV_DONTFORK and MADV_DOFORK swapped
            rows = np.flatnonzero(codes == kprog.OP_MADVF)
            flag = prog[rows, kprog.P_ARG] != kvma.MA_THP
            prog[rows[flag], kprog.P_ARG] = kvma.MA_DONTFORK + kvma.MA_DOFORK - prog[rows[flag], kprog.P_ARG]
        elif how == "shmem":  # every file created as a regular file
            prog[codes == kprog.OP_FILE, kprog.P_ARG] &= 255
        elif how == "mremap":  # every move a page further
            rows = np.flatnonzero((codes == kprog.OP_MREMAP) & (prog[:, kprog.P_ARG] < 0))
            prog[rows, kprog.P_FIRST] += 1
        return files

    monkeypatch.setattr(kprog, "encode_control", encode_control)


@pytest.mark.parametrize("how", ["prot", "pages", "advice", "shmem", "mremap"])
def test_perturbed_control_rows_are_caught(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    conversion = _given(GIVEN)
    slow, _ = _run("fork-child", KernelConfig(), compiled=False, conversion=conversion)
    _perturbed(monkeypatch, how)
    fast, stretches = _run("fork-child", KernelConfig(), conversion=conversion)
    assert stretches == 1
    assert _figures(fast) != _figures(slow) or _state(fast) != _state(slow)
