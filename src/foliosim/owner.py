"""MM owner tracking for large folios: the two slots, the shared bit, the bit lock.

Models the CONFIG_MM_ID part of include/linux/rmap.h in v6.15:
``folio_set_large_mapcount()``, ``folio_add_return_large_mapcount()`` and
``folio_sub_return_large_mapcount()`` with ``__folio_large_mapcount_sanity_checks()``,
``folio_lock_large_mapcount()`` / ``folio_unlock_large_mapcount()`` and
``folio_set_mm_id()``. All values are stored raw (offset by -1) and every
store wraps like the C field it models.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import NamedTuple

from foliosim.cint import S32
from foliosim.errors import Rejected
from foliosim.folio import Folio, folio_mm_id
from foliosim.kconfig import MM_ID_DUMMY, MM_ID_MIN

SANITY = "__folio_large_mapcount_sanity_checks"


class OwnerEvent(IntEnum):
    """Which branch of the owner-tracking update ran (for explanations and metrics)."""

    SET = 0  # folio_set_large_mapcount(): slot 0 = this MM, nothing else mapped
    ADD_SLOT0 = 1  # this MM owns slot 0: its count grows
    ADD_SLOT1 = 2  # this MM owns slot 1: its count grows
    ADD_OVERFLOW0 = 3  # 32-bit: slot 0's short overflowed -> freed, shared bit set
    ADD_OVERFLOW1 = 4
    TAKE_SLOT0 = 5  # took free slot 0; nothing else mapped -> stays exclusive
    TAKE_SLOT0_SHARED = 6  # took free slot 0 while other mappings exist -> shared bit set
    TAKE_SLOT1 = 7  # took free slot 1 -> shared bit set (slot 0 maps too)
    ADD_UNTRACKED = 8  # both slots busy: this MM's mappings are not tracked
    SUB_KEEP = 9  # this MM keeps >= 1 tracked mapping: nothing re-evaluated
    SUB_FREED_CLEAR = 10  # this MM's slot emptied; one slot owns all -> shared bit cleared
    SUB_FREED_KEEP = 11  # this MM's slot emptied; no slot owns all -> bit unchanged
    SUB_UNTRACKED_CLEAR = 12  # untracked MM unmapped; one slot now owns all -> cleared
    SUB_UNTRACKED_KEEP = 13  # untracked MM unmapped; bit unchanged


def folio_lock_large_mapcount(folio: Folio) -> None:
    """``folio_lock_large_mapcount()``: bit_spin_lock on ``_mm_ids``.

    A sequential model can never find the lock held; if it is, the caller
    would spin forever, so that is a rejection rather than a wait.
    """
    cfg = folio.config
    if folio.mm_ids & cfg.lock_bit:
        raise Rejected("the large mapcount bit spinlock is already held: would spin forever",
                       check="bit_spin_lock")
    folio.mm_ids |= cfg.lock_bit


def folio_unlock_large_mapcount(folio: Folio) -> None:
    """``folio_unlock_large_mapcount()``: the non-atomic ``__bit_spin_unlock``."""
    folio.mm_ids &= ~folio.config.lock_bit


def folio_set_mm_id(folio: Folio, idx: int, mm_id: int) -> None:
    """``folio_set_mm_id()``: replace slot ``idx``'s id bits, keep its flag bit."""
    cfg = folio.config
    shift = idx * cfg.slot_shift
    word = folio.mm_ids & ~(cfg.mm_id_mask << shift)
    folio.mm_ids = word | ((mm_id & cfg.mm_id_mask) << shift)


