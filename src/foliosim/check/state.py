"""The checker's state: one folio, a few named MMs, their ids and the ground truth,
as a flat tuple of small integers; and its canonical form under symmetry.

Layout (``P`` pages, ``K`` MM names, every entry a small int)::

    [0] _large_mapcount (raw)        [1] _entire_mapcount (raw)
    [2] _nr_pages_mapped & FOLIO_PAGES_MAPPED   [3] _nr_pages_mapped >> 23 (ENTIRELY_MAPPED units)
    [4] _mm_id_mapcount[0] (raw)     [5] _mm_id_mapcount[1] (raw)
    [6] slot 0 MM id  [7] slot 1 MM id  [8] lock bit  [9] shared bit   (the _mm_ids word, split)
    [10 .. 10+P)   per-page _mapcount (raw)
    [10+P]         "crowded": three or more MMs mapped at once since the last full unmap
    then K blocks of (mm_id or 0 when the name is not live, PMD entries, PTE count of each page)

MM names are positional: block ``i`` is the MM called ``NAMES[i]``. The
encoding is exact (decode(encode(s)) rebuilds an identical RmapSystem), so the
checker drives the reference model itself and never re-states its rules.

Canonicalisation (see docs/check.md for the argument):

* MM names are pure labels: every operation is offered for every name, and an
  MM's id travels with its block. Sorting the blocks is therefore a symmetry
  reduction. Id *values* are kept as they are: the allocator hands out the
  lowest free id, and a stale id left in a slot (a bug the checker must be
  able to find) makes id values observable.
* Pages: PTE operations act on contiguous ranges, and the only permutations of
  a path that map every interval to an interval are the identity and the
  reversal, so with batches (``max_nr > 1``) the page order is canonicalised
  under reversal only. With single-page operations (``max_nr == 1``) every
  page permutation maps operations to operations, and page columns are sorted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain

from foliosim.errors import Rejected
from foliosim.folio import Folio
from foliosim.kconfig import DEFAULT, FOLIO_PAGES_MAPPED, KernelConfig
from foliosim.mmid import MMIdAllocator
from foliosim.owner import KERNEL_OWNER, OwnerTracking
from foliosim.rmap import PMD, PTE, RmapLevel
from foliosim.system import FolioHandle, MMHandle, Op, RmapSystem
from foliosim.truth import FolioTruth

#: The MM names used in traces, in block order.
NAMES = ("A", "B", "C", "D", "E", "F", "G", "H")
#: The one folio every checker trace works on.
FOLIO = "F0"
#: Operation kinds the explorer can offer.
ALL_OPS = ("map_new_anon", "map", "dup", "unmap", "mm_free", "mm_new")
#: Key offset: every encoded value v is stored as the byte v + KEY_BIAS.
KEY_BIAS = 16

HEADER = 10  # fixed folio fields before the per-page mapcounts


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """The bounds of one exploration."""

    kconfig: KernelConfig = DEFAULT
    mms: int = 2
    order: int = 2
    depth: int = 6
    levels: tuple[RmapLevel, ...] = (PTE, PMD)
    max_nr: int = 0  # largest PTE batch; 0 means the whole folio
    ops: tuple[str, ...] = ("map_new_anon", "map", "dup", "unmap")
    reuse_ids: bool = False  # offer mm_free / mm_new (ids freed and handed out again)

    def __post_init__(self) -> None:
        if not 1 <= self.mms <= len(NAMES):
            raise ValueError(f"mms must be in 1..{len(NAMES)}, not {self.mms}")
        if not 1 <= self.order <= 6:
            raise ValueError(f"order must be in 1..6 (owner tracking is for large folios; "
                             f"2**order pages are enumerated), not {self.order}")
        if self.depth < 0:
            raise ValueError(f"depth must not be negative, not {self.depth}")
        if self.max_nr < 0:
            raise ValueError(f"max_nr must not be negative, not {self.max_nr}")
        unknown = [op for op in self.ops if op not in ALL_OPS]
        if unknown:
            raise ValueError(f"unknown op(s) {', '.join(unknown)} (known: {', '.join(ALL_OPS)})")
        if not self.levels:
            raise ValueError("at least one level (pte, pmd) is needed")

    @property
    def nr_pages(self) -> int:
        return 1 << self.order

    @property
    def batch(self) -> int:
        """The largest PTE batch offered."""
        return self.nr_pages if self.max_nr == 0 else min(self.max_nr, self.nr_pages)

    @property
    def pmd_allowed(self) -> bool:
        return PMD in self.levels and self.kconfig.has_entire_mapcount(self.order)

    @property
    def map_new_anon_level(self) -> RmapLevel:
        return PMD if self.order >= self.kconfig.pmd_order else PTE

    @property
    def width(self) -> int:
        return HEADER + self.nr_pages + 1 + self.mms * (2 + self.nr_pages)

    def describe(self) -> str:
        lv = "+".join(level.value for level in self.levels)
        return (f"{self.mms} MMs, order {self.order} ({self.nr_pages} pages), depth {self.depth}, "
                f"{self.kconfig.describe()}, levels {lv}, PTE batches up to {self.batch}, "
                f"ops {','.join(self.ops)}{', MM ids freed and reused' if self.reuse_ids else ''}")


State = tuple[int, ...]


def setup_ops(cfg: CheckConfig) -> list[Op]:
    """The trace lines that create the initial state: every MM, then the folio."""
    return [Op("mm_new", mm=name) for name in NAMES[:cfg.mms]] + [Op("folio_new", folio=FOLIO, order=cfg.order)]


def initial_system(cfg: CheckConfig, owner: OwnerTracking = KERNEL_OWNER) -> RmapSystem:
    system = RmapSystem(cfg.kconfig, owner)
    for op in setup_ops(cfg):
        system.apply(op)
    return system


def encode(system: RmapSystem, cfg: CheckConfig, crowded: bool) -> State:
    """The flat tuple for ``system`` (names in NAMES order)."""
    kc = cfg.kconfig
    handle = system.folios[FOLIO]
    folio, truth = handle.folio, handle.truth
    word = folio.mm_ids
    mask = kc.mm_id_mask
    out = [
        folio.large_mapcount,
        folio.entire_mapcount,
        folio.nr_pages_mapped & FOLIO_PAGES_MAPPED,
        folio.nr_pages_mapped >> 23,
        folio.mm_id_mapcount[0],
        folio.mm_id_mapcount[1],
        word & mask,
        (word >> kc.slot_shift) & mask,
        1 if word & kc.lock_bit else 0,
        1 if word & kc.shared_bit else 0,
        *folio.page_mapcount,
        1 if crowded else 0,
    ]
    zeros = [0] * cfg.nr_pages
    for name in NAMES[:cfg.mms]:
        mm = system.mms.get(name)
        if mm is None:
            out += [0, 0, *zeros]
            continue
        out.append(mm.mm_id)
        out.append(truth.pmd.get(name, 0))
        out += truth.pte.get(name, zeros)
    return tuple(out)


def decode(state: State, cfg: CheckConfig, owner: OwnerTracking = KERNEL_OWNER) -> RmapSystem:
    """An RmapSystem in exactly the state ``state`` describes."""
    kc = cfg.kconfig
    nr = cfg.nr_pages
    system = RmapSystem(kc, owner)
    folio = Folio(kc, cfg.order)
    folio.large_mapcount = state[0]
    folio.entire_mapcount = state[1]
    folio.nr_pages_mapped = state[2] | (state[3] << 23)
    folio.mm_id_mapcount = [state[4], state[5]]
    folio.mm_ids = (state[6] | (state[7] << kc.slot_shift)
                    | (kc.lock_bit if state[8] else 0) | (kc.shared_bit if state[9] else 0))
    folio.page_mapcount = list(state[HEADER:HEADER + nr])
    truth = FolioTruth(nr)
    live: list[int] = []
    pos = HEADER + nr + 1
    for name in NAMES[:cfg.mms]:
        mm_id, pmd = state[pos], state[pos + 1]
        ptes = state[pos + 2:pos + 2 + nr]
        pos += 2 + nr
        if mm_id == 0:
            continue
        live.append(mm_id)
        total = pmd + sum(ptes)
        if any(ptes):
            truth.pte[name] = list(ptes)
        if pmd:
            truth.pmd[name] = pmd
        if total:
            truth.total[name] = total
        system.mms[name] = MMHandle(name, mm_id, total)
    system.ids = _allocator(kc, live)
    system.folios[FOLIO] = FolioHandle(FOLIO, folio, truth)
    return system


def restore(system: RmapSystem, state: State, cfg: CheckConfig) -> None:
    """Put ``system`` back into ``state`` after an operation other than mm_new/mm_free.

    Cheaper than :func:`decode`: the MM handles and the id allocator are kept
    (those operations do not touch them), everything the rmap layer changes is reset.
    """
    kc = cfg.kconfig
    nr = cfg.nr_pages
    handle = system.folios[FOLIO]
    folio = handle.folio
    folio.large_mapcount = state[0]
    folio.entire_mapcount = state[1]
    folio.nr_pages_mapped = state[2] | (state[3] << 23)
    folio.mm_id_mapcount = [state[4], state[5]]
    folio.mm_ids = (state[6] | (state[7] << kc.slot_shift)
                    | (kc.lock_bit if state[8] else 0) | (kc.shared_bit if state[9] else 0))
    folio.page_mapcount = list(state[HEADER:HEADER + nr])
    truth = FolioTruth(nr)
    pos = HEADER + nr + 1
    for name in NAMES[:cfg.mms]:
        mm_id, pmd = state[pos], state[pos + 1]
        if mm_id:
            ptes = state[pos + 2:pos + 2 + nr]
            total = pmd + sum(ptes)
            if total:
                if pmd:
                    truth.pmd[name] = pmd
                if any(ptes):
                    truth.pte[name] = list(ptes)
                truth.total[name] = total
            system.mms[name].nr_mappings = total
        pos += 2 + nr
    handle.truth = truth


def _allocator(kc: KernelConfig, live: list[int]) -> MMIdAllocator:
    """An allocator whose allocated ids are exactly ``live`` (through its public API)."""
    ids = MMIdAllocator(kc)
    top = max(live, default=0)
    for _ in range(top):
        ids.alloc()
    keep = set(live)
    for mm_id in range(1, top + 1):
        if mm_id not in keep:
            ids.free(mm_id)
    return ids


def crowded_after(system: RmapSystem, was_crowded: bool) -> bool:
    """The history bit: >= 3 MMs mapped at once since the folio was last fully unmapped."""
    return crowded_next(system.folios[FOLIO].truth, was_crowded)


def crowded_next(truth: FolioTruth, was_crowded: bool) -> bool:
    """:func:`crowded_after` for one folio's ground truth."""
    if not truth.total:
        return False
    return was_crowded or len(truth.total) >= 3


