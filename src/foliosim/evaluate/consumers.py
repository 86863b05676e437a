"""Consumers the simulator does not run as syscalls: khugepaged and NUMA migration.

Both are read-only models of where v6.15 asks ``folio_maybe_mapped_shared()``:

- mm/khugepaged.c ``hpage_collapse_scan_pmd()``: every PTE that maps a
  maybe-shared anon folio counts as shared; more than ``max_ptes_shared``
  (default HPAGE_PMD_NR / 2) aborts the collapse of that PMD range.
- mm/mempolicy.c ``migrate_folio_add()`` (mbind() with MPOL_MF_MOVE, without
  MPOL_MF_MOVE_ALL): a maybe-shared folio is not queued for migration.

The design answers through :meth:`Probe.ask`; the scorer compares the decision
with the one the exact per-MM truth would take. Nothing in the machine changes.
"""

from __future__ import annotations

from foliosim.evaluate.probe import Probe
from foliosim.vm.machine import Machine
from foliosim.vm.mm import MM
from foliosim.vm.pagetable import SimFolio


def khugepaged_scan(m: Machine, probe: Probe, mm: MM, max_ptes_shared: int | None = None) -> int:
    """Scan every PTE-mapped, PMD-sized range of ``mm``'s private anon VMAs; returns ranges decided."""
    limit = m.pmd_pages // 2 if max_ptes_shared is None else max_ptes_shared
    decided = 0
    for vma in mm.vmas:
        if not vma.is_anon or vma.shared:
            continue
        for idx in m._pmd_indexes(vma.start, vma.end):
            base = idx << m.pmd_order
            if base < vma.start or base + m.pmd_pages > vma.end or idx in mm.pmds or idx not in mm.pte_tables:
                continue  # thp_vma_suitable_order(), or already a PMD / no page table
            ptes: dict[str, tuple[SimFolio, int]] = {}
            for vpn in range(base, base + m.pmd_pages):
                pte = mm.ptes.get(vpn)
                if pte is None or pte.folio.is_zero or not pte.folio.is_anon:
                    continue
                folio, count = ptes.get(pte.folio.name, (pte.folio, 0))
                ptes[pte.folio.name] = (folio, count + 1)
            if not ptes:
                continue
            group = probe.new_group()  # one decision: the probe's scorer collapses iff <= limit shared PTEs
            for folio, count in ptes.values():
                probe.ask(folio, "khugepaged", group=group, weight=count, limit=limit)
            decided += 1
    return decided


def numa_migrate(m: Machine, probe: Probe, mm: MM, start: int, end: int) -> int:
    """mbind(MPOL_MF_MOVE) over ``[start, end)`` (page numbers); returns the large folios decided."""
    seen: dict[str, SimFolio] = {}
    for vma in mm.vmas_in(start, end):
        lo, hi = max(start, vma.start), min(end, vma.end)
        for idx in m._pmd_indexes(lo, hi):
            pmd = mm.pmds.get(idx)
            if pmd is not None and not pmd.folio.is_zero:
                seen.setdefault(pmd.folio.name, pmd.folio)
        for vpn in m._ptes_in(mm, lo, hi):
            f = mm.ptes[vpn].folio
            if not f.is_zero:
                seen.setdefault(f.name, f)
    decided = 0
    for f in seen.values():
        probe.ask(f, "numa_migrate")  # a question on a large folio is one decision (the probe's scorer)
        decided += bool(f.order)
    return decided
