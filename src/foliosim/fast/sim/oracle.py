"""The fast engine's isolation oracle and folio invariants (foliosim.vm.oracle.check_machine over arrays).

Contents are compared as values (content ids turned into pages); the expected view of every MM is the
reference's own :class:`foliosim.vm.oracle.ReferenceMemory`, fed by the same calls.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from foliosim.fast import kernels as K
from foliosim.fast.sim import layout as L
from foliosim.vm.memory import PAGE_SHIFT, ZERO_PAGE, describe_page

if TYPE_CHECKING:
    from foliosim.fast.sim.engine import FastMachine

MAX_REPORTS = 8


def check_fast(m: FastMachine) -> list[str]:
    """Every violation of isolation or of a folio invariant, in words (empty when all is well)."""
    problems: list[str] = []
    entries: dict[int, int] = defaultdict(int)
    page_mms: dict[tuple[int, int], set[int]] = defaultdict(set)
    mm_sets: dict[int, set[int]] = defaultdict(set)
    by_pmd: set[int] = set()
    for mm in m.mms.values():
        if mm.zapped:
            continue
        ptes, pmds = m.mappings(mm)
        vpns: dict[int, tuple[int, int]] = {vpn: (f, page) for vpn, (f, page, _w, _d) in ptes.items()}
        for idx, (f, _w) in pmds.items():
            base = idx << m.po
            for k in range(m.P):
                vpns[base + k] = (f, k)
            if f >= 0:
                entries[f] += 1
                mm_sets[f].add(mm.num)
                by_pmd.add(f)
                for k in range(m.P):
                    page_mms[(f, k)].add(mm.num)
        for vpn, (f, page, write, _d) in ptes.items():
            vma = mm.find_vma(vpn)
            if vma is None:
                problems.append(f"{mm.name}: PTE at {vpn << PAGE_SHIFT:#x} outside any VMA")
                continue
            if f < 0:
                if write:
                    problems.append(f"{mm.name}: writable zero-page PTE at {vpn << PAGE_SHIFT:#x}")
                continue
            entries[f] += 1
            mm_sets[f].add(mm.num)
            page_mms[(f, page)].add(mm.num)
            if write and not vma.shared and not m.pex[int(m.fs[f, K.F_OFF]) + page]:
                problems.append(f"{mm.name}: writable PTE at {vpn << PAGE_SHIFT:#x} maps f{int(m.fs[f, L.X_NAME])}"
                                f"[{page}], which is not an AnonExclusive page")
        private = m.ref.private.get(mm.name, {})
        for vpn in sorted(set(vpns) | set(private)):
            vma = mm.find_vma(vpn)
            if vma is None:
                continue
            want = m.ref.expected(mm, vma, vpn)  # type: ignore[arg-type]
            hit = vpns.get(vpn)
            seen = ZERO_PAGE if hit is None else m.content(*hit)
            if seen != want:
                what = "leak (sees data it must not)" if seen != ZERO_PAGE else "lost write"
                problems.append(f"isolation: {mm.name} at {vpn << PAGE_SHIFT:#x} reads {describe_page(seen)}, "
                                f"the reference model says {describe_page(want)}: {what}")
    for h in m.gup.values():
        for i, (f, page) in enumerate(h.pages):
            held = m.content(f, page)
            where = h.shared[i] if h.shared else None
            if where is not None:  # a page-cache page of a shared mapping: always the file's content
                want_file = m.ref.files[where[0]][where[1]]
                if held != want_file:
                    problems.append(f"{'pin' if h.foll_pin else 'pipe'} {h.name}: page {i} holds "
                                    f"{describe_page(held)}, file {where[0]} page {where[1]} is "
                                    f"{describe_page(want_file)}")
                continue
            if not h.foll_pin:  # a pipe may hold any value the owner's view had, never anything else
                if h.allowed[i] and held not in h.allowed[i]:
                    problems.append(f"pipe {h.name}: page {i} holds {describe_page(held)}, which {h.task} never "
                                    "had there: leak through a plain reference")
                continue
            at = h.vpns[i]
            if at is None or h.mm.zapped:
                continue
            pinned_vma = h.mm.find_vma(at)
            if pinned_vma is None:
                continue
            wanted = m.ref.expected(h.mm, pinned_vma, at)  # type: ignore[arg-type]
            if held != wanted:
                problems.append(f"pin {h.name}: page {i} holds {describe_page(held)} but {h.task} reads "
                                f"{describe_page(wanted)} at {at << PAGE_SHIFT:#x}: stale pin")
    for f in m.live_folios():
        name = f"f{int(m.fs[f, L.X_NAME])}"
        order = int(m.fs[f, K.F_ORDER])
        pins = int(m.fs[f, L.X_PINS])
        has_pc = m.config.has_pincount(order)
        cache = (1 << order) if m.fs[f, L.X_PCFILE] else 0  # the page cache's references
        refs_wanted = entries.get(f, 0) + (pins if has_pc else pins * 1024) + int(m.fs[f, L.X_REFS]) + cache
        ref = int(m.fs[f, L.X_REF])
        if ref != refs_wanted:
            problems.append(f"{name}: refcount {ref}, expected {refs_wanted}")
        if int(m.fs[f, L.X_PINCOUNT]) != (pins if has_pc else 0):
            problems.append(f"{name}: pincount {int(m.fs[f, L.X_PINCOUNT])} but {pins} pins")
        if len(mm_sets.get(f, ())) > 1 and not _maybe_shared(m, f):
            problems.append(f"{name}: mapped by {len(mm_sets[f])} MMs but folio_maybe_mapped_shared() says "
                            "exclusive (a false negative)")
        off = int(m.fs[f, K.F_OFF])
        for page in range(1 << order):
            flag = m.pex[off] if f in by_pmd else m.pex[off + page]
            if flag and len(page_mms.get((f, page), ())) > 1:
                problems.append(f"{name}[{page}] is AnonExclusive but mapped by {len(page_mms[(f, page)])} MMs")
    return problems[:MAX_REPORTS] + ([f"... and {len(problems) - MAX_REPORTS} more"]
                                     if len(problems) > MAX_REPORTS else [])


def _maybe_shared(m: FastMachine, f: int) -> bool:
    order = int(m.fs[f, K.F_ORDER])
    if order == 0:
        return int(m.pmc[int(m.fs[f, K.F_OFF])]) + 1 > 1
    mc = int(m.fs[f, K.F_LARGE]) + 1
    return mc > 1 and bool(m.fs[f, K.F_SHARED])
