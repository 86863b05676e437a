"""The design interface and the bookkeeping every design shares.

A design sees every rmap event (a :class:`foliosim.system.Op`: mm_new/free,
folio_new/free, map_new_anon/map/dup/unmap with MM, folio, level and page
range), answers "maybe mapped shared?" and "which MM owns it exclusively?" per
folio, and reports the metadata it keeps per folio and what each update costs
(atomic read-modify-writes and lock acquisitions).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from foliosim.errors import Rejected
from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD
from foliosim.schemes.cost import Charge, PageMapcounts
from foliosim.system import MAP_OPS, Op


@dataclass(frozen=True, slots=True)
class UpdateCost:
    """What one rmap update costs a design (docs/cost-model.md).

    ``atomics``: atomic read-modify-writes of the mapcount bookkeeping, a lock
    acquire included (``bit_spin_lock()`` is a ``test_and_set_bit_lock()``; the
    release, ``__bit_spin_unlock()`` / ``spin_unlock()``, is a plain store with
    release semantics and is not counted). ``locks``: lock acquisitions among those
    atomics. ``cache_lines``: distinct 64-byte lines of the memmap (and of any
    separate allocation) the update writes.
    """

    atomics: int = 0
    locks: int = 0
    cache_lines: int = 0


FREE = UpdateCost()
_COSTS: dict[tuple[int, int, int], UpdateCost] = {}
#: An update's cost by what decides it (Design.apply): atomics, locks, the rmap's lines, the tracking's lines,
#: the rmap's run of lines (first, last; -1, -1: none) and the tracking's run.
_CHARGED: dict[tuple[int, int, frozenset[int], frozenset[int], int, int, tuple[int, int] | None], UpdateCost] = {}


def update_cost(atomics: int, locks: int, cache_lines: int) -> UpdateCost:
    """The :class:`UpdateCost` of these numbers, one shared (immutable) object per distinct value."""
    key = (atomics, locks, cache_lines)
    cost = _COSTS.get(key)
    if cost is None:
        cost = _COSTS[key] = UpdateCost(atomics=atomics, locks=locks, cache_lines=cache_lines)
    return cost


def op_diff(op: Op) -> int:
    """Mappings an op adds or removes from the folio's large mapcount: 1 per PMD, ``nr`` PTEs."""
    return 1 if op.level is PMD else op.nr


