"""Copy-on-write and unsharing as Linux v6.15 decides them.

Models mm/memory.c ``do_wp_page()``, ``wp_can_reuse_anon_folio()``,
``__wp_can_reuse_large_anon_folio()``, ``wp_page_reuse()``, ``wp_page_copy()``
and mm/huge_memory.c ``do_huge_pmd_wp_page()`` / ``do_huge_zero_wp_pmd()``.
Every decision is recorded as a :class:`CowDecision` naming the rule that took it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from foliosim.folio import folio_large_mapcount, folio_mapcount, folio_mm_id, folio_test_large_maybe_mapped_shared
from foliosim.owner import folio_lock_large_mapcount, folio_unlock_large_mapcount
from foliosim.rmap import PMD, PTE
from foliosim.vm.events import CowDecision, CowRule
from foliosim.vm.memory import PAGE_SHIFT, ZERO_PAGE
from foliosim.vm.pagetable import FolioKind, Pmd, Pte, SimFolio

if TYPE_CHECKING:
    from foliosim.vm.machine import Machine
    from foliosim.vm.mm import MM
    from foliosim.vm.vma import Vma


def _decision(m: Machine, mm: MM, vpn: int, f: SimFolio, page: int, level: str, rule: CowRule,
              outcome: str, unshare: bool) -> CowDecision:
    core = f.folio
    return CowDecision(
        task=m.task_name or "?", mm=mm.name, addr=vpn << PAGE_SHIFT, folio=f.name, page=page, order=f.order,
        level=level, rule=rule, outcome=outcome, unshare=unshare,
        mapcount=folio_mapcount(core) if core is not None else 0,
        refcount=core.refcount if core is not None else 0,
        shared_bit=folio_test_large_maybe_mapped_shared(core) if core is not None and f.order else None,
    )


def _report(m: Machine, d: CowDecision, new_folio: str | None = None) -> None:
    if new_folio is not None:
        d = replace(d, new_folio=new_folio)
    m.cow_decisions.append(d)
    if d.outcome in ("reuse", "copy"):
        m.counters[f"cow {d.outcome}"] += 1
    m.counters[f"cow rule: {d.rule.value}"] += 1
    what = "unshare" if d.unshare else "write"
    into = f" -> {d.new_folio}" if d.new_folio else ""
    m.emit("cow", f"{d.mm} {what} fault at {d.addr:#x} on {d.folio} page {d.page} ({d.level}): "
                  f"{d.outcome.upper()}{into} [{d.rule.value}; mapcount {d.mapcount}, refcount {d.refcount}"
                  + (f", shared bit {'set' if d.shared_bit else 'clear'}" if d.shared_bit is not None else "")
                  + "]", cow=d)


def wp_can_reuse_anon_folio(m: Machine, mm: MM, f: SimFolio) -> CowRule:
    """``wp_can_reuse_anon_folio()``: which rule lets us reuse (or forbids reusing) a non-exclusive page."""
    core = f.core()
    if f.order == 0:
        # KSM, swap cache and LRU batches are not modelled: the test is refcount == 1.
        return CowRule.SMALL_REFCOUNT_ONE if core.refcount == 1 else CowRule.SMALL_EXTRA_REFS
    # __wp_can_reuse_large_anon_folio(): lockless pre-checks first ...
    if folio_large_mapcount(core) <= 1:
        return CowRule.LARGE_MAPCOUNT_ONE
    if m.shared_verdict(f, "cow_reuse"):  # mapcount > 1 here: the shared bit decides
        return CowRule.LARGE_MAYBE_SHARED
    if folio_large_mapcount(core) != core.refcount:
        return CowRule.LARGE_EXTRA_REFS
    # ... then the same checks again with the mapcount frozen by the bit spinlock.
    folio_lock_large_mapcount(core)
    try:
        if folio_large_mapcount(core) > core.refcount:
            m.emit("warn", f"{f.name}: large mapcount exceeds refcount under the lock")
        ok = not m.shared_verdict(f, "cow_reuse_locked") and folio_large_mapcount(core) == core.refcount
        if ok and (folio_large_mapcount(core) > f.nr_pages or core.entire_mapcount + 1 != 0
                   or mm.mm_id not in (folio_mm_id(core, 0), folio_mm_id(core, 1))):
            m.emit("warn", f"{f.name}: reuse sanity check failed (VM_WARN_ON_ONCE_FOLIO in do_wp_page)")
    finally:
        folio_unlock_large_mapcount(core)
    return CowRule.LARGE_EXCLUSIVE if ok else CowRule.LARGE_EXTRA_REFS


def do_wp_page(m: Machine, mm: MM, vma: Vma, vpn: int, pte: Pte, unshare: bool) -> None:
    """``do_wp_page()`` on a present, read-only (or to-be-unshared) PTE."""
    f = pte.folio
    if vma.shared:
        if unshare:
            return  # gup_must_unshare() is false for shared mappings
        _report(m, _decision(m, mm, vpn, f, pte.page, "pte", CowRule.SHARED_MAPPING, "writable", False))
        pte.write = pte.dirty = True  # wp_page_shared() -> wp_page_reuse(): writable and dirty in place, never copy
        return
    if f.is_zero:
        rule = CowRule.ZERO_PAGE
    elif not f.is_anon:
        rule = CowRule.NOT_ANON
    elif f.exclusive[pte.page]:
        rule = CowRule.ANON_EXCLUSIVE
    else:
        rule = wp_can_reuse_anon_folio(m, mm, f)
    if rule.reuses:
        _report(m, _decision(m, mm, vpn, f, pte.page, "pte", rule, "reuse", unshare))
        f.exclusive[pte.page] = True
        if not unshare:
            pte.write = vma.write  # wp_page_reuse(); only this PTE, no fault-around
        return
    decision = _decision(m, mm, vpn, f, pte.page, "pte", rule, "copy", unshare)
    new = wp_page_copy(m, mm, vma, vpn, pte, unshare)
    _report(m, decision, new.name)


def wp_page_copy(m: Machine, mm: MM, vma: Vma, vpn: int, pte: Pte, unshare: bool) -> SimFolio:
    """``wp_page_copy()``: copy the one faulting page into a new order-0 anon folio."""
    old = pte.folio
    content = ZERO_PAGE if old.is_zero else old.data[pte.page]
    m.ref.privatize(mm, vma, vpn)
    m.get(old)  # do_wp_page() holds a reference across the copy
    new = m.alloc_folio(FolioKind.ANON, 0, [content])
    m.anon_vma_prepare(vma)
    m._map_new_anon(new, mm)
    new.exclusive[0] = True
    mm.ptes[vpn] = Pte(new, 0, vma.write and not unshare)
    if not old.is_zero:
        m._rmap_remove(old, mm, PTE, pte.page, 1)
        m.put(old)  # the mapping's reference
    m.put(old)  # the fault's reference
    return new


def do_huge_pmd_wp_page(m: Machine, mm: MM, vma: Vma, vpn: int, pmd: Pmd, unshare: bool) -> None:
    """``do_huge_pmd_wp_page()``: reuse the PMD if exclusive, else split it and fall back to PTEs."""
    f = pmd.folio
    idx = vpn >> m.pmd_order
    base = idx << m.pmd_order
    if f.is_zero:  # do_huge_zero_wp_pmd(): replace the huge zero page by a fresh THP
        decision = _decision(m, mm, vpn, f, vpn - base, "pmd", CowRule.HUGE_ZERO, "new-thp", unshare)
        new = m.alloc_folio(FolioKind.ANON, m.pmd_order)
        m.anon_vma_prepare(vma)
        m._map_new_anon(new, mm)
        new.exclusive[0] = True
        mm.pmds[idx] = Pmd(new, vma.write and not unshare)
        _report(m, decision, new.name)
        return
    assert f.is_anon, "file/shmem folios are never PMD-mapped by this simulator"
    if f.exclusive[0]:
        rule: CowRule | None = CowRule.ANON_EXCLUSIVE
    elif f.core().refcount == 1:
        rule = CowRule.PMD_REFCOUNT_ONE
    else:
        rule = None
    if rule is not None:
        _report(m, _decision(m, mm, vpn, f, vpn - base, "pmd", rule, "reuse", unshare))
        f.exclusive[0] = True
        if not unshare:
            pmd.write = vma.write
        return
    _report(m, _decision(m, mm, vpn, f, vpn - base, "pmd", CowRule.PMD_SPLIT, "split", unshare))
    m.split_pmd(mm, idx, "write fault on a shared PMD" if not unshare else "unshare of a shared PMD")


__all__ = ["PMD", "do_huge_pmd_wp_page", "do_wp_page", "wp_can_reuse_anon_folio", "wp_page_copy"]
