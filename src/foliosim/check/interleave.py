"""CPU interleavings of the owner-tracking updates around the bit spinlock.

Each ``folio_add_return_large_mapcount()`` / ``folio_sub_return_large_mapcount()``
(include/linux/rmap.h, v6.15) is split into the memory accesses the kernel
performs, one scheduling point per access:

* ``bit_spin_lock()``: an atomic test-and-set of the lock bit in ``_mm_ids``
  (enabled only while the bit is clear: a spinning CPU makes no progress);
* ``atomic_read()`` then ``atomic_set()`` of ``_large_mapcount``;
* each ``folio_mm_id()`` read of a half of ``_mm_ids`` (``_mm_id[0]`` holds
  slot 0's id and the lock bit, ``_mm_id[1]`` slot 1's id and the shared bit);
* ``folio_set_mm_id()`` as a plain read-modify-write of that half, the shared
  bit set/clear as a plain read-modify-write of the whole word;
* the per-slot mapcount updates as plain reads and writes;
* ``__bit_spin_unlock()`` as a plain read of the word and a release store of it
  with the lock bit cleared (non-atomic: a concurrent plain write would be lost).

Around them, the folio reference and the page-table entries (ghost state) follow
the kernel's order: a mapping takes its reference first and sets its PTEs after
the rmap update; an unmap clears its PTEs first and drops the reference after
(at TLB flush). Lock-free readers run ``folio_maybe_mapped_shared()`` (read the
large mapcount, then the shared bit) or the CoW reuse test of
``__wp_can_reuse_large_anon_folio()`` (mm/memory.c: lock-free pre-checks, then
the re-check under the bit lock).

Every interleaving is explored (states are deduplicated); with the lock, each
final state must equal the result of some sequential order of the same updates,
computed by :mod:`foliosim.owner` (or the owner implementation under test).
Without the lock (``lock=False``) the lost update is found and reported with
its schedule. Per-page ``_mapcount`` and ``_nr_pages_mapped`` are separate
atomics outside the lock and are not part of this model.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from foliosim.cint import S32
from foliosim.folio import Folio
from foliosim.kconfig import KernelConfig
from foliosim.owner import KERNEL_OWNER, OwnerTracking
from foliosim.rmap import PMD, PTE
from foliosim.system import Op, RmapSystem

# Shared memory locations.
LM, C0, C1, H0, H1, REF = range(6)
NMEM = 6
LOC_NAMES = ("_large_mapcount", "_mm_id_mapcount[0]", "_mm_id_mapcount[1]", "_mm_id[0]", "_mm_id[1]", "_refcount")
# Registers of a simulated CPU.
RA, RNV, RW, RC, RRES, RFLAG = range(6)
NREG = 6

# Instruction kinds. Shared ones are scheduling points; local ones run eagerly.
LOCK, UNLOCK_R, UNLOCK_W, READ, WRITE, READW, WRITEW, GHOST = range(8)
LOCAL, BRANCH, JUMP, DONE = range(8, 12)
SHARED_KINDS = frozenset((LOCK, UNLOCK_R, UNLOCK_W, READ, WRITE, READW, WRITEW, GHOST))

Regs = tuple[int, ...]
Mem = tuple[int, ...]
RegFn = Callable[[Regs], int]
GhostFn = Callable[[Mem, Regs], tuple[Mem, Regs]]


@dataclass(frozen=True, slots=True)
class Instr:
    """One micro-step: ``kind``, a location or register ``a``, a function, a jump target and a label."""

    kind: int
    a: int = 0
    fn: Callable[..., Any] | None = None
    target: str = ""
    text: str = ""


# Flags a reader leaves in RFLAG (bits).
F_STARTED = 1  # the reader has made its first read
F_SEEN_MULTI = 2  # at some instant of its read window >= 2 MMs had PTEs mapping the folio
F_SEEN_SINGLE = 4  # at some instant of its read window <= 1 MM had PTEs mapping the folio
F_WARN_REF = 8  # CoW: VM_WARN large mapcount > refcount would fire
F_WARN_SLOT = 16  # CoW: VM_WARN the faulting MM holds no slot would fire
F_UNSAFE = 32  # CoW: decided to reuse while another MM holds references to the folio
F_DECIDED = 64


def _prog(items: list[tuple[str, Instr] | Instr]) -> tuple[Instr, ...]:
    """Resolve labels: items are instructions or (label, instruction) pairs."""
    labels: dict[str, int] = {}
    flat: list[Instr] = []
    for item in items:
        if isinstance(item, tuple):
            labels[item[0]] = len(flat)
            flat.append(item[1])
        else:
            flat.append(item)
    out = []
    for ins in flat:
        if ins.kind in (BRANCH, JUMP):
            out.append(Instr(ins.kind, labels[ins.target], ins.fn, ins.target, ins.text))
        else:
            out.append(ins)
    return tuple(out)


def _setreg(regs: Regs, idx: int, value: int) -> Regs:
    return (*regs[:idx], value, *regs[idx + 1:])


@dataclass(frozen=True, slots=True)
class Layout:
    """Bit layout of ``_mm_ids`` split into halves (from KernelConfig) and the ghost indices."""

    kc: KernelConfig
    nmms: int  # ghost PTE/reference columns, one per MM of the scenario

    @property
    def half(self) -> int:
        return self.kc.slot_shift

    @property
    def id_mask(self) -> int:
        return self.kc.mm_id_mask

    @property
    def flag(self) -> int:
        """The top bit of a half: the lock bit in _mm_id[0], the shared bit in _mm_id[1]."""
        return 1 << self.kc.mm_id_bits

    def maps_at(self, mm: int) -> int:
        return NMEM + mm

    def access_at(self, mm: int) -> int:
        return NMEM + self.nmms + mm


def add_program(lay: Layout, mm_index: int, mm_id: int, diff: int) -> tuple[Instr, ...]:
    """``folio_add_return_large_mapcount()`` for ``mm_id``, with the reference and PTE ghosts around it."""
    kc = lay.kc
    ct = kc.mm_id_mapcount_type
    mask, flag, half = lay.id_mask, lay.flag, lay.half
    maps, acc = lay.maps_at(mm_index), lay.access_at(mm_index)

    def take_ref(mem: Mem, regs: Regs) -> tuple[Mem, Regs]:
        m = list(mem)
        m[REF] += diff
        m[acc] += diff
        return tuple(m), regs

    def set_ptes(mem: Mem, regs: Regs) -> tuple[Mem, Regs]:
        m = list(mem)
        m[maps] += diff
        return tuple(m), regs

    prog: list[tuple[str, Instr] | Instr] = [
        Instr(GHOST, fn=take_ref, text=f"folio_ref_add(+{diff})"),
        Instr(LOCK, text="bit_spin_lock"),
        Instr(READ, LM, text="atomic_read(_large_mapcount)"),
        Instr(LOCAL, RNV, lambda r: S32.wrap(r[RA] + diff)),
        Instr(WRITE, LM, lambda r: r[RNV], text="atomic_set(_large_mapcount)"),
        Instr(READ, H0, text="folio_mm_id(0)"),
        Instr(BRANCH, fn=lambda r: r[RW] & mask == mm_id, target="S0"),
        Instr(READ, H1, text="folio_mm_id(1)"),
        Instr(BRANCH, fn=lambda r: r[RW] & mask == mm_id, target="S1"),
        Instr(READ, H0, text="folio_mm_id(0)"),
        Instr(BRANCH, fn=lambda r: r[RW] & mask == 0, target="T0"),
        Instr(READ, H1, text="folio_mm_id(1)"),
        Instr(BRANCH, fn=lambda r: r[RW] & mask == 0, target="T1"),
        Instr(JUMP, target="UNLOCK"),
    ]
    for idx, cloc, hloc in ((0, C0, H0), (1, C1, H1)):
        prog += [
            (f"S{idx}", Instr(READ, cloc, text=f"read _mm_id_mapcount[{idx}]")),
            Instr(WRITE, cloc, lambda r: ct.wrap(r[RC] + diff), text=f"write _mm_id_mapcount[{idx}]"),
        ]
        if not kc.is_64bit:
            prog += [
                Instr(READ, cloc, text=f"read _mm_id_mapcount[{idx}] (overflow check)"),
                Instr(BRANCH, fn=lambda r: r[RC] >= 0, target="UNLOCK"),
                Instr(WRITE, cloc, lambda r: -1, text=f"write _mm_id_mapcount[{idx}] = -1"),
                Instr(READ, hloc, text=f"folio_set_mm_id({idx}): read"),
                Instr(WRITE, hloc, lambda r: r[RW] & ~mask, text=f"folio_set_mm_id({idx}, DUMMY): write"),
                Instr(READW, text="read _mm_ids"),
                Instr(WRITEW, fn=lambda r: r[RW] | (flag << half), text="write _mm_ids | SHARED"),
            ]
        prog.append(Instr(JUMP, target="UNLOCK"))
    prog += [
        ("T0", Instr(READ, H0, text="folio_set_mm_id(0): read")),
        Instr(WRITE, H0, lambda r: (r[RW] & ~mask) | mm_id, text="folio_set_mm_id(0): write"),
        Instr(WRITE, C0, lambda r: diff - 1, text="write _mm_id_mapcount[0]"),
        Instr(BRANCH, fn=lambda r: r[RNV] == diff - 1, target="UNLOCK"),
        Instr(READW, text="read _mm_ids"),
        Instr(WRITEW, fn=lambda r: r[RW] | (flag << half), text="write _mm_ids | SHARED"),
        Instr(JUMP, target="UNLOCK"),
        ("T1", Instr(READ, H1, text="folio_set_mm_id(1): read")),
        Instr(WRITE, H1, lambda r: (r[RW] & ~mask) | mm_id, text="folio_set_mm_id(1): write"),
        Instr(WRITE, C1, lambda r: diff - 1, text="write _mm_id_mapcount[1]"),
        Instr(READW, text="read _mm_ids"),
        Instr(WRITEW, fn=lambda r: r[RW] | (flag << half), text="write _mm_ids | SHARED"),
        ("UNLOCK", Instr(UNLOCK_R, text="__bit_spin_unlock: read _mm_ids")),
        Instr(UNLOCK_W, text="__bit_spin_unlock: release store"),
        Instr(GHOST, fn=set_ptes, text="set_ptes"),
        Instr(LOCAL, RRES, lambda r: r[RNV] + 1),
        Instr(DONE),
    ]
    return _prog(prog)


def sub_program(lay: Layout, mm_index: int, mm_id: int, diff: int) -> tuple[Instr, ...]:
    """``folio_sub_return_large_mapcount()`` for ``mm_id``, with the PTE and reference ghosts around it."""
    kc = lay.kc
    ct = kc.mm_id_mapcount_type
    mask, flag, half = lay.id_mask, lay.flag, lay.half
    maps, acc = lay.maps_at(mm_index), lay.access_at(mm_index)

    def clear_ptes(mem: Mem, regs: Regs) -> tuple[Mem, Regs]:
        m = list(mem)
        m[maps] -= diff
        return tuple(m), regs

    def put_ref(mem: Mem, regs: Regs) -> tuple[Mem, Regs]:
        m = list(mem)
        m[REF] -= diff
        m[acc] -= diff
        return tuple(m), regs

    prog: list[tuple[str, Instr] | Instr] = [
        Instr(GHOST, fn=clear_ptes, text="ptep_get_and_clear"),
        Instr(LOCK, text="bit_spin_lock"),
        Instr(READ, LM, text="atomic_read(_large_mapcount)"),
        Instr(LOCAL, RNV, lambda r: S32.wrap(r[RA] - diff)),
        Instr(WRITE, LM, lambda r: r[RNV], text="atomic_set(_large_mapcount)"),
        Instr(READ, H0, text="folio_mm_id(0)"),
        Instr(BRANCH, fn=lambda r: r[RW] & mask == mm_id, target="S0"),
        Instr(READ, H1, text="folio_mm_id(1)"),
        Instr(BRANCH, fn=lambda r: r[RW] & mask == mm_id, target="S1"),
        Instr(JUMP, target="CHECK"),
    ]
    for idx, cloc, hloc in ((0, C0, H0), (1, C1, H1)):
        prog += [
            (f"S{idx}", Instr(READ, cloc, text=f"read _mm_id_mapcount[{idx}]")),
            Instr(WRITE, cloc, lambda r: ct.wrap(r[RC] - diff), text=f"write _mm_id_mapcount[{idx}]"),
            Instr(READ, cloc, text=f"read _mm_id_mapcount[{idx}]"),
            Instr(BRANCH, fn=lambda r: r[RC] >= 0, target="OUT"),
            Instr(WRITE, cloc, lambda r: -1, text=f"write _mm_id_mapcount[{idx}] = -1"),
            Instr(READ, hloc, text=f"folio_set_mm_id({idx}): read"),
            Instr(WRITE, hloc, lambda r: r[RW] & ~mask, text=f"folio_set_mm_id({idx}, DUMMY): write"),
            Instr(JUMP, target="CHECK"),
        ]
    prog += [
        ("CHECK", Instr(READ, C0, text="read _mm_id_mapcount[0]")),
        Instr(BRANCH, fn=lambda r: r[RC] == r[RNV], target="CLEAR"),
        Instr(READ, C1, text="read _mm_id_mapcount[1]"),
        Instr(BRANCH, fn=lambda r: r[RC] == r[RNV], target="CLEAR"),
        Instr(JUMP, target="OUT"),
        ("CLEAR", Instr(READW, text="read _mm_ids")),
        Instr(WRITEW, fn=lambda r: r[RW] & ~(flag << half), text="write _mm_ids & ~SHARED"),
        ("OUT", Instr(UNLOCK_R, text="__bit_spin_unlock: read _mm_ids")),
        Instr(UNLOCK_W, text="__bit_spin_unlock: release store"),
        Instr(GHOST, fn=put_ref, text="TLB flush + folio_put_refs"),
        Instr(LOCAL, RRES, lambda r: r[RNV] + 1),
        Instr(DONE),
    ]
    return _prog(prog)


def _mapping_mms(lay: Layout, mem: Mem) -> int:
    return sum(1 for i in range(lay.nmms) if mem[NMEM + i] > 0)


def maybe_shared_program(lay: Layout) -> tuple[Instr, ...]:
    """A lock-free ``folio_maybe_mapped_shared()`` of a large folio: mapcount, then the shared bit."""
    flag = lay.flag
    return _prog([
        Instr(READ, LM, text="folio_mapcount()"),
        Instr(LOCAL, RRES, lambda r: 0),
        Instr(BRANCH, fn=lambda r: r[RA] + 1 <= 1, target="END"),
        Instr(READ, H1, text="test_bit(SHARED)"),
        Instr(LOCAL, RRES, lambda r: 1 if r[RW] & flag else 0),
        ("END", Instr(DONE)),
    ])


def cow_program(lay: Layout, mm_index: int, mm_id: int, recheck: bool = True) -> tuple[Instr, ...]:
    """``__wp_can_reuse_large_anon_folio()`` for the faulting MM ``mm_id`` (no swapcache).

    With ``recheck`` False only the lock-free pre-checks decide (what the
    kernel would do without the locked re-check), to show why it is needed.
    """
    mask, flag = lay.id_mask, lay.flag

    def warn_ref(mem: Mem, regs: Regs) -> tuple[Mem, Regs]:
        if regs[RA] + 1 > regs[RC]:
            regs = _setreg(regs, RFLAG, regs[RFLAG] | F_WARN_REF)
        return mem, regs

    def decide(mem: Mem, regs: Regs) -> tuple[Mem, Regs]:
        others = sum(mem[lay.access_at(i)] for i in range(lay.nmms) if i != mm_index)
        fl = regs[RFLAG] | F_DECIDED | (F_UNSAFE if others else 0)
        return mem, _setreg(_setreg(regs, RFLAG, fl), RRES, 1)

    def slot_check(mem: Mem, regs: Regs) -> tuple[Mem, Regs]:
        if mem[H0] & mask != mm_id and mem[H1] & mask != mm_id:
            regs = _setreg(regs, RFLAG, regs[RFLAG] | F_WARN_SLOT)
        return mem, regs

    prog: list[tuple[str, Instr] | Instr] = [
        Instr(READ, LM, text="folio_large_mapcount() <= 1?"),
        Instr(BRANCH, fn=lambda r: r[RA] + 1 <= 1, target="NO"),
        Instr(READ, H1, text="test_bit(SHARED)"),
        Instr(BRANCH, fn=lambda r: bool(r[RW] & flag), target="NO"),
        Instr(READ, LM, text="folio_large_mapcount()"),
        Instr(READ, REF, text="folio_ref_count()"),
        Instr(BRANCH, fn=lambda r: r[RA] + 1 != r[RC], target="NO"),
    ]
    if not recheck:
        prog += [Instr(GHOST, fn=decide, text="decide: reuse"), Instr(JUMP, target="END")]
    else:
        prog += [
            Instr(LOCK, text="bit_spin_lock"),
            Instr(READ, LM, text="folio_large_mapcount()"),
            Instr(READ, REF, text="folio_ref_count()"),
            Instr(GHOST, fn=warn_ref, text="VM_WARN mapcount > refcount"),
            Instr(READ, H1, text="test_bit(SHARED)"),
            Instr(BRANCH, fn=lambda r: bool(r[RW] & flag), target="UNLOCK"),
            Instr(READ, LM, text="folio_large_mapcount()"),
            Instr(READ, REF, text="folio_ref_count()"),
            Instr(BRANCH, fn=lambda r: r[RA] + 1 != r[RC], target="UNLOCK"),
            Instr(GHOST, fn=slot_check, text="VM_WARN faulting MM holds no slot"),
            Instr(GHOST, fn=decide, text="decide: reuse"),
            ("UNLOCK", Instr(UNLOCK_R, text="__bit_spin_unlock: read _mm_ids")),
            Instr(UNLOCK_W, text="__bit_spin_unlock: release store"),
            Instr(JUMP, target="END"),
        ]
    prog += [("NO", Instr(LOCAL, RRES, lambda r: 0)), ("END", Instr(DONE))]
    return _prog(prog)


# --- the scheduler ------------------------------------------------------------------

Cpu = tuple[int, Regs]  # (pc, registers)
World = tuple[Mem, tuple[Cpu, ...]]


@dataclass(slots=True)
class Machine:
    """The CPUs' programs, the memory layout and whether the bit lock exists."""

    lay: Layout
    programs: tuple[tuple[Instr, ...], ...]
    readers: frozenset[int]  # CPU indexes that are lock-free readers (window tracking)
    lock: bool = True

    def settle(self, cpu_idx: int, pc: int, regs: Regs) -> Cpu:
        """Run local instructions (and the lock/unlock when there is no lock) up to the next step."""
        prog = self.programs[cpu_idx]
        while True:
            ins = prog[pc]
            kind = ins.kind
            if kind == LOCAL:
                assert ins.fn is not None
                regs = _setreg(regs, ins.a, ins.fn(regs))
                pc += 1
            elif kind == BRANCH:
                assert ins.fn is not None
                pc = ins.a if ins.fn(regs) else pc + 1
            elif kind == JUMP:
                pc = ins.a
            elif not self.lock and kind in (LOCK, UNLOCK_R, UNLOCK_W):
                pc += 1
            else:
                return pc, regs

    def enabled(self, world: World, cpu_idx: int) -> bool:
        mem, cpus = world
        pc, _regs = cpus[cpu_idx]
        ins = self.programs[cpu_idx][pc]
        if ins.kind == DONE:
            return False
        return not (ins.kind == LOCK and mem[H0] & self.lay.flag)

    def step(self, world: World, cpu_idx: int) -> World:
        """Execute CPU ``cpu_idx``'s next memory access."""
        mem, cpus = world
        pc, regs = cpus[cpu_idx]
        ins = self.programs[cpu_idx][pc]
        kind = ins.kind
        lay = self.lay
        if kind == LOCK:
            mem = _setreg(mem, H0, mem[H0] | lay.flag)
        elif kind == READ:
            reg = {LM: RA, REF: RC, C0: RC, C1: RC, H0: RW, H1: RW}[ins.a]
            regs = _setreg(regs, reg, mem[ins.a])
        elif kind == WRITE:
            assert ins.fn is not None
            mem = _setreg(mem, ins.a, ins.fn(regs))
        elif kind in (READW, UNLOCK_R):
            regs = _setreg(regs, RW, mem[H0] | (mem[H1] << lay.half))
        elif kind in (WRITEW, UNLOCK_W):
            word = ins.fn(regs) if kind == WRITEW and ins.fn is not None else regs[RW] & ~lay.flag
            low = (1 << lay.half) - 1
            mem = (*mem[:H0], word & low, word >> lay.half & low, *mem[H1 + 1:])
        elif kind == GHOST:
            assert ins.fn is not None
            mem, regs = ins.fn(mem, regs)
        if cpu_idx in self.readers and kind in (READ, READW) and not regs[RFLAG] & F_STARTED:
            regs = _setreg(regs, RFLAG, regs[RFLAG] | F_STARTED)
        new_cpus = list(cpus)
        new_cpus[cpu_idx] = self.settle(cpu_idx, pc + 1, regs)
        # Readers in their read window (first read to last read) see the new instant.
        multi = _mapping_mms(lay, mem) >= 2
        for r in self.readers:
            rpc, rregs = new_cpus[r]
            fl = rregs[RFLAG]
            if fl & F_STARTED and (r == cpu_idx or self.programs[r][rpc].kind != DONE):
                seen = fl | (F_SEEN_MULTI if multi else F_SEEN_SINGLE)
                if seen != fl:
                    new_cpus[r] = (rpc, _setreg(rregs, RFLAG, seen))
        return mem, tuple(new_cpus)

    def describe(self, world: World, cpu_idx: int) -> str:
        pc = world[1][cpu_idx][0]
        ins = self.programs[cpu_idx][pc]
        return ins.text or f"pc {pc}"


