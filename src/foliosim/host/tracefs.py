"""User page faults from the ``exceptions:page_fault_user`` tracepoint, in a private tracefs instance.

arch/x86/mm/fault.c handle_page_fault() fires the tracepoint with the faulting
address, the user ip and the hardware error code (bit 0: protection fault on a
present page, bit 1: write, bit 2: user mode, bit 4: instruction fetch).
:class:`FaultRecorder` mounts tracefs at a mount point of its own under
/run/foliosim (so it never unmounts a tracefs someone else uses, nor is unmounted
under them; /sys/kernel/tracing is left as it was), makes the instance
``instances/foliosim-<pid>``, enables only that event for the chosen pids, and reads
the instance's ``trace_pipe`` without blocking: every event is returned exactly once,
and a lost event (ring buffer full) is a HostError, never silent.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType

from foliosim.host.errors import HostError, HostUnavailable, os_error
from foliosim.host.runlock import RUN_DIR

EVENT = "exceptions/page_fault_user"
#: Faults the kernel itself takes on user addresses (copy_to_user, ELF loading): recorded with ``kernel_faults``.
KERNEL_EVENT = "exceptions/page_fault_kernel"
#: Keeps only the kernel's faults on user-space addresses (below the x86-64 47-bit user address limit).
KERNEL_EVENT_FILTER = "address < 0x800000000000"
#: Process events recorded with ``task_events``: the end of a fork's copy_process() (kernel/fork.c kernel_clone():
#: the child exists, its MM copied, before it first runs) and the end of an MM's teardown (mm/mmap.c exit_mmap():
#: every page unmapped; at an exit, or for the old MM at an execve, fs/exec.c exec_mmap()).
FORK_EVENT = "sched/sched_process_fork"
EXIT_MMAP_EVENT = "mmap/exit_mmap"
#: A task begins to exit (kernel/exit.c do_exit(); before exit_mm() on Linux 6.16+, whose format has group_dead).
EXIT_EVENT = "sched/sched_process_exit"
#: The start of a system call's work (after seccomp and a tracer's entry stop): recorded for ``syscall_entries``.
SYS_ENTER_EVENT = "raw_syscalls/sys_enter"
INSTANCE_PREFIX = "foliosim-"
MOUNT_PREFIX = RUN_DIR + "/tracefs-"
#: x86 page-fault error code bits (arch/x86/include/asm/trap_pf.h).
X86_PF_PROT = 1 << 0
X86_PF_WRITE = 1 << 1
X86_PF_USER = 1 << 2
X86_PF_INSTR = 1 << 4

_MNT_DETACH = 2
_READ_CHUNK = 1 << 16
_RMDIR_RETRY_S = 2.0

_LINE = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?:[^\s:]+\s+)*?(?P<ts>\d+\.\d+):\s+"
    r"(?P<event>\w+):\s?(?P<body>.*)$"
)
_FAULT = re.compile(r"address=(?P<address>\S+)\s+ip=(?P<ip>\S+)\s+error_code=(?P<error_code>0x[0-9a-fA-F]+)")
_LOST = re.compile(r"^CPU:(?P<cpu>\d+) \[LOST (?P<n>\d+) EVENTS\]")
_STAT = re.compile(r"^(overrun|dropped events):\s*(\d+)", re.MULTILINE)

#: Instance names created by this process and not yet removed (a same-named leftover is stale).
_ours: set[str] = set()


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One user page fault: the faulting thread, CPU, time (µs, CLOCK_MONOTONIC), address, ip, error code."""

    pid: int
    cpu: int
    timestamp_us: float
    address: int
    ip: int
    error_code: int
    write: bool
    kernel: bool = False  # a fault the kernel took on a user address (page_fault_kernel), not user mode
    symbol: str = ""  # for a kernel fault: the kernel function at ip (the tracepoint prints it symbolically)

    @property
    def protection(self) -> bool:
        """Fault on a present page (bit 0): e.g. a write to a read-only (CoW or zero-page) PTE."""
        return bool(self.error_code & X86_PF_PROT)

    @property
    def page(self) -> int:
        """The faulting address rounded down to its 4 KiB page."""
        return self.address & ~0xFFF


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """A process event of the ring buffer (``task_events``): ``kind`` "fork" (sched_process_fork, in the parent
    thread ``pid``; ``child`` is the new task), "exit" (sched_process_exit: thread ``pid`` begins to exit),
    "exit_mmap" (thread ``pid`` tore down the MM at ``mm``) or "sys_enter" (thread ``pid`` starts system call
    ``nr``, ``syscall_entries``)."""

    kind: str
    pid: int
    cpu: int
    timestamp_us: float
    child: int = 0
    mm: int = 0
    nr: int = 0