class Design(ABC):
    """One sharing-detection design, fed the rmap event stream of a run.

    Subclasses implement :meth:`_update` (the design's own metadata),
    :meth:`_maybe_shared_large` and :meth:`_owner_large`; this base keeps each
    folio's order and total mapcount (which every design has: ``_large_mapcount``)
    and applies the rule every design shares with ``folio_maybe_mapped_shared()``:
    a folio mapped at most once is never shared; a small folio is shared when
    mapped more than once.
    """

    #: Never answers "not shared" for a folio that more than one MM maps.
    sound: bool = True
    name: str = "?"
    #: Pays the per-page mapcount bookkeeping whatever the configuration (``legacy``: v6.14 needs it).
    always_page_mapcount: bool = False
    #: Order-0 folios follow the common rule only (no state of the design's own, no tracking cost, "maybe shared"
    #: iff mapped more than once), so a scorer replaying a stream may keep them itself (evaluate.stream._Plan).
    small_folios_plain: bool = True
    #: "Maybe shared?" of a large folio depends on that folio's own state only (changed by ops on it alone), so
    #: the answer after its last op stays valid until its next op.
    answers_per_folio: bool = False

    def __init__(self, config: KernelConfig) -> None:
        self.config = config
        self.orders: dict[str, int] = {}
        self.total: dict[str, int] = {}
        self.rmap_counters = PageMapcounts(config, self.always_page_mapcount or config.page_mapcount)

    # -- the event stream -------------------------------------------------------
    def apply(self, op: Op) -> UpdateCost:
        """Consume one rmap event; returns its cost (zero for non-mapping events)."""
        kind = op.op
        if kind not in MAP_OPS:
            return self._lifecycle(op)
        folio = op.folio
        orders = self.orders
        if folio not in orders:
            raise Rejected(f"{self.name}: unknown folio {folio!r}")
        assert folio is not None and op.mm is not None
        order = orders[folio]
        pmd_level = op.level is PMD
        if kind == "map_new_anon":
            diff = 1 << order if order < self.config.pmd_order else 1
        else:
            diff = 1 if pmd_level else op.nr
        total = self.total
        if kind == "unmap":
            if diff > total[folio]:
                raise Rejected(f"{self.name}: unmap of {diff} mappings of {folio!r}, which has {total[folio]}")
            total[folio] -= diff
        else:
            total[folio] += diff
        tracking = self._update(op, folio, op.mm, order, diff)
        atomics, lines, lo, hi = self.rmap_counters.account(kind, pmd_level, folio, order, op.page, op.nr)
        key = (atomics + tracking.atomics, tracking.locks, lines, frozenset(tracking.lines), lo, hi, tracking.span)
        cost = _CHARGED.get(key)
        if cost is None:
            charge = Charge(atomics, 0, lines, None if lo < 0 else (lo, hi)) + tracking
            cost = _CHARGED[key] = update_cost(charge.atomics, charge.locks, charge.line_count())
        return cost

    def _lifecycle(self, op: Op) -> UpdateCost:
        """:meth:`apply` of an event other than map/dup/unmap/map_new_anon: a folio or an MM comes or goes."""
        kind = op.op
        if kind == "folio_new":
            assert op.folio is not None and op.order is not None
            if op.folio in self.orders:
                raise Rejected(f"{self.name}: folio {op.folio!r} already exists")
            self.orders[op.folio] = op.order
            self.total[op.folio] = 0
            self.rmap_counters.new(op.folio, op.order)
            self._new(op.folio, op.order)
            return FREE
        if kind == "folio_free":
            assert op.folio is not None
            if self.total.get(op.folio, 0):
                raise Rejected(f"{self.name}: folio {op.folio!r} freed while mapped")
            self.orders.pop(op.folio, None)
            self.total.pop(op.folio, None)
            self.rmap_counters.free(op.folio)
            self._free(op.folio)
            return FREE
        if kind in ("mm_new", "mm_free"):
            self._mm(op)
            return FREE
        raise Rejected(f"{self.name}: unknown op {kind!r}")

    def _new(self, folio: str, order: int) -> None:  # noqa: B027 - optional hook
        """A folio was allocated."""

    def _free(self, folio: str) -> None:  # noqa: B027 - optional hook
        """A folio was freed."""

    def _mm(self, op: Op) -> None:  # noqa: B027 - optional hook
        """An MM was created or freed."""

    @abstractmethod
    def _update(self, op: Op, folio: str, mm: str, order: int, diff: int) -> Charge:
        """Apply a map/dup/unmap/map_new_anon of ``diff`` mappings by ``mm``; return the tracking's own cost.

        The per-page, entire and ``_nr_pages_mapped`` bookkeeping is charged by
        :class:`~foliosim.schemes.cost.PageMapcounts`; order-0 folios cost nothing more.
        """

    # -- the questions consumers ask ----------------------------------------------
    def mapcount(self, folio: str) -> int:
        """The folio's total mapcount (``folio_mapcount()``)."""
        return self.total[folio]

    def maybe_shared(self, folio: str) -> bool:
        """"Maybe mapped shared?" as ``folio_maybe_mapped_shared()`` would ask it of this design."""
        total = self.total[folio]
        if total <= 1:
            return False
        if self.orders[folio] == 0:
            return True
        return self._maybe_shared_large(folio)

    def exclusive_owner(self, folio: str) -> str | None:
        """The MM that certainly maps every mapping of the folio, or None (not known / maybe shared)."""
        if self.total[folio] == 0 or self.orders[folio] == 0:
            return None
        return self._owner_large(folio)

    @abstractmethod
    def _maybe_shared_large(self, folio: str) -> bool:
        """The design's answer for a large folio mapped at least twice."""

    @abstractmethod
    def _owner_large(self, folio: str) -> str | None:
        """The design's exclusive owner of a mapped large folio, if it knows one."""

    @abstractmethod
    def metadata_bytes(self, folio: str) -> int:
        """Bytes of sharing-tracking metadata the design keeps for ``folio`` now."""


def make_design(spec: str, config: KernelConfig) -> Design:
    """Build a design from its name: kernel, exact, stopped, legacy, precise-rmapid[:fixed] or slots:K (K in 1..8)."""
    from foliosim.schemes.exact import ExactDesign
    from foliosim.schemes.kernel import KernelDesign
    from foliosim.schemes.legacy import LegacyDesign
    from foliosim.schemes.precise import PreciseRmapIdDesign
    from foliosim.schemes.slots import SlotsDesign
    from foliosim.schemes.stopped import StoppedDesign

    name, colon, arg = spec.partition(":")
    simple: dict[str, type[Design]] = {"kernel": KernelDesign, "exact": ExactDesign,
                                        "stopped": StoppedDesign, "legacy": LegacyDesign,
                                        "precise-rmapid": PreciseRmapIdDesign}
    if name in simple and not colon:
        return simple[name](config)
    if name == "precise-rmapid" and colon:
        if arg != "fixed":
            raise ValueError(f"design {spec!r}: the only precise-rmapid variant is precise-rmapid:fixed")
        return PreciseRmapIdDesign(config, fixed=True)
    if name == "slots" and colon:
        try:
            slots = int(arg)
        except ValueError:
            raise ValueError(f"design {spec!r}: K in slots:K must be an integer, not {arg!r}") from None
        if not 1 <= slots <= SLOTS_MAX:
            raise ValueError(f"design {spec!r}: K must be in 1..{SLOTS_MAX}")
        return SlotsDesign(config, slots)
    raise ValueError(f"unknown design {spec!r} (known: {', '.join(KNOWN)}, slots:K with K in 1..{SLOTS_MAX})")


SLOTS_MAX = 8
#: The designs a default comparison runs.
DESIGNS = ("kernel", "exact", "slots:3", "stopped", "legacy", "precise-rmapid")
#: Every design name :func:`make_design` accepts besides slots:K.
KNOWN = (*DESIGNS, "precise-rmapid:fixed")