# --- scenarios ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """What one CPU does: an add or sub for one MM, or a lock-free reader."""

    kind: str  # "add", "sub", "maybe_shared", "cow", "cow_precheck"
    mm: str = ""
    mm_id: int = 0
    diff: int = 1
    op: Op | None = None  # the rmap operation it stands for (writers)

    def label(self) -> str:
        if self.kind in ("add", "sub"):
            return f"{self.kind} {self.diff} for {self.mm} (id {self.mm_id})"
        if self.kind == "maybe_shared":
            return "folio_maybe_mapped_shared()"
        return f"CoW reuse test for {self.mm} (id {self.mm_id})" + (" without the locked re-check"
                                                                     if self.kind == "cow_precheck" else "")


@dataclass(slots=True)
class Scenario:
    """A start state (a replayable set-up trace and its system) and one action per CPU."""

    setup: list[Op]
    system: RmapSystem
    folio: str
    actions: tuple[Action, ...]


@dataclass(slots=True)
class Finding:
    """A notable interleaving: what happened, and the schedule that makes it happen."""

    kind: str
    message: str
    scenario: Scenario
    schedule: list[tuple[int, str]]  # (cpu, micro-step)

    def lines(self) -> list[str]:
        """The finding as an rmap trace (set-up, then the CPUs' operations) with the schedule as comments."""
        out = [f"# {self.kind}: {self.message}"]
        for i, act in enumerate(self.scenario.actions):
            out.append(f"# CPU{i}: {act.label()}")
        out.append("# schedule (one memory access per line):")
        out += [f"#   CPU{cpu}: {text}" for cpu, text in self.schedule]
        out += [json.dumps(op.to_json(), separators=(",", ":")) for op in self.scenario.setup]
        for i, act in enumerate(self.scenario.actions):
            if act.op is not None:
                out.append(json.dumps({**act.op.to_json(), "_cpu": i}, separators=(",", ":")))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message,
                "cpus": [a.label() for a in self.scenario.actions],
                "schedule": [{"cpu": c, "step": t} for c, t in self.schedule],
                "trace": [op.to_json() for op in self.scenario.setup]
                + [{**a.op.to_json(), "_cpu": i} for i, a in enumerate(self.scenario.actions) if a.op]}


