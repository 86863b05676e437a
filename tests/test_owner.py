"""Every rule of the MM owner tracking, through the rmap layer and directly."""

from __future__ import annotations

import pytest

from foliosim.errors import Rejected
from foliosim.folio import folio_mapcount, folio_maybe_mapped_shared, folio_test_large_maybe_mapped_shared
from foliosim.kconfig import KernelConfig
from foliosim.owner import OwnerEvent, folio_add_return_large_mapcount, folio_sub_return_large_mapcount
from tests.helpers import PMD, PTE, make, slots, snapshot


def shared_bit(system, name: str = "F") -> bool:  # type: ignore[no-untyped-def]
    return folio_test_large_maybe_mapped_shared(system.folio(name))


def test_first_mm_takes_slot0_exclusive(config: KernelConfig) -> None:
    s = make(config)
    r = s.map("F", "A", PTE, 0, 3)
    assert r.owner is OwnerEvent.TAKE_SLOT0
    assert slots(s) == [("A", 3), (None, 0)]
    assert not shared_bit(s)
    assert not folio_maybe_mapped_shared(s.folio("F"))


def test_second_mm_takes_slot1_and_sets_shared(config: KernelConfig) -> None:
    s = make(config)
    s.map("F", "A", PTE, 0, 2)
    r = s.map("F", "B", PTE, 2, 2)
    assert r.owner is OwnerEvent.TAKE_SLOT1
    assert slots(s) == [("A", 2), ("B", 2)]
    assert shared_bit(s) and folio_maybe_mapped_shared(s.folio("F"))


def test_third_mm_finds_no_free_slot(config: KernelConfig) -> None:
    s = make(config)
    s.map("F", "A", PTE, 0, 2)
    s.map("F", "B", PTE, 2, 2)
    r = s.map("F", "C", PTE, 4, 3)
    assert r.owner is OwnerEvent.ADD_UNTRACKED
    assert slots(s) == [("A", 2), ("B", 2)]
    assert folio_mapcount(s.folio("F")) == 7
    # Example 2 of the commit: A and B leave, C alone is still "maybe shared".
    s.unmap("F", "A", PTE, 0, 2)
    s.unmap("F", "B", PTE, 2, 2)
    assert slots(s) == [(None, 0), (None, 0)]
    assert shared_bit(s) and folio_maybe_mapped_shared(s.folio("F"))


def test_slot0_taken_while_others_map_sets_shared(config: KernelConfig) -> None:
    s = make(config)
    s.map("F", "A", PTE, 0, 1)
    s.map("F", "B", PTE, 1, 1)
    s.unmap("F", "A", PTE, 0, 1)  # B owns everything again: exclusive
    assert not shared_bit(s)
    r = s.map("F", "A", PTE, 0, 1)
    assert r.owner is OwnerEvent.TAKE_SLOT0_SHARED
    assert slots(s) == [("A", 1), ("B", 1)] and shared_bit(s)


def test_slot_freed_and_retaken_while_untracked_mappings_remain_then_clamped(config: KernelConfig) -> None:
    s = make(config)
    s.map("F", "A", PTE, 0, 1)
    s.map("F", "B", PTE, 1, 1)
    s.map("F", "C", PTE, 2, 2)  # untracked
    s.unmap("F", "A", PTE, 0, 1)  # slot 0 freed, shared stays (B 1 + C 2 != any slot)
    assert slots(s) == [(None, 0), ("B", 1)] and shared_bit(s)
    r = s.map("F", "C", PTE, 4, 1)  # C takes slot 0, under-counted: 1 of its 3
    assert r.owner is OwnerEvent.TAKE_SLOT0_SHARED
    assert slots(s) == [("C", 1), ("B", 1)]
    r = s.unmap("F", "B", PTE, 1, 1)
    assert r.owner is OwnerEvent.SUB_FREED_KEEP
    # Only C maps it now, but its slot counts 1 of 3: a false positive that persists.
    assert s.folio_handle("F").truth.mapped_mms() == ["C"]
    assert shared_bit(s) and folio_maybe_mapped_shared(s.folio("F"))
    # C unmaps its two untracked pages: the slot would go to -1 -> clamped, freed.
    r = s.unmap("F", "C", PTE, 2, 2)
    assert r.owner is OwnerEvent.SUB_FREED_KEEP
    assert slots(s) == [(None, 0), (None, 0)]
    assert s.folio("F").mm_id_mapcount == [-1, -1]
    assert shared_bit(s)  # still set ...
    assert not folio_maybe_mapped_shared(s.folio("F"))  # ... but mapcount 1 <= 1
    r = s.unmap("F", "C", PTE, 4, 1)
    assert r.owner is OwnerEvent.SUB_UNTRACKED_CLEAR
    assert s.folio("F").mm_ids == 0


def test_same_mm_maps_same_pages_twice_is_one_owner(config: KernelConfig) -> None:
    s = make(config)
    s.map("F", "A", PTE, 0, 4)
    s.map("F", "A", PTE, 0, 4)  # a file folio mapped by two VMAs of one process
    assert slots(s) == [("A", 8), (None, 0)]
    f = s.folio("F")
    assert folio_mapcount(f) == 8 and not folio_maybe_mapped_shared(f)
    if config.page_mapcount:
        assert f.page_mapcount[:4] == [1, 1, 1, 1]
        assert f.nr_pages_mapped == 4
    s.unmap("F", "A", PTE, 0, 4)
    r = s.unmap("F", "A", PTE, 0, 4)
    assert r.owner is OwnerEvent.SUB_FREED_CLEAR
    assert f.mm_ids == 0


