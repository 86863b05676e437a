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
from foliosim.schemes.kernel import KernelDesign
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
        # replaying a KernelDesign's recorded run (share_rmap_run): its tape, the next entry, each large folio's
        # answer after its last map/dup/unmap
        self._tape: list[tuple[Op, bool | None]] | None = None
        self._at = 0
        self._likely: dict[str, bool] = {}

    def apply(self, op: Op) -> UpdateCost:
        tape = self._tape
        if tape is None:
            self.system.apply(op)
            return super().apply(op)
        at = self._at
        if at >= len(tape) or tape[at][0] is not op:
            raise RuntimeError(f"legacy: op {at} is not the one the shared rmap run recorded")
        self._at = at + 1
        cost = super().apply(op)
        likely = tape[at][1]
        if likely is not None:
            self._likely[op.folio] = likely  # type: ignore[index]
        elif op.op == "folio_free":
            self._likely.pop(op.folio, None)  # type: ignore[arg-type]
        return cost

    def _update(self, op: Op, folio: str, mm: str, order: int, diff: int) -> Charge:
        if order == 0:
            return NO_CHARGE
        if op.op == "map_new_anon":
            return self._new_charge
        return self._add_charge

    def _maybe_shared_large(self, folio: str) -> bool:
        if self._tape is not None:
            return self._likely[folio]  # an answer depends on the folio's own state, changed by its ops only
        return folio_likely_mapped_shared(self.system.folio(folio))

    def _owner_large(self, folio: str) -> str | None:
        return None  # per-page counts do not say which MM maps the folio

    def metadata_bytes(self, folio: str) -> int:
        order = self.orders[folio]
        return 4 * (1 << order) + 4 if order else 0  # per-page _mapcount + _nr_pages_mapped


#: What :func:`share_rmap_run` hands on: the recording KernelDesign's tape and its configuration.
SharedRun = tuple[list[tuple[Op, bool | None]], KernelConfig]


def share_rmap_run(design: Design, shared: SharedRun | None) -> SharedRun | None:
    """Let ``legacy`` reuse ``kernel``'s core-model run when both are fed the same ops one after the other.

    Both keep an :class:`~foliosim.system.RmapSystem` that evolves alike when the configuration has per-page
    mapcounts (legacy forces them on): a ``kernel`` design given no ``shared`` records its run (the op objects and
    ``folio_likely_mapped_shared()`` after each map/dup/unmap of a large folio); a later ``legacy`` design on the
    same configuration takes its answers from that record instead of applying every op to a system of its own
    (:meth:`LegacyDesign.apply` checks that it is fed the very same ops, in order). Call it on each design before
    feeding it, in order, the ops that every one of them gets; returns what to pass for the next design.
    """
    if shared is None:
        if isinstance(design, KernelDesign) and design.config.page_mapcount:
            return design.record(), design.config
        return None
    if isinstance(design, LegacyDesign) and design.config == shared[1] and design.system.config == shared[1]:
        design._tape = shared[0]
    return shared
