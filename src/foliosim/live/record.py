"""``foliosim trace``: record what a real program did to memory as a run trace (docs/run-trace.md).

Two streams on one clock (CLOCK_MONOTONIC, microseconds): the process tree and the memory system calls from the
ptrace tracer (:mod:`foliosim.host.ptrace`, stops limited by a seccomp filter), and every page fault from the
``exceptions:page_fault_user`` / ``page_fault_kernel`` tracepoints (:class:`foliosim.host.tracefs.FaultRecorder`,
following forks). They are merged by time; per thread the order is exact (see docs/run-trace.md, "How it is
recorded"). With ``check_live`` every fork and exit also gets a snapshot of the task's anonymous pages and their
folios (:func:`foliosim.live.observe.observe`), taken while the traced tree is held still. With ``census`` the
kernel's own "maybe mapped shared" verdicts on every large anonymous folio of the traced processes are checked
against the truth (:func:`foliosim.live.census.run_census`) before every exit, after every fork and, in the
periodic mode, every few milliseconds; the counts go into the header's ``census`` record
(:mod:`foliosim.live.verdicts`).
"""

from __future__ import annotations

import bisect
import contextlib
import gzip
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any

from foliosim.host import procfs, thp
from foliosim.host.errors import HostError, HostUnavailable
from foliosim.host.ptrace import (
    EXTRA_MEMORY_SYSCALLS,
    HUGETLBFS_MAGIC,
    MEMORY_SYSCALLS,
    PR_SET_VMA,
    PROCESS_SYSCALLS,
    SYSCALL_NUMBERS,
    TMPFS_MAGIC,
    ChildStart,
    Exec,
    Exit,
    Fork,
    PresentPages,
    Spawn,
    SyscallEntry,
    SyscallExit,
    Tracer,
    Vma,
    VmaQuery,
    now_us,
)
from foliosim.host.tracefs import FaultEvent, FaultRecorder, KernelSymbols, TaskEvent, parse_raw

FORMAT = "foliosim-run-trace"
VERSION = 1
MECHANISM = "ptrace+seccomp+tracefs"
PAGE_SIZE = 4096
#: the calls the tracer stops at (besides fork/clone/vfork/execve)
TRACED_SYSCALLS = MEMORY_SYSCALLS + EXTRA_MEMORY_SYSCALLS
#: per-CPU tracefs ring buffer for fault events (drained every few milliseconds)
DEFAULT_BUFFER_KB = 8192
#: how long --thp waits for another live run holding the THP settings
LOCK_WAIT = 120.0
#: at most this many iovecs are read from a vmsplice / io_uring buffer registration
MAX_IOVECS = 16384
#: census modes: none; before every exit and after every fork (events); those and a timer (periodic)
CENSUS_MODES = ("none", "events", "periodic")
#: the periodic census's interval (ms), the shortest it may be, and the largest share of the wall time it may take
#: (after a census that took d seconds the next waits at least d * (1 / share - 1))
DEFAULT_CENSUS_INTERVAL_MS = 100.0
MIN_CENSUS_INTERVAL_MS = 5.0
PERIODIC_CENSUS_SHARE = 0.2
#: a census is skipped (and counted) while the censuses so far took more than this share of the traced wall time
#: and more than CENSUS_GRACE_S in all (a short program gets every census: it costs little in absolute terms)
DEFAULT_CENSUS_BUDGET = 0.5
CENSUS_GRACE_S = 0.25
_MAP_ANONYMOUS = 0x20
_MAP_SHARED_TYPES = (0x01, 0x03)  # MAP_SHARED, MAP_SHARED_VALIDATE
_IORING_REGISTER_BUFFERS = 0
_IORING_REGISTER_BUFFERS2 = 15
_IORING_REGISTER_BUFFERS_UPDATE = 16
_IORING_REGISTER_USE_REGISTERED_RING = 1 << 31
_SPECIAL_VMAS = ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]")
_GUARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class RecordError(Exception):
    """The recording cannot be made as asked (bad option, output path, command); nothing was started."""


# --------------------------------------------------------------------------- options


def parse_thp(spec: str | None) -> dict[str, str]:
    """``16K=always,64K=always`` -> {"hugepages-16kB/enabled": "always", ...} (anonymous mTHP sizes).

    A size is ``<N>K``, ``<N>kB`` or ``<N>M`` (a power-of-two multiple of 4 KiB); a value is one of always,
    inherit, madvise, never. The files must exist on this kernel.
    """
    out: dict[str, str] = {}
    if not spec:
        return out
    for item in spec.split(","):
        size, eq, value = item.strip().partition("=")
        if not eq or not size or not value:
            raise RecordError(f"--thp {item!r}: expected SIZE=VALUE, e.g. 64K=always")
        text = size.strip().upper().removesuffix("B")
        try:
            if text.endswith("K"):
                kb = int(text[:-1])
            elif text.endswith("M"):
                kb = int(text[:-1]) * 1024
            else:
                raise ValueError(text)
            thp.order_of_size_kb(kb)
        except (ValueError, HostError):
            raise RecordError(f"--thp {item!r}: {size!r} is not a folio size such as 16K, 64K or 2M") from None
        value = value.strip()
        if value not in ("always", "inherit", "madvise", "never"):
            raise RecordError(f"--thp {item!r}: value must be always, inherit, madvise or never")
        name = f"hugepages-{kb}kB/enabled"
        if not os.path.exists(f"{thp.THP_DIR}/{name}"):
            raise RecordError(f"--thp {item!r}: this kernel has no {thp.THP_DIR}/{name}")
        out[name] = value
    return out


@dataclass(frozen=True, slots=True)
class _Output:
    """The output path, checked before anything runs; the trace is written whole or not at all at the end."""

    path: str
    gz: bool


def prepare_output(path: str) -> _Output:
    """Check that ``path`` can be written (before anything runs): foliosim.outfile's rules, plus a regular file."""
    from foliosim.outfile import folder_problem

    if not path:
        raise RecordError("no output path (-o FILE)")
    full = os.path.abspath(path)
    why = "it is a directory" if path.endswith(os.sep) else folder_problem(full)
    if why is None and os.path.exists(full) and not os.path.isfile(full):
        why = "it exists and is not a regular file"
    if why is not None:
        raise RecordError(f"output {path}: {why}")
    return _Output(full, full.endswith(".gz"))


