"""Differential tests of the compiled process simulator against the reference (issue 13).

Every shipped scenario and random scenario programs run on both engines in all four kernel configurations;
their timelines (foliosim.fast.sim.timeline: every CoW decision with its rule, every rmap operation, every
folio's fields and AnonExclusive bits, every MM's page tables and every present page's contents, after every
line) must be equal. A mutant of the fast engine (large-folio reuse without the shared-bit test) must be caught.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

pytest.importorskip("numba")

from hypothesis import given, settings
from hypothesis import strategies as st

from foliosim.fast.sim.engine import Unsupported
from foliosim.fast.sim.layout import MUTANT_NO_SHARED_TEST
from foliosim.fast.sim.scenario import unsupported_reason
from foliosim.fast.sim.timeline import fast_timeline, first_difference, reference_timeline
from foliosim.kconfig import KernelConfig
from foliosim.vm.scenario import parse

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted([*ROOT.glob("examples/*.scenario"), *ROOT.glob("examples/live/*.scenario")])
CONFIGS = [KernelConfig(64, False), KernelConfig(64, True), KernelConfig(32, False), KernelConfig(32, True)]
IDS = ["64", "64-nopmc", "32", "32-nopmc"]


def _supported(path: Path) -> bool:
    return unsupported_reason(parse(path.read_text())) is None


SUPPORTED = [p for p in SCENARIOS if _supported(p)]


def assert_same(text: str, config: KernelConfig, what: str) -> None:
    ref = reference_timeline(text, config)
    fast = fast_timeline(text, config)
    diff = first_difference(ref, fast)
    assert diff is None, f"{what} ({config.describe()}): the engines differ at {diff}"
    assert ref.lines, f"{what}: no line ran"


def test_most_shipped_scenarios_run_on_the_fast_engine() -> None:
    """The fast engine is not vacuously equal: it runs most shipped scenarios, and refuses the rest by name."""
    assert len(SUPPORTED) >= 30, [p.name for p in SUPPORTED]
    for path in SCENARIOS:
        if path not in SUPPORTED:
            with pytest.raises(Unsupported, match=r"line \d+: "):
                fast_timeline(path.read_text(), KernelConfig())


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_shipped_scenarios(config: KernelConfig) -> None:
    for path in SUPPORTED:
        assert_same(path.read_text(), config, path.name)


# ----------------------------------------------------------------------------- random programs
SIZES = ("4K", "16K", "36K", "64K", "128K", "2M", "4M")


FILE_SIZES = ("16K", "64K", "128K")


def program(seed: int, files: bool = False) -> str:
    """A random scenario over anonymous private memory: tasks, forks, threads, exec, exits, writes (whole and
    partial pages), reads, munmap, mprotect, madvise (MADV_COLD/PAGEOUT splits included), pins, vmsplice,
    clear_refs, mmgrab/mmget holders, mremap, stats, pagemap. With ``files``, also regular files and shmem
    objects (large page-cache folios included) mapped private and shared, and MAP_SHARED|MAP_ANONYMOUS memory."""
    rng = random.Random(seed)
    lines = []
    objects: list[tuple[str, int, bool]] = []  # (name, pages, shmem)
    if files:
        frng = random.Random(seed ^ 0x5EED)
        for k in range(frng.randint(1, 3)):
            size = frng.choice(FILE_SIZES)
            shmem = frng.random() < 0.5
            order = frng.choice([0, 0, 2, 3, 4])
            lines.append(f"file F{k} {size} {'shmem ' if shmem else ''}order={order} fill={frng.randrange(256):#x}")
            objects.append((f"F{k}", int(size[:-1]) // 4, shmem))
    thp = rng.choice(["", "thp=2", "thp=4", "thp=9", "thp=2,4,9", "thp=3,5"])
    zero = rng.choice(["", "use_zero_page=0"])
    if thp or zero:
        lines.insert(0, f"option {thp} {zero}".strip())
    lines.append("spawn T0")
    tasks = ["T0"]
    regions: list[tuple[str, int]] = []
    pins: list[str] = []
    holders: list[str] = []
    n = 0
    for _ in range(rng.randint(10, 40)):
        n += 1
        roll = rng.random()
        task = rng.choice(tasks) if tasks else None
        if task is None:
            break
        if roll < 0.08 or not regions:
            size = rng.choice(SIZES)
            name = f"r{n}"
            opt = rng.choice(["", "", " thp=4", " thp=9", " thp=never", " prot=r"])
            pages = {"K": 1, "M": 256}[size[-1]] * int(size[:-1]) // 4
            kind = rng.random() if files else 1.0
            if kind < 0.2:
                lines.append(f"mmap {task} {name} {size} anon shared{opt}")
            elif kind < 0.6:
                obj, opages, shmem = rng.choice(objects)
                first = rng.randrange(opages)
                pages = rng.randint(1, opages - first)
                how = rng.choice(["shared", "private"])
                lines.append(f"mmap {task} {name} {pages * 4}K {'shmem' if shmem else 'file'}={obj} "
                             f"offset={first * 4}K {how}{rng.choice(['', '', ' prot=r'])}")
            else:
                lines.append(f"mmap {task} {name} {size} anon private{opt}")
            regions.append((name, pages))
            continue
        name, pages = rng.choice(regions)
        first = rng.randrange(pages)
        count = rng.randint(1, min(pages - first, rng.choice([1, 4, 16, 600])))
        where = f"{name}+{first * 4}K" if first else name
        if roll < 0.50:
            if rng.random() < 0.15:
                lines.append(f"write {task} {name}+{first * 4096 + rng.randrange(4000)} \"hello\"")
            else:
                lines.append(f"write {task} {where} {count * 4}K {rng.randrange(1, 256):#x}")
        elif roll < 0.58:
            lines.append(f"read {task} {where} {count * 4}K")
        elif roll < 0.70 and len(tasks) < 6:
            child = f"T{n}"
            lines.append(f"fork {task} {child}")
            tasks.append(child)
        elif roll < 0.73 and len(tasks) < 6:
            child = f"T{n}"
            lines.append(f"thread {task} {child}")
            tasks.append(child)
        elif roll < 0.78 and len(tasks) > 1:
            lines.append(f"exit {task}")
            tasks.remove(task)
        elif roll < 0.80:
            lines.append(f"exec {task}")
        elif roll < 0.84:
            lines.append(f"munmap {task} {where} {count * 4}K")
        elif roll < 0.88:
            lines.append(f"mprotect {task} {where} {count * 4}K {rng.choice(['r', 'rw'])}")
        elif roll < 0.93:
            advice = rng.choice(["dontneed", "dontneed", "cold", "pageout", "hugepage", "nohugepage", "dontfork",
                                 "dofork"])
            lines.append(f"madvise {task} {where} {count * 4}K {advice}")
        elif roll < 0.97:
            pin = f"pin{n}"
            if rng.random() < 0.3:
                lines.append(f"vmsplice {task} {pin} {where} {min(count, 20) * 4}K")
            else:
                lines.append(f"pin {task} {pin} {where} {min(count, 8) * 4}K {rng.choice(['ro', 'rw'])} "
                             f"{rng.choice(['longterm', 'short'])}")
            pins.append(pin)
        elif pins:
            lines.append(f"unpin {pins.pop(rng.randrange(len(pins)))}")
        elif rng.random() < 0.25:
            target = 0x40000000 + n * 0x400000 + rng.choice([0, 0, 4096, 0x200000])
            lines.append(f"mremap {task} {where} {count * 4}K {target:#x}")
        elif rng.random() < 0.2:
            lines.append(f"clear_refs {task}")
        elif rng.random() < 0.2:
            holder = f"h{n}"
            lines.append(f"{rng.choice(['grab', 'mmget'])} {holder} {task}")
            holders.append(holder)
        elif holders and rng.random() < 0.3:
            lines.append(f"release {holders.pop(rng.randrange(len(holders)))}")
        elif rng.random() < 0.5:
            lines.append(f"stats {task}")
        else:
            lines.append(f"pagemap {task} {where} {min(count, 64) * 4}K")
    lines.append("check")
    return "\n".join(lines) + "\n"


def same_in_every_config(seed: int, files: bool) -> None:
    """The random program of ``seed`` (with files, shmem and shared mappings when ``files``) gives equal
    timelines on both engines in all four configurations; the seed and program are in the failure message."""
    text = program(seed, files=files)
    kind = "random file program" if files else "random program"
    for config in CONFIGS:
        assert_same(text, config, f"{kind} seed {seed}:\n{text}")


@settings(max_examples=12, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1))
def test_random_programs(seed: int) -> None:
    same_in_every_config(seed, files=False)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1))
def test_random_file_programs(seed: int) -> None:
    """Random programs with files, shmem objects and shared mappings, in all four configurations."""
    same_in_every_config(seed, files=True)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_random_file_programs_many(seed: int) -> None:
    same_in_every_config(seed, files=True)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_random_programs_many(seed: int) -> None:
    same_in_every_config(seed, files=False)


# ----------------------------------------------------------------------------- the mutant is caught
MUTANT_CATCHERS = ["parent-writes-first-order4.scenario", "parent-writes-first-order2.scenario"]


@pytest.mark.parametrize("name", MUTANT_CATCHERS)
def test_mutant_reuse_without_shared_bit_is_caught(name: str) -> None:
    """Reusing a large folio without the shared-bit test changes the timeline (and breaks isolation)."""
    text = (ROOT / "examples" / "live" / name).read_text()
    ref = reference_timeline(text, KernelConfig())
    assert first_difference(ref, fast_timeline(text, KernelConfig())) is None
    mutant = fast_timeline(text, KernelConfig(), mutant=MUTANT_NO_SHARED_TEST)
    assert first_difference(ref, mutant) is not None
    assert mutant.violation is not None  # the oracle sees the other MM's data leak


def test_mutant_caught_by_random_programs() -> None:
    """Among the first random programs, some catch the mutant too (the random tests have teeth)."""
    caught = 0
    for seed in range(40):
        text = program(seed)
        ref = reference_timeline(text, KernelConfig())
        if first_difference(ref, fast_timeline(text, KernelConfig(), mutant=MUTANT_NO_SHARED_TEST)) is not None:
            caught += 1
    assert caught >= 1


# ----------------------------------------------------------------------------- workloads (batched runner)
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@pytest.mark.parametrize("order", [0, 4, 9])
def test_fork_child_workload(config: KernelConfig, order: int) -> None:
    """The evaluator's fork-child workload (no consumer probes) through the batched fast runner: the same rmap
    trace, CoW decisions (task names included), folios, page tables and contents as the reference runner."""
    from foliosim.evaluate.runner import WorkloadRunner
    from foliosim.fast.sim.engine import FastMachine
    from foliosim.fast.sim.steps import FastWorkloadRunner
    from foliosim.fast.sim.timeline import fast_state, reference_state
    from foliosim.vm.machine import Machine, MachineOptions
    from foliosim.workloads.generators import build_workload

    params = {"pages": 1024, "order": order, "rounds": 6, "child_writes": 12, "parent_writes": 24, "probe_rate": 0}
    steps = build_workload("fork-child", params, seed=7)
    ref = Machine(config, MachineOptions(keep_events=False))
    WorkloadRunner(ref).run(steps)
    fast = FastMachine(config, MachineOptions())
    FastWorkloadRunner(fast, batch=16).run(steps)
    assert ref.counters["fault"] == fast.counters["fault"] > 100
    assert ref.trace == fast.trace
    assert ref.cow_decisions == fast.cow_decisions
    assert reference_state(ref) == fast_state(fast)


def test_fork_child_workload_fast_oracle_catches_the_mutant() -> None:
    """With the fast (incremental, in-kernel) oracle the batched runner stops at the mutant's first leak."""
    from foliosim.fast.sim.engine import FastMachine
    from foliosim.fast.sim.steps import FastWorkloadRunner
    from foliosim.vm.events import OracleViolation
    from foliosim.vm.machine import MachineOptions
    from foliosim.workloads.generators import build_workload

    params = {"pages": 256, "order": 4, "rounds": 6, "child_writes": 12, "parent_writes": 24, "probe_rate": 0}
    steps = build_workload("fork-child", params, seed=7)
    ok = FastMachine(KernelConfig(), MachineOptions(), record=False, reference=False, fast_oracle=True)
    FastWorkloadRunner(ok).run(steps)  # the real engine passes
    bad = FastMachine(KernelConfig(), MachineOptions(), record=False, reference=False, fast_oracle=True,
                      mutant=MUTANT_NO_SHARED_TEST)
    with pytest.raises(OracleViolation, match="isolation"):
        FastWorkloadRunner(bad).run(steps)
