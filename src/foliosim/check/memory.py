"""Memory budgets for the checker's searches (``foliosim check --max-memory``).

The searches keep every canonical state they have seen, so the memory a depth
bound needs is not known before the search: it grows with each level, often by
the branching factor. Both engines therefore account for what they keep (the
reference: one bytes key and a dict entry per state; the fast engine: its
store, parent, flag and hash-table arrays, sized before they are allocated)
against a limit, and stop cleanly, reporting the depth completed, when the
next allocation would pass it. The default limit is half of the memory the
kernel reports as available (``MemAvailable`` in /proc/meminfo) when the run starts.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from foliosim.errors import FoliosimError

if TYPE_CHECKING:
    from foliosim.check.state import CheckConfig

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40,
          "tib": 1 << 40}

#: Bytes the reference engine keeps per state besides its key: the dict entry (hash, key and
#: value pointers, table slack), the frontier lists' pointers and allocator slack (measured: the
#: RSS of 3 MMs, order 2, stopped at 771,013 states, grew by ~160 bytes per state in all).
REFERENCE_STATE_OVERHEAD = 88

#: Fallback default when /proc/meminfo cannot be read.
FALLBACK_LIMIT = 4 << 30


class MemoryLimitError(FoliosimError):
    """The bound cannot start within the memory limit (the message says how much it needs)."""


class MemoryLimitReached(FoliosimError):
    """An engine's next allocation would pass the limit (raised inside the search, caught by it)."""


def parse_size(text: str) -> int:
    """Bytes from ``text`` such as ``512M``, ``2G``, ``1.5GiB`` or ``1048576``; ValueError if malformed."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"--max-memory: expected a size such as 512M, 2G or 1.5GiB, not {text!r}")
    value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError(f"--max-memory: must be positive, not {text!r}")
    return value


def available_bytes() -> int | None:
    """``MemAvailable`` from /proc/meminfo (Linux), or None when it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def default_limit() -> int:
    """Half of the available memory (the default ``--max-memory``)."""
    avail = available_bytes()
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return FALLBACK_LIMIT
    return max(avail // 2, 64 << 20)


def reference_state_bytes(width: int) -> int:
    """What the reference engine keeps per state: a ``width``-byte bytes key plus its dict/list share."""
    key = 33 + width  # CPython bytes object header + data + NUL
    return (key + 7) // 8 * 8 + REFERENCE_STATE_OVERHEAD


def human(n: float) -> str:
    """``n`` bytes as MiB or GiB."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / (1 << 20):.0f} MiB"


def memory_budget_message(limit: int, depth: int) -> str:
    """The ``budget_hit`` text of a search stopped by its memory limit while exploring ``depth``."""
    return (f"memory limit of {human(limit)} (--max-memory) reached while exploring depth {depth}; "
            f"depth {depth - 1} complete")


def successor_bound(cfg: CheckConfig) -> int:
    """An upper bound on the candidate operations of one state (every MM, op, level and PTE range)."""
    return cfg.mms * (2 + 3 * (cfg.nr_pages * cfg.batch + 1) + 1) + 1