_BIAS = KEY_BIAS.__add__


def to_key(state: State) -> bytes:
    """The compact fingerprint (one byte per field)."""
    try:
        return bytes(map(_BIAS, state))
    except ValueError:
        bad = next(i for i, v in enumerate(state) if not 0 <= v + KEY_BIAS <= 255)
        raise ValueError(f"state field {bad} = {state[bad]} does not fit the checker's byte encoding "
                         f"({-KEY_BIAS}..{255 - KEY_BIAS}); lower --depth") from None


_UNBIAS = (-KEY_BIAS).__add__


def from_key(key: bytes) -> State:
    return tuple(map(_UNBIAS, key))


def canonical(state: State, cfg: CheckConfig) -> State:
    """The representative of ``state``'s symmetry class (see the module docstring)."""
    nr = cfg.nr_pages
    head_end = HEADER + nr
    step = 2 + nr
    base = head_end + 1
    blocks = [state[base + i * step: base + (i + 1) * step] for i in range(cfg.mms)]
    if cfg.batch == 1 and PTE in cfg.levels:
        return _canonical_columns(state, blocks, cfg)
    best = state[:base] + tuple(chain.from_iterable(sorted(blocks)))
    # Reversal of the page order.
    pages = state[HEADER:head_end]
    rev = state[:HEADER] + pages[::-1] + (state[head_end],)
    rblocks = sorted(b[:2] + b[2:][::-1] for b in blocks)
    other = rev + tuple(chain.from_iterable(rblocks))
    return min(best, other)


