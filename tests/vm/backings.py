"""The memory backings of tools/testing/selftests/mm/cow.c (run_with_*), for the simulator.

Every backing maps private anonymous memory in task ``P``, fills it with 0x01
and returns the address and size the test functions work on, exactly as the
selftest hands ``(mem, size)`` to its test function.
"""

from __future__ import annotations

from dataclasses import dataclass

from foliosim.kconfig import KernelConfig
from foliosim.vm import Machine, MachineOptions
from foliosim.vm.memory import PAGE_SIZE


@dataclass(frozen=True)
class Backing:
    name: str  # B1 / T1 / T3 / T5 / T7 / T8 style name
    order: int  # folio order (0 = small)
    variant: str  # full, pte-mapped, single-pte, mremap-half, partially-shared

    def __str__(self) -> str:
        return f"{self.variant}-order{self.order}"


def machine(config: KernelConfig) -> Machine:
    return Machine(config, MachineOptions(check=True))


def setup(m: Machine, b: Backing) -> tuple[int, int]:
    """Create task P with the backing; return (addr, size in bytes) for the test function."""
    m.spawn("P")
    nr = 1 << b.order
    size = nr * PAGE_SIZE
    thp = frozenset({b.order}) if b.order else frozenset()
    # cow.c maps 2 * size and aligns; our mmap is PMD-aligned already.
    mem = m.mmap("P", size, thp=thp, label="mem")
    assert mem > 0
    assert m.write("P", mem, b"\x01" * size)
    if b.order:
        first = m.lookup(m.task("P").mm, mem // PAGE_SIZE)
        assert first is not None and first[0].order == b.order, "the large folio was not allocated"
    if b.variant == "full":
        return mem, size
    if b.variant == "pte-mapped":  # mprotect one subpage RO and back: PTE-maps a PMD THP
        assert m.mprotect("P", mem + PAGE_SIZE, PAGE_SIZE, True, False) == 0
        assert m.mprotect("P", mem + PAGE_SIZE, PAGE_SIZE, True, True) == 0
        return mem, size
    if b.variant == "single-pte":  # MADV_DONTNEED [page 1, end): only page 0 stays mapped
        assert m.madvise("P", mem + PAGE_SIZE, size - PAGE_SIZE, "dontneed") == 0
        return mem, PAGE_SIZE
    if b.variant == "mremap-half":  # move the upper half elsewhere; test the lower half
        half = size // 2
        tmp = m.mmap("P", half, read=False, write=False, label="tmp")
        assert m.mremap("P", mem + half, half, tmp) == tmp
        return mem, half
    if b.variant == "partially-shared":  # DONTFORK all but page 0, fork a child that exits at once
        assert m.madvise("P", mem + PAGE_SIZE, size - PAGE_SIZE, "dontfork") == 0
        assert m.fork("P", "early") > 0
        assert m.exit("early") == 0
        assert m.madvise("P", mem + PAGE_SIZE, size - PAGE_SIZE, "dofork") == 0
        return mem, size
    raise AssertionError(b.variant)


def backings(pmd_order: int, mthp_orders: tuple[int, ...]) -> list[Backing]:
    """Every folio size the simulator supports, with the cow.c variants that apply to it."""
    out = [Backing("B1", 0, "full")]
    for order in (*mthp_orders, pmd_order):
        out.append(Backing("T1", order, "full"))
        if order == pmd_order:
            out.append(Backing("T3", order, "pte-mapped"))
        out.append(Backing("T5", order, "single-pte"))
        out.append(Backing("T7", order, "mremap-half"))
        out.append(Backing("T8", order, "partially-shared"))
    return out
