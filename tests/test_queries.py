"""folio_maybe_mapped_shared() and the other read-only queries."""

from __future__ import annotations

from foliosim.folio import (
    Folio,
    folio_average_page_mapcount,
    folio_likely_mapped_shared,
    folio_maybe_mapped_shared,
    folio_precise_page_mapcount,
    pte_mapcounts_rle,
)
from foliosim.kconfig import KernelConfig
from tests.helpers import PMD, PTE, make


def test_one_mapping_is_exclusive_even_with_the_bit_set() -> None:
    s = make()
    s.map("F", "A", PTE, 0, 1)
    f = s.folio("F")
    f.mm_ids |= f.config.shared_bit
    assert not folio_maybe_mapped_shared(f)
    s.map("F", "A", PTE, 1, 1)
    assert folio_maybe_mapped_shared(f)


def test_small_folio_uses_mapcount() -> None:
    s = make(folios={"S": 0})
    s.map("S", "A", PTE, 0, 1)
    assert not folio_maybe_mapped_shared(s.folio("S"))
    s.map("S", "A", PTE, 0, 1)  # same MM twice (pagecache in two VMAs): a false positive
    assert folio_maybe_mapped_shared(s.folio("S"))


def test_unmapped_large_folio_is_not_shared() -> None:
    assert not folio_maybe_mapped_shared(Folio(KernelConfig(), 4))


def test_legacy_heuristic_false_negative() -> None:
    """v6.14's folio_likely_mapped_shared() guessed from page 0 only."""
    s = make(folios={"F": 2})
    s.map("F", "A", PTE, 2, 2)
    s.map("F", "B", PTE, 2, 2)
    f = s.folio("F")
    assert folio_maybe_mapped_shared(f)
    assert not folio_likely_mapped_shared(f)  # the old function's false negative


def test_average_page_mapcount_boundaries() -> None:
    s = make(KernelConfig(64, True), folios={"F": 9})
    s.map("F", "A", PTE, 0, 512)
    s.map("F", "A", PTE, 0, 255)
    f = s.folio("F")
    assert folio_average_page_mapcount(f) == 1  # 767 mappings
    s.map("F", "A", PTE, 255, 1)
    assert folio_average_page_mapcount(f) == 2  # 768 mappings
    s.map("F", "B", PMD)
    assert folio_average_page_mapcount(f) == 3  # PMD adds one to every page


def test_precise_page_mapcount_and_rle() -> None:
    s = make()
    s.map("F", "A", PTE, 1, 2)
    s.map("F", "B", PMD)
    f = s.folio("F")
    assert folio_precise_page_mapcount(f, 0) == 1
    assert folio_precise_page_mapcount(f, 1) == 2
    assert pte_mapcounts_rle(f) == [[0, 1], [1, 2], [0, 13]]
