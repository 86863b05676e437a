"""Probe, consumers and cells: scoring against exact, unsafe decisions and the isolation oracle."""

from __future__ import annotations

import pytest

from foliosim.evaluate.cell import make_cell, run_cell
from foliosim.evaluate.probe import Probe
from foliosim.evaluate.runner import WorkloadRunner
from foliosim.kconfig import KernelConfig
from foliosim.schemes import make_design
from foliosim.system import RmapSystem
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.workloads import WORKLOADS, build_workload, load_steps
from foliosim.workloads.steps import Step


def totals(rows: list[tuple[str, str, int, int, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric, _c, _o, _n, value in rows:
        out[metric] = out.get(metric, 0) + value
    return out


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_sound_designs_make_no_unsafe_decision_and_exact_is_never_wrong(workload: str) -> None:
    for design in ("kernel", "exact", "slots:3", "stopped"):
        t = totals(run_cell(make_cell(design, workload, None, 2)).rows)
        assert t.get("unsafe", 0) == 0 and t.get("oracle_leaks", 0) == 0 and t.get("false_exclusive", 0) == 0, design
        assert t["checks"] > 0, f"{workload}: no consumer check at all"
        if design == "exact":
            assert t.get("false_shared", 0) == 0 and t.get("avoidable", 0) == 0
            assert t.get("avoidable_copies", 0) == 0


def test_kernel_hook_changes_nothing_by_default() -> None:
    """The simulator with the kernel design plugged in makes the same rmap calls as without a hook."""
    steps = build_workload("mix", None, 5)
    plain = Machine(options=MachineOptions(keep_events=False))
    WorkloadRunner(plain, None).run(steps)
    hooked = Machine(options=MachineOptions(keep_events=False))
    probe = Probe(hooked, make_design("kernel", hooked.config))
    WorkloadRunner(hooked, probe).run(steps)
    assert plain.trace == hooked.trace
    assert plain.counters == hooked.counters
    assert probe.tally.total("false_exclusive") == 0


LEAK = """
{"verb": "spawn", "task": "P"}
{"verb": "mmap", "task": "P", "args": ["heap", 16, "anon", null, [4], "rw", 0]}
{"verb": "write", "task": "P", "args": ["heap", 0, 16]}
{"verb": "fork", "task": "P", "args": ["C"]}
{"verb": "write", "task": "C", "args": ["heap", 0, 1]}
{"verb": "write", "task": "P", "args": ["heap", 0, 1]}
{"verb": "write", "task": "C", "args": ["heap", 1, 1]}
{"verb": "write", "task": "P", "args": ["heap", 1, 1]}
{"verb": "write", "task": "C", "args": ["heap", 2, 1]}
{"verb": "write", "task": "P", "args": ["heap", 2, 1]}
{"verb": "write", "task": "C", "args": ["heap", 3, 1]}
{"verb": "write", "task": "P", "args": ["heap", 3, 1]}
{"verb": "write", "task": "C", "args": ["heap", 4, 1]}
{"verb": "write", "task": "P", "args": ["heap", 4, 1]}
{"verb": "write", "task": "C", "args": ["heap", 5, 1]}
{"verb": "write", "task": "P", "args": ["heap", 5, 1]}
{"verb": "write", "task": "C", "args": ["heap", 6, 1]}
{"verb": "write", "task": "P", "args": ["heap", 6, 1]}
{"verb": "write", "task": "C", "args": ["heap", 7, 1]}
{"verb": "write", "task": "P", "args": ["heap", 7, 1]}
{"verb": "write", "task": "P", "args": ["heap", 12, 1]}
{"verb": "read", "task": "C", "args": ["heap", 12, 1]}
"""


@pytest.mark.parametrize("design", ["legacy", "kernel", "exact", "stopped", "slots:2"])
def test_unsafe_reuse_is_counted_and_the_isolation_oracle_agrees(design: str) -> None:
    """Both MMs keep pages 8..15 of a 16-page mTHP, page 0 is gone: legacy guesses "exclusive".

    The parent's write to page 12 then reuses a page the child still maps: the
    probe counts an unsafe reuse and the isolation oracle sees the child read
    the parent's data. Sound designs copy, and the oracle stays quiet.
    """
    result = run_cell(make_cell(design, "file:leak", None, 1, oracle="every", workload_text=LEAK, mode="closed"))
    t = totals(result.rows)
    unsafe, leaks = t.get("unsafe", 0), t.get("oracle_leaks", 0)
    if design == "legacy":
        assert unsafe == 1 and leaks >= 1, result.notes
        assert any("leak" in note for note in result.notes)
    else:
        assert unsafe == 0 and leaks == 0, result.notes
    assert (unsafe > 0) == (leaks > 0)
    # Open loop (kernel drives, nothing leaks): the design still answers "exclusive" on that question, and
    # the decision it would lead to is counted unsafe; the driving run's oracle stays quiet.
    paired = totals(run_cell(make_cell(design, "file:leak", None, 1, oracle="every", workload_text=LEAK)).rows)
    assert paired.get("unsafe", 0) == (1 if design == "legacy" else 0)
    assert paired.get("oracle_leaks", 0) == 0


def test_the_leak_is_an_rmap_trace_that_replays() -> None:
    from foliosim.trace.replay import replay
    from tests.evalhelpers import trace_text

    machine = Machine(options=MachineOptions(keep_events=False))
    probe = Probe(machine, make_design("legacy", machine.config), oracle="every")
    WorkloadRunner(machine, probe).run(load_steps(LEAK))
    assert probe.tally.total("oracle_leaks") >= 1
    records = list(replay(trace_text(machine.trace).splitlines(), KernelConfig(), False))
    assert records and all("error" not in r for r in records)
    RmapSystem()  # the same ops are valid for the core


def test_khugepaged_and_numa_decisions() -> None:
    """Right after a fork every PTE maps a shared folio: exact aborts the collapse; after the child exits it
    collapses. The kernel answers the same here (two MMs: tracked exactly)."""
    steps = load_steps("""
{"verb": "spawn", "task": "P"}
{"verb": "mmap", "task": "P", "args": ["heap", 512, "anon", null, [4], "rw", 0]}
{"verb": "write", "task": "P", "args": ["heap", 0, 512]}
{"verb": "fork", "task": "P", "args": ["C"]}
{"verb": "khugepaged", "task": "P"}
{"verb": "numa", "task": "P", "args": ["heap"]}
{"verb": "exit", "task": "C"}
{"verb": "khugepaged", "task": "P"}
{"verb": "numa", "task": "P", "args": ["heap"]}
""")
    for design in ("kernel", "exact", "stopped"):
        machine = Machine(options=MachineOptions(keep_events=False))
        probe = Probe(machine, make_design(design, machine.config))
        WorkloadRunner(machine, probe).run(steps)
        probe.finish()
        assert probe.tally.total("decisions", "khugepaged") == 2
        assert probe.tally.total("decisions", "numa_migrate") == 64  # 32 folios, twice
        assert probe.tally.total("unsafe") == 0 and probe.tally.total("avoidable") == 0
        assert probe.tally.total("checks", "khugepaged") == 64
        assert probe.tally.total("exact_shared", "khugepaged") == 32


def test_stopped_pays_avoidable_copies_after_a_third_mm() -> None:
    steps = [Step("spawn", "P"), Step("mmap", "P", ("heap", 16, "anon", None, (4,), "rw", 0)),
             Step("write", "P", ("heap", 0, 16)), Step("fork", "P", ("C",)), Step("fork", "P", ("D",)),
             Step("exit", "C"), Step("exit", "D"), Step("write", "P", ("heap", 0, 16))]
    copies = {}
    for design in ("kernel", "stopped", "exact"):
        machine = Machine(options=MachineOptions(keep_events=False))
        probe = Probe(machine, make_design(design, machine.config))
        WorkloadRunner(machine, probe).run(steps)
        copies[design] = (probe.tally.total("cow_copies"), probe.tally.total("avoidable_copies"))
    assert copies["exact"] == (0, 0) and copies["kernel"] == (0, 0)
    # Every copy but the last is avoidable; the last page is copied because the old folio is then mapped
    # once (the "mapcount <= 1" rule, not a sharing question).
    assert copies["stopped"] == (16, 15)


def test_cells_are_deterministic_and_ids_stable() -> None:
    a = make_cell("kernel", "handover", {"helpers": 2}, 4)
    b = make_cell("kernel", "handover", {"helpers": 2}, 4)
    assert a.cell_id == b.cell_id
    assert a.cell_id != make_cell("kernel", "handover", {"helpers": 2}, 5).cell_id
    assert a.cell_id != make_cell("stopped", "handover", {"helpers": 2}, 4).cell_id
    assert run_cell(a).rows == run_cell(b).rows
    with pytest.raises(ValueError, match="oracle"):
        make_cell("kernel", "mix", None, 1, oracle="sometimes")
    with pytest.raises(ValueError, match="unknown design"):
        make_cell("kernal", "mix", None, 1)


def test_workload_text_digest_is_sha256_and_asked_once_per_text() -> None:
    """A workload file's digest (its cells' identity, the key of its checks) is the SHA-256 of its text, computed
    once for a text however many cells ask."""
    import hashlib

    from foliosim.evaluate.cell import file_workload, text_sha256

    text = LEAK + "\n" * 3  # a text no other test asked for
    want = hashlib.sha256(text.encode()).hexdigest()
    before = text_sha256.cache_info()
    specs = [make_cell(design, file_workload("leak", text), None, 1, workload_text=text)
             for design in ("kernel", "exact", "legacy")]
    assert file_workload("leak", text) == f"file:leak@{want[:12]}" and text_sha256(text) == want
    assert {spec.run_identity()["workload_sha256"] for spec in specs} == {want}
    after = text_sha256.cache_info()
    assert after.misses == before.misses + 1 and after.hits > before.hits
