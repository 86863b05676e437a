"""Shmem faults on the live kernel: write-notify (mm/mmap.c vma_wants_writenotify()) and whole-folio
finish_fault() for unlinked shmem objects (mm/shmem.c shmem_mmap()) agree with the simulator line by line."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.live

SCENARIOS = {
    # a read fault on a writable MAP_SHARED shmem mapping maps a writable PTE: the write that follows does not fault
    "read-then-write": """
file S 64K shmem fill=7
spawn P
mmap P A 64K shared shmem=S
read P A expect=7
write P A 9
read P A+0x1000
write P A+0x1000 3
mmap P B 64K shared anon
read P B
write P B 5
""",
    # mprotect(PROT_READ|PROT_WRITE) applies the writable vm_page_prot to every present PTE
    "mprotect-rw": """
file S 64K shmem fill=7
spawn P
mmap P A 64K shared shmem=S
write P A 9
read P A+0x2000
mprotect P A 64K r
read P A expect=9
mprotect P A 64K rw
write P A 1
write P A+0x2000 2
""",
    # an unlinked shmem object: a shared write fault maps the whole order-4 folio; a private read is fault-around
    "whole-folio": """
file S 128K shmem order=4 fill=7
spawn P
mmap P A 128K shared shmem=S
write P A+0x3000 9
read P A+0x1000 expect=7
fork P C
write C A+0x12000 5
read C A+0x1f000 expect=7
mmap P B 64K private shmem=S
write P B+0x2000 1
read P B+0x4000 expect=7
""",
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_shmem_scenario_agrees_with_the_live_kernel(full: str, name: str) -> None:
    from foliosim.live.run import run_live

    run = run_live(SCENARIOS[name], set_thp=True)
    problems = [d.describe() for r in run.lines for d in r.diffs]
    assert problems == [], "\n".join(problems[:20])
    assert run.sim_error is None
    assert sum(r.compared for r in run.lines) > 0
