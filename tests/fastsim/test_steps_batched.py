"""The batched workload runner (foliosim.fast.sim.steps): runs of reads and writes converted at once give the
reference runner's results, and a step it cannot resolve fails with the step named."""

from __future__ import annotations

import pytest

from foliosim.kconfig import KernelConfig
from foliosim.workloads.steps import Step, WorkloadError

pytest.importorskip("numba")


def _anon_only(steps: list[Step]) -> list[Step]:
    return [s for s in steps if not (s.verb == "file" or (s.verb == "mmap" and s.args[2] != "anon")
                                     or (s.verb in ("read", "write", "madvise") and s.args[0] == "lib"))]


@pytest.mark.parametrize("batch", [7, 4096])
def test_prefork_workload_matches_reference(batch: int) -> None:
    """Long-lived workers (many tasks alive, accesses of several tasks interleaved in one run) on both runners."""
    from foliosim.evaluate.runner import WorkloadRunner
    from foliosim.fast.sim.engine import FastMachine
    from foliosim.fast.sim.steps import FastWorkloadRunner
    from foliosim.fast.sim.timeline import fast_state, reference_state
    from foliosim.vm.machine import Machine, MachineOptions
    from foliosim.workloads.generators import build_workload

    params = {"pages": 256, "order": 4, "children": 4, "requests": 60, "parent_write_rate": 0.2, "probe_rate": 0}
    steps = _anon_only(build_workload("prefork", params, seed=3))
    ref = Machine(KernelConfig(), MachineOptions(keep_events=False))
    WorkloadRunner(ref).run(steps)
    fast = FastMachine(KernelConfig(), MachineOptions())
    stats = FastWorkloadRunner(fast, batch=batch).run(steps)
    assert stats.steps == len(steps)
    assert ref.counters["fault"] == fast.counters["fault"] > 50
    assert ref.trace == fast.trace
    assert ref.cow_decisions == fast.cow_decisions
    assert reference_state(ref) == fast_state(fast)


def _run(steps: list[Step]) -> None:
    from foliosim.fast.sim.engine import FastMachine
    from foliosim.fast.sim.steps import FastWorkloadRunner
    from foliosim.vm.machine import MachineOptions

    FastWorkloadRunner(FastMachine(KernelConfig(), MachineOptions())).run(steps)


BASE = [Step("spawn", "P"), Step("mmap", "P", ("heap", 16, "anon", None, None, "rw", 0)),
        Step("write", "P", ("heap", 0, 4))]


@pytest.mark.parametrize(("extra", "message"), [
    ([Step("write", "Q", ("heap", 0, 1))], r"step 4 \(write Q\): no task 'Q'"),
    ([Step("read", "P", ("nowhere", 0, 1))], r"step 4 \(read P\): unknown region 'nowhere'"),
    ([Step("vfork", "P", ("C",)), Step("write", "C", ("heap", 0, 1)), Step("write", "P", ("heap", 1, 1))],
     r"step 6 \(write P\): task 'P' sleeps in vfork"),
    ([Step("fork", "P", ("C",)), Step("exit", "C"), Step("write", "C", ("heap", 0, 1))],
     r"step 6 \(write C\): no task 'C'"),
])
def test_unresolvable_access_names_the_step(extra: list[Step], message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        _run([*BASE, *extra])


def test_region_mapped_mid_run_and_vfork_parent_resumes() -> None:
    """A region named by a later mmap, and a vfork parent that runs again after its child exits, resolve."""
    from foliosim.fast.sim.engine import FastMachine
    from foliosim.fast.sim.steps import FastWorkloadRunner
    from foliosim.vm.machine import MachineOptions

    steps = [*BASE, Step("vfork", "P", ("C",)), Step("write", "C", ("heap", 4, 2)), Step("exit", "C"),
             Step("write", "P", ("heap", 6, 1)), Step("mmap", "P", ("more", 4, "anon", None, None, "rw", 0)),
             Step("write", "P", ("more", 0, 4))]
    m = FastMachine(KernelConfig(), MachineOptions())
    FastWorkloadRunner(m).run(steps)
    assert m.counters["fault"] == 4 + 2 + 1 + 4


@pytest.mark.parametrize("order", [0, 4])
def test_fork_and_exit_without_a_trace_and_with_the_fast_oracle_match_the_reference(order: int) -> None:
    """The path compare and the benchmarks take (no rmap trace, the fast oracle on; fork's inlined small-folio
    copy and exit's inlined zap) leaves the reference's folios, MMs and contents (the differential tests cover
    these kernels with the trace recorded)."""
    from foliosim.evaluate.runner import WorkloadRunner
    from foliosim.fast.sim.engine import FastMachine
    from foliosim.fast.sim.steps import FastWorkloadRunner
    from foliosim.fast.sim.timeline import fast_state, reference_state
    from foliosim.vm.machine import Machine, MachineOptions
    from foliosim.workloads.generators import build_workload

    params = {"pages": 512, "order": order, "rounds": 12, "child_writes": 12, "parent_writes": 24, "probe_rate": 0}
    steps = build_workload("fork-child", params, seed=5)
    ref = Machine(KernelConfig(), MachineOptions(keep_events=False))
    WorkloadRunner(ref).run(steps)
    fast = FastMachine(KernelConfig(), MachineOptions(), record=False, reference=False, fast_oracle=True)
    FastWorkloadRunner(fast).run(steps)
    assert ref.counters["fault"] == fast.counters["fault"] > 100
    assert ref.counters["fork"] == fast.counters["fork"] == 12
    assert reference_state(ref) == fast_state(fast)
