"""Trace a command's whole process tree with ptrace, stopping it only at the system calls a seccomp filter selects.

The command's first process installs a classic-BPF seccomp filter (kernel/seccomp.c, SECCOMP_MODE_FILTER) that
returns SECCOMP_RET_TRACE for a chosen set of x86-64 system calls and SECCOMP_RET_ALLOW for every other one, so
the tracee stops only at those (a PTRACE_EVENT_SECCOMP stop, kernel/seccomp.c __seccomp_filter()); the filter is
inherited by every child and survives execve. The tracer (kernel/ptrace.c: PTRACE_SEIZE with
TRACESECCOMP|TRACEFORK|TRACEVFORK|TRACECLONE|TRACEEXEC|TRACEEXIT|EXITKILL|TRACESYSGOOD) follows every fork, clone,
vfork, execve and exit, reads a stopped call's number and arguments with PTRACE_GET_SYSCALL_INFO, and gets its
result at the syscall-exit stop that PTRACE_SYSCALL after a seccomp stop produces.

:meth:`Tracer.run` yields one event per stop *while the tracee is still stopped* (its memory and registers can be
read, a snapshot taken, a system call injected); the tracee resumes when the caller asks for the next event.
Every event carries a CLOCK_MONOTONIC time in microseconds taken while the task was stopped, and the tracer never
resumes a task before the clock has moved past that microsecond, so an event of a task is strictly after every
fault (tracefs, microsecond resolution) the task took before it and strictly before every fault it takes after.

x86-64 only. Needs ptrace rights over the command (it is our child) and, for PROCMAP_QUERY and /proc/PID/mem of
set-id programs, root. Nothing here imports the model.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import signal
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from foliosim.host.errors import HostError, HostUnavailable, os_error

# --- ptrace(2) requests, options and events (include/uapi/linux/ptrace.h) -----------------------------------------
PTRACE_CONT = 7
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_SYSCALL = 24
PTRACE_GETEVENTMSG = 0x4201
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_GET_SYSCALL_INFO = 0x420E

PTRACE_O_TRACESYSGOOD = 0x1
PTRACE_O_TRACEFORK = 0x2
PTRACE_O_TRACEVFORK = 0x4
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACEEXIT = 0x40
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 0x100000
OPTIONS = (PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE
           | PTRACE_O_TRACEEXEC | PTRACE_O_TRACEEXIT | PTRACE_O_TRACESECCOMP | PTRACE_O_EXITKILL)

PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_EXIT = 6
PTRACE_EVENT_SECCOMP = 7
PTRACE_EVENT_STOP = 128

PTRACE_SYSCALL_INFO_ENTRY = 1
PTRACE_SYSCALL_INFO_EXIT = 2
PTRACE_SYSCALL_INFO_SECCOMP = 3

#: wait for every child, clone or not (include/uapi/linux/wait.h __WALL)
WALL = 0x40000000

# --- seccomp (include/uapi/linux/seccomp.h, filter.h, audit.h, prctl.h) --------------------------------------------
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_TRACE = 0x7FF00000
#: the SECCOMP_RET_DATA our filter attaches to its traps: a trap without it is another filter's (the program's own)
FILTER_DATA = 0x0F05
SECCOMP_RET_ALLOW = 0x7FFF0000
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000
_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_RET_K = 0x06

# --- clone flags (include/uapi/linux/sched.h) ----------------------------------------------------------------------
CSIGNAL = 0xFF
CLONE_VM = 0x100
CLONE_VFORK = 0x4000
CLONE_THREAD = 0x10000
SIGCHLD = int(signal.SIGCHLD)

#: x86-64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl) of every call the tracer can stop at.
SYSCALL_NUMBERS: Mapping[str, int] = {
    "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12, "mremap": 25, "madvise": 28, "shmat": 30,
    "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "shmdt": 67, "mlock": 149, "mlockall": 151,
    "remap_file_pages": 216, "mbind": 237, "vmsplice": 278, "move_pages": 279, "process_vm_writev": 311,
    "execveat": 322, "mlock2": 325, "pkey_mprotect": 329, "io_uring_register": 427, "clone3": 435,
    "process_madvise": 440, "prctl": 157,
}
SYSCALL_NAMES: Mapping[int, str] = {nr: name for name, nr in SYSCALL_NUMBERS.items()}
#: the calls that create tasks or replace an MM: always stopped at (their entry time dates fork and exec)
PROCESS_SYSCALLS = ("clone", "clone3", "fork", "vfork", "execve", "execveat")
#: the address-space calls of docs/run-trace.md
MEMORY_SYSCALLS = ("mmap", "munmap", "mremap", "mprotect", "madvise", "brk", "shmat", "io_uring_register", "vmsplice")
#: further calls that change or populate a mapping without a user page fault (recorded, for the importer to judge)
EXTRA_MEMORY_SYSCALLS = ("shmdt", "pkey_mprotect", "remap_file_pages", "mlock", "mlock2", "mlockall",
                         "process_madvise", "process_vm_writev", "mbind", "move_pages", "prctl")
#: the prctl() options that change memory (include/uapi/linux/prctl.h): only these prctl calls are stopped at
PR_SET_THP_DISABLE = 41
PR_SET_MEMORY_MERGE = 67
PR_SET_VMA = 0x53564D41
PRCTL_OPTIONS = (PR_SET_THP_DISABLE, PR_SET_MEMORY_MERGE, PR_SET_VMA)

_STOP_SIGNALS = frozenset({int(signal.SIGSTOP), int(signal.SIGTSTP), int(signal.SIGTTIN), int(signal.SIGTTOU)})
_SYSCALL_TRAP = int(signal.SIGTRAP) | 0x80
_AT_SYSINFO_EHDR = 33
_SYSCALL_INSN = b"\x0f\x05"


class TracerError(HostError):
    """ptrace or the traced command failed: the message names the call, the task and the errno."""


# --- libc ------------------------------------------------------------------------------------------------------------


def _load_libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.prctl.restype = ctypes.c_int
    libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
    libc.ioctl.restype = ctypes.c_int
    libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    libc.statfs.restype = ctypes.c_int
    return libc


_libc = _load_libc()
_ptrace = _libc.ptrace


class UserRegs(ctypes.Structure):
    """struct user_regs_struct of x86-64 (arch/x86/include/asm/user_64.h), for PTRACE_GETREGS/SETREGS."""

    _fields_ = [(name, ctypes.c_ulong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
        "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")]


class _SyscallInfo(ctypes.Structure):
    """struct ptrace_syscall_info (include/uapi/linux/ptrace.h): header, then entry/seccomp nr+args or exit rval."""

    _fields_ = [("op", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3), ("arch", ctypes.c_uint32),
                ("ip", ctypes.c_uint64), ("sp", ctypes.c_uint64), ("nr", ctypes.c_uint64),
                ("args", ctypes.c_uint64 * 6), ("ret_data", ctypes.c_uint32), ("pad2", ctypes.c_uint32)]


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _signed(value: int) -> int:
    """An unsigned 64-bit register value as the signed long the kernel returned."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _errname(err: int) -> str:
    return errno.errorcode.get(err, str(err))


