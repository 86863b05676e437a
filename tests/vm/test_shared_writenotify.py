"""Write-notify of shared mappings (mm/mmap.c vma_wants_writenotify(), v6.15).

A writable MAP_SHARED mapping of shmem has no write-notify: its vm_page_prot is writable, so read faults
and fault-around map writable PTEs and mprotect(PROT_READ|PROT_WRITE) restores them. A regular file keeps
write-notify (page_mkwrite): read faults map read-only PTEs, a write faults (wp_page_shared()), and
mprotect makes only dirty PTEs writable again (can_change_pte_writable()). Soft-dirty tracking
(clear_refs) arms write-notify for shmem too.
"""

from __future__ import annotations

from foliosim.kconfig import KernelConfig
from foliosim.vm import Machine, MachineOptions
from foliosim.vm.events import CowRule
from foliosim.vm.memory import PAGE_SHIFT, PAGE_SIZE
from foliosim.vm.scenario import run

CFG = KernelConfig(pmd_order=5)


def new(**opts: object) -> Machine:
    return Machine(CFG, MachineOptions(check=True, **opts))  # type: ignore[arg-type]


def writable(m: Machine, task: str, addr: int) -> bool:
    hit = m.lookup(m.task(task).mm, addr >> PAGE_SHIFT)
    assert hit is not None, f"nothing mapped at {addr:#x}"
    return hit[2]


def shared_wp_faults(m: Machine) -> int:
    return sum(1 for d in m.cow_decisions if d.rule is CowRule.SHARED_MAPPING)


def test_read_fault_on_shared_shmem_maps_writable_ptes_and_a_write_takes_no_fault() -> None:
    m = new(fault_around_pages=4)
    m.create_file("S", 8 * PAGE_SIZE, fill=7, shmem=True)
    m.spawn("P")
    a = m.mmap("P", 8 * PAGE_SIZE, file="S", shared=True)
    b = m.mmap("P", 8 * PAGE_SIZE, shared=True)  # MAP_SHARED|MAP_ANONYMOUS: shmem as well
    assert m.read("P", a + PAGE_SIZE) == b"\x07"
    assert m.read("P", b) == b"\x00"
    # the faulting page and the fault-around pages of the shmem object: all writable
    assert [writable(m, "P", a + k * PAGE_SIZE) for k in range(4)] == [True] * 4
    assert writable(m, "P", b)
    faults = len(m.user_faults)
    m.write("P", a, b"x" * 4 * PAGE_SIZE)
    m.write("P", b, b"y")
    assert len(m.user_faults) == faults  # no write fault: vma_wants_writenotify() is false for shmem
    assert shared_wp_faults(m) == 0
    assert m.read("P", a + 3 * PAGE_SIZE) == b"x"


def test_private_and_read_only_shmem_mappings_map_read_only() -> None:
    m = new()
    m.create_file("S", 4 * PAGE_SIZE, fill=7, shmem=True)
    m.spawn("P")
    priv = m.mmap("P", 4 * PAGE_SIZE, file="S")
    ro = m.mmap("P", 4 * PAGE_SIZE, file="S", shared=True, write=False)
    m.read("P", priv)
    m.read("P", ro)
    assert not writable(m, "P", priv)  # a private mapping's vm_page_prot is copy-on-write
    assert not writable(m, "P", ro)
    m.write("P", priv, b"p")  # do_wp_page() on a page-cache page: a copy
    assert m.cow_decisions[-1].rule is CowRule.NOT_ANON
    assert m.read("P", ro) == b"\x07"


def test_mprotect_rw_makes_every_shmem_pte_writable() -> None:
    m = new()
    m.create_file("S", 4 * PAGE_SIZE, fill=7, shmem=True)
    m.spawn("P")
    a = m.mmap("P", 4 * PAGE_SIZE, file="S", shared=True)
    m.write("P", a, b"w")
    m.read("P", a + 2 * PAGE_SIZE)
    assert m.mprotect("P", a, 4 * PAGE_SIZE, True, False) == 0
    assert not writable(m, "P", a) and not writable(m, "P", a + 2 * PAGE_SIZE)
    assert m.mprotect("P", a, 4 * PAGE_SIZE, True, True) == 0
    # change_protection() with the new, writable vm_page_prot: written or not, every present PTE
    assert writable(m, "P", a) and writable(m, "P", a + 2 * PAGE_SIZE)
    faults = len(m.user_faults)
    m.write("P", a, b"1")
    m.write("P", a + 2 * PAGE_SIZE, b"2")
    assert len(m.user_faults) == faults


def test_regular_file_keeps_write_notify_and_mprotect_restores_only_dirty_ptes() -> None:
    m = new()
    m.create_file("F", 4 * PAGE_SIZE, fill=7)
    m.spawn("P")
    a = m.mmap("P", 4 * PAGE_SIZE, file="F", shared=True)
    m.read("P", a)
    assert not writable(m, "P", a)  # page_mkwrite: the first write must fault
    m.write("P", a, b"w")
    assert shared_wp_faults(m) == 1 and writable(m, "P", a)
    m.read("P", a + PAGE_SIZE)  # clean
    m.write("P", a + 2 * PAGE_SIZE, b"d")  # do_shared_fault(): writable and dirty
    m.mprotect("P", a, 4 * PAGE_SIZE, True, False)
    m.mprotect("P", a, 4 * PAGE_SIZE, True, True)
    # can_change_pte_writable(): a shared PTE is upgraded only when dirty
    assert writable(m, "P", a) and writable(m, "P", a + 2 * PAGE_SIZE)
    assert not writable(m, "P", a + PAGE_SIZE)
    faults = len(m.user_faults)
    m.write("P", a, b"1")
    assert len(m.user_faults) == faults
    m.write("P", a + PAGE_SIZE, b"2")
    assert len(m.user_faults) == faults + 1 and shared_wp_faults(m) == 2


def test_clear_refs_arms_write_notify_for_shmem() -> None:
    m = new(fault_around_pages=1)
    m.create_file("S", 4 * PAGE_SIZE, fill=7, shmem=True)
    m.spawn("P")
    a = m.mmap("P", 4 * PAGE_SIZE, file="S", shared=True)
    m.read("P", a)
    assert writable(m, "P", a)
    m.clear_refs("P")  # VM_SOFTDIRTY cleared: vma_soft_dirty_enabled(), write-notify from now on
    assert not writable(m, "P", a)
    m.read("P", a + PAGE_SIZE)
    assert not writable(m, "P", a + PAGE_SIZE)  # vm_page_prot is read-only now
    m.write("P", a, b"s")
    assert shared_wp_faults(m) == 1 and writable(m, "P", a)
    m.mprotect("P", a, 4 * PAGE_SIZE, True, False)
    m.mprotect("P", a, 4 * PAGE_SIZE, True, True)
    assert not writable(m, "P", a)  # soft-dirty tracking: mprotect does not re-upgrade (simplified)
    m.write("P", a, b"t")
    assert shared_wp_faults(m) == 2


def test_scenario_write_after_read_on_shared_shmem_is_not_a_fault() -> None:
    text = """
file S 64K shmem fill=7
spawn P
mmap P A 64K shared shmem=S
read P A expect=7
write P A 9
mmap P B 64K shared anon
read P B
write P B 5
"""
    result = run(text, CFG)
    assert result.error is None and result.violation is None and not result.failures
    m = result.machine
    assert [(task, write) for _step, task, _vpn, write in m.user_faults] == [("P", False), ("P", False)]
    assert m.counters["cow rule: " + CowRule.SHARED_MAPPING.value] == 0
