"""``legacy``: the pre-v6.15 heuristic ``folio_likely_mapped_shared()`` (v6.14 include/linux/mm.h).

It reads the per-page mapcounts, so this design keeps its own core-model
folios with CONFIG_PAGE_MAPCOUNT whatever the simulated kernel uses, and asks
:func:`foliosim.folio.folio_likely_mapped_shared` -- which guesses from the
first page and so can answer "exclusive" for a folio two MMs map partially.
Costs are v6.14's: one atomic per page mapcount touched (or on
``_entire_mapcount`` for a PMD), one on ``_nr_pages_mapped`` when it changes
(charged by :class:`foliosim.schemes.cost.PageMapcounts`, always, since v6.14 has no
CONFIG_NO_PAGE_MAPCOUNT), one ``atomic_add``/``atomic_sub`` on ``_large_mapcount``,
no lock.
"""

from __future__ import annotations

from dataclasses import replace

from foliosim.folio import folio_likely_mapped_shared
from foliosim.kconfig import KernelConfig
from foliosim.schemes.base import Design, UpdateCost
from foliosim.schemes.cost import NO_CHARGE, Charge, meta_line
from foliosim.system import Op, RmapSystem


class LegacyDesign(Design):
    """Per-page mapcounts and the first-page guess."""

    name = "legacy"
    sound = False
    always_page_mapcount = True
    answers_per_folio = True

    def __init__(self, config: KernelConfig) -> None:
        super().__init__(config)
        self._meta = meta_line(config)
        lines = frozenset((self._meta,))
        self._new_charge = Charge(lines=lines)  # plain stores into an unpublished folio
        self._add_charge = Charge(atomics=1, lines=lines)  # v6.14 folio_add/sub_large_mapcount(): atomic_add/sub
        self.system = RmapSystem(replace(config, no_page_mapcount=False))

    def apply(self, op: Op) -> UpdateCost:
        self.system.apply(op)
        return super().apply(op)

    def _update(self, op: Op, folio: str, mm: str, order: int, diff: int) -> Charge:
        if order == 0:
            return NO_CHARGE
        if op.op == "map_new_anon":
            return self._new_charge
        return self._add_charge

    def _maybe_shared_large(self, folio: str) -> bool:
        return folio_likely_mapped_shared(self.system.folio(folio))

    def _owner_large(self, folio: str) -> str | None:
        return None  # per-page counts do not say which MM maps the folio

    def metadata_bytes(self, folio: str) -> int:
        order = self.orders[folio]
        return 4 * (1 << order) + 4 if order else 0  # per-page _mapcount + _nr_pages_mapped
