"""One-line explanations of owner-tracking decisions and of the verdict.

Used by ``foliosim examples``, the process simulator's timeline and the viewer,
so the wording of a rule lives in one place.
"""

from __future__ import annotations

from foliosim.folio import Folio, folio_mapcount, folio_maybe_mapped_shared, folio_mm_id
from foliosim.kconfig import MM_ID_DUMMY
from foliosim.owner import OwnerEvent
from foliosim.truth import FolioTruth


def _name(mm_id: int, names: dict[int, str]) -> str:
    if mm_id == MM_ID_DUMMY:
        return "free"
    return names.get(mm_id, f"id {mm_id}")


def explain_event(event: OwnerEvent | None, mm: str, folio: Folio, names: dict[int, str]) -> str:
    """Why the slots and the shared bit look as they do after ``mm``'s update."""
    total = folio_mapcount(folio)
    slots = [folio_mm_id(folio, i) for i in (0, 1)]
    counts = [c + 1 for c in folio.mm_id_mapcount]
    if event is None:
        return "small folio: no slots; shared means mapcount > 1"
    if event is OwnerEvent.SET:
        return f"{mm} maps the new folio: slot 0 = {mm} with all {total} mappings, not shared"
    if event in (OwnerEvent.ADD_SLOT0, OwnerEvent.ADD_SLOT1):
        idx = 0 if event is OwnerEvent.ADD_SLOT0 else 1
        return f"{mm} already owns slot {idx}: its count grows to {counts[idx]}; the shared bit is not touched"
    if event in (OwnerEvent.ADD_OVERFLOW0, OwnerEvent.ADD_OVERFLOW1):
        idx = 0 if event is OwnerEvent.ADD_OVERFLOW0 else 1
        return (f"{mm}'s per-MM count in slot {idx} overflowed its short: "
                "slot freed and shared bit set (32-bit kernels only)")
    if event is OwnerEvent.TAKE_SLOT0:
        return f"{mm} takes free slot 0 and nothing else maps the folio: not shared"
    if event is OwnerEvent.TAKE_SLOT0_SHARED:
        return f"{mm} takes free slot 0 while {total - counts[0]} other mapping(s) exist: shared bit set"
    if event is OwnerEvent.TAKE_SLOT1:
        return f"{mm} takes free slot 1 while slot 0 ({_name(slots[0], names)}) maps it: shared bit set"
    if event is OwnerEvent.ADD_UNTRACKED:
        return (f"both slots are taken ({_name(slots[0], names)}, {_name(slots[1], names)}): "
                f"{mm}'s mappings are not tracked")
    if event is OwnerEvent.SUB_KEEP:
        own = 0 if names.get(slots[0]) == mm else 1
        return (f"{mm} keeps {counts[own]} tracked mapping(s) in slot {own}: "
                "the shared bit is not re-evaluated")
    who = f"{mm}'s slot emptied" if event in (OwnerEvent.SUB_FREED_CLEAR, OwnerEvent.SUB_FREED_KEEP) \
        else f"{mm} was not tracked"
    if event in (OwnerEvent.SUB_FREED_CLEAR, OwnerEvent.SUB_UNTRACKED_CLEAR):
        if total == 0:
            return f"{who}; nothing is mapped any more: both slots free, shared bit cleared"
        owner = 0 if counts[0] == total else 1
        return (f"{who}; slot {owner} ({_name(slots[owner], names)}) owns all {total} "
                "mapping(s): shared bit cleared")
    return (f"{who}; no slot owns all {total} mapping(s) "
            f"(slots hold {max(counts[0], 0)} and {max(counts[1], 0)}): the shared bit stays as it was")


def verdict(folio: Folio) -> str:
    """``"maybe mapped shared"`` or ``"mapped exclusively"``, as folio_maybe_mapped_shared() answers."""
    return "maybe mapped shared" if folio_maybe_mapped_shared(folio) else "mapped exclusively"


def explain_verdict(folio: Folio, truth: FolioTruth) -> str:
    """The verdict, why, and whether it matches the ground truth."""
    mapcount = folio_mapcount(folio)
    shared = folio_maybe_mapped_shared(folio)
    real = truth.nr_mapping_mms()
    if folio.order == 0:
        why = f"mapcount {mapcount} {'>' if shared else '<='} 1"
    elif mapcount <= 1:
        why = f"mapcount {mapcount} <= 1: one mapping is always exclusive"
    else:
        why = f"mapcount {mapcount} > 1 and the shared bit is {'set' if shared else 'clear'}"
    text = f"{verdict(folio)} ({why})"
    if shared and real <= 1:
        text += f"; false positive: really mapped by {real} MM"
    elif not shared and real > 1:
        text += f"; UNSOUND: really mapped by {real} MMs"
    return text
