"""A terminal picture of one folio: counts, slots and the ``_mm_ids`` word bit by bit.

Pure: returns lines of text; the CLI prints them.
"""

from __future__ import annotations

from foliosim.explain import explain_verdict
from foliosim.folio import (
    folio_entire_mapcount,
    folio_entirely_mapped_flag,
    folio_mapcount,
    folio_mm_id,
    folio_nr_pages_mapped,
    pte_mapcounts_rle,
)
from foliosim.kconfig import MM_ID_DUMMY
from foliosim.system import FolioHandle, RmapSystem


def render_mm_ids_word(word: int, word_bits: int, names: dict[int, str] | None = None) -> list[str]:
    """Draw ``_mm_ids`` bit by bit with the two ids, the lock bit and the shared bit labelled."""
    names = names or {}
    half = word_bits // 2
    id_bits = half - 1
    bits = format(word, f"0{word_bits}b")
    shared, id1, lock, id0 = bits[0], bits[1:half], bits[half], bits[half + 1:]
    mask = (1 << id_bits) - 1
    slot0 = word & mask
    slot1 = (word >> half) & mask

    def label(idx: int) -> str:
        for text in (f" slot {idx} MM id ({id_bits} bits) ", f" slot {idx} id ", f"id{idx}"):
            if len(text) <= id_bits - 2:
                return f"[{text.center(id_bits - 2, '-')}]"
        return f"id{idx}".ljust(id_bits)

    def who(mm_id: int) -> str:
        if mm_id == MM_ID_DUMMY:
            return "= 0 (free)"
        return f"= {mm_id} ({names[mm_id]})" if mm_id in names else f"= {mm_id}"

    hi = str(word_bits - 1)
    pos = (f"{hi:<3}{word_bits - 2!s:<{id_bits - 2}}{half!s:>2} "
           f"{half - 1!s:<3}{half - 2!s:<{id_bits - 1}}0")
    return [
        f"_mm_ids = {word:#0{word_bits // 4 + 2}x}  ({word_bits}-bit unsigned long; "
        f"lock bit {half - 1}, shared bit {word_bits - 1})",
        "bit " + pos,
        "    " + f"S  {label(1)} L  {label(0)}",
        "    " + f"{shared}  {id1} {lock}  {id0}",
        "    " + f"{'':3}{who(slot1):<{id_bits}}{'':3}{who(slot0)}",
        f"    S = maybe-mapped-shared bit: {shared}    L = bit spinlock: {lock}"
        f"{' (held!)' if lock == '1' else ' (free)'}",
    ]


def render_folio(system: RmapSystem, handle: FolioHandle) -> list[str]:
    """Every field of one folio and the verdict, as lines of text."""
    folio = handle.folio
    cfg = folio.config
    names = {mm.mm_id: mm.name for mm in system.mms.values()}
    lines = [f"folio {handle.name}: order {folio.order} ({folio.nr_pages} pages), {cfg.describe()}"]
    lines.append(f"  mapcount (folio_mapcount)         {folio_mapcount(folio)}")
    per_page = " ".join(f"{value}x{run}" if run > 1 else str(value) for value, run in pte_mapcounts_rle(folio))
    if folio.order == 0:
        lines.append(f"  page _mapcount + 1                {folio.page_mapcount[0] + 1}")
    else:
        lines.append(f"  large mapcount                    {folio.large_mapcount + 1}   "
                     f"(stored {folio.large_mapcount})")
        lines.append(f"  entire mapcount (PMD mappings)    {folio_entire_mapcount(folio)}")
        if cfg.page_mapcount:
            lines.append(f"  _nr_pages_mapped                  {folio_nr_pages_mapped(folio)}   "
                         f"ENTIRELY_MAPPED {'set' if folio_entirely_mapped_flag(folio) else 'clear'}")
            lines.append(f"  per-page PTE mapcounts            {per_page}")
        else:
            lines.append("  _nr_pages_mapped, per-page        not maintained (CONFIG_NO_PAGE_MAPCOUNT)")
        for idx in (0, 1):
            mm_id = folio_mm_id(folio, idx)
            stored = folio.mm_id_mapcount[idx]
            who = "free" if mm_id == MM_ID_DUMMY else names.get(mm_id, "?")
            lines.append(f"  slot {idx}: MM id {mm_id:<6} ({who:<8}) mapcount {stored + 1:<6} (stored {stored})")
        lines.extend("  " + line for line in render_mm_ids_word(folio.mm_ids, cfg.word_bits, names))
    lines.append(f"  really mapped by                  {', '.join(map(str, handle.truth.mapped_mms())) or 'nobody'}")
    lines.append(f"  folio_maybe_mapped_shared()       {explain_verdict(folio, handle.truth)}")
    return lines