# --- the seccomp filter ----------------------------------------------------------------------------------------------


def seccomp_filter(numbers: Iterable[int], prctl_options: Iterable[int] = ()) -> list[tuple[int, int, int, int]]:
    """The classic-BPF program (code, jt, jf, k) that traces exactly ``numbers`` of the x86-64 ABI, and prctl()
    only with one of ``prctl_options`` as its first argument.

    It checks ``seccomp_data.arch`` first: a call of another ABI (i386 ``int 0x80``) and an x32 call (number with
    bit 30) are traced too, so the tracer sees and reports them instead of missing them; everything else is
    allowed. include/uapi/linux/seccomp.h struct seccomp_data: nr at offset 0, arch at 4, args[0] at 16 (its
    low 32 bits: prctl's option is an int).
    """
    options = sorted(set(prctl_options))
    nrs = sorted(set(numbers) - ({SYSCALL_NUMBERS["prctl"]} if options else set()))
    if len(nrs) > 250:
        raise ValueError("too many system calls for one-byte jump offsets")
    prog: list[tuple[int, int, int, int]] = [
        (_BPF_LD_W_ABS, 0, 0, 4),                      # A = arch
        (_BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),         # x86-64: skip the next
        (_BPF_RET_K, 0, 0, SECCOMP_RET_TRACE | FILTER_DATA),  # another ABI: trace
        (_BPF_LD_W_ABS, 0, 0, 0),                      # A = nr
        (_BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),           # x32: trace
        (_BPF_RET_K, 0, 0, SECCOMP_RET_TRACE | FILTER_DATA),
    ]
    if options:  # prctl: trace only the memory options
        k = len(options)
        prog.append((_BPF_JEQ_K, 0, k + 3, SYSCALL_NUMBERS["prctl"]))  # not prctl: on to the list
        prog.append((_BPF_LD_W_ABS, 0, 0, 16))                         # A = option
        for j, option in enumerate(options):
            prog.append((_BPF_JEQ_K, k - j, 0, option))              # match: over the rest and the ALLOW
        prog.append((_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
        prog.append((_BPF_RET_K, 0, 0, SECCOMP_RET_TRACE | FILTER_DATA))
    n = len(nrs)
    for j, nr in enumerate(nrs):
        prog.append((_BPF_JEQ_K, n - j, 0, nr))        # match: jump over the rest and the ALLOW to the TRACE
    prog.append((_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    prog.append((_BPF_RET_K, 0, 0, SECCOMP_RET_TRACE | FILTER_DATA))
    return prog


def _install_filter(prog: Sequence[tuple[int, int, int, int]]) -> None:
    """prctl(PR_SET_NO_NEW_PRIVS) then prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER) on the calling thread."""
    filters = (_SockFilter * len(prog))(*[_SockFilter(c, jt, jf, k) for c, jt, jf, k in prog])
    fprog = _SockFprog(len(prog), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


# --- VMAs of a stopped task ------------------------------------------------------------------------------------------

#: _IOWR('f', 17, struct procmap_query) (include/uapi/linux/fs.h, Linux 6.11+)
_PROCMAP_QUERY = (3 << 30) | (104 << 16) | (ord("f") << 8) | 17
TMPFS_MAGIC = 0x01021994
HUGETLBFS_MAGIC = 0x958458F6


class _ProcmapQuery(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "size", "query_flags", "query_addr", "vma_start", "vma_end", "vma_flags", "vma_page_size", "vma_offset",
        "inode")] + [("dev_major", ctypes.c_uint32), ("dev_minor", ctypes.c_uint32),
                     ("vma_name_size", ctypes.c_uint32), ("build_id_size", ctypes.c_uint32),
                     ("vma_name_addr", ctypes.c_uint64), ("build_id_addr", ctypes.c_uint64)]


@dataclass(frozen=True, slots=True)
class Vma:
    """One VMA of a task: range, permissions, file offset, and the mapped file's identity (dev, inode, path)."""

    start: int
    end: int
    readable: bool
    writable: bool
    executable: bool
    shared: bool
    offset: int
    dev: str  # "MAJ:MIN" in hex, as /proc/PID/maps prints it
    inode: int
    path: str

    @property
    def anonymous(self) -> bool:
        """No file behind it (private anonymous, heap, stack); MAP_SHARED|MAP_ANONYMOUS has an inode."""
        return self.inode == 0


def _statfs_type(path: str) -> int | None:
    """f_type of the filesystem holding ``path`` (statfs(2)), or None if it cannot be read."""
    buf = ctypes.create_string_buffer(256)
    if _libc.statfs(os.fsencode(path), buf) != 0:
        return None
    return int(struct.unpack_from("<q", buf.raw, 0)[0])


class VmaQuery:
    """Find the VMA covering an address of a process: PROCMAP_QUERY on /proc/PID/maps (one ioctl, Linux 6.11+;
    fs/proc/task_mmu.c do_procmap_query()), or a parse of /proc/PID/maps where the ioctl is missing.

    The maps file is bound to the MM it was opened on: call :meth:`forget` after the process execs or exits.
    """

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}
        self._ioctl_ok = True
        self._name = ctypes.create_string_buffer(4096)
        self._fstype: dict[str, int | None] = {}

    def find(self, pid: int, addr: int, tid: int | None = None) -> Vma | None:
        """The VMA of process ``pid`` that contains ``addr``, or None if no VMA does. ``tid``: a live thread of it
        to open the maps file through (the leader may have exited while other threads run)."""
        who = tid if tid is not None else pid
        if self._ioctl_ok:
            fd = self._fds.get(pid)
            if fd is None:
                try:
                    fd = os.open(f"/proc/{who}/maps", os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    raise os_error(f"/proc/{who}/maps", exc) from None
                self._fds[pid] = fd
            q = _ProcmapQuery(size=ctypes.sizeof(_ProcmapQuery), query_addr=addr,
                              vma_name_size=len(self._name), vma_name_addr=ctypes.addressof(self._name))
            if _libc.ioctl(fd, _PROCMAP_QUERY, ctypes.byref(q)) == 0:
                name = self._name.raw[: max(q.vma_name_size - 1, 0)].decode(errors="surrogateescape")
                return Vma(q.vma_start, q.vma_end, bool(q.vma_flags & 1), bool(q.vma_flags & 2),
                           bool(q.vma_flags & 4), bool(q.vma_flags & 8), q.vma_offset,
                           f"{q.dev_major:02x}:{q.dev_minor:02x}", q.inode, name)
            err = ctypes.get_errno()
            if err == errno.ENOENT:
                return None
            if err not in (errno.ENOTTY, errno.EINVAL):
                raise HostError(f"ioctl(/proc/{pid}/maps, PROCMAP_QUERY, {addr:#x}): {_errname(err)}")
            self._ioctl_ok = False
        return self._find_in_text(who, addr)

    @staticmethod
    def _find_in_text(pid: int, addr: int) -> Vma | None:
        from foliosim.host.procfs import Maps

        entry = Maps.read(pid).find(addr)
        if entry is None:
            return None
        perms = entry.perms
        return Vma(entry.start, entry.end, perms[0] == "r", perms[1] == "w", perms[2] == "x", perms[3] == "s",
                   entry.offset, entry.dev, entry.inode, entry.path)

    def fstype(self, pid: int, vma: Vma) -> int | None:
        """The statfs f_type of the file a VMA maps (through /proc/PID/map_files, root), cached per device."""
        if vma.dev not in self._fstype:
            self._fstype[vma.dev] = _statfs_type(f"/proc/{pid}/map_files/{vma.start:x}-{vma.end:x}")
        return self._fstype[vma.dev]

    def forget(self, pid: int) -> None:
        """Drop the maps file of ``pid`` (after exec or exit)."""
        fd = self._fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for pid in list(self._fds):
            self.forget(pid)


# --- present pages of a stopped task --------------------------------------------------------------------------------

#: _IOWR('f', 16, struct pm_scan_arg) (include/uapi/linux/fs.h, Linux 6.7+)
_PAGEMAP_SCAN = (3 << 30) | (96 << 16) | (ord("f") << 8) | 16
#: page categories of PAGEMAP_SCAN (include/uapi/linux/fs.h)
PAGE_IS_FILE = 1 << 2
PAGE_IS_PRESENT = 1 << 3
_SCAN_VEC = 512
_PM_PRESENT_BYTE = 0x80  # pagemap bit 63 in an entry's top byte
_PM_FILE_BYTE = 0x20  # pagemap bit 61 (file page or shared anonymous) in the top byte
_PRESENT_TABLE = bytes(1 if b & _PM_PRESENT_BYTE else 0 for b in range(256))
_ANON_TABLE = bytes(1 if b & _PM_PRESENT_BYTE and not b & _PM_FILE_BYTE else 0 for b in range(256))


class _PmScanArg(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages", "category_inverted",
        "category_mask", "category_anyof_mask", "return_mask")]


class _PageRegion(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("categories", ctypes.c_uint64)]


class PresentPages:
    """The present pages of a task's address ranges, as runs of page numbers, without reading every page.

    PAGEMAP_SCAN on /proc/TID/pagemap (fs/proc/task_mmu.c do_pagemap_scan(): one ioctl returns the runs of pages
    in the asked categories); where the ioctl is missing, the pagemap is read and its entries' present bits
    scanned. ``anon_only`` keeps pages that are not file pages (anonymous folios, also the copies in private file
    mappings, and the zero page), as pagemap's "file-page or shared-anon" bit tells."""

    def __init__(self) -> None:
        self._scan_ok = True
        self._vec = (_PageRegion * _SCAN_VEC)()

    def runs(self, tid: int, ranges: Iterable[tuple[int, int]], anon_only: bool = False) -> list[tuple[int, int]]:
        """Runs ``(first, end)`` (page numbers) of present pages inside ``ranges`` (page-number ranges)."""
        path = f"/proc/{tid}/pagemap"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise os_error(path, exc) from None
        out: list[tuple[int, int]] = []
        try:
            for start, end in ranges:
                if end <= start:
                    continue
                found = self._scan(fd, path, start, end, anon_only) if self._scan_ok else None
                if found is None:
                    found = self._read(fd, path, start, end, anon_only)
                for lo, hi in found:
                    if out and out[-1][1] == lo:
                        out[-1] = (out[-1][0], hi)
                    else:
                        out.append((lo, hi))
        finally:
            os.close(fd)
        return out

    def _scan(self, fd: int, path: str, start: int, end: int, anon_only: bool) -> list[tuple[int, int]] | None:
        out: list[tuple[int, int]] = []
        addr, stop = start << 12, end << 12
        while addr < stop:
            arg = _PmScanArg(size=ctypes.sizeof(_PmScanArg), start=addr, end=stop,
                             vec=ctypes.addressof(self._vec), vec_len=_SCAN_VEC,
                             category_inverted=PAGE_IS_FILE if anon_only else 0,
                             category_mask=PAGE_IS_PRESENT | (PAGE_IS_FILE if anon_only else 0),
                             return_mask=PAGE_IS_PRESENT)
            n = _libc.ioctl(fd, _PAGEMAP_SCAN, ctypes.byref(arg))
            if n < 0:
                err = ctypes.get_errno()
                if err in (errno.ENOTTY, errno.EINVAL) and not out and addr == start << 12:
                    self._scan_ok = False
                    return None
                raise HostError(f"ioctl({path}, PAGEMAP_SCAN, {addr:#x}): {_errname(err)}")
            for i in range(n):
                region = self._vec[i]
                out.append((region.start >> 12, region.end >> 12))
            if arg.walk_end <= addr:
                break
            addr = arg.walk_end
        return out

    @staticmethod
    def _read(fd: int, path: str, start: int, end: int, anon_only: bool) -> list[tuple[int, int]]:
        table = _ANON_TABLE if anon_only else _PRESENT_TABLE
        out: list[tuple[int, int]] = []
        chunk = 1 << 16  # pages per read
        for first in range(start, end, chunk):
            n = min(chunk, end - first)
            try:
                data = os.pread(fd, 8 * n, 8 * first)
            except OSError as exc:
                raise os_error(f"{path} at page {first:#x}", exc) from None
            flags = data[7::8].translate(table)
            for m in re.finditer(b"\x01+", flags):
                out.append((first + m.start(), first + m.end()))
        return out


# --- events ----------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Spawn:
    """The command's first process, stopped before its execve."""

    t: float
    tid: int
    pid: int
    path: str
    argv: list[str]


@dataclass(slots=True)
class SyscallEntry:
    """A traced system call at its seccomp stop (before it runs); ``args`` as passed."""

    t: float
    tid: int
    pid: int
    nr: int
    name: str
    args: tuple[int, ...]
    arch: int = AUDIT_ARCH_X86_64


@dataclass(slots=True)
class SyscallExit:
    """The same call at its syscall-exit stop: ``ret`` is the return value (negative: -errno)."""

    t: float
    entry: SyscallEntry
    ret: int

    @property
    def tid(self) -> int:
        return self.entry.tid

    @property
    def pid(self) -> int:
        return self.entry.pid


@dataclass(slots=True)
class Fork:
    """A new task, reported at the creator's fork/vfork/clone event stop (the creator is stopped).

    ``t`` is the time of the creating call's entry (its seccomp stop): the MM copy happens after it, and the
    child's first access (even a kernel put_user of CLONE_CHILD_SETTID) follows it.
    """

    t: float
    tid: int
    pid: int
    child_tid: int
    child_pid: int
    clone_flags: int
    thread: bool  # CLONE_VM without CLONE_VFORK: shares the creator's MM
    vfork: bool  # CLONE_VFORK
    t_event: float = 0.0

    @property
    def new_mm(self) -> bool:
        """Whether the child has an MM of its own (a copy), i.e. neither a thread nor a CLONE_VM vfork child."""
        return not self.clone_flags & CLONE_VM


@dataclass(slots=True)
class ChildStart:
    """A new task at its first stop, before it ran any user code (after its Fork was reported)."""

    t: float
    tid: int
    pid: int
    fork: Fork


@dataclass(slots=True)
class Exec:
    """A successful execve, reported at its syscall-exit stop. ``t`` is the call's entry time: the kernel's own
    accesses to the new MM (ELF loading, the initial stack) happen during the call and follow it."""

    t: float
    tid: int
    pid: int
    former_tid: int
    path: str
    argv: list[str]
    killed_threads: list[int] = field(default_factory=list)
    t_event: float = 0.0


@dataclass(slots=True)
class Exit:
    """A task ends. ``stopped``: reported at its PTRACE_EVENT_EXIT stop, memory still mapped (else reported when
    reaped). ``group``: no other task of its thread group is left, so its MM goes away."""

    t: float
    tid: int
    pid: int
    code: int | None
    signal: int | None
    group: bool
    stopped: bool


Event = Spawn | SyscallEntry | SyscallExit | Fork | ChildStart | Exec | Exit


# --- per-task state --------------------------------------------------------------------------------------------------

_S_RUNNING = 0
_S_NEW = 1  # created, first stop not seen yet
_S_PARKED = 2  # first stop seen before its creator's event: held until the Fork is reported


@dataclass(slots=True)
class _Task:
    tid: int
    pid: int
    state: int = _S_RUNNING
    syscall: SyscallEntry | None = None  # awaiting its exit stop
    clone_entry: tuple[float, int] | None = None  # (entry time, flags) of the last clone/fork/vfork call
    exec_entry: float | None = None
    exec_event: tuple[float, int] | None = None  # (event time, former tid) between the exec event and exit stop
    exit_reported: bool = False
    exiting: bool = False
    fork: Fork | None = None  # set on a new task until its ChildStart
    execed: bool = False
    injectable: bool = False  # at a stop from which a system call can be injected
    hold: bool = False  # an aborted injection left it in another stop, queued: the handler must not resume it
    vfork_child: int = 0  # blocked in vfork until this child execs or exits
    dead: bool = False


@dataclass(slots=True)
class TracerStats:
    """Counters of one run."""

    stops: int = 0
    seccomp_stops: int = 0
    syscall_stops: int = 0
    signals: int = 0
    injected: int = 0
    tasks: int = 0
    other_abi: int = 0
    foreign_traps: int = 0


def now_us() -> float:
    """CLOCK_MONOTONIC in microseconds (the clock tracefs' "mono" trace clock reads)."""
    return time.monotonic_ns() / 1000.0


class Tracer:
    """Run ``argv`` under ptrace with the seccomp filter for ``syscalls``; iterate :meth:`run` for its events.

    ``path`` is the executable (resolve it first: ``shutil.which``). Use as a context manager: leaving it kills
    every task still traced (SIGKILL, by pid) and reaps it. :meth:`kill_all` may be called from a signal handler.
    """

    def __init__(self, path: str, argv: Sequence[str], syscalls: Iterable[str] = MEMORY_SYSCALLS,
                 env: Mapping[str, str] | None = None) -> None:
        names = set(syscalls) | set(PROCESS_SYSCALLS)
        unknown = sorted(names - set(SYSCALL_NUMBERS))
        if unknown:
            raise ValueError(f"unknown system calls {unknown}")
        self.path = path
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.traced = frozenset(SYSCALL_NUMBERS[n] for n in names)
        self.filter = seccomp_filter(self.traced, PRCTL_OPTIONS if "prctl" in names else ())
        self.root = 0
        self.stats = TracerStats()
        self.exit_status: int | None = None  # wait status of the root process
        self.killed = False
        self._tasks: dict[int, _Task] = {}
        self._tgid: dict[int, int] = {}  # every tid ever seen -> its thread group
        self._pending: deque[tuple[int, int]] = deque()
        self._last_exit: dict[int, float] = {}  # thread group -> time of its latest exit stop
        self._last_stamp_us = 0
        self._regs = UserRegs()
        self._info = _SyscallInfo()
        self._msg = ctypes.c_ulong()
        self._gadget_offset: int | None = None
        self.not_stopped: list[int] = []  # the tasks the last freeze() could not stop

    # -- lifetime

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill_all()
        self._reap_all()

    def spawn(self, before_start: Callable[[int], None] | None = None) -> Spawn:
        """Fork the command's first process, let it stop itself, seize it, and return the Spawn event.

        The child stops (SIGSTOP) before it installs the filter, so no call of it can fail for want of a tracer
        (SECCOMP_RET_TRACE with no tracer is ENOSYS); after the seize it installs the filter and execs (once
        :meth:`run` resumes it). ``before_start(pid)`` runs while it is stopped (e.g. to start recording faults).
        """
        if self.root:
            raise TracerError("Tracer.spawn: already spawned")
        prog = self.filter
        path, argv, env = self.path, self.argv, self.env
        pid = os.fork()
        if pid == 0:  # the child: no Python-level cleanup, ever
            try:
                for signo in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores them; a command starts with defaults
                    signal.signal(signo, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGSTOP)
                _install_filter(prog)
                os.execve(path, argv, env)
            except BaseException as exc:  # report and leave with 127 like a shell
                with contextlib.suppress(BaseException):
                    os.write(2, f"foliosim trace: cannot run {path}: {exc}\n".encode(errors="replace"))
            os._exit(127)
        self.root = pid
        _, status = os.waitpid(pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            raise TracerError(f"the command's process {pid} did not stop before execve (wait status {status:#x})")
        t = self._stamp()
        if _ptrace(PTRACE_SEIZE, pid, None, OPTIONS) != 0:
            err = ctypes.get_errno()
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            if err == errno.EPERM:
                raise HostUnavailable(f"ptrace(PTRACE_SEIZE, {pid}): EPERM (ptrace not permitted here: "
                                      "Yama ptrace_scope, a container seccomp policy or a missing CAP_SYS_PTRACE)")
            raise TracerError(f"ptrace(PTRACE_SEIZE, {pid}): {_errname(err)}")
        self._tasks[pid] = _Task(pid, pid)
        self._tgid[pid] = pid
        self.stats.tasks = 1
        if before_start is not None:
            try:
                before_start(pid)
            except BaseException:
                self.kill_all()
                self._reap_all()
                raise
        os.kill(pid, signal.SIGCONT)
        return Spawn(t, pid, pid, path, list(argv))

    # -- queries for the caller (while a task is stopped in a yielded event)

    def tgid_of(self, tid: int) -> int | None:
        """The thread group of any task seen so far (also after it ended)."""
        return self._tgid.get(tid)

    @property
    def tids(self) -> dict[int, int]:
        """Every task seen so far: tid -> thread group id."""
        return dict(self._tgid)

    def live_tids(self, pid: int) -> list[int]:
        """The tasks of thread group ``pid`` that have not reported their exit."""
        return [t.tid for t in self._tasks.values() if t.pid == pid and not t.exiting]

    def read_memory(self, tid: int, addr: int, size: int) -> bytes:
        """``size`` bytes of the task's memory at ``addr`` (/proc/TID/mem; the task should be stopped)."""
        path = f"/proc/{tid}/mem"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise os_error(path, exc) from None
        try:
            data = os.pread(fd, size, addr)
        except OSError as exc:
            raise os_error(f"{path} at {addr:#x}", exc) from None
        finally:
            os.close(fd)
        if len(data) != size:
            raise TracerError(f"{path}: short read at {addr:#x} ({len(data)} of {size} bytes)")
        return data

    def read_words(self, tid: int, addr: int, count: int) -> list[int]:
        """``count`` unsigned 64-bit words of the task's memory at ``addr``."""
        if count <= 0:
            return []
        return list(struct.unpack(f"<{count}Q", self.read_memory(tid, addr, 8 * count)))

    def inject_syscall(self, tid: int, nr: int, args: Sequence[int] = ()) -> int | None:
        """Make the stopped task run system call ``nr`` now and return its result; its registers are put back.

        Only at a ChildStart, Exec or SyscallExit event of ``tid`` (a stop from which the task returns straight
        to user mode). The task executes a ``syscall`` instruction of its own vDSO with the registers set for the
        call, stops at its entry and exit, and gets its saved registers back. Returns None (nothing injected) if
        the task cannot be injected into here, or when something else happened first (a signal arrived, the task
        was killed): that stop is then handled as usual.
        """
        task = self._tasks.get(tid)
        if task is None or not task.injectable or len(args) > 6:
            return None
        gadget = self._gadget(tid)
        if gadget is None:
            return None
        saved = UserRegs()
        if _ptrace(PTRACE_GETREGS, tid, None, ctypes.byref(saved)) != 0:
            return None
        regs = UserRegs.from_buffer_copy(saved)
        regs.rax = nr
        regs.orig_rax = (1 << 64) - 1
        regs.rip = gadget
        for reg, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args, strict=False):
            setattr(regs, reg, value & ((1 << 64) - 1))
        if _ptrace(PTRACE_SETREGS, tid, None, ctypes.byref(regs)) != 0:
            return None
        result: int | None = None
        for phase in (PTRACE_SYSCALL_INFO_ENTRY, PTRACE_SYSCALL_INFO_EXIT):
            if _ptrace(PTRACE_SYSCALL, tid, None, None) != 0:
                return None  # killed: its exit shows up in the main loop
            status = self._wait_one(tid)
            assert status is not None
            if not (os.WIFSTOPPED(status) and os.WSTOPSIG(status) == _SYSCALL_TRAP):
                # a signal or an exit came first: put the registers back and let the main loop handle that stop
                if os.WIFSTOPPED(status):
                    _ptrace(PTRACE_SETREGS, tid, None, ctypes.byref(saved))
                task.injectable = False
                task.hold = True
                self._pending.append((tid, status))
                return None
            if phase == PTRACE_SYSCALL_INFO_EXIT and _ptrace(PTRACE_GETREGS, tid, None, ctypes.byref(regs)) == 0:
                result = _signed(regs.rax)
        if _ptrace(PTRACE_SETREGS, tid, None, ctypes.byref(saved)) != 0:
            return None
        self.stats.injected += 1
        return result

    def freeze(self, except_tid: int, timeout: float = 2.0) -> bool:
        """Hold every other traced task still (for a consistent snapshot of memory that tasks share); they resume
        when iteration goes on. Returns False if some task could not be stopped within ``timeout`` seconds.

        Running tasks get PTRACE_INTERRUPT (all of them, then each is awaited); a new task is awaited at its first
        stop; a task past its exit stop whose thread group is ending is awaited until it has left exit_mm() (a
        zombie, or reaped: kernel/exit.c do_exit() releases the MM before exit_notify()), so no MM is torn down
        while the snapshot is read; a task blocked in vfork() cannot stop before its child execs or exits and is
        left alone (it touches no memory meanwhile).
        """
        queued = {tid for tid, _ in self._pending}
        deadline = time.monotonic() + timeout
        self.not_stopped = []
        tasks = list(self._tasks.values())
        waiting: list[int] = []
        leaving: list[int] = []
        for task in tasks:  # first stop them all, then wait: a slow one does not eat the others' time
            tid = task.tid
            if tid == except_tid or tid in queued or task.state == _S_PARKED or task.vfork_child or task.dead:
                continue
            if task.exiting:
                if not any(o.pid == task.pid and not o.exiting for o in tasks):  # else its group lives on
                    leaving.append(tid)
                continue
            if task.state == _S_RUNNING and _ptrace(PTRACE_INTERRUPT, tid, None, None) != 0:
                continue  # gone meanwhile
            waiting.append(tid)
        for tid in waiting:
            status = self._wait_one(tid, deadline)
            if status is None:
                self.not_stopped.append(tid)
                continue
            self._pending.append((tid, status))
        for tid in leaving:
            if not self._wait_exit_mm(tid, deadline):
                self.not_stopped.append(tid)
        return not self.not_stopped

    def _wait_exit_mm(self, tid: int, deadline: float) -> bool:
        """Wait until exiting task ``tid`` is a zombie or reaped (its death is then queued); False at the deadline."""
        pause = 20e-6
        while True:
            try:
                got, status = os.waitpid(tid, WALL | os.WNOHANG)
            except ChildProcessError:
                return True
            if got:
                self._pending.append((tid, status))
                return True
            try:
                with open(f"/proc/{tid}/stat", "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                return True
            if state in (b"Z", b"X"):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    def kill_all(self) -> None:
        """SIGKILL every thread group still traced (only our own command's tasks, by pid). Signal-handler safe."""
        self.killed = True
        for pid in {t.pid for t in self._tasks.values()}:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for tid in [t.tid for t in self._tasks.values() if t.pid == t.tid]:
            with contextlib.suppress(OSError):
                os.kill(tid, signal.SIGKILL)

    # -- the loop

    def run(self) -> Iterator[Event]:
        """Yield every event until the last traced task is gone; each while its task is stopped."""
        if not self.root:
            raise TracerError("Tracer.run: call spawn() first")
        tasks = self._tasks
        while tasks:
            if self._pending:
                tid, status = self._pending.popleft()
            else:
                if all(t.state == _S_PARKED for t in tasks.values()):
                    self._release_orphans()  # their creators died before reporting them: do not wait forever
                try:
                    tid, status = os.waitpid(-1, WALL)
                except ChildProcessError:
                    break
            self.stats.stops += 1
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                yield from self._on_death(tid, status)
                continue
            if not os.WIFSTOPPED(status):
                continue
            task = tasks.get(tid)
            sig = os.WSTOPSIG(status)
            event = status >> 16
            if task is None:  # a new task whose creator's event has not been seen yet: hold it
                task = _Task(tid, tid, state=_S_PARKED)
                tasks[tid] = task
                continue
            if task.state == _S_NEW:
                yield from self._on_first_stop(task)
                continue
            if event == PTRACE_EVENT_SECCOMP:
                yield from self._on_seccomp(task)
            elif sig == _SYSCALL_TRAP:
                yield from self._on_syscall_stop(task)
            elif event in (PTRACE_EVENT_FORK, PTRACE_EVENT_VFORK, PTRACE_EVENT_CLONE):
                yield from self._on_fork(task, event)
            elif event == PTRACE_EVENT_EXEC:
                self._on_exec_event(task)
            elif event == PTRACE_EVENT_EXIT:
                yield from self._on_exit_event(task)
            elif event == PTRACE_EVENT_STOP:
                if sig in _STOP_SIGNALS:  # group-stop: stay stopped, but keep reporting (job control works)
                    self._resume(task, PTRACE_LISTEN)
                else:  # PTRACE_INTERRUPT or the end of a group-stop
                    self._resume(task, PTRACE_CONT)
            elif event == 0:  # signal-delivery-stop: deliver it
                self.stats.signals += 1
                self._resume(task, PTRACE_CONT, sig)
            else:
                self._resume(task, PTRACE_CONT)

    # -- handlers

    def _on_first_stop(self, task: _Task) -> Iterator[Event]:
        fork = task.fork
        task.state = _S_RUNNING
        task.fork = None
        if fork is not None:
            task.injectable = True
            yield ChildStart(self._stamp(), task.tid, task.pid, fork)
            task.injectable = False
        self._resume(task, PTRACE_CONT)

    def _on_seccomp(self, task: _Task) -> Iterator[Event]:
        t = self._stamp()
        self.stats.seccomp_stops += 1
        info = self._syscall_info(task.tid)
        if info is None:
            return
        _op, arch, nr, args = info
        tid = task.tid
        if self._info.ret_data != FILTER_DATA:
            # Another seccomp filter (the program's own) asked for a tracer. Without one the call would fail
            # with ENOSYS (kernel/seccomp.c): skip it the same way, so the program behaves as it would untraced.
            self.stats.foreign_traps += 1
            regs = self._regs
            if _ptrace(PTRACE_GETREGS, tid, None, ctypes.byref(regs)) == 0:
                regs.orig_rax = (1 << 64) - 1
                _ptrace(PTRACE_SETREGS, tid, None, ctypes.byref(regs))
            self._resume(task, PTRACE_CONT)
            return
        if arch != AUDIT_ARCH_X86_64 or nr & X32_SYSCALL_BIT:
            self.stats.other_abi += 1
            abi = "x32" if arch == AUDIT_ARCH_X86_64 else "i386" if arch == AUDIT_ARCH_I386 else f"arch-{arch:#x}"
            entry = SyscallEntry(t, tid, task.pid, nr, f"{abi}:{nr & ~X32_SYSCALL_BIT}", args, arch)
            if self._root_ready(task):
                yield entry
            task.syscall = entry
            self._resume(task, PTRACE_SYSCALL)
            return
        name = SYSCALL_NAMES.get(nr, f"syscall:{nr}")
        if name in ("clone", "clone3", "fork", "vfork"):
            task.clone_entry = (t, self._clone_flags(tid, name, args))
            self._resume(task, PTRACE_CONT)
            return
        if name in ("execve", "execveat"):
            task.exec_entry = t
            task.syscall = SyscallEntry(t, tid, task.pid, nr, name, args)
            self._resume(task, PTRACE_SYSCALL)
            return
        entry = SyscallEntry(t, tid, task.pid, nr, name, args)
        task.syscall = entry
        if self._root_ready(task):
            yield entry
        self._resume(task, PTRACE_SYSCALL)

    def _on_syscall_stop(self, task: _Task) -> Iterator[Event]:
        t = self._stamp()
        self.stats.syscall_stops += 1
        entry, task.syscall = task.syscall, None
        if entry is None:  # not ours (e.g. a syscall-entry stop after an aborted injection)
            self._resume(task, PTRACE_CONT)
            return
        info = self._syscall_info(task.tid)
        ret = _signed(info[2]) if info is not None and info[0] == PTRACE_SYSCALL_INFO_EXIT else -errno.ENOSYS
        task.injectable = True
        try:
            if entry.name in ("execve", "execveat"):
                event, task.exec_event = task.exec_event, None
                if ret == 0 and event is not None:
                    yield self._exec(task, entry, event)
            elif self._root_ready(task):
                yield SyscallExit(t, entry, ret)
        finally:
            task.injectable = False
        self._resume(task, PTRACE_CONT)

    def _on_fork(self, task: _Task, event: int) -> Iterator[Event]:
        t = self._stamp()
        child_tid = self._event_msg(task.tid)
        entry, task.clone_entry = task.clone_entry, None
        if entry is None:  # no entry stop seen (cannot happen with the filter): date it now
            entry = (t, CLONE_VM | CLONE_VFORK | SIGCHLD if event == PTRACE_EVENT_VFORK else SIGCHLD)
        t_entry, flags = entry
        thread = bool(flags & CLONE_VM) and not flags & CLONE_VFORK
        child_pid = task.pid if flags & CLONE_THREAD else child_tid
        fork = Fork(t_entry, task.tid, task.pid, child_tid, child_pid, flags, thread, bool(flags & CLONE_VFORK), t)
        child = self._tasks.get(child_tid)
        parked = child is not None and child.state == _S_PARKED
        # A child whose first stop was already seen stays parked (stopped, nothing to wait for) until reported.
        child = _Task(child_tid, child_pid, state=_S_PARKED if parked else _S_NEW, fork=fork)
        self._tasks[child_tid] = child
        self._tgid[child_tid] = child_pid
        self.stats.tasks += 1
        if fork.vfork:
            task.vfork_child = child_tid
        if self._root_ready(task):
            yield fork
        else:
            child.fork = None
        self._resume(task, PTRACE_CONT)
        if parked:
            child.state = _S_NEW
            yield from self._on_first_stop(child)

    def _on_exec_event(self, task: _Task) -> None:
        t = self._stamp()
        former = self._event_msg(task.tid)
        if former and former != task.tid and former in self._tasks:  # a non-leader thread exec'd: it is the leader now
            old = self._tasks.pop(former)
            task.syscall, task.exec_entry = old.syscall, old.exec_entry
            task.exiting = False
            task.exit_reported = False
        task.exec_event = (t, former or task.tid)
        self._resume(task, PTRACE_SYSCALL)

    def _exec(self, task: _Task, entry: SyscallEntry, event: tuple[float, int]) -> Exec:
        t_event, former = event
        killed = [t.tid for t in self._tasks.values() if t.pid == task.pid and t.tid != task.tid and not t.exiting]
        for tid in killed:  # de_thread() killed the group's other threads: they are gone with the old MM
            self._tasks[tid].exiting = True
            self._tasks[tid].exit_reported = True
        self._release_vfork_parent(task.tid)
        root = not task.execed and task.tid == self.root
        task.execed = True
        t = task.exec_entry if task.exec_entry is not None else entry.t
        task.exec_entry = None
        # The MM is replaced after de_thread() has killed the other threads: date the exec after their exits.
        t = max(t, self._last_exit.get(task.pid, t))
        try:
            path = os.readlink(f"/proc/{task.tid}/exe")
        except OSError:
            path = ""
        try:
            with open(f"/proc/{task.tid}/cmdline", "rb") as f:
                argv = [a.decode(errors="surrogateescape") for a in f.read().split(b"\0")[:-1]]
        except OSError:
            argv = []
        ev = Exec(t, task.tid, task.pid, former, path, argv, killed, t_event)
        if root:
            ev.killed_threads = []
        return ev

    def _on_exit_event(self, task: _Task) -> Iterator[Event]:
        t = self._stamp()
        status = self._event_msg(task.tid)
        task.exiting = True
        self._last_exit[task.pid] = t
        group = not any(o.pid == task.pid and not o.exiting for o in self._tasks.values())
        code, sig = _decode_status(status)
        task.exit_reported = True
        if self._root_ready(task):
            yield Exit(t, task.tid, task.pid, code, sig, group, True)
        self._resume(task, PTRACE_CONT)

    def _on_death(self, tid: int, status: int) -> Iterator[Event]:
        task = self._tasks.pop(tid, None)
        if tid == self.root:
            self.exit_status = status
        self._release_vfork_parent(tid)
        if task is None or task.exit_reported:
            return
        task.dead = True
        t = self._stamp()
        task.exiting = True
        group = not any(o.pid == task.pid and not o.exiting for o in self._tasks.values())
        code, sig = _decode_status(status)
        if self._root_ready(task) or task.tid != self.root:
            yield Exit(t, tid, task.pid, code, sig, group, False)

    # -- helpers

    def _release_orphans(self) -> None:
        """Resume parked new tasks whose creator's fork event can no longer come (it was killed meanwhile)."""
        for task in list(self._tasks.values()):
            if task.state != _S_PARKED:
                continue
            with contextlib.suppress(OSError, ValueError), open(f"/proc/{task.tid}/status") as f:
                for line in f:
                    if line.startswith("Tgid:"):
                        task.pid = int(line.split()[1])
            self._tgid[task.tid] = task.pid
            task.state = _S_RUNNING
            self._resume(task, PTRACE_CONT)

    def _release_vfork_parent(self, child_tid: int) -> None:
        for other in self._tasks.values():
            if other.vfork_child == child_tid:
                other.vfork_child = 0

    def _root_ready(self, task: _Task) -> bool:
        """Events of the first process count only after its first execve (before it, it runs our launcher)."""
        return task.tid != self.root or task.execed

    def _stamp(self) -> float:
        ns = time.monotonic_ns()
        self._last_stamp_us = ns // 1000
        return ns / 1000.0

    def _resume(self, task: _Task, request: int, sig: int = 0) -> None:
        """Restart a stopped task, but never within the microsecond of the last stamp (see the module doc)."""
        if task.hold:  # an aborted injection queued the stop it is in now: the main loop restarts it from there
            task.hold = False
            return
        last = self._last_stamp_us
        while time.monotonic_ns() // 1000 <= last:
            pass
        if _ptrace(request, task.tid, None, sig) != 0:
            err = ctypes.get_errno()
            if err != errno.ESRCH:  # ESRCH: killed meanwhile; its exit is reported by wait
                raise TracerError(f"ptrace({request:#x}, {task.tid}): {_errname(err)}")

    @staticmethod
    def _wait_one(tid: int, deadline: float | None = None) -> int | None:
        """The next wait status of ``tid``; with a deadline None if none came by then."""
        flags = WALL if deadline is None else WALL | os.WNOHANG
        pause = 20e-6
        while True:
            try:
                got, status = os.waitpid(tid, flags)
            except ChildProcessError:
                return 0x9  # as if killed by SIGKILL: the task is gone
            if got:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    def _syscall_info(self, tid: int) -> tuple[int, int, int, tuple[int, ...]] | None:
        """(op, arch, nr or rval, args) of the task's current stop (PTRACE_GET_SYSCALL_INFO); the seccomp
        return data of a seccomp stop is left in ``self._info.ret_data``."""
        info = self._info
        if _ptrace(PTRACE_GET_SYSCALL_INFO, tid, ctypes.c_void_p(ctypes.sizeof(info)), ctypes.byref(info)) <= 0:
            err = ctypes.get_errno()
            if err == errno.ESRCH:
                return None
            raise TracerError(f"ptrace(PTRACE_GET_SYSCALL_INFO, {tid}): {_errname(err)}")
        return info.op, info.arch, info.nr, tuple(info.args)

    def _event_msg(self, tid: int) -> int:
        if _ptrace(PTRACE_GETEVENTMSG, tid, None, ctypes.byref(self._msg)) != 0:
            return 0
        return int(self._msg.value)

    def _clone_flags(self, tid: int, name: str, args: tuple[int, ...]) -> int:
        """The clone flags of a fork-like call (clone3: the flags and exit_signal of its struct clone_args)."""
        if name == "fork":
            return SIGCHLD
        if name == "vfork":
            return CLONE_VM | CLONE_VFORK | SIGCHLD
        if name == "clone":
            return args[0] & ((1 << 64) - 1)
        try:
            flags, _pidfd, _child_tid, _parent_tid, exit_signal = self.read_words(tid, args[0], 5)
        except HostError:
            return 0
        return flags | (exit_signal & CSIGNAL)

    def _gadget(self, tid: int) -> int | None:
        """The address of a ``syscall`` instruction in the task's vDSO (AT_SYSINFO_EHDR + its offset in ours)."""
        if self._gadget_offset is None:
            self._gadget_offset = _own_vdso_syscall_offset()
        if self._gadget_offset < 0:
            return None
        try:
            with open(f"/proc/{tid}/auxv", "rb") as f:
                auxv = f.read()
        except OSError:
            return None
        base = 0
        for i in range(0, len(auxv) - 15, 16):
            key, value = struct.unpack_from("<QQ", auxv, i)
            if key == _AT_SYSINFO_EHDR:
                base = value
                break
        if not base:
            return None
        addr = base + self._gadget_offset
        try:
            if self.read_memory(tid, addr, 2) != _SYSCALL_INSN:
                return None
        except HostError:
            return None
        return addr

    def _reap_all(self) -> None:
        """Wait for every killed task (after kill_all) so none is left a zombie of ours."""
        deadline = time.monotonic() + 5.0
        while self._tasks and time.monotonic() < deadline:
            try:
                tid, status = os.waitpid(-1, WALL | os.WNOHANG)
            except ChildProcessError:
                break
            if tid == 0:
                time.sleep(0.005)
                continue
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self._tasks.pop(tid, None)
            elif os.WIFSTOPPED(status):
                with contextlib.suppress(OSError):
                    _ptrace(PTRACE_CONT, tid, None, None)
        self._tasks.clear()


def _decode_status(status: int) -> tuple[int | None, int | None]:
    """(exit code, None) or (None, signal) of a wait status."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


def _own_vdso_syscall_offset() -> int:
    """Offset of the first ``syscall`` instruction (0f 05) in this process's vDSO; every process maps the same
    vDSO image (arch/x86/entry/vdso). -1 if there is none."""
    try:
        with open("/proc/self/auxv", "rb") as f:
            auxv = f.read()
        base = 0
        for i in range(0, len(auxv) - 15, 16):
            key, value = struct.unpack_from("<QQ", auxv, i)
            if key == _AT_SYSINFO_EHDR:
                base = value
        if not base:
            return -1
        size = 0
        with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.rstrip().endswith("[vdso]"):
                    lo, hi = line.split()[0].split("-")
                    if int(lo, 16) == base:
                        size = int(hi, 16) - base
        if not size:
            return -1
        data = ctypes.string_at(base, size)
    except OSError:
        return -1
    return data.find(_SYSCALL_INSN)
