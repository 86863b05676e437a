"""Readers of /proc/PID/pagemap, /proc/PID/maps, /proc/kpagecount and /proc/kpageflags (root).

pagemap: fs/proc/task_mmu.c pagemap_read(), one 64-bit entry per virtual page.
kpagecount / kpageflags: fs/proc/page.c kpagecount_read() / kpageflags_read(), one
64-bit entry per PFN; the flag bits are include/uapi/linux/kernel-page-flags.h plus
the kernel-internal ones of include/linux/kernel-page-flags.h that root also sees.
"""

from __future__ import annotations

import bisect
import errno
import os
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import overload

from foliosim.host.errors import HostError, os_error

PAGE_SIZE = 4096
PAGE_SHIFT = 12
_ENTRY = 8

# --- /proc/PID/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst) ---
PM_PFN_MASK = (1 << 55) - 1
PM_SOFT_DIRTY = 1 << 55
PM_MMAP_EXCLUSIVE = 1 << 56
PM_UFFD_WP = 1 << 57
PM_GUARD_REGION = 1 << 58
PM_FILE = 1 << 61
PM_SWAP = 1 << 62
PM_PRESENT = 1 << 63

# --- /proc/kpageflags bits: stable uapi names (include/uapi/linux/kernel-page-flags.h) ---
KPF_LOCKED = 0
KPF_ERROR = 1
KPF_REFERENCED = 2
KPF_UPTODATE = 3
KPF_DIRTY = 4
KPF_LRU = 5
KPF_ACTIVE = 6
KPF_SLAB = 7
KPF_WRITEBACK = 8
KPF_RECLAIM = 9
KPF_BUDDY = 10
KPF_MMAP = 11
KPF_ANON = 12
KPF_SWAPCACHE = 13
KPF_SWAPBACKED = 14
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
KPF_HUGE = 17
KPF_UNEVICTABLE = 18
KPF_HWPOISON = 19
KPF_NOPAGE = 20
KPF_KSM = 21
KPF_THP = 22
KPF_OFFLINE = 23
KPF_ZERO_PAGE = 24
KPF_IDLE = 25
KPF_PGTABLE = 26

# --- kernel-internal bits, exported to root as well (include/linux/kernel-page-flags.h) ---
KPF_RESERVED = 32
KPF_MLOCKED = 33
#: PG_owner_2 of the folio (fs/proc/page.c stable_page_flags() copies it from the folio's flags,
#: so every page of a large folio shows the head page's bit). Older kernels named this bit
#: KPF_MAPPEDTODISK (PG_mappedtodisk).
KPF_OWNER_2 = 34
KPF_MAPPEDTODISK = KPF_OWNER_2
#: On an anonymous folio PG_owner_2 is PG_anon_exclusive (include/linux/page-flags.h).
KPF_ANON_EXCLUSIVE = KPF_OWNER_2
KPF_PRIVATE = 35
KPF_PRIVATE_2 = 36
KPF_OWNER_PRIVATE = 37
KPF_ARCH = 38
KPF_UNCACHED = 39
KPF_SOFTDIRTY = 40
KPF_ARCH_2 = 41
KPF_ARCH_3 = 42

KPAGECOUNT_PATH = "/proc/kpagecount"
KPAGEFLAGS_PATH = "/proc/kpageflags"

#: Highest folio order :func:`folio_extent` will walk (a 1 GiB hugetlb folio is order 18).
MAX_FOLIO_ORDER = 18
# Two runs of PFNs closer than this are read with one pread (the gap is read and dropped).
_COALESCE_GAP = 64


def kpf(flags: int, bit: int) -> bool:
    """Whether KPF bit number ``bit`` is set in a kpageflags word."""
    return bool((flags >> bit) & 1)


def _proc_error(path: str, pid: int | None, exc: OSError) -> HostError:
    """A HostError for a /proc file; a vanished pid gets a plain message instead of an errno."""
    if pid is not None and exc.errno == errno.ENOENT:
        return HostError(f"{path}: process {pid} does not exist (it has exited)")
    if pid is not None and exc.errno == errno.ESRCH:
        return HostError(f"{path}: process {pid} has no address space any more (it has exited, maybe a zombie)")
    return os_error(path, exc)


