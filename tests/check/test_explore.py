"""The sequential explorer: state encoding, canonicalisation, properties, counterexamples."""

from __future__ import annotations

import json
import random

import pytest

from foliosim.check.explore import check_trace, explore, violation_of
from foliosim.check.state import (
    CheckConfig,
    all_ops,
    candidate_ops,
    canonical,
    decode,
    encode,
    from_key,
    initial_system,
    setup_ops,
    to_key,
    try_apply,
)
from foliosim.errors import Rejected
from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD, PTE
from foliosim.system import RmapSystem
from foliosim.trace.replay import replay

CONFIGS = [
    CheckConfig(KernelConfig(64, False), mms=2, order=2, depth=3),
    CheckConfig(KernelConfig(32, True), mms=3, order=1, depth=3, reuse_ids=True),
    CheckConfig(KernelConfig(64, True), mms=2, order=2, depth=3, max_nr=1, levels=(PTE,)),
]


def _random_states(cfg: CheckConfig, seed: int, n: int) -> list[tuple[int, ...]]:
    """States reached by random valid walks (seeded; the seed is in the test id)."""
    rng = random.Random(seed)
    ops = list(all_ops(cfg))
    out = []
    for _ in range(n):
        system = initial_system(cfg)
        for _step in range(rng.randrange(0, 8)):
            op = rng.choice(ops)
            try_apply(system, op)
        out.append(encode(system, cfg, False))
    return out


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe())
def test_decode_encode_round_trip_and_fields(cfg: CheckConfig) -> None:
    for state in _random_states(cfg, 7, 40):
        system = decode(state, cfg)
        assert encode(system, cfg, False) == state
        assert from_key(to_key(state)) == state


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe())
def test_candidates_cover_every_operation_rmapsystem_accepts(cfg: CheckConfig) -> None:
    """The explorer's filter only drops operations the reference rejects (seed 11)."""
    for state in _random_states(cfg, 11, 30):
        system = decode(state, cfg)
        offered = {json.dumps(op.to_json(), sort_keys=True) for op in candidate_ops(system, cfg)}
        for op in all_ops(cfg):
            if op.op in ("mm_new", "mm_free") and not cfg.reuse_ids:
                continue
            if op.op not in cfg.ops and op.op not in ("mm_new", "mm_free"):
                continue
            if op.level is not None and op.level not in cfg.levels and op.op != "map_new_anon":
                continue
            if op.level is PTE and op.op != "map_new_anon" and op.nr > cfg.batch:
                continue
            trial = decode(state, cfg)
            if try_apply(trial, op) is None:
                assert json.dumps(op.to_json(), sort_keys=True) in offered, op


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe())
def test_canonical_form_is_invariant_under_the_symmetries(cfg: CheckConfig) -> None:
    """Renaming MMs (and reversing pages) gives the same canonical state, and the canonical
    state is equivalent: it offers the same number of valid successors (seed 5)."""
    nr = cfg.nr_pages
    base = 11 + nr
    step = 2 + nr
    for state in _random_states(cfg, 5, 30):
        blocks = [state[base + i * step: base + (i + 1) * step] for i in range(cfg.mms)]
        swapped = state[:base] + tuple(v for b in reversed(blocks) for v in b)
        assert canonical(swapped, cfg) == canonical(state, cfg)
        rev = (state[:10] + state[10:10 + nr][::-1] + (state[10 + nr],)
               + tuple(v for b in blocks for v in b[:2] + b[2:][::-1]))
        assert canonical(rev, cfg) == canonical(state, cfg)
        rep = canonical(state, cfg)

        def successors(s: tuple[int, ...]) -> int:
            sysm = decode(s, cfg)
            return sum(try_apply(decode(s, cfg), op) is None for op in candidate_ops(sysm, cfg))

        assert successors(rep) == successors(state)


def test_canonicalisation_reduces_states_without_changing_results() -> None:
    cfg = CheckConfig(mms=2, order=1, depth=4)
    result = explore(cfg)
    assert result.states == 425  # regression guard on the exploration itself
    assert not result.violations
    assert result.level_sizes[0] == 1 and result.depth_reached == 4


@pytest.mark.parametrize("kc", [KernelConfig(64, False), KernelConfig(64, True), KernelConfig(32, False),
                                KernelConfig(32, True)], ids=lambda k: k.describe())
def test_kernel_tracking_has_every_property_on_small_bounds(kc: KernelConfig) -> None:
    cfg = CheckConfig(kc, mms=3, order=1, depth=4, reuse_ids=True)
    result = explore(cfg)
    assert result.states > 1000
    assert result.violations == {}
    assert all(result.holds(p) for p in ("sanity", "soundness", "precision", "counters", "full-unmap"))


def test_imprecision_needs_three_mms_and_its_path_replays_with_foliosim_replay() -> None:
    two = explore(CheckConfig(mms=2, order=1, depth=5))
    assert two.imprecise_states == 0 and two.imprecise_example is None
    three = explore(CheckConfig(mms=3, order=1, depth=5, levels=(PTE,)))
    assert three.imprecise_states > 0
    example = three.imprecise_example
    assert example is not None
    assert example.length == 5  # a third MM must map while both slots are taken, then the others leave
    records = list(replay([json.dumps(op.to_json()) for op in example.ops]))
    last = records[-1]
    assert "error" not in last
    assert last["maybe_mapped_shared"] is True and len(last["mapped_mms"]) == 1


def test_pmd_level_is_explored() -> None:
    result = explore(CheckConfig(mms=2, order=2, depth=3, levels=(PMD,), ops=("map", "dup", "unmap")))
    assert result.states > 5 and not result.violations


def test_budgets_stop_the_search_and_say_so() -> None:
    result = explore(CheckConfig(mms=3, order=2, depth=8), max_states=3000)
    assert result.budget_hit is not None and "state budget" in result.budget_hit
    assert not result.exhausted


def test_bad_bounds_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"order must be in 1\.\.6"):
        CheckConfig(order=0)
    with pytest.raises(ValueError, match="unknown op"):
        CheckConfig(ops=("map", "fork"))
    with pytest.raises(ValueError, match="unknown property"):
        explore(CheckConfig(depth=1), properties=["precise"])


def test_violation_of_reports_a_kernel_sanity_rejection_and_passes_valid_traces() -> None:
    cfg = CheckConfig(mms=2, order=1, depth=2)
    ops = setup_ops(cfg)
    assert violation_of(ops, cfg) is None
    system = RmapSystem(cfg.kconfig)
    lines = [json.dumps(op.to_json()) for op in ops]
    # A trace whose op the caller-level validation rejects is bad input, not a violation.
    bad = [*lines, json.dumps({"op": "unmap", "folio": "F0", "mm": "A", "level": "pte", "page": 0})]
    with pytest.raises(Rejected, match="does not map"):
        check_trace(bad, system)
