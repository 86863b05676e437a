"""Folio split to order 0: mm/huge_memory.c ``split_folio()`` -> ``__folio_split()`` (v6.15).

The kernel's steps, and the rmap calls each one makes, in its order:

1. Checks (``__folio_split()``): the huge zero page is never split (-EBUSY); an
   anon folio needs its anon_vma, which ``folio_get_anon_vma()`` only finds
   while the folio is mapped (-EBUSY otherwise). ``can_split_folio(folio, 1)``:
   the refcount must be exactly the mappings, plus the caller's reference, plus
   ``nr_pages`` page-cache references for a file/shmem folio. A pin or a plain
   GUP reference (vmsplice) fails it with -EAGAIN before anything changes.
2. ``unmap_folio()``. Anon folios: ``try_to_migrate()`` walks every VMA that maps
   the folio (here: MMs in creation order, the order fork builds the anon_vma
   tree). A PMD is frozen into PTE migration entries
   (``split_huge_pmd_address(freeze=true)`` -> ``__split_huge_pmd_locked()``:
   ``folio_try_share_anon_rmap_pmd()`` clears AnonExclusive, the entries remember
   it and the write bit, then ``folio_remove_rmap_pmd()`` and one reference
   dropped). Every PTE becomes a migration entry (``try_to_migrate_one()``: the
   same per page, ``folio_remove_rmap_pte()``, ``folio_put()``). File and shmem
   folios: ``try_to_unmap()`` just clears the PTEs (they refault from the page
   cache).
3. ``folio_ref_freeze()`` at 1 + page-cache references, and the folio leaves the
   deferred split queue.
4. ``__split_unmapped_folio()``: ``nr_pages`` order-0 folios, page ``k`` keeping
   its contents. The trace has no split operation, so the old folio is a
   ``folio_free`` and each piece a ``folio_new`` (the kernel reuses the struct of
   page 0 for piece 0). Page-cache folios replace the old one at their index.
   Each piece is unfrozen at 1 (+1 page-cache reference).
5. ``remap_page()`` (anon only), piece by piece: ``remove_migration_pte()`` maps
   each entry again (``folio_get()``, ``folio_add_anon_rmap_pte()``, with
   RMAP_EXCLUSIVE unless the entry was a readable one, writable if it was
   writable). With RMP_USE_SHARED_ZEROPAGE (every successful anon split since
   v6.12), ``try_to_map_unused_to_zeropage()`` maps a zero-filled page as the
   shared zero page instead, so that piece stays unmapped.
6. Every piece but page 0's is unlocked and put (``free_folio_and_swap_cache()``):
   unmapped pieces are freed. Page 0's keeps the caller's reference.

Linux 6.16 to 6.18 differ in one respect (commit 60fbb14396d5, fixed in stable
releases of 2026): ``try_to_migrate_one()`` stops the rmap walk after freezing
one PMD, so a PMD-mapped folio mapped by several MMs fails to split (-EAGAIN)
after the first MM's PMD became PTEs. v6.15, modelled here, unmaps every MM.
The kernel's own MADV_COLD/PAGEOUT never splits a folio mapped by several MMs
(it is maybe shared), so this only shows with a foreign ``Machine.sharing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from foliosim.folio import folio_mapcount
from foliosim.rmap import PMD, PTE
from foliosim.system import Op
from foliosim.vm.events import EAGAIN, EBUSY, EINVAL, OracleViolation
from foliosim.vm.memory import PAGE_SHIFT, ZERO_PAGE
from foliosim.vm.pagetable import Pte, SimFolio

if TYPE_CHECKING:
    from foliosim.vm.machine import Machine
    from foliosim.vm.mm import MM


@dataclass(frozen=True, slots=True)
class SplitResult:
    """What ``split_folio()`` returned: 0 or ``-errno``, why it failed, and the new folios in page order."""

    err: int
    reason: str
    folios: tuple[SimFolio, ...] = ()

    @property
    def ok(self) -> bool:
        return self.err == 0


@dataclass(frozen=True, slots=True)
class _Entry:
    """A migration entry left by ``try_to_migrate_one()``: where page ``page`` was mapped and how."""

    mm: MM
    vpn: int
    page: int
    write: bool
    exclusive: bool  # a writable or readable-exclusive entry: remapped with RMAP_EXCLUSIVE


def can_split_folio(f: SimFolio, caller_pins: int = 1) -> bool:
    """``can_split_folio()``: nothing but the mappings, the caller and the page cache holds a reference."""
    core = f.core()
    extra = 0 if f.is_anon else f.nr_pages  # no swap cache: anon folios have no extra pins
    return folio_mapcount(core) == core.refcount - extra - caller_pins


def split_folio(m: Machine, f: SimFolio, why: str) -> SplitResult:
    """``split_folio()``: split ``f`` into order-0 folios, or fail and change nothing.

    The caller holds one reference on ``f``; on success it belongs to the new
    folio of page 0 (``result.folios[0]``), which the caller must put.
    """
    refused = _refuse(m, f)
    if refused is not None:
        m.counters["folio split failed"] += 1
        return SplitResult(refused[0], refused[1])
    core = f.core()
    cache = 0 if f.is_anon else f.nr_pages
    entries = _unmap_folio(m, f)
    if core.refcount != 1 + cache:  # folio_ref_freeze() cannot fail after a successful can_split_folio() here
        raise OracleViolation(f"{f.name}: refcount {core.refcount} after unmap_folio(), expected {1 + cache}")
    dequeued = f.deferred_split  # the freeze takes the folio off the deferred split queue
    core.refcount = 0
    m.free_folio(f)
    pieces = tuple(_split_unmapped_folio(m, f))
    zero = _remap_page(m, pieces, entries) if f.is_anon else []
    m.counters["folio split"] += 1
    m.counters[f"folio split order {f.order}"] += 1
    first, last = pieces[0].name, pieces[-1].name
    text = f"{f.name} (order {f.order}, {f.kind.value}) split into {len(pieces)} order-0 folios {first}..{last}"
    if zero:
        text += f"; zero-filled page(s) {_ranges(zero)} mapped to the shared zero page"
    if not f.is_anon:
        text += "; its PTEs were unmapped (they refault from the page cache)"
    if dequeued:
        text += "; it left the deferred split queue"
    m.emit("split", f"{text} ({why})", what="folio", folio=f.name, order=f.order,
           new=[p.name for p in pieces], zero_pages=zero)
    for piece in pieces[1:]:  # unlocked and put; page 0's piece keeps the caller's reference
        m.put(piece)
    return SplitResult(0, "", pieces)


def _refuse(m: Machine, f: SimFolio) -> tuple[int, str] | None:
    """The checks of ``__folio_split()`` before anything changes: (-errno, why) or None."""
    if f.is_zero:
        return -EBUSY, "the huge zero page is never split"
    if f.order == 0 or f.freed:
        return -EINVAL, f"{f.name} is not a large folio"
    core = f.core()
    if f.is_anon and folio_mapcount(core) == 0:
        return -EBUSY, "an unmapped anon folio: folio_get_anon_vma() finds no anon_vma"
    if not can_split_folio(f):
        cache = "" if f.is_anon else f" + {f.nr_pages} page cache"
        return -EAGAIN, (f"can_split_folio(): refcount {core.refcount} != mapcount {folio_mapcount(core)}{cache} "
                         f"+ 1 (the caller's): pinned or otherwise referenced")
    return None


def _unmap_folio(m: Machine, f: SimFolio) -> list[_Entry]:
    """``unmap_folio()``: every mapping of ``f`` goes; anon mappings become migration entries (returned)."""
    entries: list[_Entry] = []
    for mm in list(m.mms.values()):
        for idx in sorted(i for i, pmd in mm.pmds.items() if pmd.folio is f):
            entries += _freeze_pmd(m, mm, idx, f)
        for vpn in sorted(v for v, pte in mm.ptes.items() if pte.folio is f):
            pte = mm.ptes.pop(vpn)
            if f.is_anon:  # try_to_migrate_one(): folio_try_share_anon_rmap_pte(), the entry remembers
                exclusive = f.exclusive[pte.page]
                f.exclusive[pte.page] = False
                entries.append(_Entry(mm, vpn, pte.page, pte.write, pte.write or exclusive))
            # try_to_migrate_one() / try_to_unmap_one(): folio_remove_rmap_pte(), folio_put(). The kernel
            # queues the now partially mapped folio for deferred split; the freeze below dequeues it.
            m._record(Op("unmap", mm.name, f.name, None, PTE, pte.page, 1))
            m.put(f)
    return entries


def _freeze_pmd(m: Machine, mm: MM, idx: int, f: SimFolio) -> list[_Entry]:
    """``__split_huge_pmd_locked(freeze=true)``: a PMD becomes ``nr_pages`` PTE migration entries."""
    pmd = mm.pmds.pop(idx)
    mm.pte_tables.add(idx)  # the deposited page table now holds the entries
    exclusive = f.exclusive[0]  # AnonExclusive of a PMD mapping lives on the head page
    f.exclusive[0] = False  # folio_try_share_anon_rmap_pmd()
    m._record(Op("unmap", mm.name, f.name, None, PMD))
    m.put(f)
    base = idx << m.pmd_order
    m.counters["pmd split"] += 1
    m.emit("split", f"{mm.name}: PMD mapping {f.name} at {base << PAGE_SHIFT:#x} frozen into {f.nr_pages} "
                    "PTE migration entries (folio split)", what="pmd", folio=f.name)
    return [_Entry(mm, base + k, k, pmd.write, pmd.write or exclusive) for k in range(f.nr_pages)]


def _split_unmapped_folio(m: Machine, f: SimFolio) -> list[SimFolio]:
    """``__split_unmapped_folio()`` + unfreeze: one order-0 folio per page, page-cache entries replaced."""
    pieces = []
    for k in range(f.nr_pages):
        piece = m.new_folio(f.kind, 0, [f.data[k]])
        if f.file is not None:
            piece.file = f.file
            piece.index = f.index + k
            m.get(piece)  # folio_ref_unfreeze(1 + 1): the page cache's reference
            f.file.cache[piece.index] = piece
        pieces.append(piece)
    return pieces


def _remap_page(m: Machine, pieces: tuple[SimFolio, ...], entries: list[_Entry]) -> list[int]:
    """``remap_page(RMP_USE_SHARED_ZEROPAGE)``: each migration entry maps its piece again.

    Returns the pages that were zero-filled and went to the shared zero page.
    """
    by_page: list[list[_Entry]] = [[] for _ in pieces]
    for e in entries:
        by_page[e.page].append(e)
    zero: list[int] = []
    for k, piece in enumerate(pieces):
        for e in by_page[k]:
            if piece.data[0] == ZERO_PAGE:  # try_to_map_unused_to_zeropage(): a read-only special PTE
                e.mm.ptes[e.vpn] = Pte(m.zero, 0, False)
                if not zero or zero[-1] != k:
                    zero.append(k)
                continue
            m.get(piece)  # remove_migration_pte(): folio_get(), folio_add_anon_rmap_pte()
            m._rmap_add(piece, e.mm, PTE, 0, 1)
            if e.exclusive:
                piece.exclusive[0] = True
            e.mm.ptes[e.vpn] = Pte(piece, 0, e.write)
    return zero


def _ranges(pages: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1..3, 7"``."""
    out: list[str] = []
    start = prev = pages[0]
    for p in [*pages[1:], -2]:
        if p != prev + 1:
            out.append(f"{start}..{prev}" if prev != start else str(start))
            start = p
        prev = p
    return ", ".join(out)


__all__ = ["SplitResult", "can_split_folio", "split_folio"]
