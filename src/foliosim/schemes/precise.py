"""``precise-rmapid``: the 2023 RFC's per-MM rmap ids summed into per-folio values.

Models "[PATCH WIP v1 00/20] mm: precise "mapped shared" vs. "mapped exclusively"
detection for PTE-mapped THP / partially-mappable folios" (David Hildenbrand,
24 Nov 2023, https://lore.kernel.org/all/20231124132626.235350-1-david@redhat.com/),
as of its patch 11 (mm/rmap_id.c, include/linux/rmap.h of the series): every MM
gets an rmap id (lowest free, 1 .. 16M-1); the id is cut into chunks, each chunk
indexes a "sub-ID" (the chunk's bits as digits of base P + 1, P = the largest folio
size the scheme serves), and every (un)mapping of a large folio adds/subtracts the
MM's sub-IDs times the number of mappings to/from the folio's 64-bit rmap values,
beside the total mapcount, under an atomic seqcount. A folio is mapped exclusively
by MM x iff its mapcount <= its page count and every value equals mapcount * sub-ID
of x (``__folio_large_mapped_shared()``); this design answers "maybe shared" when
no live MM passes that test.

The number of values depends on the folio order (:data:`SCHEMES`). The posted
order-6..9 scheme cuts ids into 8-bit chunks with base 513, so mapcount * sub-ID can
exceed 64 bits and wrap: a sum of other MMs' sub-IDs can then equal another MM's
"exclusive" value (see docs/cost-model.md for a 306-mapping example), and the
design as posted is not sound. ``precise-rmapid:fixed`` uses 7-bit chunks in four
values for those orders (what the patch's comment, "128 sub-IDs per 64bit value",
describes, with a fourth value to keep 24-bit ids), which never wraps.

Costs follow the cover letter's section 5 (no exclusive-writer optimisation): per
update two atomic RMWs on the seqcount (begin, end), one on the total mapcount and
one per rmap value; no lock. Values live in page[3] (``_rmap_val0..3``) and page[4]
(``_rmap_val4..5``), the seqcount and total mapcount in page[1].
"""

from __future__ import annotations

from dataclasses import dataclass

from foliosim.errors import Rejected
from foliosim.kconfig import KernelConfig
from foliosim.schemes.base import Design
from foliosim.schemes.cost import NO_CHARGE, Charge, meta_line, page_line
from foliosim.system import Op

#: ``RMAP_ID_MIN`` / ``RMAP_ID_MAX`` of the RFC: 0 is the dummy id of init_mm.
RMAP_ID_MIN = 1
RMAP_ID_MAX = 16 * 1024 * 1024 - 1
#: Every rmap value (and the seqcount) is an ``atomic_long_t``.
VALUE_BYTES = 8
SEQCOUNT_BYTES = 8
WORD = 1 << 64


@dataclass(frozen=True, slots=True)
class SubIdScheme:
    """One ``RMAP_SUBID_<n>`` range: folios up to ``max_order`` use ``values`` values of ``bits``-bit chunks."""

    max_order: int
    values: int
    bits: int

    @property
    def base(self) -> int:
        """P + 1, with P = 2^max_order the most mappings an exclusively mapped folio of the range has."""
        return (1 << self.max_order) + 1

    def subid(self, chunk: int) -> int:
        """``calc_rmap_subid()``: bit i of the chunk contributes (P + 1)^i."""
        out, mult = 0, 1
        while chunk:
            if chunk & 1:
                out += mult
            mult *= self.base
            chunk >>= 1
        return out

    def subids(self, rmap_id: int) -> tuple[int, ...]:
        mask = (1 << self.bits) - 1
        return tuple(self.subid((rmap_id >> (j * self.bits)) & mask) for j in range(self.values))

    @property
    def wraps(self) -> bool:
        """Whether P * (largest sub-ID) exceeds 64 bits, so sums can wrap and collide."""
        return int(self.base ** self.bits) - 1 >= WORD


