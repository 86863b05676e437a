"""Every task's MM id, read with a BPF task iterator (kernel/bpf/task_iter.c ``bpf_iter_task``), in stdlib Python.

The sys_enter program of :mod:`foliosim.host.bpf` learns a process's MM id only when that process calls the marker
syscall itself (``announce_mm()``). A census of arbitrary processes needs the id of every process: a BPF iterator
program (type TRACING, attach type BPF_TRACE_ITER, attached to the BTF function ``bpf_iter_task``) visits every
task and writes ``(tgid, pid, current mm->mm_id)`` into the iterator's seq_file with ``bpf_seq_write()``; reading the
iterator fd (BPF_ITER_CREATE) runs it. The id is kernel/fork.c mm_alloc_id()'s, the one folio slots hold; 0
(MM_ID_DUMMY) means the task has no mm (a kernel thread, or a task past exit_mm()).

Every offset comes from BTF; helper, command and attach-type numbers too, from the kernel's own enums.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass

from foliosim.host import bpf as _b
from foliosim.host.btf import KIND_FUNC, Btf
from foliosim.host.errors import HostError, HostUnavailable, os_error

_RECORD = struct.Struct("<iiI")  # tgid, pid, mm_id (the program writes 12 bytes per task)
_LDX_W = 0x01 | 0x60 | 0x00  # BPF_LDX | BPF_MEM | BPF_W
_READ_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class TaskMm:
    """One task as the iterator saw it: thread-group id, task id, and its mm's ``mm_id`` (0 = no mm)."""

    tgid: int
    pid: int
    mm_id: int


def _enum(btf: Btf, enum: str, name: str) -> int:
    try:
        return btf.enum_value(enum, name)
    except HostError as exc:
        raise HostUnavailable(f"BTF has no {enum}.{name}: {exc}") from None


def _iter_program(btf: Btf, seq_write: int) -> bytes:
    """The iterator program. Stack: fp-16 tgid, fp-12 pid, fp-8 mm_id; ctx is struct bpf_iter__task."""
    m = btf.member_offset
    for struct_name, member, size in (("task_struct", "tgid", 4), ("task_struct", "pid", 4),
                                      ("mm_struct", "mm_id", 4)):
        got = btf.member_size(struct_name, member)
        if got != size:
            raise HostUnavailable(f"BTF: {struct_name}.{member} is {got} bytes, expected {size}")
    a = _b._Asm()
    a.mov(_b._R6, _b._R1)
    a.load(_b._R7, _b._R6, m("bpf_iter__task", "task"))
    a.jeq_imm(_b._R7, 0, "out")  # the end-of-iteration call passes a NULL task
    a._emit(_LDX_W, _b._R1, _b._R7, m("task_struct", "tgid"))
    a.store32(_b._R10, -16, _b._R1)
    a._emit(_LDX_W, _b._R1, _b._R7, m("task_struct", "pid"))
    a.store32(_b._R10, -12, _b._R1)
    a.store_imm(_b._R10, -8, 0)
    a.load(_b._R8, _b._R7, m("task_struct", "mm"))
    a.jeq_imm(_b._R8, 0, "emit")
    a._emit(_LDX_W, _b._R1, _b._R8, m("mm_struct", "mm_id"))
    a.store32(_b._R10, -8, _b._R1)
    a.label("emit")
    a.load(_b._R1, _b._R6, m("bpf_iter__task", "meta"))
    a.load(_b._R1, _b._R1, m("bpf_iter_meta", "seq"))
    a.mov(_b._R2, _b._R10)
    a.add_imm(_b._R2, -16)
    a.mov_imm(_b._R3, _RECORD.size)
    a.call(seq_write)
    a.label("out")
    a.mov_imm(_b._R0, 0)
    a.exit()
    return a.assemble()


