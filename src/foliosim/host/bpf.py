"""Read a folio's own fields (struct page / struct folio) from the running kernel with BPF, in stdlib Python.

No compiler, no libbpf: two small eBPF programs are assembled here by hand and loaded with the bpf(2) syscall
(include/uapi/linux/bpf.h). Both are RAW_TRACEPOINT programs, the kind this kernel allows (no kprobes, no fentry):

* on ``sys_enter`` (arch/x86/entry/syscall_64.c, trace_sys_enter()), acting only on the unused syscall number
  ``SYSCALL_NR`` (1000; x86-64 has about 470 syscalls, so the call itself fails with ENOSYS):
  - arg0 == 0: record ``current->mm->mm_id`` (kernel/fork.c mm_alloc_id()) keyed by the caller's tgid, so any
    process can announce its MM id (``announce_mm()``);
  - arg0 != 0, only when the caller is this reader's own process (its tgid is an immediate of the program, so two
    readers never mix): copy arg1 bytes (at most 512 struct pages) of kernel memory at arg0 with
    bpf_probe_read_kernel() into this reader's map slot, tagged with the nonce passed in arg2.
* on ``mm_page_alloc`` (mm/page_alloc.c), only during start-up: remember the struct page pointers allocated for
  this process, to calibrate the randomised ``vmemmap_base`` against PFNs from /proc/self/pagemap.

Every offset (task_struct.mm, mm_struct.mm_id, pt_regs registers, folio fields) comes from the kernel's BTF.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from types import TracebackType

from foliosim.host.btf import Btf
from foliosim.host.errors import HostError, HostUnavailable, os_error

SYSCALL_NR = 1000
"""The unused x86-64 syscall number the sys_enter program listens on (the call returns ENOSYS)."""

MAX_READ_PAGES = 512
"""Struct pages one syscall can copy: a whole order-9 (PMD-sized) folio."""

_NR_BPF = 321  # x86-64 __NR_bpf

# bpf(2) commands (enum bpf_cmd).
_MAP_CREATE = 0
_MAP_LOOKUP_ELEM = 1
_MAP_UPDATE_ELEM = 2
_MAP_GET_NEXT_KEY = 4
_PROG_LOAD = 5
_OBJ_GET_INFO_BY_FD = 15
_RAW_TRACEPOINT_OPEN = 17

_MAP_TYPE_HASH = 1
_PROG_TYPE_RAW_TRACEPOINT = 17

# Helper ids (enum bpf_func_id).
_FN_MAP_LOOKUP_ELEM = 1
_FN_MAP_UPDATE_ELEM = 2
_FN_GET_CURRENT_PID_TGID = 14
_FN_GET_CURRENT_TASK = 35
_FN_PROBE_READ_KERNEL = 113

_ATTR_SIZE = 128
_PAGEMAP_PFN_MASK = (1 << 55) - 1
_PAGEMAP_PRESENT = 1 << 63
_INIT_PID_NS = "pid:[4026531836]"  # PROC_PID_INIT_INO: BPF sees tgids of the initial pid namespace
_CALIBRATION_PAGES = 16
_VALUE_HEADER = 16  # u64 nonce, s64 bpf_probe_read_kernel() result; the copied bytes follow

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


# --- eBPF assembly -----------------------------------------------------------------------------------------------

_R0, _R1, _R2, _R3, _R4, _R5, _R6, _R7, _R8, _R9, _R10 = range(11)

# Opcodes: class | size/op | mode/source (include/uapi/linux/bpf.h, bpf_common.h).
_MOV64_IMM = 0x07 | 0xB0 | 0x00
_MOV64_REG = 0x07 | 0xB0 | 0x08
_ADD64_IMM = 0x07 | 0x00 | 0x00
_RSH64_IMM = 0x07 | 0x70 | 0x00
_LDX_DW = 0x01 | 0x60 | 0x18
_STX_DW = 0x03 | 0x60 | 0x18
_STX_W = 0x03 | 0x60 | 0x00
_ST_DW = 0x02 | 0x60 | 0x18
_LD_IMM64 = 0x00 | 0x00 | 0x18
_JA = 0x05 | 0x00
_JEQ_IMM = 0x05 | 0x10
_JGT_IMM = 0x05 | 0x20
_JNE_IMM = 0x05 | 0x50
_CALL = 0x05 | 0x80
_EXIT = 0x05 | 0x90
_PSEUDO_MAP_FD = 1


class _Asm:
    """A tiny eBPF assembler: instructions appended in order, jumps to named labels resolved at the end."""

    def __init__(self) -> None:
        self._insns: list[tuple[int, int, int, int, int, str | None]] = []
        self._labels: dict[str, int] = {}

    def _emit(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0,
              target: str | None = None) -> None:
        self._insns.append((code, dst, src, off, imm, target))

    def label(self, name: str) -> None:
        self._labels[name] = len(self._insns)

    def mov_imm(self, dst: int, imm: int) -> None:
        self._emit(_MOV64_IMM, dst, imm=imm)

    def mov(self, dst: int, src: int) -> None:
        self._emit(_MOV64_REG, dst, src)

    def add_imm(self, dst: int, imm: int) -> None:
        self._emit(_ADD64_IMM, dst, imm=imm)

    def rsh_imm(self, dst: int, imm: int) -> None:
        self._emit(_RSH64_IMM, dst, imm=imm)

    def load(self, dst: int, src: int, off: int) -> None:
        """dst = *(u64 *)(src + off)"""
        self._emit(_LDX_DW, dst, src, off)

    def store(self, dst: int, off: int, src: int) -> None:
        """*(u64 *)(dst + off) = src"""
        self._emit(_STX_DW, dst, src, off)

    def store32(self, dst: int, off: int, src: int) -> None:
        """*(u32 *)(dst + off) = src"""
        self._emit(_STX_W, dst, src, off)

    def store_imm(self, dst: int, off: int, imm: int) -> None:
        """*(u64 *)(dst + off) = imm (sign-extended)"""
        self._emit(_ST_DW, dst, off=off, imm=imm)

    def load_map_fd(self, dst: int, fd: int) -> None:
        self._emit(_LD_IMM64, dst, _PSEUDO_MAP_FD, imm=fd)
        self._emit(0)

    def jump(self, target: str) -> None:
        self._emit(_JA, target=target)

    def jeq_imm(self, dst: int, imm: int, target: str) -> None:
        self._emit(_JEQ_IMM, dst, imm=imm, target=target)

    def jne_imm(self, dst: int, imm: int, target: str) -> None:
        self._emit(_JNE_IMM, dst, imm=imm, target=target)

    def jgt_imm(self, dst: int, imm: int, target: str) -> None:
        """Unsigned dst > imm."""
        self._emit(_JGT_IMM, dst, imm=imm, target=target)

    def call(self, helper: int) -> None:
        self._emit(_CALL, imm=helper)

    def exit(self) -> None:
        self._emit(_EXIT)

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (code, dst, src, off, imm, target) in enumerate(self._insns):
            if target is not None:
                off = self._labels[target] - index - 1
            out += struct.pack("<BBhi", code, (src << 4) | dst, off, imm)
        return bytes(out)


def _probe_read(asm: _Asm, dst_stack: int, size: int, src_reg: int, src_off: int) -> None:
    """bpf_probe_read_kernel(fp + dst_stack, size, src_reg + src_off); result in r0."""
    asm.mov(_R1, _R10)
    asm.add_imm(_R1, dst_stack)
    asm.mov_imm(_R2, size)
    asm.mov(_R3, src_reg)
    asm.add_imm(_R3, src_off)
    asm.call(_FN_PROBE_READ_KERNEL)


@dataclass(frozen=True, slots=True)
class _Offsets:
    """Kernel structure offsets the programs and the decoder need, all read from BTF."""

    task_mm: int
    mm_id: int
    mm_id_size: int
    regs_arg: tuple[int, int, int]  # pt_regs offsets of syscall arguments 0, 1, 2 (x86-64: di, si, dx)
    page_size: int
    flags: int
    flags_size: int
    compound_head: int
    mapping: int
    index: int
    mapcount: int
    refcount: int
    flags_1: int
    large_mapcount: int
    nr_pages_mapped: int
    entire_mapcount: int
    pincount: int
    mm_id_mapcount: tuple[int, int]
    mm_id_mapcount_size: int
    mm_ids: int
    mm_ids_size: int
    mm_id_bits: int
    pg_head: int
    pg_anon_exclusive: int

    @classmethod
    def from_btf(cls, btf: Btf) -> _Offsets:
        m = btf.member_offset
        mm_id_size = btf.member_size("mm_struct", "mm_id")
        slot_size = btf.member_size("folio", "_mm_id[0]")
        return cls(
            task_mm=m("task_struct", "mm"),
            mm_id=m("mm_struct", "mm_id"),
            mm_id_size=mm_id_size,
            regs_arg=(m("pt_regs", "di"), m("pt_regs", "si"), m("pt_regs", "dx")),
            page_size=btf.struct_size("page"),
            flags=m("page", "flags"),
            flags_size=btf.member_size("page", "flags"),
            compound_head=m("page", "compound_head"),
            mapping=m("page", "mapping"),
            index=m("folio", "index"),  # struct page calls it __folio_index on 6.18
            mapcount=m("page", "_mapcount"),
            refcount=m("page", "_refcount"),
            flags_1=m("folio", "_flags_1"),
            large_mapcount=m("folio", "_large_mapcount"),
            nr_pages_mapped=m("folio", "_nr_pages_mapped"),
            entire_mapcount=m("folio", "_entire_mapcount"),
            pincount=m("folio", "_pincount"),
            mm_id_mapcount=(m("folio", "_mm_id_mapcount[0]"), m("folio", "_mm_id_mapcount[1]")),
            mm_id_mapcount_size=btf.member_size("folio", "_mm_id_mapcount[0]"),
            mm_ids=m("folio", "_mm_ids"),
            mm_ids_size=btf.member_size("folio", "_mm_ids"),
            mm_id_bits=8 * slot_size - 1,  # include/linux/mm_types.h MM_ID_BITS: the top bit of each slot is a flag
            pg_head=btf.enum_value("pageflags", "PG_head"),
            pg_anon_exclusive=btf.enum_value("pageflags", "PG_anon_exclusive"),
        )


def _sys_enter_program(off: _Offsets, tgid: int, mm_map: int, data_map: int, max_len: int) -> bytes:
    """The sys_enter program (see the module docstring). Stack: fp-4 key, -16/-24/-32 args, -40 mm, -48 mm_id."""
    a = _Asm()
    a.mov(_R6, _R1)
    a.load(_R7, _R6, 8)  # ctx->args[1]: the syscall number
    a.jne_imm(_R7, SYSCALL_NR, "out")
    a.call(_FN_GET_CURRENT_PID_TGID)
    a.rsh_imm(_R0, 32)
    a.mov(_R8, _R0)  # tgid
    a.store32(_R10, -4, _R8)  # the map key: tgid
    a.load(_R9, _R6, 0)  # ctx->args[0]: struct pt_regs *
    for i, slot in enumerate((-16, -24, -32)):
        _probe_read(a, slot, 8, _R9, off.regs_arg[i])
        a.jne_imm(_R0, 0, "out")
    a.load(_R1, _R10, -16)
    a.jne_imm(_R1, 0, "copy")
    # announce: mm_map[tgid] = current->mm->mm_id
    a.call(_FN_GET_CURRENT_TASK)
    a.mov(_R7, _R0)
    _probe_read(a, -40, 8, _R7, off.task_mm)
    a.jne_imm(_R0, 0, "out")
    a.load(_R7, _R10, -40)
    a.jeq_imm(_R7, 0, "out")  # kernel thread: no mm
    a.store_imm(_R10, -48, 0)
    _probe_read(a, -48, off.mm_id_size, _R7, off.mm_id)
    a.jne_imm(_R0, 0, "out")
    a.load_map_fd(_R1, mm_map)
    a.mov(_R2, _R10)
    a.add_imm(_R2, -4)
    a.mov(_R3, _R10)
    a.add_imm(_R3, -48)
    a.mov_imm(_R4, 0)  # BPF_ANY
    a.call(_FN_MAP_UPDATE_ELEM)
    a.jump("out")
    # copy: only for this reader's own process
    a.label("copy")
    a.jne_imm(_R8, tgid, "out")
    a.load_map_fd(_R1, data_map)
    a.mov(_R2, _R10)
    a.add_imm(_R2, -4)
    a.call(_FN_MAP_LOOKUP_ELEM)
    a.jeq_imm(_R0, 0, "out")
    a.mov(_R7, _R0)
    a.load(_R1, _R10, -32)
    a.store(_R7, 0, _R1)  # nonce
    a.load(_R2, _R10, -24)
    a.jgt_imm(_R2, max_len, "too_long")
    a.mov(_R1, _R7)
    a.add_imm(_R1, _VALUE_HEADER)
    a.load(_R3, _R10, -16)
    a.call(_FN_PROBE_READ_KERNEL)
    a.store(_R7, 8, _R0)
    a.jump("out")
    a.label("too_long")
    a.store_imm(_R7, 8, -errno.E2BIG)
    a.label("out")
    a.mov_imm(_R0, 0)
    a.exit()
    return a.assemble()


def _page_alloc_program(tgid: int, page_map: int) -> bytes:
    """The mm_page_alloc program: page_map[page pointer] = order, for allocations made by ``tgid``."""
    a = _Asm()
    a.mov(_R6, _R1)
    a.call(_FN_GET_CURRENT_PID_TGID)
    a.rsh_imm(_R0, 32)
    a.jne_imm(_R0, tgid, "out")
    a.load(_R1, _R6, 0)  # args[0]: struct page *
    a.store(_R10, -8, _R1)
    a.load(_R1, _R6, 8)  # args[1]: order
    a.store(_R10, -16, _R1)
    a.load_map_fd(_R1, page_map)
    a.mov(_R2, _R10)
    a.add_imm(_R2, -8)
    a.mov(_R3, _R10)
    a.add_imm(_R3, -16)
    a.mov_imm(_R4, 0)
    a.call(_FN_MAP_UPDATE_ELEM)
    a.label("out")
    a.mov_imm(_R0, 0)
    a.exit()
    return a.assemble()


# --- bpf(2) ------------------------------------------------------------------------------------------------------


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    """One bpf(2) call; OSError (errno set) on failure."""
    ret = _libc.syscall(ctypes.c_long(_NR_BPF), ctypes.c_long(cmd), attr, ctypes.c_uint(_ATTR_SIZE))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({what}): {os.strerror(err)}")
    return int(ret)


def _attr(fmt: str, *values: int | bytes) -> ctypes.Array[ctypes.c_char]:
    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(fmt, buf, 0, *values)
    return buf


def _map_create(key_size: int, value_size: int, max_entries: int, name: bytes) -> int:
    attr = _attr("<IIIIIII16s", _MAP_TYPE_HASH, key_size, value_size, max_entries, 0, 0, 0, name)
    return _bpf(_MAP_CREATE, attr, "BPF_MAP_CREATE")


def _map_elem(cmd: int, fd: int, key: ctypes.Array[ctypes.c_char], value: ctypes.Array[ctypes.c_char],
              flags: int = 0) -> None:
    attr = _attr("<IIQQQ", fd, 0, ctypes.addressof(key), ctypes.addressof(value), flags)
    _bpf(cmd, attr, {1: "BPF_MAP_LOOKUP_ELEM", 2: "BPF_MAP_UPDATE_ELEM", 4: "BPF_MAP_GET_NEXT_KEY"}.get(cmd, str(cmd)))


def _map_keys(fd: int, key_size: int) -> list[bytes]:
    """All keys of a hash map (BPF_MAP_GET_NEXT_KEY from a NULL key)."""
    keys: list[bytes] = []
    nxt = ctypes.create_string_buffer(key_size)
    attr = _attr("<IIQQQ", fd, 0, 0, ctypes.addressof(nxt), 0)
    while True:
        try:
            _bpf(_MAP_GET_NEXT_KEY, attr, "BPF_MAP_GET_NEXT_KEY")
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return keys
            raise
        keys.append(nxt.raw)
        cur = ctypes.create_string_buffer(nxt.raw, key_size)  # stays alive until attr is rebuilt
        attr = _attr("<IIQQQ", fd, 0, ctypes.addressof(cur), ctypes.addressof(nxt), 0)


def _prog_load(insns: bytes, name: bytes) -> int:
    """Load a RAW_TRACEPOINT program; on failure reload it with the verifier log and raise HostUnavailable."""
    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"GPL")  # bpf_probe_read_kernel() is GPL-only
    count = len(insns) // 8

    def load(log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = _attr("<IIQQIIQII16s", _PROG_TYPE_RAW_TRACEPOINT, count, ctypes.addressof(code),
                     ctypes.addressof(license_), 1 if log is not None else 0, len(log) if log is not None else 0,
                     ctypes.addressof(log) if log is not None else 0, 0, 0, name)
        return _bpf(_PROG_LOAD, attr, "BPF_PROG_LOAD")

    try:
        return load(None)
    except OSError as exc:
        first = exc
    log = ctypes.create_string_buffer(1 << 20)
    try:
        fd = load(log)
    except OSError:
        fd = -1
    if fd >= 0:  # loaded with the log on: keep it
        return fd
    tail = " | ".join(log.value.decode("utf-8", "replace").strip().splitlines()[-6:])
    name_ = errno.errorcode.get(first.errno or 0, str(first.errno))
    raise HostUnavailable(f"bpf(BPF_PROG_LOAD) of {name.decode()} failed: {name_}; verifier: {tail or '(no log)'}")


def _raw_tracepoint_open(tracepoint: str, prog_fd: int) -> int:
    tp = ctypes.create_string_buffer(tracepoint.encode())
    attr = _attr("<QI", ctypes.addressof(tp), prog_fd)
    try:
        return _bpf(_RAW_TRACEPOINT_OPEN, attr, "BPF_RAW_TRACEPOINT_OPEN")
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        raise HostUnavailable(f"bpf(BPF_RAW_TRACEPOINT_OPEN, {tracepoint}) failed: {name}") from None


def _prog_id(prog_fd: int) -> int:
    """The kernel's id of a loaded program (struct bpf_prog_info.id, via BPF_OBJ_GET_INFO_BY_FD)."""
    info = ctypes.create_string_buffer(8)
    attr = _attr("<IIQ", prog_fd, len(info), ctypes.addressof(info))
    _bpf(_OBJ_GET_INFO_BY_FD, attr, "BPF_OBJ_GET_INFO_BY_FD")
    return int(struct.unpack_from("<I", info, 4)[0])


