"""Workload generators: deterministic by seed, valid, and bad input named clearly."""

from __future__ import annotations

import pytest

from foliosim.evaluate.runner import WorkloadRunner
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.workloads import WORKLOADS, WorkloadError, build_workload, dump_steps, load_steps


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_same_seed_same_steps_other_seed_other_steps(name: str) -> None:
    a, b, c = build_workload(name, None, 7), build_workload(name, None, 7), build_workload(name, None, 8)
    assert a == b
    assert a != c, f"{name}: the seed changes nothing"
    assert load_steps(dump_steps(a)) == a


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_every_step_is_valid_and_the_oracle_is_happy(name: str) -> None:
    machine = Machine(options=MachineOptions(keep_events=False, check=False))
    runner = WorkloadRunner(machine, strict=True)
    stats = runner.run(build_workload(name, None, 3))
    assert stats.skipped == 0
    assert not stats.errors.get("SIGSEGV"), stats.errors
    assert machine.check() == []
    assert machine.counters["fork"] or name == "shared-file"


def test_parameters_are_validated() -> None:
    with pytest.raises(WorkloadError, match="no parameter 'childs'"):
        build_workload("prefork", {"childs": 3}, 1)
    with pytest.raises(WorkloadError, match="unknown workload"):
        build_workload("forkbomb", None, 1)
    with pytest.raises(WorkloadError, match="order must be"):
        build_workload("fork-child", {"order": 1}, 1)
    more = build_workload("prefork", {"children": 8}, 1)
    assert sum(s.verb == "fork" for s in more) > sum(s.verb == "fork" for s in build_workload("prefork", None, 1))


def test_bad_workload_files_name_the_line() -> None:
    with pytest.raises(WorkloadError, match="line 2: not JSON"):
        load_steps('{"verb": "spawn", "task": "a"}\n{nope\n')
    with pytest.raises(WorkloadError, match="line 1: unknown verb 'jump'"):
        load_steps('{"verb": "jump", "task": "a"}')
    with pytest.raises(WorkloadError, match="mmap kind"):
        load_steps('{"verb": "mmap", "task": "a", "args": ["r", 4, "weird", null, null, "rw", 0]}')
    with pytest.raises(WorkloadError, match="takes 3 args"):
        load_steps('{"verb": "write", "task": "a", "args": ["r"]}')


def test_strict_runner_names_the_failing_step() -> None:
    machine = Machine()
    steps = load_steps('{"verb": "spawn", "task": "a"}\n{"verb": "write", "task": "a", "args": ["heap", 0, 1]}')
    with pytest.raises(WorkloadError, match=r"step 2 .*unknown region 'heap'"):
        WorkloadRunner(machine).run(steps)
    lenient = WorkloadRunner(Machine(), strict=False).run(steps)
    assert lenient.skipped == 1