@dataclass(slots=True)
class InterleaveResult:
    """Totals over all scenarios, and one example per kind of finding."""

    lock: bool
    scenarios: int = 0
    states: int = 0
    finals: int = 0
    elapsed: float = 0.0
    non_sequential: int = 0  # final states no sequential order produces
    observations: dict[str, int] = field(default_factory=dict)
    examples: dict[str, Finding] = field(default_factory=dict)
    budget_hit: str | None = None  # why the run stopped before every scenario was explored

    def note(self, finding: Finding) -> None:
        self.observations[finding.kind] = self.observations.get(finding.kind, 0) + 1
        self.examples.setdefault(finding.kind, finding)

    def to_json(self) -> dict[str, Any]:
        return {"lock": self.lock, "scenarios": self.scenarios, "states": self.states, "finals": self.finals,
                "elapsed_s": round(self.elapsed, 3), "budget_hit": self.budget_hit,
                "non_sequential": self.non_sequential,
                "observations": self.observations,
                "examples": {k: f.to_json() for k, f in self.examples.items()}}


def _mem_of(folio: Folio, lay: Layout, maps: list[int], access: list[int], refs: int) -> Mem:
    half_mask = (1 << lay.half) - 1
    return (folio.large_mapcount, folio.mm_id_mapcount[0], folio.mm_id_mapcount[1],
            folio.mm_ids & half_mask, (folio.mm_ids >> lay.half) & half_mask, refs, *maps, *access)


