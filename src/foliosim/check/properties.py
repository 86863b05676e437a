"""The properties the checker proves, each a named predicate on one state.

A state is an RmapSystem holding the checker's folio (its kernel fields and
its ground truth) plus the "crowded" history bit. Each property returns None
when it holds, else one sentence saying what is wrong. They are evaluated on
every reachable state; the explorer also records the ``sanity`` property when
RmapSystem rejects an otherwise valid operation with the kernel's own check.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

from foliosim.check.state import FOLIO
from foliosim.folio import Folio, folio_maybe_mapped_shared, folio_mm_id
from foliosim.invariants import counter_violations, soundness_violation
from foliosim.kconfig import MM_ID_DUMMY, MM_ID_MIN
from foliosim.owner import large_mapcount_sanity_failure
from foliosim.system import RmapSystem, free_page_check_failure
from foliosim.truth import FolioTruth


@dataclass(slots=True)
class View:
    """What a property looks at: the folio, its ground truth, live MM ids, the history bit."""

    folio: Folio
    truth: FolioTruth
    mm_ids: Mapping[Hashable, int]  # live MM name -> id
    crowded: bool


def view_of(system: RmapSystem, crowded: bool, folio: str = FOLIO) -> View:
    handle = system.folios[folio]
    return View(handle.folio, handle.truth, {n: h.mm_id for n, h in system.mms.items()}, crowded)


def _names(view: View) -> str:
    return ", ".join(str(m) for m in view.truth.mapped_mms()) or "none"


def prop_sanity(view: View) -> str | None:
    """__folio_large_mapcount_sanity_checks() would not fire on the next update."""
    reason = large_mapcount_sanity_failure(view.folio, 1, MM_ID_MIN)
    return None if reason is None else f"the kernel's sanity check would fire: {reason}"


def prop_soundness(view: View) -> str | None:
    """Never "exclusive" while two or more MMs map the folio (:func:`foliosim.invariants.soundness_violation`)."""
    return soundness_violation(view.folio, view.truth)


def prop_precision(view: View) -> str | None:
    """Never "maybe shared" for an exclusive folio while at most two MMs have mapped it at once
    since it was last fully unmapped."""
    if not view.crowded and view.truth.nr_mapping_mms() <= 1 and folio_maybe_mapped_shared(view.folio):
        return (f"folio_maybe_mapped_shared() is true but only {_names(view)} maps the folio, and no more "
                "than two MMs have mapped it at once since it was last fully unmapped")
    return None


def prop_counters(view: View) -> str | None:
    """Every counter equals the ground truth (:func:`foliosim.invariants.counter_violations`);
    in addition, while at most two MMs have mapped the folio at once, every mapping MM holds a
    slot with its exact count."""
    folio, truth = view.folio, view.truth
    problems = counter_violations(folio, truth, view.mm_ids)
    if problems:
        return "; ".join(problems)
    ids = [folio_mm_id(folio, 0), folio_mm_id(folio, 1)]
    live = set(view.mm_ids.values())
    for idx in (0, 1):
        if ids[idx] != MM_ID_DUMMY and ids[idx] not in live:
            return f"slot {idx} holds MM id {ids[idx]}, which no live MM has"
    if not view.crowded:
        for mapped in truth.mapped_mms():
            name = str(mapped)
            mm_id = view.mm_ids.get(name, MM_ID_DUMMY)
            if mm_id not in ids:
                return f"{name} maps the folio but holds no slot, though at most two MMs ever mapped it at once"
            idx = ids.index(mm_id)
            if folio.mm_id_mapcount[idx] + 1 != truth.entries(name):
                return (f"slot {idx} counts {folio.mm_id_mapcount[idx] + 1} for {name}, which has "
                        f"{truth.entries(name)} mapping(s), though at most two MMs ever mapped it at once")
    return None


def prop_full_unmap(view: View) -> str | None:
    """Once nothing maps the folio, its tracking state is the initial one (and it can be freed)."""
    folio = view.folio
    if view.truth.total_entries():
        return None
    fresh = Folio(folio.config, folio.order)
    if folio.key() != fresh.key():
        diffs = [name for name, a, b in zip(_KEY_FIELDS, folio.key(), fresh.key(), strict=False) if a != b]
        return f"the folio is fully unmapped but differs from a fresh folio in {', '.join(diffs)}"
    reason = free_page_check_failure(folio)
    if reason is not None:
        return f"the fully unmapped folio cannot be freed: {reason}"
    return None


_KEY_FIELDS = ("order", "_large_mapcount", "_entire_mapcount", "_nr_pages_mapped", "_mm_id_mapcount[0]",
               "_mm_id_mapcount[1]", "_mm_ids", "_refcount", "_pincount",
               *(f"page {i} _mapcount" for i in range(64)))


def imprecise(view: View) -> bool:
    """The report, not a property: exclusive in truth but reported maybe-shared."""
    return (view.truth.total_entries() > 0 and view.truth.nr_mapping_mms() <= 1
            and folio_maybe_mapped_shared(view.folio))


Property = Callable[[View], "str | None"]

#: Every property by name, in reporting order.
PROPERTIES: dict[str, Property] = {
    "sanity": prop_sanity,
    "soundness": prop_soundness,
    "precision": prop_precision,
    "counters": prop_counters,
    "full-unmap": prop_full_unmap,
}

DESCRIPTIONS: dict[str, str] = {
    "sanity": "the kernel's own sanity checks (__folio_large_mapcount_sanity_checks) never fire on valid sequences",
    "soundness": "never 'exclusive' while two or more MMs map the folio",
    "precision": "never 'maybe shared' for an exclusive folio while at most two MMs have mapped it at once "
                 "since it was last fully unmapped",
    "counters": "mapcount, entire mapcount, page mapcounts, _nr_pages_mapped and the slots agree with the "
                "ground truth (slots exact while at most two MMs have mapped it at once)",
    "full-unmap": "full unmap returns the folio to its initial tracking state (and it can be freed)",
}


def select(names: list[str] | tuple[str, ...] | None) -> dict[str, Property]:
    """The properties called ``names`` (all when None); ValueError naming an unknown one."""
    if not names:
        return dict(PROPERTIES)
    unknown = [n for n in names if n not in PROPERTIES]
    if unknown:
        raise ValueError(f"unknown property {', '.join(unknown)} (known: {', '.join(PROPERTIES)})")
    return {n: PROPERTIES[n] for n in PROPERTIES if n in names}


def first_violation(view: View, props: dict[str, Property]) -> tuple[str, str] | None:
    for name, prop in props.items():
        msg = prop(view)
        if msg is not None:
            return name, msg
    return None
