"""Workload generators: deterministic by seed, valid, and bad input named clearly."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foliosim.evaluate.runner import WorkloadRunner
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.workloads import WORKLOADS, WorkloadError, build_workload, dump_steps, load_steps
from foliosim.workloads.generators import Builder


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



def test_cells_check_parameters_without_building(monkeypatch: pytest.MonkeyPatch) -> None:
    """make_cell() checks a generated workload's parameters as build_workload() does (the same errors), without
    building its steps: those are built once, when the cell runs."""
    from foliosim.evaluate import cell

    def no_build(*_args: object) -> None:
        raise AssertionError("make_cell built the workload")

    monkeypatch.setattr(cell, "build_workload", no_build)
    spec = cell.make_cell("kernel", "fork-child", {"pages": 4096}, 1)
    assert dict(spec.params)["pages"] == 4096 and dict(spec.params)["rounds"] == 5  # defaults merged
    with pytest.raises(WorkloadError, match="'prefork' has no parameter 'childs'"):
        cell.make_cell("kernel", "prefork", {"childs": 3}, 1)
    with pytest.raises(WorkloadError, match="parameter order must be"):
        cell.make_cell("kernel", "fork-child", {"order": 1}, 1)
    with pytest.raises(WorkloadError, match="parameter pages must be a whole number >= 1, not 0"):
        cell.make_cell("kernel", "fork-child", {"pages": 0}, 1)

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


#: sha256 (first 16 hex digits) of each workload's steps (``Step.to_json`` as JSON) at seed 0, default parameters
#: (mix with 600 operations, so that it unmaps): the evaluator's results are keyed by (workload, parameters, seed),
#: so a generator change that draws differently must be a deliberate one. Computed before Builder.run() stopped
#: listing the region's pages (2026-12-02) and unchanged by it.
PINNED = {
    "fork-child": "a15465b4971cf639", "fork-exec": "ddb9d2851a42240f", "handover": "253f5158712bffff",
    "prefork": "94ddf2a4ace89aca", "snapshot": "a0f0ed753e8f3f19", "shared-file": "f0c94795de1b768e",
    "mix": "65a09699cab3c873",
}


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_steps_of_a_seed_are_pinned(name: str) -> None:
    steps = build_workload(name, {"ops": 600} if name == "mix" else None, 0)
    digest = hashlib.sha256(json.dumps([s.to_json() for s in steps]).encode()).hexdigest()[:16]
    assert digest == PINNED[name], f"{name}: the generator draws differently for seed 0"


def _listed_run(b: Builder, task: str, region: str, longest: int) -> tuple[int, int] | None:
    """Builder.run() as it was written first: the mapped pages listed, one drawn from the list."""
    holes = b.holes.get((task, region), set())
    pages = [p for p in range(b.maps[task][region]) if p not in holes]
    if not pages:
        return None
    first = b.rng.choice(pages)
    count = 1
    limit = b.maps[task][region]
    while count < longest and first + count < limit and first + count not in holes:
        count += 1
    return first, b.rng.randint(1, count)


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 80), holes=st.sets(st.integers(0, 100), max_size=90), longest=st.integers(1, 9),
       seed=st.integers(0, 2**32 - 1))
def test_run_draws_as_the_listed_pages_did(limit: int, holes: set[int], longest: int, seed: int) -> None:
    """Builder.run() finds the k-th mapped page by counting holes: the same page, count and random state as
    drawing from the listed pages (holes beyond the region's end, a region all holes, and none included)."""
    fast, listed = Builder(random.Random(seed)), Builder(random.Random(seed))
    for b in (fast, listed):
        b.maps["T"] = {"r": limit}
        if holes:
            b.holes[("T", "r")] = set(holes)
    for _ in range(4):
        assert fast.run("T", "r", longest) == _listed_run(listed, "T", "r", longest)
        assert fast.rng.getstate() == listed.rng.getstate()
