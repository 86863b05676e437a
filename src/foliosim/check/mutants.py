"""Deliberately wrong variants of the owner tracking, to show the checker catches bugs.

Each mutant wraps the reference ``folio_add_return_large_mapcount()`` /
``folio_sub_return_large_mapcount()`` of :mod:`foliosim.owner` and perturbs
one decision, so the rest of the behaviour stays the kernel's. Each has the
smallest configuration in which the checker must find it (``Mutant.config``);
the test suite explores them all, so a checker that silently stops checking
fails CI.
"""

from __future__ import annotations

from dataclasses import dataclass

from foliosim.check.state import CheckConfig
from foliosim.folio import Folio, folio_mm_id
from foliosim.kconfig import MM_ID_DUMMY
from foliosim.owner import (
    KERNEL_OWNER,
    OwnerEvent,
    OwnerTracking,
    folio_add_return_large_mapcount,
    folio_set_mm_id,
    folio_sub_return_large_mapcount,
)
from foliosim.rmap import PTE

_CLEARS = (OwnerEvent.SUB_FREED_CLEAR, OwnerEvent.SUB_UNTRACKED_CLEAR)


def _shared(folio: Folio) -> bool:
    return bool(folio.mm_ids & folio.config.shared_bit)


def _set_shared(folio: Folio, value: bool) -> None:
    if value:
        folio.mm_ids |= folio.config.shared_bit
    else:
        folio.mm_ids &= ~folio.config.shared_bit


def sub_never_clears(folio: Folio, diff: int, mm_id: int) -> tuple[int, OwnerEvent]:
    """The shared bit is restored after every sub: it is never cleared."""
    was = _shared(folio)
    total, event = folio_sub_return_large_mapcount(folio, diff, mm_id)
    if was:
        _set_shared(folio, True)
    return total, event


def add_slot1_not_shared(folio: Folio, diff: int, mm_id: int) -> tuple[int, OwnerEvent]:
    """Taking slot 1 does not set the shared bit."""
    was = _shared(folio)
    total, event = folio_add_return_large_mapcount(folio, diff, mm_id)
    if event is OwnerEvent.TAKE_SLOT1:
        _set_shared(folio, was)
    return total, event


def add_slot0_not_shared(folio: Folio, diff: int, mm_id: int) -> tuple[int, OwnerEvent]:
    """Taking free slot 0 while others map the folio does not set the shared bit."""
    was = _shared(folio)
    total, event = folio_add_return_large_mapcount(folio, diff, mm_id)
    if event is OwnerEvent.TAKE_SLOT0_SHARED:
        _set_shared(folio, was)
    return total, event


def sub_no_clamp(folio: Folio, diff: int, mm_id: int) -> tuple[int, OwnerEvent]:
    """A per-MM count that would go below zero stays in its slot, negative, instead of being clamped."""
    before = [(folio_mm_id(folio, i), folio.mm_id_mapcount[i]) for i in (0, 1)]
    total, event = folio_sub_return_large_mapcount(folio, diff, mm_id)
    if event in (OwnerEvent.SUB_FREED_CLEAR, OwnerEvent.SUB_FREED_KEEP):
        idx = 0 if before[0][0] == mm_id else 1
        left = before[idx][1] - diff
        if left < -1:  # the kernel clamps this to an empty slot
            folio_set_mm_id(folio, idx, mm_id)
            folio.mm_id_mapcount[idx] = left
    return total, event


def add_slot1_first(folio: Folio, diff: int, mm_id: int) -> tuple[int, OwnerEvent]:
    """A new MM tries slot 1 before slot 0 (and so runs slot 1's unconditional shared-bit set)."""
    both_free = folio_mm_id(folio, 0) == MM_ID_DUMMY and folio_mm_id(folio, 1) == MM_ID_DUMMY
    total, event = folio_add_return_large_mapcount(folio, diff, mm_id)
    if both_free and event in (OwnerEvent.TAKE_SLOT0, OwnerEvent.TAKE_SLOT0_SHARED):
        folio.mm_id_mapcount[1] = folio.mm_id_mapcount[0]
        folio.mm_id_mapcount[0] = -1
        folio_set_mm_id(folio, 1, mm_id)
        folio_set_mm_id(folio, 0, MM_ID_DUMMY)
        _set_shared(folio, True)  # "slot 0 certainly maps the folio as well" no longer holds
        event = OwnerEvent.TAKE_SLOT1
    return total, event


