"""CPU interleavings: the micro-step model equals owner.py; with the lock every outcome is
sequential; without it the lost update is found; what lock-free readers see."""

from __future__ import annotations

import random

import pytest

from foliosim.check.interleave import (
    C0,
    C1,
    H0,
    H1,
    LM,
    RRES,
    Action,
    Scenario,
    build_machine,
    check_interleavings,
    run_sequentially,
    writer_actions,
)
from foliosim.check.state import FOLIO, CheckConfig, all_ops, initial_system, try_apply
from foliosim.kconfig import KernelConfig
from foliosim.owner import folio_add_return_large_mapcount, folio_sub_return_large_mapcount
from foliosim.system import RmapSystem

KCS = [KernelConfig(64, False), KernelConfig(32, True)]


def _random_system(kc: KernelConfig, rng: random.Random) -> RmapSystem:
    cfg = CheckConfig(kc, mms=3, order=2, depth=0)
    system = initial_system(cfg)
    ops = [op for op in all_ops(cfg) if op.op not in ("mm_new", "mm_free")]
    for _ in range(rng.randrange(0, 12)):
        try_apply(system, rng.choice(ops))
    return system


@pytest.mark.parametrize("kc", KCS, ids=lambda k: k.describe())
@pytest.mark.parametrize("seed", range(6))
def test_micro_steps_without_interleaving_equal_owner_py(kc: KernelConfig, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        system = _random_system(kc, rng)
        for mm in sorted(system.mms):
            for act in writer_actions(system, FOLIO, mm, (1, 2, 4)):
                scn = Scenario([], system, FOLIO, (act,))
                world = run_sequentially(scn, [0])
                mem, cpus = world
                folio = system.folios[FOLIO].folio.copy()
                fn = folio_add_return_large_mapcount if act.kind == "add" else folio_sub_return_large_mapcount
                total, _event = fn(folio, act.diff, act.mm_id)
                machine, _w, _n = build_machine(scn)
                half = machine.lay.half
                assert (mem[LM], mem[C0], mem[C1], mem[H0] | (mem[H1] << half)) == (
                    folio.large_mapcount, *folio.mm_id_mapcount, folio.mm_ids), (seed, act)
                assert cpus[0][1][RRES] == total


def test_with_the_lock_every_outcome_is_sequential_and_readers_are_sound() -> None:
    result = check_interleavings(KernelConfig(), mms=3, order=1, depth=2, writers=2, reader="maybe_shared")
    assert result.scenarios > 50 and result.states > 10000
    assert result.non_sequential == 0
    assert "reader-false-negative" not in result.examples
    # What a lock-free reader can see mid-update: a stale "exclusive" and transient false positives.
    assert "reader-stale-exclusive" in result.examples
    assert "reader-false-positive" in result.examples


def test_three_writers_with_the_lock_are_sequential() -> None:
    result = check_interleavings(KernelConfig(), mms=3, order=1, depth=1, writers=3)
    assert result.scenarios > 0 and result.non_sequential == 0


def test_without_the_lock_the_lost_update_is_found_and_printed() -> None:
    result = check_interleavings(KernelConfig(), mms=2, order=1, depth=1, writers=2, lock=False,
                                 stop_at="lost-update")
    finding = result.examples["lost-update"]
    lines = finding.lines()
    assert lines[0].startswith("# lost-update: final _large_mapcount")
    assert any("atomic_read(_large_mapcount)" in line for line in lines)
    # The trace part (set-up + the CPUs' operations) is valid rmap trace JSON.
    import json

    trace = [json.loads(line) for line in lines if not line.startswith("#")]
    assert trace[-1].get("_cpu") is not None


def test_cow_reuse_decisions_are_safe_with_the_lock() -> None:
    result = check_interleavings(KernelConfig(), mms=3, order=1, depth=3, writers=2, reader="cow")
    assert result.scenarios > 0
    assert "cow-unsafe-reuse" not in result.examples
    assert "cow-warn-refcount" not in result.examples and "cow-warn-slot" not in result.examples
    assert result.observations.get("cow-reuse-safe", 0) > 0  # the test does reuse somewhere


def test_unknown_action_is_an_error() -> None:
    system = initial_system(CheckConfig(mms=1, order=1, depth=0))
    with pytest.raises(ValueError, match="unknown action"):
        build_machine(Scenario([], system, FOLIO, (Action("fork", "A", 1),)))


@pytest.mark.slow
def test_bigger_interleavings() -> None:
    for reader in (None, "maybe_shared", "cow", "cow_precheck"):
        result = check_interleavings(KernelConfig(), mms=3, order=1, depth=3, writers=2, reader=reader)
        assert result.non_sequential == 0
        assert "cow-unsafe-reuse" not in result.examples
        assert "reader-false-negative" not in result.examples