def _canonical_columns(state: State, blocks: list[State], cfg: CheckConfig) -> State:
    """Single-page operations: sort MM blocks, then page columns, then the blocks again.

    Any deterministic composition of symmetries is sound; this one is cheap and
    merges nearly all equivalent states.
    """
    nr = cfg.nr_pages
    blocks = sorted(blocks, key=lambda b: (b[0], b[1], sorted(b[2:])))
    pages = state[HEADER:HEADER + nr]
    columns = sorted((pages[p], *(b[2 + p] for b in blocks)) for p in range(nr))
    new_pages = tuple(c[0] for c in columns)
    new_blocks = sorted(b[:2] + tuple(c[1 + i] for c in columns) for i, b in enumerate(blocks))
    return state[:HEADER] + new_pages + (state[HEADER + nr],) + tuple(chain.from_iterable(new_blocks))


def candidate_ops(system: RmapSystem, cfg: CheckConfig, state: State | None = None) -> Iterator[Op]:
    """Every operation worth offering in this state: a superset of those RmapSystem accepts.

    The filters only use the ground truth's own queries; RmapSystem decides.
    MMs whose blocks are identical are interchangeable, so only the first of
    them is offered ops when ``state`` is given.
    """
    truth = system.folios[FOLIO].truth
    nr_pages = cfg.nr_pages
    batch = cfg.batch
    ops = cfg.ops
    seen_blocks: set[State] = set()
    step = 2 + nr_pages
    base = HEADER + nr_pages + 1
    dead_offered = False
    mapped = bool(truth.total)
    for i, name in enumerate(NAMES[:cfg.mms]):
        if state is not None:
            block = state[base + i * step: base + (i + 1) * step]
            if block in seen_blocks:
                continue
            seen_blocks.add(block)
        if name not in system.mms:
            if cfg.reuse_ids and not dead_offered:
                dead_offered = True
                yield Op("mm_new", mm=name)
            continue
        if "map_new_anon" in ops and not mapped:
            yield Op("map_new_anon", mm=name, folio=FOLIO, level=cfg.map_new_anon_level)
        for kind in ("map", "dup", "unmap"):
            if kind not in ops:
                continue
            if PTE in cfg.levels:
                for page in range(nr_pages):
                    for nr in range(1, min(batch, nr_pages - page) + 1):
                        if kind == "dup" and not truth.any_maps_ptes(page, nr):
                            continue
                        if kind == "unmap" and not truth.mm_maps_ptes(name, page, nr):
                            continue
                        yield Op(kind, mm=name, folio=FOLIO, level=PTE, page=page, nr=nr)
            if cfg.pmd_allowed:
                if kind == "dup" and not truth.any_maps_pmd():
                    continue
                if kind == "unmap" and not truth.mm_maps_pmd(name):
                    continue
                yield Op(kind, mm=name, folio=FOLIO, level=PMD)
        if cfg.reuse_ids and not truth.entries(name):
            yield Op("mm_free", mm=name)


def all_ops(cfg: CheckConfig) -> Iterator[Op]:
    """Every operation of the configuration, valid or not (for differential tests)."""
    for name in NAMES[:cfg.mms]:
        yield Op("mm_new", mm=name)
        yield Op("mm_free", mm=name)
        for level in (PTE, PMD):
            yield Op("map_new_anon", mm=name, folio=FOLIO, level=level)
        for kind in ("map", "dup", "unmap"):
            for page in range(cfg.nr_pages):
                for nr in range(1, cfg.nr_pages - page + 1):
                    yield Op(kind, mm=name, folio=FOLIO, level=PTE, page=page, nr=nr)
            yield Op(kind, mm=name, folio=FOLIO, level=PMD)


def try_apply(system: RmapSystem, op: Op) -> Rejected | None:
    """Apply ``op``; the Rejected it raised (state unchanged) or None."""
    try:
        system.apply(op)
    except Rejected as exc:
        return exc
    return None