def _pread_exact(fd: int, size: int, offset: int, path: str, pid: int | None) -> bytes:
    """Read exactly ``size`` bytes at ``offset`` (normally one pread); a short read is a HostError."""
    chunks: list[bytes] = []
    got = 0
    while got < size:
        try:
            data = os.pread(fd, size - got, offset + got)
        except OSError as exc:
            raise _proc_error(path, pid, exc) from None
        if not data:
            break
        chunks.append(data)
        got += len(data)
    if got < size:
        if pid is not None:
            raise HostError(
                f"{path}: short read ({got} of {size} bytes at offset {offset:#x}): process {pid} "
                "has no address space any more (exited or a zombie) or the range is beyond it"
            )
        raise HostError(f"{path}: short read ({got} of {size} bytes at offset {offset:#x}): PFN beyond the last one")
    return b"".join(chunks)


def _words(data: bytes) -> array[int]:
    """The native 64-bit words of ``data``."""
    words = array("Q")
    words.frombytes(data)
    return words


# --------------------------------------------------------------------------- pagemap


@dataclass(frozen=True, slots=True)
class PagemapEntry:
    """One /proc/PID/pagemap entry, decoded (fs/proc/task_mmu.c pagemap_pte_range()/pagemap_pmd_range()).

    ``pfn`` is 0 unless the page is present. ``exclusive`` is bit 56 ("exclusively
    mapped": precise mapcount of the page is 1 for a PTE mapping; the head page's for
    a PMD mapping), not PG_anon_exclusive.
    """

    vaddr: int
    present: bool
    swapped: bool
    pfn: int
    exclusive: bool
    file_or_shared_anon: bool
    soft_dirty: bool
    raw: int = 0

    @classmethod
    def decode(cls, vaddr: int, raw: int) -> PagemapEntry:
        """Decode one raw 64-bit entry for the page at ``vaddr``."""
        present = bool(raw & PM_PRESENT)
        return cls(
            vaddr=vaddr,
            present=present,
            swapped=bool(raw & PM_SWAP),
            pfn=raw & PM_PFN_MASK if present else 0,
            exclusive=bool(raw & PM_MMAP_EXCLUSIVE),
            file_or_shared_anon=bool(raw & PM_FILE),
            soft_dirty=bool(raw & PM_SOFT_DIRTY),
            raw=raw,
        )


class Pagemap:
    """An open /proc/PID/pagemap (context manager), for repeated reads of one process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.path = f"/proc/{pid}/pagemap"
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise _proc_error(self.path, pid, exc) from None

    def read_raw(self, start: int, nr_pages: int) -> array[int]:
        """The raw entries of ``nr_pages`` pages from page-aligned ``start``, in one pread."""
        if start % PAGE_SIZE:
            raise HostError(f"{self.path}: start {start:#x} is not page aligned")
        if nr_pages < 0:
            raise HostError(f"{self.path}: negative page count {nr_pages}")
        if nr_pages == 0:
            return array("Q")
        data = _pread_exact(self._fd, nr_pages * _ENTRY, (start >> PAGE_SHIFT) * _ENTRY, self.path, self.pid)
        return _words(data)

    def read(self, start: int, nr_pages: int) -> list[PagemapEntry]:
        """Decoded entries of ``nr_pages`` pages from page-aligned ``start``."""
        raw = self.read_raw(start, nr_pages)
        entry = PagemapEntry
        out: list[PagemapEntry] = []
        vaddr = start
        for word in raw:
            present = bool(word & PM_PRESENT)
            out.append(entry(vaddr, present, bool(word & PM_SWAP), word & PM_PFN_MASK if present else 0,
                             bool(word & PM_MMAP_EXCLUSIVE), bool(word & PM_FILE), bool(word & PM_SOFT_DIRTY), word))
            vaddr += PAGE_SIZE
        return out

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Pagemap:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_pagemap(pid: int, start: int, nr_pages: int) -> list[PagemapEntry]:
    """Entries of ``nr_pages`` virtual pages of process ``pid`` from ``start`` (one pread of the range)."""
    with Pagemap(pid) as pagemap:
        return pagemap.read(start, nr_pages)


# --------------------------------------------------------------------------- kpagecount / kpageflags


def _runs(pfns: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted (first, count) PFN ranges covering ``pfns``; PFNs closer than a small gap share a range."""
    uniq = sorted(set(pfns))
    runs: list[tuple[int, int]] = []
    i, n = 0, len(uniq)
    while i < n:
        j = i
        while j + 1 < n and uniq[j + 1] - uniq[j] <= _COALESCE_GAP:
            j += 1
        runs.append((uniq[i], uniq[j] - uniq[i] + 1))
        i = j + 1
    return runs