def folio_from_mem(base: Folio, lay: Layout, mem: Mem) -> Folio:
    """A copy of ``base`` with the owner-tracking fields taken from ``mem``."""
    folio = base.copy()
    folio.large_mapcount = mem[LM]
    folio.mm_id_mapcount = [mem[C0], mem[C1]]
    folio.mm_ids = mem[H0] | (mem[H1] << lay.half)
    return folio


def build_machine(scn: Scenario, lock: bool = True) -> tuple[Machine, World, list[str]]:
    """The machine and initial world for a scenario; also the MM names of the ghost columns."""
    kc = scn.system.config
    handle = scn.system.folios[scn.folio]
    names = sorted(set(map(str, handle.truth.total)) | {a.mm for a in scn.actions if a.mm})
    lay = Layout(kc, len(names))
    col = {n: i for i, n in enumerate(names)}
    progs: list[tuple[Instr, ...]] = []
    readers: set[int] = set()
    for i, act in enumerate(scn.actions):
        if act.kind == "add":
            progs.append(add_program(lay, col[act.mm], act.mm_id, act.diff))
        elif act.kind == "sub":
            progs.append(sub_program(lay, col[act.mm], act.mm_id, act.diff))
        elif act.kind == "maybe_shared":
            progs.append(maybe_shared_program(lay))
            readers.add(i)
        elif act.kind in ("cow", "cow_precheck"):
            progs.append(cow_program(lay, col[act.mm], act.mm_id, recheck=act.kind == "cow"))
            readers.add(i)
        else:
            raise ValueError(f"unknown action {act.kind!r}")
    entries = [handle.truth.entries(n) for n in names]
    mem = _mem_of(handle.folio, lay, entries, list(entries), sum(entries))
    machine = Machine(lay, tuple(progs), frozenset(readers), lock)
    cpus = tuple(machine.settle(i, 0, (0,) * NREG) for i in range(len(progs)))
    return machine, (mem, cpus), names


