"""The MM id allocator: ``mm_alloc_id()`` / ``mm_free_id()`` in kernel/fork.c.

The kernel uses an IDA over [MM_ID_MIN, MM_ID_MAX]; an IDA hands out the lowest
free id, so ids are reused as soon as they are freed. MM_ID_DUMMY (0) is never
handed out.
"""

from __future__ import annotations

import heapq

from foliosim.errors import MMIdExhausted, Rejected
from foliosim.kconfig import MM_ID_DUMMY, MM_ID_MIN, KernelConfig


class MMIdAllocator:
    """Lowest-free-id allocator over [MM_ID_MIN, MM_ID_MAX].

    Ids below ``_next`` are allocated unless they sit in the ``_freed`` heap, so
    the lowest free id is the heap's minimum, or ``_next`` when the heap is empty.
    """

    __slots__ = ("_freed", "_freed_set", "_next", "max_id")

    def __init__(self, config: KernelConfig) -> None:
        self.max_id = config.mm_id_max
        self._next = MM_ID_MIN
        self._freed: list[int] = []
        self._freed_set: set[int] = set()

    def alloc(self) -> int:
        """``mm_alloc_id()``: the lowest free id; MMIdExhausted (-ENOSPC) when none is left."""
        if self._freed:
            mm_id = heapq.heappop(self._freed)
            self._freed_set.discard(mm_id)
            return mm_id
        if self._next > self.max_id:
            raise MMIdExhausted(
                f"no free MM id: all {self.max_id} ids in [{MM_ID_MIN}, {self.max_id}] "
                "are in use (ida_alloc_range() returns -ENOSPC)",
                check="mm_alloc_id",
            )
        mm_id = self._next
        self._next += 1
        return mm_id

    def free(self, mm_id: int) -> None:
        """``mm_free_id()``: return ``mm_id`` to the pool; MM_ID_DUMMY is ignored."""
        if mm_id == MM_ID_DUMMY:
            return
        if not self.is_allocated(mm_id):
            raise Rejected(f"MM id {mm_id} is not allocated", check="mm_free_id")
        heapq.heappush(self._freed, mm_id)
        self._freed_set.add(mm_id)

    def is_allocated(self, mm_id: int) -> bool:
        return MM_ID_MIN <= mm_id < self._next and mm_id not in self._freed_set

    def peek(self) -> int | None:
        """The id the next ``alloc()`` would return, or None when exhausted."""
        if self._freed:
            return self._freed[0]
        return self._next if self._next <= self.max_id else None

    @property
    def in_use(self) -> int:
        return self._next - MM_ID_MIN - len(self._freed)
