"""ctypes wrappers for the memory system calls a live worker process makes (x86-64 Linux, libc via ctypes).

Every wrapper raises :class:`SyscallError` (a :class:`HostError`) naming the call, its arguments and the errno;
none returns -1 silently. Memory is touched only through the process's own user-space loads and stores
(:func:`fill`, :func:`store`, :func:`load`), so the page faults they cause are the process's own user faults.
Two kinds of kernel reference to user pages are offered: :class:`IoUringPin`, a long-term R/W pin
(io_uring/rsrc.c io_sqe_buffers_register()), and :class:`SplicePipe`, plain references (fs/splice.c
vmsplice_to_pipe()). :func:`drain_lru` flushes every CPU's LRU add batch (mm/swap.c lru_cache_disable()).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import fcntl
import mmap as _mmap
import os
import struct
from dataclasses import dataclass
from typing import Final

from foliosim.host.errors import HostError, HostUnavailable

__all__ = [
    "MADV_COLD",
    "MADV_DOFORK",
    "MADV_DONTFORK",
    "MADV_DONTNEED",
    "MADV_HUGEPAGE",
    "MADV_NOHUGEPAGE",
    "MADV_PAGEOUT",
    "MAP_ANONYMOUS",
    "MAP_FIXED",
    "MAP_FIXED_NOREPLACE",
    "MAP_POPULATE",
    "MAP_PRIVATE",
    "MAP_SHARED",
    "MFD_CLOEXEC",
    "MREMAP_FIXED",
    "MREMAP_MAYMOVE",
    "PAGE_SIZE",
    "PROT_EXEC",
    "PROT_NONE",
    "PROT_READ",
    "PROT_WRITE",
    "IoUringPin",
    "Mapping",
    "SplicePipe",
    "SyscallError",
    "access_ok",
    "drain_lru",
    "fill",
    "load",
    "madvise",
    "memfd_create",
    "mmap",
    "mprotect",
    "mremap",
    "munmap",
    "self_mappings",
    "store",
]

PAGE_SIZE: Final = _mmap.PAGESIZE

# include/uapi/asm-generic/mman-common.h, mman.h and linux/mman.h (x86-64 values).
PROT_NONE: Final = 0x0
PROT_READ: Final = 0x1
PROT_WRITE: Final = 0x2
PROT_EXEC: Final = 0x4
MAP_SHARED: Final = 0x01
MAP_PRIVATE: Final = 0x02
MAP_FIXED: Final = 0x10
MAP_ANONYMOUS: Final = 0x20
MAP_POPULATE: Final = 0x8000
MAP_FIXED_NOREPLACE: Final = 0x100000
MREMAP_MAYMOVE: Final = 1
MREMAP_FIXED: Final = 2
MADV_DONTNEED: Final = 4
MADV_DONTFORK: Final = 10
MADV_DOFORK: Final = 11
MADV_HUGEPAGE: Final = 14
MADV_NOHUGEPAGE: Final = 15
MADV_COLD: Final = 20
MADV_PAGEOUT: Final = 21
MFD_CLOEXEC: Final = 0x1

# x86-64 system call numbers used through libc's syscall() (arch/x86/entry/syscalls/syscall_64.tbl).
_SYS_MREMAP: Final = 25
_SYS_MOVE_PAGES: Final = 279
_SYS_IO_URING_SETUP: Final = 425
_SYS_IO_URING_ENTER: Final = 426
_SYS_IO_URING_REGISTER: Final = 427

_MAP_FAILED: Final = (1 << 64) - 1
_F_SETPIPE_SZ: Final = 1031
_F_GETPIPE_SZ: Final = 1032
_FIONREAD: Final = 0x541B
_SPLICE_F_NONBLOCK: Final = 0x02

_PROT_NAMES: Final = ((PROT_READ, "PROT_READ"), (PROT_WRITE, "PROT_WRITE"), (PROT_EXEC, "PROT_EXEC"))
_MAP_NAMES: Final = ((MAP_SHARED, "MAP_SHARED"), (MAP_PRIVATE, "MAP_PRIVATE"), (MAP_FIXED, "MAP_FIXED"),
                     (MAP_ANONYMOUS, "MAP_ANONYMOUS"), (MAP_POPULATE, "MAP_POPULATE"),
                     (MAP_FIXED_NOREPLACE, "MAP_FIXED_NOREPLACE"))
_MREMAP_NAMES: Final = ((MREMAP_MAYMOVE, "MREMAP_MAYMOVE"), (MREMAP_FIXED, "MREMAP_FIXED"))
_MADV_NAMES: Final = {MADV_DONTNEED: "MADV_DONTNEED", MADV_DONTFORK: "MADV_DONTFORK", MADV_DOFORK: "MADV_DOFORK",
                      MADV_HUGEPAGE: "MADV_HUGEPAGE", MADV_NOHUGEPAGE: "MADV_NOHUGEPAGE", MADV_COLD: "MADV_COLD",
                      MADV_PAGEOUT: "MADV_PAGEOUT"}


class SyscallError(HostError):
    """A system call failed: ``call`` is its text with arguments, ``errno`` the error number."""

    def __init__(self, call: str, err: int) -> None:
        self.call = call
        self.errno = err
        name = _errno.errorcode.get(err, str(err))
        super().__init__(f"{call}: {name} ({os.strerror(err)})")


_libc = ctypes.CDLL(None, use_errno=True)

_c_mmap = _libc.mmap
_c_mmap.restype = ctypes.c_void_p
_c_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_c_munmap = _libc.munmap
_c_munmap.restype = ctypes.c_int
_c_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_c_mprotect = _libc.mprotect
_c_mprotect.restype = ctypes.c_int
_c_mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_c_madvise = _libc.madvise
_c_madvise.restype = ctypes.c_int
_c_madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_c_memfd_create = _libc.memfd_create
_c_memfd_create.restype = ctypes.c_int
_c_memfd_create.argtypes = [ctypes.c_char_p, ctypes.c_uint]
_c_tee = _libc.tee
_c_tee.restype = ctypes.c_ssize_t
_c_tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
_c_syscall = _libc.syscall  # variadic; every argument is passed as a 64-bit integer
_c_syscall.restype = ctypes.c_long


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_c_vmsplice = _libc.vmsplice
_c_vmsplice.restype = ctypes.c_ssize_t
_c_vmsplice.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_size_t, ctypes.c_uint]


def _flag_text(value: int, names: tuple[tuple[int, str], ...]) -> str:
    parts = [name for bit, name in names if value & bit]
    rest = value & ~sum(bit for bit, _ in names)
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) if parts else "0"


def _prot_text(prot: int) -> str:
    return "PROT_NONE" if prot == 0 else _flag_text(prot, _PROT_NAMES)


def _fail(call: str) -> SyscallError:
    return SyscallError(call, ctypes.get_errno())


def _syscall(*args: int) -> int:
    """libc syscall() with every argument widened to a C long; returns the raw result (-1 sets errno)."""
    return int(_c_syscall(*(ctypes.c_long(a) for a in args)))


# --- mappings -------------------------------------------------------------------------------------------------


def mmap(addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
    """mmap(2); returns the mapped address. With MAP_FIXED_NOREPLACE a different address is an error (EEXIST)."""
    res = _c_mmap(addr or None, length, prot, flags, fd, offset)
    failed = res is None or res == _MAP_FAILED
    if failed or (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) and res != addr):
        err = ctypes.get_errno() if failed else _errno.EEXIST
        call = (f"mmap(addr={addr:#x}, length={length:#x}, prot={_prot_text(prot)}, "
                f"flags={_flag_text(flags, _MAP_NAMES)}, fd={fd}, offset={offset:#x})")
        if not failed:
            _c_munmap(res, length)
            call += f" returned {res:#x}"
        raise SyscallError(call, err)
    assert res is not None
    return int(res)


def munmap(addr: int, length: int) -> None:
    """munmap(2)."""
    if _c_munmap(addr, length) != 0:
        raise _fail(f"munmap(addr={addr:#x}, length={length:#x})")


def mprotect(addr: int, length: int, prot: int) -> None:
    """mprotect(2)."""
    if _c_mprotect(addr, length, prot) != 0:
        raise _fail(f"mprotect(addr={addr:#x}, length={length:#x}, prot={_prot_text(prot)})")


def mremap(old: int, old_size: int, new_size: int, flags: int, new_addr: int = 0) -> int:
    """mremap(2) through syscall() (glibc's wrapper is variadic); returns the new address (mm/mremap.c)."""
    res = _syscall(_SYS_MREMAP, old, old_size, new_size, flags, new_addr)
    if res == -1:
        raise _fail(f"mremap(old={old:#x}, old_size={old_size:#x}, new_size={new_size:#x}, "
                    f"flags={_flag_text(flags, _MREMAP_NAMES)}, new_addr={new_addr:#x})")
    return res & ((1 << 64) - 1)


def madvise(addr: int, length: int, advice: int) -> None:
    """madvise(2) (mm/madvise.c)."""
    if _c_madvise(addr, length, advice) != 0:
        name = _MADV_NAMES.get(advice, str(advice))
        raise _fail(f"madvise(addr={addr:#x}, length={length:#x}, advice={name})")


def memfd_create(name: str, flags: int = 0) -> int:
    """memfd_create(2); returns the new file descriptor (shmem file, mm/memfd.c)."""
    fd = int(_c_memfd_create(name.encode(), flags))
    if fd < 0:
        raise _fail(f"memfd_create(name={name!r}, flags={flags:#x})")
    return fd


# --- the process's own loads and stores ------------------------------------------------------------------------


def _page_chunks(addr: int, length: int) -> list[tuple[int, int]]:
    """Split [addr, addr+length) at page boundaries, in increasing address order."""
    chunks: list[tuple[int, int]] = []
    end = addr + length
    while addr < end:
        stop = min(end, (addr // PAGE_SIZE + 1) * PAGE_SIZE)
        chunks.append((addr, stop - addr))
        addr = stop
    return chunks


def fill(addr: int, value: int, length: int) -> None:
    """Store ``value`` (a byte) into [addr, addr+length) as this process's own stores (memset per page).

    Each page is written by one memset of its part of the range, pages in increasing address order, so every
    absent or write-protected page takes exactly one user write fault, in address order. (One large memset
    would not promise that order: glibc's vector memset/memmove store or load the range's tail first.)
    Crashes the process (SIGSEGV) on an address not mapped writable: check :func:`access_ok` first.
    """
    if not 0 <= value <= 0xFF:
        raise ValueError(f"fill: value {value} is not a byte")
    for start, size in _page_chunks(addr, length):
        ctypes.memset(start, value, size)


def store(addr: int, data: bytes) -> None:
    """Copy ``data`` to ``addr`` as this process's own stores (memmove per page, pages in increasing order).

    Same fault order as :func:`fill`; crashes the process on an unwritable address (see :func:`access_ok`).
    """
    src = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    if src is None:
        return
    for start, size in _page_chunks(addr, len(data)):
        ctypes.memmove(start, src + (start - addr), size)


def load(addr: int, length: int) -> bytes:
    """Read [addr, addr+length) as this process's own loads (string_at per page, pages in increasing order).

    An absent page takes exactly one user read fault, pages in address order. Crashes the process on an
    unreadable address (see :func:`access_ok`).
    """
    return b"".join(ctypes.string_at(start, size) for start, size in _page_chunks(addr, length))


@dataclass(frozen=True, slots=True)
class Mapping:
    """One line of /proc/self/maps (fs/proc/task_mmu.c show_map_vma())."""

    start: int
    end: int
    perms: str
    offset: int
    path: str


def self_mappings() -> list[Mapping]:
    """This process's VMAs from /proc/self/maps, in address order."""
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise SyscallError("read /proc/self/maps", exc.errno or 0) from None
    out: list[Mapping] = []
    for line in lines:
        fields = line.split(maxsplit=5)
        lo, hi = fields[0].split("-")
        out.append(Mapping(int(lo, 16), int(hi, 16), fields[1], int(fields[2], 16),
                           fields[5] if len(fields) > 5 else ""))
    return out


def access_ok(addr: int, length: int, write: bool) -> bool:
    """True when /proc/self/maps covers [addr, addr+length) without a gap, all readable (and writable if ``write``).

    Checks VMA permissions only: a shared file mapping beyond the end of its file (SIGBUS), userfaultfd ranges
    or guard regions installed by madvise are not seen.
    """
    if length <= 0:
        return True
    need = "w" if write else "r"
    pos, end = addr, addr + length
    for m in self_mappings():
        if m.end <= pos:
            continue
        if m.start > pos or need not in m.perms:
            return False
        pos = m.end
        if pos >= end:
            return True
    return False


# --- io_uring: a long-term R/W pin ------------------------------------------------------------------------------

# include/uapi/linux/io_uring.h
_IORING_OFF_SQ_RING: Final = 0
_IORING_OFF_CQ_RING: Final = 0x8000000
_IORING_OFF_SQES: Final = 0x10000000
_IORING_FEAT_SINGLE_MMAP: Final = 1 << 0
_IORING_ENTER_GETEVENTS: Final = 1 << 0
_IORING_REGISTER_BUFFERS: Final = 0
_IORING_UNREGISTER_BUFFERS: Final = 1
_IORING_OP_WRITE_FIXED: Final = 5
_SQE_SIZE: Final = 64
_CQE_SIZE: Final = 16
_SQE_FORMAT: Final = struct.Struct("<BBHiQQIIQHHiQQ")  # opcode flags ioprio fd off addr len rw_flags user_data
#                                                          buf_index personality splice_fd_in addr3 pad
_MAX_RW: Final = 1 << 30


class _SqRingOffsets(ctypes.Structure):
    _fields_ = [("head", ctypes.c_uint32), ("tail", ctypes.c_uint32), ("ring_mask", ctypes.c_uint32),
                ("ring_entries", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("dropped", ctypes.c_uint32),
                ("array", ctypes.c_uint32), ("resv1", ctypes.c_uint32), ("user_addr", ctypes.c_uint64)]


class _CqRingOffsets(ctypes.Structure):
    _fields_ = [("head", ctypes.c_uint32), ("tail", ctypes.c_uint32), ("ring_mask", ctypes.c_uint32),
                ("ring_entries", ctypes.c_uint32), ("overflow", ctypes.c_uint32), ("cqes", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("resv1", ctypes.c_uint32), ("user_addr", ctypes.c_uint64)]


class _IoUringParams(ctypes.Structure):
    _fields_ = [("sq_entries", ctypes.c_uint32), ("cq_entries", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("sq_thread_cpu", ctypes.c_uint32), ("sq_thread_idle", ctypes.c_uint32),
                ("features", ctypes.c_uint32), ("wq_fd", ctypes.c_uint32), ("resv", ctypes.c_uint32 * 3),
                ("sq_off", _SqRingOffsets), ("cq_off", _CqRingOffsets)]


def _u32(addr: int) -> ctypes.c_uint32:
    return ctypes.c_uint32.from_address(addr)


def _io_uring_disabled() -> int:
    try:
        with open("/proc/sys/kernel/io_uring_disabled", encoding="ascii") as f:
            return int(f.read().strip() or "0")
    except (OSError, ValueError):
        return 0


class IoUringPin:
    """A long-term R/W pin of [addr, addr+length): one io_uring registered buffer (or one per page).

    A single buffer backed by a large folio is "coalesced" by io_uring (6.11+, io_uring/rsrc.c
    io_coalesce_buffer()): it keeps one pin per folio, not one per page. With ``per_page`` each page is its own
    registered buffer, so each page gets its own pin, exactly as pin_user_pages() on the range would.

    io_uring/rsrc.c io_sqe_buffers_register() pins the pages with FOLL_WRITE|FOLL_LONGTERM (folio _pincount,
    refcount +1; pages not present are faulted in by GUP, and a CoW-shared page is unshared, at registration).
    The ring belongs to the file, not to the mm: a forked child inherits the fd, and the pin lasts until
    :meth:`unregister` or until every copy of the fd is closed (ring teardown after the last close is
    asynchronous, so :meth:`close` unregisters first). Use it only in the process that created it.
    """

    def __init__(self, addr: int, length: int, entries: int = 4, per_page: bool = False) -> None:
        if length <= 0 or length > _MAX_RW:
            raise ValueError(f"IoUringPin: length {length} not in 1..{_MAX_RW}")
        self.addr = addr
        self.length = length
        self.fd = -1
        self._memfd = -1
        self._maps: list[tuple[int, int]] = []
        self._registered = False
        self._seq = 0
        if _io_uring_disabled() == 2:
            raise HostUnavailable("io_uring: /proc/sys/kernel/io_uring_disabled is 2 (disabled for all)")
        params = _IoUringParams()
        fd = _syscall(_SYS_IO_URING_SETUP, entries, ctypes.addressof(params))
        if fd < 0:
            err = ctypes.get_errno()
            if err in (_errno.EPERM, _errno.ENOSYS):
                raise HostUnavailable(f"io_uring: io_uring_setup failed with {_errno.errorcode[err]} "
                                      f"(io_uring_disabled={_io_uring_disabled()}, or a seccomp filter)")
            raise SyscallError(f"io_uring_setup(entries={entries})", err)
        self.fd = fd
        try:
            # Register before mapping the rings: a ring mapping may land in a hole inside [addr, addr+length).
            self._bufs = _page_chunks(addr, length) if per_page else [(addr, length)]
            iovs = (_IoVec * len(self._bufs))(*[_IoVec(a, n) for a, n in self._bufs])
            if _syscall(_SYS_IO_URING_REGISTER, fd, _IORING_REGISTER_BUFFERS, ctypes.addressof(iovs),
                        len(self._bufs)) < 0:
                raise _fail(f"io_uring_register(fd={fd}, IORING_REGISTER_BUFFERS, "
                            f"iov=[{addr:#x}+{length:#x}] in {len(self._bufs)} buffer(s), nr={len(self._bufs)})")
            self._registered = True
            self._map_rings(params)
            self._memfd = memfd_create("foliosim-pin-readback", MFD_CLOEXEC)
        except BaseException:
            self.close()
            raise

    def _map_rings(self, p: _IoUringParams) -> None:
        sq_size = p.sq_off.array + p.sq_entries * 4
        cq_size = p.cq_off.cqes + p.cq_entries * _CQE_SIZE
        prot, flags = PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE
        if p.features & _IORING_FEAT_SINGLE_MMAP:
            size = max(sq_size, cq_size)
            sq = mmap(0, size, prot, flags, self.fd, _IORING_OFF_SQ_RING)
            self._maps.append((sq, size))
            cq = sq
        else:
            sq = mmap(0, sq_size, prot, flags, self.fd, _IORING_OFF_SQ_RING)
            self._maps.append((sq, sq_size))
            cq = mmap(0, cq_size, prot, flags, self.fd, _IORING_OFF_CQ_RING)
            self._maps.append((cq, cq_size))
        sqes_size = p.sq_entries * _SQE_SIZE
        self._sqes = mmap(0, sqes_size, prot, flags, self.fd, _IORING_OFF_SQES)
        self._maps.append((self._sqes, sqes_size))
        self._sq_head, self._sq_tail = _u32(sq + p.sq_off.head), _u32(sq + p.sq_off.tail)
        self._sq_mask, self._sq_array = _u32(sq + p.sq_off.ring_mask).value, sq + p.sq_off.array
        self._cq_head, self._cq_tail = _u32(cq + p.cq_off.head), _u32(cq + p.cq_off.tail)
        self._cq_mask, self._cqes = _u32(cq + p.cq_off.ring_mask).value, cq + p.cq_off.cqes

    def _write_fixed(self, offset: int, size: int, buf_index: int = 0) -> int:
        """Submit one IORING_OP_WRITE_FIXED of [addr+offset, +size) (inside registered buffer ``buf_index``) to the
        memfd at ``offset``; wait for its CQE."""
        self._seq += 1
        tail = self._sq_tail.value
        idx = tail & self._sq_mask
        sqe = _SQE_FORMAT.pack(_IORING_OP_WRITE_FIXED, 0, 0, self._memfd, offset, self.addr + offset, size, 0,
                               self._seq, buf_index, 0, 0, 0, 0)
        ctypes.memmove(self._sqes + idx * _SQE_SIZE, sqe, _SQE_SIZE)
        _u32(self._sq_array + idx * 4).value = idx
        self._sq_tail.value = tail + 1  # x86-64 stores are ordered: the SQE is visible before the tail
        call = f"io_uring_enter(fd={self.fd}, to_submit=1, min_complete=1, IORING_ENTER_GETEVENTS)"
        while True:
            if _syscall(_SYS_IO_URING_ENTER, self.fd, 1, 1, _IORING_ENTER_GETEVENTS, 0, 0) >= 0:
                break
            if ctypes.get_errno() != _errno.EINTR:
                raise _fail(call)
        while self._cq_head.value == self._cq_tail.value:  # completed by GETEVENTS; guard against a spurious wake
            if _syscall(_SYS_IO_URING_ENTER, self.fd, 0, 1, _IORING_ENTER_GETEVENTS, 0, 0) < 0 \
                    and ctypes.get_errno() != _errno.EINTR:
                raise _fail(call)
        head = self._cq_head.value
        user_data, res, _flags = struct.unpack("<QiI", ctypes.string_at(self._cqes + (head & self._cq_mask)
                                                                          * _CQE_SIZE, _CQE_SIZE))
        self._cq_head.value = head + 1
        what = (f"IORING_OP_WRITE_FIXED(buf_index={buf_index}, addr={self.addr + offset:#x}, len={size:#x}, "
                f"memfd={self._memfd}, off={offset:#x})")
        if user_data != self._seq:
            raise HostError(f"{what}: completion for request {user_data}, expected {self._seq}")
        if res < 0:
            raise SyscallError(what, -res)
        if res == 0:
            raise HostError(f"{what}: wrote 0 bytes")
        return int(res)

    def read_back(self) -> bytes:
        """What the pinned pages hold, read through the pin (the registered buffer's pages, not the page tables).

        The kernel copies the registered buffer to a memfd (IORING_OP_WRITE_FIXED); the memfd is then read
        and truncated.
        """
        if not self._registered:
            raise HostError("IoUringPin.read_back: no buffer is registered")
        for index, (start, size) in enumerate(self._bufs):
            done = 0
            while done < size:
                done += self._write_fixed(start - self.addr + done, min(size - done, _MAX_RW), index)
        try:
            parts: list[bytes] = []
            got = 0
            while got < self.length:
                chunk = os.pread(self._memfd, self.length - got, got)
                if not chunk:
                    raise HostError(f"pread(memfd={self._memfd}): end of file at {got:#x} of {self.length:#x}")
                parts.append(chunk)
                got += len(chunk)
            os.ftruncate(self._memfd, 0)
        except OSError as exc:
            raise SyscallError(f"pread/ftruncate(memfd={self._memfd})", exc.errno or 0) from None
        return b"".join(parts)

    def unregister(self) -> None:
        """IORING_UNREGISTER_BUFFERS: drop the pin now (synchronous when no request is in flight)."""
        if not self._registered:
            return
        if _syscall(_SYS_IO_URING_REGISTER, self.fd, _IORING_UNREGISTER_BUFFERS, 0, 0) < 0:
            raise _fail(f"io_uring_register(fd={self.fd}, IORING_UNREGISTER_BUFFERS)")
        self._registered = False

    @property
    def registered(self) -> bool:
        return self._registered

    def close(self) -> None:
        """Unregister, unmap the rings and close the ring and memfd (idempotent)."""
        if self.fd >= 0 and self._registered:
            self.unregister()
        for addr, size in self._maps:
            munmap(addr, size)
        self._maps = []
        for fd in (self.fd, self._memfd):
            if fd >= 0:
                os.close(fd)
        self.fd = self._memfd = -1

    def __enter__(self) -> IoUringPin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- vmsplice: plain page references in a pipe ------------------------------------------------------------------


def _set_pipe_size(fd: int, want: int) -> int:
    """Enlarge a pipe to ``want`` bytes if allowed (root may pass /proc/sys/fs/pipe-max-size); returns its size."""
    try:
        return fcntl.fcntl(fd, _F_SETPIPE_SZ, want)
    except OSError as exc:
        if exc.errno not in (_errno.EPERM, _errno.ENOMEM):
            raise SyscallError(f"fcntl(fd={fd}, F_SETPIPE_SZ, {want:#x})", exc.errno or 0) from None
    try:
        with open("/proc/sys/fs/pipe-max-size", encoding="ascii") as f:
            limit = int(f.read().strip())
        return fcntl.fcntl(fd, _F_SETPIPE_SZ, min(limit, want))
    except (OSError, ValueError):
        pass
    try:
        return fcntl.fcntl(fd, _F_GETPIPE_SZ)
    except OSError as exc:
        raise SyscallError(f"fcntl(fd={fd}, F_GETPIPE_SZ)", exc.errno or 0) from None


class SplicePipe:
    """A pipe holding plain references (FOLL_GET, no pin) to user pages, by vmsplice(2) (fs/splice.c).

    ``capacity`` is how many bytes it can hold (one page per pipe slot): it is enlarged to ``want`` (2 MiB, a
    whole PMD range) when allowed, else to /proc/sys/fs/pipe-max-size (1 MiB by default: going beyond needs
    CAP_SYS_RESOURCE, which this machine's root lacks, so a 2 MiB range needs two pipes). The pages stay
    referenced until the pipe is closed by every process that has it (a forked child inherits the fds).
    """

    def __init__(self, want: int = 2 << 20) -> None:
        try:
            self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        except OSError as exc:
            raise SyscallError("pipe2(O_CLOEXEC)", exc.errno or 0) from None
        self.capacity = _set_pipe_size(self.write_fd, want)
        self.queued = 0

    def vmsplice(self, addr: int, length: int) -> int:
        """Splice [addr, addr+length) into the pipe without blocking; returns the bytes taken.

        The kernel takes what fits: the call loops and returns fewer than ``length`` when the pipe fills
        (compare with the result); a pipe already full raises SyscallError EAGAIN.
        """
        done = 0
        while done < length:
            iov = _IoVec(addr + done, length - done)
            n = int(_c_vmsplice(self.write_fd, ctypes.byref(iov), 1, _SPLICE_F_NONBLOCK))
            if n < 0:
                err = ctypes.get_errno()
                if err == _errno.EAGAIN and done:
                    break
                if err == _errno.EINTR:
                    continue
                raise SyscallError(f"vmsplice(fd={self.write_fd}, iov=[{addr + done:#x}+{length - done:#x}], "
                                   f"nr_segs=1, SPLICE_F_NONBLOCK)", err)
            if n == 0:
                break
            done += n
        self.queued += done
        return done

    def pending(self) -> int:
        """Bytes in the pipe (FIONREAD)."""
        try:
            buf = fcntl.ioctl(self.read_fd, _FIONREAD, b"\0\0\0\0")
        except OSError as exc:
            raise SyscallError(f"ioctl(fd={self.read_fd}, FIONREAD)", exc.errno or 0) from None
        return int(struct.unpack("<i", buf)[0])

    def peek(self) -> bytes:
        """The pipe's content without consuming it: tee(2) into a scratch pipe that is read and closed at once
        (so its extra page references are dropped before this returns)."""
        size = self.pending()
        if size == 0:
            return b""
        try:
            r, w = os.pipe2(os.O_CLOEXEC)
        except OSError as exc:
            raise SyscallError("pipe2(O_CLOEXEC)", exc.errno or 0) from None
        try:
            _set_pipe_size(w, self.capacity)
            n = int(_c_tee(self.read_fd, w, size, _SPLICE_F_NONBLOCK))
            if n < 0:
                raise _fail(f"tee(fd_in={self.read_fd}, fd_out={w}, len={size:#x}, SPLICE_F_NONBLOCK)")
            if n != size:
                raise HostError(f"tee(fd_in={self.read_fd}, fd_out={w}, len={size:#x}): duplicated only {n:#x}")
            os.close(w)
            w = -1
            parts: list[bytes] = []
            got = 0
            while got < n:
                chunk = os.read(r, n - got)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
            return b"".join(parts)
        except OSError as exc:
            raise SyscallError(f"read(scratch pipe {r})", exc.errno or 0) from None
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)

    def close(self) -> None:
        """Close both ends (idempotent); the pipe's page references go when no other process holds it."""
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                os.close(fd)
        self.read_fd = self.write_fd = -1

    def __enter__(self) -> SplicePipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the per-CPU LRU add batches --------------------------------------------------------------------------------

_drain_page: int | None = None  # an untouched scratch page (never faulted in; a forked child inherits it)


def _first_allowed_node() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Mems_allowed_list:"):
                return int(line.split(":", 1)[1].strip().split(",")[0].split("-")[0])
    return 0


def drain_lru() -> None:
    """Flush every CPU's LRU add batch (each holds a reference on small folios just faulted in).

    move_pages(2) on this process with a target node runs lru_cache_disable() before looking at any page
    (mm/migrate.c do_pages_move(), mm/swap.c __lru_add_drain_all(force_all_cpus)); we ask to "move" one
    untouched scratch page of our own to an allowed node, so nothing moves (its status is -ENOENT).
    mlock()/munlock() and MADV_COLD drain only the calling CPU's batches on 6.18 (measured: a folio faulted on
    CPU 0 stays off the LRU after either runs on CPU 1; after move_pages it is on the LRU).
    """
    global _drain_page
    if _drain_page is None:
        _drain_page = mmap(0, PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
    page = _drain_page
    try:
        node = _first_allowed_node()
    except (OSError, ValueError) as exc:
        raise HostError(f"/proc/self/status Mems_allowed_list: {exc}") from None
    pages = (ctypes.c_void_p * 1)(page)
    nodes = (ctypes.c_int * 1)(node)
    status = (ctypes.c_int * 1)(0)
    if _syscall(_SYS_MOVE_PAGES, 0, 1, ctypes.addressof(pages), ctypes.addressof(nodes),
                ctypes.addressof(status), 0) < 0:
        err = ctypes.get_errno()
        if err == _errno.ENOSYS:
            raise HostUnavailable("drain_lru: move_pages(2) is not built in (needs CONFIG_NUMA and CONFIG_MIGRATION)")
        raise SyscallError(f"move_pages(pid=0, count=1, pages=[{page:#x}], nodes=[{node}], flags=0)", err)