def sequential_outcomes(scn: Scenario, owner: OwnerTracking = KERNEL_OWNER) -> set[tuple[int, ...]]:
    """(large mapcount, slot counts, _mm_ids, writers' returns) for every order of the writers' updates."""
    handle = scn.system.folios[scn.folio]
    writers = [(i, a) for i, a in enumerate(scn.actions) if a.kind in ("add", "sub")]
    outs: set[tuple[int, ...]] = set()
    for order in itertools.permutations(writers):
        folio = handle.folio.copy()
        ret = [0] * len(scn.actions)
        for i, act in order:
            fn = owner.add if act.kind == "add" else owner.sub
            ret[i] = fn(folio, act.diff, act.mm_id)[0]
        outs.add((folio.large_mapcount, *folio.mm_id_mapcount, folio.mm_ids,
                  *(ret[i] for i, _a in writers)))
    return outs


def explore_scenario(scn: Scenario, result: InterleaveResult, lock: bool = True,
                     owner: OwnerTracking = KERNEL_OWNER) -> None:
    """Every interleaving of one scenario; findings are added to ``result``."""
    machine, init, _names = build_machine(scn, lock)
    lay = machine.lay
    seq = sequential_outcomes(scn, owner)
    writers = [i for i, a in enumerate(scn.actions) if a.kind in ("add", "sub")]
    parent: dict[World, tuple[World, int] | None] = {init: None}
    stack = [init]
    ncpu = len(scn.actions)
    finals: list[World] = []
    while stack:
        world = stack.pop()
        moved = False
        for c in range(ncpu):
            if not machine.enabled(world, c):
                continue
            moved = True
            nxt = machine.step(world, c)
            if nxt not in parent:
                parent[nxt] = (world, c)
                stack.append(nxt)
        if not moved:
            finals.append(world)
    result.scenarios += 1
    result.states += len(parent)
    result.finals += len(finals)

    def schedule(world: World) -> list[tuple[int, str]]:
        steps: list[tuple[int, str]] = []
        cur = world
        while (link := parent[cur]) is not None:
            prev, c = link
            steps.append((c, machine.describe(prev, c)))
            cur = prev
        steps.reverse()
        return steps

    for world in finals:
        mem, cpus = world
        if any(machine.programs[i][pc].kind != DONE for i, (pc, _r) in enumerate(cpus)):
            result.note(Finding("deadlock", "some CPU can never finish", scn, schedule(world)))
            continue
        word = mem[H0] | (mem[H1] << lay.half)
        outcome = (mem[LM], mem[C0], mem[C1], word, *(cpus[i][1][RRES] for i in writers))
        if outcome not in seq:
            result.non_sequential += 1
            result.note(Finding(
                "lost-update" if not lock else "non-sequential",
                f"final _large_mapcount {mem[LM] + 1}, slots ({mem[H0] & lay.id_mask}: {mem[C0] + 1}, "
                f"{mem[H1] & lay.id_mask}: {mem[C1] + 1}), _mm_ids {word:#x}, returns "
                f"{[cpus[i][1][RRES] for i in writers]}: no sequential order of the updates gives this",
                scn, schedule(world)))
        for i in machine.readers:
            _findings_of_reader(scn, machine, world, i, result, schedule)


