"""Per-page mapcounts, _nr_pages_mapped, the entire mapcount and the stat deltas."""

from __future__ import annotations

import pytest

from foliosim.errors import Rejected
from foliosim.folio import (
    folio_entire_mapcount,
    folio_entirely_mapped_flag,
    folio_mapcount,
    folio_nr_pages_mapped,
)
from foliosim.kconfig import ENTIRELY_MAPPED, KernelConfig
from tests.helpers import PMD, PTE, make, snapshot

PMC = KernelConfig(64, False)
NOPMC = KernelConfig(64, True)


def test_pte_add_counts_first_mappings_only() -> None:
    s = make(PMC)
    r = s.map("F", "A", PTE, 2, 4)
    f = s.folio("F")
    assert r.nr == 4 and r.nr_pmdmapped == 0
    assert f.page_mapcount[:7] == [-1, -1, 0, 0, 0, 0, -1]
    assert folio_nr_pages_mapped(f) == 4
    r = s.map("F", "B", PTE, 4, 4)  # pages 4, 5 already mapped
    assert r.nr == 2
    assert folio_nr_pages_mapped(f) == 6
    assert folio_mapcount(f) == 8


def test_pmd_add_and_remove_with_ptes(config: KernelConfig) -> None:
    s = make(config)
    s.map("F", "A", PTE, 0, 3)
    r = s.map("F", "B", PMD)
    f = s.folio("F")
    assert r.nr_pmdmapped == 16
    assert folio_entire_mapcount(f) == 1 and folio_mapcount(f) == 4
    if config.page_mapcount:
        assert r.nr == 13  # the 3 PTE-mapped pages were counted already
        assert folio_entirely_mapped_flag(f) and folio_nr_pages_mapped(f) == 3
        assert f.nr_pages_mapped == ENTIRELY_MAPPED + 3
    else:
        assert r.nr == 0  # the folio was mapped already: it counts whole, once
    r = s.map("F", "C", PMD)
    assert r.nr == 0 and r.nr_pmdmapped == 0
    s.unmap("F", "C", PMD)
    r = s.unmap("F", "B", PMD)
    assert r.nr_pmdmapped == 16
    if config.page_mapcount:
        assert r.nr == 13 and r.partially_mapped
        assert not folio_entirely_mapped_flag(f)
    else:
        assert r.nr == 0 and r.partially_mapped  # total 3 < 16 pages, no PMD left


def test_no_page_mapcount_leaves_per_page_state_alone() -> None:
    s = make(NOPMC)
    r = s.map("F", "A", PTE, 0, 2)
    f = s.folio("F")
    assert r.nr == 16  # the whole folio counts as mapped at the first mapping
    assert f.page_mapcount == [-1] * 16 and f.nr_pages_mapped == 0
    assert folio_nr_pages_mapped(f) == -1
    r = s.map("F", "A", PTE, 2, 2)
    assert r.nr == 0
    r = s.unmap("F", "A", PTE, 0, 2)
    assert r.nr == 0 and r.partially_mapped
    r = s.unmap("F", "A", PTE, 2, 2)
    assert r.nr == 16 and not r.partially_mapped


def test_partial_unmap_detection_with_page_mapcount() -> None:
    s = make(PMC)
    s.map("F", "A", PTE, 0, 16)
    r = s.unmap("F", "A", PTE, 0, 4)
    assert r.nr == 4 and r.partially_mapped
    r = s.unmap("F", "A", PTE, 4, 12)
    assert r.nr == 12 and not r.partially_mapped


