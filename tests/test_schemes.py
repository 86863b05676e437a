"""Designs: unit behaviour, soundness, and slots:2 == kernel on random traces."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foliosim.errors import Rejected
from foliosim.folio import folio_maybe_mapped_shared
from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD, PTE
from foliosim.schemes import DESIGNS, make_design
from foliosim.schemes.base import Design
from foliosim.schemes.exact import ExactDesign
from foliosim.schemes.kernel import KernelDesign
from foliosim.system import Op
from tests.evalhelpers import random_trace, trace_text

CONFIGS = [KernelConfig(64, False), KernelConfig(64, True), KernelConfig(32, False), KernelConfig(32, True)]


def feed(design: Design, ops: list[Op]) -> Design:
    for op in ops:
        design.apply(op)
    return design


def fork_ops(order: int = 2) -> list[Op]:
    """P maps a fresh folio; fork -> C dups it all."""
    nr = 1 << order
    return [Op("mm_new", "P"), Op("mm_new", "C"), Op("folio_new", None, "F", order),
            Op("map_new_anon", "P", "F", None, PTE), Op("dup", "C", "F", None, PTE, 0, nr)]


@pytest.mark.parametrize("spec", [*DESIGNS, "slots:1", "slots:2", "slots:8"])
def test_every_design_sees_a_fork_as_shared_and_the_survivor_as_exclusive(spec: str) -> None:
    d = feed(make_design(spec, KernelConfig()), fork_ops())
    assert d.maybe_shared("F") and d.mapcount("F") == 8
    d.apply(Op("unmap", "C", "F", None, PTE, 0, 4))
    assert not d.maybe_shared("F")
    if spec != "legacy":
        assert d.exclusive_owner("F") == "P"
    else:
        assert d.exclusive_owner("F") is None  # per-page counts cannot name the MM


def test_unknown_designs_are_rejected_with_the_known_list() -> None:
    for bad in ("kernal", "slots", "slots:x", "slots:0", "slots:9", "exact:2"):
        with pytest.raises(ValueError, match=r"design|slots"):
            make_design(bad, KernelConfig())


def test_kernel_design_is_the_core_model() -> None:
    d = feed(KernelDesign(KernelConfig()), fork_ops())
    assert d.system.folio("F") is not None
    assert d.maybe_shared("F") == folio_maybe_mapped_shared(d.system.folio("F"))
    with pytest.raises(Rejected):  # the core's validation: C does not map page 0 by PMD
        d.apply(Op("unmap", "C", "F", None, PMD))


def test_stopped_stays_shared_until_the_folio_is_freed() -> None:
    ops = [*fork_ops(), Op("mm_new", "X"), Op("dup", "X", "F", None, PTE, 0, 4)]
    d = feed(make_design("stopped", KernelConfig()), ops)
    k = feed(make_design("kernel", KernelConfig()), ops)
    for mm in ("C", "X"):
        d.apply(Op("unmap", mm, "F", None, PTE, 0, 4))
        k.apply(Op("unmap", mm, "F", None, PTE, 0, 4))
    assert d.maybe_shared("F"), "stopped gives up after a third MM"
    assert not k.maybe_shared("F"), "the kernel recovers: P holds slot 0 with every mapping"
    d.apply(Op("unmap", "P", "F", None, PTE, 0, 4))
    d.apply(Op("folio_free", None, "F"))
    d.apply(Op("folio_new", None, "F", 2))
    d.apply(Op("map_new_anon", "P", "F", None, PTE))
    d.apply(Op("dup", "C", "F", None, PTE, 0, 4))
    d.apply(Op("unmap", "C", "F", None, PTE, 0, 4))
    assert not d.maybe_shared("F")


def test_kernel_false_positive_when_the_survivor_is_untracked() -> None:
    ops = [*fork_ops(), Op("mm_new", "X"), Op("dup", "X", "F", None, PTE, 0, 4),
           Op("unmap", "P", "F", None, PTE, 0, 4), Op("unmap", "C", "F", None, PTE, 0, 4)]
    results = {spec: feed(make_design(spec, KernelConfig()), ops).maybe_shared("F")
               for spec in ("kernel", "exact", "slots:3", "stopped")}
    assert results == {"kernel": True, "exact": False, "slots:3": False, "stopped": True}


def test_legacy_false_negative_on_partial_mappings() -> None:
    """Two MMs each keep pages 2..3 of a 4-page folio: the first-page guess says exclusive."""
    ops = [*fork_ops(), Op("unmap", "P", "F", None, PTE, 0, 2), Op("unmap", "C", "F", None, PTE, 0, 2)]
    legacy = feed(make_design("legacy", KernelConfig(64, True)), ops)
    exact = feed(make_design("exact", KernelConfig()), ops)
    assert exact.maybe_shared("F") and not legacy.maybe_shared("F")
    assert not legacy.sound


def test_slots1_is_sound_thanks_to_the_untracked_rule() -> None:
    d = feed(make_design("slots:1", KernelConfig()), fork_ops())
    assert d.maybe_shared("F")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.describe())
def test_metadata_and_costs(config: KernelConfig) -> None:
    kernel = feed(make_design("kernel", config), fork_ops(4))
    assert kernel.metadata_bytes("F") == (16 if config.is_64bit else 8)
    assert make_design("slots:2", config).__class__.__name__ == "SlotsDesign"
    assert feed(make_design("slots:2", config), fork_ops(4)).metadata_bytes("F") == kernel.metadata_bytes("F")
    assert feed(make_design("slots:3", config), fork_ops(4)).metadata_bytes("F") > kernel.metadata_bytes("F")
    assert feed(make_design("legacy", config), fork_ops(4)).metadata_bytes("F") == 4 * 16 + 4
    exact = feed(make_design("exact", config), fork_ops(4))
    assert exact.metadata_bytes("F") > feed(make_design("exact", config), fork_ops(4)[:4]).metadata_bytes("F")
    fresh = make_design("kernel", config)
    costs = [fresh.apply(op) for op in fork_ops(4)]
    assert (costs[3].locks, costs[4].locks) == (0, 1)  # set_large_mapcount: no lock; dup: the bit lock
    legacy = make_design("legacy", config)
    lcosts = [legacy.apply(op) for op in fork_ops(4)]
    assert lcosts[4].atomics == 16 + 1 and lcosts[4].locks == 0  # 16 page mapcounts + large mapcount
    stopped = feed(make_design("stopped", config), [*fork_ops(4), Op("mm_new", "X")])
    assert stopped.apply(Op("dup", "X", "F", None, PTE, 0, 16)).locks == 1  # the update that stops it
    assert stopped.apply(Op("unmap", "X", "F", None, PTE, 0, 16)).locks == 0  # stopped: no lock any more


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), config=st.sampled_from(CONFIGS))
def test_slots2_equals_kernel_and_sound_designs_never_say_exclusive(seed: int, config: KernelConfig) -> None:
    ops = random_trace(seed, 250, config)
    kernel, slots2 = make_design("kernel", config), make_design("slots:2", config)
    exact = ExactDesign(config)
    others = [make_design(s, config) for s in ("slots:1", "slots:3", "stopped")]
    for i, op in enumerate(ops):
        for d in (kernel, slots2, exact, *others):
            d.apply(op)
        if op.folio is None or op.op == "folio_free":
            continue
        where = f"seed {seed}, {config.describe()}, after op {i}; replay with foliosim replay:\n" + trace_text(
            ops[:i + 1])
        assert slots2.maybe_shared(op.folio) == kernel.maybe_shared(op.folio), where
        assert slots2.exclusive_owner(op.folio) == kernel.exclusive_owner(op.folio), where
        truth = len(exact.mms(op.folio)) > 1
        for d in (kernel, *others):
            assert d.maybe_shared(op.folio) or not truth, f"{d.name} said exclusive for a shared folio; {where}"
            owner = d.exclusive_owner(op.folio)
            assert owner is None or (not truth and owner in exact.mms(op.folio)), where