def _findings_of_reader(scn: Scenario, machine: Machine, world: World, i: int, result: InterleaveResult,
                        schedule: Callable[[World], list[tuple[int, str]]]) -> None:
    act = scn.actions[i]
    regs = world[1][i][1]
    fl, res = regs[RFLAG], regs[RRES]
    if act.kind == "maybe_shared":
        if res == 0 and not fl & F_SEEN_SINGLE and fl & F_SEEN_MULTI:
            result.note(Finding("reader-false-negative",
                                "folio_maybe_mapped_shared() said exclusive while >= 2 MMs had PTEs mapping "
                                "the folio at every instant of its reads", scn, schedule(world)))
        elif res == 0 and fl & F_SEEN_MULTI:
            result.note(Finding("reader-stale-exclusive",
                                "folio_maybe_mapped_shared() said exclusive; true at some instant of its "
                                "reads, not at others", scn, schedule(world)))
        elif res == 1 and not fl & F_SEEN_MULTI:
            result.note(Finding("reader-false-positive",
                                "folio_maybe_mapped_shared() said maybe shared while at most one MM had PTEs "
                                "mapping the folio throughout its reads", scn, schedule(world)))
        else:
            result.observations["reader-exact"] = result.observations.get("reader-exact", 0) + 1
        return
    if fl & F_WARN_REF:
        result.note(Finding("cow-warn-refcount", "the CoW path's VM_WARN (mapcount > refcount) would fire",
                            scn, schedule(world)))
    if fl & F_WARN_SLOT:
        result.note(Finding("cow-warn-slot", "the CoW path's VM_WARN (faulting MM holds no slot) would fire",
                            scn, schedule(world)))
    if fl & F_UNSAFE:
        result.note(Finding("cow-unsafe-reuse" if act.kind == "cow" else "cow-precheck-unsafe-reuse",
                            f"{act.mm} decided to reuse the folio while another MM held references to it "
                            "(mapped, being mapped, or not yet TLB-flushed)", scn, schedule(world)))
    elif fl & F_DECIDED:
        result.observations[f"{act.kind}-reuse-safe"] = result.observations.get(f"{act.kind}-reuse-safe", 0) + 1
    else:
        result.observations[f"{act.kind}-copy"] = result.observations.get(f"{act.kind}-copy", 0) + 1


