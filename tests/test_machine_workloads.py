"""benchmarks/machine_workloads.py: a generated workload lived as real processes (benchmarks/machine_workload.c).
The flattened program must put each child's steps in the child and the parent's wait where the child exits, refuse
what it cannot live (naming the step), leave out a workload whose folio sizes the THP settings would not give, and
the machine's run must take at least the faults the simulator counts."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import machine_workloads as mw

from foliosim.host.thp import ThpSettings
from foliosim.workloads.generators import build_workload
from foliosim.workloads.steps import Step

needs_cc = pytest.mark.skipif(sys.platform != "linux" or shutil.which("cc") is None,
                              reason="Linux processes and a C compiler")


def _anon(region: str, pages: int, order: int) -> Step:
    return Step("mmap", "P", (region, pages, "anon", None, (order,) if order else (), "rw", 0))


def test_flatten_puts_a_child_in_its_fork_and_the_wait_at_its_exit() -> None:
    steps = [Step("spawn", "P"), _anon("heap", 32, 0), _anon("thp", 512, 9), Step("write", "P", ("heap", 0, 32)),
             Step("fork", "P", ("C",)), Step("write", "C", ("heap", 3, 2)), Step("write", "P", ("heap", 5, 1)),
             Step("khugepaged", "P"), Step("read", "C", ("thp", 0, 4)), Step("exit", "C"),
             Step("madvise", "P", ("heap", 0, 8, "dontneed")), Step("fork", "P", ("C",)), Step("exit", "C")]
    program = mw.flatten(steps)
    assert program.text.splitlines() == [
        "M 0 32 2", "M 1 512 1", "W 0 0 32",
        "F 1", "W 0 3 2", "R 1 0 4", "X",  # the child's own steps, in the child
        "W 0 5 1", "J 1",  # the parent goes on while the child runs, and waits where the child exits
        "D 0 0 8",
        "F 2", "X", "J 2",  # the name C again: a new child
    ]
    assert program.orders == {"heap": 0, "thp": 9}


@pytest.mark.parametrize(("steps", "message"), [
    ([Step("spawn", "P"), Step("spawn", "Q")], "step 2: a second spawned task"),
    ([Step("spawn", "P"), Step("thread", "P", ("T",))], "step 2: thread has no machine counterpart"),
    ([Step("spawn", "P"), _anon("heap", 8, 0), Step("madvise", "P", ("heap", 0, 8, "dontfork"))],
     "step 3: MADV_DONTFORK"),
    ([Step("spawn", "P"), Step("write", "Q", ("heap", 0, 1))], "step 2: write by 'Q', which is not running"),
    ([Step("spawn", "P"), Step("mmap", "P", ("lib", 8, "file-private", "libc", None, "r", 0))],
     "step 2: mmap of a file-private r mapping"),
])
def test_flatten_refuses_what_it_cannot_live_naming_the_step(steps: list[Step], message: str) -> None:
    with pytest.raises(mw.NotMeasurable, match=message):
        mw.flatten(steps)


def _settings(top: str, **sizes: str) -> ThpSettings:
    orders = {"64kB": 4, "2048kB": 9}
    return ThpSettings(enabled=top, shmem_enabled="never", anon={orders[k]: v for k, v in sizes.items()})


def test_thp_problem_names_the_setting_a_workload_needs() -> None:
    mthp = mw.Program("", {"heap": 4})
    problem = mw.thp_problem(mthp, _settings("madvise", **{"64kB": "never", "2048kB": "inherit"}), 9)
    assert problem is not None and "order-4" in problem and "--thp 64K=always" in problem
    assert mw.thp_problem(mthp, _settings("madvise", **{"64kB": "always", "2048kB": "inherit"}), 9) is None
    # the kernel tries the biggest order allowed first: order 9 everywhere is not an order-4 heap
    assert mw.thp_problem(mthp, _settings("always", **{"64kB": "always", "2048kB": "inherit"}), 9) is not None
    pmd = mw.Program("", {"heap": 9})
    assert mw.thp_problem(pmd, _settings("madvise", **{"64kB": "never", "2048kB": "inherit"}), 9) is None
    assert mw.thp_problem(pmd, _settings("never", **{"64kB": "never", "2048kB": "inherit"}), 9) is not None
    assert mw.thp_problem(mw.Program("", {"heap": 0}), _settings("never"), 9) is None  # small pages: no setting


@needs_cc
def test_the_machine_takes_at_least_the_simulated_faults() -> None:
    from simulate import run_fast

    steps = build_workload("fork-child", {"pages": 64, "order": 0, "rounds": 3, "child_writes": 4,
                                          "parent_writes": 6}, seed=1)
    program = mw.flatten(steps)
    lived = mw.live(program, mw.binary())
    simulated = run_fast(steps, False)["faults"]
    assert simulated >= 64  # the parent's first touch of every page, at least
    assert lived.faults >= simulated  # every simulated fault is a real one; the machine adds its own (stack, exit)
    assert lived.wall_s > 0 and lived.cpu_s >= 0


@needs_cc
def test_a_bad_program_fails_with_the_line_named() -> None:
    with pytest.raises(RuntimeError, match=r"pages outside the region \(line 2\)"):
        mw.live(mw.Program("M 0 4 2\nW 0 2 8\n", {}), mw.binary())
