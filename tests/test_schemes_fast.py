"""The designs' fast paths give what the plain computation gives: the per-update cost memo of Design.apply,
PageMapcounts.account() against a restatement of the cost model, and legacy replaying kernel's recorded core-model
run (share_rmap_run) against legacy keeping its own."""

from __future__ import annotations

from typing import Any

import pytest

from foliosim.evaluate.stream import score_stream
from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD
from foliosim.schemes import base as scheme_base
from foliosim.schemes import make_design
from foliosim.schemes.cost import PageMapcounts, entire_line, meta_line, page_line
from foliosim.schemes.legacy import LegacyDesign, share_rmap_run
from foliosim.system import MAP_OPS, Op
from tests.test_scoring_replay import DESIGNS, WORKLOADS, _stream

CONFIGS = [KernelConfig(), KernelConfig(word_bits=32), KernelConfig(no_page_mapcount=True),
           KernelConfig(word_bits=32, no_page_mapcount=True)]


class _NoMemo(dict[Any, Any]):
    """A memo that never remembers: every cost is worked out from its Charges."""

    def get(self, key: Any, default: Any = None) -> Any:
        return default

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.describe())
def test_memoised_costs_are_the_charges_costs(config: KernelConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    streams = [_stream(w, WORKLOADS[w], 3, config) for w in ("fork-child", "mix", "handover", "shared-file")]
    designs = [d for d in DESIGNS if config.is_64bit or not d.startswith("precise")]
    memo = scheme_base._CHARGED
    memo.clear()
    compared = 0
    for stream in streams:
        for spec in designs:
            fast, slow = make_design(spec, config), make_design(spec, config)
            for op in stream.ops:
                cost = fast.apply(op)
                with monkeypatch.context() as m:
                    m.setattr(scheme_base, "_CHARGED", _NoMemo())
                    assert slow.apply(op) == cost, (spec, op)
                compared += op.op in MAP_OPS
    assert compared > 1000 and len(memo) > 20  # the memo was used, on many distinct updates


def _reference(config: KernelConfig, op: Op, order: int, pages: list[int], entire: list[int]) -> tuple[int, int]:
    """docs/cost-model.md's rmap bookkeeping cost, restated: (atomics, lines) for ``op`` on a folio whose per-page
    logical mapcounts are ``pages`` and entire mapcount ``entire[0]`` (both updated)."""
    if order == 0:
        return (0 if op.op == "map_new_anon" else 1), 1
    lines = {meta_line(config)}
    if op.level is PMD or (op.op == "map_new_anon" and order >= config.pmd_order):
        lines.add(entire_line(config))
        before = entire[0]
        entire[0] = 1 if op.op == "map_new_anon" else before + (-1 if op.op == "unmap" else 1)
        if op.op == "map_new_anon":
            return 0, len(lines)
        extra = config.page_mapcount and ((op.op == "unmap" and before == 1) or (op.op == "map" and before == 0))
        return 1 + int(extra), len(lines)
    first, nr = (0, 1 << order) if op.op == "map_new_anon" else (op.page, op.nr)
    if not config.page_mapcount:
        return 0, len(lines)
    lines |= {page_line(config, p) for p in range(first, first + nr)}  # every _mapcount word written
    seg = pages[first:first + nr]
    if op.op == "map_new_anon":
        pages[:] = [1] * nr
        return 0, len(lines)
    if op.op == "unmap":
        pages[first:first + nr] = [c - 1 for c in seg]
        return nr + int(1 in seg), len(lines)
    pages[first:first + nr] = [c + 1 for c in seg]
    return nr + int(op.op == "map" and 0 in seg), len(lines)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.describe())
def test_account_is_the_cost_model(config: KernelConfig) -> None:
    counters = PageMapcounts(config, config.page_mapcount)
    orders: dict[str, int] = {}
    pages: dict[str, list[int]] = {}
    entire: dict[str, list[int]] = {}
    seen = 0
    for workload in ("fork-child", "mix", "handover", "snapshot"):
        for op in _stream(workload, WORKLOADS[workload], 4, config).ops:
            folio = f"{workload}/{op.folio}"
            if op.op == "folio_new":
                assert op.order is not None
                orders[folio] = op.order
                counters.new(folio, op.order)
                pages[folio], entire[folio] = [0] * (1 << op.order), [0]
            elif op.op in MAP_OPS:
                order = orders[folio]
                atomics, lines, lo, hi = counters.account(op.op, op.level is PMD, folio, order, op.page, op.nr)
                want = _reference(config, op, order, pages[folio], entire[folio])
                count = len(lines) if lo < 0 else hi - lo + 1 + sum(1 for x in lines if not lo <= x <= hi)
                assert (atomics, count) == want, op
                seen += order > 0
    assert seen > 100


def _legacy_pair(stream_ops: list[Op], config: KernelConfig) -> tuple[LegacyDesign, LegacyDesign]:
    kernel = make_design("kernel", config)
    shared = share_rmap_run(kernel, None)
    assert shared is not None
    for op in stream_ops:
        kernel.apply(op)
    taped, own = make_design("legacy", config), make_design("legacy", config)
    assert isinstance(taped, LegacyDesign) and isinstance(own, LegacyDesign)
    assert share_rmap_run(taped, shared) is shared
    return taped, own


@pytest.mark.parametrize("workload", ["fork-child", "mix", "handover", "prefork"])
def test_legacy_on_kernels_run_answers_as_its_own(workload: str) -> None:
    stream = _stream(workload, WORKLOADS[workload], 2, KernelConfig())
    taped, own = _legacy_pair(stream.ops, stream.config)
    asked = 0
    for op in stream.ops:
        assert taped.apply(op) == own.apply(op)
        if op.folio is not None and op.folio in own.orders:
            assert taped.maybe_shared(op.folio) == own.maybe_shared(op.folio), op
            assert taped.metadata_bytes(op.folio) == own.metadata_bytes(op.folio)
            asked += own.orders[op.folio] > 0 and own.mapcount(op.folio) > 1
    assert asked > 10
    assert not taped.system.folios and own.system.folios is not None  # the taped design kept no core model


def test_legacy_refuses_ops_other_than_the_recorded_ones() -> None:
    stream = _stream("mix", WORKLOADS["mix"], 2, KernelConfig())
    taped, _own = _legacy_pair(stream.ops, stream.config)
    with pytest.raises(RuntimeError, match="not the one the shared rmap run recorded"):
        taped.apply(Op("mm_new", mm="other"))


def test_no_sharing_without_per_page_mapcounts_or_with_legacy_alone() -> None:
    config = KernelConfig(no_page_mapcount=True)  # kernel's core model differs from legacy's (forced on)
    assert share_rmap_run(make_design("kernel", config), None) is None
    assert share_rmap_run(make_design("legacy", KernelConfig()), None) is None


@pytest.mark.parametrize("order", [("kernel", "legacy"), ("legacy", "kernel"), ("legacy",),
                                   ("kernel", "exact", "legacy", "legacy")])
def test_score_stream_with_or_without_the_shared_run(order: tuple[str, ...]) -> None:
    stream = _stream("fork-child", WORKLOADS["fork-child"], 3, KernelConfig())
    scored = {s.design: s.rows for s in score_stream(stream, order)}
    alone = {s.design: s.rows for s in score_stream(stream, order, replay=False)}
    assert scored == alone and "legacy" in scored
