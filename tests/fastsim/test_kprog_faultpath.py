"""The compiled loop's recorded-fault path (kprog.run_program() with _vma_at()'s last-VMA answer, kern.access() given
the VMA row, kern.fault_around() with its page table looked up once) against the same engine one step at a time:
runs of recorded faults that hop between VMAs and between MMs at the same addresses, a fault right after an
mprotect, a munmap or a hole punched in the VMA the fault before was found in, and file faults whose fault-around
window makes the page table, in all four configurations."""

from __future__ import annotations

import pytest

pytest.importorskip("numba")

from foliosim.evaluate.runner import FAULT_NO_VMA, FAULT_PROT, refused_fault
from foliosim.fast.sim import tracerun
from foliosim.workloads.steps import Step
from tests.fastsim.test_kprog_control import _both
from tests.fastsim.test_runtrace_kprog import CONFIGS

_P, _K = "p", "k"
_LIB, _LIB2 = 0x7000000, 0x9000000


def _f(task: str, region: str | int, page: int, write: int) -> Step:
    return Step("fault", task, (region, page, write))


STEPS: tuple[Step, ...] = (
    Step("spawn", _P),
    Step("mmap", _P, ("a", 16, "anon", None, None, "rw", 0)), Step("mmap", _P, ("b", 8, "anon", None, None, "r", 0)),
    Step("mmap", _P, ("c", 16, "anon", None, None, "rw", 0)),
    # one run hopping between VMAs: a write against b's protection in its middle, a read of b
    _f(_P, "a", 0, 1), _f(_P, "a", 1, 1), _f(_P, "b", 0, 1), _f(_P, "b", 1, 0), _f(_P, "c", 0, 1), _f(_P, "a", 2, 1),
    _f(_P, "c", 1, 1), _f(_P, "a", 3, 0), _f(_P, "a", 3, 1),
    # the VMA the fault before was found in, made read-only: against its protection; writable again
    _f(_P, "a", 4, 1), Step("mprotect", _P, ("a", 0, 16, "r")), _f(_P, "a", 5, 1), _f(_P, "a", 4, 1),
    Step("mprotect", _P, ("a", 0, 16, "rw")), _f(_P, "a", 5, 1),
    # ... unmapped (its row may keep its old bounds): outside any VMA
    _f(_P, "c", 2, 1), Step("munmap", _P, ("c", 0, 16)), _f(_P, "c", 3, 1), _f(_P, "c", 2, 0),
    # ... with a hole punched in it
    _f(_P, "a", 6, 1), Step("munmap", _P, ("a", 8, 4)), _f(_P, "a", 9, 1), _f(_P, "a", 13, 1), _f(_P, "a", 7, 1),
    # parent and child at the same addresses, the child's read-only: one run alternating between the MMs
    Step("fork", _P, (_K,)), Step("mprotect", _K, ("a", 0, 8, "r")),
    _f(_P, "a", 0, 1), _f(_K, "a", 1, 1), _f(_P, "a", 1, 1), _f(_K, "a", 2, 0), _f(_K, "a", 2, 1), _f(_P, "a", 2, 1),
    _f(_K, "a", 14, 1), _f(_P, "a", 14, 1), Step("exit", _K),
    # a file mapped twice, far apart: the second mapping's first read maps the cached pages around it (its page
    # table made by the first of two runs), then reads and writes around it
    Step("file", "", ("f1", 64, 0, 0)),
    Step("mmap", _P, (_LIB, 16, "file-private", "f1", None, "r", 0)),
    Step("mmap", _P, (_LIB2, 32, "file-private", "f1", None, "rw", 0)),
    _f(_P, _LIB, 3, 0), _f(_P, _LIB, 20, 0), _f(_P, _LIB, 9, 0), _f(_P, _LIB, 12, 1),
    _f(_P, _LIB2, 5, 0), _f(_P, _LIB2, 9, 1), _f(_P, _LIB2, 3, 0), _f(_P, _LIB2, 17, 0), _f(_P, _LIB2, 6, 1),
)


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_recorded_fault_path_like_one_step_at_a_time(cfg: str) -> None:
    assert len(STEPS) >= tracerun.STRETCH_MIN
    fast, slow = _both(STEPS, CONFIGS[cfg])  # same figures and machine; one compiled stretch
    # outside any VMA: c after its munmap (twice), a's hole, _LIB past its end; against the protection: b, a
    # read-only (twice), the child's read-only a (twice), the read-only _LIB
    assert fast.faults[FAULT_NO_VMA] == 4
    assert fast.faults[FAULT_PROT] == 6
    assert fast.faults == slow.faults


def test_refused_fault_names_the_cause() -> None:
    """The one rule both engines' recorded-fault paths use: no VMA, then the access the protection refuses."""
    class Perms:
        def __init__(self, read: bool, write: bool) -> None:
            self.read, self.write = read, write

    assert refused_fault(None, False) == refused_fault(None, True) == FAULT_NO_VMA
    assert refused_fault(Perms(True, False), True) == FAULT_PROT
    assert refused_fault(Perms(True, False), False) is None
    assert refused_fault(Perms(False, False), False) == FAULT_PROT
    assert refused_fault(Perms(False, True), True) is None
