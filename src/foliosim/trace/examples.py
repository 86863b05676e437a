"""The commit message's Example 1 and Example 2 as rmap traces with narration.

From "mm/rmap: basic MM owner tracking for large folios (!hugetlb)": three
applications map pages of one shmem/file-backed large folio. Each "faults in a
folio page" here maps two pages (as fault-around would), so that the folio's
mapcount exceeds 1 and the verdict really depends on the shared bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ExampleStep:
    """One trace operation with the commit message's words for it (empty for set-up)."""

    narration: str
    op: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Example:
    """A named trace from the commit message, with the verdict it predicts."""

    name: str
    title: str
    steps: tuple[ExampleStep, ...]
    expected: str  # the commit's conclusion: "mapped exclusively" / "maybe mapped shared"
    folio: str = "F"

    def trace(self) -> list[dict[str, Any]]:
        return [step.op for step in self.steps]


def _setup(apps: int, order: int) -> list[ExampleStep]:
    steps = [ExampleStep("", {"op": "mm_new", "mm": f"App{i}"}) for i in range(1, apps + 1)]
    steps.append(ExampleStep("", {"op": "folio_new", "folio": "F", "order": order}))
    return steps


def _pte(op: str, mm: str, page: int, nr: int = 2) -> dict[str, Any]:
    return {"op": op, "folio": "F", "mm": mm, "level": "pte", "page": page, "nr": nr}


EXAMPLE_1 = Example(
    name="example1",
    title="Example 1: two apps, the first unmaps -> detected as mapped exclusively",
    steps=(
        *_setup(2, 3),
        ExampleStep("(1) App1 faults in a (shmem/file-backed) folio page -> tracked as MM0",
                    _pte("map", "App1", 0)),
        ExampleStep("(2) App2 faults in a folio page -> tracked as MM1", _pte("map", "App2", 2)),
        ExampleStep("(4) App1 unmaps all folio pages", _pte("unmap", "App1", 0)),
    ),
    expected="mapped exclusively",
)

EXAMPLE_2 = Example(
    name="example2",
    title="Example 2: three apps, two unmap -> still reported maybe mapped shared",
    steps=(
        *_setup(3, 3),
        ExampleStep("(1) App1 faults in a (shmem/file-backed) folio page -> tracked as MM0",
                    _pte("map", "App1", 0)),
        ExampleStep("(2) App2 faults in a folio page -> tracked as MM1", _pte("map", "App2", 2)),
        ExampleStep("(3) App3 faults in a folio page -> no slot available, tracked as \"unknown\"",
                    _pte("map", "App3", 4)),
        ExampleStep("(4) App1 and App2 unmap all folio pages: App1", _pte("unmap", "App1", 0)),
        ExampleStep("(4) App1 and App2 unmap all folio pages: App2", _pte("unmap", "App2", 2)),
    ),
    expected="maybe mapped shared",
)

EXAMPLES = (EXAMPLE_1, EXAMPLE_2)
