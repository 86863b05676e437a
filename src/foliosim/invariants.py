"""Invariants that relate a folio's kernel state to the ground truth.

Each check returns human-readable violations (empty when all hold). They are
what the property tests, the stateful tests and the simulator assert after
every step: counters agree with the truth, the answer is sound, the bit lock is
free between operations.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from foliosim.folio import (
    Folio,
    folio_entire_mapcount,
    folio_mapcount,
    folio_maybe_mapped_shared,
    folio_mm_id,
)
from foliosim.kconfig import ENTIRELY_MAPPED, MM_ID_DUMMY
from foliosim.truth import FolioTruth


def counter_violations(folio: Folio, truth: FolioTruth, mm_ids: Mapping[Hashable, int]) -> list[str]:
    """Every counter equals what the truth derives; slots never over-count their MM.

    ``mm_ids`` maps the truth's MM keys to their MM ids.
    """
    out: list[str] = []
    cfg = folio.config
    entries = truth.total_entries()
    if folio.order == 0:
        if folio_mapcount(folio) != entries:
            out.append(f"mapcount {folio_mapcount(folio)} != {entries} page-table entries")
        return out
    if folio_mapcount(folio) != entries:
        out.append(f"large mapcount {folio_mapcount(folio)} != {entries} page-table entries")
    pmds = truth.pmd_entries()
    if cfg.has_entire_mapcount(folio.order) and folio_entire_mapcount(folio) != pmds:
        out.append(f"entire mapcount {folio_entire_mapcount(folio)} != {pmds} PMD mappings")
    if cfg.page_mapcount:
        mapped_pages = 0
        for page in range(folio.nr_pages):
            want = truth.pte_mapcount(page)
            mapped_pages += want > 0
            if folio.page_mapcount[page] + 1 != want:
                out.append(f"page {page}: PTE mapcount {folio.page_mapcount[page] + 1} != {want}")
                break
        want_nr = mapped_pages + (ENTIRELY_MAPPED if pmds else 0)
        if folio.nr_pages_mapped != want_nr:
            out.append(f"_nr_pages_mapped {folio.nr_pages_mapped:#x} != {want_nr:#x}")
    else:
        if any(raw != -1 for raw in folio.page_mapcount) or folio.nr_pages_mapped:
            out.append("per-page mapcounts changed under CONFIG_NO_PAGE_MAPCOUNT")
    by_id = {mm_id: key for key, mm_id in mm_ids.items()}
    for idx in (0, 1):
        slot_id = folio_mm_id(folio, idx)
        stored = folio.mm_id_mapcount[idx]
        if slot_id == MM_ID_DUMMY:
            if stored != -1:
                out.append(f"free slot {idx} has mapcount {stored}, not -1")
            continue
        key = by_id.get(slot_id)
        real = truth.entries(key) if key is not None else 0
        if stored + 1 > real:
            out.append(f"slot {idx} counts {stored + 1} mappings for MM id {slot_id}, which has {real}")
        if stored + 1 < 1:
            out.append(f"slot {idx} holds MM id {slot_id} with mapcount {stored + 1} < 1")
    if folio_mm_id(folio, 0) != MM_ID_DUMMY and folio_mm_id(folio, 0) == folio_mm_id(folio, 1):
        out.append("one MM holds both slots")
    if folio_mm_id(folio, 0) != MM_ID_DUMMY and folio_mm_id(folio, 1) != MM_ID_DUMMY \
            and not folio.mm_ids & cfg.shared_bit:
        out.append("both slots are taken but the shared bit is clear")
    if entries == 0 and folio.mm_ids != 0:
        out.append(f"unmapped folio has _mm_ids {folio.mm_ids:#x}, not 0")
    return out


def lock_violation(folio: Folio) -> str | None:
    """The bit spinlock must be free between operations."""
    if folio.mm_ids & folio.config.lock_bit:
        return "the large mapcount bit spinlock is held between operations"
    return None


def soundness_violation(folio: Folio, truth: FolioTruth) -> str | None:
    """Never "exclusive" while two or more MMs map the folio."""
    if not folio_maybe_mapped_shared(folio) and truth.nr_mapping_mms() > 1:
        return (f"folio_maybe_mapped_shared() says exclusive but {truth.nr_mapping_mms()} MMs map it: "
                f"{', '.join(map(str, truth.mapped_mms()))}")
    return None


def precision_violation(folio: Folio, truth: FolioTruth) -> str | None:
    """The answer equals the truth (callers apply it only where precision is promised)."""
    shared = folio_maybe_mapped_shared(folio)
    # Two mappings by one MM make a small folio "maybe shared": the documented
    # false positive of small folios, so compare with mapcount there.
    really = truth.nr_mapping_mms() > 1
    if folio.order == 0:
        return None
    if shared != really and folio_mapcount(folio) > 1:
        return (f"folio_maybe_mapped_shared() says {'shared' if shared else 'exclusive'} but "
                f"{truth.nr_mapping_mms()} MM(s) map it")
    return None