#: The RFC as posted (patches 7 and 11): ``RMAP_SUBID_{1..6}_MAX_ORDER`` 2, 5, 9, 10, 12, 15.
SCHEMES = (SubIdScheme(2, 1, 24), SubIdScheme(5, 2, 12), SubIdScheme(9, 3, 8),
           SubIdScheme(10, 4, 6), SubIdScheme(12, 5, 5), SubIdScheme(15, 6, 4))
#: Orders 6..9 without wrap-around: 7-bit chunks (128 sub-IDs per value), four values for 24-bit ids.
FIXED_SCHEMES = (SCHEMES[0], SCHEMES[1], SubIdScheme(9, 4, 7), *SCHEMES[3:])
#: The RFC does not implement larger folios ("<= order-21: 8x 64bit rmap values [not implemented]").
MAX_ORDER = 15


def scheme_for(order: int, schemes: tuple[SubIdScheme, ...] = SCHEMES) -> SubIdScheme:
    """The sub-ID scheme a large folio of ``order`` uses (order 1, absent from the RFC, takes the order-2 one)."""
    for scheme in schemes:
        if order <= scheme.max_order:
            return scheme
    raise Rejected(f"precise-rmapid: order-{order} folios are not supported by the RFC (largest order {MAX_ORDER})")