def _marker_syscall(arg0: int, arg1: int, arg2: int) -> int:
    """Call syscall SYSCALL_NR; returns its errno (ENOSYS expected: nothing implements it)."""
    ret = _libc.syscall(ctypes.c_long(SYSCALL_NR), ctypes.c_ulong(arg0), ctypes.c_ulong(arg1), ctypes.c_ulong(arg2))
    return ctypes.get_errno() if ret < 0 else 0


def announce_mm() -> None:
    """Let every FolioReader on the machine record the calling process's MM id (mm_struct.mm_id) under its pid.

    Call it in a worker process on itself. The marker syscall fails with ENOSYS by design; a reader that is not
    loaded yet records nothing.
    """
    err = _marker_syscall(0, 0, 0)
    if err != errno.ENOSYS:
        raise HostError(f"syscall({SYSCALL_NR}) returned {errno.errorcode.get(err, err)}, expected ENOSYS")


# --- helpers on /proc --------------------------------------------------------------------------------------------


def _read_pagemap(addresses: list[int]) -> list[int | None]:
    """PFNs of virtual addresses of this process from /proc/self/pagemap (fs/proc/task_mmu.c pagemap_read())."""
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError as exc:
        raise os_error("/proc/self/pagemap", exc) from None
    try:
        out: list[int | None] = []
        for addr in addresses:
            (entry,) = struct.unpack("<Q", os.pread(fd, 8, (addr // page) * 8))
            pfn = entry & _PAGEMAP_PFN_MASK
            out.append(pfn if entry & _PAGEMAP_PRESENT and pfn else None)
        return out
    except OSError as exc:
        raise os_error("/proc/self/pagemap", exc) from None
    finally:
        os.close(fd)


def _max_pfn() -> int:
    """One past the highest PFN spanned by any zone (mm/vmstat.c zoneinfo_show(): start_pfn + spanned)."""
    try:
        with open("/proc/zoneinfo") as f:
            text = f.read()
    except OSError as exc:
        raise os_error("/proc/zoneinfo", exc) from None
    best = 0
    spanned = 0
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "spanned":
            spanned = int(words[1])
        elif len(words) == 2 and words[0] == "start_pfn:":
            best = max(best, int(words[1]) + spanned)
    if not best:
        raise HostError("/proc/zoneinfo: no zone with start_pfn and spanned")
    return best


# --- the folio record --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KernelFolio:
    """A folio's fields as stored in the kernel (include/linux/mm_types.h struct folio), raw: mapcounts are count-1.

    The large-folio fields live in the first tail page, so they are None for an order-0 folio.
    """

    head_pfn: int
    order: int
    flags: int  # head page flags word
    is_anon: bool  # page->mapping & FOLIO_MAPPING_ANON
    refcount: int  # _refcount
    large_mapcount: int | None
    entire_mapcount: int | None
    pincount: int | None
    nr_pages_mapped: int | None  # with the ENTIRELY_MAPPED bit as stored
    mm_ids: int | None  # the unsigned long _mm_ids word: two slot ids, lock bit, shared bit
    mm_id_mapcount: tuple[int, int] | None
    page_mapcount: tuple[int, ...]  # each page's _mapcount (-1 = unmapped)
    anon_exclusive: tuple[bool, ...]  # each page's PG_anon_exclusive
    mm_id_bits: int = 31  # MM_ID_BITS: 31 on 64-bit (mm_id_t is unsigned int), from BTF

    @property
    def nr_pages(self) -> int:
        return 1 << self.order

    def mm_id(self, slot: int) -> int | None:
        """The MM id in slot 0 or 1 of _mm_ids (flag bits masked off); 0 (MM_ID_DUMMY) = free slot."""
        if slot not in (0, 1):
            raise ValueError(f"slot must be 0 or 1, not {slot}")
        if self.mm_ids is None:
            return None
        return (self.mm_ids >> (slot * (self.mm_id_bits + 1))) & ((1 << self.mm_id_bits) - 1)

    @property
    def lock_bit(self) -> bool | None:
        """FOLIO_MM_IDS_LOCK_BITNUM (= MM_ID_BITS): the bit spinlock of folio_lock_large_mapcount()."""
        return None if self.mm_ids is None else bool(self.mm_ids >> self.mm_id_bits & 1)

    @property
    def shared_bit(self) -> bool | None:
        """FOLIO_MM_IDS_SHARED_BITNUM (= 2 * MM_ID_BITS + 1): the "maybe mapped shared" bit."""
        return None if self.mm_ids is None else bool(self.mm_ids >> (2 * self.mm_id_bits + 1) & 1)


# --- the reader --------------------------------------------------------------------------------------------------


class BpfObjects:
    """Owner of BPF fds (maps, programs, links): closes them newest first, once, also when collected.

    Closing a link's or program's last fd detaches and unloads it, so nothing stays loaded in the kernel.
    """

    _fds: list[int]

    def close(self) -> None:
        """Close every fd in reverse order of creation (idempotent)."""
        fds, self._fds = getattr(self, "_fds", []), []
        for fd in reversed(fds):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fds", None):
            self.close()


class FolioReader(BpfObjects):
    """Loads the programs, calibrates vmemmap_base, and reads struct pages of any PFN. A context manager.

    ``close()`` (idempotent) detaches the program and closes every BPF fd it opened.
    """

    def __init__(self, btf: Btf | None = None) -> None:
        self._fds: list[int] = []
        self._closed = False
        self._lock = threading.Lock()
        self._nonce = 0
        self.prog_ids: tuple[int, ...] = ()
        self.startup_seconds = 0.0
        start = time.perf_counter()
        if os.geteuid() != 0:
            raise HostUnavailable("BPF folio reader: not root (needs CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)")
        try:
            pidns = os.readlink("/proc/self/ns/pid")
        except OSError as exc:
            raise os_error("/proc/self/ns/pid", exc) from None
        if pidns != _INIT_PID_NS:
            raise HostUnavailable(f"BPF folio reader: not in the initial pid namespace ({pidns}); tgids would differ")
        self.btf = btf if btf is not None else Btf.load()
        for tracepoint, expected in (("sys_enter", ["struct pt_regs *", "long int"]),
                                     ("mm_page_alloc", ["struct page *", "unsigned int"])):
            got = self.btf.tracepoint_args(tracepoint)
            if got[: len(expected)] != expected:
                raise HostUnavailable(f"tracepoint {tracepoint} has arguments {got}, expected {expected} first")
        self.offsets = off = _Offsets.from_btf(self.btf)
        if (off.flags_size != 8 or off.flags % 8 or off.page_size % 8 or off.mapcount % 4
                or self.btf.member_size("page", "_mapcount") != 4 or off.mm_ids_size != 8):
            raise HostUnavailable(f"unexpected struct page/folio layout in BTF ({off}); this reader expects x86-64")
        self.tgid = os.getpid()
        self.max_read = MAX_READ_PAGES * self.offsets.page_size
        self.max_pfn = _max_pfn()
        try:
            self._load()
            self.vmemmap_base = self._calibrate()
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.perf_counter() - start

    def _own(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def _load(self) -> None:
        """Create the maps, load the sys_enter program and attach it."""
        off = self.offsets
        try:
            self._mm_map = self._own(_map_create(4, 8, 8192, b"foliosim_mmid"))
            self._data_map = self._own(_map_create(4, _VALUE_HEADER + self.max_read, 1, b"foliosim_pages"))
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                name = errno.errorcode[exc.errno]
                raise HostUnavailable(f"bpf(BPF_MAP_CREATE): {name} (BPF not permitted)") from None
            raise os_error("bpf(BPF_MAP_CREATE)", exc) from None
        self._key = ctypes.create_string_buffer(struct.pack("<I", self.tgid), 4)
        self._value = ctypes.create_string_buffer(_VALUE_HEADER + self.max_read)
        try:
            _map_elem(_MAP_UPDATE_ELEM, self._data_map, self._key, self._value)
        except OSError as exc:
            raise os_error("bpf(BPF_MAP_UPDATE_ELEM)", exc) from None
        insns = _sys_enter_program(off, self.tgid, self._mm_map, self._data_map, self.max_read)
        prog = self._own(_prog_load(insns, b"foliosim_read"))
        self._own(_raw_tracepoint_open("sys_enter", prog))
        self.prog_ids = (_prog_id(prog),)

    def _calibrate(self) -> int:
        """vmemmap_base = page pointer - PFN * sizeof(struct page), agreed by at least two fresh anonymous pages."""
        psize = self.offsets.page_size
        try:
            page_map = _map_create(8, 8, 4096, b"foliosim_alloc")
        except OSError as exc:
            raise os_error("bpf(BPF_MAP_CREATE)", exc) from None
        prog = link = -1
        pagesz = os.sysconf("SC_PAGE_SIZE")
        length = _CALIBRATION_PAGES * pagesz
        addr = 0
        try:
            prog = _prog_load(_page_alloc_program(self.tgid, page_map), b"foliosim_calib")
            link = _raw_tracepoint_open("mm_page_alloc", prog)
            addr = self._fresh_pages(length)
            os.close(link)
            link = -1
            addresses = [addr + i * pagesz for i in range(_CALIBRATION_PAGES)]
            pages = [(a, p) for a, p in zip(addresses, _read_pagemap(addresses), strict=True) if p is not None]
            pointers = [struct.unpack("<Q", k)[0] for k in _map_keys(page_map, 8)]
            votes: Counter[int] = Counter()
            for pfn in {p for _a, p in pages}:
                for base in {ptr - pfn * psize for ptr in pointers}:
                    votes[base] += 1
            # Pages allocated back to back make base +- k * sizeof(struct page) fit as well: read each candidate's
            # struct pages back and keep the one under which every fresh page is what it must be.
            for base, count in votes.most_common(8):
                if count >= 2 and len(pages) >= 2 and all(self._is_fresh_page(base, a, p) for a, p in pages):
                    self.vmemmap_base = base
                    return base
            raise HostError(f"vmemmap_base calibration: no base confirmed by two pages ({len(pointers)} "
                            f"allocations seen, {len(pages)} PFNs, candidates {votes.most_common(3)})")
        except OSError as exc:
            raise os_error("vmemmap_base calibration", exc) from None
        finally:
            for fd in (link, prog, page_map):
                if fd >= 0:
                    os.close(fd)
            if addr:
                _libc.munmap(addr, length)

    @staticmethod
    def _fresh_pages(length: int) -> int:
        """Map private anonymous memory (no THP) and write every page so each gets a new order-0 folio."""
        prot = 0x1 | 0x2  # PROT_READ | PROT_WRITE
        flags = 0x02 | 0x20  # MAP_PRIVATE | MAP_ANONYMOUS
        addr = _libc.mmap(None, length, prot, flags, -1, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            err = ctypes.get_errno()
            raise HostError(f"mmap({length}): {errno.errorcode.get(err, err)}")
        _libc.madvise(addr, length, 15)  # MADV_NOHUGEPAGE
        ctypes.memset(addr, 0x5A, length)
        return int(addr)

    def _is_fresh_page(self, base: int, address: int, pfn: int) -> bool:
        """Does the struct page at ``base`` for ``pfn`` describe our page at ``address``: anonymous, mapped once,
        with the index of a private anonymous mapping (mm/mmap.c do_mmap(): vm_pgoff = address >> PAGE_SHIFT)?"""
        off = self.offsets
        try:
            raw = self._read_kernel(base + pfn * off.page_size, off.page_size)
        except HostError:
            return False
        mapping, index = struct.unpack_from("<QQ", raw, off.mapping)[0], struct.unpack_from("<Q", raw, off.index)[0]
        mapcount = struct.unpack_from("<i", raw, off.mapcount)[0]
        return bool(mapping & 1) and mapcount == 0 and index == address // os.sysconf("SC_PAGE_SIZE")

    # -- reading ---------------------------------------------------------------------------------------------------

    def _read_kernel(self, address: int, length: int) -> bytes:
        """Copy ``length`` bytes of kernel memory at ``address`` (at most max_read) through the sys_enter program."""
        if self._closed:
            raise HostError("FolioReader is closed")
        if os.getpid() != self.tgid:
            raise HostError(f"FolioReader of process {self.tgid} used from process {os.getpid()} (after fork?)")
        if not 0 < length <= self.max_read:
            raise ValueError(f"length {length} not in 1..{self.max_read}")
        with self._lock:
            self._nonce += 1
            err = _marker_syscall(address, length, self._nonce)
            if err != errno.ENOSYS:
                raise HostError(f"syscall({SYSCALL_NR}): {errno.errorcode.get(err, err)}, expected ENOSYS")
            try:
                _map_elem(_MAP_LOOKUP_ELEM, self._data_map, self._key, self._value)
            except OSError as exc:
                raise os_error("bpf(BPF_MAP_LOOKUP_ELEM)", exc) from None
            nonce, ret = struct.unpack_from("<Qq", self._value, 0)
            if nonce != self._nonce:
                raise HostError(f"the sys_enter program did not answer read {self._nonce} (got {nonce})")
            if ret != 0:
                name = errno.errorcode.get(-ret, str(ret))
                raise HostError(f"bpf_probe_read_kernel({address:#x}, {length}): {name}")
            return self._value.raw[_VALUE_HEADER : _VALUE_HEADER + length]

    def read_pages(self, pfn: int, nr: int = 1) -> bytes:
        """The raw struct pages of PFNs pfn .. pfn+nr-1 (one syscall per 512 pages)."""
        if nr < 1:
            raise ValueError(f"nr must be >= 1, not {nr}")
        if pfn < 0 or pfn + nr > self.max_pfn:
            raise HostError(f"PFN range {pfn}..{pfn + nr - 1} outside RAM (max PFN {self.max_pfn - 1})")
        psize = self.offsets.page_size
        chunks: list[bytes] = []
        while nr > 0:
            n = min(nr, MAX_READ_PAGES)
            chunks.append(self._read_kernel(self.vmemmap_base + pfn * psize, n * psize))
            pfn += n
            nr -= n
        return b"".join(chunks)

    def read_folio(self, head_pfn: int, order: int) -> KernelFolio:
        """The folio of ``order`` whose head page is ``head_pfn``, read in one copy (orders up to 9).

        HostError if the head page is not the head of a folio of that order (PG_head, _flags_1 order byte), e.g.
        after the folio was split or freed.
        """
        if order < 0:
            raise ValueError(f"order must be >= 0, not {order}")
        off = self.offsets
        nr = 1 << order
        raw = self.read_pages(head_pfn, nr)
        ps = off.page_size

        def uint(pos: int, size: int) -> int:
            return int.from_bytes(raw[pos : pos + size], "little")

        def sint(pos: int, size: int = 4) -> int:
            return int.from_bytes(raw[pos : pos + size], "little", signed=True)

        flags = uint(off.flags, off.flags_size)
        is_head = bool(flags >> off.pg_head & 1)
        is_tail = bool(uint(off.compound_head, 8) & 1)
        if is_tail:
            raise HostError(f"PFN {head_pfn} is a tail page, not the head of a folio")
        if order == 0 and is_head:
            found = self._order_of(head_pfn)
            raise HostError(f"PFN {head_pfn} heads an order-{found} folio, not an order-0 one")
        if order > 0:
            found = uint(off.flags_1, 8) & 0xFF if is_head else 0
            if found != order:
                raise HostError(f"PFN {head_pfn} is not the head of an order-{order} folio (found order {found})")
        view = memoryview(raw)  # per-page fields as strided views: one C-level slice instead of 2 x nr decodes
        exclusive = 1 << off.pg_anon_exclusive
        large: dict[str, int] = {}
        mm_id_mapcount: tuple[int, int] | None = None
        if order > 0:
            large = {
                "large_mapcount": sint(off.large_mapcount),
                "entire_mapcount": sint(off.entire_mapcount),
                "pincount": sint(off.pincount),
                "nr_pages_mapped": sint(off.nr_pages_mapped),
                "mm_ids": uint(off.mm_ids, off.mm_ids_size),
            }
            mm_id_mapcount = (sint(off.mm_id_mapcount[0], off.mm_id_mapcount_size),
                              sint(off.mm_id_mapcount[1], off.mm_id_mapcount_size))
        return KernelFolio(
            head_pfn=head_pfn,
            order=order,
            flags=flags,
            is_anon=bool(uint(off.mapping, 8) & 1),
            refcount=sint(off.refcount),
            large_mapcount=large.get("large_mapcount"),
            entire_mapcount=large.get("entire_mapcount"),
            pincount=large.get("pincount"),
            nr_pages_mapped=large.get("nr_pages_mapped"),
            mm_ids=large.get("mm_ids"),
            mm_id_mapcount=mm_id_mapcount,
            page_mapcount=tuple(view.cast("i")[off.mapcount // 4 :: ps // 4]),
            anon_exclusive=tuple(bool(word & exclusive) for word in view.cast("Q")[off.flags // 8 :: ps // 8]),
            mm_id_bits=off.mm_id_bits,
        )

    def _order_of(self, head_pfn: int) -> int:
        """The order byte of a head page's folio (_flags_1 in the first tail page)."""
        raw = self.read_pages(head_pfn, 2)
        return raw[self.offsets.flags_1] & 0xFF

    def mm_id_of(self, pid: int) -> int | None:
        """The MM id process ``pid`` announced with announce_mm() while this reader was loaded (None if it did not).

        The entry stays after the process exits (a reused pid that never announced would show the old id).
        """
        if self._closed:
            raise HostError("FolioReader is closed")
        key = ctypes.create_string_buffer(struct.pack("<I", pid), 4)
        value = ctypes.create_string_buffer(8)
        try:
            _map_elem(_MAP_LOOKUP_ELEM, self._mm_map, key, value)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise os_error("bpf(BPF_MAP_LOOKUP_ELEM)", exc) from None
        return int(struct.unpack("<Q", value.raw)[0])

    # -- lifetime --------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Detach the program and close every BPF fd (link first, then program, then maps). Idempotent."""
        self._closed = True
        super().close()

    def __enter__(self) -> FolioReader:
        return self