def writer_actions(system: RmapSystem, folio_name: str, mm: str, diffs: tuple[int, ...]) -> Iterator[Action]:
    """The add/sub actions ``mm`` can validly perform on the folio (with the rmap op each stands for)."""
    handle = system.folios[folio_name]
    truth = handle.truth
    nr_pages = handle.folio.nr_pages
    mm_id = system.mms[mm].mm_id
    for d in diffs:
        if d <= nr_pages:
            yield Action("add", mm, mm_id, d, Op("map", mm=mm, folio=folio_name, level=PTE, page=0, nr=d))
        for page in range(nr_pages - d + 1):
            if truth.mm_maps_ptes(mm, page, d):
                yield Action("sub", mm, mm_id, d, Op("unmap", mm=mm, folio=folio_name, level=PTE, page=page, nr=d))
                break
        else:
            if d == 1 and truth.mm_maps_pmd(mm):
                yield Action("sub", mm, mm_id, 1, Op("unmap", mm=mm, folio=folio_name, level=PMD))


def scenarios(kc: KernelConfig, mms: int = 3, order: int = 1, depth: int = 3, writers: int = 2,
              reader: str | None = None, diffs: tuple[int, ...] = (1,),
              on_start: Callable[[int, int], None] | None = None,
              on_listing: Callable[[dict[str, Any]], None] | None = None,
              listing_seconds: float | None = None, listing_bytes: int | None = None,
              listing_cut: list[str] | None = None) -> Iterator[Scenario]:
    """Start states: every canonical state the sequential explorer reaches within ``depth``
    (PTE map/unmap and map_new_anon); on each, every choice of ``writers`` distinct MMs with a
    valid add or sub each, plus an optional lock-free ``reader`` CPU. ``on_start(i, n)`` is
    called before the scenarios of start state ``i`` of ``n``; ``on_listing`` is the
    sequential search's progress callback while it lists the start states, which
    ``listing_seconds`` / ``listing_bytes`` bound (a cut listing yields the start states
    found, and appends why to ``listing_cut``)."""
    from foliosim.check.explore import explore, trace_to
    from foliosim.check.state import FOLIO, CheckConfig

    cfg = CheckConfig(kc, mms, order, depth, levels=(PTE,), ops=("map_new_anon", "map", "unmap"))
    seq = explore(cfg, keep_states=True, progress=on_listing, max_seconds=listing_seconds, max_bytes=listing_bytes)
    if seq.budget_hit is not None and listing_cut is not None:
        listing_cut.append(seq.budget_hit)
    assert seq.visited is not None
    for index, key in enumerate(seq.visited):
        if on_start is not None:
            on_start(index, len(seq.visited))
        ops, system = trace_to(cfg, KERNEL_OWNER, seq.visited, key)
        live = sorted(system.mms)
        for group in itertools.combinations(live, writers):
            choices = [list(writer_actions(system, FOLIO, mm, diffs)) for mm in group]
            for acts in itertools.product(*choices):
                extra: list[Action] = []
                if reader == "maybe_shared":
                    extra.append(Action("maybe_shared"))
                elif reader in ("cow", "cow_precheck"):
                    truth = system.folios[FOLIO].truth
                    others = [m for m in live if m not in group and truth.entries(m)]
                    if not others:
                        continue
                    cow_mm = others[0]
                    # An anon folio only gains a mapping in another MM from an existing one
                    # (fork of a mapping parent, whose mapping is stable under its mmap lock;
                    # swap-in or migration of an entry it already holds). The faulting MM
                    # cannot be forked meanwhile, so every add needs such a parent.
                    subbing = {a.mm for a in acts if a.kind == "sub"}
                    parents = [m for m in live if m != cow_mm and truth.entries(m) and m not in subbing]
                    if any(a.kind == "add" for a in acts) and not parents:
                        continue
                    extra.append(Action(reader, cow_mm, system.mms[cow_mm].mm_id))
                elif reader is not None:
                    raise ValueError(f"unknown reader {reader!r} (maybe_shared, cow, cow_precheck)")
                yield Scenario(ops, system, FOLIO, tuple(acts) + tuple(extra))


