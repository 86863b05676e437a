"""The compiled checker engine against the reference: same search, same numbers, same traces."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from foliosim.check.explore import ExploreResult, explore
from foliosim.check.fastexplore import explore_fast, explore_with, supported
from foliosim.check.mutants import owner_by_name
from foliosim.check.state import CheckConfig, candidate_ops, decode, encode, from_key, try_apply
from foliosim.cli import main
from foliosim.fast import HAVE_NUMBA
from foliosim.kconfig import KernelConfig
from foliosim.owner import KERNEL_OWNER
from foliosim.rmap import PMD, PTE

pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed")

CONFIGS = [
    CheckConfig(KernelConfig(64, False), mms=2, order=2, depth=4),
    CheckConfig(KernelConfig(64, True), mms=3, order=1, depth=5),
    CheckConfig(KernelConfig(32, False), mms=3, order=2, depth=3),
    CheckConfig(KernelConfig(32, True), mms=3, order=1, depth=4, reuse_ids=True),
    CheckConfig(KernelConfig(64, False), mms=3, order=1, depth=4, reuse_ids=True),
    CheckConfig(KernelConfig(64, True), mms=3, order=2, depth=4, max_nr=1, levels=(PTE,)),
    CheckConfig(KernelConfig(64, False), mms=2, order=3, depth=3, max_nr=2),
    CheckConfig(KernelConfig(64, False), mms=2, order=2, depth=4, levels=(PMD,)),
    CheckConfig(KernelConfig(64, False), mms=3, order=2, depth=3, ops=("map", "unmap")),
    CheckConfig(KernelConfig(32, True), mms=4, order=1, depth=3, levels=(PTE,)),
    CheckConfig(KernelConfig(64, False), mms=3, order=2, depth=4, ops=("map_new_anon", "dup", "unmap")),
]


def _same(fast: ExploreResult, ref: ExploreResult) -> None:
    assert fast.engine == "fast" and ref.engine == "reference"
    assert fast.level_sizes == ref.level_sizes
    assert fast.states == ref.states
    assert fast.transitions == ref.transitions
    assert fast.depth_reached == ref.depth_reached
    assert fast.exhausted == ref.exhausted
    assert fast.imprecise_states == ref.imprecise_states
    assert {p: fast.holds(p) for p in fast.properties} == {p: ref.holds(p) for p in ref.properties}
    assert fast.violations.keys() == ref.violations.keys()
    for name, cx in ref.violations.items():
        assert fast.violations[name].to_json() == cx.to_json()
    if ref.imprecise_example is None:
        assert fast.imprecise_example is None
    else:
        assert fast.imprecise_example is not None
        assert fast.imprecise_example.to_json() == ref.imprecise_example.to_json()


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe())
def test_fast_engine_matches_reference(cfg: CheckConfig) -> None:
    _same(explore_fast(cfg), explore(cfg))


@pytest.mark.parametrize(("kc", "order"), [
    (KernelConfig(64, False), 1),
    (KernelConfig(32, True), 1),
    # ~25 s of the reference model (8,338 states, every dup applied twice): exhaustive, so opt-in
    pytest.param(KernelConfig(64, False), 2, marks=pytest.mark.slow),
], ids=lambda k: k.describe() if isinstance(k, KernelConfig) else f"order {k}")
def test_dup_reaches_the_state_of_its_map_twin(kc: KernelConfig, order: int) -> None:
    """The fast engine's shortcut: a dup offered in a state leads where the map of the same pages leads.

    Checked with the reference model on every state of a small exploration (kept), for
    every dup the candidate generator offers, PTE and PMD; three MMs, so that a dup can find both slots taken.
    """
    cfg = CheckConfig(kc, mms=3, order=order, depth=3)
    result = explore(cfg, keep_states=True)
    assert result.visited is not None
    dups = 0
    for key in result.visited:
        state = from_key(key)
        for op in candidate_ops(decode(state, cfg), cfg, state):
            if op.op != "dup":
                continue
            after = []
            for kind in ("dup", "map"):
                system = decode(state, cfg)
                assert try_apply(system, replace(op, op=kind)) is None
                after.append(encode(system, cfg, False))
            assert after[0] == after[1], (state, op)
            dups += 1
    assert dups > 1000


def test_fast_engine_property_subsets_and_stop_at_first() -> None:
    cfg = CheckConfig(KernelConfig(64, False), mms=3, order=1, depth=4)
    for props in (["soundness"], ["precision", "counters"], ["full-unmap", "sanity"]):
        _same(explore_fast(cfg, props), explore(cfg, properties=props))
    _same(explore_fast(cfg, stop_at_first=True), explore(cfg, stop_at_first=True))


def test_state_budget_matches_reference() -> None:
    cfg = CheckConfig(KernelConfig(64, False), mms=3, order=2, depth=6)
    fast = explore_fast(cfg, max_states=3000)
    ref = explore(cfg, max_states=3000)
    assert fast.budget_hit == ref.budget_hit is not None
    _same(fast, ref)


def test_imprecision_example_replays() -> None:
    """The fast engine's path (rebuilt by the reference) is a trace `foliosim replay` accepts."""
    cfg = CheckConfig(KernelConfig(64, False), mms=3, order=1, depth=5)
    result = explore_fast(cfg)
    assert result.imprecise_example is not None and result.imprecise_example.length == 5
    text = "\n".join(result.imprecise_example.lines())
    run = CliRunner().invoke(main, ["replay", "-"], input=text)
    assert run.exit_code == 0, run.output
    last = json.loads(run.output.strip().splitlines()[-1])
    assert last["maybe_mapped_shared"] is True and len(last["mapped_mms"]) == 1


def test_mutants_fall_back_to_the_reference() -> None:
    owner = owner_by_name("stale-id")
    assert supported(owner, False) is not None
    assert supported(KERNEL_OWNER, True) is not None
    cfg = CheckConfig(KernelConfig(64, False), mms=2, order=1, depth=3)
    result, note = explore_with("fast", cfg, owner, stop_at_first=True)
    assert note is not None and "stale-id" in note
    assert result.engine == "reference" and "sanity" in result.violations
    result, note = explore_with("auto", cfg, owner, stop_at_first=True)
    assert note is None and result.engine == "reference"
    with pytest.raises(ValueError, match="unknown engine"):
        explore_with("turbo", cfg)


def test_cli_engines_agree() -> None:
    args = ["check", "--mms", "3", "--order", "1", "--depth", "4", "--json", "--quiet"]
    out = {}
    for engine in ("fast", "reference"):
        run = CliRunner().invoke(main, [*args, "--engine", engine])
        assert run.exit_code == 0, run.output
        out[engine] = json.loads(run.output)
    assert out["fast"]["engine"] == "fast" and out["reference"]["engine"] == "reference"
    for key in ("states", "transitions", "level_sizes", "properties", "imprecise_states", "imprecise_example"):
        assert out["fast"][key] == out["reference"][key], key
    run = CliRunner().invoke(main, [*args, "--engine", "fast", "--mutant", "slot1-first"])
    assert run.exit_code == 4
    assert "used the reference engine" in run.output
