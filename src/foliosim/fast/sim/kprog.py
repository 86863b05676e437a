# mypy: disable-error-code="no-any-return"
"""A compiled step interpreter: whole stretches of a workload (foliosim.workloads.steps) in one numba call.

:func:`encode` turns a step list into an int64 program once (one row per step: verb code, task number, region
number, first page, pages, argument, fill byte). :func:`run_program` executes rows from a position while they are of
the kinds it models -- reads and writes (:func:`foliosim.fast.sim.kern.access`: anonymous, file and shmem faults; up
to ``_BATCH`` consecutive ones in one call when nothing is kept per step), run-trace's recorded faults
(``OP_FAULT``, one row at a time: find_vma() and the protection test, then a one-page access, each outcome counted
as tracerun.TraceRunner counts it), fork (``dup_mmap()``: :func:`foliosim.fast.sim.kfork.fork_dup` for the VMAs with
an anon_vma, every VMA row copied -- file and shared ones too, not VM_DONTFORK ones (run-trace's programs; elsewhere
an MM with a VM_DONTFORK VMA forks in Python) --, a new MM row with the lowest free MM id, as foliosim.mmid does),
exit (``exit_mmap()``: :func:`foliosim.fast.sim.kfork.exit_zap`, then ``mmdrop()``), MADV_DONTNEED
(:func:`foliosim.fast.sim.kern.zap`), MADV_COLD/PAGEOUT (:func:`foliosim.fast.sim.kern.cold_pageout`, while no file
exists) and the khugepaged/NUMA scans (counted only) -- and returns where it stopped and why: the end, a step it
does not model (Python executes it the existing way, then the loop resumes), an array that needs room (Python grows
it; an access -- in a batch, from the row cut short -- or MADV_COLD/PAGEOUT cut short resumes where it stopped) or
an error.
Tasks and MMs live in small arrays during a run; :class:`ProgramRun` turns them back into FastTask/FastMM
objects (and the MM id allocator, counters, trace, CoW decisions and user faults) every time the loop returns, so
the machine is then as if the steps had run one by one (FastMachine.fork()/exit()/madvise()). A stretch that can
neither fork nor exit (none before the next step it does not model) reads and writes back no task, MM or id table:
recorded traces return to Python every few steps.

Run-trace's programs (tracerun.TraceProgram, :meth:`ProgramRun.enable_control`) also run the control plane in the
loop (:func:`encode_control`, :func:`_control`): mmap (anonymous or file, private or shared, at an address or at the
unmapped area, which then defines the region), munmap, mprotect, the VMA-flag madvise advice, merge and mremap
through the verbs of :mod:`foliosim.fast.sim.kvma`, with what FastMachine keeps per MM for them in ``mk`` (index
room, unmerged window, anon_birth) and the machine-wide part in ``vst``; the file step (the page-cache row; a shmem
object cached whole) and the thread step (a task sharing the MM, ``ttg`` its thread group). Failing calls, an MM made
in the stretch and short VMA rows go through Python (which counts the errno); on return only the Vma objects of the
pages whose VMAs changed are made anew (FastMachine._materialize()), and the files and threads made get their
Python objects.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from itertools import compress, repeat
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from foliosim.fast import kernels as K
from foliosim.fast._jit import jit_inline
from foliosim.fast.sim import kvma
from foliosim.fast.sim import layout as L
from foliosim.fast.sim.engine import _VMA_FIELDS, I64, FastMachine, FastMM, FastTask, PmdSet, Unsupported
from foliosim.fast.sim.kern import (
    A_VMA_SHIFT,
    access,
    add_to_cache,
    cache_range,
    cold_pageout,
    lookup,
    record,
    rehash,
    sjit,
    zap,
)
from foliosim.fast.sim.kfork import MISSING, exit_zap, fork_dup, mm_entries, room_ok
from foliosim.vm.events import OracleViolation, SimError
from foliosim.vm.memory import SparsePages, filled_page
from foliosim.vm.pagecache import SimFile
from foliosim.vm.vma import Vma
from foliosim.workloads.steps import PROT_FLAGS, Step, WorkloadError

if TYPE_CHECKING:
    from foliosim.fast.sim.steps import FastWorkloadRunner

# Program columns and verb codes.
P_OP, P_TASK, P_REG, P_FIRST, P_PAGES, P_ARG, P_FILL = range(7)
P_COLS = 7
OP_OTHER, OP_READ, OP_WRITE, OP_FORK, OP_EXIT, OP_DONTNEED, OP_COLD, OP_PAGEOUT, OP_SCAN, OP_FAULT = range(10)
_MADV_OPS = {"dontneed": OP_DONTNEED, "cold": OP_COLD, "pageout": OP_PAGEOUT}
#: the control-plane opcodes (:func:`encode_control`, run-trace's TraceProgram only): kvma's verbs in the loop
OP_MMAP, OP_MUNMAP, OP_MPROTECT, OP_MADVF, OP_MERGE, OP_MREMAP, OP_FILE, OP_THREAD, OP_VFORK, OP_EXEC = range(10, 20)
#: an OP_MMAP row's P_ARG: these flags, the label's codec number from MF_LABEL_SHIFT
MF_SHARED, MF_FILE, MF_READ, MF_WRITE, MF_EXEC, MF_NORESERVE, MF_NAMED, MF_THP = (1 << k for k in range(8))
MF_LABEL_SHIFT = 8
#: the per-MM control-plane state ``mk`` (what FastMachine keeps on each FastMM for kvma): known to it (K_OK), the
#: index slice's room, the unmerged window, anon_birth (-1: not known yet), a verb ran on it (K_USED), the pages
#: whose VMAs changed (K_PLO..K_PHI: re-materialized on return), a merge step ran on it
K_OK, K_VCAP, K_ULO, K_UHI, K_BIRTH, K_USED, K_PLO, K_PHI, K_MERGED, K_EXEC = range(10)
K_COLS = 10  # K_EXEC: made by an exec in the loop, by task number + 1 (its label)
#: ``ttg`` columns per task number: its thread group's pid (0: its own), its vfork parent's number (-1: none, -2:
#: a task the program does not name), whether a task the program does not name is in its thread group
TG_TGID, TG_VP, TG_FOREIGN = range(3)
#: ``vst`` slots after kvma's: the control opcodes on, the THP masks of mmap() without orders, MADV_HUGEPAGE, none;
#: the page cache's files and pcs entries in use, the machine's step at the last file the loop created
X_ON, X_THPDEF, X_THPMADV, X_THPNONE, X_NFILE, X_PCUSED, X_FILESTEP = range(kvma.VS_LEN, kvma.VS_LEN + 7)
#: the next pid when the loop was entered, a task the program does not name exists, a vfork or exec ran
X_PID0, X_FOREIGN, X_TASKS = range(kvma.VS_LEN + 7, kvma.VS_LEN + 10)
X_LEN = kvma.VS_LEN + 10
_FLAG_ADVICE = {"dontfork": (kvma.MA_DONTFORK, 0), "dofork": (kvma.MA_DOFORK, 0), "hugepage": (kvma.MA_THP, 1),
                "nohugepage": (kvma.MA_THP, 0)}
#: first-pass codes by verb (fork and madvise are checked one by one; anything else stops the compiled loop)
_CODES: defaultdict[str, int] = defaultdict(int, {"read": OP_READ, "write": OP_WRITE, "khugepaged": OP_SCAN,
                                                  "numa": OP_SCAN, "exit": OP_EXIT, "fork": OP_FORK,
                                                  "madvise": OP_DONTNEED, "fault": OP_FAULT})
_VERB, _TASK, _ARGS = attrgetter("verb"), attrgetter("task"), attrgetter("args")
_START, _END, _THP = attrgetter("start"), attrgetter("end"), attrgetter("thp")
_DONTFORK, _FORKED = attrgetter("dontfork"), attrgetter("anon_vma_forked")
_ARG0, _ARG1, _ARG2, _ARG3 = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(3)
_MADV_CODE = defaultdict(int, _MADV_OPS).__getitem__  # OP_OTHER (0) for the advice it does not model
_INT_TYPES = frozenset({int})
#: the most reads and writes run_program() hands to one access() call
_BATCH = 64
#: faults one access() call lists before it returns to have them counted (it then goes on)
_FAULT_ROWS = 1024
#: the most folio (and page) rows ProgramRun.run() makes ahead from the program's writes
_AHEAD_MAX = 1 << 16

# Why run_program() returned.
WHY_DONE, WHY_STEP, WHY_ROOM, WHY_ERROR, WHY_MAPPED = range(5)

# Task states (per task number of the program).
T_NONE, T_PY, T_NEW, T_VCHILD, T_BLOCKED = range(5)  # T_VCHILD: a vfork child (its exit wakes the parent)

# Room kinds.
RK_GROW, RK_ROOM, RK_VMA, RK_MS, RK_SCR, RK_COLD, RK_UF = range(7)

# The state vector ``st``.
(S_NVM, S_NMV, S_NEXT_PID, S_NEXT_MM, S_STEP, S_LAST, S_STEPS, S_SCANS, S_FORKS, S_NUF, S_PEND, S_PEND_N,
 S_PEND_FIRST, S_PEND_MM, S_PEND_OP, S_MB0, S_MB1, S_MB2, S_ROOM, S_N0, S_N1, S_N2, S_N3, S_N4, S_N5, S_RC,
 S_EARLY, S_KEEP, S_PCACHE, S_MAPPED, S_KEEPDEC, S_COMPACT) = range(32)
S_MCNT = 32  # 6 counters: cold take/skip/split, pageout take/skip/split
# S_TALLY: CoW decisions counted into ``tal`` and dropped as they are made (run-trace); S_TAKEN: the recorded fault
# being run took a fault (across a return for room); S_NREUSE: program rows in ``rs`` (steps with a reuse decision)
# S_NRACY: rows in ``racy`` (recorded faults after a race, with the folio at their address before and after);
# S_RBEFORE: that folio before the fault being run
S_TALLY, S_TAKEN, S_NREUSE, S_NRACY, S_RBEFORE = S_MCNT + 6, S_MCNT + 7, S_MCNT + 8, S_MCNT + 9, S_MCNT + 10
# S_MARK (compare's driving run, score.ScoringProgram): before each program row from S_MARKED on, note in ``marks``
# the trace rows, CoW decisions and machine step so far, and count each read/write and each recorded fault taken as
# a machine step (as foliosim.vm.machine.Machine.read()/write() do)
S_MARK, S_MARKED = S_MCNT + 11, S_MCNT + 12
S_LEN = S_MCNT + 13
#: a recorded fault's P_ARG: bit 0 written, bit 1 racy (note the folio at its region's address before and after)
FA_WRITE, FA_RACY = 1, 2
PEND_NONE, PEND_ACCESS, PEND_COLD = range(3)

# The recorded-fault outcome counters ``tal`` (then the CoW decisions by rule x outcome, R_* * len(OUTCOMES) + OC_*).
TL_TAKEN, TL_MAPPED, TL_PRESENT, TL_NO_VMA, TL_PROT = range(5)
TL_COW = 5
_NOUT = len(L.OUTCOMES)
TL_LEN = TL_COW + len(L.RULES) * _NOUT

# The MM id allocator mirror ``ids``: [next, max id, heap length, heap...] (foliosim.mmid.MMIdAllocator).
I_NEXT, I_MAX, I_LEN, I_HEAP = range(4)


# ----------------------------------------------------------------------------- the MM id allocator, compiled
@sjit
def _siftdown(ids: Any, startpos: int, pos: int) -> None:
    """heapq._siftdown over ``ids[I_HEAP:]`` (the same list as Python's heap, element for element)."""
    h = I_HEAP
    newitem = ids[h + pos]
    while pos > startpos:
        parentpos = (pos - 1) >> 1
        parent = ids[h + parentpos]
        if newitem < parent:
            ids[h + pos] = parent
            pos = parentpos
            continue
        break
    ids[h + pos] = newitem


@sjit
def _siftup(ids: Any, pos: int) -> None:
    """heapq._siftup over ``ids[I_HEAP:]``."""
    h = I_HEAP
    endpos = ids[I_LEN]
    startpos = pos
    newitem = ids[h + pos]
    childpos = 2 * pos + 1
    while childpos < endpos:
        rightpos = childpos + 1
        if rightpos < endpos and not ids[h + childpos] < ids[h + rightpos]:
            childpos = rightpos
        ids[h + pos] = ids[h + childpos]
        pos = childpos
        childpos = 2 * pos + 1
    ids[h + pos] = newitem
    _siftdown(ids, startpos, pos)


@sjit
def ids_peek(ids: Any) -> int:
    """MMIdAllocator.peek(): the id alloc() would return, -1 when exhausted."""
    if ids[I_LEN]:
        return ids[I_HEAP]
    return ids[I_NEXT] if ids[I_NEXT] <= ids[I_MAX] else -1


@sjit
def ids_alloc(ids: Any) -> int:
    """MMIdAllocator.alloc() (the caller checked ids_peek()): heapq.heappop of the freed ids, else the next."""
    n = ids[I_LEN]
    if n == 0:
        mm_id = ids[I_NEXT]
        ids[I_NEXT] += 1
        return mm_id
    last = ids[I_HEAP + n - 1]
    ids[I_LEN] = n - 1
    if n - 1 == 0:
        return last
    top = ids[I_HEAP]
    ids[I_HEAP] = last
    _siftup(ids, 0)
    return top


@sjit
def ids_free(ids: Any, mm_id: int) -> None:
    """MMIdAllocator.free(): heapq.heappush (the caller made room)."""
    if mm_id == 0:
        return
    n = ids[I_LEN]
    ids[I_HEAP + n] = mm_id
    ids[I_LEN] = n + 1
    _siftdown(ids, 0, n)


# ----------------------------------------------------------------------------- the interpreter
@sjit
def _runnable(tst: Any, tn: int) -> bool:
    """Whether task number ``tn`` is alive and not asleep in vfork()."""
    s = tst[tn]
    return T_PY <= s <= T_VCHILD  # T_PY, T_NEW, T_VCHILD


@sjit
def _room(st: Any, kind: int, n0: int, n1: int, n2: int, n3: int, n4: int, n5: int) -> int:
    st[S_ROOM] = kind
    st[S_N0] = n0
    st[S_N1] = n1
    st[S_N2] = n2
    st[S_N3] = n3
    st[S_N4] = n4
    st[S_N5] = n5
    return WHY_ROOM


@sjit
def _tag_cows(glob: Any, ctask: Any, first: int, tn: int) -> None:
    """The task of the CoW decisions recorded since ``first``."""
    for c in range(first, glob[L.G_NCOW]):
        if c < ctask.shape[0]:
            ctask[c] = tn


@sjit
def _tally(st: Any, glob: Any, cow: Any, tal: Any, rs: Any, first: int, i: int) -> None:
    """After a kernel call of program row ``i``, with ``S_TALLY`` (TraceMachine: no decision objects): each CoW
    decision since ``first`` counted by (rule, outcome) into ``tal`` and dropped, and the row noted in ``rs`` when
    one reused a page (run-trace's reuse oracle schedule)."""
    reuse = False
    for c in range(first, glob[L.G_NCOW]):
        tal[TL_COW + cow[c, L.C_RULE] * _NOUT + cow[c, L.C_OUTCOME]] += 1
        if cow[c, L.C_OUTCOME] == L.OC_REUSE:
            reuse = True
    glob[L.G_NCOW] = first
    k = st[S_NREUSE]
    if reuse and (k == 0 or rs[k - 1] != i):
        rs[k] = i
        st[S_NREUSE] = k + 1


@sjit
def _tally_rows(st: Any, glob: Any, cow: Any, tal: Any, rs: Any, first: int, i: int, ops: Any, faults: Any,
                nf: int) -> None:
    """:func:`_tally` after an access() call over a batch of recorded faults (program rows ``i``...): a reuse
    decision's row is that of its fault (the first one listed, in order, at the decision's MM and page; the
    decisions follow the faults' order, as TraceMachine._note_reuses() matches them)."""
    k = 0
    for c in range(first, glob[L.G_NCOW]):
        tal[TL_COW + cow[c, L.C_RULE] * _NOUT + cow[c, L.C_OUTCOME]] += 1
        while k < nf and not (faults[k, 1] == cow[c, L.C_VPN] and ops[faults[k, 0], 0] == cow[c, L.C_MM]):
            k += 1
        if cow[c, L.C_OUTCOME] == L.OC_REUSE:
            row = i + faults[k, 0] if k < nf else i
            n = st[S_NREUSE]
            if n == 0 or rs[n - 1] != row:
                rs[n] = row
                st[S_NREUSE] = n + 1
        if k == nf:
            k = 0
    glob[L.G_NCOW] = first


@sjit
def _access_row(ops: Any, k: int, prog: Any, j: int, m: int, vpn: int, write: bool, v: int) -> None:
    """Row ``k`` of kern.access()'s operations from program row ``j``: MM row, first page, pages, write, fill;
    ``v``: the VMA row already found and checked for the access (-1: access() checks)."""
    ops[k, 0] = m
    ops[k, 1] = vpn
    ops[k, 2] = prog[j, P_PAGES]
    ops[k, 3] = 1 if write else 0
    ops[k, 4] = prog[j, P_FILL]
    ops[k, 5] = (v + 1) << A_VMA_SHIFT


@sjit
def _fault_rows(prog: Any, i: int, end: int, most: int, tst: Any, tmm: Any, rtab: Any, ms: Any, vm: Any, mv: Any,
                ops: Any, lv: int, lvm: int) -> tuple[int, int, int]:
    """The recorded faults after row ``i`` (whose access row is ``ops[0]``) that join it in one access() call:
    consecutive ones, not racy, of a task that can run, in a known region, inside a VMA that allows the access (the
    checks run_program() makes of each, which the faults before cannot change); their rows into ``ops`` from 1,
    each with its VMA row (access() looks it up no more); how many rows ``ops`` then holds, and the last VMA found
    (:func:`_vma_at`: ``lv``, of MM row ``lvm``)."""
    nb = 1
    j = i + 1
    while j < end and nb < most:
        if prog[j, P_OP] != OP_FAULT or prog[j, P_ARG] & FA_RACY:
            break
        tn = prog[j, P_TASK]
        if not _runnable(tst, tn):
            break
        base = rtab[prog[j, P_REG]]
        if base == MISSING:
            break
        m = tmm[tn]
        write = (prog[j, P_ARG] & FA_WRITE) != 0
        vpn = base + prog[j, P_FIRST]
        r = _vma_at(ms, vm, mv, m, vpn, lv, lvm)
        if r < 0 or vm[r, L.V_WRITE if write else L.V_READ] == 0:
            break
        lv = r
        lvm = m
        _access_row(ops, nb, prog, j, m, vpn, write, r)
        nb += 1
        j += 1
    return nb, lv, lvm


@sjit
def _fault_outcomes(st: Any, tal: Any, ops: Any, n: int, taken: int) -> None:
    """Count the outcomes of the first ``n`` recorded faults of a batch (bit k of ``taken``: row k took a fault;
    row 0 also when S_TAKEN says it did before a return for room)."""
    for k in range(n):
        if (taken >> k) & 1 or (k == 0 and st[S_TAKEN]):
            tal[TL_TAKEN] += 1
        elif ops[k, 3]:
            tal[TL_MAPPED] += 1
        else:
            tal[TL_PRESENT] += 1


@sjit
def _folio_name(cfg: Any, glob: Any, fs: Any, tb: Any, ptf: Any, ptp: Any, ptw: Any, hk: Any, hv: Any, m: int,
                vpn: int) -> int:
    """The name number of the folio mapped at ``vpn`` (``Machine.lookup()``), or NONE/ZERO/HUGE_ZERO."""
    f, _, _, _ = lookup(cfg, glob, tb, ptf, ptp, ptw, hk, hv, m, vpn)
    return fs[f, L.X_NAME] if f >= 0 else f


@sjit
def _find_vma(ms: Any, vm: Any, mv: Any, m: int, vpn: int) -> int:
    """find_vma() as FastMM.find_vma() answers it: the row of the MM's VMA holding ``vpn``, -1 when none (its rows
    are in address order: the last one starting at or before ``vpn``)."""
    off = ms[m, L.MS_VOFF]
    lo = 0
    hi = ms[m, L.MS_NVMA]
    while lo < hi:
        mid = (lo + hi) >> 1
        if vm[mv[off + mid], L.V_START] <= vpn:
            lo = mid + 1
        else:
            hi = mid
    if lo == 0:
        return -1
    r = mv[off + lo - 1]
    return r if vm[r, L.V_END] > vpn else -1


@jit_inline
def _vma_at(ms: Any, vm: Any, mv: Any, m: int, vpn: int, lv: int, lvm: int) -> int:
    """:func:`_find_vma`, answered without a search when the last VMA row found, ``lv`` (of MM row ``lvm``; -1:
    none), holds ``vpn``: recorded faults come in runs on one mapping. run_program() forgets ``lv`` at every
    opcode that may move or change VMA rows (all but reads, writes and recorded faults)."""
    if lv >= 0 and lvm == m and vm[lv, L.V_START] <= vpn and vpn < vm[lv, L.V_END]:
        return lv
    return _find_vma(ms, vm, mv, m, vpn)


@sjit
def _racy_after(st: Any, racy: Any, i: int, after: int) -> None:
    k = st[S_NRACY]
    racy[k, 0] = i
    racy[k, 1] = st[S_RBEFORE]
    racy[k, 2] = after
    st[S_NRACY] = k + 1


@sjit
def _rehash(glob: Any, tb: Any, hk: Any, hv: Any) -> None:
    """The table hash rebuilt in place when deleted entries fill it but the live ones leave room (what
    FastMachine.ensure() does, without a new array, when the hash does not need to grow): the hash's layout is
    not state (lookups give the same slots), so when it is rebuilt changes nothing."""
    size = hk.shape[0]
    if (glob[L.G_HUSED] + 8) * 2 <= size or size < 2 * tb.shape[0]:
        return
    live = 0
    for t in range(glob[L.G_NTB]):
        if tb[t, L.TB_LIVE]:
            live += 1
    if (live + 8) * 2 > size:
        return  # the hash must grow: FastMachine.ensure() does that
    for h in range(size):
        hk[h] = -1
        hv[h] = 0
    rehash(glob, tb, hk, hv, glob[L.G_NTB])


@sjit
def _compact(st: Any, ms: Any, vm: Any, mv: Any, vfk: Any, vtmp: Any, ftmp: Any, src: int, n: int) -> int:
    """FastMachine._compact_vmas() as fork's _publish(dst) runs it: the child MM already holds its ``n`` copied
    VMAs, so they count twice (its rows, then the room asked for) and are written once after every other live MM
    that is not zapped (MM order), before _publish_raw() writes them again (the parent's rows but its VM_DONTFORK
    ones, ``n`` of them). The rows go to ``vtmp`` first; then in
    place when Python's new arrays would have the size these have (WHY_DONE), else Python makes them from
    ``vtmp`` (RK_VMA). RK_SCR when ``vtmp`` is too small."""
    src_off = ms[src, L.MS_VOFF]
    total = 2 * n
    for m in range(st[S_NEXT_MM]):
        if ms[m, L.MS_LIVE] and not ms[m, L.MS_ZAPPED]:
            total += ms[m, L.MS_NVMA]
    size = 4 * total if 4 * total > 64 else 64
    if vtmp.shape[0] < size:
        st[S_N0] = size
        return RK_SCR
    k = 0
    for m in range(st[S_NEXT_MM]):
        if not ms[m, L.MS_LIVE] or ms[m, L.MS_ZAPPED]:
            continue
        off = ms[m, L.MS_VOFF]
        nv = ms[m, L.MS_NVMA]
        for j in range(nv):
            r = mv[off + j]
            for col in range(vm.shape[1]):
                vtmp[k + j, col] = vm[r, col]
            ftmp[k + j] = vfk[r]
        ms[m, L.MS_VOFF] = k
        k += nv
    j = 0
    for x in range(ms[src, L.MS_NVMA]):  # the child's VMAs (copies of its parent's rows but VM_DONTFORK ones)
        r = mv[src_off + x]
        if vm[r, L.V_DONTFORK] != 0:
            continue
        for col in range(vm.shape[1]):
            vtmp[k + j, col] = vm[r, col]
        ftmp[k + j] = 1 if vfk[r] != 0 or vm[r, L.V_ANONVMA] != 0 else 0
        j += 1
    k += n
    st[S_NVM] = k
    st[S_NMV] = k
    st[S_COMPACT] = 1
    if size != vm.shape[0] or size != mv.shape[0] or vfk.shape[0] < size:
        st[S_N0] = size
        return RK_VMA
    for r in range(size):
        for col in range(vm.shape[1]):
            vm[r, col] = vtmp[r, col] if r < k else 0
        vfk[r] = ftmp[r] if r < k else 0
        mv[r] = r if r < k else 0
    return WHY_DONE


@sjit
def _ranges(ms: Any, vm: Any, mv: Any, m: int, start: int, end: int, rg: Any) -> int:
    """The pieces of the MM's VMAs inside ``[start, end)`` into ``rg`` (their number), -1 when VMAs do not cover
    the range without holes (madvise()'s -ENOMEM: Python handles that step)."""
    off = ms[m, L.MS_VOFF]
    nvma = ms[m, L.MS_NVMA]
    cur = start
    n = 0
    for k in range(kvma._end_ge(vm, mv, off, nvma, start + 1), nvma):  # from the first VMA ending after start
        r = mv[off + k]
        vs = vm[r, L.V_START]
        ve = vm[r, L.V_END]
        if vs >= end:  # sorted: none after it overlaps
            break
        if vs > cur:
            return -1
        rg[n, 0] = start if start > vs else vs
        rg[n, 1] = end if end < ve else ve
        n += 1
        cur = ve
    if cur < end:
        return -1
    return n


# ----------------------------------------------------------------------------- the control plane as opcodes
@sjit
def _ranges_none(ms: Any, vm: Any, mv: Any, m: int, start: int, end: int) -> bool:
    """No VMA of the MM overlaps ``[start, end)`` (``not mm.vmas_in(start, end)``)."""
    off = ms[m, L.MS_VOFF]
    n = ms[m, L.MS_NVMA]
    i = kvma._end_ge(vm, mv, off, n, start + 1)
    return i >= n or vm[mv[off + i], L.V_START] >= end


@sjit
def _forked_mk(vm: Any, mv: Any, mk: Any, num: int, off: int, n: int) -> None:
    """The control plane's state of an MM fork just made (FastMachine.fork(): its index slice full, everything
    unmerged; anon_birth as FastMachine._anon_birth() finds it: above every anon_vma its VMAs got at fork)."""
    top = 0
    for k in range(n):
        av = vm[mv[off + k], L.V_ANONVMA]
        if av > top:
            top = av
    mk[num, K_OK] = 1
    mk[num, K_VCAP] = n
    mk[num, K_ULO] = -1
    mk[num, K_UHI] = np.int64(1) << 62
    mk[num, K_BIRTH] = top + 1
    mk[num, K_USED] = 0
    mk[num, K_PLO] = kvma.NO_LO
    mk[num, K_PHI] = -1
    mk[num, K_MERGED] = 0
    mk[num, K_EXEC] = 0


@sjit
def _no_dontfork(ms: Any, vm: Any, mv: Any, m: int) -> int:
    off = ms[m, L.MS_VOFF]
    for k in range(ms[m, L.MS_NVMA]):
        if vm[mv[off + k], L.V_DONTFORK] != 0:
            return 0
    return 1


@sjit
def _caps_packed(ms: Any, mk: Any) -> None:
    """After fork's compaction of the VMA rows: each MM's index slice holds its VMAs and no room."""
    for m in range(mk.shape[0]):
        if m < ms.shape[0]:
            mk[m, K_VCAP] = ms[m, L.MS_NVMA]


@sjit
def _kvma_enter(st: Any, mk: Any, vst: Any, m: int) -> None:
    """Load MM ``m``'s control-plane state into ``vst`` (what FastMachine._kvma() loads from the FastMM)."""
    vst[kvma.VS_NVM] = st[S_NVM]
    vst[kvma.VS_NMV] = st[S_NMV]
    vst[kvma.VS_VCAP] = mk[m, K_VCAP]
    vst[kvma.VS_ULO] = mk[m, K_ULO]
    vst[kvma.VS_UHI] = mk[m, K_UHI]
    vst[kvma.VS_BIRTH] = mk[m, K_BIRTH]


@sjit
def _kvma_leave(st: Any, mk: Any, vst: Any, m: int) -> None:
    """Store what a verb changed back (rows, index, the MM's room and unmerged window) and widen the MM's window
    of pages whose VMAs must be re-materialized."""
    st[S_NVM] = vst[kvma.VS_NVM]
    st[S_NMV] = vst[kvma.VS_NMV]
    mk[m, K_VCAP] = vst[kvma.VS_VCAP]
    mk[m, K_ULO] = vst[kvma.VS_ULO]
    mk[m, K_UHI] = vst[kvma.VS_UHI]
    mk[m, K_USED] = 1
    if vst[kvma.VS_PLO] < mk[m, K_PLO]:
        mk[m, K_PLO] = vst[kvma.VS_PLO]
    if vst[kvma.VS_PHI] > mk[m, K_PHI]:
        mk[m, K_PHI] = vst[kvma.VS_PHI]


@sjit
def _kvma_rc(st: Any, ms: Any, vm: Any, mv: Any, rg: Any, mk: Any, vst: Any, m: int, rc: int) -> int:
    """What a verb's result means to the loop: WHY_DONE (it ran), WHY_ROOM (RK_ROOM: tables, trace rows or the
    zap's gather list; the verb changed nothing and runs again), WHY_STEP (VMA rows or index room, or the ranges'
    scratch: Python's own call makes that room), WHY_ERROR."""
    if rc == L.RC_OK:
        _kvma_leave(st, mk, vst, m)
        return WHY_DONE
    if rc == L.RC_ROOM:
        n = ms[m, L.MS_NVMA]
        cap = mk[m, K_VCAP] if mk[m, K_VCAP] > n else n
        if (st[S_NVM] + kvma.NEW_ROWS > vm.shape[0] or (n + kvma.NEW_ROWS > cap and st[S_NMV] + 2 * (
                n + kvma.NEW_ROWS) > mv.shape[0]) or rg.shape[0] < n + kvma.NEW_ROWS):
            return WHY_STEP
        worst = vst[kvma.VS_NEED]
        return _room(st, RK_ROOM, 0, 0, vst[kvma.VS_TABLES], 3 * worst + 16 + 32, 4, worst)
    st[S_RC] = rc
    return WHY_ERROR


@sjit
def _mm_put(st: Any, ms: Any, ids: Any, glob: Any, opt: Any, tr: Any, m: int) -> bool:
    """A task lets go of MM ``m`` (kernel/fork.c mmput(), then mmdrop() of the last user's count: the MM id freed,
    as FastMachine.mmput()/mmdrop() do); False, with the MM in ``st[S_MAPPED]``, when it would be freed with
    pages still mapped (a simulator bug Python reports)."""
    ms[m, L.MS_USERS] -= 1
    if ms[m, L.MS_USERS] == 0:
        ms[m, L.MS_COUNT] -= 1
        if ms[m, L.MS_COUNT] == 0:
            if ms[m, L.MS_NMAP] != 0:
                st[S_MAPPED] = m
                return False
            ids_free(ids, ms[m, L.MS_ID])
            ms[m, L.MS_LIVE] = 0
            record(glob, opt, tr, K.K_MM_FREE, m, 0, 0, 0, 0, 1)
    return True


@sjit
def _new_mm_row(st: Any, ms: Any, ids: Any, glob: Any, opt: Any, tr: Any, tn: int, num: int) -> None:
    """A new MM's row ``num`` for task ``tn``'s step (FastMachine._new_mm() at fork or exec: mm_alloc() with the
    lowest free MM id, one user, its index slice at the end), the step counted and the trace's MM-new op."""
    st[S_STEP] += 1
    st[S_LAST] = tn
    st[S_NEXT_MM] = num + 1
    for col in range(ms.shape[1]):
        ms[num, col] = 0
    ms[num, L.MS_LIVE] = 1
    ms[num, L.MS_ID] = ids_alloc(ids)
    ms[num, L.MS_USERS] = 1
    ms[num, L.MS_COUNT] = 1
    ms[num, L.MS_VOFF] = st[S_NMV]
    record(glob, opt, tr, K.K_MM_NEW, num, 0, 0, 0, 0, 1)


@sjit
def _exec(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
          ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, scr: Any, rg: Any,
          gather: Any, st: Any, tst: Any, tmm: Any, tpid: Any, mk: Any, vst: Any, ttg: Any, ids: Any, msimple: Any,
          tn: int) -> int:
    """FastMachine.execve() of task ``tn``: a new MM with no VMAs (FastMachine._new_mm(): the lowest free MM id,
    ``mm_new`` recorded), the task its own thread group, its vfork parent woken, the old MM's user dropped (its last:
    exit_mmap() through :func:`kfork.exit_zap`, then mmdrop(), as the exit opcode does). WHY_STEP (Python) when
    another task of its thread group lives or the MM ids or rows are short; the zap's room is asked for first."""
    s = tst[tn]
    if tn >= ttg.shape[0] or ttg[tn, TG_VP] == -2 or ttg[tn, TG_FOREIGN] != 0:
        return WHY_STEP
    g = ttg[tn, TG_TGID] if ttg[tn, TG_TGID] > 0 else tpid[tn]
    for j in range(tst.shape[0]):
        if j != tn and tst[j] != T_NONE and j < ttg.shape[0]:
            gj = ttg[j, TG_TGID] if ttg[j, TG_TGID] > 0 else tpid[j]
            if gj == g:
                return WHY_STEP
    old = tmm[tn]
    num = st[S_NEXT_MM]
    if (ids_peek(ids) < 0 or num >= ms.shape[0] or num >= msimple.shape[0] or num >= mk.shape[0]
            or (opt[L.O_RECORD] != 0 and glob[L.G_NTR] + 2 > tr.shape[0])):
        return WHY_STEP
    last = ms[old, L.MS_USERS] == 1
    n = ms[old, L.MS_NVMA]
    if last:  # exit_zap()'s room, asked for before anything changes
        if scr.shape[1] < glob[L.G_NTB] + 1:
            return _room(st, RK_SCR, 0, 0, 0, 0, 0, 0)
        if rg.shape[0] < n:
            return WHY_STEP
        ptes, pmds, _ = mm_entries(tb, glob[L.G_NTB], old)
        worst = ptes + pmds * (np.int64(1) << cfg[K.C_PMD_ORDER]) + 2
        if n and (gather.shape[0] < worst or not room_ok(cfg, opt, glob, fs, pmc, pex, pct, tb, hk, tr, cow, 0, 0,
                                                           2, 3 * worst + 16, 4)):
            return _room(st, RK_ROOM, 0, 0, 2, 3 * worst + 16, 4, worst)
    _new_mm_row(st, ms, ids, glob, opt, tr, tn, num)
    msimple[num] = 1  # no VMAs yet (the control opcodes keep it up to date)
    mk[num, K_OK] = 1
    mk[num, K_VCAP] = 0
    mk[num, K_ULO] = -1  # FastMachine._publish(): everything may merge
    mk[num, K_UHI] = np.int64(1) << 62
    mk[num, K_BIRTH] = glob[L.G_ANONVMA]
    mk[num, K_USED] = 0
    mk[num, K_PLO] = kvma.NO_LO
    mk[num, K_PHI] = -1
    mk[num, K_MERGED] = 0
    mk[num, K_EXEC] = tn + 1
    tmm[tn] = num
    ttg[tn, TG_TGID] = 0
    p = ttg[tn, TG_VP]
    if p >= 0:  # _release_vfork()
        if tpid[p] >= vst[X_PID0]:
            tst[p] = T_NEW
        else:
            tst[p] = T_VCHILD if ttg[p, TG_VP] != -1 else T_PY
        ttg[tn, TG_VP] = -1
    if s == T_VCHILD:
        tst[tn] = T_PY
    vst[X_TASKS] = 1
    if last:  # mmput(): exit_mmap()
        off = ms[old, L.MS_VOFF]
        for k in range(n):
            r = mv[off + k]
            rg[k, 0] = vm[r, L.V_START]
            rg[k, 1] = vm[r, L.V_END]
        rc, _ = exit_zap(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, pexp, scr,
                         old, rg[:n], gather)
        if rc != L.RC_OK:
            st[S_RC] = rc
            return WHY_ERROR
        ms[old, L.MS_NVMA] = 0
        ms[old, L.MS_ZAPPED] = 1
    if not _mm_put(st, ms, ids, glob, opt, tr, old):
        return WHY_MAPPED
    return WHY_DONE


@sjit
def _control(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
             ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, fc: Any, pcs: Any,
             scr: Any, gather: Any, prog: Any, i: int, st: Any, tst: Any, tmm: Any, tpid: Any, rtab: Any, rg: Any,
             mk: Any, vst: Any, ftab: Any, ttg: Any, ids: Any, msimple: Any) -> int:
    """A control-plane step (mmap, munmap, mprotect, VMA-flag madvise, merge, mremap) through the verbs of
    :mod:`foliosim.fast.sim.kvma`, as FastWorkloadRunner.execute() and FastMachine run it when the call succeeds;
    WHY_STEP (nothing changed) for what Python must do: a failing call (its errno is counted there), a task that
    cannot run, an unknown region or file, an MM made in this stretch or not known yet to the control plane."""
    op = prog[i, P_OP]
    tn = prog[i, P_TASK]
    if vst[X_ON] == 0 or tn >= tst.shape[0]:
        return WHY_STEP
    if op == OP_FILE:  # Machine.create_file() of a file or shmem object (P_ARG bit 8), its pages reading 0
        k = prog[i, P_FILL]
        fid = vst[X_NFILE]
        used = vst[X_PCUSED]
        nr = prog[i, P_PAGES]
        shmem = prog[i, P_ARG] >> 8
        if ftab[k] >= 0 or fid >= fc.shape[0] or used + nr > pcs.shape[0]:  # a name taken, or room: Python
            return WHY_STEP
        if shmem:  # files.create_file(): cached whole at once, one folio after the other
            nrp = np.int64(1) << cfg[K.C_PMD_ORDER]
            if not room_ok(cfg, opt, glob, fs, pmc, pex, pct, tb, hk, tr, cow, nr + 2, 2 * nr + 2 * nrp, 2,
                           8 * nr + 8, 4):
                return _room(st, RK_ROOM, nr + 2, 2 * nr + 2 * nrp, 2, 8 * nr + 8, 4, 0)
        fc[fid, L.FC_BASE] = used
        fc[fid, L.FC_NR] = nr
        fc[fid, L.FC_ORDER] = prog[i, P_ARG] & 255
        fc[fid, L.FC_KIND] = L.KIND_SHMEM if shmem else L.KIND_FILE
        fc[fid, L.FC_ANON] = shmem
        fc[fid, L.FC_CONTENT] = 0
        if shmem:
            index = 0
            while index < nr:
                first, order = cache_range(fs, fc, pcs, fid, index, 0, -1, 0, 0)
                add_to_cache(glob, opt, fs, pmc, pex, pct, tr, fc, pcs, fid, first, order)
                index = first + (np.int64(1) << order)
        vst[X_PCUSED] = used + nr
        vst[X_NFILE] = fid + 1
        ftab[k] = fid
        st[S_PCACHE] = 1
        st[S_STEP] += 1  # FastMachine._begin() without a task
        vst[X_FILESTEP] = st[S_STEP]
        return WHY_DONE
    if op == OP_MERGE:  # m.task(): any live task (a vfork parent too); no step of the machine
        if tst[tn] == T_NONE:
            return WHY_STEP
        m = tmm[tn]
        if m < 0 or m >= mk.shape[0] or mk[m, K_OK] == 0 or mk[m, K_BIRTH] < 0:
            return WHY_STEP
        _kvma_enter(st, mk, vst, m)
        kvma.merge_mm(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, pexp, scr,
                      fc, vst, rg, gather, m)
        _kvma_leave(st, mk, vst, m)
        mk[m, K_MERGED] = 1
        return WHY_DONE
    if not _runnable(tst, tn):
        return WHY_STEP
    if op == OP_THREAD or op == OP_VFORK:  # noqa: SIM109 - scalar compares for numba
        # FastMachine.clone_vm(): a task sharing the MM, in the parent's thread group (a thread) or in its own with
        # the parent asleep until the child execs or exits (vfork)
        c = prog[i, P_ARG]
        if tst[c] != T_NONE or c >= ttg.shape[0]:
            return WHY_STEP
        st[S_STEP] += 1
        st[S_LAST] = tn
        m = tmm[tn]
        ms[m, L.MS_USERS] += 1
        tst[c] = T_NEW
        tmm[c] = m
        tpid[c] = st[S_NEXT_PID]
        st[S_NEXT_PID] += 1
        if op == OP_THREAD:
            ttg[c, TG_TGID] = ttg[tn, TG_TGID] if ttg[tn, TG_TGID] > 0 else tpid[tn]
            ttg[c, TG_VP] = -1
            ttg[c, TG_FOREIGN] = ttg[tn, TG_FOREIGN]
        else:
            ttg[c, TG_TGID] = 0
            ttg[c, TG_VP] = tn
            ttg[c, TG_FOREIGN] = 0
            tst[tn] = T_BLOCKED
            vst[X_TASKS] = 1
        return WHY_DONE
    if op == OP_EXEC:
        return _exec(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, pexp, scr, rg,
                     gather, st, tst, tmm, tpid, mk, vst, ttg, ids, msimple, tn)
    m = tmm[tn]
    if m < 0 or m >= mk.shape[0] or mk[m, K_OK] == 0 or mk[m, K_BIRTH] < 0:
        return WHY_STEP
    if scr.shape[1] < glob[L.G_NTB] + 1:
        return _room(st, RK_SCR, 0, 0, 0, 0, 0, 0)
    base = rtab[prog[i, P_REG]]
    nr = prog[i, P_PAGES]
    if nr <= 0:
        return WHY_STEP
    big = np.int64(1) << cfg[K.C_PMD_ORDER]
    rc = L.RC_OK
    if op == OP_MMAP:
        flags = prog[i, P_ARG]
        fid = -1
        pgoff = 0
        if flags & MF_FILE:
            fid = ftab[prog[i, P_FILL]]
            pgoff = prog[i, P_FIRST]
            if fid < 0 or pgoff < 0 or pgoff + nr > fc[fid, L.FC_NR]:
                return WHY_STEP
            thp = vst[X_THPNONE]
        elif flags & MF_THP:
            thp = prog[i, P_FILL]
        else:
            thp = vst[X_THPDEF]
        if flags & MF_NAMED:
            addr = -1
        else:
            addr = base
            if base == MISSING or base < 0:
                return WHY_STEP
        shared = (flags >> 0) & 1  # numba: no conditional expressions among a call's arguments
        read = (flags >> 2) & 1
        write = (flags >> 3) & 1
        exe = (flags >> 4) & 1
        noreserve = (flags >> 5) & 1
        _kvma_enter(st, mk, vst, m)
        rc = kvma.mmap(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, pexp, scr,
                       fc, vst, rg, gather, m, nr, fid, pgoff, shared, read, write, addr, thp,
                       flags >> MF_LABEL_SHIFT, exe, noreserve)
        why = _kvma_rc(st, ms, vm, mv, rg, mk, vst, m, rc)
        if why == WHY_DONE and flags & MF_NAMED:
            rtab[prog[i, P_REG]] = vst[kvma.VS_START]
    elif op == OP_MREMAP:
        if base == MISSING or base < 0:
            return WHY_STEP
        start = base
        end = start + nr
        named = prog[i, P_ARG] >= 0
        # named: WorkloadRunner._mremap()'s fresh unmapped area (mmapops.unmapped_area())
        dst = (vst[kvma.VS_BASE] + big - 1) & ~(big - 1) if named else prog[i, P_FIRST]
        if dst < 0 or (dst < end and start < dst + nr):
            return WHY_STEP
        r = _find_vma(ms, vm, mv, m, start)
        if r < 0 or vm[r, L.V_END] < end:
            return WHY_STEP
        old_base = vst[kvma.VS_BASE]
        if named:
            vst[kvma.VS_BASE] = dst + nr + big
        _kvma_enter(st, mk, vst, m)
        rc = kvma.mremap(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, pexp, scr,
                         fc, vst, rg, gather, m, start, end, dst)
        why = _kvma_rc(st, ms, vm, mv, rg, mk, vst, m, rc)
        if why == WHY_STEP or why == WHY_ROOM:  # noqa: SIM109 - scalar compares for numba
            vst[kvma.VS_BASE] = old_base
        elif why == WHY_DONE and named:
            rtab[prog[i, P_ARG]] = dst
    else:
        if base == MISSING:
            return WHY_STEP
        start = base + prog[i, P_FIRST]
        if start < 0:
            return WHY_STEP
        end = start + nr
        _kvma_enter(st, mk, vst, m)
        if op == OP_MUNMAP:
            if _ranges_none(ms, vm, mv, m, start, end):  # FastMachine._do_munmap(): nothing mapped, no verb
                st[S_STEP] += 1
                st[S_LAST] = tn
                return WHY_DONE
            rc = kvma.munmap(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, pexp,
                             scr, fc, vst, rg, gather, m, start, end)
        elif op == OP_MPROTECT:
            if not kvma.covered(ms, vm, mv, m, start, end):
                return WHY_STEP  # -ENOMEM: counted by Python
            a = prog[i, P_ARG]
            rc = kvma.mprotect(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow,
                               pexp, scr, fc, vst, rg, gather, m, start, end, a & 1, (a >> 1) & 1, (a >> 2) & 1)
        else:  # OP_MADVF
            if not kvma.covered(ms, vm, mv, m, start, end):
                return WHY_STEP  # -ENOMEM: counted by Python
            verb = prog[i, P_ARG]
            thp = 0
            if verb == kvma.MA_THP:
                thp = vst[X_THPMADV] if prog[i, P_FILL] else vst[X_THPNONE]
            rc = kvma.madvise_flags(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow,
                                    pexp, scr, fc, vst, rg, gather, m, start, end, verb, thp)
        why = _kvma_rc(st, ms, vm, mv, rg, mk, vst, m, rc)
    if why == WHY_DONE:
        st[S_STEP] += 1  # FastMachine._begin()
        st[S_LAST] = tn
        # whether it has no VM_DONTFORK mapping: only MADV_DONTFORK makes one (mmap's, split's and mremap's VMAs have
        # the flag of the VMA they come from or none, merged ones the same), so an MM without one keeps having none;
        # and only a verb that unmaps (munmap, mremap, an mmap at an address) can take the last one away, so an MM
        # with one keeps it through mprotect and an mmap at the unmapped area (no scan of its VMAs after those)
        if m < msimple.shape[0] and (op == OP_MADVF or (msimple[m] == 0 and (
                op == OP_MUNMAP or op == OP_MREMAP or (op == OP_MMAP and not prog[i, P_ARG] & MF_NAMED)))):  # noqa: SIM109
            msimple[m] = _no_dontfork(ms, vm, mv, m)
    return why


@sjit
def _access_rows(prog: Any, i: int, end: int, most: int, tst: Any, tmm: Any, rtab: Any, ops: Any) -> int:
    """The access rows (as FastWorkloadRunner.execute() makes them) of the reads and writes from program row ``i``
    on, at most ``most``, up to the first other row (a recorded fault too) or one Python must run (a task that
    cannot run, an unknown region): their number. Reads and writes change no task, MM or region, so these rows go
    to :func:`access` in one call, in order, as they would one by one (one kernel call per step costs more than the
    step: ~10 ns per array argument). Only when nothing is kept per step (no decisions, trace, user faults or
    tallied reuse rows, whose task and step each row would have to carry)."""
    nb = 0
    j = i
    while j < end and nb < most:
        op = prog[j, P_OP]
        if op != OP_READ and op != OP_WRITE:
            break
        tn = prog[j, P_TASK]
        if not _runnable(tst, tn):
            break
        base = rtab[prog[j, P_REG]]
        if base == MISSING:
            break
        _access_row(ops, nb, prog, j, tmm[tn], base + prog[j, P_FIRST], op == OP_WRITE, -1)
        nb += 1
        j += 1
    return nb


@sjit
def run_program(cfg: Any, opt: Any, glob: Any, fs: Any, pmc: Any, pex: Any, pct: Any, tb: Any, ptf: Any, ptp: Any,
                ptw: Any, hk: Any, hv: Any, ms: Any, vm: Any, mv: Any, tr: Any, cow: Any, pexp: Any, fc: Any,
                pcs: Any, scr: Any, scr2: Any, ent: Any, gather: Any, prog: Any, pos: int, end: int, st: Any,
                tmm: Any, tst: Any, tpid: Any, rtab: Any, msimple: Any, morig: Any, mtask: Any, vfk: Any, ids: Any,
                ctask: Any, uf: Any, ops1: Any, faults: Any, vr: Any, rg: Any, vtmp: Any, ftmp: Any, tal: Any,
                rs: Any, racy: Any,
                mk: Any, vst: Any, ftab: Any, ttg: Any, marks: Any) -> tuple[int, int]:
    """Execute program rows ``pos..end`` while they are of the kinds modelled here; (position, WHY_*).

    A recorded fault (``OP_FAULT``: run-trace's ``fault`` step, foliosim.live.tracesim's TraceRunner._fault()) is
    counted into ``tal`` as outside any VMA or against its protection without an access, else it is a one-page
    access counted as taken (the fault loop took a fault), already mapped writable (a write) or present (a
    read). One flagged ``FA_RACY`` also notes (row, folio at its region's page before, after) in ``racy``."""
    po = cfg[K.C_PMD_ORDER]
    nrp = np.int64(1) << po
    keep = st[S_KEEP] != 0
    rec = opt[L.O_RECORD] != 0
    lv = -1  # the last VMA row a recorded fault was found in (MM row lvm): _vma_at()
    lvm = -1
    i = pos
    while i < end:
        op = prog[i, P_OP]
        tn = prog[i, P_TASK]
        _rehash(glob, tb, hk, hv)
        if st[S_MARK] and i >= st[S_MARKED]:
            marks[i, 0] = glob[L.G_NTR]
            marks[i, 1] = glob[L.G_NCOW]
            marks[i, 2] = st[S_STEP]
            st[S_MARKED] = i + 1
        if op == OP_READ or op == OP_WRITE or op == OP_FAULT:  # noqa: SIM109 - scalar compares for numba
            if st[S_PEND] != PEND_ACCESS:
                if not _runnable(tst, tn):  # no such task, or a vfork parent: Python says why (or checks the page)
                    return i, WHY_STEP
                if rtab[prog[i, P_REG]] == MISSING:
                    return i, WHY_STEP
                if op == OP_FAULT:  # one row: its outcome is counted after the call
                    m = tmm[tn]
                    base = rtab[prog[i, P_REG]]
                    write = (prog[i, P_ARG] & FA_WRITE) != 0
                    if prog[i, P_ARG] & FA_RACY:
                        st[S_RBEFORE] = _folio_name(cfg, glob, fs, tb, ptf, ptp, ptw, hk, hv, m, base)
                    r = _vma_at(ms, vm, mv, m, base + prog[i, P_FIRST], lv, lvm)
                    if r < 0 or vm[r, L.V_WRITE if write else L.V_READ] == 0:
                        tal[TL_NO_VMA if r < 0 else TL_PROT] += 1
                        if prog[i, P_ARG] & FA_RACY:
                            _racy_after(st, racy, i, st[S_RBEFORE])
                        st[S_STEPS] += 1
                        i += 1
                        continue
                    lv = r
                    lvm = m
                    _access_row(ops1, 0, prog, i, m, base + prog[i, P_FIRST], write, r)
                    st[S_TAKEN] = 0
                    nb = 1
                    if not keep and not prog[i, P_ARG] & FA_RACY:  # the recorded faults after it, in one call
                        most = ops1.shape[0] if ops1.shape[0] < 63 else 63  # one bit each in ``taken``
                        nb, lv, lvm = _fault_rows(prog, i, end, most, tst, tmm, rtab, ms, vm, mv, ops1, lv, lvm)
                else:  # one row when something is kept per step (decisions, trace, user faults, tallied rows)
                    most = 1 if keep or st[S_TALLY] else ops1.shape[0]
                    nb = _access_rows(prog, i, end, most, tst, tmm, rtab, ops1)
            else:
                nb = st[S_PEND_N]
            st[S_PEND] = PEND_NONE
            r0 = 0
            taken = 0  # recorded faults: bit k, row k of the batch took a fault
            while True:
                if keep and st[S_NUF] + faults.shape[0] > uf.shape[0]:
                    st[S_PEND] = PEND_ACCESS
                    st[S_PEND_N] = nb
                    return i, _room(st, RK_UF, 0, 0, 0, 0, 0, 0)
                ncow = glob[L.G_NCOW]
                rc, r = access(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow,
                               pexp, fc, pcs, ops1[:nb], r0, faults)
                _tag_cows(glob, ctask, ncow, tn)
                nf = glob[L.G_NGATHER]
                if st[S_TALLY]:
                    if op == OP_FAULT:
                        _tally_rows(st, glob, cow, tal, rs, ncow, i, ops1, faults, nf)
                    else:
                        _tally(st, glob, cow, tal, rs, ncow, i)
                if st[S_KEEPDEC] == 0:
                    glob[L.G_NCOW] = 0  # FastMachine._drain() drops them
                if op == OP_FAULT:
                    for k in range(nf):
                        taken |= np.int64(1) << faults[k, 0]
                if keep:
                    u = st[S_NUF]
                    for k in range(nf):
                        uf[u + k, 0] = st[S_STEP]
                        uf[u + k, 1] = tn
                        uf[u + k, 2] = faults[k, 1]
                        uf[u + k, 3] = ops1[0, 3]
                    st[S_NUF] = u + nf
                if rc == L.RC_OK:
                    break
                if rc == L.RC_ROOM:
                    if nf >= faults.shape[0]:  # only the fault list was full: go on
                        r0 = r
                        continue
                    if op == OP_FAULT:  # the faults done counted, whether the one cut short took one kept
                        _fault_outcomes(st, tal, ops1, r, taken)
                        if r > 0:
                            st[S_TAKEN] = 0
                        if (taken >> r) & 1:
                            st[S_TAKEN] = 1
                    for k in range(r, nb):  # the rows left (the first one cut short) wait at the front
                        for col in range(ops1.shape[1]):
                            ops1[k - r, col] = ops1[k, col]
                    st[S_STEPS] += r
                    i += r
                    st[S_PEND] = PEND_ACCESS
                    st[S_PEND_N] = nb - r
                    return i, _room(st, RK_GROW, 0, 0, 0, 0, 0, 0)
                st[S_RC] = rc
                if op == OP_FAULT:  # the faults before the one that failed are done (each its own call before)
                    _fault_outcomes(st, tal, ops1, r, taken)
                st[S_STEPS] += r
                return i + r, WHY_ERROR
            if st[S_MARK]:  # one row (S_KEEP); a recorded fault is a machine step when it took a fault
                st[S_STEP] += (1 if (taken & 1) or st[S_TAKEN] else 0) if op == OP_FAULT else nb
            if op == OP_FAULT:
                _fault_outcomes(st, tal, ops1, nb, taken)
                if prog[i, P_ARG] & FA_RACY:  # nb == 1
                    _racy_after(st, racy, i, _folio_name(cfg, glob, fs, tb, ptf, ptp, ptw, hk, hv, tmm[tn],
                                                         rtab[prog[i, P_REG]]))
            st[S_STEPS] += nb
            i += nb
            continue
        lv = -1  # any other opcode may move or change VMA rows
        if op == OP_SCAN:
            if tst[tn] == T_NONE:
                return i, WHY_STEP
            st[S_SCANS] += 1
            st[S_STEPS] += 1
            i += 1
            continue
        if op == OP_FORK:
            c = prog[i, P_ARG]
            if not _runnable(tst, tn) or tst[c] != T_NONE:
                return i, WHY_STEP
            src = tmm[tn]
            # an MM with VM_DONTFORK mappings forks here only with the control opcodes on (its child's Vma objects
            # are then made from its rows, not from the parent's list: ProgramRun._forked_mms())
            if (not msimple[src] and vst[X_ON] == 0) or ids_peek(ids) < 0:
                return i, WHY_STEP
            num = st[S_NEXT_MM]
            if num >= ms.shape[0] or num >= msimple.shape[0]:
                return i, _room(st, RK_MS, num + 1, 0, 0, 0, 0, 0)
            nall = ms[src, L.MS_NVMA]
            off = ms[src, L.MS_VOFF]
            n = nall  # the VMAs the child gets: every one but the VM_DONTFORK ones (dup_mmap())
            if not msimple[src]:
                for k in range(nall):
                    if vm[mv[off + k], L.V_DONTFORK] != 0:
                        n -= 1
            if st[S_NVM] + n > vm.shape[0] or st[S_NMV] + n > mv.shape[0] or st[S_NVM] + n > vfk.shape[0]:
                kind = _compact(st, ms, vm, mv, vfk, vtmp, ftmp, src, n)
                if kind != RK_SCR:  # every index slice packed: no room left in any (FastMachine._publish_raw())
                    _caps_packed(ms, mk)
                if kind != WHY_DONE:
                    st[S_ROOM] = kind
                    return i, WHY_ROOM
                off = ms[src, L.MS_VOFF]  # compacted
            if scr.shape[1] < glob[L.G_NTB] + 1:
                return i, _room(st, RK_SCR, 0, 0, 0, 0, 0, 0)
            nv = 0
            for k in range(nall):
                r = mv[off + k]
                if vm[r, L.V_ANONVMA] != 0 and vm[r, L.V_DONTFORK] == 0:
                    vr[nv] = r
                    nv += 1
            early = st[S_EARLY]
            if nv:
                ptes, pmds, tables = mm_entries(tb, glob[L.G_NTB], src)
                trace = 3 * (ptes + pmds) + 8 * early + 17
                if not room_ok(cfg, opt, glob, fs, pmc, pex, pct, tb, hk, tr, cow, early, early, tables + 2, trace,
                               4):
                    return i, _room(st, RK_ROOM, early, early, tables + 2, trace, 4, 0)
            elif rec and glob[L.G_NTR] + 1 > tr.shape[0]:
                return i, _room(st, RK_ROOM, 2, 0, 2, 16, 4, 0)
            # FastMachine.fork(): _new_mm(), _add_task(), _dup_mmap()
            _new_mm_row(st, ms, ids, glob, opt, tr, tn, num)
            tst[c] = T_NEW
            if c < ttg.shape[0]:  # its own thread group, no vfork parent (the control plane's opcodes read them)
                ttg[c, TG_TGID] = 0
                ttg[c, TG_VP] = -1
                ttg[c, TG_FOREIGN] = 0
            tmm[c] = num
            tpid[c] = st[S_NEXT_PID]
            st[S_NEXT_PID] += 1
            msimple[num] = 1
            morig[num] = morig[src]
            mtask[num] = c
            if nv:
                ncow = glob[L.G_NCOW]
                rc, _, _, _ = fork_dup(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr,
                                       cow, pexp, scr, src, num, vr[:nv], early)
                _tag_cows(glob, ctask, ncow, tn)
                if st[S_TALLY]:
                    _tally(st, glob, cow, tal, rs, ncow, i)
                if rc != L.RC_OK:
                    st[S_RC] = rc
                    return i, WHY_ERROR
            nvm = st[S_NVM]
            nmv = st[S_NMV]
            k = 0
            for x in range(nall):  # _publish(dst): the copied VMAs in fresh rows
                r = mv[off + x]
                if vm[r, L.V_DONTFORK] != 0:
                    continue
                for col in range(vm.shape[1]):
                    vm[nvm + k, col] = vm[r, col]
                vfk[nvm + k] = 1 if vfk[r] != 0 or vm[r, L.V_ANONVMA] != 0 else 0
                mv[nmv + k] = nvm + k
                k += 1
            ms[num, L.MS_VOFF] = nmv
            ms[num, L.MS_NVMA] = n
            st[S_NVM] = nvm + n
            st[S_NMV] = nmv + n
            if num < mk.shape[0]:  # open to the control opcodes
                _forked_mk(vm, mv, mk, num, nmv, n)
            st[S_FORKS] += 1
            st[S_STEPS] += 1
            i += 1
            continue
        if op == OP_EXIT:
            s = tst[tn]
            if (s != T_PY and s != T_NEW) or (tn < ttg.shape[0] and ttg[tn, TG_VP] != -1):
                return i, WHY_STEP
            m = tmm[tn]
            last = ms[m, L.MS_USERS] == 1
            if rec and glob[L.G_NTR] + 1 > tr.shape[0]:
                return i, _room(st, RK_ROOM, 0, 0, 2, 16, 4, 0)
            if last:  # exit_mmap()
                if scr.shape[1] < glob[L.G_NTB] + 1:
                    return i, _room(st, RK_SCR, 0, 0, 0, 0, 0, 0)
                n = ms[m, L.MS_NVMA]
                off = ms[m, L.MS_VOFF]
                for k in range(n):
                    r = mv[off + k]
                    rg[k, 0] = vm[r, L.V_START]
                    rg[k, 1] = vm[r, L.V_END]
                ncow = glob[L.G_NCOW]
                rc, worst = exit_zap(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr,
                                     cow, pexp, scr, m, rg[:n], gather)
                _tag_cows(glob, ctask, ncow, tn)
                if st[S_TALLY]:
                    _tally(st, glob, cow, tal, rs, ncow, i)
                if rc == L.RC_ROOM:
                    return i, _room(st, RK_ROOM, 0, 0, 2, 3 * worst + 16, 4, worst)
                st[S_STEP] += 1
                st[S_LAST] = tn
                if rc != L.RC_OK:
                    st[S_RC] = rc
                    return i, WHY_ERROR
                ms[m, L.MS_NVMA] = 0
                ms[m, L.MS_ZAPPED] = 1
            else:
                st[S_STEP] += 1
                st[S_LAST] = tn
            tst[tn] = T_NONE
            tmm[tn] = -1
            if not _mm_put(st, ms, ids, glob, opt, tr, m):
                return i, WHY_MAPPED
            st[S_STEPS] += 1
            i += 1
            continue
        if op == OP_DONTNEED or op == OP_COLD or op == OP_PAGEOUT:  # noqa: SIM109 - scalar compares for numba
            if st[S_PEND] == PEND_COLD:
                m = st[S_PEND_MM]
                n = st[S_PEND_N]
                if scr.shape[1] < glob[L.G_NTB] + 1 or scr2.shape[1] < max(glob[L.G_NTB] + 1, nrp):
                    return i, _room(st, RK_SCR, 0, 0, 0, 0, 0, 0)
            else:
                if not _runnable(tst, tn):
                    return i, WHY_STEP
                m = tmm[tn]
                base = rtab[prog[i, P_REG]]
                if base == MISSING or prog[i, P_PAGES] <= 0:
                    return i, WHY_STEP
                start = base + prog[i, P_FIRST]
                if start < 0 or (op != OP_DONTNEED and st[S_PCACHE] != 0):
                    return i, WHY_STEP
                n = _ranges(ms, vm, mv, m, start, start + prog[i, P_PAGES], rg)
                if n < 0:
                    return i, WHY_STEP
                if n == 0:
                    st[S_STEP] += 1
                    st[S_LAST] = tn
                    st[S_STEPS] += 1
                    i += 1
                    continue
                if scr.shape[1] < glob[L.G_NTB] + 1 or (op != OP_DONTNEED and scr2.shape[1] < max(glob[L.G_NTB] + 1,
                                                                                                   nrp)):
                    return i, _room(st, RK_SCR, 0, 0, 0, 0, 0, 0)
                if op == OP_DONTNEED:
                    ptes, pmds, _ = mm_entries(tb, glob[L.G_NTB], m)
                    worst = ptes + pmds * nrp + 2
                    if gather.shape[0] < worst or not room_ok(cfg, opt, glob, fs, pmc, pex, pct, tb, hk, tr, cow, 0, 0,
                                                              2, 3 * worst + 16, 4):
                        return i, _room(st, RK_ROOM, 0, 0, 2, 3 * worst + 16, 4, worst)
                    st[S_STEP] += 1
                    st[S_LAST] = tn
                    ncow = glob[L.G_NCOW]
                    rc = zap(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, pexp,
                             scr, m, rg[:n], gather)
                    _tag_cows(glob, ctask, ncow, tn)
                    if st[S_TALLY]:
                        _tally(st, glob, cow, tal, rs, ncow, i)
                    if rc != L.RC_OK:
                        st[S_RC] = rc
                        return i, WHY_ERROR
                    st[S_STEPS] += 1
                    i += 1
                    continue
                if not room_ok(cfg, opt, glob, fs, pmc, pex, pct, tb, hk, tr, cow, 2, 0, 2, 64, 4):
                    return i, _room(st, RK_ROOM, 2, 0, 2, 64, 4, 0)
                st[S_STEP] += 1
                st[S_LAST] = tn
                st[S_MB0] = glob[L.G_MADV]
                st[S_MB1] = glob[L.G_MADV + 1]
                st[S_MB2] = glob[L.G_MADV + 2]
                st[S_PEND_FIRST] = 0
                st[S_PEND_N] = n
                st[S_PEND_MM] = m
            ncow = glob[L.G_NCOW]
            rc = cold_pageout(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, scr,
                              scr2, ent, m, rg[:n], st[S_PEND_FIRST])
            _tag_cows(glob, ctask, ncow, tn)
            if st[S_TALLY]:
                _tally(st, glob, cow, tal, rs, ncow, i)
            if rc == L.RC_ROOM:
                st[S_PEND] = PEND_COLD
                st[S_PEND_FIRST] = glob[L.G_NGATHER]
                return i, _room(st, RK_COLD, 0, 0, 0, 0, 0, 0)
            st[S_PEND] = PEND_NONE
            if rc != L.RC_OK:
                st[S_RC] = rc
                return i, WHY_ERROR
            col = S_MCNT + (0 if op == OP_COLD else 3)
            st[col] += glob[L.G_MADV] - st[S_MB0]
            st[col + 1] += glob[L.G_MADV + 1] - st[S_MB1]
            st[col + 2] += glob[L.G_MADV + 2] - st[S_MB2]
            st[S_STEPS] += 1
            i += 1
            continue
        if op >= OP_MMAP:
            why = _control(cfg, opt, glob, fs, pmc, pex, pct, tb, ptf, ptp, ptw, hk, hv, ms, vm, mv, tr, cow, pexp, fc,
                           pcs, scr, gather, prog, i, st, tst, tmm, tpid, rtab, rg, mk, vst, ftab, ttg, ids,
                           msimple)
            if why != WHY_DONE:
                return i, why
            st[S_STEPS] += 1
            i += 1
            continue
        return i, WHY_STEP
    return end, WHY_DONE


# ----------------------------------------------------------------------------- Python side
def compiled_unsupported(m: FastMachine) -> str | None:
    """Why the compiled interpreter cannot drive this machine (None: it can). It keeps no reference memory
    (``ReferenceMemory`` is updated in Python on every write and unmap), runs no per-step check (``options.check``
    calls the Python oracle after every step), and runs while no pin or pipe is held (their page lists follow
    exits and MADV_DONTNEED in Python): steps made while pins are held go one by one."""
    if m.keep_reference:
        return "the machine keeps the reference memory (FastMachine(reference=True))"
    if m.options.check:
        return "the machine checks every step (MachineOptions(check=True))"
    return None


@sjit
def _classify(codes: Any, mask: Any, idx: Any) -> tuple[int, int, int]:
    """For encode(): which rows are reads or writes (``mask``), where the fork (``idx[0]``), madvise (``idx[1]``)
    and recorded-fault (``idx[2]``) rows are; (forks, madvises, recorded faults)."""
    nf = 0
    nm = 0
    nq = 0
    for i in range(codes.shape[0]):
        c = codes[i]
        mask[i] = 1 if c == OP_READ or c == OP_WRITE else 0  # noqa: SIM109 - scalar compares for numba
        if c == OP_FORK:
            idx[0, nf] = i
            nf += 1
        elif c == OP_DONTNEED:
            idx[1, nm] = i
            nm += 1
        elif c == OP_FAULT:
            idx[2, nq] = i
            nq += 1
    return nf, nm, nq


#: :func:`_row_index`'s counts
RowCounts = tuple[int, int, int, int, int, int, int, int]


#: :func:`_encode`'s one pass over a plain step list packs each step's verb code and task number in one integer
_TASK_SHIFT = 8


@sjit
def _classify_packed(packed: Any, prog: Any, mask: Any, idx: Any) -> tuple[int, int, int]:
    """:func:`_classify` of packed rows (verb code | task number << :data:`_TASK_SHIFT`), unpacked into the
    program's P_OP and P_TASK columns first."""
    for i in range(packed.shape[0]):
        p = packed[i]
        prog[i, P_OP] = p & ((1 << _TASK_SHIFT) - 1)
        prog[i, P_TASK] = p >> _TASK_SHIFT
    return _classify(prog[:, P_OP], mask, idx)


@sjit
def _fill_rows(prog: Any, codes: Any, tnum: Any, one_task: bool, areg: Any, one_reg: bool, afirst: Any,
               apages: Any, idx: Any, nf: int, fchild: Any, nm: int, mkind: Any, mreg: Any, mfirst: Any,
               mpages: Any, nq: int, freg: Any, ffirst: Any, fwrite: Any, rows: Any
               ) -> tuple[int, int, RowCounts]:
    """For encode(): the program's rows from its columns (the accesses' values in access order, the modelled
    madvise steps' and the recorded faults' in their order: a fault's row is one page, its written flag in P_ARG
    and the fill a write of that step would have); (exits, pages written by writes, :func:`_row_index` of the
    rows made, into ``rows``: ProgramRun's, in the same call). ``rows`` may be ``idx``'s memory: written last."""
    exits = 0
    wpages = 0
    a = 0
    for i in range(codes.shape[0]):
        c = codes[i]
        prog[i, P_OP] = c
        if not one_task:
            prog[i, P_TASK] = tnum[i]
        if c == OP_READ or c == OP_WRITE:  # noqa: SIM109 - scalar compares for numba
            if not one_reg:
                prog[i, P_REG] = areg[a]
            prog[i, P_FIRST] = afirst[a]
            p = apages[a]
            prog[i, P_PAGES] = p
            if c == OP_WRITE:
                prog[i, P_FILL] = 1 + (i * 37) % 255
                if p > 0:
                    wpages += p
            else:
                prog[i, P_FILL] = -1
            a += 1
        elif c == OP_EXIT:
            exits += 1
    for j in range(nf):
        prog[idx[0, j], P_ARG] = fchild[j]
    o = 0
    for j in range(nm):
        i = idx[1, j]
        kind = mkind[j]
        prog[i, P_OP] = kind
        if kind != OP_OTHER:
            prog[i, P_REG] = mreg[o]
            prog[i, P_FIRST] = mfirst[o]
            prog[i, P_PAGES] = mpages[o]
            o += 1
    for j in range(nq):
        i = idx[2, j]
        prog[i, P_REG] = freg[j]
        prog[i, P_FIRST] = ffirst[j]
        prog[i, P_PAGES] = 1
        prog[i, P_ARG] = fwrite[j]
        prog[i, P_FILL] = 1 + (i * 37) % 255 if fwrite[j] else -1
    return exits, wpages, _row_index(prog[:, P_OP], rows, False)


@sjit
def _row_index(codes: Any, rows: Any, control: bool) -> RowCounts:
    """For ProgramRun: in one pass, the rows that fork (``rows[0]``), that fork or exit -- with ``control`` also
    make a thread, vfork or exec -- (``rows[1]``), that Python runs (OP_OTHER, ``rows[2]``) and, with ``control``,
    the file rows (``rows[3]``) and the rows of the verbs that add VMA rows or move index slices (``rows[4]``);
    (forks, fork/exit rows, other rows, file rows, VMA rows, execs, MMs made, recorded faults). One compiled call
    instead of a dozen numpy ones (each costs tens of microseconds when its code was evicted from the cache between
    runs)."""
    nf = 0
    nfe = 0
    no = 0
    nfile = 0
    nvma = 0
    nexec = 0
    nq = 0
    for i in range(codes.shape[0]):
        c = codes[i]
        if c == OP_FAULT:
            nq += 1
        elif c == OP_FORK:
            rows[0, nf] = i
            nf += 1
            rows[1, nfe] = i
            nfe += 1
        elif c == OP_EXIT:
            rows[1, nfe] = i
            nfe += 1
        elif c == OP_OTHER:
            rows[2, no] = i
            no += 1
        elif control:
            if c == OP_THREAD or c == OP_VFORK or c == OP_EXEC:  # noqa: SIM109 - scalar compares for numba
                rows[1, nfe] = i
                nfe += 1
                if c == OP_EXEC:
                    nexec += 1
            elif c == OP_FILE:
                rows[3, nfile] = i
                nfile += 1
            elif c == OP_MMAP or c == OP_MUNMAP or c == OP_MPROTECT or c == OP_MADVF or c == OP_MREMAP:  # noqa: SIM109
                rows[4, nvma] = i
                nvma += 1
    return nf, nfe, no, nfile, nvma, nexec, nexec + nf, nq


@sjit
def _fork_scan(ms: Any, nmm: int, fork_rows: Any, pos: int, end: int, prog: Any, tmm: Any,
               nums: Any) -> tuple[int, int]:
    """For ProgramRun._prepare(): the most VMA rows of any of the first ``nmm`` MMs (at least 1), and into ``nums``
    the MM numbers (each once; -1 for a task that has none yet) of the tasks that fork in rows ``pos`` to ``end``;
    (most, how many numbers). One compiled call for what took four numpy ones."""
    most = 1
    for num in range(nmm):
        if ms[num, L.MS_NVMA] > most:
            most = ms[num, L.MS_NVMA]
    lo = 0
    hi = fork_rows.shape[0]
    while lo < hi:  # the first fork row at or after pos
        mid = (lo + hi) // 2
        if fork_rows[mid] < pos:
            lo = mid + 1
        else:
            hi = mid
    k = 0
    for j in range(lo, fork_rows.shape[0]):
        if fork_rows[j] >= end:
            break
        num = tmm[prog[fork_rows[j], P_TASK]]
        seen = False
        for q in range(k):
            if nums[q] == num:
                seen = True
                break
        if not seen:
            nums[k] = num
            k += 1
    return most, k


_NONE = np.zeros(0, dtype=np.int64)
_NONE8 = np.zeros(0, dtype=np.int8)
_NOVM = np.zeros((0, L.VM_COLS), dtype=np.int64)


def _numbering() -> defaultdict[Any, int]:
    """A dict that numbers its keys in order of first lookup (``d[key]`` inserts ``len(d)`` for a new key): a
    C-level map of its ``__getitem__`` over a column numbers it in one pass."""
    numbers: defaultdict[Any, int] = defaultdict()
    numbers.default_factory = numbers.__len__
    return numbers


def _addresses(regions: list[Any]) -> I64 | None:
    """``regions`` as an int64 array when every one is an int (a region given by its address, as run traces' faults
    mostly are: numbering tens of thousands of them costs more than the rest of the encoding), else None."""
    try:
        addrs = np.array(regions)
    except (OverflowError, ValueError, TypeError):
        return None
    if addrs.ndim != 1 or addrs.dtype.kind not in "iub":
        return None
    return addrs.astype(np.int64, copy=False)


#: told recorded faults: their rows in a step list (ascending), pages, written flags (0/1), tasks (an object array)
Told = tuple[I64, I64, I64, Any]


class FaultSteps(list[Step]):
    """A step list whose recorded faults are partly told as columns (``faults``, :data:`Told`: each such row's step
    is ``Step("fault", task, (vpn, 0, write))``), as the run trace's reader made them
    (foliosim.workloads.runtrace.FaultColumns): :func:`_encode` fills those rows from the columns instead of
    reading the Step objects (and drops them when they do not fit, :func:`_told_ok`). Every other use sees a plain
    list of the same steps."""

    __slots__ = ("faults",)

    def __init__(self, steps: Any = ()) -> None:
        super().__init__(steps)
        self.faults: Told | None = None


#: the rows of a FaultSteps' columns :func:`_told_ok` compares with the steps (the first, the last, evenly between)
_TOLD_SAMPLES = 17


def _told_ok(steps: list[Step], cols: Told) -> bool:
    """Whether ``cols`` plausibly tell ``steps``: their rows ascending within the list, and a sample of them
    (:data:`_TOLD_SAMPLES`, the ends included) each a fault step ``(vpn, 0, write)`` of the task told -- a list
    whose columns were cut for other steps (a shifted stretch, a converter's items replaced) fails it and is encoded
    from its steps alone."""
    rows, vpns, writes, tasks = cols
    n = len(rows)
    if not (len(vpns) == len(writes) == len(tasks) == n) or rows[0] < 0 or rows[-1] >= len(steps) or (
            n > 1 and not bool((rows[1:] > rows[:-1]).all())):
        return False
    at = sorted({0, n - 1, *range(0, n, max(n // (_TOLD_SAMPLES - 1), 1))})
    for row, vpn, write, task in zip(rows[at].tolist(), vpns[at].tolist(), writes[at].tolist(), tasks[at].tolist(),
                                     strict=True):
        step = steps[row]
        if step.verb != "fault" or step.args != (vpn, 0, bool(write)) or step.task != task:
            return False
    return True


def _fault_args(steps: list[Step], rows: I64) -> tuple[list[Any], I64, I64]:
    """The regions, pages and written flags (0/1) of the recorded faults at ``rows``."""
    fargs = list(map(_ARGS, map(steps.__getitem__, rows.tolist())))
    n = len(fargs)
    return (list(map(_ARG0, fargs)), np.fromiter(map(_ARG1, fargs), dtype=np.int64, count=n),
            np.fromiter(map(bool, map(_ARG2, fargs)), dtype=np.int64, count=n))


def encode(steps: list[Step]) -> tuple[I64, list[str], dict[Any, int]]:
    """(program, task names by number, region -> number) of a step list (see :func:`_encode`)."""
    prog, names, regions, _forks, _exits, _wpages, _madvs, _rows, _index = _encode(steps)
    return prog, names, regions


def _encode(steps: list[Step]) -> tuple[I64, list[str], dict[Any, int], int, int, int, int, I64, RowCounts]:
    """(program, task names by number, region -> number, forks, exits, pages written, madvise steps, the rows and
    counts of :func:`_row_index` without the control opcodes) of a step list.

    The steps' fields are read in comprehensions and C-level maps (a Python loop costs about a microsecond per step,
    as much as the compiled loop spends on one): one pass for verb and task (packed in one integer, a comprehension's
    attribute reads being the cheapest per step), one for the accesses' args, three C-level maps over those; task
    and region names are numbered in the same pass that looks them up (:func:`_numbering`). Everything numeric --
    which rows are accesses, forks, madvise, recorded faults; the rows themselves; the counts ProgramRun sizes its
    arrays by -- is two compiled calls, not dozens of numpy calls (each costs microseconds, tens when its code was
    evicted from the cache between runs, as it is on a shared machine). A :class:`FaultSteps` list's told faults
    (run traces: nearly every step) are not read at all: their rows and tasks come from its columns (checked on a
    sample, :func:`_told_ok`)."""
    n = len(steps)
    prog = np.zeros((n, P_COLS), dtype=np.int64)
    if not n:
        return prog, [], {}, 0, 0, 0, 0, np.zeros((3, 0), dtype=np.int64), (0, 0, 0, 0, 0, 0, 0, 0)
    cols = steps.faults if type(steps) is FaultSteps else None
    if cols is not None and not (len(cols[0]) and _told_ok(steps, cols)):
        assert isinstance(steps, FaultSteps)
        steps.faults = cols = None  # refused: not used, here or by the list's other readers
    known = _NONE8
    if cols is not None:  # the verbs of the other steps, read
        known = np.zeros(n, dtype=np.int8)
        known[cols[0]] = 1
        unknown = known == 0
        rest = list(map(steps.__getitem__, np.flatnonzero(unknown).tolist()))  # not compress(): it would touch
        codes = np.full(n, OP_FAULT, dtype=np.int64)  # (incref) every Step object, the told ones too
        codes[unknown] = np.fromiter(map(_CODES.__getitem__, map(_VERB, rest)), dtype=np.int64, count=len(rest))
    names = _numbering()
    # the access mask, then the fork, madvise and recorded-fault rows; at the end ProgramRun's row index
    work = np.empty((4, n), dtype=np.int64)
    if cols is None:  # one pass reads each step's verb and task (attribute reads in a comprehension are the
        # cheapest per step; the Step objects are cold in the cache in a user's one run), both in one integer
        code = _CODES
        packed = np.fromiter([code[s.verb] | names[s.task] << _TASK_SHIFT for s in steps], dtype=np.int64, count=n)
        nf, nm, nq = _classify_packed(packed, prog, work[0], work[1:])
        codes, tnum = prog[:, P_OP], prog[:, P_TASK]  # unpacked there
    else:
        nf, nm, nq = _classify(codes, work[0], work[1:])
    one_task = False
    if len(known):  # the told steps' tasks from the columns: the Step objects of the told rows are not touched
        assert cols is not None
        named = np.empty(n, dtype=object)
        named[cols[0]] = cols[3]
        named[unknown] = list(map(_TASK, rest))
        # the tasks come in runs (a task's faults follow each other): each run's first step numbered, the rest
        # repeat it
        heads = np.flatnonzero(named[1:] != named[:-1]) + 1
        one_task = not len(heads)  # one task: its number is 0 throughout
        if one_task:
            names[named[0]]  # numbered 0
            tnum = _NONE
        else:
            heads = np.concatenate(([0], heads))
            tnum = np.repeat(np.fromiter(map(names.__getitem__, named[heads].tolist()), dtype=np.int64,
                                         count=len(heads)), np.diff(heads, append=n))
    regions = _numbering()
    if cols is None:
        args = [s.args for s in compress(steps, work[0].tolist())]
    else:  # by their rows: compress() would touch (incref) every Step object, cold in the cache by now
        args = list(map(_ARGS, map(steps.__getitem__, np.flatnonzero(work[0]).tolist())))
    k = len(args)
    areg = afirst = apages = _NONE
    one_reg = True
    if k:
        regs = list(map(_ARG0, args))
        one_reg = regs.count(regs[0]) == k  # one region: its number is 0 throughout
        if one_reg:
            regions[regs[0]]  # numbered 0
        else:
            areg = np.fromiter(map(regions.__getitem__, regs), dtype=np.int64, count=k)
        afirst = np.fromiter(map(_ARG1, args), dtype=np.int64, count=k)
        apages = np.fromiter(map(_ARG2, args), dtype=np.int64, count=k)
    fchild = _NONE
    if nf:  # the children: names first seen here are numbered in program order
        children = list(map(_ARG0, map(_ARGS, map(steps.__getitem__, work[1, :nf].tolist()))))
        fchild = np.fromiter(map(names.__getitem__, children), dtype=np.int64, count=nf)
    mkind = mreg = mfirst = mpages = _NONE
    if nm:  # every madvise step, so far
        margs = list(map(_ARGS, map(steps.__getitem__, work[2, :nm].tolist())))
        kinds = list(map(_MADV_CODE, map(_ARG3, margs)))
        firsts = list(map(_ARG1, margs))
        counts = list(map(_ARG2, margs))
        if not _INT_TYPES.issuperset(map(type, firsts)) or not _INT_TYPES.issuperset(map(type, counts)):
            kinds = [kd if isinstance(a, int) and isinstance(b, int) else OP_OTHER
                     for kd, a, b in zip(kinds, firsts, counts, strict=True)]
        mkind = np.fromiter(kinds, dtype=np.int64, count=nm)
        if any(kinds):  # OP_OTHER is 0
            regs = list(compress(map(_ARG0, margs), kinds))  # regions first seen here: numbered in program order
            n_ok = len(regs)
            mreg = np.fromiter(map(regions.__getitem__, regs), dtype=np.int64, count=n_ok)
            mfirst = np.fromiter(compress(firsts, kinds), dtype=np.int64, count=n_ok)
            mpages = np.fromiter(compress(counts, kinds), dtype=np.int64, count=n_ok)
    freg = ffirst = fwrite = _NONE
    if nq:  # recorded faults (run-trace): (region, page, written); regions first seen here numbered after those
        frows = work[3, :nq]
        told = known[frows] != 0 if len(known) else None  # the rows the columns tell
        fregs, ffirst, fwrite = _fault_args(steps, frows if told is None else frows[~told])
        addrs = _addresses(fregs) if fregs else _NONE
        if addrs is not None and told is not None:  # the told rows: page 0 at the address, from the columns
            assert cols is not None
            first, written = np.empty(nq, dtype=np.int64), np.empty(nq, dtype=np.int64)
            first[told], written[told] = cols[1], cols[2]
            first[~told], written[~told] = ffirst + addrs, fwrite
            ffirst, fwrite = first, written
        elif told is not None:  # a region that is not an address: every fault's step read (the columns not used)
            fregs, ffirst, fwrite = _fault_args(steps, frows)
            addrs, told = _addresses(fregs), None
        if addrs is not None:  # every region an address: region 0, the address added to the page (not numbered)
            freg = np.full(nq, regions[0], dtype=np.int64)
            if told is None:
                ffirst += addrs
        else:
            freg = np.fromiter(map(regions.__getitem__, fregs), dtype=np.int64, count=nq)
    rows = work[:3]
    exits, wpages, index = _fill_rows(prog, codes, tnum, one_task, areg, one_reg, afirst, apages, work[1:], nf,
                                      fchild, nm, mkind, mreg, mfirst, mpages, nq, freg, ffirst, fwrite, rows)
    names.default_factory = regions.default_factory = None  # no reference cycle left for the collector
    return prog, list(names), dict(regions), nf, exits, wpages, nm, rows, index


#: an OP_MPROTECT row's P_ARG by protection (read | write << 1 | exec << 2), an OP_MMAP row's flags by protection
_PROT_ARG = {prot: int(r) | (int(w) << 1) | (int(x) << 2) for prot, (r, w, x, _nr) in PROT_FLAGS.items()}
_PROT_MF = {prot: (MF_READ * r) | (MF_WRITE * w) | (MF_EXEC * x) | (MF_NORESERVE * nr)
            for prot, (r, w, x, nr) in PROT_FLAGS.items()}


def encode_control(steps: list[Step], prog: I64, regions: dict[Any, int], m: FastMachine,
                   created: dict[int, tuple[str, int, int, bool]] | None = None,
                   names: list[str] | None = None) -> list[str]:
    """The control-plane rows of a program :func:`encode` made (its OP_OTHER rows that are mmap, munmap, mprotect,
    VMA-flag madvise, merge, mremap, file or thread steps of the forms FastWorkloadRunner.execute() gives a call),
    in place: labels and THP order sets interned in ``m.codec`` now, regions first seen here numbered after the
    others in ``regions``, files by their number in the returned list of names (their page-cache numbers are looked
    up at each entry). ``created``: the (name, pages, order, shmem) of the files ``file`` steps create, by their
    number; ``names``: the task names by number, new threads' names appended (None: thread steps stay Python's).
    A step of another form stays OP_OTHER (Python runs and checks it).

    One pass over the steps, each read once (a run trace's steps are cold in the cache by now: a pass per field
    costs more than the loop), the commonest verbs tested first (mmap, merge, mprotect); regions numbered inline
    and the rows collected flat (a call or a tuple per step costs as much as the step's own tests)."""
    codec = m.codec
    label, address_label = codec.label, codec.address_label
    files: dict[str, int] = {}
    if created is None:
        created = {}
    tids = {name: k for k, name in enumerate(names or ())}
    po = m.po
    get_region = regions.get
    prot_arg, prot_mf, flag_advice = _PROT_ARG.get, _PROT_MF.get, _FLAG_ADVICE.get
    out: list[int] = []  # (row, op, region, first, pages, arg, fill) after each other
    rows = np.flatnonzero(prog[:, P_OP] == OP_OTHER).tolist()
    for i, step in zip(rows, map(steps.__getitem__, rows), strict=True):
        verb, a = step.verb, step.args
        if verb == "mmap":  # the commonest verbs, compared first (mmap: two thirds of a run trace's rows)
            try:
                region, pages, kind, file, thp, prot, offset = a
            except ValueError:  # not seven arguments (a try costs nothing until it raises; len() is a call)
                continue
            if type(pages) is not int or type(offset) is not int:
                continue
            flags = prot_mf(prot)
            if flags is None:
                continue
            first = fill = 0
            if kind == "anon":
                if thp is not None:
                    orders = frozenset(thp)
                    if not all(type(o) is int and o != 1 and 2 <= o <= po for o in orders):
                        continue
                    flags |= MF_THP
                    fill = codec.thp(orders)
            elif kind in ("file-private", "file-shared") and type(file) is str:
                flags |= MF_FILE | (MF_SHARED if kind == "file-shared" else 0)
                fill = files.get(file, -1)
                if fill < 0:
                    fill = files[file] = len(files)
                first = offset
            else:
                continue
            if type(region) is int:  # labelled by its address: numbered by it (RowCodec.address_label())
                lid = address_label(region) if region >= 0 else label(str(region))
            elif type(region) is str:
                flags |= MF_NAMED
                lid = label(region)  # named mappings are few: interned by its one home
            else:
                continue
            k = get_region(region)
            if k is None:
                k = regions[region] = len(regions)
            out += (i, OP_MMAP, k, first, pages, flags | (lid << MF_LABEL_SHIFT), fill)
        elif verb == "merge":
            out += (i, OP_MERGE, 0, 0, 0, 0, 0)
        elif verb == "mprotect" or verb == "madvise":
            try:
                region, first, pages, what = a
            except ValueError:  # not four arguments
                continue
            if type(first) is not int or type(pages) is not int:
                continue
            if verb == "mprotect":
                arg = prot_arg(what)
                if arg is None:
                    continue
                op, fill = OP_MPROTECT, 0
            else:
                advice = flag_advice(what) if type(what) is str else None
                if advice is None:
                    continue
                op, (arg, fill) = OP_MADVF, advice
            if type(region) is not int and type(region) is not str:
                continue
            k = get_region(region)
            if k is None:
                k = regions[region] = len(regions)
            out += (i, op, k, first, pages, arg, fill)
        elif verb == "munmap":
            if len(a) != 3:
                continue
            region, first, pages = a
            if type(first) is int and type(pages) is int and (type(region) is int or type(region) is str):
                k = get_region(region)
                if k is None:
                    k = regions[region] = len(regions)
                out += (i, OP_MUNMAP, k, first, pages, 0, 0)
        elif verb == "file":
            if len(a) != 4:
                continue
            name, pages, order, shmem = a
            if type(name) is str and name and type(pages) is int and type(order) is int and pages > 0 and (
                    0 <= order <= po):
                fk = files.get(name)
                if fk is None:
                    fk = files[name] = len(files)
                created[fk] = (name, pages, order, bool(shmem))
                out += (i, OP_FILE, 0, 0, pages, order | (int(bool(shmem)) << 8), fk)
        elif verb == "thread" or verb == "vfork":
            if names is not None and len(a) == 1 and type(a[0]) is str:
                if a[0] not in tids:
                    tids[a[0]] = len(names)
                    names.append(a[0])
                out += (i, OP_THREAD if verb == "thread" else OP_VFORK, 0, 0, 0, tids[a[0]], 0)
        elif verb == "exec":
            if names is not None:
                out += (i, OP_EXEC, 0, 0, 0, 0, 0)
        elif verb == "mremap":
            if len(a) != 3:
                continue
            region, pages, new = a
            if type(pages) is not int or (type(new) is not int and type(new) is not str):
                continue
            if type(region) is not int and type(region) is not str:
                continue
            k = get_region(region)
            if k is None:
                k = regions[region] = len(regions)
            if type(new) is int:
                out += (i, OP_MREMAP, k, new, pages, -1, 0)
            else:
                j = get_region(new)
                if j is None:
                    j = regions[new] = len(regions)
                out += (i, OP_MREMAP, k, 0, pages, j, 0)
    if out:
        table = np.fromiter(out, dtype=np.int64, count=len(out)).reshape(-1, 7)
        at = table[:, 0]
        for k, col in enumerate((P_OP, P_REG, P_FIRST, P_PAGES, P_ARG, P_FILL), start=1):
            prog[at, col] = table[:, k]
    return list(files)


def _published(mm: FastMM) -> None:
    """What FastMachine._publish_raw() notes about an MM whose rows were just written whole (here by the compiled
    fork's row copy or compaction): the list its rows hold, the room of its index slice, nothing left to publish."""
    mm.published = list(mm.vmas)
    mm.vcap = len(mm.vmas)
    mm.unpublished_lo, mm.unpublished_hi = 1 << 62, -1


#: FastMM's slot descriptors of the attributes a LazyMM makes when first read
_MM_SLOT: dict[str, Any] = {name: vars(FastMM)[name] for name in ("vmas", "rows", "rowmap", "published")}


class LazyMM(FastMM):
    """A FastMM an exec in the loop made whose Vma objects (``vmas``, ``rows``, ``rowmap``, ``published``) are made
    from its VMA rows when first read or written (it is then a plain FastMM): until then its rows are the truth, the
    changes later stretches make to them included (ProgramRun._materialize_control() leaves it alone)."""

    __slots__ = ()

    def load(self) -> None:
        """The Vma objects from the rows as they are now (none once the MM is zapped or freed, as the table
        bookkeeping leaves it)."""
        assert self.pmds is not None
        m = self.pmds.machine
        self.__class__ = FastMM  # type: ignore[assignment]
        ms, num = m.ms, self.num
        n = int(ms[num, L.MS_NVMA]) if ms[num, L.MS_LIVE] and not ms[num, L.MS_ZAPPED] else 0
        off = int(ms[num, L.MS_VOFF])
        vmas = m.codec.vmas(m.vm[m.mv[off:off + n]], self.anon_birth) if n else []
        rows = m.mv[off:off + n].tolist()
        slot = _MM_SLOT
        slot["vmas"].__set__(self, vmas)
        slot["rows"].__set__(self, rows)
        slot["rowmap"].__set__(self, {id(vma): r for vma, r in zip(vmas, rows, strict=True)})
        slot["published"].__set__(self, list(vmas))

    def extent(self, sized: bool, ordered: bool) -> tuple[int, int]:
        """Upper bounds of what ProgramRun._prepare() reads of the VMAs for _presize() (scratch sizes: a bound changes
        no result), from a few cells of the rows: the pages from its first VMA's start to its last's end (0 when
        ``sized``) and the largest THP order any VMA of the machine allows (its codec's masks; 0 when ``ordered``).
        Scalar reads, not a numpy pass over its rows at every entry into the loop."""
        assert self.pmds is not None
        m = self.pmds.machine
        item, num = m.ms.item, self.num
        n = item(num, L.MS_NVMA)
        if not n or not item(num, L.MS_LIVE) or item(num, L.MS_ZAPPED):
            return 0, 0
        off = item(num, L.MS_VOFF)
        mv, vm_item = m.mv.item, m.vm.item
        pages = 0 if sized else vm_item(mv(off + n - 1), L.V_END) - vm_item(mv(off), L.V_START)
        order = 0 if ordered else max(map(int.bit_length, m.codec.thp_sets), default=1) - 1
        return pages, max(order, 0)

    def _vma_rows(self) -> npt.NDArray[np.int32]:
        """The VMA rows of the MM, in address order (its slice of the index; none once it is zapped or freed)."""
        assert self.pmds is not None
        m = self.pmds.machine
        off = int(m.ms[self.num, L.MS_VOFF])
        return m.mv[off:off + self.nvmas()]

    def prot_at(self, vpn: int) -> tuple[bool, bool] | None:
        """(read, write) of the VMA containing ``vpn`` (``find_vma()``), from the rows; None: no VMA there."""
        rows = self._vma_rows()
        if not len(rows):
            return None
        assert self.pmds is not None
        m = self.pmds.machine
        at = int(np.searchsorted(m.vm[rows, L.V_START], vpn, side="right")) - 1
        if at < 0:
            return None
        _start, end, read, write = m.vm[int(rows[at]), L.V_START:L.V_WRITE + 1].tolist()
        return (read != 0, write != 0) if end > vpn else None

    def vma_ranges(self) -> I64:
        """FastMM.vma_ranges() from the rows: an exiting MM's Vma objects are never made."""
        rows = self._vma_rows()
        if not len(rows):
            return np.zeros((0, 2), dtype=np.int64)
        assert self.pmds is not None
        return np.ascontiguousarray(self.pmds.machine.vm[rows, L.V_START:L.V_END + 1])

    def forget_vmas(self) -> None:
        """Nothing to empty: with the MM zapped its rows count as none, and so do the Vma objects :meth:`load` would
        make of them."""

    def nvmas(self) -> int:
        """len(vmas), from the rows."""
        assert self.pmds is not None
        item, num = self.pmds.machine.ms.item, self.num
        return int(item(num, L.MS_NVMA)) if item(num, L.MS_LIVE) and not item(num, L.MS_ZAPPED) else 0


def _lazy(slot: Any) -> property:
    """A LazyMM's attribute ``slot`` (FastMM's slot descriptor): the Vma objects made first."""

    def get(mm: LazyMM) -> Any:
        mm.load()
        return slot.__get__(mm, FastMM)

    def put(mm: LazyMM, value: Any) -> None:
        mm.load()
        slot.__set__(mm, value)

    return property(get, put)


for _name, _slot in _MM_SLOT.items():
    setattr(LazyMM, _name, _lazy(_slot))


def _nvmas(mm: FastMM) -> int:
    """len(mm.vmas) without making a LazyMM's Vma objects."""
    return mm.nvmas() if type(mm) is LazyMM else len(mm.vmas)


#: up to this many regions :func:`_region_table` loops over them
_FEW_REGIONS = 8


def _region_table(rid: dict[Any, int], rtab: I64) -> list[tuple[Any, int]]:
    """Fill ``rtab`` (by region number) with the regions of ``rid`` that are addresses (ints); the others (names)
    returned as (region, number), in ``rid``'s order. Run traces number thousands of addresses: C-level maps, not a
    loop over them."""
    if len(rid) <= _FEW_REGIONS:  # a workload's few regions (names, mostly): a loop costs less than the maps
        named = []
        for region, i in rid.items():
            if isinstance(region, int):
                rtab[i] = region
            else:
                named.append((region, i))
        return named
    regions = list(rid)
    ints = list(map(isinstance, regions, repeat(int)))
    if all(ints):
        rtab[np.fromiter(rid.values(), dtype=np.int64, count=len(rid))] = np.fromiter(regions, dtype=np.int64,
                                                                                      count=len(rid))
        return []
    nums = list(rid.values())
    if any(ints):
        rtab[np.fromiter(compress(nums, ints), dtype=np.int64)] = np.fromiter(compress(regions, ints), dtype=np.int64)
    other = [not x for x in ints]
    return list(zip(compress(regions, other), compress(nums, other), strict=True))


class ProgramRun:
    """One workload run through :func:`run_program`, with FastWorkloadRunner executing what it stops at."""

    def __init__(self, runner: FastWorkloadRunner, steps: list[Step]) -> None:
        self.r = runner
        self.m = runner.m
        self.steps = steps
        (self.prog, self.names, self.rid, self.forks, self.exits, self.wpages, self.nmadv, rows,
         index) = _encode(steps)
        nt = max(len(self.names), 1)
        keep = self._keep()
        # the small arrays cut from one block (each numpy allocation costs microseconds, tens in a cold cache)
        self._blk = np.zeros(7 * nt + max(len(self.rid), 1) + S_LEN + (1 if keep else _BATCH) * 6 + _FAULT_ROWS * 2
                             + (4096 if keep else 1) * 4 + 64 * 3 + TL_LEN + 4 + K_COLS + X_LEN + 1 + 3, dtype=np.int64)
        self._at = 0
        self.tmm = self._take(nt)
        self.ftab = self._take(1)
        self.ttg = self._take(nt, 3)  # per task number: TG_TGID, TG_VP, TG_FOREIGN
        self._blk[:self._at] = -1  # tmm, ftab and ttg: one store
        self.tst = self._take(nt)
        self.tpid = self._take(nt)
        self.rtab = self._take(max(len(self.rid), 1))
        self.rtab[:] = MISSING
        self.st = self._take(S_LEN)
        nf, nfe, no, _nfile, _nvma, _nexec, _made, self.nfault = index  # _row_index() of the program
        self.fork_rows = rows[0, :nf]
        self.fe_rows: list[int] = rows[1, :nfe].tolist()
        self.other_rows: list[int] = rows[2, :no].tolist()
        self.light = False  # the current stretch neither forks nor exits (_light())
        self._tsig: tuple[int, int, int] | None = None  # (tasks, next pid, next MM) when the task tables were made
        self.tid = {name: i for i, name in enumerate(self.names)}
        # regions by name: their base page is looked up at each entry
        self.named: list[tuple[Any, int]] = _region_table(self.rid, self.rtab)
        self.ops1 = self._take(1 if keep else _BATCH, 6)  # run_program()'s access rows
        self.faults = self._take(_FAULT_ROWS, 2)
        self.uf = self._take(4096 if keep else 1, 4)
        self.rg = self._take(64, 2)
        self.vr = self._take(64)
        self.tal = self._take(TL_LEN)  # recorded-fault outcomes and tallied decisions (S_TALLY)
        self.rs = self._take(1)  # rows with a reuse decision (S_TALLY: one per row, made then)
        self.racy = self._take(1, 3)  # racy recorded faults (row, folio before, after): FA_RACY
        self.tobj: list[FastTask | None] = [None] * nt
        self.mobj: dict[int, FastMM] = {}
        self.templates: dict[int, list[Vma]] = {}
        self._ids = self._ctask = self._morig = self._mtask = _NONE  # empty: nothing is written into them
        self._vfk = self._msimple = self._ftmp = _NONE8
        self._vtmp = _NOVM
        self.control = False  # the control-plane opcodes run in the loop (enable_control())
        self.mk = self._take(1, K_COLS)
        self.mk[0, K_PLO] = kvma.NO_LO  # no MM's VMAs changed (fork reads it)
        self.mk[0, K_PHI] = -1
        self.vst = self._take(X_LEN)
        self.fnames: list[str] = []
        self.fmade: dict[int, tuple[str, int, int, bool]] = {}  # files the program's file steps create, by number
        self.file_rows = self.file_pages = _NONE  # OP_FILE rows, their pages from each on
        self.vma_rows = _NONE  # the rows of the verbs that add VMA rows or move index slices
        self._fnums = _NONE  # _prepare()'s MM numbers of the tasks that fork ahead (made at the first that has any)
        self._mm0 = 0  # the next MM number when _prepare() made the MM tables (the loop's forks number from it)
        self._end = len(steps)  # where the run _prepare() prepares for stops (_call()'s ``end``)
        self.marks = self._take(1, 3)  # S_MARK: (trace rows, decisions, step) before each row

    def _keep(self) -> bool:
        return self.m.keep_decisions or self.m.record

    def _take(self, rows: int, cols: int = 0) -> I64:
        """The next ``rows`` (x ``cols``) zeros of the block __init__() cuts its small arrays from."""
        at = self._at
        n = rows * cols if cols else rows
        self._at = at + n
        part = self._blk[at:at + n]
        return part.reshape(rows, cols) if cols else part

    def run(self) -> None:
        """Run every step: stretches in run_program(), what it stops at through FastWorkloadRunner._step()."""
        m, r, steps = self.m, self.r, self.steps
        n = len(steps)
        m._grow_rows("ms", m._next["mm"] + self.forks + 1)  # a row per MM: no round trip per doubling
        wpages = self.wpages  # folio and page rows for the pages the program writes, at most: no round trip each
        if wpages > 64:
            m.ensure(folios=min(wpages, _AHEAD_MAX), pages=min(2 * wpages, _AHEAD_MAX))
        pos = 0
        while pos < n:
            if m.gup or self.prog[pos, P_OP] == OP_OTHER:  # pins or pipes held, or a step it does not model
                why = WHY_STEP
            else:
                pos, why = self._call(pos, n)
            if why == WHY_DONE:
                break
            step = steps[pos]
            if why == WHY_STEP:
                r._step(step, pos)
                r.flush()
                pos += 1
                continue
            if why == WHY_MAPPED:  # FastMachine.mmdrop()'s check
                raise OracleViolation(f"fast engine: mm{int(self.st[S_MAPPED])} freed with mappings left")
            rc = int(self.st[S_RC])  # WHY_ERROR: the kernel's error, raised as the one-step path raises it
            if step.verb in ("read", "write"):
                m._check_rc(rc)  # as FastWorkloadRunner._accesses(): not wrapped
            try:
                m._check_rc(rc)
            except (SimError, WorkloadError) as exc:
                raise WorkloadError(f"step {pos + 1} ({step.verb} {step.task}): {exc}") from None
            except Unsupported as exc:
                raise Unsupported(f"step {pos + 1} ({step.verb} {step.task}): {exc}") from None
            raise AssertionError(f"step {pos + 1}: the interpreter stopped with rc {rc} and no error")

    # -- entering and leaving the compiled loop
    def _call(self, pos: int, end: int) -> tuple[int, int]:
        """run_program() from ``pos`` until it stops at something Python must do; room that only needs bigger
        arrays is made without leaving the tables (no Python object is read or written for it)."""
        m = self.m
        self.light = self._light(pos, end)
        self._end = end  # fork's templates for the forks before ``end`` only (a run-trace program stops at snapshots)
        self._prepare(pos)
        self._end = self.prog.shape[0]
        try:
            while True:
                out = run_program(*m.args(), m.pexp, m.pcache.fc, m.pcache.pcs, m._scratch(), m.scr2, m.ent,
                                  m._gather, self.prog, pos, end, *self._args())
                pos, why = int(out[0]), int(out[1])
                if why != WHY_ROOM:
                    return pos, why
                self._grow()
                self._regrow()
        finally:
            self._materialize()

    def _light(self, pos: int, end: int) -> bool:
        """Whether the stretch from ``pos`` (it ends at the next step the interpreter does not model, at the latest)
        holds no fork and no exit: then no task, MM or id changes, and the tables need not be read or written back
        (accesses, recorded faults, madvise and scans only)."""
        other, fe = self.other_rows, self.fe_rows
        k = bisect_left(other, pos)
        stop = other[k] if k < len(other) and other[k] < end else end
        j = bisect_left(fe, pos)
        return not (j < len(fe) and fe[j] < stop)

    def _args(self) -> tuple[Any, ...]:
        return (self.st, self.tmm, self.tst, self.tpid, self.rtab, self._msimple, self._morig, self._mtask, self._vfk,
                self._ids, self._ctask, self.uf, self.ops1, self.faults, self.vr, self.rg, self._vtmp, self._ftmp,
                self.tal, self.rs, self.racy, self.mk, self.vst, self.ftab, self.ttg, self.marks)

    def _regrow(self) -> None:
        """The per-MM and per-decision tables follow ``ms`` and ``cow`` when those grew."""
        m = self.m
        size = m.ms.shape[0]
        if self._msimple.shape[0] < size:
            k = self._msimple.shape[0]
            msimple = np.zeros(size, dtype=np.int8)
            msimple[:k] = self._msimple
            morig = np.full(size, -1, dtype=np.int64)
            morig[:k] = self._morig
            mtask = np.full(size, -1, dtype=np.int64)
            mtask[:k] = self._mtask
            self._msimple, self._morig, self._mtask = msimple, morig, mtask
        if self._ctask.shape[0] < m.cow.shape[0]:
            ctask = np.full(m.cow.shape[0], -1, dtype=np.int64)
            ctask[:self._ctask.shape[0]] = self._ctask
            self._ctask = ctask

    def _prepare(self, pos: int = 0) -> None:
        """The task, MM, VMA and id tables of the machine as it is now (after any Python step), for a run from
        program row ``pos``: what only fork reads (each MM's VMA templates, anon_vma_forked rows, whether fork can
        copy it) for the MMs of the tasks that fork from there on only."""
        m, st = self.m, self.st
        st[S_NVM] = m.nvm
        st[S_NMV] = m.nmv
        st[S_NEXT_PID] = m._next["pid"]
        st[S_NEXT_MM] = m._next["mm"]
        st[S_STEP] = m.step
        st[S_LAST] = -1
        st[S_KEEP] = int(self._keep())
        st[S_KEEPDEC] = int(m.keep_decisions)
        st[S_PCACHE] = int(bool(m.pcache.files))
        st[S_EARLY] = m.pinned_pages + 1
        # Every Python step that changes a task's MM or whether it runs makes a task (pid), an MM (exec) or ends
        # one; the loop changes them only by fork and exit: the tables are rebuilt only when one of those happened.
        sig = (len(m.tasks), m._next["pid"], m._next["mm"])
        if sig != self._tsig:
            self._tsig = sig
            tid = self.tid
            self.tst.fill(T_NONE)
            self.tmm.fill(-1)
            self.tobj = [None] * len(self.tobj)
            for name, task in m.tasks.items():
                i = tid.get(name)
                if i is None:
                    continue
                self.tst[i] = T_BLOCKED if task.vfork_blocked else T_VCHILD if task.vfork_parent is not None else T_PY
                self.tmm[i] = task.mm.num
                self.tpid[i] = task.pid
                self.tobj[i] = task
        regions = self.r.regions
        for region, i in self.named:
            self.rtab[i] = regions.get(region, MISSING)
        if self.light:  # no fork or exit ahead: the MM, VMA and id tables are not read
            self._ctask = np.full(m.cow.shape[0], -1, dtype=np.int64)
            return
        size = m.ms.shape[0]
        freed = m.ids._freed
        ncow = m.cow.shape[0]
        self._mm0 = m._next["mm"]
        # morig, mtask and ctask (-1 each) and the id heap (zeros) cut from one block, msimple and vfk from another
        # (each numpy allocation costs microseconds, tens in a cold cache)
        blk = np.zeros(2 * size + ncow + I_HEAP + len(freed) + self.exits + 2, dtype=np.int64)
        blk[:2 * size + ncow] = -1
        morig, mtask, ctask, ids = blk[:size], blk[size:2 * size], blk[2 * size:2 * size + ncow], blk[2 * size + ncow:]
        blk8 = np.zeros(size + m.vm.shape[0], dtype=np.int8)
        msimple, vfk = blk8[:size], blk8[size:]
        self.mobj = {mm.num: mm for mm in m.mms.values()}
        self.templates = {}
        ms = m.ms
        for num, mm in self.mobj.items():
            ms[num, L.MS_USERS] = mm.users
            ms[num, L.MS_COUNT] = mm.count
            morig[num] = num
        fork_rows = self.fork_rows
        if self._fnums.shape[0] < fork_rows.shape[0]:
            self._fnums = np.empty(fork_rows.shape[0], dtype=np.int64)
        most, nfork = _fork_scan(ms, m._next["mm"], fork_rows, pos, self._end, self.prog, self.tmm, self._fnums)
        if self.exits or self.nmadv:  # what zap and the split will need (the VMAs are read only for that)
            pages = order = 0
            # only while the arrays may still grow: at their largest sizes _presize() changes nothing
            sized = m._gather.shape[0] >= _AHEAD_MAX
            ordered = not self.nmadv or m.ent.shape[0] >= (len(self.mobj) + 1) << m.po
            if not (sized and ordered):
                for mm in self.mobj.values():  # C-level maps: a generator costs a frame per VMA, at every entry
                    if type(mm) is LazyMM:  # bounds from its rows (its Vma objects are not made for this)
                        p, o = mm.extent(sized, ordered)
                        pages, order = max(pages, p), max(order, o)
                        continue
                    vmas = mm.vmas
                    if not sized:
                        pages = max(pages, sum(map(_END, vmas)) - sum(map(_START, vmas)))
                    if not ordered:  # the largest order any VMA allows (an empty set allows none)
                        order = max(order, max(map(max, filter(None, map(_THP, vmas))), default=0))
            self._presize(pages, order)
        if nfork:  # fork copies every VMA (file and shared ones too), except VM_DONTFORK ones: Python does that
            for num in self._fnums[:nfork].tolist():
                forker = self.mobj.get(num)
                if forker is None:
                    continue
                vmas = forker.vmas
                self.templates[num] = list(vmas)
                msimple[num] = not any(map(_DONTFORK, vmas))
                if len(vmas) != len(forker.rows):  # pragma: no cover - the rows follow the list
                    raise OracleViolation(f"fast engine: {forker.name}'s VMA rows do not follow its VMAs")
                forked = list(compress(forker.rows, map(_FORKED, vmas)))
                if forked:
                    vfk[forked] = 1
        if self.rg.shape[0] < most:
            rg = np.zeros((2 * most, 2), dtype=np.int64)
            rg[:self.rg.shape[0]] = self.rg  # a MADV_COLD/PAGEOUT cut short resumes from these
            self.rg = rg
        if self.vr.shape[0] < most:
            self.vr = np.zeros(2 * most, dtype=np.int64)
        ids[I_NEXT] = m.ids._next
        ids[I_MAX] = m.ids.max_id
        ids[I_LEN] = len(freed)
        if freed:
            ids[I_HEAP:I_HEAP + len(freed)] = freed
        self._ids, self._ctask, self._morig, self._mtask, self._vfk = ids, ctask, morig, mtask, vfk
        self._msimple = msimple
        st[S_COMPACT] = 0
        # _compact()'s staging rows, when the forks ahead may fill the VMA rows or index (else it asks: RK_SCR)
        if self._vtmp.shape[0] < m.vm.shape[0] and max(m.nvm, m.nmv) + 2 * (self.forks + 1) * most > min(
                m.vm.shape[0], m.mv.shape[0]):
            self._vtmp, self._ftmp = np.empty_like(m.vm), np.empty_like(vfk)

    def _presize(self, pages: int, order: int) -> None:
        """Scratch arrays sized ahead for what the program will ask of them, so that the compiled loop does not
        stop to ask (a round trip each; they are scratch, so their sizes change no result; where they fall short
        the loop still asks): zap's gather list for the largest MM's pages (at exit and MADV_DONTNEED: one row per
        PTE, a PMD mapping's pages), and when the program has madvise steps, the folio split's page list and
        migration entries for a folio of the largest order the VMAs allow mapped by every MM and one more (the
        split's page list as MADV_COLD/PAGEOUT's split would grow it; the entries without its doubling: zeroed
        memory costs a page fault per page on a fresh machine)."""
        m = self.m
        if self.exits or self.nmadv:
            m._gather_rows(min(pages + 2, _AHEAD_MAX))
        if self.nmadv:
            need = max(int(m.glob[L.G_NTB]) + 1, m.P)
            if m.scr2.shape[1] < need:  # both written before they are read: not cleared (no page faults ahead)
                m.scr2 = np.empty((2, 2 * need), dtype=np.int64)
            ents = (len(m.mms) + 1) << order if order else 0
            if m.ent.shape[0] < ents:
                m.ent = np.empty((ents, 5), dtype=np.int64)

    def _materialize(self) -> None:
        """The Python objects brought up to date with the arrays: ids, tasks and MMs (:meth:`_materialize_tables`,
        unless the stretch could neither fork nor exit), trace, decisions, counters."""
        m, st, names = self.m, self.st, self.names
        if not self.light:
            self._materialize_tables()
        sv = st.tolist()  # one read of the state vector: a returning stretch is often only a few steps
        nuf = sv[S_NUF]
        if nuf:
            m.user_faults.extend((s, names[t], vpn, bool(w)) for s, t, vpn, w in self.uf[:nuf].tolist())
        ncow = int(m.glob[L.G_NCOW])
        cow_tasks = None
        if ncow and m.keep_decisions:
            fallback = names[sv[S_LAST]] if sv[S_LAST] >= 0 else (m.task_name or "?")
            cow_tasks = [names[t] if t >= 0 else fallback for t in self._ctask[:ncow].tolist()]
        m._drain(cow_tasks)
        if sv[S_FORKS]:
            m.pycount["fork"] += sv[S_FORKS]
        if any(sv[S_MCNT:S_MCNT + 6]):
            for k, key in enumerate(("madvise cold take", "madvise cold skip", "madvise cold split",
                                     "madvise pageout take", "madvise pageout skip", "madvise pageout split")):
                if sv[S_MCNT + k]:
                    m.pycount[key] += sv[S_MCNT + k]
            st[S_MCNT:S_MCNT + 6] = 0
        stats = self.r.stats
        stats.steps += sv[S_STEPS]
        stats.scans += sv[S_SCANS]
        st[S_NUF] = st[S_STEPS] = st[S_SCANS] = st[S_FORKS] = 0
        m.step = sv[S_STEP]
        if sv[S_LAST] >= 0:
            m.task_name = names[sv[S_LAST]]

    def _materialize_tables(self) -> None:
        """The MM id allocator, the MMs (counts, exits, compacted rows, anon_vma ids, forked ones) and the tasks."""
        m, st, names = self.m, self.st, self.names
        self._tsig = None
        s = st.tolist()  # read once: indexing a numpy array per field costs more than the list
        m.nvm = s[S_NVM]
        m.nmv = s[S_NMV]
        m._next["pid"] = s[S_NEXT_PID]
        m._next["mm"] = s[S_NEXT_MM]
        ids = self._ids
        m.ids._next = int(ids[I_NEXT])
        heap = ids[I_HEAP:I_HEAP + int(ids[I_LEN])].tolist()
        m.ids._freed = heap
        m.ids._freed_set = set(heap)
        ms = m.ms
        for num, mm in self.mobj.items():  # the MMs Python knew
            row = ms[num].tolist()
            mm.users = row[L.MS_USERS]
            mm.count = row[L.MS_COUNT]
            if row[L.MS_ZAPPED] and not mm.zapped:  # exit_mmap()
                mm.vmas.clear()
                mm.rows.clear()
                mm.rowmap.clear()
                mm.zapped = True
            if not row[L.MS_LIVE]:
                del m.mms[mm.name]
                continue
            if s[S_COMPACT] and not mm.zapped:  # the VMA rows were compacted
                off = row[L.MS_VOFF]
                mm.rows = m.mv[off:off + len(mm.vmas)].tolist()
                mm.rowmap = {id(vma): row for vma, row in zip(mm.vmas, mm.rows, strict=True)}
                _published(mm)
            m._sync(mm)  # anon_vma ids the kernels assigned (fork's _dup_mmap() syncs its parent)
        mms: dict[int, FastMM] = dict(self.mobj)
        created = self._created()
        mtask = self._mtask.tolist() if created else []
        vm_item, mv, vfk_item = m.vm.item, m.mv, self._vfk.item  # scalar reads: no numpy scalar made for each
        morig = self._morig.tolist() if created else []
        for num in created:  # forked in the compiled loop and still alive
            row = ms[num].tolist()
            mm = FastMM(num, row[L.MS_ID], label=names[mtask[num]])
            mm.pmds = PmdSet(m, mm)
            mm.users = row[L.MS_USERS]
            mm.count = row[L.MS_COUNT]
            tmpl = self.templates[morig[num]]
            off = row[L.MS_VOFF]
            rows = mv[off:off + row[L.MS_NVMA]].tolist()
            vmas = mm.vmas
            for k, r in enumerate(rows):
                vma = Vma(*_VMA_FIELDS(tmpl[k]))
                av = vm_item(r, L.V_ANONVMA)
                vma.anon_vma = av if av else None
                vma.anon_vma_forked = bool(vfk_item(r))
                vmas.append(vma)
            mm.rows = rows
            mm.rowmap = {id(vma): r for vma, r in zip(vmas, rows, strict=True)}
            _published(mm)
            mm.zapped = bool(row[L.MS_ZAPPED])
            m.mms[mm.name] = mm
            mms[num] = mm
        born = []
        tst, tpid = self.tst.tolist(), self.tpid.tolist()
        for i, task in enumerate(self.tobj):  # deaths first: a name may be reused by a later fork
            state = tst[i]
            if task is not None and (state == T_NONE or tpid[i] != task.pid):
                task.alive = False
                del m.tasks[task.name]
            if state == T_NEW:
                born.append((tpid[i], i))
        for pid, i in sorted(born):
            name = names[i]
            new = FastTask(pid, name, mms[int(self.tmm[i])], pid)
            m.tasks[name] = new

    def _created(self) -> list[int]:
        """The MMs forked in the loop (since :meth:`_prepare` made the tables: numbered from there on) and alive,
        mostly none: read from the few rows of the MMs numbered since (not a scan of every row)."""
        lo, hi = self._mm0, int(self.st[S_NEXT_MM])
        if hi <= lo:
            return []
        forked, live = self._mtask[lo:hi].tolist(), self.m.ms[lo:hi, L.MS_LIVE].tolist()
        return [num for num, task, up in zip(range(lo, hi), forked, live, strict=False) if task >= 0 and up]

    def _grow(self) -> None:
        """Make the room run_program() asked for (as the one-step path would have made it), then resume."""
        m, st = self.m, self.st
        kind = int(st[S_ROOM])
        if kind == RK_GROW:
            m._grow_after_room()
        elif kind == RK_ROOM:
            m._room(int(st[S_N0]), int(st[S_N1]), int(st[S_N2]), int(st[S_N3]), int(st[S_N4]))
            m._gather_rows(int(st[S_N5]))
        elif kind == RK_VMA:  # _compact() wrote the rows to vtmp: arrays of the size _compact_vmas() makes
            size, k = int(st[S_N0]), int(st[S_NVM])
            m.vm = np.zeros((size, L.VM_COLS), dtype=np.int64)
            m.vm[:k] = self._vtmp[:k]
            m.mv = np.zeros(size, dtype=np.int32)
            m.mv[:k] = np.arange(k, dtype=np.int32)
            vfk = np.zeros(size, dtype=np.int8)
            vfk[:k] = self._ftmp[:k]
            self._vfk = vfk
            if self._vtmp.shape[0] < size:
                self._vtmp, self._ftmp = np.empty_like(m.vm), np.empty_like(vfk)
        elif kind == RK_MS:
            m._grow_rows("ms", int(st[S_N0]))
        elif kind == RK_SCR:
            if self._vtmp.shape[0] < int(st[S_N0]):  # _compact()'s staging rows
                self._vtmp = np.empty((int(st[S_N0]), L.VM_COLS), dtype=np.int64)
                self._ftmp = np.empty(int(st[S_N0]), dtype=np.int8)
            m._scratch()
            need = max(int(m.glob[L.G_NTB]) + 1, m.P)
            if m.scr2.shape[1] < need:
                m.scr2 = np.zeros((2, 2 * need), dtype=np.int64)
        elif kind == RK_COLD:  # FastMachine._cold_pageout()'s growth after a folio split asked for room
            mms = int(m.ms[:int(st[S_NEXT_MM]), L.MS_LIVE].sum()) + 1  # len(m.mms) + 1 once materialized
            m.ensure(folios=m.P + 2, pages=m.P + 2, trace=3 * mms * m.P + 2 * m.P + 16)
            if m.ent.shape[0] < mms * m.P:
                m.ent = np.zeros((2 * mms * m.P, 5), dtype=np.int64)
        elif kind == RK_UF:
            uf = np.zeros((2 * self.uf.shape[0] + self.faults.shape[0], 4), dtype=np.int64)
            self.uf = uf
        else:  # pragma: no cover - a bug in run_program
            raise AssertionError(f"unknown room kind {kind}")


    # -- the control plane in the loop (run-trace: TraceProgram)
    def enable_control(self) -> None:
        """Run the control-plane steps (:func:`encode_control`) in the loop, through kvma's verbs: the rows are
        made, the region table and the stretches' ends follow them."""
        m = self.m
        if not m.compiled_vmas or not len(self.steps):
            return
        nt = len(self.names)
        self.fnames = encode_control(self.steps, self.prog, self.rid, m, self.fmade, self.names)
        if len(self.names) > nt:  # new threads' names: the task tables grow
            grow = len(self.names) - nt
            self.tmm = np.concatenate([self.tmm, np.full(grow, -1, dtype=np.int64)])
            self.tst = np.concatenate([self.tst, np.zeros(grow, dtype=np.int64)])
            self.tpid = np.concatenate([self.tpid, np.zeros(grow, dtype=np.int64)])
            self.tobj.extend([None] * grow)
            self.tid = {name: i for i, name in enumerate(self.names)}
        self.ttg = np.full((len(self.tmm), 3), -1, dtype=np.int64)
        rows = np.empty((5, self.prog.shape[0]), dtype=np.int64)
        _nf, nfe, no, nfile, nvma, nexec, made, _nq = _row_index(self.prog[:, P_OP], rows, True)
        self.fe_rows = rows[1, :nfe].tolist()
        self.exits += nexec  # an exec may free its old MM's id: room in the id heap
        if made:  # a row per MM the program can make (exec's new MMs): no return to Python per doubling
            m._grow_rows("ms", m._next["mm"] + made + 1)
        self.file_rows = rows[3, :nfile]
        self.vma_rows = rows[4, :nvma]
        self.file_pages = np.cumsum(self.prog[self.file_rows, P_PAGES][::-1])[::-1] if nfile else _NONE
        self.ftab = np.full(max(len(self.fnames), 1), -1, dtype=np.int64)
        self.rtab = np.full(max(len(self.rid), 1), MISSING, dtype=np.int64)
        self.named = _region_table(self.rid, self.rtab)
        self.other_rows = rows[2, :no].tolist()
        self.control = True

    def _prepare_control(self, pos: int = 0) -> None:
        """The control plane's state for the loop: machine-wide (unmapped-area base, THP masks, the files' page-cache
        numbers) in ``vst``, per MM (FastMM.vcap, unmerged window, anon_birth) in ``mk``; the page cache's arrays
        made big enough for the files the program creates from ``pos`` on (their size is not state)."""
        m, vst = self.m, self.vst
        k = int(self.file_rows.searchsorted(pos))
        if k < len(self.file_rows):
            pc = m.pcache
            need = pc.used + int(self.file_pages[k])
            if need > pc.pcs.shape[0]:
                grown = np.full(max(2 * pc.pcs.shape[0], need), -1, dtype=np.int32)
                grown[:pc.used] = pc.pcs[:pc.used]
                pc.pcs = grown
            nfc = len(pc.files) + len(self.file_rows) - k
            if nfc > pc.fc.shape[0]:
                fc = np.zeros((max(2 * pc.fc.shape[0], nfc), L.FC_COLS), dtype=np.int64)
                fc[:len(pc.files)] = pc.fc[:len(pc.files)]
                pc.fc = fc
        vst[X_ON] = 1
        ttg, tid = self.ttg, self.tid
        ttg[:, TG_TGID] = 0
        ttg[:, TG_VP] = -1
        ttg[:, TG_FOREIGN] = 0
        foreign = {task.tgid for name, task in m.tasks.items() if name not in tid}
        for name, task in m.tasks.items():
            i = tid.get(name)
            if i is None:
                continue
            ttg[i, TG_TGID] = task.tgid
            ttg[i, TG_FOREIGN] = task.tgid in foreign
            vp = task.vfork_parent
            if vp is not None:
                ttg[i, TG_VP] = tid.get(vp.name, -2)
        vst[X_FOREIGN] = len(foreign)
        vst[X_PID0] = m._next["pid"]
        vst[X_TASKS] = 0
        vst[kvma.VS_BASE] = m._mmap_base
        vst[kvma.VS_MUTANT] = m.kvma_mutant
        codec, opts = m.codec, m.options
        vst[X_THPDEF] = codec.thp(frozenset(opts.thp))
        madv = opts.thp_madvise
        vst[X_THPMADV] = codec.thp(opts.thp | (madv if madv is not None else frozenset({m.po})))
        vst[X_THPNONE] = codec.thp(frozenset())
        files, ids = m.files, m.pcache.ids
        if self.fnames:  # one write (a numpy scalar write per file costs more than the lookups)
            self.ftab[:len(self.fnames)] = [ids[name] if name in files else -1 for name in self.fnames]
        vst[X_NFILE] = len(m.pcache.files)
        vst[X_PCUSED] = m.pcache.used
        vst[X_FILESTEP] = -1
        mk = np.zeros((m.ms.shape[0], K_COLS), dtype=np.int64)
        mk[:, K_PLO] = kvma.NO_LO
        mk[:, K_PHI] = -1
        most = 0
        for mm in m.mms.values():
            if not mm.zapped:
                birth = mm.anon_birth
                if birth < 0:  # FastMachine._anon_birth()'s value (noted on the MM once a verb runs on it)
                    birth = 1 + max((v.anon_vma for v in mm.vmas if v.anon_vma is not None and v.anon_vma_forked),
                                    default=0)
                mk[mm.num, :K_USED] = (1, mm.vcap, mm.unmerged_lo, mm.unmerged_hi, birth)
                most = max(most, _nvmas(mm))
        self.mk = mk
        need = most + kvma.NEW_ROWS + 64
        if self.rg.shape[0] < need:
            rg = np.zeros((2 * need, 2), dtype=np.int64)
            rg[:self.rg.shape[0]] = self.rg  # a MADV_COLD/PAGEOUT cut short resumes from these
            self.rg = rg

    def _materialize_control(self) -> None:
        """What the control-plane opcodes changed, back into the Python objects (as FastMachine._kvma() leaves
        them): the unmapped-area base, VMA rows and index, the named regions mmap() defined, each MM's room and
        unmerged window, and the Vma objects of the pages whose VMAs changed (FastMachine._materialize());
        FastMachine._sync() of the MMs a merge step ran on."""
        m, mk, st, vst = self.m, self.mk, self.st, self.vst
        m._mmap_base = int(vst[kvma.VS_BASE])
        pcache = m.pcache
        nfile = int(vst[X_NFILE])
        if nfile > len(pcache.files):  # files the loop created (their fc rows are written)
            made = {int(fid): k for k, fid in enumerate(self.ftab.tolist()) if fid >= len(pcache.files)}
            for fid in range(len(pcache.files), nfile):
                name, pages, order, shmem = self.fmade[made[fid]]
                file = SimFile(name, pages, order, shmem, SparsePages(pages, filled_page(0)), anon=shmem)
                m.files[name] = file
                pcache.files.append(file)
                pcache.ids[name] = fid
                m.ref.file_new(file)
            pcache.used = int(vst[X_PCUSED])
        m.nvm = int(st[S_NVM])
        m.nmv = int(st[S_NMV])
        regions = self.r.regions
        for region, i in self.named:
            base = int(self.rtab[i])
            if base != MISSING and regions.get(region) != base:
                regions[region] = base
        for num in mk[:, K_EXEC].nonzero()[0].tolist():  # FastMachine._new_mm() of the execs in the loop
            self._exec_mm(num)
        if not self.light:
            self._forked_mms()
        used = mk[:, K_USED].nonzero()[0].tolist()
        lazy = [mm.num for mm in m.mms.values() if type(mm) is LazyMM]
        if lazy:  # made from the rows: nothing for FastMachine._sync() to bring back (it would make them)
            counter = int(m.glob[L.G_ANONVMA])
            for num in lazy:
                m._anon_seen[num] = counter
        if not used:
            return
        bynum = {mm.num: mm for mm in m.mms.values()}
        ms, vm, mv, mvst = m.ms, m.vm, m.mv, m._vst
        for num in used:
            mm = bynum.get(num)
            if mm is None:  # forked in the loop and gone again
                continue
            row = mk[num].tolist()
            mm.vcap, mm.unmerged_lo, mm.unmerged_hi = row[K_VCAP], row[K_ULO], row[K_UHI]
            if mm.anon_birth < 0:  # FastMachine._kvma() notes it at the MM's first verb
                mm.anon_birth = row[K_BIRTH]
            if ms[num, L.MS_ZAPPED] or not ms[num, L.MS_LIVE]:
                continue
            if type(mm) is LazyMM:  # its rows are the truth until its Vma objects are made
                continue
            plo, phi = row[K_PLO], row[K_PHI]
            if plo <= phi:
                off, n = int(ms[num, L.MS_VOFF]), int(ms[num, L.MS_NVMA])
                rows = mv[off:off + n]
                p = int(np.searchsorted(vm[rows, L.V_END], plo, side="left"))
                q = n - int(np.searchsorted(vm[rows, L.V_START], phi, side="right"))
                mvst[kvma.VS_PLO], mvst[kvma.VS_PHI], mvst[kvma.VS_BIRTH] = plo, phi, row[K_BIRTH]
                mvst[kvma.VS_P], mvst[kvma.VS_Q], mvst[kvma.VS_OFF], mvst[kvma.VS_N] = p, q, off, n
                m._materialize(mm)
            if row[K_MERGED]:
                m._sync(mm)
        mk[used, K_USED:K_MERGED + 1] = (0, kvma.NO_LO, -1, 0)  # K_USED, K_PLO, K_PHI, K_MERGED: one write

    def _after_control(self) -> None:
        """After the stretch's bookkeeping: a file created last leaves the machine with no current task
        (Machine.create_file()'s _begin())."""
        if int(self.vst[X_FILESTEP]) == self.m.step:
            self.m.task_name = None
        self.vst[X_FILESTEP] = -1
        born = ((self.tst == T_NEW) & (self.ttg[:, TG_TGID] > 0)).nonzero()[0].tolist()
        for i in born:  # threads made in the loop: their group (the tables made them FastTask(pid, ..., pid))
            task = self.m.tasks.get(self.names[i])
            if task is not None and task.pid == int(self.tpid[i]):
                task.tgid = int(self.ttg[i, TG_TGID])
        if self.vst[X_TASKS]:  # vfork or exec ran: each task's MM, thread group, vfork parent and sleep
            self._after_exec()

    def _after_exec(self) -> None:
        """The tasks as vfork and exec in the loop left them (the table bookkeeping made only the new tasks still
        running, each with its own group and no vfork link): their MM, thread group, vfork parent and sleep; a task
        made in the loop that sleeps in vfork() now is made here (the tasks stay in pid order, as one step at a
        time makes them)."""
        m, names = self.m, self.names
        tasks = m.tasks
        rows = list(enumerate(zip(self.tst.tolist(), self.tmm.tolist(), self.tpid.tolist(),
                                  self.ttg[:, TG_TGID].tolist(), self.ttg[:, TG_VP].tolist(), strict=True)))
        pid0 = int(self.vst[X_PID0])
        made = False
        for i, (state, num, pid, _tg, _vp) in rows:
            if state == T_BLOCKED and pid >= pid0 and names[i] not in tasks:
                tasks[names[i]] = FastTask(pid, names[i], m.mms[f"mm{num}"], pid)
                made = True
        if made:
            ordered = sorted(tasks.items(), key=lambda kv: kv[1].pid)
            tasks.clear()
            tasks.update(ordered)
        for i, (state, num, pid, tg, vp) in rows:
            if state == T_NONE:
                continue
            task = tasks.get(names[i])
            if task is None or task.pid != pid:
                continue
            task.mm = m.mms[f"mm{num}"]
            task.tgid = tg if tg > 0 else pid
            task.vfork_blocked = state == T_BLOCKED
            if vp != -2:
                task.vfork_parent = tasks.get(names[vp]) if vp >= 0 else None
        self.vst[X_TASKS] = 0

    def _exec_mm(self, num: int) -> None:
        """The FastMM of an MM an exec made in the loop, its VMAs made from their rows; known to the table
        bookkeeping that follows (counts, exit, compaction) as the MMs Python knew are."""
        m, mk, ms = self.m, self.mk, self.m.ms
        row = mk[num].tolist()
        mm = FastMM(num, int(ms[num, L.MS_ID]), label=self.names[row[K_EXEC] - 1], anon_birth=row[K_BIRTH])
        mm.pmds = PmdSet(m, mm)
        off, n = int(ms[num, L.MS_VOFF]), int(ms[num, L.MS_NVMA])
        mm.zapped = bool(ms[num, L.MS_ZAPPED])
        if n and not mm.zapped and ms[num, L.MS_LIVE]:  # its Vma objects made when Python first reads them
            mm.__class__ = LazyMM
        else:
            mm.vmas = kvma.materialize(m.vm, m.mv, ms, num, row[K_BIRTH], m.codec) if n else []
            mm.rows = m.mv[off:off + n].tolist()
            mm.rowmap = {id(vma): r for vma, r in zip(mm.vmas, mm.rows, strict=True)}
            mm.published = list(mm.vmas)
        mm.vcap, mm.unmerged_lo, mm.unmerged_hi = row[K_VCAP], row[K_ULO], row[K_UHI]
        mm.unpublished_lo, mm.unpublished_hi = 1 << 62, -1
        m.mms[mm.name] = mm
        self.mobj[num] = mm
        mk[num, K_EXEC] = 0
        mk[num, K_USED] = 0
        mk[num, K_MERGED] = 0
        mk[num, K_PLO] = kvma.NO_LO
        mk[num, K_PHI] = -1

    def grow_vma_arrays(self, pos: int) -> None:
        """The VMA rows and index made big enough for the control steps from ``pos`` on (each may take
        kvma.NEW_ROWS rows and move its MM's index slice), so that the loop does not return to Python for
        FastMachine._compact_vmas() (the arrays' size is not state: the rows and slices in use are copied)."""
        m = self.m
        ahead = len(self.vma_rows) - int(self.vma_rows.searchsorted(pos))
        if not ahead:
            return
        most = max(map(_nvmas, m.mms.values()), default=0) + kvma.NEW_ROWS
        need = m.nvm + kvma.NEW_ROWS * ahead + 64
        if need > m.vm.shape[0]:
            vm = np.zeros((max(2 * m.vm.shape[0], need), L.VM_COLS), dtype=np.int64)
            vm[:m.nvm] = m.vm[:m.nvm]
            m.vm = vm
        need = m.nmv + 2 * kvma.NEW_ROWS * ahead + 8 * most + 64
        if need > m.mv.shape[0]:
            mv = np.zeros(max(2 * m.mv.shape[0], need), dtype=np.int32)
            mv[:m.nmv] = m.mv[:m.nmv]
            m.mv = mv


    def _forked_mms(self) -> None:
        """The MMs forked in the loop and alive, made from their rows (their parents' VMAs may have changed in the
        stretch, before or after the fork), anon_vma_forked from the rows fork copied (``vfk``); known to the table
        bookkeeping that follows as the MMs Python knew are (it makes no others)."""
        m, ms, names, mk = self.m, self.m.ms, self.names, self.mk
        mtask = self._mtask
        created = self._created()
        vm, mv, vfk = m.vm, m.mv, self._vfk
        for num in created:
            mm = FastMM(num, int(ms[num, L.MS_ID]), label=names[int(mtask[num])])
            mm.pmds = PmdSet(m, mm)
            off, n = int(ms[num, L.MS_VOFF]), int(ms[num, L.MS_NVMA])
            rows = mv[off:off + n]
            used = num < mk.shape[0] and bool(mk[num, K_OK])
            if used:  # the anon_birth fork gave it (its VMAs may have changed since)
                birth = int(mk[num, K_BIRTH])
            else:
                forked = vm[rows, L.V_ANONVMA][vfk[rows] != 0]
                birth = int(forked.max()) + 1 if len(forked) else 1
            mm.vmas = m.codec.vmas(vm[rows], birth) if n else []
            mm.rows = rows.tolist()
            mm.rowmap = {id(vma): r for vma, r in zip(mm.vmas, mm.rows, strict=True)}
            mm.published = list(mm.vmas)
            mm.vcap = n
            if used and mk[num, K_USED]:  # control opcodes ran on it (FastMachine._kvma() noted its anon_birth)
                mm.vcap, mm.unmerged_lo, mm.unmerged_hi = (int(x) for x in mk[num, K_VCAP:K_UHI + 1])
                mm.anon_birth = birth
            if used:
                mk[num, K_USED] = mk[num, K_MERGED] = 0
                mk[num, K_PLO] = kvma.NO_LO
                mk[num, K_PHI] = -1
            mm.unpublished_lo, mm.unpublished_hi = 1 << 62, -1
            mm.zapped = bool(ms[num, L.MS_ZAPPED])
            m.mms[mm.name] = mm
            self.mobj[num] = mm
            mtask[num] = -1