class PhysReader:
    """/proc/kpagecount and /proc/kpageflags kept open (context manager); reads batch contiguous PFNs.

    fs/proc/page.c kpage_read(): 8 bytes per PFN, the precise page mapcount or the
    stable page flags.
    """

    def __init__(self) -> None:
        self._count_fd = -1
        self._flags_fd = -1
        try:
            self._count_fd = os.open(KPAGECOUNT_PATH, os.O_RDONLY | os.O_CLOEXEC)
            self._flags_fd = os.open(KPAGEFLAGS_PATH, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            path = KPAGECOUNT_PATH if self._count_fd < 0 else KPAGEFLAGS_PATH
            self.close()
            raise os_error(path, exc) from None

    def _read(self, fd: int, path: str, pfns: Sequence[int]) -> list[int]:
        for pfn in pfns:
            if pfn < 0:
                raise HostError(f"{path}: negative PFN {pfn}")
        if not pfns:
            return []
        runs = _runs(pfns)
        if len(runs) == 1:  # the common case: one folio or one contiguous range
            first, count = runs[0]
            words = self.read_range(fd, path, first, count)
            return [words[pfn - first] for pfn in pfns]
        starts = [first for first, _ in runs]
        blocks = [self.read_range(fd, path, first, count) for first, count in runs]
        out: list[int] = []
        for pfn in pfns:
            k = bisect.bisect_right(starts, pfn) - 1
            out.append(blocks[k][pfn - starts[k]])
        return out

    @staticmethod
    def read_range(fd: int, path: str, first: int, count: int) -> array[int]:
        """``count`` consecutive 64-bit words from PFN ``first`` of an open kpage file, in one pread."""
        return _words(_pread_exact(fd, count * _ENTRY, first * _ENTRY, path, None))

    def kpagecount(self, pfns: Sequence[int]) -> list[int]:
        """Precise mapcount of each PFN (``_mapcount + 1 + _entire_mapcount`` on this kernel)."""
        return self._read(self._count_fd, KPAGECOUNT_PATH, pfns)

    def kpageflags(self, pfns: Sequence[int]) -> list[int]:
        """Stable page flags (KPF_* bits) of each PFN."""
        return self._read(self._flags_fd, KPAGEFLAGS_PATH, pfns)

    def kpageflags_range(self, first: int, count: int) -> array[int]:
        """Flags of ``count`` consecutive PFNs from ``first`` (one pread)."""
        return self.read_range(self._flags_fd, KPAGEFLAGS_PATH, first, count)

    def folio_extent(self, pfn: int) -> tuple[int, int]:
        """(head PFN, order) of the folio containing ``pfn``, from the compound head/tail flags.

        A page that is neither head nor tail is order 0. Works for any compound page
        (THP, hugetlb with KPF_HUGE, slab, ...): the caller tests the flags for the kind.
        A folio is naturally aligned, so this probes O(log order) PFNs: the head is the
        first PFN found as ``pfn`` is aligned down further, and the order is the first
        power of two after the head that is not a tail. Raises HostError if the flags are
        inconsistent (the folio changed while being read, e.g. split or freed).
        """
        flags = self._flag(pfn)
        if flags is None:
            raise HostError(f"{KPAGEFLAGS_PATH}: PFN {pfn:#x} is beyond the last PFN")
        if not kpf(flags, KPF_COMPOUND_HEAD) and not kpf(flags, KPF_COMPOUND_TAIL):
            return pfn, 0
        head = pfn if kpf(flags, KPF_COMPOUND_HEAD) else self._find_head(pfn)
        order = 0
        while order < MAX_FOLIO_ORDER:
            after = self._flag(head + (1 << order))
            if after is None or not kpf(after, KPF_COMPOUND_TAIL):
                break
            order += 1
        last = self._flag(head + (1 << order) - 1)
        if order == 0 or pfn >= head + (1 << order) or last is None or not kpf(last, KPF_COMPOUND_TAIL):
            raise HostError(
                f"{KPAGEFLAGS_PATH}: inconsistent compound flags around PFN {pfn:#x} (head {head:#x}, "
                f"order {order}): the folio changed while it was read?"
            )
        return head, order

    def _flag(self, pfn: int) -> int | None:
        """The flags of one PFN, or None beyond the last PFN."""
        try:
            data = os.pread(self._flags_fd, _ENTRY, pfn * _ENTRY)
        except OSError as exc:
            raise os_error(KPAGEFLAGS_PATH, exc) from None
        return int.from_bytes(data, sys.byteorder) if len(data) == _ENTRY else None

    def _find_head(self, pfn: int) -> int:
        """The compound head of tail ``pfn``: align ``pfn`` down to growing powers of two until a head shows."""
        probed = pfn
        for k in range(1, MAX_FOLIO_ORDER + 1):
            cand = pfn & ~((1 << k) - 1)
            if cand == probed:
                continue
            probed = cand
            flags = self._flag(cand)
            if flags is not None and kpf(flags, KPF_COMPOUND_HEAD):
                return cand
            if flags is None or not kpf(flags, KPF_COMPOUND_TAIL):
                break
        raise HostError(f"{KPAGEFLAGS_PATH}: tail PFN {pfn:#x} has no aligned compound head below it")

    def close(self) -> None:
        """Close both files (idempotent)."""
        for attr in ("_count_fd", "_flags_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)

    def __enter__(self) -> PhysReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_kpagecount(pfns: Sequence[int]) -> list[int]:
    """Precise mapcount of each PFN (/proc/kpagecount)."""
    with PhysReader() as reader:
        return reader.kpagecount(pfns)


def read_kpageflags(pfns: Sequence[int]) -> list[int]:
    """KPF_* flag word of each PFN (/proc/kpageflags)."""
    with PhysReader() as reader:
        return reader.kpageflags(pfns)


def folio_extent(pfn: int) -> tuple[int, int]:
    """(head PFN, order) of the folio containing ``pfn`` (see :meth:`PhysReader.folio_extent`)."""
    with PhysReader() as reader:
        return reader.folio_extent(pfn)


# --------------------------------------------------------------------------- maps


@dataclass(frozen=True, slots=True)
class MapsEntry:
    """One line of /proc/PID/maps (fs/proc/task_mmu.c show_map_vma())."""

    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str

    @property
    def nr_pages(self) -> int:
        """Length of the VMA in pages."""
        return (self.end - self.start) // PAGE_SIZE

    @property
    def private(self) -> bool:
        """Whether the mapping is private (``p`` in the perms)."""
        return self.perms[3:4] == "p"


class Maps(Sequence[MapsEntry]):
    """The VMAs of a process from /proc/PID/maps, sorted by address; ``find(addr)`` by bisection."""

    def __init__(self, entries: Iterable[MapsEntry], pid: int | None = None) -> None:
        self.pid = pid
        self._entries = sorted(entries, key=lambda e: e.start)
        self._starts = [e.start for e in self._entries]

    @classmethod
    def parse(cls, text: str, pid: int | None = None) -> Maps:
        """Parse the text of a maps file (``start-end perms offset dev inode [path]`` per line)."""
        entries: list[MapsEntry] = []
        where = f"/proc/{pid}/maps" if pid is not None else "maps"
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split(maxsplit=5)
            try:
                start_s, end_s = fields[0].split("-")
                entries.append(
                    MapsEntry(
                        start=int(start_s, 16),
                        end=int(end_s, 16),
                        perms=fields[1],
                        offset=int(fields[2], 16),
                        dev=fields[3],
                        inode=int(fields[4]),
                        path=fields[5] if len(fields) > 5 else "",
                    )
                )
            except (ValueError, IndexError):
                raise HostError(f"{where}: line {lineno} is not a maps line: {line!r}") from None
        return cls(entries, pid)

    @classmethod
    def read(cls, pid: int) -> Maps:
        """Read and parse /proc/PID/maps."""
        path = f"/proc/{pid}/maps"
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as exc:
            raise _proc_error(path, pid, exc) from None
        return cls.parse(text, pid)

    def find(self, addr: int) -> MapsEntry | None:
        """The VMA containing ``addr``, or None."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self._entries[i].end:
            return self._entries[i]
        return None

    def __len__(self) -> int:
        return len(self._entries)

    @overload
    def __getitem__(self, index: int) -> MapsEntry: ...

    @overload
    def __getitem__(self, index: slice) -> list[MapsEntry]: ...

    def __getitem__(self, index: int | slice) -> MapsEntry | list[MapsEntry]:
        return self._entries[index]

    def __iter__(self) -> Iterator[MapsEntry]:
        return iter(self._entries)
