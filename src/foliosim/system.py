"""A set of named MMs and folios driven through the rmap layer, with validation.

This is the Python API behind ``foliosim replay``: every operation of the rmap
trace contract is a method that either applies the kernel's rmap call or raises
:class:`~foliosim.errors.Rejected` and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from foliosim.errors import Rejected
from foliosim.folio import Folio, folio_mapped
from foliosim.kconfig import MAX_ORDER, KernelConfig
from foliosim.mmid import MMIdAllocator
from foliosim.owner import KERNEL_OWNER, OwnerTracking
from foliosim.rmap import (
    PMD,
    PTE,
    RmapLevel,
    RmapResult,
    folio_add_new_anon_rmap,
    folio_add_rmap,
    folio_dup_rmap,
    folio_remove_rmap,
    rmap_precheck,
)
from foliosim.truth import FolioTruth

OPS = ("mm_new", "mm_free", "folio_new", "folio_free", "map_new_anon", "map", "dup", "unmap")
FOLIO_OPS = frozenset(("folio_new", "folio_free", "map_new_anon", "map", "dup", "unmap"))
MAP_OPS = frozenset(("map_new_anon", "map", "dup", "unmap"))


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of the rmap trace (see shared spec ``rmap-trace.md``)."""

    op: str
    mm: str | None = None
    folio: str | None = None
    order: int | None = None
    level: RmapLevel | None = None
    page: int = 0
    nr: int = 1

    def to_json(self) -> dict[str, Any]:
        """The trace line for this operation (inverse of the trace parser)."""
        out: dict[str, Any] = {"op": self.op}
        if self.folio is not None:
            out["folio"] = self.folio
        if self.mm is not None:
            out["mm"] = self.mm
        if self.op == "folio_new":
            out["order"] = self.order
        if self.level is not None:
            out["level"] = self.level.value
            if self.op != "map_new_anon" and self.level is PTE:
                out["page"] = self.page
                out["nr"] = self.nr
        return out

    def describe(self) -> str:
        """This operation in words, e.g. ``dup F by B (pte pages 0..3)`` (timelines, the viewer, events)."""
        if self.op in ("mm_new", "mm_free"):
            return f"{self.op} {self.mm}"
        if self.op == "folio_new":
            order = self.order or 0
            return f"folio_new {self.folio} (order {order}, {1 << order} page{'s' if order else ''})"
        if self.op == "folio_free":
            return f"folio_free {self.folio}"
        if self.op == "map_new_anon":
            return f"map_new_anon {self.folio} by {self.mm} (whole folio, {self.level.value if self.level else '?'})"
        if self.level is PMD:
            where = "pmd, whole folio"
        elif self.nr == 1:
            where = f"pte page {self.page}"
        else:
            where = f"pte pages {self.page}..{self.page + self.nr - 1}"
        return f"{self.op} {self.folio} by {self.mm} ({where})"


@dataclass(slots=True)
class MMHandle:
    """An mm_struct as the rmap layer sees it: a name, its MM id and its mapping count."""

    name: str
    mm_id: int
    nr_mappings: int = 0  # page-table entries to folios, across all folios


@dataclass(slots=True)
class FolioHandle:
    """A named folio, its kernel state and its ground truth."""

    name: str
    folio: Folio
    truth: FolioTruth