class PreciseRmapIdDesign(Design):
    """Per-MM rmap ids spread over per-folio sums: an exact answer, paid in atomics."""

    name = "precise-rmapid"
    sound = False  # the posted order-6..9 scheme can wrap (module docstring); ``:fixed`` is sound

    def __init__(self, config: KernelConfig, fixed: bool = False) -> None:
        if not config.is_64bit:
            raise ValueError("design 'precise-rmapid': the RFC's CONFIG_RMAP_ID depends on 64BIT; "
                             "no 32-bit variant was posted")
        super().__init__(config)
        self.schemes = FIXED_SCHEMES if fixed else SCHEMES
        if fixed:
            self.name = "precise-rmapid:fixed"
            self.sound = True
        self.ids: dict[str, int] = {}  # MM name -> rmap id
        self.by_id: dict[int, str] = {}
        self.values: dict[str, list[int]] = {}
        self.scheme: dict[str, SubIdScheme] = {}
        self._subids: dict[tuple[str, SubIdScheme], tuple[int, ...]] = {}
        # folio -> _owner_large(), until an op on the folio or on an MM (the live MMs decide a wrapped answer)
        self._owners: dict[str, str | None] = {}
        self._charges: dict[tuple[int, int, bool], Charge] = {}
        self._wraps = {scheme: scheme.wraps for scheme in self.schemes}  # _update()'s cost by (order, values, new)

    # -- MMs: alloc_rmap_id() / free_rmap_id() ------------------------------------
    def _mm(self, op: Op) -> None:
        assert op.mm is not None
        self._owners.clear()
        if op.op == "mm_new":
            rmap_id = RMAP_ID_MIN
            while rmap_id in self.by_id:  # the IDA hands out the lowest free id
                rmap_id += 1
            if rmap_id > RMAP_ID_MAX:
                raise Rejected("precise-rmapid: out of rmap ids (16M MMs)")
            self.ids[op.mm] = rmap_id
            self.by_id[rmap_id] = op.mm
        else:
            rmap_id = self.ids.pop(op.mm, 0)
            self.by_id.pop(rmap_id, None)
            for key in [k for k in self._subids if k[0] == op.mm]:
                del self._subids[key]

    def rmap_id(self, mm: str) -> int:
        """The rmap id of a live MM."""
        try:
            return self.ids[mm]
        except KeyError:
            raise Rejected(f"precise-rmapid: unknown mm {mm!r} (no mm_new for it)") from None

    def _mm_subids(self, mm: str, scheme: SubIdScheme) -> tuple[int, ...]:
        key = (mm, scheme)
        got = self._subids.get(key)
        if got is None:
            got = self._subids[key] = scheme.subids(self.rmap_id(mm))
        return got

    # -- folios ------------------------------------------------------------------------
    def _new(self, folio: str, order: int) -> None:
        self._owners.pop(folio, None)
        if order:
            scheme = scheme_for(order, self.schemes)
            self.scheme[folio] = scheme
            self.values[folio] = [0] * scheme.values  # __folio_prep_large_rmap()

    def _free(self, folio: str) -> None:
        self._owners.pop(folio, None)
        self.values.pop(folio, None)
        self.scheme.pop(folio, None)

    def _value_lines(self, order: int, nvalues: int) -> set[int]:
        cfg = self.config
        if order < 2:  # no page[3]: not in the RFC; modelled in page[1]'s line
            return {meta_line(cfg)}
        return {page_line(cfg, 3)} | ({page_line(cfg, 4)} if nvalues > 4 else set())

    def _update(self, op: Op, folio: str, mm: str, order: int, diff: int) -> Charge:
        self._owners.pop(folio, None)
        if order == 0:
            return NO_CHARGE
        scheme = self.scheme[folio]
        subids = self._mm_subids(mm, scheme)
        vals = self.values[folio]
        sign = -1 if op.op == "unmap" else 1
        for j, sub in enumerate(subids):  # __folio_set/add_large_rmap_val(): atomic_long_set / atomic_long_add
            vals[j] = (vals[j] + sign * diff * sub) % WORD
        new = op.op == "map_new_anon"
        key = (order, scheme.values, new)
        charge = self._charges.get(key)
        if charge is None:
            lines = frozenset({meta_line(self.config)} | self._value_lines(order, scheme.values))
            # map_new_anon: folio_set_large_mapcount(), plain stores, no seqcount; else
            # raw_write_atomic_seqcount_begin/end, atomic_add on the total mapcount, atomic_long_add per value.
            charge = Charge(lines=lines) if new else Charge(atomics=2 + 1 + scheme.values, lines=lines)
            self._charges[key] = charge
        return charge

    # -- the answers: __folio_large_mapped_shared() ----------------------------------------
    def matches(self, folio: str, mm: str) -> bool:
        """``__folio_has_large_matching_rmap_val()``: every value equals mapcount * the MM's sub-ID."""
        count = self.total[folio]
        subids = self._mm_subids(mm, self.scheme[folio])
        return all(v == (count * sub) % WORD for v, sub in zip(self.values[folio], subids, strict=True))

    def _owner_large(self, folio: str) -> str | None:
        try:
            return self._owners[folio]
        except KeyError:
            owner = self._owners[folio] = self._find_owner(folio)
            return owner

    def _find_owner(self, folio: str) -> str | None:
        if self.total[folio] > 1 << self.orders[folio]:
            return None  # more mappings than pages: obviously shared
        scheme = self.scheme[folio]
        if not self._wraps[scheme]:
            return self._decode(folio, scheme)
        for mm in self.ids:  # values may have wrapped: ask every live MM, as a faulting MM would
            if self.matches(folio, mm):
                return mm
        return None

    def _decode(self, folio: str, scheme: SubIdScheme) -> str | None:
        """Read the only possible owner off the values (no wrap: each is mapcount * a sub-ID, or no owner)."""
        count = self.total[folio]
        rmap_id = 0
        for j, value in enumerate(self.values[folio]):
            quotient, rest = divmod(value, count)
            if rest:
                return None
            chunk = bit = 0
            while quotient:
                quotient, digit = divmod(quotient, scheme.base)
                if digit > 1:
                    return None
                chunk |= digit << bit
                bit += 1
            if bit > scheme.bits:
                return None
            rmap_id |= chunk << (j * scheme.bits)
        return self.by_id.get(rmap_id)

    def _maybe_shared_large(self, folio: str) -> bool:
        return self._owner_large(folio) is None

    def metadata_bytes(self, folio: str) -> int:
        order = self.orders[folio]
        return metadata_bytes_for(order, self.schemes) if order else 0


def metadata_bytes_for(order: int, schemes: tuple[SubIdScheme, ...] = SCHEMES) -> int:
    """The RFC's per-folio bytes for ``order``: 8 per rmap value plus the 8-byte atomic seqcount."""
    return scheme_for(order, schemes).values * VALUE_BYTES + SEQCOUNT_BYTES