def test_full_unmap_resets_both_slots_and_the_shared_bit(config: KernelConfig) -> None:
    s = make(config)
    s.map("F", "A", PTE, 0, 2)
    s.map("F", "B", PMD)
    s.map("F", "C", PTE, 1, 3)
    s.unmap("F", "C", PTE, 1, 3)
    s.unmap("F", "B", PMD)
    s.unmap("F", "A", PTE, 0, 2)
    f = s.folio("F")
    assert f.mm_ids == 0 and f.mm_id_mapcount == [-1, -1] and f.large_mapcount == -1
    s.folio_free("F")


def test_partial_unmap_by_tracked_mm_does_not_reevaluate(config: KernelConfig) -> None:
    s = make(config)
    s.map("F", "A", PTE, 0, 2)
    s.map("F", "B", PTE, 2, 2)
    r = s.unmap("F", "A", PTE, 0, 1)
    assert r.owner is OwnerEvent.SUB_KEEP
    assert shared_bit(s)


def test_mm_id_reuse_after_free(config: KernelConfig) -> None:
    s = make(config)
    s.map("F", "A", PTE, 0, 1)
    s.map("F", "B", PTE, 1, 1)
    s.unmap("F", "A", PTE, 0, 1)
    a_id = s.mms["A"].mm_id
    s.mm_free("A")
    assert s.mm_new("D") == a_id  # lowest free id is handed out again
    r = s.map("F", "D", PTE, 2, 1)
    assert r.owner is OwnerEvent.TAKE_SLOT0_SHARED
    assert slots(s) == [("D", 1), ("B", 1)]


def test_32bit_per_mm_overflow_frees_the_slot_and_marks_shared() -> None:
    cfg = KernelConfig(32)
    s = make(cfg, "A", {"F": 15})
    s.map("F", "A", PTE, 0, 32768)
    assert s.folio("F").mm_id_mapcount[0] == 32767
    r = s.map("F", "A", PTE, 0, 1)  # the short wraps to -32768
    assert r.owner is OwnerEvent.ADD_OVERFLOW0
    f = s.folio("F")
    assert slots(s) == [(None, 0), (None, 0)] and f.mm_id_mapcount == [-1, -1]
    assert shared_bit(s) and folio_maybe_mapped_shared(f)  # false positive: only A maps it
    assert folio_mapcount(f) == 32769
    r = s.unmap("F", "A", PTE, 0, 1)
    assert r.owner is OwnerEvent.SUB_UNTRACKED_KEEP
    s.unmap("F", "A", PTE, 0, 32768)
    assert f.mm_ids == 0


def test_64bit_does_not_overflow_at_short_range() -> None:
    s = make(KernelConfig(64), "A", {"F": 15})
    s.map("F", "A", PTE, 0, 32768)
    r = s.map("F", "A", PTE, 0, 1)
    assert r.owner is OwnerEvent.ADD_SLOT0
    assert slots(s) == [("A", 32769), (None, 0)]


def test_32bit_order16_cannot_be_tracked() -> None:
    s = make(KernelConfig(32), "A", {"F": 16})
    before = snapshot(s)
    with pytest.raises(Rejected, match="cannot be tracked") as exc:
        s.map("F", "A", PTE, 0, 1)
    assert exc.value.check == "__folio_large_mapcount_sanity_checks"
    assert snapshot(s) == before


def test_held_lock_is_rejected_without_change(config: KernelConfig) -> None:
    s = make(config)
    s.map("F", "A", PTE, 0, 1)
    s.folio("F").mm_ids |= config.lock_bit
    before = snapshot(s)
    with pytest.raises(Rejected, match="spinlock"):
        s.map("F", "B", PTE, 1, 1)
    assert snapshot(s) == before


def test_lock_bit_clear_after_every_update(config: KernelConfig) -> None:
    s = make(config)
    for op in [lambda: s.map("F", "A", PTE, 0, 2), lambda: s.map("F", "B", PMD),
               lambda: s.unmap("F", "A", PTE, 0, 1), lambda: s.unmap("F", "B", PMD)]:
        op()
        assert not s.folio("F").mm_ids & config.lock_bit


def test_owner_functions_directly_return_logical_totals(config: KernelConfig) -> None:
    s = make(config)
    f = s.folio("F")
    total, event = folio_add_return_large_mapcount(f, 3, 7)
    assert (total, event) == (3, OwnerEvent.TAKE_SLOT0)
    total, event = folio_add_return_large_mapcount(f, 2, 7)
    assert (total, event) == (5, OwnerEvent.ADD_SLOT0)
    total, event = folio_sub_return_large_mapcount(f, 5, 7)
    assert (total, event) == (0, OwnerEvent.SUB_FREED_CLEAR)
    with pytest.raises(Rejected, match="not positive"):
        folio_add_return_large_mapcount(f, 0, 7)
    with pytest.raises(Rejected, match="outside"):
        folio_add_return_large_mapcount(f, 1, 0)
    with pytest.raises(Rejected, match="exceeds"):
        folio_add_return_large_mapcount(f, 17, 7)


def test_sanity_check_catches_corrupt_slot() -> None:
    s = make()
    s.map("F", "A", PTE, 0, 1)
    s.folio("F").mm_id_mapcount[1] = 3  # free slot with a count: corrupt
    with pytest.raises(Rejected, match="slot 1 is free"):
        s.map("F", "B", PTE, 1, 1)