class RmapSystem:
    """Named MMs and folios under one kernel configuration."""

    def __init__(self, config: KernelConfig | None = None, owner: OwnerTracking = KERNEL_OWNER) -> None:
        self.config = config or KernelConfig()
        self.owner = owner  # the owner-tracking implementation (the checker swaps in mutants)
        self.ids = MMIdAllocator(self.config)
        self.mms: dict[str, MMHandle] = {}
        self.folios: dict[str, FolioHandle] = {}

    # -- lookups -----------------------------------------------------------------
    def mm(self, name: str) -> MMHandle:
        try:
            return self.mms[name]
        except KeyError:
            raise Rejected(f"unknown mm {name!r} (no mm_new for it)") from None

    def folio_handle(self, name: str) -> FolioHandle:
        try:
            return self.folios[name]
        except KeyError:
            raise Rejected(f"unknown folio {name!r} (no folio_new for it)") from None

    def folio(self, name: str) -> Folio:
        return self.folio_handle(name).folio

    def mm_name_of_id(self, mm_id: int) -> str | None:
        for handle in self.mms.values():
            if handle.mm_id == mm_id:
                return handle.name
        return None

    # -- MMs and folios --------------------------------------------------------------
    def mm_new(self, name: str) -> int:
        """``mm_init()`` -> ``mm_alloc_id()``: a new MM with the lowest free id."""
        if name in self.mms:
            raise Rejected(f"mm {name!r} already exists")
        mm_id = self.ids.alloc()
        self.mms[name] = MMHandle(name, mm_id)
        return mm_id

    def mm_free(self, name: str) -> int:
        """``__mmdrop()`` -> ``mm_free_id()``; the MM must map nothing any more."""
        handle = self.mm(name)
        if handle.nr_mappings:
            raise Rejected(
                f"mm {name!r} still has {handle.nr_mappings} page-table entries mapping folios "
                "(exit_mmap() unmaps everything before __mmdrop())"
            )
        self.ids.free(handle.mm_id)
        del self.mms[name]
        return handle.mm_id

    def folio_new(self, name: str, order: int) -> Folio:
        """Allocate a folio of ``order`` (prep_compound_head() for order >= 1)."""
        if name in self.folios:
            raise Rejected(f"folio {name!r} already exists")
        if not 0 <= order <= MAX_ORDER:
            raise Rejected(f"order {order} is outside 0..{MAX_ORDER}")
        folio = Folio(self.config, order)
        self.folios[name] = FolioHandle(name, folio, FolioTruth(folio.nr_pages))
        return folio

    def folio_free(self, name: str) -> Folio:
        """Free a folio; rejected as the kernel's bad_page checks would be."""
        handle = self.folio_handle(name)
        reason = free_page_check_failure(handle.folio)
        if reason is not None:
            raise Rejected(f"bad page state at free: {reason}", check="free_tail_page_prepare")
        del self.folios[name]
        return handle.folio

    # -- rmap operations -------------------------------------------------------------
    def map_new_anon(self, folio_name: str, mm_name: str, level: RmapLevel) -> RmapResult:
        """``folio_add_new_anon_rmap()`` on an unmapped folio."""
        handle = self.folio_handle(folio_name)
        mm = self.mm(mm_name)
        folio = handle.folio
        if folio_mapped(folio) or handle.truth.total:
            raise Rejected(f"folio {folio_name!r} is mapped: map_new_anon needs a fresh, unmapped folio")
        want = PMD if folio.order >= self.config.pmd_order else PTE
        if level is not want:
            raise Rejected(
                f"an order-{folio.order} folio is mapped by {want.value} in folio_add_new_anon_rmap() "
                f"(PMD order is {self.config.pmd_order}), not by {level.value}"
            )
        rmap_precheck(folio, 0, folio.nr_pages, mm.mm_id, level)
        result = folio_add_new_anon_rmap(folio, mm.mm_id)
        if level is PMD:
            handle.truth.add_pmd(mm_name)
            mm.nr_mappings += 1
        else:
            handle.truth.add_ptes(mm_name, 0, folio.nr_pages)
            mm.nr_mappings += folio.nr_pages
        return result

    def map(self, folio_name: str, mm_name: str, level: RmapLevel, page: int = 0, nr: int = 1) -> RmapResult:
        """``folio_add_{anon,file}_rmap_{ptes,pmd}()``."""
        handle, mm, page, nr = self._prepare(folio_name, mm_name, level, page, nr)
        result = folio_add_rmap(handle.folio, page, nr, mm.mm_id, level, self.owner)
        self._account_add(handle, mm, level, page, nr)
        return result

    def dup(self, folio_name: str, mm_name: str, level: RmapLevel, page: int = 0, nr: int = 1) -> RmapResult:
        """``folio_dup_file_rmap_*()`` / ``folio_try_dup_anon_rmap_*()`` for the child ``mm_name``."""
        handle, mm, page, nr = self._prepare(folio_name, mm_name, level, page, nr)
        if level is PTE and not handle.truth.any_maps_ptes(page, nr):
            raise Rejected(
                f"dup of pages {page}..{page + nr - 1} of folio {folio_name!r}: some page is not "
                "mapped by any MM's PTE (fork only duplicates what the parent maps)"
            )
        if level is PMD and not handle.truth.any_maps_pmd():
            raise Rejected(f"dup at pmd level of folio {folio_name!r}, which no MM maps by PMD")
        result = folio_dup_rmap(handle.folio, page, nr, mm.mm_id, level, self.owner)
        self._account_add(handle, mm, level, page, nr)
        return result

    def unmap(self, folio_name: str, mm_name: str, level: RmapLevel, page: int = 0, nr: int = 1) -> RmapResult:
        """``folio_remove_rmap_{ptes,pmd}()``."""
        handle, mm, page, nr = self._prepare(folio_name, mm_name, level, page, nr)
        truth = handle.truth
        if level is PTE and not truth.mm_maps_ptes(mm_name, page, nr):
            raise Rejected(
                f"unmap of pages {page}..{page + nr - 1} of folio {folio_name!r}: mm {mm_name!r} "
                "does not map every one of them by PTE"
            )
        if level is PMD and not truth.mm_maps_pmd(mm_name):
            raise Rejected(f"unmap at pmd level: mm {mm_name!r} has no PMD mapping of folio {folio_name!r}")
        result = folio_remove_rmap(handle.folio, page, nr, mm.mm_id, level, self.owner)
        if level is PMD:
            truth.remove_pmd(mm_name)
            mm.nr_mappings -= 1
        else:
            truth.remove_ptes(mm_name, page, nr)
            mm.nr_mappings -= nr
        return result

    def _prepare(
        self, folio_name: str, mm_name: str, level: RmapLevel, page: int, nr: int
    ) -> tuple[FolioHandle, MMHandle, int, int]:
        handle = self.folio_handle(folio_name)
        mm = self.mm(mm_name)
        if level is PMD:
            page, nr = 0, handle.folio.nr_pages
        rmap_precheck(handle.folio, page, nr, mm.mm_id, level)
        return handle, mm, page, nr

    @staticmethod
    def _account_add(handle: FolioHandle, mm: MMHandle, level: RmapLevel, page: int, nr: int) -> None:
        if level is PMD:
            handle.truth.add_pmd(mm.name)
            mm.nr_mappings += 1
        else:
            handle.truth.add_ptes(mm.name, page, nr)
            mm.nr_mappings += nr

    # -- one entry point for traces --------------------------------------------------
    def apply(self, op: Op) -> RmapResult | int | Folio:
        """Apply one parsed trace operation; Rejected leaves everything unchanged."""
        kind = op.op
        if kind == "map":
            return self.map(op.folio, op.mm, op.level, op.page, op.nr)  # type: ignore[arg-type]
        if kind == "unmap":
            return self.unmap(op.folio, op.mm, op.level, op.page, op.nr)  # type: ignore[arg-type]
        if kind == "dup":
            return self.dup(op.folio, op.mm, op.level, op.page, op.nr)  # type: ignore[arg-type]
        if kind == "map_new_anon":
            return self.map_new_anon(op.folio, op.mm, op.level)  # type: ignore[arg-type]
        if kind == "mm_new":
            return self.mm_new(op.mm)  # type: ignore[arg-type]
        if kind == "mm_free":
            return self.mm_free(op.mm)  # type: ignore[arg-type]
        if kind == "folio_new":
            return self.folio_new(op.folio, op.order)  # type: ignore[arg-type]
        if kind == "folio_free":
            return self.folio_free(op.folio)  # type: ignore[arg-type]
        raise Rejected(f"unknown op {kind!r}")


def free_page_check_failure(folio: Folio) -> str | None:
    """The bad_page checks at free (free_tail_page_prepare(), free_page_is_bad()).

    Returns the kernel's reason for the first check that fails, or None.
    """
    cfg = folio.config
    if folio.order == 0:
        if folio.page_mapcount[0] != -1:
            return "nonzero mapcount"
        return None
    if folio.large_mapcount + 1:
        return "nonzero large_mapcount"
    if cfg.page_mapcount and folio.nr_pages_mapped:
        return "nonzero nr_pages_mapped"
    if folio.mm_id_mapcount[0] != -1:
        return "nonzero mm mapcount 0"
    if folio.mm_id_mapcount[1] != -1:
        return "nonzero mm mapcount 1"
    if cfg.has_entire_mapcount(folio.order):
        if folio.entire_mapcount + 1:
            return "nonzero entire_mapcount"
        if folio.pincount:
            return "nonzero pincount"
    for idx, raw in enumerate(folio.page_mapcount):
        if raw != -1:
            return f"nonzero mapcount (page {idx})"
    return None