# --------------------------------------------------------------------------- the result


@dataclass(slots=True)
class RecordResult:
    """What one recording produced (the header is also the trace's first line)."""

    path: str
    header: dict[str, Any]
    counts: dict[str, int]
    exit_status: int | None  # wait status of the command's first process (None: it did not run)
    incomplete: bool
    wall_s: float
    untraced_wall_s: float | None
    warnings: list[str] = field(default_factory=list)

    @property
    def slowdown(self) -> float | None:
        if not self.untraced_wall_s:
            return None
        return self.wall_s / self.untraced_wall_s

    @property
    def command_status(self) -> int:
        """The command's exit code, 128 + signal if a signal ended it (a shell's convention)."""
        status = self.exit_status
        if status is None:
            return 127
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)


# --------------------------------------------------------------------------- helpers


def anon_vmas(pid: int) -> list[tuple[int, int]]:
    """The private anonymous VMAs of ``pid`` (heap, stack, anonymous mmaps) as page-number ranges."""
    out: list[tuple[int, int]] = []
    for vma in procfs.Maps.read(pid):
        if vma.inode == 0 and vma.private and vma.path not in _SPECIAL_VMAS:
            out.append((vma.start >> 12, vma.end >> 12))
    return out


#: what a snapshot covers (its ``scope``): every anonymous page of the task's private mappings, also the copies in
#: private file mappings (a snapshot without ``scope`` covers the anonymous mappings only)
SNAPSHOT_SCOPE = "anon"


class AnonPages:
    """The runs of present anonymous pages of a task's private mappings (``scope`` "anon"): one PAGEMAP_SCAN per
    mapping, so that reservations of GiBs cost nothing and only the pages there are read."""

    def __init__(self) -> None:
        self.present = PresentPages()

    def __call__(self, tid: int) -> list[tuple[int, int]]:
        ranges = [(v.start >> 12, v.end >> 12) for v in procfs.Maps.read(tid)
                  if v.private and v.path not in _SPECIAL_VMAS]
        return self.present.runs(tid, ranges, anon_only=True)


def thp_json(settings: thp.ThpSettings) -> dict[str, Any]:
    """THP settings as the header writes them (orders as strings)."""
    return {"enabled": settings.enabled, "shmem_enabled": settings.shmem_enabled,
            "anon": {str(k): v for k, v in settings.anon.items()},
            "shmem": {str(k): v for k, v in settings.shmem.items()}}


def _folio_json(folio: Any) -> dict[str, Any]:
    """A KernelFolio's raw fields (mapcounts as stored: count - 1)."""
    large = folio.mm_ids is not None
    return {
        "order": folio.order, "refcount": folio.refcount, "large_mapcount": folio.large_mapcount,
        "entire_mapcount": folio.entire_mapcount, "pincount": folio.pincount,
        "nr_pages_mapped": folio.nr_pages_mapped, "mm_ids": folio.mm_ids,
        "mm_id_mapcount": list(folio.mm_id_mapcount) if folio.mm_id_mapcount is not None else None,
        "shared_bit": folio.shared_bit, "slots": [folio.mm_id(0), folio.mm_id(1)] if large else None,
        "lock_bit": folio.lock_bit, "is_anon": folio.is_anon, "page_mapcount": list(folio.page_mapcount),
        "anon_exclusive": list(folio.anon_exclusive),
    }


def _fmt_t(t: float) -> str:
    return f"{t:.3f}"


@dataclass(slots=True)
class _Dated:
    """A fork, exec or exit line whose time the kernel's own events refine after the run (see :meth:`redate`)."""

    index: int  # in _Recording.lines
    kind: str  # fork, exec, exit
    tid: int  # the thread whose kernel event dates it: the forking, exec'ing or exiting thread
    other: int  # fork: the child; exec: the thread that called execve
    lo: float  # the kernel event falls in [lo, hi]
    hi: float
    record: dict[str, Any]


@dataclass(slots=True)
class _ExecPages:
    """The anonymous pages present right after an execve, to be told apart from those its recorded faults made."""

    record: dict[str, Any]
    tids: tuple[int, ...]  # the exec'ing thread (its tid before and after)
    lo: float  # the call's entry
    hi: float  # its syscall-exit stop
    folios: list[tuple[int, int, int]]  # (page address, first address of its folio, folio pages)


class _Drainer(threading.Thread):
    """Copies the binary fault ring buffer out every few milliseconds while the command runs (so it never fills
    up); the pages are parsed after the run, off the traced program's time."""

    def __init__(self, recorder: FaultRecorder, interval: float = 0.005) -> None:
        super().__init__(name="foliosim-trace-drain", daemon=True)
        self.recorder = recorder
        self.interval = interval
        self.pages: list[tuple[int, bytes]] = []
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.wait(self.interval):
                self.pages.extend(self.recorder.drain_raw())
        except BaseException as exc:  # handed to the main thread in finish()
            self.error = exc

    def finish(self) -> tuple[list[FaultEvent], list[TaskEvent], int]:
        """Stop, read what is left, parse everything: (faults, process events, events the ring buffer says it
        missed)."""
        self._stop_event.set()
        if self.is_alive() or self.ident is not None:
            self.join()
        if self.error is not None:
            raise self.error
        self.pages.extend(self.recorder.drain_raw())
        fmt = self.recorder.raw_format()
        symbols = _LazySymbols()
        tasks: list[TaskEvent] = []
        faults, missed = parse_raw(self.pages, fmt, symbols, tasks)
        return faults, tasks, missed


class _PeriodicCensus(threading.Thread):
    """Takes a census of the traced processes every ``interval`` seconds while they run (without stopping them),
    never more than :data:`PERIODIC_CENSUS_SHARE` of the time: after a census of d seconds the next waits at
    least d * (1 / share - 1)."""

    def __init__(self, rec: _Recording, interval: float) -> None:
        super().__init__(name="foliosim-trace-census", daemon=True)
        self.rec = rec
        self.interval = interval
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        delay = self.interval
        try:
            while not self._stop_event.wait(delay):
                delay = self.interval
                if self.rec.root_exec_t is None:  # the first process still runs our launcher: nothing of its own
                    continue
                took = self.rec.census("periodic", None, None)
                if took is not None:
                    delay = max(self.interval, took * (1 / PERIODIC_CENSUS_SHARE - 1))
        except BaseException as exc:  # handed to the main thread in finish()
            self.error = exc

    def finish(self) -> None:
        self._stop_event.set()
        if self.ident is not None:
            self.join()
        if self.error is not None:
            raise self.error


