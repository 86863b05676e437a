"""Random rmap sequences against an exact oracle (per-MM, per-page counts).

After every step: (a) soundness: "not shared" implies at most one MM maps the
folio; (b) precision: while no more than two MMs have mapped it at the same
time since it was last fully unmapped, the answer equals the truth; (c) every
counter equals what the oracle derives; (d) the bit lock is free. Invalid
operations must be rejected and change nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from foliosim.errors import Rejected
from foliosim.folio import folio_maybe_mapped_shared
from foliosim.invariants import counter_violations, lock_violation
from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD, PTE
from foliosim.system import RmapSystem
from tests.conftest import ALL_CONFIGS
from tests.helpers import snapshot

ORDERS = [0, 1, 2, 2, 3, 4, 9]
MM_NAMES = ["A", "B", "C", "D"]


class Oracle:
    """Exact per-MM mapping counts of one folio, independent of the model."""

    def __init__(self, nr_pages: int) -> None:
        self.nr_pages = nr_pages
        self.pte: dict[str, list[int]] = {}
        self.pmd: dict[str, int] = {}
        self.max_mms = 0  # most MMs mapping at once since the folio was last fully unmapped

    def mms(self) -> set[str]:
        return {m for m, c in self.pte.items() if any(c)} | {m for m, c in self.pmd.items() if c}

    def entries(self) -> int:
        return sum(map(sum, self.pte.values())) + sum(self.pmd.values())

    def page_total(self, page: int) -> int:
        return sum(c[page] for c in self.pte.values())

    def after_op(self) -> None:
        self.max_mms = 0 if self.entries() == 0 else max(self.max_mms, len(self.mms()))


class RmapMachine(RuleBasedStateMachine):
    config: KernelConfig = KernelConfig()

    def __init__(self) -> None:
        super().__init__()
        self.system = RmapSystem(self.config)
        self.oracle: dict[str, Oracle] = {}
        self.serial = 0

    # -- helpers --------------------------------------------------------------------
    def _expect_rejected(self, fn: Any, *args: Any) -> None:
        before = snapshot(self.system)
        with pytest.raises(Rejected):
            fn(*args)
        assert snapshot(self.system) == before

    def _folio(self, data: st.DataObject) -> str | None:
        if not self.oracle:
            return None
        return data.draw(st.sampled_from(sorted(self.oracle)))

    def _mm(self, data: st.DataObject) -> str | None:
        if not self.system.mms:
            return None
        return data.draw(st.sampled_from(sorted(self.system.mms)))

    # -- rules -------------------------------------------------------------------------
    @rule(data=st.data())
    def new_mm(self, data: st.DataObject) -> None:
        free = [m for m in MM_NAMES if m not in self.system.mms]
        if free:
            self.system.mm_new(data.draw(st.sampled_from(free)))

    @rule(data=st.data())
    def free_mm(self, data: st.DataObject) -> None:
        mm = self._mm(data)
        if mm is None:
            return
        busy = any(mm in o.mms() for o in self.oracle.values())
        if busy:
            self._expect_rejected(self.system.mm_free, mm)
        else:
            self.system.mm_free(mm)

    @rule(order=st.sampled_from(ORDERS))
    def new_folio(self, order: int) -> None:
        if len(self.oracle) >= 3:
            return
        name = f"F{self.serial}"
        self.serial += 1
        self.system.folio_new(name, order)
        self.oracle[name] = Oracle(1 << order)

    @rule(data=st.data())
    def free_folio(self, data: st.DataObject) -> None:
        folio = self._folio(data)
        if folio is None:
            return
        if self.oracle[folio].entries():
            self._expect_rejected(self.system.folio_free, folio)
        else:
            self.system.folio_free(folio)
            del self.oracle[folio]

    @rule(data=st.data())
    def map_new_anon(self, data: st.DataObject) -> None:
        folio, mm = self._folio(data), self._mm(data)
        if folio is None or mm is None:
            return
        o = self.oracle[folio]
        order = self.system.folio(folio).order
        level = PMD if order >= self.config.pmd_order else PTE
        if o.entries():
            self._expect_rejected(self.system.map_new_anon, folio, mm, level)
            return
        self.system.map_new_anon(folio, mm, level)
        if level is PMD:
            o.pmd[mm] = 1
        else:
            o.pte[mm] = [1] * o.nr_pages
        o.after_op()

    def _run(self, data: st.DataObject, ok: list[bool]) -> tuple[int, int] | None:
        """A contiguous range of pages whose flags are all true, drawn by hypothesis."""
        pages = [p for p, flag in enumerate(ok) if flag]
        if not pages:
            return None
        start = end = data.draw(st.sampled_from(pages))
        while end + 1 < len(ok) and ok[end + 1] and data.draw(st.booleans()):
            end += 1
        while start > 0 and ok[start - 1] and data.draw(st.booleans()):
            start -= 1
        return start, end - start + 1

    @rule(data=st.data(), level=st.sampled_from([PTE, PTE, PMD]), kind=st.sampled_from(["map", "dup", "unmap"]))
    def valid_rmap_op(self, data: st.DataObject, level: Any, kind: str) -> None:
        """An operation chosen to be valid (unmaps and dups of what is really mapped)."""
        folio = self._folio(data)
        if folio is None:
            return
        o = self.oracle[folio]
        if kind == "unmap":
            holders = sorted(o.pmd if level is PMD else o.pte)
            holders = [m for m in holders if (o.pmd.get(m, 0) if level is PMD else any(o.pte[m]))]
            if not holders:
                return
            mm = data.draw(st.sampled_from(holders))
        else:
            mm = self._mm(data)
            if mm is None:
                return
        page, nr = 0, 1
        if level is PTE:
            if kind == "map":
                page = data.draw(st.integers(0, o.nr_pages - 1))
                nr = data.draw(st.integers(1, o.nr_pages - page))
            else:
                ok = ([o.page_total(p) > 0 for p in range(o.nr_pages)] if kind == "dup"
                      else [c > 0 for c in o.pte[mm]])
                span = self._run(data, ok)
                if span is None:
                    return
                page, nr = span
        self._apply(folio, mm, level, kind, page, nr)

    @rule(data=st.data(), level=st.sampled_from([PTE, PTE, PMD]), kind=st.sampled_from(["map", "dup", "unmap"]))
    def any_rmap_op(self, data: st.DataObject, level: Any, kind: str) -> None:
        """A random operation: applied when valid, otherwise it must be rejected without change."""
        folio, mm = self._folio(data), self._mm(data)
        if folio is None or mm is None:
            return
        o = self.oracle[folio]
        page = data.draw(st.integers(0, o.nr_pages - 1))
        nr = data.draw(st.integers(1, o.nr_pages - page))
        self._apply(folio, mm, level, kind, page, nr)

    def _apply(self, folio: str, mm: str, level: Any, kind: str, page: int, nr: int) -> None:
        o = self.oracle[folio]
        f = self.system.folio(folio)
        fn = getattr(self.system, kind)
        pmd_ok = f.order > 0 and self.config.has_entire_mapcount(f.order)
        if level is PMD:
            valid = pmd_ok and (kind == "map" or (kind == "dup" and any(o.pmd.values()))
                                or (kind == "unmap" and o.pmd.get(mm, 0) > 0))
        else:
            rng = range(page, page + nr)
            valid = (kind == "map" or (kind == "dup" and all(o.page_total(p) for p in rng))
                     or (kind == "unmap" and all(o.pte.get(mm, [0] * o.nr_pages)[p] for p in rng)))
        tracking_ok = f.order == 0 or self.config.word_bits == 64 or f.order <= 15
        if not (valid and tracking_ok):
            self._expect_rejected(fn, folio, mm, level, page, nr)
            return
        fn(folio, mm, level, page, nr)
        step = -1 if kind == "unmap" else 1
        if level is PMD:
            o.pmd[mm] = o.pmd.get(mm, 0) + step
        else:
            counts = o.pte.setdefault(mm, [0] * o.nr_pages)
            for p in range(page, page + nr):
                counts[p] += step
        o.after_op()

    # -- invariants ------------------------------------------------------------------
    @invariant()
    def folios_agree_with_oracle(self) -> None:
        ids = {name: h.mm_id for name, h in self.system.mms.items()}
        for name, o in self.oracle.items():
            handle = self.system.folios[name]
            f = handle.folio
            assert lock_violation(f) is None  # (d)
            assert counter_violations(f, handle.truth, ids) == []  # (c), the model's truth
            assert f.large_mapcount + 1 == o.entries() if f.order else f.page_mapcount[0] + 1 == o.entries()
            if self.config.page_mapcount or f.order == 0:
                assert [c + 1 for c in f.page_mapcount] == [o.page_total(p) for p in range(o.nr_pages)]
            assert set(handle.truth.mapped_mms()) == o.mms()
            shared = folio_maybe_mapped_shared(f)
            really = len(o.mms()) > 1
            if not shared:  # (a) soundness
                assert not really, f"{name}: exclusive but mapped by {sorted(o.mms())}"
            if f.order > 0 and o.max_mms <= 2 and o.entries() > 1:  # (b) precision
                assert shared == really, f"{name}: shared={shared} but mapped by {sorted(o.mms())}"


def _machine(config: KernelConfig) -> type[RmapMachine]:
    return type(f"Machine{config.word_bits}{'N' if config.no_page_mapcount else 'P'}",
                (RmapMachine,), {"config": config})


_MACHINES = {c: _machine(c) for c in ALL_CONFIGS}


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda c: c.describe())
def test_rmap_state_machine(config: KernelConfig) -> None:
    _MACHINES[config].TestCase().runTest()
