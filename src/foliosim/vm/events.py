"""What the simulator tells its observers: events, copy-on-write decisions, errnos.

The machine emits one :class:`Event` for everything a user or an evaluator may
want to see (syscall results, faults, CoW decisions with the rule that decided
them, rmap calls, consumer decisions such as MADV_COLD skipping a shared folio).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from foliosim.errors import FoliosimError

#: errno values as Linux defines them (include/uapi/asm-generic/errno-base.h).
EPERM = 1
EAGAIN = 11
ENOMEM = 12
EFAULT = 14
EBUSY = 16
EINVAL = 22
ENOSPC = 28
ERRNO_NAMES = {EPERM: "EPERM", EAGAIN: "EAGAIN", ENOMEM: "ENOMEM", EFAULT: "EFAULT", EBUSY: "EBUSY",
               EINVAL: "EINVAL", ENOSPC: "ENOSPC"}


def errno_name(value: int) -> str:
    """``-22`` -> ``"EINVAL"``; non-negative values are printed as they are."""
    if value >= 0:
        return str(value)
    return ERRNO_NAMES.get(-value, f"errno {-value}")


class CowRule(StrEnum):
    """The rule that decided a write (or unshare) fault on a read-only private page.

    Values name the kernel check (mm/memory.c do_wp_page(), wp_can_reuse_anon_folio(),
    __wp_can_reuse_large_anon_folio(); mm/huge_memory.c do_huge_pmd_wp_page()).
    """

    ANON_EXCLUSIVE = "PageAnonExclusive"  # reuse: the page is exclusive to this MM
    SMALL_REFCOUNT_ONE = "small: refcount == 1"  # reuse
    SMALL_EXTRA_REFS = "small: refcount != 1"  # copy
    LARGE_MAPCOUNT_ONE = "large: mapcount <= 1"  # copy (let the large folio be freed)
    LARGE_MAYBE_SHARED = "large: maybe mapped shared"  # copy
    LARGE_EXTRA_REFS = "large: refcount != mapcount"  # copy
    LARGE_EXCLUSIVE = "large: exclusive, refcount == mapcount (rechecked under lock)"  # reuse
    PMD_REFCOUNT_ONE = "pmd: refcount == 1"  # reuse the whole PMD
    PMD_SPLIT = "pmd: not exclusive -> split PMD, retry on PTEs"  # fallback
    HUGE_ZERO = "pmd: huge zero page -> new THP"  # do_huge_zero_wp_pmd()
    ZERO_PAGE = "zero page -> copy"  # wp_page_copy() from the zero page
    NOT_ANON = "not anon (page cache page in a private mapping) -> copy"
    SHARED_MAPPING = "shared mapping: made writable in place"  # wp_page_shared()

    @property
    def reuses(self) -> bool:
        return self in (CowRule.ANON_EXCLUSIVE, CowRule.SMALL_REFCOUNT_ONE,
                        CowRule.LARGE_EXCLUSIVE, CowRule.PMD_REFCOUNT_ONE)


@dataclass(frozen=True, slots=True)
class CowDecision:
    """One do_wp_page()/do_huge_pmd_wp_page() decision and the folio state it saw."""

    task: str
    mm: str
    addr: int
    folio: str
    page: int
    order: int
    level: str  # "pte" or "pmd"
    rule: CowRule
    outcome: str  # "reuse", "copy", "split", "new-thp", "writable"
    unshare: bool  # FAULT_FLAG_UNSHARE (R/O pin) rather than a write
    mapcount: int
    refcount: int
    shared_bit: bool | None
    new_folio: str | None = None


@dataclass(slots=True)
class Event:
    """One thing that happened at ``step`` (a public machine call)."""

    step: int
    kind: str  # task, syscall, fault, cow, rmap, segv, split (data["what"]: pmd or folio), free, decision, pin, oracle
    task: str | None
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    cow: CowDecision | None = None


class SimError(FoliosimError):
    """A request the simulated machine cannot take (unknown task, blocked task, ...).

    The machine's state is unchanged when it is raised.
    """


class OracleViolation(FoliosimError):
    """The isolation oracle or an invariant check found a wrong state."""
