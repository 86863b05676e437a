"""Exceptions shared by every layer."""

from __future__ import annotations


class FoliosimError(Exception):
    """Base class for errors foliosim reports to its users."""


class Rejected(FoliosimError):
    """An operation the kernel's callers never perform; the state is unchanged.

    ``check`` names the kernel check that would fire (for example
    ``__folio_large_mapcount_sanity_checks``) when the rejection models one.
    """

    def __init__(self, reason: str, check: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.check = check


class MMIdExhausted(Rejected):
    """``ida_alloc_range()`` found no free MM id (the kernel's -ENOSPC)."""
