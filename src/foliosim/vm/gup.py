"""GUP: pins (FOLL_PIN) and plain references (FOLL_GET), mm/gup.c.

A R/O pin of a page that is not exclusive unshares it first
(``gup_must_unshare()`` -> FAULT_FLAG_UNSHARE); a writable pin breaks CoW
with a write fault. Pins add 1 to refcount and pincount for folios that
have a pincount (``folio_has_pincount()``), GUP_PIN_COUNTING_BIAS to the
refcount otherwise. The zero page is never pinned or referenced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from foliosim.vm.events import EFAULT, EINVAL, SimError
from foliosim.vm.fault import handle_mm_fault
from foliosim.vm.fork import GUP_PIN_COUNTING_BIAS
from foliosim.vm.memory import PAGE_SHIFT, PAGE_SIZE
from foliosim.vm.oracle import GupHandle
from foliosim.vm.pagetable import SimFolio

if TYPE_CHECKING:
    from foliosim.vm.machine import Machine
    from foliosim.vm.mm import MM
    from foliosim.vm.vma import Vma


def gup_must_unshare(vma: Vma, f: SimFolio, page: int, longterm: bool, by_pmd: bool) -> bool:
    """``gup_must_unshare()`` for a R/O FOLL_PIN: anon pages must be exclusive; long-term pins
    of page-cache or zero pages in private mappings must be replaced by anon copies."""
    if not f.is_anon:
        return longterm and vma.is_cow
    return not f.exclusive[0 if by_pmd else page]


def gup(m: Machine, task_name: str, handle: str, addr: int, length: int, *, write: bool,
        longterm: bool, foll_pin: bool, fast: bool = False) -> int:
    """Pin (or reference) every page of ``[addr, addr+length)``: all or nothing."""
    task = m._runnable(task_name)
    if not handle or handle in m.gup:
        raise SimError(f"pin/pipe name {handle!r} is already in use" if handle else "empty pin name")
    m._begin(task)
    if addr < 0 or addr % PAGE_SIZE or length <= 0:
        return m._fail("pin" if foll_pin else "vmsplice", -EINVAL)
    start = addr >> PAGE_SHIFT
    nr = (length + PAGE_SIZE - 1) // PAGE_SIZE
    if not foll_pin:
        nr = min(nr, m.options.vmsplice_max_pages)  # the pipe has 16 buffers
    mm = task.mm
    for vpn in range(start, start + nr):  # check everything before touching anything
        vma = mm.find_vma(vpn)
        if vma is None or not vma.read or (write and not vma.write):
            return m._fail("pin" if foll_pin else "vmsplice", -EFAULT,
                           f"page {vpn << PAGE_SHIFT:#x} is not mapped {'writable' if write else 'readable'}")
    if foll_pin and not mm.has_pinned:
        mm.has_pinned = True  # mm_set_has_pinned_flag()
        m.emit("gup", f"{mm.name}: MMF_HAS_PINNED set")
    pages: list[tuple[SimFolio, int]] = []
    vpns: list[int | None] = []
    shared: list[tuple[str, int] | None] = []
    for vpn in range(start, start + nr):
        vma = mm.find_vma(vpn)
        assert vma is not None
        f, page = _follow(m, mm, vma, vpn, write, longterm, foll_pin)
        if not f.is_zero:
            if foll_pin:
                _grab_pin(m, f)
            else:
                m.get(f)
                f.refs += 1
        pages.append((f, page))
        shared.append((vma.file.name, vma.file_index(vpn)) if vma.shared and vma.file is not None else None)
        coherent = f.is_anon or vma.shared or (foll_pin and longterm)
        vpns.append(vpn if coherent else None)
    m.gup[handle] = GupHandle(handle, task.name, mm, foll_pin, write, longterm, pages, vpns, shared=shared)
    m.gup[handle].track(m)
    kind = ("R/W" if write else "R/O") + (" long-term" if longterm else "") + (" fast" if fast else "")
    what = f"{kind} pin" if foll_pin else "vmsplice reference"
    m.counters["pin" if foll_pin else "vmsplice"] += 1
    m.emit("gup", f"{task.name}: {what} {handle} on {nr} page(s) at {addr:#x}: "
                  + ", ".join(f"{f.name}[{p}]" for f, p in pages[:4]) + (" ..." if nr > 4 else ""))
    m._end()
    return nr


def _follow(m: Machine, mm: MM, vma: Vma, vpn: int, write: bool, longterm: bool,
            foll_pin: bool) -> tuple[SimFolio, int]:
    """``follow_page_mask()`` + ``faultin_page()`` until the page can be grabbed."""
    for _ in range(4):
        hit = m.lookup(mm, vpn)
        if hit is None:
            handle_mm_fault(m, mm, vma, vpn, write=write)
            continue
        f, page, writable = hit
        if write and not writable:
            handle_mm_fault(m, mm, vma, vpn, write=True)
            continue
        by_pmd = (vpn >> m.pmd_order) in mm.pmds
        if foll_pin and not write and gup_must_unshare(vma, f, page, longterm, by_pmd):
            handle_mm_fault(m, mm, vma, vpn, write=False, unshare=True)
            continue
        return f, page
    raise AssertionError(f"GUP did not converge at {vpn << PAGE_SHIFT:#x}")


def _grab_pin(m: Machine, f: SimFolio) -> None:
    """``try_grab_folio(FOLL_PIN)``."""
    core = f.core()
    if m.config.has_pincount(f.order):
        core.refcount += 1
        core.pincount += 1
    else:
        core.refcount += GUP_PIN_COUNTING_BIAS
    f.pins += 1


def release(m: Machine, handle: str) -> int:
    """``unpin_user_pages()`` or dropping the pipe's references."""
    h = m.gup.get(handle)
    if h is None:
        raise SimError(f"no pin or pipe {handle!r} (known: {', '.join(sorted(m.gup)) or 'none'})")
    m._begin()
    del m.gup[handle]
    for f, _page in h.pages:
        if f.is_zero:
            continue
        if h.foll_pin:
            f.pins -= 1
            if m.config.has_pincount(f.order):
                f.core().pincount -= 1
                m.put(f, 1)
            else:
                m.put(f, GUP_PIN_COUNTING_BIAS)
        else:
            f.refs -= 1
            m.put(f, 1)
    m.emit("gup", f"{handle} released ({len(h.pages)} page(s))")
    m._end()
    return 0
