"""Page contents: every page is an immutable ``bytes`` of PAGE_SIZE.

Immutable pages make copies cheap (a fork of the reference model shares the
objects) and make a wrong reuse visible as a value in the wrong place.
"""

from __future__ import annotations

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

ZERO_PAGE = bytes(PAGE_SIZE)
_FILLED: dict[int, bytes] = {0: ZERO_PAGE}


def filled_page(value: int) -> bytes:
    """A page with every byte set to ``value`` (shared objects, one per value)."""
    page = _FILLED.get(value)
    if page is None:
        page = _FILLED[value] = bytes([value]) * PAGE_SIZE
    return page


def write_into(page: bytes, offset: int, data: bytes) -> bytes:
    """``page`` with ``data`` stored at ``offset`` (data must fit in the page)."""
    if offset == 0 and len(data) == PAGE_SIZE:
        return filled_page(data[0]) if data.count(data[0]) == PAGE_SIZE else data
    return page[:offset] + data + page[offset + len(data):]


def describe_page(page: bytes) -> str:
    """A short human description: ``00*4096`` or the first bytes in hex."""
    first = page[0]
    if page.count(first) == len(page):
        return f"{first:02x}*{len(page)}"
    head = page[:8].hex()
    return f"{head}..."


class SparsePages:
    """A fixed-length sequence of pages that stores only the pages that differ from ``default``.

    Files and anonymous shared memory can be far larger than what a run touches (a 1 TiB
    MAP_SHARED|MAP_ANONYMOUS mapping is 2**28 pages): memory and the cost of copying and
    comparing follow the pages written, not the size.
    """

    __slots__ = ("_len", "_pages", "default")

    def __init__(self, length: int, default: bytes = ZERO_PAGE) -> None:
        if length < 0:
            raise ValueError(f"a negative number of pages: {length}")
        self._len = length
        self._pages: dict[int, bytes] = {}
        self.default = default

    def __len__(self) -> int:
        return self._len

    def _check(self, index: int) -> None:
        if not 0 <= index < self._len:
            raise IndexError(f"page {index} outside 0..{self._len - 1}")

    def __getitem__(self, index: int) -> bytes:
        self._check(index)
        return self._pages.get(index, self.default)

    def __setitem__(self, index: int, page: bytes) -> None:
        self._check(index)
        if page is self.default or page == self.default:
            self._pages.pop(index, None)
        else:
            self._pages[index] = page

    def stored(self) -> list[int]:
        """The indexes holding a page other than the default, in increasing order."""
        return sorted(self._pages)

    def copy(self) -> SparsePages:
        new = SparsePages(self._len, self.default)
        new._pages = dict(self._pages)
        return new