def check_interleavings(kc: KernelConfig, mms: int = 3, order: int = 1, depth: int = 3, writers: int = 2,
                        reader: str | None = None, lock: bool = True, diffs: tuple[int, ...] = (1,),
                        owner: OwnerTracking = KERNEL_OWNER, max_scenarios: int | None = None,
                        stop_at: str | Iterable[str] | None = None, max_seconds: float | None = None,
                        max_states: int | None = None,
                        progress: Callable[[dict[str, Any]], None] | None = None,
                        max_bytes: int | None = None) -> InterleaveResult:
    """Explore every interleaving of every scenario.

    ``stop_at`` ends at the first finding of that kind (or of any of those kinds);
    ``max_seconds`` / ``max_states`` (interleaving states) end the run after the
    scenario that passes them, and ``budget_hit`` says so; ``max_seconds`` and
    ``max_bytes`` also bound the sequential search that lists the start states.
    ``progress`` gets the totals after every scenario (the caller throttles).
    """
    import time

    kinds = {stop_at} if isinstance(stop_at, str) else set(stop_at or ())
    result = InterleaveResult(lock)
    start = time.perf_counter()
    where = [0, 0]

    def on_start(i: int, n: int) -> None:
        where[0], where[1] = i + 1, n

    def on_listing(info: dict[str, Any]) -> None:
        if progress is not None:
            progress({"listing": info["states"], "elapsed": time.perf_counter() - start})

    cut: list[str] = []
    for scn in scenarios(kc, mms, order, depth, writers, reader, diffs, on_start, on_listing, max_seconds,
                         max_bytes, cut):
        if cut and result.budget_hit is None:
            result.budget_hit = f"listing the start states: {cut[0]} (only the start states found were used)"
        explore_scenario(scn, result, lock, owner)
        elapsed = time.perf_counter() - start
        if progress is not None:
            progress({"scenarios": result.scenarios, "states": result.states, "start": where[0],
                      "starts": where[1], "elapsed": elapsed})
        if kinds & set(result.examples):
            result.budget_hit = f"stopped at the first {', '.join(sorted(kinds & set(result.examples)))}"
            break
        if max_scenarios is not None and result.scenarios >= max_scenarios:
            break
        if max_seconds is not None and elapsed > max_seconds:
            result.budget_hit = (f"time budget of {max_seconds:g}s reached after {result.scenarios} scenarios "
                                 f"(start state {where[0]} of {where[1]}"
                                 + (f"; the listing of start states was cut: {cut[0]})" if cut else ")"))
            break
        if max_states is not None and result.states > max_states:
            result.budget_hit = (f"state budget of {max_states} reached after {result.scenarios} scenarios "
                                 f"(start state {where[0]} of {where[1]})")
            break
    result.elapsed = time.perf_counter() - start
    return result


def run_sequentially(scn: Scenario, order: list[int]) -> World:
    """Run the CPUs one after another to completion (no interleaving), in ``order``."""
    machine, world, _names = build_machine(scn)
    for c in order:
        while machine.enabled(world, c):
            world = machine.step(world, c)
    return world