class TaskIterator(_b.BpfObjects):
    """A loaded and attached ``bpf_iter_task`` program; :meth:`read` runs one pass over every task.

    A context manager; ``close()`` (idempotent) closes the link and the program.
    """

    def __init__(self, btf: Btf | None = None) -> None:
        self._fds: list[int] = []
        if os.geteuid() != 0:
            raise HostUnavailable("BPF task iterator: not root (needs CAP_BPF, CAP_PERFMON)")
        self.btf = btf if btf is not None else Btf.load()
        try:
            target = self.btf.find("bpf_iter_task", {KIND_FUNC})
        except HostError as exc:
            raise HostUnavailable(f"BTF has no bpf_iter_task function (no BPF task iterator): {exc}") from None
        self._prog_type = _enum(self.btf, "bpf_prog_type", "BPF_PROG_TYPE_TRACING")
        self._attach_type = _enum(self.btf, "bpf_attach_type", "BPF_TRACE_ITER")
        self._link_create = _enum(self.btf, "bpf_cmd", "BPF_LINK_CREATE")
        self._iter_create = _enum(self.btf, "bpf_cmd", "BPF_ITER_CREATE")
        prog_load = _enum(self.btf, "bpf_cmd", "BPF_PROG_LOAD")
        insns = _iter_program(self.btf, _enum(self.btf, "bpf_func_id", "BPF_FUNC_seq_write"))
        try:
            prog = self._load(prog_load, insns, target)
            self._fds.append(prog)
            attr = _b._attr("<IIII", prog, 0, self._attach_type, 0)
            try:
                self._link = _b._bpf(self._link_create, attr, "BPF_LINK_CREATE")
            except OSError as exc:
                raise HostUnavailable(f"bpf(BPF_LINK_CREATE) of the task iterator: "
                                      f"{errno.errorcode.get(exc.errno or 0, exc.errno)}") from None
            self._fds.append(self._link)
        except BaseException:
            self.close()
            raise

    def _load(self, cmd: int, insns: bytes, target: int) -> int:
        """BPF_PROG_LOAD of a TRACING/BPF_TRACE_ITER program attached to BTF function ``target``."""
        code = ctypes.create_string_buffer(insns, len(insns))
        license_ = ctypes.create_string_buffer(b"GPL")
        log = ctypes.create_string_buffer(1 << 18)
        # union bpf_attr (PROG_LOAD): prog_type, insn_cnt, insns, license, log_level, log_size, log_buf,
        # kern_version, prog_flags, prog_name, prog_ifindex, expected_attach_type, prog_btf_fd,
        # func_info_rec_size, func_info, func_info_cnt, line_info_rec_size, line_info, line_info_cnt,
        # attach_btf_id
        attr = _b._attr("<IIQQIIQII16sIIIIQIIQII", self._prog_type, len(insns) // 8, ctypes.addressof(code),
                        ctypes.addressof(license_), 1, len(log), ctypes.addressof(log), 0, 0, b"foliosim_tasks",
                        0, self._attach_type, 0, 0, 0, 0, 0, 0, 0, target)
        try:
            return _b._bpf(cmd, attr, "BPF_PROG_LOAD")
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            tail = " | ".join(log.value.decode("utf-8", "replace").strip().splitlines()[-4:])
            raise HostUnavailable(f"bpf(BPF_PROG_LOAD) of the task iterator failed: {name}; "
                                  f"verifier: {tail or '(no log)'}") from None

    def read(self) -> list[TaskMm]:
        """One pass over every task of the machine (BPF_ITER_CREATE, then read() to the end)."""
        if not self._fds:
            raise HostError("TaskIterator is closed")
        attr = _b._attr("<II", self._link, 0)
        try:
            fd = _b._bpf(self._iter_create, attr, "BPF_ITER_CREATE")
        except OSError as exc:
            raise os_error("bpf(BPF_ITER_CREATE)", exc) from None
        chunks: list[bytes] = []
        try:
            while True:
                try:
                    chunk = os.read(fd, _READ_CHUNK)
                except OSError as exc:
                    if exc.errno == errno.EAGAIN:  # the iterator restarts itself after a concurrent change
                        continue
                    raise os_error("read(bpf task iterator)", exc) from None
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) % _RECORD.size:
            raise HostError(f"bpf task iterator: {len(data)} bytes is not a whole number of records")
        return [TaskMm(*rec) for rec in _RECORD.iter_unpack(data)]

    def mm_ids(self) -> dict[int, int]:
        """tgid -> mm_id of every thread group with an mm (any of its threads' mm: a zombie leader has none)."""
        out: dict[int, int] = {}
        for task in self.read():
            if task.mm_id and task.tgid not in out:
                out[task.tgid] = task.mm_id
        return out

    def __enter__(self) -> TaskIterator:
        return self
