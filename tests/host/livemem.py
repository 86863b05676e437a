"""Test helpers: private anonymous memory through libc mmap/madvise (ctypes), touched byte by byte."""

from __future__ import annotations

import ctypes
import ctypes.util
from types import TracebackType

PAGE = 4096
PROT_READ = 1
PROT_WRITE = 2
MAP_PRIVATE = 0x02
MAP_ANONYMOUS = 0x20
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


class AnonMap:
    """A private anonymous mapping of ``nr_pages`` pages, optionally aligned to ``align`` bytes."""

    def __init__(self, nr_pages: int, align: int = PAGE) -> None:
        self.length = nr_pages * PAGE
        self._raw_len = self.length + align
        raw = _libc.mmap(None, self._raw_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if raw in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap")
        self._raw = int(raw)
        self.addr = (self._raw + align - 1) // align * align

    def madvise(self, advice: int, offset: int = 0, length: int | None = None) -> None:
        n = self.length - offset if length is None else length
        if _libc.madvise(self.addr + offset, n, advice) != 0:
            raise OSError(ctypes.get_errno(), "madvise")

    def write(self, page: int, value: int = 1) -> None:
        ctypes.c_ubyte.from_address(self.addr + page * PAGE).value = value

    def read(self, page: int) -> int:
        return int(ctypes.c_ubyte.from_address(self.addr + page * PAGE).value)

    def fill(self) -> None:
        ctypes.memset(self.addr, 1, self.length)

    def close(self) -> None:
        if self._raw:
            _libc.munmap(self._raw, self._raw_len)
            self._raw = 0

    def __enter__(self) -> AnonMap:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