def test_map_new_anon_small_mthp_and_pmd(config: KernelConfig) -> None:
    s = make(config, "A", {"S": 0, "M": 4, "T": 9})
    r = s.map_new_anon("S", "A", PTE)
    assert r.nr == 1 and folio_mapcount(s.folio("S")) == 1
    r = s.map_new_anon("M", "A", PTE)
    m = s.folio("M")
    assert r.nr == 16 and folio_mapcount(m) == 16
    if config.page_mapcount:
        assert m.page_mapcount == [0] * 16 and m.nr_pages_mapped == 16
    else:
        assert m.page_mapcount == [-1] * 16 and m.nr_pages_mapped == 0
    assert m.mm_id_mapcount[0] == 15
    r = s.map_new_anon("T", "A", PMD)
    t = s.folio("T")
    assert r.nr == 512 and r.nr_pmdmapped == 512
    assert folio_mapcount(t) == 1 and folio_entire_mapcount(t) == 1
    assert t.nr_pages_mapped == (ENTIRELY_MAPPED if config.page_mapcount else 0)


def test_map_new_anon_rejections(config: KernelConfig) -> None:
    s = make(config, "AB", {"M": 4, "T": 9})
    with pytest.raises(Rejected, match="mapped by pte"):
        s.map_new_anon("M", "A", PMD)
    with pytest.raises(Rejected, match="mapped by pmd"):
        s.map_new_anon("T", "A", PTE)
    s.map_new_anon("M", "A", PTE)
    before = snapshot(s)
    with pytest.raises(Rejected, match="is mapped"):
        s.map_new_anon("M", "B", PTE)
    assert snapshot(s) == before


def test_dup_does_not_touch_nr_pages_mapped(config: KernelConfig) -> None:
    s = make(config)
    s.map_new_anon("F", "A", PTE)
    before = s.folio("F").nr_pages_mapped
    r = s.dup("F", "B", PTE, 0, 16)
    f = s.folio("F")
    assert r.nr == 0 and f.nr_pages_mapped == before
    assert folio_mapcount(f) == 32
    if config.page_mapcount:
        assert f.page_mapcount == [1] * 16


def test_dup_and_unmap_rejections_leave_state_unchanged(config: KernelConfig) -> None:
    s = make(config)
    s.map("F", "A", PTE, 0, 4)
    before = snapshot(s)
    with pytest.raises(Rejected, match="not mapped by any MM's PTE"):
        s.dup("F", "B", PTE, 3, 2)
    with pytest.raises(Rejected, match="no MM maps by PMD"):
        s.dup("F", "B", PMD)
    with pytest.raises(Rejected, match="does not map every one"):
        s.unmap("F", "B", PTE, 0, 1)
    with pytest.raises(Rejected, match="has no PMD mapping"):
        s.unmap("F", "A", PMD)
    with pytest.raises(Rejected, match="outside the folio"):
        s.map("F", "A", PTE, 14, 3)
    with pytest.raises(Rejected, match="unknown mm"):
        s.map("F", "Z", PTE, 0, 1)
    with pytest.raises(Rejected, match="unknown folio"):
        s.map("G", "A", PTE, 0, 1)
    with pytest.raises(Rejected, match="still has 4"):
        s.mm_free("A")
    with pytest.raises(Rejected, match="nonzero large_mapcount"):
        s.folio_free("F")
    assert snapshot(s) == before


def test_pmd_level_restrictions() -> None:
    s = make(KernelConfig(32), "A", {"S": 0, "O1": 1, "O2": 2})
    with pytest.raises(Rejected, match="order-0"):
        s.map("S", "A", PMD)
    with pytest.raises(Rejected, match="order-1 folio on a 32-bit"):
        s.map("O1", "A", PMD)
    s.map("O2", "A", PMD)
    s64 = make(KernelConfig(64), "A", {"O1": 1})
    s64.map("O1", "A", PMD)
    assert folio_entire_mapcount(s64.folio("O1")) == 1


def test_small_folio_mapcount_and_free(config: KernelConfig) -> None:
    s = make(config, "AB", {"S": 0})
    s.map_new_anon("S", "A", PTE)
    s.dup("S", "B", PTE, 0, 1)
    f = s.folio("S")
    assert folio_mapcount(f) == 2
    r = s.unmap("S", "A", PTE, 0, 1)
    assert r.nr == 0
    r = s.unmap("S", "B", PTE, 0, 1)
    assert r.nr == 1
    s.folio_free("S")
    assert "S" not in s.folios
