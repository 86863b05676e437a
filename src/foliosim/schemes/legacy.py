"""``legacy``: the pre-v6.15 heuristic ``folio_likely_mapped_shared()`` (v6.14 include/linux/mm.h).

It reads the per-page mapcounts, so this design keeps its own core-model
folios with CONFIG_PAGE_MAPCOUNT whatever the simulated kernel uses, and asks
:func:`foliosim.folio.folio_likely_mapped_shared` -- which guesses from the
first page and so can answer "exclusive" for a folio two MMs map partially.
Costs are v6.14's: one atomic per page mapcount touched, one on
``_nr_pages_mapped`` when it changes, one on ``_large_mapcount``, no lock.
"""

from __future__ import annotations

from dataclasses import replace

from foliosim.folio import folio_likely_mapped_shared
from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD
from foliosim.schemes.base import FREE, Design, UpdateCost, small_cost
from foliosim.system import Op, RmapSystem


class LegacyDesign(Design):
    """Per-page mapcounts and the first-page guess."""

    name = "legacy"
    sound = False

    def __init__(self, config: KernelConfig) -> None:
        super().__init__(config)
        self.system = RmapSystem(replace(config, no_page_mapcount=False))
        self._pages_mapped_changed = False

    def apply(self, op: Op) -> UpdateCost:
        handle = self.system.folios.get(op.folio) if op.folio is not None else None
        before = handle.folio.nr_pages_mapped if handle is not None else 0
        self.system.apply(op)
        self._pages_mapped_changed = handle is not None and handle.folio.nr_pages_mapped != before
        return super().apply(op)

    def _update(self, op: Op, folio: str, mm: str, order: int, diff: int) -> UpdateCost:
        if order == 0:
            return small_cost()
        if op.op == "map_new_anon":
            return FREE  # plain stores into an unpublished folio
        per_page = 1 if op.level is PMD else op.nr  # _entire_mapcount or one _mapcount per page
        return UpdateCost(atomics=per_page + 1 + int(self._pages_mapped_changed))

    def _maybe_shared_large(self, folio: str) -> bool:
        return folio_likely_mapped_shared(self.system.folio(folio))

    def _owner_large(self, folio: str) -> str | None:
        return None  # per-page counts do not say which MM maps the folio

    def metadata_bytes(self, folio: str) -> int:
        order = self.orders[folio]
        return 4 * (1 << order) + 4 if order else 0  # per-page _mapcount + _nr_pages_mapped