def large_mapcount_sanity_failure(folio: Folio, diff: int, mm_id: int) -> str | None:
    """``__folio_large_mapcount_sanity_checks()``: the first check that fires, in words.

    Also reports a held bit lock, which a sequential caller would deadlock on.
    Returns None when every check passes.
    """
    cfg = folio.config
    if folio.order == 0:
        return "the folio is not large (order 0 has no large mapcount)"
    if diff <= 0:
        return f"diff {diff} is not positive"
    if mm_id < MM_ID_MIN or mm_id > cfg.mm_id_max:
        return f"MM id {mm_id} is outside [{MM_ID_MIN}, {cfg.mm_id_max}]"
    nr_pages = folio.nr_pages
    if diff > nr_pages:
        return f"diff {diff} exceeds the folio's {nr_pages} pages"
    if nr_pages - 1 > cfg.mm_id_mapcount_max:
        return (f"a {nr_pages}-page folio cannot be tracked with a "
                f"{cfg.mm_id_mapcount_type.name} per-MM mapcount "
                f"(nr_pages - 1 > {cfg.mm_id_mapcount_max}); largest order on "
                f"{cfg.word_bits}-bit is {cfg.mm_id_mapcount_max.bit_length()}")
    for idx in (0, 1):
        slot_id = folio_mm_id(folio, idx)
        count = folio.mm_id_mapcount[idx]
        if slot_id == MM_ID_DUMMY and count != -1:
            return f"slot {idx} is free (id 0) but its mapcount is {count}, not -1"
        if slot_id != MM_ID_DUMMY and count < 0:
            return f"slot {idx} holds MM id {slot_id} but its mapcount is {count} (< 0)"
    if folio.large_mapcount + 1 < 1 and folio.mm_ids & cfg.shared_bit:
        return "the folio is unmapped but its shared bit is set"
    if folio.mm_ids & cfg.lock_bit:
        return "the large mapcount bit spinlock is already held"
    return None


def _check(folio: Folio, diff: int, mm_id: int) -> None:
    # Every check of large_mapcount_sanity_failure() passing, tested at once; else it says which one fails.
    cfg = folio.config
    order = folio.order
    if order and 0 < diff <= 1 << order and MM_ID_MIN <= mm_id <= cfg.mm_id_max and \
            (1 << order) - 1 <= cfg.mm_id_mapcount_max and not folio.mm_ids & cfg.lock_bit:
        ids, mask, counts = folio.mm_ids, cfg.mm_id_mask, folio.mm_id_mapcount
        id0, id1, count0, count1 = ids & mask, (ids >> cfg.slot_shift) & mask, counts[0], counts[1]
        if (count0 == -1 if id0 == MM_ID_DUMMY else count0 >= 0) and \
                (count1 == -1 if id1 == MM_ID_DUMMY else count1 >= 0) and \
                not (folio.large_mapcount + 1 < 1 and ids & cfg.shared_bit):
            return
    reason = large_mapcount_sanity_failure(folio, diff, mm_id)
    if reason is not None:
        raise Rejected(reason, check=SANITY)


def folio_set_large_mapcount(folio: Folio, mapcount: int, mm_id: int) -> OwnerEvent:
    """``folio_set_large_mapcount()``: a fresh folio mapped ``mapcount`` times by one MM.

    Takes no lock (the folio is not yet visible to anybody else).
    """
    _check(folio, mapcount, mm_id)
    if folio_mm_id(folio, 0) != MM_ID_DUMMY or folio_mm_id(folio, 1) != MM_ID_DUMMY:
        raise Rejected("folio_set_large_mapcount() on a folio whose slots are not free",
                       check="folio_set_large_mapcount")
    folio.large_mapcount = S32.wrap(mapcount - 1)
    folio.mm_id_mapcount[0] = folio.config.mm_id_mapcount_type.wrap(mapcount - 1)
    folio_set_mm_id(folio, 0, mm_id)
    return OwnerEvent.SET


