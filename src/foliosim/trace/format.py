"""The rmap trace's JSON Lines form: operations in, state records out.

The contract is ``docs/trace-format.md``; :func:`parse_op` accepts exactly
its operations and :func:`folio_record` produces exactly its fields.
"""

from __future__ import annotations

from typing import Any

from foliosim.errors import Rejected
from foliosim.folio import (
    Folio,
    folio_entire_mapcount,
    folio_entirely_mapped_flag,
    folio_mapcount,
    folio_maybe_mapped_shared,
    folio_mm_id,
    folio_nr_pages_mapped,
    pte_mapcounts_rle,
)
from foliosim.rmap import PMD, PTE, RmapLevel
from foliosim.system import OPS, FolioHandle, Op

_FIELDS: dict[str, tuple[str, ...]] = {
    "mm_new": ("mm",),
    "mm_free": ("mm",),
    "folio_new": ("folio", "order"),
    "folio_free": ("folio",),
    "map_new_anon": ("folio", "mm", "level"),
    "map": ("folio", "mm", "level"),
    "dup": ("folio", "mm", "level"),
    "unmap": ("folio", "mm", "level"),
}
_LEVELS = {"pte": PTE, "pmd": PMD}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_op(obj: dict[str, Any]) -> Op:
    """Turn one decoded JSON object into an :class:`Op`, or raise Rejected naming the field.

    Unknown keys are rejected (a typo must not silently change meaning), except
    ``comment`` and keys starting with ``_``, which are free annotations.
    """
    kind = obj.get("op")
    if kind is None:
        raise Rejected("missing field 'op'")
    if not isinstance(kind, str):
        raise Rejected(f"field 'op' must be a string, not {type(kind).__name__}")
    if kind not in _FIELDS:
        raise Rejected(f"unknown op {kind!r} (known: {', '.join(OPS)})")
    needed = _FIELDS[kind]
    for name in needed:
        if name not in obj:
            raise Rejected(f"{kind}: missing field {name!r}")
    for name in ("mm", "folio"):
        if name in needed and (not isinstance(obj[name], str) or not obj[name]):
            raise Rejected(f"{kind}: field {name!r} must be a non-empty string, not {obj[name]!r}")
    allowed = set(needed) | {"op"}
    level: RmapLevel | None = None
    page, nr = 0, 1
    order: int | None = None
    if kind == "folio_new":
        order = obj["order"]
        if not _is_int(order):
            raise Rejected(f"folio_new: field 'order' must be an integer, not {order!r}")
    if "level" in needed:
        raw_level = obj["level"]
        if raw_level not in _LEVELS:
            raise Rejected(f"{kind}: field 'level' must be \"pte\" or \"pmd\", not {raw_level!r}")
        level = _LEVELS[raw_level]
        if level is PTE and kind != "map_new_anon":
            allowed |= {"page", "nr"}
            if "page" not in obj:
                raise Rejected(f"{kind}: missing field 'page' (required at pte level)")
            page = obj["page"]
            nr = obj.get("nr", 1)
            if not _is_int(page):
                raise Rejected(f"{kind}: field 'page' must be an integer, not {page!r}")
            if not _is_int(nr):
                raise Rejected(f"{kind}: field 'nr' must be an integer, not {nr!r}")
            if nr < 1:
                raise Rejected(f"{kind}: field 'nr' must be at least 1, not {nr}")
            if page < 0:
                raise Rejected(f"{kind}: field 'page' must not be negative, not {page}")
    for key in obj:
        if key not in allowed and key != "comment" and not key.startswith("_"):
            if key in ("page", "nr") and level is PMD:
                raise Rejected(f"{kind}: field {key!r} is only for pte level (a pmd maps the whole folio)")
            raise Rejected(f"{kind}: unexpected field {key!r}")
    return Op(kind, obj.get("mm"), obj.get("folio"), order, level, page, nr)


def folio_record(handle: FolioHandle) -> dict[str, Any]:
    """The contract's state fields for one folio (everything but ``step`` and ``op``)."""
    folio: Folio = handle.folio
    cfg = folio.config
    large = folio.order > 0
    page_counts = cfg.page_mapcount or not large
    rec: dict[str, Any] = {
        "folio": handle.name,
        "order": folio.order,
        "mapcount": folio_mapcount(folio),
        "entire_mapcount": folio_entire_mapcount(folio) if large else None,
        "nr_pages_mapped": folio_nr_pages_mapped(folio) if large and cfg.page_mapcount else None,
        "entirely_mapped": folio_entirely_mapped_flag(folio) if large and cfg.page_mapcount else None,
        "pte_mapcounts": pte_mapcounts_rle(folio) if page_counts else None,
    }
    if large:
        rec["mm_id"] = [folio_mm_id(folio, 0), folio_mm_id(folio, 1)]
        rec["mm_id_mapcount"] = list(folio.mm_id_mapcount)
        rec["shared_bit"] = bool(folio.mm_ids & cfg.shared_bit)
        rec["mm_ids_word"] = folio.mm_ids
    else:
        rec["mm_id"] = None
        rec["mm_id_mapcount"] = None
        rec["shared_bit"] = None
        rec["mm_ids_word"] = None
    rec["maybe_mapped_shared"] = folio_maybe_mapped_shared(folio)
    rec["mapped_mms"] = handle.truth.mapped_mms()
    return rec
