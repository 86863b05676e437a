"""The page-table loops of the compiled kernels (foliosim.fast.sim.kern) on the cases their shortcuts must get right.

``access()`` looks a page table up once for a run of pages in one table (the slot is kept until the PMD index
changes, a fault happens or the next op starts); fork's and zap's runs of small folios and their large-folio batches
index with unsigned integers. Both engines' results must stay the reference's, and the compiled interpreter's the
one-step path's.
"""

from __future__ import annotations

import pytest

from foliosim.kconfig import KernelConfig
from foliosim.workloads.steps import Step
from tests.fastsim.test_kprog import CONFIGS, IDS, assert_like_one_by_one, assert_like_reference

PMD = 512  # pages per page table with the default configurations


def two_mms_one_batch() -> list[Step]:
    """A parent and its child touching the same pages in alternation, in one batch of accesses (no other step
    between them): runs that cross a page-table boundary, writes that CoW after a read of the same table, and the
    two MMs' tables at the same PMD index back to back; then a pageout splits the heap's folios into small ones, a
    second child forks and exits over them (fork's and zap's runs of small folios) and the parent writes again."""
    heap = ("heap", 3 * PMD, "anon", None, (4,), "rw", 0)
    steps = [Step("spawn", "P"), Step("mmap", "P", heap), Step("write", "P", ("heap", 0, 3 * PMD)),
             Step("fork", "P", ("C",))]
    for k in range(6):
        at = PMD - 8 + 3 * k  # around the first table boundary
        steps += [Step("read", "C", ("heap", at, 16)), Step("write", "P", ("heap", at + 1, 2)),
                  Step("write", "C", ("heap", at + 1, 4)), Step("read", "P", ("heap", at, 12)),
                  Step("write", "C", ("heap", 2 * PMD - 4 + k, 8)), Step("write", "P", ("heap", 2 * PMD - 4 + k, 1))]
    steps += [Step("exit", "C"), Step("madvise", "P", ("heap", 0, 2 * PMD, "pageout")), Step("fork", "P", ("D",)),
              Step("write", "D", ("heap", 3, 5)), Step("read", "D", ("heap", PMD - 2, 6)), Step("exit", "D"),
              Step("write", "P", ("heap", 0, 3 * PMD))]
    return steps


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_two_mms_in_one_batch(config: KernelConfig) -> None:
    """The compiled interpreter hands the accesses between fork and exit to ``access()`` in one call. Tried by hand
    (compiled, on a copy): keeping the looked-up table across ops (no reset per op) makes the child's
    accesses use the parent's table at the same PMD index, and not looking it up again after a fault makes the
    first write use a table that did not exist: both fail here (the counters differ; the fast oracle's store
    check fires)."""
    steps = two_mms_one_batch()
    m = assert_like_one_by_one(steps, config, record=True, keep_decisions=True)
    assert m.counters["fork"] == 2 and len(m.cow_decisions) > 20
    assert_like_one_by_one(steps, config, record=False, keep_decisions=False, fast_oracle=True)
    assert_like_reference(steps, config)