class _LazySymbols:
    """/proc/kallsyms loaded at the first kernel fault (most runs have a few)."""

    def __init__(self) -> None:
        self._symbols: KernelSymbols | None = None

    def __call__(self, addr: int) -> str:
        if self._symbols is None:
            try:
                self._symbols = KernelSymbols()
            except HostError:
                return f"{addr:#x}"
        return self._symbols(addr)


# --------------------------------------------------------------------------- the recording


class _Recording:
    """Turns tracer events into trace lines, takes the snapshots, and writes the file."""

    def __init__(self, tracer: Tracer, check_live: bool, reader: Any, log: Callable[[str], None],
                 census: str = "none", census_tasks: Any = None) -> None:
        self.tracer = tracer
        self.check_live = check_live
        self.reader = reader
        self.log = log
        self.census_mode = census if census_tasks is not None or census == "none" else "none"
        self.census_tasks = census_tasks  # a TaskIterator: the census's MM ids
        self.census_snaps: list[dict[str, Any]] = []
        self.census_lock = threading.Lock()  # one census at a time (the periodic thread and the tracer's)
        self.census_s = 0.0
        self.census_skipped: dict[str, int] = {}
        self.live_groups: set[int] = set()  # thread groups of the traced tree that have not ended
        self.census_pids: tuple[int, ...] = ()  # the same, as the periodic thread reads it (replaced whole)
        self.census_budget = 1.0  # share of the wall time since census_start the censuses may take (1: no limit)
        self.census_start = time.perf_counter()
        self.lines: list[tuple[float, int, str | dict[str, Any]]] = []
        self.seq = 0
        self.dated: list[_Dated] = []
        self.calls: list[tuple[int, int, int, float, float]] = []  # (line index, tid, nr, entry, exit) of each call
        self._process_nrs = [SYSCALL_NUMBERS[name] for name in PROCESS_SYSCALLS]
        self.exec_pages: list[_ExecPages] = []
        self.anon_pages = AnonPages()
        self.vmas = VmaQuery()
        self.iovecs: dict[int, list[list[int]]] = {}  # id(entry) -> ranges read at the call's entry
        self.names: dict[int, str | None] = {}  # id(entry) -> the VMA name a prctl(PR_SET_VMA) passes
        self.own_mm: set[int] = set()  # thread groups whose MM is their own (not a vfork child's borrowed one)
        self.announced: set[int] = set()  # thread groups whose current MM announced its mm_id to the BPF reader
        self.root_exec_t: float | None = None
        self.root_exec: _Dated | None = None  # the first process's first execve
        self.counts: dict[str, int] = {"syscalls": 0, "forks": 0, "threads": 0, "execs": 0, "exits": 0,
                                       "snapshots": 0, "snapshot_pages": 0, "unfrozen_snapshots": 0,
                                       "kernel_dated": 0, "calls_kernel_dated": 0, "exec_populated": 0}
        self.snapshot_s = 0.0
        self.warnings: list[str] = []
        self.collapsed_base: int | None = None  # khugepaged's pages_collapsed when the recording began

    def collapsed_since_start(self) -> int | None:
        """khugepaged's collapses on the machine since the recording began (None where the count cannot be read)."""
        now, base = thp.khugepaged_collapsed(), self.collapsed_base
        return now - base if now is not None and base is not None else None

    def emit(self, t: float, record: dict[str, Any]) -> None:
        self.seq += 1
        self.lines.append((t, self.seq, json.dumps({"t": round(t, 3), **record}, separators=(",", ":"))))

    def emit_dated(self, t: float, record: dict[str, Any], kind: str, tid: int, other: int, lo: float,
                   hi: float) -> None:
        """A fork/exec/exit line kept as a record until :meth:`redate` has given it the kernel's time."""
        self.seq += 1
        self.dated.append(_Dated(len(self.lines), kind, tid, other, lo, hi, record))
        self.lines.append((t, self.seq, record))

    def redate(self, tasks: Iterable[TaskEvent]) -> None:
        """Date forks, execs and exits by the kernel's own events (one clock with the faults), where found.

        A fork is dated at the end of its copy_process() (sched_process_fork: the child's MM is copied, it has not
        run yet), instead of the call's entry; an exec at the teardown of the old MM (exit_mmap in fs/exec.c
        exec_mmap(): the new MM takes over there; the kernel's writes to the new MM follow), instead of the call's
        entry; a process's exit at the teardown of its MM (exit_mmap from exit_mm(), after the exit stop). So a
        fork, exec or exit is ordered against other processes' as the kernel did them (the MM ids and the folio
        slots follow that order). Each time stays inside the window the tracer saw the event in."""
        forks: dict[tuple[int, int], float] = {}
        teardowns: dict[int, list[float]] = {}
        entries: dict[tuple[int, int], list[float]] = {}
        exits: dict[int, float] = {}  # tid -> when it began to exit (sched_process_exit, before exit_mm())
        for ev in tasks:
            if ev.kind == "fork":
                forks[(ev.pid, ev.child)] = ev.timestamp_us
            elif ev.kind == "exit":
                exits.setdefault(ev.pid, ev.timestamp_us)
            elif ev.kind == "exit_mmap":
                teardowns.setdefault(ev.pid, []).append(ev.timestamp_us)
            elif ev.kind == "sys_enter":
                entries.setdefault((ev.pid, ev.nr), []).append(ev.timestamp_us)
        for times in entries.values():
            times.sort()
        for index, tid, nr, lo, hi in self.calls:
            # A memory call takes effect when its work begins (it takes the mmap lock then): the faults of other
            # threads that began before it come before it, those after it follow it (its exit stop is later).
            times = entries.get((tid, nr), [])
            i = bisect.bisect_left(times, lo)
            if i < len(times) and times[i] <= hi:
                _old, seq, record = self.lines[index]
                self.lines[index] = (times[i], seq, record)
                self.counts["calls_kernel_dated"] += 1
        for times in teardowns.values():
            times.sort()
        tgid = self.tracer.tids
        by_group: dict[int, list[float]] = {}  # thread group -> its threads' teardowns (the last one's mmput())
        for tid, times in teardowns.items():
            if tid in tgid:
                by_group.setdefault(tgid[tid], []).extend(times)
        for times in by_group.values():
            times.sort()
        for d in self.dated:
            t: float | None = None
            if d.kind == "fork":
                t = forks.get((d.tid, d.other))
            elif d.kind == "exit":
                t = next((x for x in by_group.get(tgid.get(d.tid, d.tid), ()) if d.lo <= x <= d.hi), None)
            else:
                for tid in (d.tid, d.other):
                    t = next((x for x in teardowns.get(tid, ()) if d.lo <= x <= d.hi), None)
                    if t is not None:
                        break
            if t is None or not d.lo <= t <= d.hi:
                continue
            if d.kind == "exit" and d.lo <= exits.get(d.tid, -1.0) <= t:
                d.record["t_begin"] = round(exits[d.tid], 3)  # the MM is torn down in [t_begin, t]
            elif d.kind in ("fork", "exec"):  # the MM is copied (torn down) in [t_begin, t]: from the call's start
                begun = [x for tid in {d.tid, d.other if d.kind == "exec" else d.tid}
                         for nr in self._process_nrs for x in entries.get((tid, nr), ()) if d.lo <= x <= t]
                if begun:
                    d.record["t_begin"] = round(min(begun), 3)
            self.counts["kernel_dated"] += 1
            _old, seq, record = self.lines[d.index]
            self.lines[d.index] = (t, seq, record)
            if d is self.root_exec:  # the launcher's MM ends there: its faults before it are dropped
                self.root_exec_t = t

    # -- events

    def handle(self, ev: object) -> None:
        if isinstance(ev, SyscallEntry):
            self._entry(ev)
        elif isinstance(ev, SyscallExit):
            self._syscall(ev)
        elif isinstance(ev, Fork):
            self._fork(ev)
        elif isinstance(ev, ChildStart):
            self._child_start(ev)
        elif isinstance(ev, Exec):
            self._exec(ev)
        elif isinstance(ev, Exit):
            self._exit(ev)
        elif isinstance(ev, Spawn):
            self._group_started(ev.pid)
            self.emit(ev.t, {"ev": "spawn", "pid": ev.pid, "tid": ev.tid, "path": ev.path, "argv": ev.argv})

    def _entry(self, ev: SyscallEntry) -> None:
        """Read the iovec arrays a call passes (they are input: read before the call runs)."""
        name, args = ev.name, ev.args
        try:
            if name == "vmsplice" or name == "process_madvise":
                self.iovecs[id(ev)] = self._read_iovecs(ev.tid, args[1], args[2])
            elif name == "process_vm_writev":
                self.iovecs[id(ev)] = self._read_iovecs(ev.tid, args[3], args[4])
            elif name == "prctl" and args[0] & 0xFFFFFFFF == PR_SET_VMA:
                self.names[id(ev)] = self._read_string(ev.tid, args[4]) if args[4] else None
            elif name == "io_uring_register":
                opcode = args[1] & ~_IORING_REGISTER_USE_REGISTERED_RING
                if opcode == _IORING_REGISTER_BUFFERS:
                    self.iovecs[id(ev)] = self._read_iovecs(ev.tid, args[2], args[3])
                elif opcode == _IORING_REGISTER_BUFFERS2:
                    nr, _flags, _resv, data = self._rsrc_register(ev.tid, args[2])
                    self.iovecs[id(ev)] = self._read_iovecs(ev.tid, data, nr)
                elif opcode == _IORING_REGISTER_BUFFERS_UPDATE:
                    words = self.tracer.read_words(ev.tid, args[2], 4)
                    nr = words[3] & 0xFFFFFFFF
                    self.iovecs[id(ev)] = self._read_iovecs(ev.tid, words[1], nr)
        except HostError as exc:
            self.warnings.append(f"{name} of task {ev.tid}: cannot read its iovecs ({exc})")

    def _rsrc_register(self, tid: int, addr: int) -> tuple[int, int, int, int]:
        """struct io_uring_rsrc_register {u32 nr; u32 flags; u64 resv2; u64 data; u64 tags}: (nr, flags, resv, data)."""
        w0, resv, data = self.tracer.read_words(tid, addr, 3)
        return w0 & 0xFFFFFFFF, w0 >> 32, resv, data

    def _read_string(self, tid: int, addr: int, limit: int = 80) -> str:
        """A NUL-terminated string of the task (an anonymous VMA name: at most 80 bytes, mm/madvise.c); read
        16 bytes at a time when the 80 would cross the end of its mapping."""
        try:
            data = self.tracer.read_memory(tid, addr, limit)
        except HostError:
            data = b""
            while len(data) < limit and b"\0" not in data:
                data += self.tracer.read_memory(tid, addr + len(data), 16 - (addr + len(data)) % 16)
        return data.split(b"\0", 1)[0].decode(errors="replace")

    def _read_iovecs(self, tid: int, addr: int, count: int) -> list[list[int]]:
        if not addr or count <= 0:
            return []
        count = min(count, MAX_IOVECS)
        words = self.tracer.read_words(tid, addr, 2 * count)
        return [[words[2 * i], words[2 * i + 1]] for i in range(count)]

    def _syscall(self, ev: SyscallExit) -> None:
        entry = ev.entry
        name, args, ret = entry.name, entry.args, ev.ret
        rec: dict[str, Any] = {"ev": "syscall", "pid": entry.pid, "tid": entry.tid, "name": name,
                               "args": self._args(name, args), "ret": ret, "t_enter": round(entry.t, 3),
                               "t_exit": round(ev.t, 3)}
        if name == "mmap" and ret >= 0:
            flags = args[3]
            if not flags & _MAP_ANONYMOUS or (flags & 0x0F) in _MAP_SHARED_TYPES:
                file = self._file(entry.pid, entry.tid, ret)
                if file is not None:
                    rec["file"] = file
        elif name == "shmat" and ret >= 0:
            vma = self._vma(entry.pid, entry.tid, ret)
            if vma is not None:
                rec["size"] = vma.end - vma.start
                rec["file"] = self._file(entry.pid, entry.tid, ret, vma)
        if id(entry) in self.names:
            rec["vma_name"] = self.names.pop(id(entry))
        if id(entry) in self.iovecs:
            ranges = self.iovecs.pop(id(entry))
            rec["buffers" if name == "io_uring_register" else "ranges"] = ranges
        self.counts["syscalls"] += 1
        self.seq += 1
        self.calls.append((len(self.lines), entry.tid, entry.nr, entry.t, ev.t))
        self.lines.append((ev.t, self.seq, rec))

    @staticmethod
    def _args(name: str, args: tuple[int, ...]) -> list[int]:
        """The arguments docs/run-trace.md lists for the call (signed where the kernel reads an int: fd, pid)."""
        n = {"mmap": 6, "munmap": 2, "mremap": 5, "mprotect": 3, "madvise": 3, "brk": 1, "shmat": 3,
             "io_uring_register": 4, "vmsplice": 4, "shmdt": 1, "pkey_mprotect": 4, "remap_file_pages": 5,
             "mlock": 2, "mlock2": 3, "mlockall": 1, "process_madvise": 5, "process_vm_writev": 6, "mbind": 6,
             "move_pages": 6, "prctl": 5}.get(name, 6)
        out = list(args[:n])
        if name == "mmap":
            out[4] = out[4] - (1 << 64) if out[4] >= 1 << 63 else out[4] & 0xFFFFFFFF
            if out[4] >= 1 << 31:
                out[4] -= 1 << 32
        return out

    def _vma(self, pid: int, tid: int, addr: int) -> Vma | None:
        try:
            return self.vmas.find(pid, addr, tid)
        except HostError as exc:
            self.warnings.append(f"VMA at {addr:#x} of process {pid}: {exc}")
            return None

    def _file(self, pid: int, tid: int, addr: int, vma: Vma | None = None) -> dict[str, Any] | None:
        vma = vma if vma is not None else self._vma(pid, tid, addr)
        if vma is None or vma.inode == 0:
            return None
        fstype = self.vmas.fstype(tid, vma)
        out: dict[str, Any] = {"dev": vma.dev, "ino": vma.inode, "path": vma.path, "shmem": fstype == TMPFS_MAGIC}
        if fstype == HUGETLBFS_MAGIC:
            out["hugetlb"] = True
        return out

    def _fork(self, ev: Fork) -> None:
        self.counts["threads" if ev.thread else "forks"] += 1
        self.emit_dated(ev.t, {"ev": "fork", "pid": ev.pid, "tid": ev.tid, "child_pid": ev.child_pid,
                               "child_tid": ev.child_tid, "clone_flags": ev.clone_flags, "thread": ev.thread,
                               "vfork": ev.vfork, "t_enter": round(ev.t, 3)},
                        "fork", ev.tid, ev.child_tid, ev.t, ev.t_event or now_us())
        if not ev.thread:
            self._group_started(ev.child_pid)
        if ev.new_mm:
            self.own_mm.add(ev.child_pid)
            if ev.pid in self.announced:
                self.announced.discard(ev.child_pid)
            if self.check_live:
                self.snapshot(ev.pid, ev.tid, "fork", "parent")
            if self.census_mode != "none":
                self.census("fork", ev.pid, ev.tid)

    def _child_start(self, ev: ChildStart) -> None:
        if not ev.fork.new_mm:
            return
        if self.check_live:
            self._announce(ev.tid, ev.pid)
            self.snapshot(ev.pid, ev.tid, "fork", "child")

    def _exec(self, ev: Exec) -> None:
        if self.root_exec_t is None and ev.tid == self.tracer.root:
            self.root_exec_t = ev.t
        for tid in ev.killed_threads:
            self.counts["exits"] += 1
            self.emit(ev.t, {"ev": "exit", "pid": ev.pid, "tid": tid, "group": False, "code": None,
                             "signal": int(signal.SIGKILL), "by_exec": True})
        self.counts["execs"] += 1
        stop = now_us()
        try:  # what execve itself mapped (program, loader, stack, vdso), read before the program runs
            maps = [[v.start, v.end, v.perms, v.offset, v.dev, v.inode, v.path] for v in procfs.Maps.read(ev.tid)]
        except HostError as exc:
            maps = None
            self.warnings.append(f"maps of process {ev.pid} after its execve: {exc}")
        record = {"ev": "exec", "pid": ev.pid, "tid": ev.tid, "path": ev.path, "argv": ev.argv,
                  "former_tid": ev.former_tid, "maps": maps, "t_enter": round(ev.t, 3)}
        if maps is not None:
            folios = self._present_after_exec(ev.tid, maps)
            if folios is not None:
                record["populated"] = []
                self.exec_pages.append(_ExecPages(record, (ev.tid, ev.former_tid), ev.t, stop, folios))
        self.emit_dated(ev.t, record, "exec", ev.tid, ev.former_tid, ev.t, stop)
        if self.root_exec is None and ev.tid == self.tracer.root:
            self.root_exec = self.dated[-1]
        self.vmas.forget(ev.pid)
        self.own_mm.add(ev.pid)
        self.announced.discard(ev.pid)
        if self.check_live:
            self._announce(ev.tid, ev.pid)

    def _present_after_exec(self, tid: int, maps: list[list[Any]]) -> list[tuple[int, int, int]] | None:
        """The anonymous pages present in the new MM at the execve's exit stop, with their folios' extents."""
        ranges = [(m[0] >> 12, m[1] >> 12) for m in maps
                  if m[5] == 0 and str(m[2]).endswith("p") and m[6] not in _SPECIAL_VMAS]
        out: list[tuple[int, int, int]] = []
        try:
            runs = self.anon_pages.present.runs(tid, ranges, anon_only=True)
            with procfs.PhysReader() as phys:
                for lo, hi in runs:
                    for e in procfs.read_pagemap(tid, lo << 12, hi - lo):
                        if not (e.present and e.pfn):
                            continue
                        head, order = phys.folio_extent(e.pfn)
                        out.append((e.vaddr, e.vaddr - ((e.pfn - head) << 12), 1 << order))
        except HostError as exc:
            self.warnings.append(f"present pages of task {tid} after its execve: {exc}")
            return None
        return out

    def settle_exec_pages(self, faults: Iterable[FaultEvent]) -> None:
        """Each exec's ``populated``: the pages present right after it that no fault of the exec'ing thread during
        the call made (a fault makes its whole folio; the rest the kernel wrote without a fault: the argument
        pages, fs/exec.c copy_strings() through get_user_pages)."""
        if not self.exec_pages:
            return
        by_tid: dict[int, list[_ExecPages]] = {}
        for x in self.exec_pages:
            for tid in set(x.tids):
                by_tid.setdefault(tid, []).append(x)
        hits: dict[int, list[int]] = {}  # id(_ExecPages) -> faulted addresses
        for f in faults:
            for x in by_tid.get(f.pid, ()):
                if x.lo <= f.timestamp_us <= x.hi:
                    hits.setdefault(id(x), []).append(f.address)
        for x in self.exec_pages:
            faulted = hits.get(id(x), [])
            pages = [addr for addr, first, n in x.folios
                     if not any(first <= a < first + (n << 12) for a in faulted)]
            x.record["populated"] = pages
            self.counts["exec_populated"] += len(pages)

    def _exit(self, ev: Exit) -> None:
        t = ev.t
        if self.check_live and ev.group and ev.stopped and ev.pid in self.own_mm and not self.tracer.killed:
            # The task cannot act after its exit stop: date the exit at the snapshot (which shows the MM still
            # mapped), so the snapshot comes first and nothing another task did before it comes after the exit.
            t = self.snapshot(ev.pid, ev.tid, "exit", "exit") or t
        if self.census_mode != "none" and ev.group and ev.stopped and ev.pid in self.own_mm and not self.tracer.killed:
            self.census("exit", ev.pid, ev.tid)
        if ev.group:
            self._group_ended(ev.pid)
        self.counts["exits"] += 1
        record = {"ev": "exit", "pid": ev.pid, "tid": ev.tid, "group": ev.group, "code": ev.code,
                  "signal": ev.signal}
        if ev.group and ev.pid in self.own_mm:  # its MM goes: dated at the MM's teardown (exit_mmap), if seen
            self.emit_dated(t, record, "exit", ev.tid, ev.tid, t, float("inf"))
        else:
            self.emit(t, record)
        if ev.group:
            self.vmas.forget(ev.pid)

    # -- live snapshots

    def _announce(self, tid: int, pid: int) -> None:
        """Have the task's MM id recorded by the BPF reader: inject the reader's marker syscall into it."""
        if self.reader is None:
            return
        from foliosim.host.bpf import SYSCALL_NR

        if self.tracer.inject_syscall(tid, SYSCALL_NR, (0, 0, 0)) is not None:
            self.announced.add(pid)

    def snapshot(self, pid: int, tid: int, at: str, role: str) -> float | None:
        """The task's anonymous pages and their folios, read while every other traced task is held still.

        Returns the snapshot's time (None if it could not be read)."""
        from foliosim.live.observe import observe

        if self.tracer.killed:
            return None
        start = time.perf_counter()
        frozen = self.tracer.freeze(except_tid=tid)
        t = now_us()
        state = None
        error: HostError | None = None
        for _attempt in range(3):
            try:
                if self.reader is not None:
                    from foliosim.host.syscalls import drain_lru

                    drain_lru()
                # read through the stopped thread: a thread-group leader that exited earlier has no MM any more
                state = observe([tid], self.reader, vmas=self.anon_pages)
                break
            except HostError as exc:  # a folio changed while it was read (reclaim, khugepaged): read again
                error = exc
        t_end = now_us()
        if state is None:
            self.warnings.append(f"snapshot of process {pid} at {at}: {error}")
            return None
        pages: list[list[int | bool]] = []
        zero: list[int] = []
        for vpn, p in sorted(state.pages.get(tid, {}).items()):
            if not p.present:
                continue
            if p.zero:
                zero.append(vpn << 12)
                continue
            pages.append([vpn << 12, p.pfn, p.head_pfn, p.order, p.mapcount, p.exclusive])
        folios = {str(head): _folio_json(f) for head, f in sorted(state.folios.items())}
        mm_id = self.reader.mm_id_of(pid) if self.reader is not None and pid in self.announced else None
        self.counts["snapshots"] += 1
        self.counts["snapshot_pages"] += len(pages)
        if not frozen:
            self.counts["unfrozen_snapshots"] += 1
        record = {"ev": "snapshot", "pid": pid, "tid": tid, "at": at, "role": role, "scope": SNAPSHOT_SCOPE,
                  "pages": pages, "folios": folios, "mm_id": mm_id, "zero_pages": zero, "frozen": frozen,
                  "t_end": round(t_end, 3),
                  "khugepaged_collapsed": self.collapsed_since_start()}  # after the read: one during it counts
        if not frozen:
            record["not_stopped"] = self.tracer.not_stopped
        self.emit(t, record)
        self.snapshot_s += time.perf_counter() - start
        return t

    # -- the census of the kernel's verdicts

    def _group_started(self, pid: int) -> None:
        self.live_groups.add(pid)
        self.census_pids = tuple(sorted(self.live_groups))

    def _group_ended(self, pid: int) -> None:
        self.live_groups.discard(pid)
        self.census_pids = tuple(sorted(self.live_groups))

    def census(self, at: str, pid: int | None, tid: int | None) -> float | None:
        """Judge the kernel's verdict on every large anonymous folio of the traced processes and keep the counts.

        From the tracer (``tid`` given: the stopped task of the fork or exit) every other traced task is held
        still first, as for a snapshot; the periodic thread reads the processes as they run (folios that change
        meanwhile are counted as changed and left out). Returns the seconds it took (None: nothing was taken)."""
        from foliosim.live.census import CensusError, run_census
        from foliosim.live.verdicts import snapshot_record

        pids = self.census_pids
        if self.tracer.killed or not pids:
            return None
        start = time.perf_counter()
        if self.census_budget < 1.0 and self.census_s > max(CENSUS_GRACE_S,
                                                            self.census_budget * (start - self.census_start)):
            key = f"{at}: over the time budget"
            with self.census_lock:
                self.census_skipped[key] = self.census_skipped.get(key, 0) + 1
            return None
        frozen = self.tracer.freeze(except_tid=tid) if tid is not None else False
        with self.census_lock:
            t = now_us()
            try:
                result = run_census(pids, self.reader, self.census_tasks, missing_ok=True)
            except (HostError, CensusError) as exc:
                self.census_skipped["failed"] = self.census_skipped.get("failed", 0) + 1
                if self.census_skipped["failed"] == 1:
                    self.warnings.append(f"census at {at} of process {pid}: {exc}")
                return None
            took = time.perf_counter() - start
            self.census_snaps.append(snapshot_record(result, t, at, pid, frozen, took))
            self.census_s += took
        return took

    # -- faults

    def add_faults(self, faults: Iterable[FaultEvent]) -> dict[str, int]:
        """Attribute each fault to its thread group; drop the launcher's own faults before the first execve."""
        tids = self.tracer.tids
        root, root_exec = self.tracer.root, self.root_exec_t
        counts = {"faults": 0, "kernel_faults": 0, "pre_exec_faults": 0, "unattributed_faults": 0}
        lines = self.lines
        for f in faults:
            tid = f.pid
            pid = tids.get(tid)
            if pid is None:
                counts["unattributed_faults"] += 1
                continue
            t = f.timestamp_us
            if tid == root and (root_exec is None or t < root_exec):
                counts["pre_exec_faults"] += 1
                continue
            self.seq += 1
            if f.kernel:
                counts["kernel_faults"] += 1
                text = (f'{{"t":{t:.3f},"ev":"fault","pid":{pid},"tid":{tid},"addr":{f.address},'
                        f'"write":{"true" if f.write else "false"},"ip":0,"error_code":{f.error_code},'
                        f'"kernel":true,"kernel_ip":{json.dumps(f.symbol)}}}')
            else:
                text = (f'{{"t":{t:.3f},"ev":"fault","pid":{pid},"tid":{tid},"addr":{f.address},'
                        f'"write":{"true" if f.write else "false"},"ip":{f.ip},"error_code":{f.error_code}}}')
            counts["faults"] += 1
            lines.append((t, self.seq, text))
        return counts

    def write(self, out: _Output, header: dict[str, Any]) -> None:
        """Header, then every line sorted by time (ties: the order recorded), to the temporary file, renamed."""
        self.lines.sort(key=lambda item: (item[0], item[1]))
        from foliosim.outfile import replaced_on_success

        try:
            opener: Callable[..., IO[str]] = gzip.open if out.gz else open
            with replaced_on_success(out.path) as tmp, opener(tmp, "wt", encoding="utf-8") as handle:
                handle.write(json.dumps(header, separators=(",", ":")) + "\n")
                for t, _seq, text in self.lines:
                    if isinstance(text, dict):
                        text = json.dumps({"t": round(t, 3), **text}, separators=(",", ":"))
                    handle.write(text + "\n")
        except OSError as exc:
            raise HostError(f"write {out.path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- entry point


def _time_untraced(path: str, argv: Sequence[str], env: Mapping[str, str]) -> float:
    """Wall time of one untraced run of the command (same settings, same stdio)."""
    start = time.perf_counter()
    subprocess.run([*argv], executable=path, env=dict(env), check=False)
    return time.perf_counter() - start


def record(argv: Sequence[str], out_path: str, *, thp_changes: Mapping[str, str] | None = None,
           check_live: bool = False, measure_slowdown: bool = False, buffer_kb: int = DEFAULT_BUFFER_KB,
           env: Mapping[str, str] | None = None, log: Callable[[str], None] | None = None,
           census: str = "none", census_interval_ms: float = DEFAULT_CENSUS_INTERVAL_MS,
           census_budget: float = DEFAULT_CENSUS_BUDGET) -> RecordResult:
    """Run ``argv`` traced and write its run trace to ``out_path``; the THP changes hold for the run only.

    ``census``: "events" takes a census of the kernel's verdicts (:mod:`foliosim.live.census`) over the traced
    processes before every exit and after every fork, "periodic" also every ``census_interval_ms`` while they run;
    the header's ``census`` record holds the counts (:mod:`foliosim.live.verdicts`). A census is skipped (and
    counted) while the censuses so far took more than ``census_budget`` of the traced wall time and more than
    :data:`CENSUS_GRACE_S` in all (``census_budget`` 1: never).
    Without the BPF readers the record says why it is missing (a warning; the trace is still written).

    Raises RecordError (bad arguments: nothing ran), HostUnavailable (not root, no tracefs, ptrace denied) or
    HostError (a kernel interface failed). SIGINT/SIGTERM/SIGHUP stop the command (SIGKILL to its processes)
    and the trace so far is written, marked incomplete.
    """
    say = log if log is not None else (lambda _msg: None)
    if census not in CENSUS_MODES:
        raise RecordError(f"--census {census!r}: must be one of {', '.join(CENSUS_MODES)}")
    if not 0.0 < census_budget <= 1.0:
        raise RecordError(f"--census-budget {census_budget:g}: must be a share of the wall time, in (0, 1]")
    if not census_interval_ms >= MIN_CENSUS_INTERVAL_MS:
        raise RecordError(f"--census-interval {census_interval_ms:g} ms: must be at least "
                          f"{MIN_CENSUS_INTERVAL_MS:g} ms")
    if not argv:
        raise RecordError("no command (usage: foliosim trace -o run.trace -- COMMAND [ARGS...])")
    changes = dict(thp_changes or {})
    path = shutil.which(argv[0]) if os.sep not in argv[0] else argv[0]
    if path is None or not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise RecordError(f"command not found or not executable: {argv[0]}")
    if os.geteuid() != 0:
        raise HostUnavailable("not root: the fault tracepoints (tracefs), PROCMAP_QUERY and pagemap PFNs need root")
    environ = dict(os.environ if env is None else env)
    out = prepare_output(out_path)
    interrupted: list[int] = []
    tracer: Tracer | None = None

    def on_signal(signo: int, _frame: FrameType | None) -> None:
        interrupted.append(signo)
        if tracer is not None:
            tracer.kill_all()

    previous = {signo: signal.signal(signo, on_signal) for signo in _GUARDED}
    try:
        leftover = thp.restore_leftover()
        for change in leftover:
            say(f"restored THP settings a killed run left: {change}")
        with contextlib.ExitStack() as stack:
            guard = None
            if changes:
                guard = stack.enter_context(thp.ThpGuard(changes, lock_timeout=LOCK_WAIT))
            settings = thp.read_settings()
            reader: Any = None
            reader_note = None
            census_tasks: Any = None
            census_note = None
            if check_live or census != "none":
                try:
                    from foliosim.host.bpf import FolioReader

                    reader = stack.enter_context(FolioReader())
                except (HostUnavailable, HostError) as exc:
                    reader_note = f"BPF folio reader unavailable ({exc}): snapshots hold pages only"
                    census_note = f"BPF folio reader unavailable ({exc})"
                    if check_live:
                        say(reader_note)
            if census != "none" and reader is not None:
                try:
                    from foliosim.host.tasks import TaskIterator

                    census_tasks = stack.enter_context(TaskIterator(reader.btf))
                except (HostUnavailable, HostError) as exc:
                    census_note = f"BPF task iterator unavailable ({exc})"
            if census != "none" and census_tasks is None:
                say(f"no census of the kernel's verdicts: {census_note}")
            if census_tasks is not None:  # load what a census uses now, not inside the traced program's time
                import numpy  # noqa: F401

                import foliosim.live.census
                import foliosim.live.verdicts  # noqa: F401
            if not check_live:
                reader_note = None
            untraced = None
            if measure_slowdown and not interrupted:
                say("measuring: one untraced run")
                untraced = _time_untraced(path, argv, environ)
            faults = stack.enter_context(FaultRecorder(
                follow_forks=True, buffer_kb=buffer_kb, raise_on_loss=False, kernel_faults=True, task_events=True,
                syscall_entries=[SYSCALL_NUMBERS[name] for name in (*TRACED_SYSCALLS, *PROCESS_SYSCALLS)]))
            tracer = stack.enter_context(Tracer(path, argv, TRACED_SYSCALLS, environ))
            rec = _Recording(tracer, check_live, reader, say, census, census_tasks)
            rec.census_budget = census_budget
            drainer = _Drainer(faults)
            periodic = (_PeriodicCensus(rec, census_interval_ms / 1000.0)
                        if rec.census_mode == "periodic" else None)
            rec.collapsed_base = thp.khugepaged_collapsed()
            started = rec.census_start = time.perf_counter()
            spawn = None
            try:
                if not interrupted:
                    spawn = tracer.spawn(before_start=lambda pid: faults.set_pids([pid]))
                    rec.handle(spawn)
                    drainer.start()
                    if periodic is not None:
                        periodic.start()
                    for ev in tracer.run():
                        rec.handle(ev)
            finally:
                if periodic is not None:
                    periodic.finish()
            wall = time.perf_counter() - started
            collapsed = rec.collapsed_since_start()
            fault_list, task_list, missed = drainer.finish()
            lost = max(faults.lost_events, missed)
            rec.redate(task_list)
            rec.settle_exec_pages(fault_list)
            fault_counts = rec.add_faults(fault_list)
            settings_end = thp.read_settings()
            incomplete = bool(interrupted) or tracer.killed
            header: dict[str, Any] = {
                "format": FORMAT, "version": VERSION, "command": list(argv),
                "kernel": os.uname().release, "page_size": PAGE_SIZE, "clock": "CLOCK_MONOTONIC",
                "start_us": round(spawn.t, 3) if spawn is not None else None,
                "thp": thp_json(settings), "thp_set": dict(changes),
                "recorder": {
                    "mechanism": MECHANISM,
                    "slowdown": round(wall / untraced, 3) if untraced else None,
                    "wall_s": round(wall, 4), "untraced_wall_s": round(untraced, 4) if untraced else None,
                    "lost_events": lost, "stops": tracer.stats.stops,
                    # the machine's, not only the program's: khugepaged's background collapses are in no trace line
                    "khugepaged_collapsed": collapsed,
                    "syscalls_traced": sorted(TRACED_SYSCALLS), "folio_reader": reader is not None,
                    "snapshot_s": round(rec.snapshot_s, 4), "injected": tracer.stats.injected,
                    **fault_counts, **rec.counts,
                },
                "check_live": check_live, "incomplete": incomplete,
                "interrupted_by": signal.Signals(interrupted[0]).name if interrupted else None,
                "exit_status": _status_json(tracer.exit_status),
            }
            if census != "none":
                from foliosim.live.verdicts import census_record, unavailable_record

                header["census"] = (census_record(census, census_interval_ms if census == "periodic" else None,
                                                  census_budget, rec.census_snaps, rec.census_skipped,
                                                  rec.census_s)
                                    if rec.census_mode != "none" else unavailable_record(census, census_note or "?"))
                if census_note and rec.census_mode == "none":
                    rec.warnings.append(f"no census of the kernel's verdicts: {census_note}")
            restored_early = guard is not None and guard.interrupted_by is not None  # a signal restored them
            if thp_json(settings_end) != header["thp"] and not restored_early:
                header["thp_end"] = thp_json(settings_end)
                rec.warnings.append("the THP settings changed during the run (another program changed them)")
            if reader_note:
                rec.warnings.append(reader_note)
            if lost:
                rec.warnings.append(f"the fault ring buffer dropped {lost} events: the trace misses "
                                    "faults (use a bigger --buffer-kb)")
            if guard is not None and guard.interrupted_by is not None and not interrupted:
                interrupted.append(guard.interrupted_by)
            rec.write(out, header)
            counts = {**fault_counts, **rec.counts, "events": len(rec.lines)}
            return RecordResult(out.path, header, counts, tracer.exit_status, incomplete, wall, untraced,
                                rec.warnings)
    finally:
        for signo, handler in previous.items():
            signal.signal(signo, handler)


def _status_json(status: int | None) -> dict[str, int | None] | None:
    if status is None:
        return None
    if os.WIFSIGNALED(status):
        return {"code": None, "signal": os.WTERMSIG(status)}
    return {"code": os.WEXITSTATUS(status), "signal": None}