def sub_clear_only_when_unmapped(folio: Folio, diff: int, mm_id: int) -> tuple[int, OwnerEvent]:
    """The shared bit is cleared only when the folio becomes fully unmapped."""
    was = _shared(folio)
    total, event = folio_sub_return_large_mapcount(folio, diff, mm_id)
    if event in _CLEARS and total > 0:
        _set_shared(folio, was)
    return total, event


def sub_clear_checks_slot0_only(folio: Folio, diff: int, mm_id: int) -> tuple[int, OwnerEvent]:
    """Clearing the shared bit only looks at slot 0's count (forgets slot 1 can own everything)."""
    was = _shared(folio)
    total, event = folio_sub_return_large_mapcount(folio, diff, mm_id)
    if event in _CLEARS and folio.mm_id_mapcount[0] != total - 1:
        _set_shared(folio, was)
    return total, event


def sub_keeps_stale_id(folio: Folio, diff: int, mm_id: int) -> tuple[int, OwnerEvent]:
    """An emptied slot keeps its MM id (only the count is reset)."""
    total, event = folio_sub_return_large_mapcount(folio, diff, mm_id)
    if event in (OwnerEvent.SUB_FREED_CLEAR, OwnerEvent.SUB_FREED_KEEP):
        for idx in (0, 1):
            if folio_mm_id(folio, idx) == MM_ID_DUMMY and folio.mm_id_mapcount[idx] == -1:
                folio_set_mm_id(folio, idx, mm_id)
                break
    return total, event


@dataclass(frozen=True, slots=True)
class Mutant:
    """A wrong owner-tracking variant and the bounds in which it must be caught."""

    owner: OwnerTracking
    description: str
    config: CheckConfig


_SMALL = CheckConfig(mms=2, order=1, depth=4, levels=(PTE,), ops=("map_new_anon", "map", "unmap"))
_THREE = CheckConfig(mms=3, order=1, depth=6, levels=(PTE,), ops=("map", "unmap"))

MUTANTS: dict[str, Mutant] = {
    m.owner.name: m
    for m in (
        Mutant(OwnerTracking("never-clear-shared", folio_add_return_large_mapcount, sub_never_clears),
               "the shared bit is never cleared (restored after every sub)", _SMALL),
        Mutant(OwnerTracking("slot1-not-shared", add_slot1_not_shared, folio_sub_return_large_mapcount),
               "taking slot 1 does not set the shared bit", _SMALL),
        Mutant(OwnerTracking("slot0-not-shared", add_slot0_not_shared, folio_sub_return_large_mapcount),
               "taking free slot 0 while other mappings exist does not set the shared bit", _SMALL),
        Mutant(OwnerTracking("no-clamp", folio_add_return_large_mapcount, sub_no_clamp),
               "a per-MM count that would go negative is not clamped (the slot keeps it)", _THREE),
        Mutant(OwnerTracking("slot1-first", add_slot1_first, folio_sub_return_large_mapcount),
               "a new MM takes slot 1 before slot 0", _SMALL),
        Mutant(OwnerTracking("clear-only-unmapped", folio_add_return_large_mapcount,
                             sub_clear_only_when_unmapped),
               "the shared bit is cleared only at full unmap", _SMALL),
        Mutant(OwnerTracking("clear-slot0-only", folio_add_return_large_mapcount, sub_clear_checks_slot0_only),
               "clearing the shared bit only compares slot 0's count with the total", _SMALL),
        Mutant(OwnerTracking("stale-id", folio_add_return_large_mapcount, sub_keeps_stale_id),
               "an emptied slot keeps its MM id", _SMALL),
    )
}


def owner_by_name(name: str | None) -> OwnerTracking:
    """The kernel's implementation (None or "kernel") or a mutant; ValueError for an unknown name."""
    if name is None or name == KERNEL_OWNER.name:
        return KERNEL_OWNER
    try:
        return MUTANTS[name].owner
    except KeyError:
        raise ValueError(f"unknown mutant {name!r} (known: {', '.join(MUTANTS)})") from None
