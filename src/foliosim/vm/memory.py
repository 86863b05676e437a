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