@dataclass(frozen=True, slots=True)
class Marker:
    """A ``trace_marker`` line written by :meth:`FaultRecorder.mark`, in stream order with the faults."""

    pid: int
    cpu: int
    timestamp_us: float
    text: str


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return libc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mounts() -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount in this namespace (/proc/self/mountinfo)."""
    out: list[tuple[str, str]] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as exc:
        raise os_error("/proc/self/mountinfo", exc) from None
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) > 4 and right:
            out.append((fields[4].replace("\\040", " "), right.split()[0]))
    return out


def tracefs_mounted_at(path: str) -> bool:
    """Whether a tracefs is mounted exactly at ``path``."""
    return (os.path.normpath(path), "tracefs") in _mounts()


def _mount(mountpoint: str) -> None:
    libc = _libc()
    if libc.mount(b"tracefs", mountpoint.encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        if err in (errno.ENODEV, errno.EPERM):
            raise HostUnavailable(f"mount tracefs at {mountpoint}: {errno.errorcode.get(err, err)} "
                                  "(tracefs not built in, or not root)")
        raise os_error(f"mount tracefs at {mountpoint}", OSError(err, os.strerror(err)))


def _umount(mountpoint: str) -> None:
    """Unmount our own mount point (lazily if busy) and remove the directory."""
    libc = _libc()
    if libc.umount2(mountpoint.encode(), 0) != 0:
        err = ctypes.get_errno()
        if err == errno.EBUSY:
            libc.umount2(mountpoint.encode(), _MNT_DETACH)
        elif err != errno.EINVAL:  # EINVAL: not mounted any more
            raise os_error(f"umount {mountpoint}", OSError(err, os.strerror(err)))
    with contextlib.suppress(OSError):
        os.rmdir(mountpoint)


def _rmdir_instance(path: str) -> None:
    """rmdir an instance, retrying briefly while the kernel still holds it busy."""
    deadline = time.monotonic() + _RMDIR_RETRY_S
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise os_error(f"rmdir {path}", exc) from None
        time.sleep(0.02)


def _owner_pid(name: str, prefix: str) -> int | None:
    m = re.fullmatch(re.escape(prefix) + r"(\d+)(?:-\d+)?", name)
    return int(m.group(1)) if m else None


def cleanup_leftovers() -> list[str]:
    """Remove tracefs mount points and instances that foliosim processes now dead left behind (SIGKILL).

    Returns what it removed. Called by :class:`FaultRecorder` on entry.
    """
    removed: list[str] = []
    for mountpoint, fstype in _mounts():
        if fstype == "tracefs" and mountpoint.startswith(MOUNT_PREFIX):
            pid = _owner_pid(mountpoint, MOUNT_PREFIX)
            if pid is not None and not _pid_alive(pid):
                _umount(mountpoint)
                removed.append(mountpoint)
    with contextlib.suppress(OSError):
        for name in os.listdir(RUN_DIR):
            path = f"{RUN_DIR}/{name}"
            pid = _owner_pid(path, MOUNT_PREFIX)
            if pid is not None and not _pid_alive(pid) and not os.path.ismount(path):
                with contextlib.suppress(OSError):
                    os.rmdir(path)
    return removed


def _cleanup_instances(instances_dir: str) -> list[str]:
    removed: list[str] = []
    try:
        names = os.listdir(instances_dir)
    except OSError:
        return removed
    for name in names:
        pid = _owner_pid(name, INSTANCE_PREFIX)
        if pid is None or name in _ours:
            continue
        if not _pid_alive(pid) or pid == os.getpid():
            _rmdir_instance(f"{instances_dir}/{name}")
            removed.append(name)
    return removed


def _parse_fault_fast(line: str) -> FaultEvent | None:
    """The common fault line (``comm-pid [cpu] flags secs.usecs: page_fault_user: address=.. ip=.. error_code=..``)
    parsed with string splits; None for anything else (the regex path then decides). A ``page_fault_kernel``
    line has the kernel function as its ip."""
    head, sep, body = line.partition(": page_fault_user: ")
    kernel = False
    if not sep:
        head, sep, body = line.partition(": page_fault_kernel: ")
        if not sep:
            return None
        kernel = True
    parts = head.split()
    fields = body.split()
    if len(parts) < 3 or len(fields) != 3:
        return None
    try:
        ci = next(i for i in range(len(parts) - 1, 0, -1) if parts[i][:1] == "[" and parts[i][-1:] == "]")
        pid = int(parts[ci - 1].rpartition("-")[2])
        cpu = int(parts[ci][1:-1])
        secs, _, frac = parts[-1].partition(".")
        if len(frac) != 6:
            return None
        address, ip, code = fields
        if not (address.startswith("address=0x") and ip.startswith("ip=") and code.startswith("error_code=0x")):
            return None
        error_code = int(code[13:], 16)
        ts = float(int(secs) * 1_000_000 + int(frac))
        if kernel:
            return FaultEvent(pid, cpu, ts, int(address[10:], 16), 0, error_code, bool(error_code & X86_PF_WRITE),
                              True, ip[3:])
        if not ip.startswith("ip=0x"):
            return None
        return FaultEvent(pid, cpu, ts, int(address[10:], 16), int(ip[5:], 16), error_code,
                          bool(error_code & X86_PF_WRITE))
    except (StopIteration, ValueError):
        return None


# --- the binary ring buffer (per_cpu/cpuN/trace_pipe_raw) ------------------------------------------------------------
# kernel/trace/ring_buffer.c: a sub-buffer page is a header (u64 time stamp, local_t commit = data size plus the
# RB_MISSED_* flags) and compressed entries: a u32 with type_len (5 bits) and time_delta (27 bits), then either
# the event (type_len 1..28: type_len * 4 bytes; 0: length in the next u32), padding (29), a time extend (30:
# delta high bits in the next u32) or an absolute time stamp (31). Layouts come from events/header_page and each
# event's format file.

_RB_PADDING, _RB_TIME_EXTEND, _RB_TIME_STAMP = 29, 30, 31
_RB_MISSED_EVENTS = 1 << 31
_RB_MISSED_STORED = 1 << 30
_FORMAT_FIELD = re.compile(r"field:[^;]*?(\w+)(?:\[\d*\])?;\s*offset:(\d+);\s*size:(\d+);")


@dataclass(frozen=True, slots=True)
class RawFormat:
    """What parsing the binary ring buffer needs: sub-buffer size, page header layout, event ids and field offsets."""

    subbuf_size: int
    data_offset: int
    commit_size: int
    kernel_ids: dict[int, bool] = field(default_factory=dict)  # event id -> is page_fault_kernel
    pid: int = 4
    address: int = 8
    ip: int = 16
    error_code: int = 24
    task_ids: dict[int, tuple[str, int]] = field(default_factory=dict)  # event id -> (kind, offset of child/mm)


def parse_raw(pages: Iterable[tuple[int, bytes]], fmt: RawFormat,
              symbolize: Callable[[int], str] | None = None,
              tasks: list[TaskEvent] | None = None) -> tuple[list[FaultEvent], int]:
    """Fault events of binary ring-buffer pages ``(cpu, page)`` (each CPU's pages in the order read), with
    nanosecond CLOCK_MONOTONIC times; and the number of events the pages say were missed. ``symbolize`` names a
    kernel fault's ip (otherwise the hex address). Process events (``fmt.task_ids``) are appended to ``tasks``
    when it is given."""
    out: list[FaultEvent] = []
    missed = 0
    ids = fmt.kernel_ids
    unpack_u32 = struct.Struct("<I").unpack_from
    unpack_u64 = struct.Struct("<Q").unpack_from
    body = struct.Struct("<Hxxi")
    offs = (fmt.address, fmt.ip, fmt.error_code)
    task_ids = fmt.task_ids if tasks is not None else {}
    i32 = struct.Struct("<i").unpack_from
    data0 = fmt.data_offset
    for cpu, page in pages:
        if len(page) < data0:
            continue
        ts = unpack_u64(page, 0)[0]
        commit = int.from_bytes(page[8:8 + fmt.commit_size], "little")
        size = commit & ~(_RB_MISSED_EVENTS | _RB_MISSED_STORED) & 0xFFFFFFFF
        if commit & _RB_MISSED_EVENTS:
            if commit & _RB_MISSED_STORED and data0 + size + 8 <= len(page):
                missed += unpack_u64(page, data0 + size)[0]
            else:
                missed += 1
        pos, end = data0, min(data0 + size, len(page))
        while pos + 4 <= end:
            word = unpack_u32(page, pos)[0]
            type_len, delta = word & 31, word >> 5
            if type_len == _RB_PADDING:
                if delta == 0:
                    break  # the rest of the page is empty
                pos += unpack_u32(page, pos + 4)[0] + 4
                continue
            if type_len == _RB_TIME_EXTEND:
                ts += (unpack_u32(page, pos + 4)[0] << 27) | delta
                pos += 8
                continue
            if type_len == _RB_TIME_STAMP:
                ts = (unpack_u32(page, pos + 4)[0] << 27) | delta
                pos += 8
                continue
            ts += delta
            if type_len:
                start, length = pos + 4, type_len * 4
            else:
                length = unpack_u32(page, pos + 4)[0] - 4
                start = pos + 8
            pos = start + length
            etype, pid = body.unpack_from(page, start)
            kernel = ids.get(etype)
            if kernel is None:
                task = task_ids.get(etype)
                if task is not None and tasks is not None:
                    kind, off = task
                    if kind == "exit":
                        tasks.append(TaskEvent(kind, pid, cpu, ts / 1000.0))
                    elif kind == "fork" and length >= off + 4:
                        tasks.append(TaskEvent(kind, pid, cpu, ts / 1000.0, child=i32(page, start + off)[0]))
                    elif kind == "exit_mmap" and length >= off + 8:
                        tasks.append(TaskEvent(kind, pid, cpu, ts / 1000.0, mm=unpack_u64(page, start + off)[0]))
                    elif kind == "sys_enter" and length >= off + 8:
                        tasks.append(TaskEvent(kind, pid, cpu, ts / 1000.0, nr=unpack_u64(page, start + off)[0]))
                continue
            if length < offs[2] + 8:
                continue
            address = unpack_u64(page, start + offs[0])[0]
            ip = unpack_u64(page, start + offs[1])[0]
            code = unpack_u64(page, start + offs[2])[0]
            if kernel:
                name = symbolize(ip) if symbolize is not None else f"{ip:#x}"
                out.append(FaultEvent(pid, cpu, ts / 1000.0, address, 0, code, bool(code & X86_PF_WRITE), True, name))
            else:
                out.append(FaultEvent(pid, cpu, ts / 1000.0, address, ip, code, bool(code & X86_PF_WRITE)))
    return out, missed


class KernelSymbols:
    """Names kernel addresses from /proc/kallsyms (root sees the real addresses), for kernel faults' ips."""

    def __init__(self) -> None:
        import bisect

        self._bisect = bisect.bisect_right
        starts: list[int] = []
        names: list[str] = []
        try:
            with open("/proc/kallsyms", encoding="ascii", errors="replace") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[1] in "tTwW":
                        starts.append(int(parts[0], 16))
                        names.append(parts[2])
        except OSError as exc:
            raise os_error("/proc/kallsyms", exc) from None
        order = sorted(range(len(starts)), key=starts.__getitem__)
        self._starts = [starts[i] for i in order]
        self._names = [names[i] for i in order]

    def __call__(self, addr: int) -> str:
        i = self._bisect(self._starts, addr) - 1
        if i < 0 or not self._starts[i]:
            return f"{addr:#x}"
        return self._names[i]


class FaultRecorder:
    """Record ``exceptions:page_fault_user`` events of chosen pids (context manager).

    ``pids`` are traced from entry (none: the event stays off until :meth:`set_pids`);
    ``follow_forks`` also traces children the traced tasks fork (option event-fork);
    ``kernel_faults`` also records ``exceptions:page_fault_kernel`` on user addresses (the
    kernel's own accesses to user memory, e.g. copy_to_user() into an untouched buffer).
    ``task_events`` also records ``sched:sched_process_fork``, ``sched:sched_process_exit`` and
    ``mmap:exit_mmap`` (read with :func:`parse_raw`'s ``tasks``): kernel times of fork, exit and MM
    teardown; ``syscall_entries``
    records ``raw_syscalls:sys_enter`` of those system call numbers (when each call's work begins).
    ``buffer_kb`` is the per-CPU ring buffer; it does not overwrite when full: the
    newest events are dropped and the next :meth:`drain` raises HostError (or, with
    ``raise_on_loss=False``, counts them in :attr:`lost_events`).
    """

    def __init__(
        self,
        pids: Iterable[int] = (),
        follow_forks: bool = False,
        buffer_kb: int = 1024,
        raise_on_loss: bool = True,
        kernel_faults: bool = False,
        task_events: bool = False,
        syscall_entries: Iterable[int] = (),
    ) -> None:
        self.pids = sorted(set(pids))
        self.follow_forks = follow_forks
        self.kernel_faults = kernel_faults
        self.task_events = task_events
        self.syscall_entries = sorted(set(syscall_entries))
        self.buffer_kb = buffer_kb
        self.raise_on_loss = raise_on_loss
        self.lost_events = 0
        self.mountpoint = ""
        self.instance = ""
        self.removed_leftovers: list[str] = []
        self._pipe_fd = -1
        self._marker_fd = -1
        self._raw_fds: list[tuple[int, int]] = []
        self._raw_size = 4096
        self._partial = b""
        self._losses_seen = 0
        self._active = False
        self._event_on = False

    # -- setup and teardown

    def __enter__(self) -> FaultRecorder:
        self.removed_leftovers = cleanup_leftovers()
        try:
            os.makedirs(RUN_DIR, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise os_error(f"mkdir {RUN_DIR}", exc) from None
        n = 0
        while True:
            n += 1
            mountpoint = f"{MOUNT_PREFIX}{os.getpid()}-{n}"
            if not os.path.lexists(mountpoint):
                break
        try:
            os.mkdir(mountpoint, 0o700)
        except OSError as exc:
            raise os_error(f"mkdir {mountpoint}", exc) from None
        self.mountpoint = mountpoint
        self._active = True
        try:
            _mount(mountpoint)
            self.removed_leftovers += _cleanup_instances(f"{mountpoint}/instances")
            if not os.path.exists(f"{mountpoint}/events/{EVENT}/enable"):
                raise HostUnavailable(f"tracepoint {EVENT.replace('/', ':')} is not available in this kernel")
            if self.kernel_faults and not os.path.exists(f"{mountpoint}/events/{KERNEL_EVENT}/enable"):
                raise HostUnavailable(f"tracepoint {KERNEL_EVENT.replace('/', ':')} is not available in this kernel")
            for event in self._task_events():
                if not os.path.exists(f"{mountpoint}/events/{event}/enable"):
                    raise HostUnavailable(f"tracepoint {event.replace('/', ':')} is not available in this kernel")
            self._make_instance()
            self._configure()
            self._losses_seen = self._loss_counter()
            pids, self.pids = self.pids, []
            self.set_pids(pids)
        except BaseException:
            self._teardown()
            raise
        return self

    def _make_instance(self) -> None:
        base = f"{INSTANCE_PREFIX}{os.getpid()}"
        for n in range(1, 1000):
            name = base if n == 1 else f"{base}-{n}"
            if name in _ours:
                continue
            path = f"{self.mountpoint}/instances/{name}"
            _ours.add(name)
            try:
                try:
                    os.mkdir(path)
                except FileExistsError:
                    _rmdir_instance(path)  # a leftover of a dead process that had our pid
                    os.mkdir(path)
            except OSError as exc:
                _ours.discard(name)
                raise os_error(f"mkdir {path}", exc) from None
            except BaseException:
                _ours.discard(name)
                raise
            self.instance = path
            return
        raise HostError(f"no free tracefs instance name for {base}")

    def _write(self, rel: str, value: str, append: bool = False) -> None:
        """Write ``value`` to the instance's file ``rel`` (truncating it, or appending to it)."""
        path = f"{self.instance}/{rel}"
        flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise os_error(f"open {path}", exc) from None
        try:
            os.write(fd, value.encode())
        except OSError as exc:
            raise os_error(f"{'append' if append else 'write'} {value!r} to {path}", exc) from None
        finally:
            os.close(fd)

    def _append(self, rel: str, value: str) -> None:
        self._write(rel, value, append=True)

    def _configure(self) -> None:
        self._write("tracing_on", "0")
        self._write("buffer_size_kb", str(self.buffer_kb))
        self._write("trace_clock", "mono")
        self._write("options/overwrite", "0")
        self._write("options/event-fork", "1" if self.follow_forks else "0")
        if self.kernel_faults:
            self._write(f"events/{KERNEL_EVENT}/filter", KERNEL_EVENT_FILTER)
        if self.syscall_entries:
            self._write(f"events/{SYS_ENTER_EVENT}/filter", " || ".join(f"id == {nr}" for nr in self.syscall_entries))
        self._write("tracing_on", "1")
        try:
            self._pipe_fd = os.open(f"{self.instance}/trace_pipe", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._marker_fd = os.open(f"{self.instance}/trace_marker", os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise os_error(f"open {self.instance}/trace_pipe", exc) from None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._teardown()

    def _teardown(self) -> None:
        """Disable the event, close our files, remove the instance, unmount (each step best effort, idempotent)."""
        if not self._active:
            return
        self._active = False
        errors: list[str] = []
        if self.instance:
            with contextlib.suppress(HostError):
                self._write(f"events/{EVENT}/enable", "0")
                if self.kernel_faults:
                    self._write(f"events/{KERNEL_EVENT}/enable", "0")
                for event in self._task_events():
                    self._write(f"events/{event}/enable", "0")
                self._write("tracing_on", "0")
        for attr in ("_pipe_fd", "_marker_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)
        for _cpu, fd in self._raw_fds:
            os.close(fd)
        self._raw_fds = []
        if self.instance:
            try:
                _rmdir_instance(self.instance)
            except HostError as exc:
                errors.append(str(exc))
            _ours.discard(os.path.basename(self.instance))
        if self.mountpoint:
            try:
                _umount(self.mountpoint)
            except HostError as exc:
                errors.append(str(exc))
        if errors:
            raise HostError("FaultRecorder cleanup: " + "; ".join(errors))

    # -- control

    def set_pids(self, pids: Iterable[int]) -> None:
        """Trace exactly ``pids`` from now on (and their children if follow_forks); none: event off.

        Adding pids appends to ``set_event_pid`` without a gap. Dropping pids (including
        children the kernel added under ``follow_forks``) has to
        truncate the list, and an empty list means "every process", so the event is
        switched off around the rewrite: faults during that instant are not recorded
        (call it between steps, when the traced processes are waiting).
        """
        self._require_active()
        new = sorted(set(pids))
        current = self._traced_pids()  # includes children the kernel added (event-fork)
        if self._event_on and current == set(new):
            self.pids = new
            return
        dropping = bool(current - set(new))
        if self._event_on and (dropping or not new):
            self._set_event(False)
        text = " ".join(str(p) for p in new)
        if dropping or not self._event_on:
            self._write("set_event_pid", text)  # O_TRUNC: replaces the list
        elif new:
            self._append("set_event_pid", text)
        self.pids = new
        if new and not self._event_on:
            self._set_event(True)

    def _traced_pids(self) -> set[int]:
        """The instance's current ``set_event_pid`` list."""
        path = f"{self.instance}/set_event_pid"
        try:
            with open(path, encoding="ascii") as f:
                return {int(tok) for tok in f.read().split()}
        except (OSError, ValueError) as exc:
            raise HostError(f"{path}: unreadable pid list ({exc})") from None

    def _set_event(self, on: bool) -> None:
        self._write(f"events/{EVENT}/enable", "1" if on else "0")
        if self.kernel_faults:
            self._write(f"events/{KERNEL_EVENT}/enable", "1" if on else "0")
        for event in self._task_events():
            self._write(f"events/{event}/enable", "1" if on else "0")
        self._event_on = on

    def _task_events(self) -> tuple[str, ...]:
        events = (FORK_EVENT, EXIT_EVENT, EXIT_MMAP_EVENT) if self.task_events else ()
        return (*events, SYS_ENTER_EVENT) if self.syscall_entries else events

    def mark(self, text: str) -> None:
        """Write one line to the instance's trace_marker (shows up in :meth:`drain_all` in stream order)."""
        self._require_active()
        line = " ".join(text.split())[:1000] or "-"
        try:
            os.write(self._marker_fd, line.encode())
        except OSError as exc:
            raise os_error(f"write {self.instance}/trace_marker", exc) from None

    # -- reading

    def drain(self) -> list[FaultEvent]:
        """The fault events recorded since the last drain, in order (markers dropped)."""
        return [e for e in self.drain_all() if isinstance(e, FaultEvent)]

    def drain_all(self) -> list[FaultEvent | Marker]:
        """Fault events and markers recorded since the last drain, in order.

        Consumes ``trace_pipe`` until it is empty, so nothing is returned twice; raises
        HostError if the ring buffer dropped events since the last drain.
        """
        self._require_active()
        chunks = [self._partial]
        while True:
            try:
                data = os.read(self._pipe_fd, _READ_CHUNK)
            except BlockingIOError:
                break
            except OSError as exc:
                raise os_error(f"read {self.instance}/trace_pipe", exc) from None
            if not data:
                break
            chunks.append(data)
        blob = b"".join(chunks)
        cut = blob.rfind(b"\n") + 1
        self._partial = blob[cut:]
        out: list[FaultEvent | Marker] = []
        lost = 0
        fast = _parse_fault_fast
        for raw in blob[:cut].decode(errors="replace").splitlines():
            item: FaultEvent | Marker | int | None = fast(raw)
            if item is None:
                item = self._parse(raw)
            if isinstance(item, int):
                lost += item
            elif item is not None:
                out.append(item)
        counter = self._loss_counter()
        lost = max(lost, counter - self._losses_seen)
        self._losses_seen = counter
        if lost:
            self.lost_events += lost
            if self.raise_on_loss:
                raise HostError(
                    f"{self.instance}: the trace ring buffer dropped {lost} events (buffer_size_kb "
                    f"{self.buffer_kb} per CPU): drain more often or use a bigger buffer"
                )
        return out

    @staticmethod
    def _parse(line: str) -> FaultEvent | Marker | int | None:
        """A FaultEvent or Marker; an int for a "LOST n EVENTS" line; None for anything else."""
        m = _LINE.match(line)
        if m is None:
            lost = _LOST.match(line)
            return int(lost.group("n")) if lost else None
        secs, _, frac = m["ts"].partition(".")
        ts = (int(secs) * 10 ** len(frac) + int(frac or "0")) / 10 ** (len(frac) - 6)
        pid, cpu = int(m["pid"]), int(m["cpu"])
        if m["event"] == "page_fault_user":
            f = _FAULT.search(m["body"])
            if f is None:
                return None
            code = int(f["error_code"], 16)
            return FaultEvent(pid, cpu, ts, int(f["address"], 16), int(f["ip"], 16), code, bool(code & X86_PF_WRITE))
        if m["event"] == "page_fault_kernel":
            f = _FAULT.search(m["body"])
            if f is None:
                return None
            code = int(f["error_code"], 16)
            return FaultEvent(pid, cpu, ts, int(f["address"], 16), 0, code, bool(code & X86_PF_WRITE), True, f["ip"])
        if m["event"] == "tracing_mark_write":
            return Marker(pid, cpu, ts, m["body"])
        return None

    # -- binary reading (fast: no text formatting in the kernel, no parsing here; nanosecond times)

    def raw_format(self) -> RawFormat:
        """The layouts :func:`parse_raw` needs, from this instance's format files."""
        self._require_active()
        try:
            with open(f"{self.mountpoint}/events/header_page", encoding="ascii") as f:
                header = {m[0]: (int(m[1]), int(m[2])) for m in _FORMAT_FIELD.findall(f.read())}
            ids: dict[int, bool] = {}
            fields: dict[str, int] = {}
            for event, kernel in ((EVENT, False), (KERNEL_EVENT, True)):
                if kernel and not self.kernel_faults:
                    continue
                with open(f"{self.mountpoint}/events/{event}/id", encoding="ascii") as f:
                    ids[int(f.read())] = kernel
                with open(f"{self.mountpoint}/events/{event}/format", encoding="ascii") as f:
                    fields = {m[0]: int(m[1]) for m in _FORMAT_FIELD.findall(f.read())}
            task_ids: dict[int, tuple[str, int]] = {}
            for event, kind, name in ((FORK_EVENT, "fork", "child_pid"), (EXIT_EVENT, "exit", "common_pid"),
                                      (EXIT_MMAP_EVENT, "exit_mmap", "mm"), (SYS_ENTER_EVENT, "sys_enter", "id")):
                if event not in self._task_events():
                    continue
                with open(f"{self.mountpoint}/events/{event}/id", encoding="ascii") as f:
                    event_id = int(f.read())
                with open(f"{self.mountpoint}/events/{event}/format", encoding="ascii") as f:
                    offsets = {m[0]: int(m[1]) for m in _FORMAT_FIELD.findall(f.read())}
                if name not in offsets:
                    raise HostError(f"{self.mountpoint}/events/{event}/format: no field {name}")
                task_ids[event_id] = (kind, offsets[name])
            subbuf_kb = 4
            with contextlib.suppress(OSError, ValueError), open(f"{self.instance}/buffer_subbuf_size_kb") as f:
                subbuf_kb = int(f.read())
        except (OSError, ValueError) as exc:
            raise HostError(f"{self.mountpoint}: unreadable ring buffer format ({exc})") from None
        try:
            return RawFormat(subbuf_kb * 1024, header["data"][0], header["commit"][1], ids, fields["common_pid"],
                             fields["address"], fields["ip"], fields["error_code"], task_ids)
        except KeyError as exc:
            raise HostError(f"{self.mountpoint}: ring buffer format without {exc}") from None

    def drain_raw(self) -> list[tuple[int, bytes]]:
        """Every CPU's binary ring-buffer pages recorded since the last drain, as ``(cpu, page)`` (consumed: do not
        mix with :meth:`drain`). Parse them with :func:`parse_raw`; a lost event is counted in lost_events."""
        self._require_active()
        if not self._raw_fds:
            per_cpu = f"{self.instance}/per_cpu"
            try:
                for name in sorted(os.listdir(per_cpu)):
                    if name.startswith("cpu") and name[3:].isdigit():
                        fd = os.open(f"{per_cpu}/{name}/trace_pipe_raw", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                        self._raw_fds.append((int(name[3:]), fd))
            except OSError as exc:
                raise os_error(f"{per_cpu}/*/trace_pipe_raw", exc) from None
            self._raw_size = self.raw_format().subbuf_size
        out: list[tuple[int, bytes]] = []
        for cpu, fd in self._raw_fds:
            while True:
                try:
                    page = os.read(fd, self._raw_size)
                except BlockingIOError:
                    break
                except OSError as exc:
                    raise os_error(f"read {self.instance}/per_cpu/cpu{cpu}/trace_pipe_raw", exc) from None
                if not page:
                    break
                out.append((cpu, page))
        counter = self._loss_counter()
        if counter > self._losses_seen:
            self.lost_events += counter - self._losses_seen
            self._losses_seen = counter
        return out

    def _loss_counter(self) -> int:
        """Events the instance's ring buffer has dropped or overwritten so far, over all CPUs."""
        total = 0
        per_cpu = f"{self.instance}/per_cpu"
        try:
            cpus = os.listdir(per_cpu)
        except OSError as exc:
            raise os_error(per_cpu, exc) from None
        for cpu in cpus:
            try:
                with open(f"{per_cpu}/{cpu}/stats", encoding="ascii") as f:
                    total += sum(int(n) for _, n in _STAT.findall(f.read()))
            except OSError as exc:
                raise os_error(f"{per_cpu}/{cpu}/stats", exc) from None
        return total

    def _require_active(self) -> None:
        if not self._active:
            raise HostError("FaultRecorder is not active (use it as a context manager)")