def folio_add_return_large_mapcount(folio: Folio, diff: int, mm_id: int) -> tuple[int, OwnerEvent]:
    """``folio_add_return_large_mapcount()``: add ``diff`` mappings by ``mm_id``.

    Returns the new logical large mapcount and the branch taken.
    """
    _check(folio, diff, mm_id)
    cfg = folio.config
    ctype = cfg.mm_id_mapcount_type
    counts = folio.mm_id_mapcount
    folio_lock_large_mapcount(folio)
    new_val = S32.wrap(folio.large_mapcount + diff)
    folio.large_mapcount = new_val
    if folio_mm_id(folio, 0) == mm_id:
        counts[0] = ctype.wrap(counts[0] + diff)
        event = OwnerEvent.ADD_SLOT0
        # Only a 32-bit kernel checks: its short per-MM count can go negative.
        if not cfg.is_64bit and counts[0] < 0:
            counts[0] = -1
            folio_set_mm_id(folio, 0, MM_ID_DUMMY)
            folio.mm_ids |= cfg.shared_bit
            event = OwnerEvent.ADD_OVERFLOW0
    elif folio_mm_id(folio, 1) == mm_id:
        counts[1] = ctype.wrap(counts[1] + diff)
        event = OwnerEvent.ADD_SLOT1
        if not cfg.is_64bit and counts[1] < 0:
            counts[1] = -1
            folio_set_mm_id(folio, 1, MM_ID_DUMMY)
            folio.mm_ids |= cfg.shared_bit
            event = OwnerEvent.ADD_OVERFLOW1
    elif folio_mm_id(folio, 0) == MM_ID_DUMMY:
        folio_set_mm_id(folio, 0, mm_id)
        counts[0] = ctype.wrap(diff - 1)
        event = OwnerEvent.TAKE_SLOT0
        if new_val != diff - 1:  # other mappings existed already
            folio.mm_ids |= cfg.shared_bit
            event = OwnerEvent.TAKE_SLOT0_SHARED
    elif folio_mm_id(folio, 1) == MM_ID_DUMMY:
        folio_set_mm_id(folio, 1, mm_id)
        counts[1] = ctype.wrap(diff - 1)
        folio.mm_ids |= cfg.shared_bit  # slot 0 maps the folio as well
        event = OwnerEvent.TAKE_SLOT1
    else:
        event = OwnerEvent.ADD_UNTRACKED
    folio_unlock_large_mapcount(folio)
    return new_val + 1, event


def folio_sub_return_large_mapcount(folio: Folio, diff: int, mm_id: int) -> tuple[int, OwnerEvent]:
    """``folio_sub_return_large_mapcount()``: remove ``diff`` mappings by ``mm_id``.

    A per-MM count that would go negative is clamped: the slot is freed (valid
    when the MM mapped some pages while it had no slot). Returns the new logical
    large mapcount and the branch taken.
    """
    _check(folio, diff, mm_id)
    cfg = folio.config
    ctype = cfg.mm_id_mapcount_type
    counts = folio.mm_id_mapcount
    folio_lock_large_mapcount(folio)
    new_val = S32.wrap(folio.large_mapcount - diff)
    folio.large_mapcount = new_val
    freed = False
    for idx in (0, 1):
        if folio_mm_id(folio, idx) == mm_id:
            counts[idx] = ctype.wrap(counts[idx] - diff)
            if counts[idx] >= 0:
                folio_unlock_large_mapcount(folio)
                return new_val + 1, OwnerEvent.SUB_KEEP
            counts[idx] = -1
            folio_set_mm_id(folio, idx, MM_ID_DUMMY)
            freed = True
            break
    # One slot owning every mapping (or none left at all) means exclusive.
    if counts[0] == new_val or counts[1] == new_val:
        folio.mm_ids &= ~cfg.shared_bit
        event = OwnerEvent.SUB_FREED_CLEAR if freed else OwnerEvent.SUB_UNTRACKED_CLEAR
    else:
        event = OwnerEvent.SUB_FREED_KEEP if freed else OwnerEvent.SUB_UNTRACKED_KEEP
    folio_unlock_large_mapcount(folio)
    return new_val + 1, event


AddSub = Callable[[Folio, int, int], tuple[int, OwnerEvent]]


class OwnerTracking(NamedTuple):
    """An implementation of the owner-tracking update pair the rmap layer calls.

    The kernel's is :data:`KERNEL_OWNER`; the checker passes deliberately wrong
    variants (mutants) through the same rmap code to show that it catches them.
    """

    name: str
    add: AddSub
    sub: AddSub


KERNEL_OWNER = OwnerTracking("kernel", folio_add_return_large_mapcount, folio_sub_return_large_mapcount)
