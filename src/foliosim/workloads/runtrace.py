"""Read a run trace (docs/run-trace.md) and turn it into simulator steps, inventing nothing.

A run trace records what a real program's process tree did to memory: tasks (spawn, fork, thread, vfork,
exec, exit), memory system calls with their real arguments and results, every user page fault, and with
``--check-live`` snapshots of the live anonymous pages. :class:`RunTrace` reads and checks it (every
malformed line is a :class:`RunTraceError` naming the line and the field); :func:`convert` turns it into
:class:`~foliosim.workloads.steps.Step` objects, with a :class:`Snapshot` marker where each snapshot was
taken. Each recorded fault becomes one ``fault`` step (one access of that page by that task); each
successful call becomes the steps that do what the kernel did, at the program's own addresses (integer
regions = virtual page numbers). Failed calls change nothing. Whatever the simulator cannot express is
counted by name in :class:`ConvertStats`, never dropped silently.

Folio sizes follow the recorded THP settings: a ``thp`` step gives the machine the anon orders allowed
"always" and those MADV_HUGEPAGE adds ("madvise", and "inherit" resolved against the top-level
``enabled``); the VMA's madvise state then decides (mm/huge_memory.c thp_vma_allowable_orders()).
File-backed pages are page-cache folios of one simulator file per (device, inode), shared by every
traced process that maps it, sized to cover every page mapped.
"""

from __future__ import annotations

import bisect
import codecs
import gc
import gzip
import json
import re
import zlib
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from itertools import chain, repeat, starmap
from operator import countOf, itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from foliosim.workloads.steps import Step, WorkloadError, load_steps

FORMAT = "foliosim-run-trace"
VERSION = 1
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PMD_ORDER = 9

# include/uapi/linux/sched.h
CLONE_VM = 0x100
# include/uapi/asm-generic/mman-common.h, mman.h (x86-64)
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE, MAP_DROPPABLE, MAP_TYPE = 0x01, 0x02, 0x03, 0x08, 0x0F
MAP_ANONYMOUS, MAP_GROWSDOWN, MAP_LOCKED, MAP_NORESERVE, MAP_POPULATE, MAP_NONBLOCK, MAP_STACK, MAP_HUGETLB = (
    0x20, 0x100, 0x2000, 0x4000, 0x8000, 0x10000, 0x20000, 0x40000)
NORESERVE = "+noreserve"  # the step protection's MAP_NORESERVE suffix (workloads/steps.py PROT_FLAGS)
MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP = 1, 2, 4
SHM_RDONLY = 0o10000
IORING_REGISTER_BUFFERS, IORING_UNREGISTER_BUFFERS = 0, 1
IORING_REGISTER_BUFFERS2, IORING_REGISTER_BUFFERS_UPDATE = 15, 16
MLOCK_ONFAULT = 1
# include/uapi/linux/prctl.h: the prctl() options that change memory (the recorder stops at these only)
PR_SET_THP_DISABLE, PR_SET_MEMORY_MERGE, PR_SET_VMA = 41, 67, 0x53564D41
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
#: calls that change nothing the simulator models (one NUMA node; no placement)
NO_EFFECT_CALLS = ("mbind", "move_pages")
IORING_REGISTER_USE_REGISTERED_RING = 1 << 31
#: madvise advice -> the simulator's advice (include/uapi/asm-generic/mman-common.h)
MADV_STEPS = {4: "dontneed", 24: "dontneed", 20: "cold", 21: "pageout", 10: "dontfork", 11: "dofork",
              14: "hugepage", 15: "nohugepage"}
MADV_NAMES = {0: "MADV_NORMAL", 1: "MADV_RANDOM", 2: "MADV_SEQUENTIAL", 3: "MADV_WILLNEED", 4: "MADV_DONTNEED",
              8: "MADV_FREE", 9: "MADV_REMOVE", 10: "MADV_DONTFORK", 11: "MADV_DOFORK", 12: "MADV_MERGEABLE",
              13: "MADV_UNMERGEABLE", 14: "MADV_HUGEPAGE", 15: "MADV_NOHUGEPAGE", 16: "MADV_DONTDUMP",
              17: "MADV_DODUMP", 18: "MADV_WIPEONFORK", 19: "MADV_KEEPONFORK", 20: "MADV_COLD", 21: "MADV_PAGEOUT",
              22: "MADV_POPULATE_READ", 23: "MADV_POPULATE_WRITE", 24: "MADV_DONTNEED_LOCKED", 25: "MADV_COLLAPSE",
              102: "MADV_GUARD_INSTALL", 103: "MADV_GUARD_REMOVE"}
#: advice that changes nothing the simulator models (no folio, mapping or fork behaviour)
MADV_NO_EFFECT = (0, 1, 2, 3, 16, 17)
#: the largest stack the simulator lets a growsdown mapping reach (the default RLIMIT_STACK, 8 MiB)
STACK_LIMIT_PAGES = (8 << 20) >> PAGE_SHIFT
#: pages per access step when a call populates a range (MAP_POPULATE, MADV_POPULATE_*)
POPULATE_CHUNK = 256

# what a recorded fault became at conversion (the runner counts the rest: evaluate/runner.py FAULT_*)
FAULT_OUTSIDE = "outside any VMA the trace describes"
FAULT_EXEC = "outside the mappings the trace describes (set up by execve: stack, program, loader, vdso)"
FAULT_OPAQUE = "in a mapping the simulator cannot express"


class RunTraceError(WorkloadError):
    """A run trace that cannot be read: the message names the file, the line and the field."""


# ---------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True, slots=True)
class ThpSettings:
    """The THP settings of the run, as the simulator uses them."""

    always: frozenset[int]  # anon orders every private anonymous VMA may use
    madvise: frozenset[int]  # the extra anon orders a VMA with MADV_HUGEPAGE may use
    shmem: frozenset[int]  # orders anonymous shared memory may use (always, within_size, inherit -> always)
    shmem_file_order: int  # order of tmpfs/memfd page-cache folios (PMD with shmem_enabled always/force, else 0)


@dataclass(frozen=True, slots=True)
class Header:
    """The first line of a run trace."""

    command: tuple[str, ...]
    kernel: str
    page_size: int
    thp: ThpSettings
    thp_raw: dict[str, Any]
    thp_set: dict[str, Any]
    recorder: dict[str, Any]
    check_live: bool
    incomplete: str | None = None  # why the recording stopped early (the recorder was interrupted), or None


#: bytes of text :meth:`RunTrace.blocks` reads at a time (the compressed file is read :data:`_INFLATE_IN` at a time)
READ_BYTES = 1 << 18
_INFLATE_IN = 1 << 16
#: characters of the text read so far that :meth:`RunTrace.blocks` hands out only with the next block
_HOLD_BACK = 1 << 16


def _line_list(text: str) -> list[str]:
    """``text`` cut after each line feed (the lines text mode reads from it when it has no carriage return; unlike
    ``splitlines``, nothing else ends a line)."""
    lines: list[str] = []
    append, find = lines.append, text.find
    at = 0
    end = len(text)
    while at < end:
        nl = find("\n", at) + 1
        if not nl:
            nl = end
        append(text[at:nl])
        at = nl
    return lines


def _numbered(before: int, run: list[str]) -> Iterator[tuple[int, str]]:
    """A block of :meth:`RunTrace.blocks` as (line number, text) pairs."""
    return enumerate(run, before + 1)


def _runs(lines: list[str], before: int) -> Iterator[tuple[int, list[str]]]:
    """The runs of non-blank ``lines`` (the line numbered ``before + 1`` first), each with the number of the line
    before it."""
    if "" not in lines and not any(map(str.isspace, lines)):  # (the usual case: no blank line)
        if lines:
            yield before, lines
        return
    start = 0
    for i, line in enumerate(lines):
        if not line or line.isspace():
            if i > start:
                yield before + start, lines[start:i]
            start = i + 1
    if start < len(lines):
        yield before + start, lines[start:]


class RunTrace:
    """A run trace on disk (JSON Lines, optionally gzip) or in memory, readable more than once."""

    def __init__(self, name: str, path: str | Path | None = None, text: str | None = None) -> None:
        if (path is None) == (text is None):
            raise ValueError("a run trace needs a path or a text")
        self.name = name
        self.path = Path(path) if path is not None else None
        self.text = text
        self._header: Header | None = None

    @classmethod
    def open(cls, path: str | Path) -> RunTrace:
        """A run trace file; RunTraceError if it cannot be read or does not start with a run-trace header."""
        trace = cls(str(path), path=path)
        trace.header  # noqa: B018 - read and check the header now
        return trace

    @property
    def header(self) -> Header:
        if self._header is None:
            for lineno, line in self._lines_one_by_one():  # (a block would read far more than the first line)
                self._header = parse_header(line, f"{self.name} line {lineno}")
                break
            else:
                raise RunTraceError(f"{self.name}: empty file (no run-trace header)")
        return self._header

    def lines(self) -> Iterator[tuple[int, str]]:
        """(line number, text) of every non-blank line (:meth:`blocks` numbered, without a generator's resumption
        per line)."""
        return chain.from_iterable(starmap(_numbered, self.blocks()))

    def blocks(self) -> Iterator[tuple[int, list[str]]]:
        """:meth:`lines` a list at a time: (the number of the line before the first, non-blank lines in a row),
        the same texts with the same RunTraceError at the same point of the reading, for less: the file is
        inflated (zlib, one gzip member) and decoded :data:`READ_BYTES` at a time and cut at its line feeds. When
        text mode would read it otherwise (a carriage return: a line end) or the gzip module would have more to
        say (a stream cut short or corrupt, another member, bytes after it, not UTF-8, an OSError), the rest is
        read by :meth:`_lines_one_by_one` (one line per list), which raises the error where it would."""
        if self.text is not None:
            yield from _runs(self.text.splitlines(), 0)
            return
        assert self.path is not None
        done = 0  # the lines handed out (blank ones included)
        try:
            with self.path.open("rb") as raw:
                gz = raw.read(2) == b"\x1f\x8b"
                raw.seek(0)
                inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gz else None  # (gzip header and trailer)
                decode = codecs.getincrementaldecoder("utf-8")().decode  # what text mode decodes with
                parts: list[str] = []  # the start of a line not ended yet
                while True:
                    if inflate is None:
                        data = raw.read(READ_BYTES)
                        last = not data
                    else:
                        buf = inflate.unconsumed_tail or raw.read(_INFLATE_IN)
                        data = inflate.decompress(buf, READ_BYTES) if buf else inflate.flush()
                        last = inflate.eof or not buf
                        if last and (not inflate.eof or inflate.unused_data or raw.read(1)):
                            break
                    chunk = decode(data, last)
                    # the lines ending _HOLD_BACK before what was read so far: the gzip module's reading (8 KiB of
                    # text at a time) reaches them before any error it may raise further on
                    cut = len(chunk) if last else chunk.rfind("\n", 0, max(len(chunk) - _HOLD_BACK, 0)) + 1
                    if not cut and not last:
                        parts.append(chunk)
                        continue
                    if parts:
                        parts.append(chunk[:cut])
                        text = "".join(parts)
                        parts = [chunk[cut:]]
                    else:
                        text = chunk[:cut]
                        parts = [chunk[cut:]] if cut < len(chunk) else []
                    if "\r" in text:  # a line end to text mode (universal newlines)
                        break
                    lines = _line_list(text)
                    yield from _runs(lines, done)
                    done += len(lines)
                    if last:
                        return
        except (UnicodeDecodeError, zlib.error, OSError):
            pass
        for lineno, line in self._lines_one_by_one(done):
            yield lineno - 1, [line]

    def _lines_one_by_one(self, skip: int = 0) -> Iterator[tuple[int, str]]:
        """(line number, text) of every non-blank line after the first ``skip`` lines, the file read in text mode
        (universal newlines) a line at a time; RunTraceError when it cannot be read."""
        if self.text is not None:
            for lineno, line in enumerate(self.text.splitlines(), 1):
                if lineno > skip and line.strip():
                    yield lineno, line
            return
        assert self.path is not None
        lineno = 0
        try:
            with self.path.open("rb") as probe:
                gz = probe.read(2) == b"\x1f\x8b"
            with gzip.open(self.path, "rt", encoding="utf-8") if gz else self.path.open(encoding="utf-8") as handle:
                for lineno, line in enumerate(handle, 1):
                    if lineno > skip and line and not line.isspace():  # (line.strip(), without a copy of the line)
                        yield lineno, line
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise RunTraceError(f"{self.name}: the gzip stream is truncated or corrupt after line {lineno} "
                                f"({exc})") from None
        except UnicodeDecodeError:
            raise RunTraceError(f"{self.name} line {lineno + 1}: not UTF-8 text") from None
        except OSError as exc:
            raise RunTraceError(f"cannot read {self.name}: {exc.strerror or exc}") from None

    def events(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Every event after the header, checked (RunTraceError names the first bad line and field)."""
        first = True
        last_t = float("-inf")
        for lineno, line in self.lines():
            if first:
                self._header = parse_header(line, f"{self.name} line {lineno}")
                first = False
                continue
            event: Any = _snapshot_event(line) if _PAGES_KEY in line else None  # a snapshot: pages read in bulk
            if event is None:
                try:
                    event, end = _raw_decode(line)
                except json.JSONDecodeError:
                    event, end = None, 0
                # json.loads() also allows whitespace around the object: such a line (and any other) goes the long
                # way
                if not ((end == len(line) or (end == len(line) - 1 and line[end] == "\n")) and _event_ok(event)):
                    # parse_event names the line and the field (or accepts what the quick check leaves to it)
                    event = parse_event(line, f"{self.name} line {lineno}")
            last_t = _in_order(event["t"], last_t, self.name, lineno)
            yield lineno, event
        if first:
            raise RunTraceError(f"{self.name}: empty file (no run-trace header)")


def is_run_trace(text: str) -> bool:
    """Whether ``text`` starts with a run-trace header (as opposed to a workload's steps)."""
    for line in text.splitlines():
        if line.strip():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                return False
            return isinstance(obj, dict) and obj.get("format") == FORMAT
    return False


def _json(line: str, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RunTraceError(f"{where}: not JSON ({exc.msg} at column {exc.colno}; a truncated or edited line?)"
                            ) from None
    if not isinstance(obj, dict):
        raise RunTraceError(f"{where}: a line must be a JSON object, not {type(obj).__name__}")
    return obj


def parse_header(line: str, where: str) -> Header:
    obj = _json(line, where)
    if obj.get("format") != FORMAT:
        raise RunTraceError(f"{where}: not a run trace (the first line must be the header with "
                            f'"format": "{FORMAT}", found format {obj.get("format")!r})')
    if obj.get("version") != VERSION:
        raise RunTraceError(f"{where}: run-trace version {obj.get('version')!r} is not supported "
                            f"(this foliosim reads version {VERSION})")
    page_size = obj.get("page_size", PAGE_SIZE)
    if page_size != PAGE_SIZE:
        raise RunTraceError(f"{where}: field 'page_size' is {page_size!r}; the simulator models 4096-byte pages")
    thp = obj.get("thp")
    if not isinstance(thp, dict):
        raise RunTraceError(f"{where}: header field 'thp' must be an object (the THP settings of the run)")
    command = obj.get("command", [])
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise RunTraceError(f"{where}: header field 'command' must be a list of strings")
    for key in ("thp_set", "recorder"):
        if not isinstance(obj.get(key) or {}, dict):
            raise RunTraceError(f"{where}: header field {key!r} must be an object")
    incomplete = (f"interrupted by {obj.get('interrupted_by') or 'a signal'}" if obj.get("incomplete") else None)
    return Header(tuple(command), str(obj.get("kernel", "")), page_size, thp_settings(thp, where), thp,
                  dict(obj.get("thp_set") or {}), dict(obj.get("recorder") or {}), bool(obj.get("check_live")),
                  incomplete)


def thp_settings(thp: dict[str, Any], where: str = "header") -> ThpSettings:
    """The anon and shmem orders of the recorded sysfs values ("inherit" follows the top-level setting)."""
    enabled = thp.get("enabled", "never")
    shmem_enabled = thp.get("shmem_enabled", "never")
    if not isinstance(enabled, str) or not isinstance(shmem_enabled, str):
        raise RunTraceError(f"{where}: thp 'enabled' and 'shmem_enabled' must be strings")
    always: set[int] = set()
    madvise: set[int] = set()
    shmem: set[int] = set()
    for key, table in (("anon", always), ("shmem", shmem)):
        values = thp.get(key, {})
        if not isinstance(values, dict):
            raise RunTraceError(f"{where}: thp field {key!r} must map folio orders to settings")
        for order_text, value in values.items():
            try:
                order = int(order_text)
            except ValueError:
                raise RunTraceError(f"{where}: thp {key!r}: {order_text!r} is not a folio order") from None
            if not isinstance(value, str):
                raise RunTraceError(f"{where}: thp {key!r} order {order}: the setting must be a string")
            if key == "anon":
                if not 2 <= order <= PMD_ORDER:
                    continue  # order 1 is never an anon mTHP order; larger ones do not exist on x86-64
                mode = enabled if value == "inherit" else value
                if mode == "always":
                    table.add(order)
                elif mode == "madvise":
                    madvise.add(order)
            elif 1 <= order < PMD_ORDER:  # the simulator gives anon shmem orders below the PMD order
                mode = shmem_enabled if value == "inherit" else value
                if mode in ("always", "within_size", "force"):
                    table.add(order)
    return ThpSettings(frozenset(always), frozenset(madvise), frozenset(shmem),
                       PMD_ORDER if shmem_enabled in ("always", "force") else 0)


_INT, _BOOL, _STR, _NUM, _LIST, _DICT, _INT_NULL = "integer", "true/false", "string", "number", "list", "object", \
    "integer or null"
EVENT_FIELDS: dict[str, dict[str, str]] = {
    "spawn": {"path": _STR, "argv": _LIST},
    "fork": {"child_pid": _INT, "child_tid": _INT, "clone_flags": _INT, "thread": _BOOL, "vfork": _BOOL},
    "exec": {"path": _STR},
    "exit": {"group": _BOOL},
    "syscall": {"name": _STR, "args": _LIST, "ret": _INT},
    "fault": {"addr": _INT, "write": _BOOL, "ip": _INT, "error_code": _INT},
    "snapshot": {"at": _STR, "pages": _LIST, "folios": _DICT, "mm_id": _INT_NULL},
}
SYSCALL_ARGS = {"mmap": 6, "munmap": 2, "mremap": 5, "mprotect": 3, "madvise": 3, "brk": 1, "shmat": 3,
                "io_uring_register": 4, "vmsplice": 4, "shmdt": 1, "pkey_mprotect": 4, "mlock": 2, "mlock2": 3,
                "prctl": 5,
                "mlockall": 1}
FOLIO_FIELDS = ("order", "refcount", "large_mapcount", "entire_mapcount", "pincount", "nr_pages_mapped")


def _is(value: Any, kind: str) -> bool:
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _INT_NULL:
        return value is None or (isinstance(value, int) and not isinstance(value, bool))
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    if kind == _NUM:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == _LIST:
        return isinstance(value, list)
    return isinstance(value, dict)


def _need(obj: dict[str, Any], name: str, kind: str, where: str) -> Any:
    if name not in obj:
        raise RunTraceError(f"{where}: missing field {name!r}")
    value = obj[name]
    if not _is(value, kind):
        raise RunTraceError(f"{where}: field {name!r} must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}, "
                            f"not {json.dumps(value)[:40]}")
    return value


def _ranges(obj: dict[str, Any], name: str, where: str) -> None:
    value = _need(obj, name, _LIST, where)
    for i, item in enumerate(value):
        if not (isinstance(item, list) and len(item) == 2 and all(_is(x, _INT) and x >= 0 for x in item)):
            raise RunTraceError(f"{where}: field {name!r} item {i} must be [address, length]")


def _file(obj: dict[str, Any], where: str) -> None:
    f = _need(obj, "file", _DICT, where)
    w = f"{where}: field 'file'"
    _need(f, "dev", _STR, w)
    _need(f, "ino", _INT, w)
    if "path" in f:
        _need(f, "path", _STR, w)
    if "shmem" in f:
        _need(f, "shmem", _BOOL, w)


def _add_fault_tallies(stats: ConvertStats, n_events: int, n_faults: int, n_writes: int, n_kernel: int) -> None:
    """Add the one-pass reader's fault tallies to ``stats`` (no "fault" event key while no fault line was seen, as
    the reference reading counts events)."""
    if n_events:
        stats.events["fault"] += n_events
    stats.faults += n_faults
    stats.fault_steps += n_faults
    stats.write_faults += n_writes
    stats.kernel_faults += n_kernel


def _in_order(t: float, last_t: float, name: str, lineno: int) -> float:
    """``t`` when it does not go back in time from ``last_t`` (the file is sorted by t); else the error naming the
    line."""
    if t < last_t:
        raise RunTraceError(f"{name} line {lineno}: field 't' goes back in time ({t} after {last_t}): "
                            "the file is sorted by t")
    return t


def parse_event(line: str, where: str) -> dict[str, Any]:
    """One event line, checked against docs/run-trace.md (RunTraceError names the line and field)."""
    obj = _json(line, where)
    _need(obj, "t", _NUM, where)
    ev = _need(obj, "ev", _STR, where)
    fields = EVENT_FIELDS.get(ev)
    if fields is None:
        raise RunTraceError(f"{where}: unknown event 'ev': {ev!r} (known: {', '.join(EVENT_FIELDS)})")
    where = f"{where} ({ev})"
    _need(obj, "pid", _INT, where)
    _need(obj, "tid", _INT, where)
    for name, kind in fields.items():
        _need(obj, name, kind, where)
    if ev == "exit":
        if "code" not in obj and "signal" not in obj:
            raise RunTraceError(f"{where}: missing field 'code' or 'signal'")
        for name in ("code", "signal"):
            if name in obj:
                _need(obj, name, _INT_NULL, where)
    elif ev == "syscall":
        _syscall(obj, where)
    elif ev == "snapshot":
        _snapshot(obj, where)
    elif ev == "exec" and obj.get("populated") is not None:
        for i, item in enumerate(_need(obj, "populated", _LIST, where)):
            if not _is(item, _INT):
                raise RunTraceError(f"{where}: field 'populated' item {i} must be a page address")
    if ev == "exec" and obj.get("maps") is not None:
        for i, item in enumerate(_need(obj, "maps", _LIST, where)):
            if not (isinstance(item, list) and len(item) == 7 and _is(item[0], _INT) and _is(item[1], _INT)
                    and _is(item[2], _STR) and _is(item[3], _INT) and _is(item[4], _STR) and _is(item[5], _INT)
                    and _is(item[6], _STR) and item[0] < item[1]):
                raise RunTraceError(f"{where}: field 'maps' item {i} must be [start, end, perms, offset, dev, "
                                    "inode, path] with start < end")
    return obj


def _syscall(obj: dict[str, Any], where: str) -> None:
    name = obj["name"]
    where = f"{where} {name}"
    args = obj["args"]
    for i, value in enumerate(args):
        if not _is(value, _INT):
            raise RunTraceError(f"{where}: field 'args' item {i} must be an integer, not {json.dumps(value)[:40]}")
    want = SYSCALL_ARGS.get(name)
    if want is not None and len(args) != want:
        raise RunTraceError(f"{where}: field 'args' must have {want} items, not {len(args)}")
    if obj["ret"] < 0:
        return  # a failed call: nothing else is needed
    if name == "mmap" and "file" in obj:
        _file(obj, where)
    elif name == "shmat":
        _need(obj, "size", _INT, where)
        _file(obj, where)
    elif name == "io_uring_register" and ("buffers" in obj or (
            args[1] & ~IORING_REGISTER_USE_REGISTERED_RING) == IORING_REGISTER_BUFFERS):
        _ranges(obj, "buffers", where)
    elif name == "vmsplice":
        _ranges(obj, "ranges", where)


def _snapshot(obj: dict[str, Any], where: str) -> None:
    if obj["at"] not in ("fork", "exit"):
        raise RunTraceError(f"{where}: field 'at' must be \"fork\" or \"exit\", not {obj['at']!r}")
    collapsed = obj.get("khugepaged_collapsed")
    if collapsed is not None and not (_is(collapsed, _INT) and collapsed >= 0):
        raise RunTraceError(f"{where}: field 'khugepaged_collapsed' must be a count (an integer >= 0) or null, "
                            f"not {collapsed!r}")
    for i, page in enumerate(obj["pages"]):
        if not (isinstance(page, list) and len(page) == 6 and all(_is(x, _INT) and _I64_MIN <= x <= _I64_MAX
                                                                  for x in page[:5])
                and isinstance(page[5], bool | int) and 0 <= page[3] <= 20):
            raise RunTraceError(f"{where}: field 'pages' item {i} must be [vaddr, pfn, head_pfn, order, mapcount, "
                                "exclusive]")
    for key, folio in obj["folios"].items():
        w = f"{where}: field 'folios' entry {key!r}"
        try:
            int(key, 0)
        except ValueError:
            raise RunTraceError(f"{w}: the key must be a head PFN") from None
        if not isinstance(folio, dict):
            raise RunTraceError(f"{w} must be an object")
        _need(folio, "order", _INT, w)
        _need(folio, "refcount", _INT, w)
        for name in FOLIO_FIELDS[2:]:
            if name in folio:
                _need(folio, name, _INT_NULL, w)
        ids = folio.get("mm_ids")
        if not (ids is None or _is(ids, _INT) or (isinstance(ids, list) and len(ids) == 2
                                                 and all(_is(x, _INT) for x in ids))):
            raise RunTraceError(f"{w}: field 'mm_ids' must be the _mm_ids word, [slot 0 id, slot 1 id] or null")
        counts = folio.get("mm_id_mapcount")
        if not (counts is None or (isinstance(counts, list) and len(counts) == 2
                                   and all(_is(x, _INT) for x in counts))):
            raise RunTraceError(f"{w}: field 'mm_id_mapcount' must be [slot 0, slot 1] or null")
        if folio.get("shared_bit") is not None and not isinstance(folio.get("shared_bit"), bool):
            raise RunTraceError(f"{w}: field 'shared_bit' must be true/false or null")


class _Absent:
    """The value of a field a line does not have (None is a value: JSON null)."""


_ABSENT = _Absent()
_NONE = type(None)
#: the exact types json.loads gives that each field kind accepts (``type(x) in``: a bool is not an integer here)
_TYPES: dict[str, frozenset[type]] = {_INT: frozenset({int}), _INT_NULL: frozenset({int, _NONE}),
                                      _BOOL: frozenset({bool}), _STR: frozenset({str}), _NUM: frozenset({int, float}),
                                      _LIST: frozenset({list}), _DICT: frozenset({dict})}
#: per event kind, every field it must have with the types it accepts (pid and tid first)
_EVENT_TYPES: dict[str, tuple[tuple[str, frozenset[type]], ...]] = {
    ev: (("pid", _TYPES[_INT]), ("tid", _TYPES[_INT]), *((name, _TYPES[kind]) for name, kind in fields.items()))
    for ev, fields in EVENT_FIELDS.items()}
_NUM_TYPES, _INT_NULL_TYPES, _PAGE_LAST = _TYPES[_NUM], _TYPES[_INT_NULL], frozenset({bool, int})
#: a snapshot's pages: one row per page, (vaddr, pfn, head_pfn, order, mapcount, exclusive as 0 or 1); the first
#: five fields of a page must fit in it (int64)
Pages = npt.NDArray[np.int64]
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_raw_decode = json.JSONDecoder().raw_decode  # json.loads(line) without the whitespace around the object
#: what raw_decode(line) calls, without its frame (StopIteration: no JSON value at the start)
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
#: a fault event's fields, in one call (KeyError when one is missing: the line then goes the long way)
_FAULT_FIELDS = itemgetter("t", "pid", "tid", "addr", "write", "ip", "error_code")
#: the types of those fields that :func:`_event_ok` accepts (t an integer or a float, the rest as EVENT_FIELDS)
_FAULT_TYPES = ((float, int, int, int, bool, int, int), (int, int, int, int, bool, int, int))
#: a JSON integer (ASCII digits, as json's scanner reads them) of at most 20 digits: a longer one goes to json, which
#: may refuse it (int() has a limit on digits, sys.set_int_max_str_digits())
_JSON_INT = r"-?(?:0|[1-9][0-9]{0,19})"
#: a fault line exactly as the recorder writes it (compact JSON, these keys in this order, no other key, no escape
#: in kernel_ip): a line it matches is one :func:`parse_event` accepts, and its groups are the values json would
#: give (t: a float when it has a fraction or an exponent, else an integer; then pid, tid, addr, write, kernel).
#: Any other line is parsed by json.
_FAULT_LINE = re.compile(
    rf'\{{"t":(?:({_JSON_INT}(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+))|({_JSON_INT})),"ev":"fault",'
    rf'"pid":({_JSON_INT}),"tid":({_JSON_INT}),"addr":({_JSON_INT}),"write":(true|false),"ip":{_JSON_INT},'
    rf'"error_code":{_JSON_INT}(?:,"kernel":(true|false)(?:,"kernel_ip":"[^"\\\x00-\x1f]*")?)?\}}\n?\Z').match


def _event_ok(obj: Any) -> bool:
    """Whether :func:`parse_event` accepts this parsed line, decided without building any message: True only
    if it does (a False sends the line to parse_event, which names the line and field)."""
    if type(obj) is not dict:
        return False
    get = obj.get
    ev = get("ev")
    if type(ev) is not str or type(get("t")) not in _NUM_TYPES:
        return False
    if ev == "fault":  # most lines: the fields of EVENT_FIELDS["fault"], written out
        return (type(get("pid")) is int and type(get("tid")) is int and type(get("addr")) is int
                and type(get("write")) is bool and type(get("ip")) is int and type(get("error_code")) is int)
    if ev == "syscall":  # the next most lines: the fields of EVENT_FIELDS["syscall"], written out
        return (type(get("pid")) is int and type(get("tid")) is int and type(get("name")) is str
                and type(get("args")) is list and type(get("ret")) is int and _syscall_ok(obj))
    spec = _EVENT_TYPES.get(ev)
    if spec is None:
        return False
    for name, types in spec:
        if type(get(name, _ABSENT)) not in types:
            return False
    if ev == "syscall":
        return _syscall_ok(obj)
    if ev == "exit":
        code, signal = get("code", _ABSENT), get("signal", _ABSENT)
        return (code is not _ABSENT or signal is not _ABSENT) and (
            code is _ABSENT or type(code) in _INT_NULL_TYPES) and (signal is _ABSENT or type(signal) in _INT_NULL_TYPES)
    if ev == "snapshot":
        return _snapshot_ok(obj)
    if ev == "exec":
        populated = get("populated")
        if populated is not None and (type(populated) is not list or any(type(x) is not int for x in populated)):
            return False
        maps = get("maps")
        if maps is not None:
            if type(maps) is not list:
                return False
            for item in maps:
                if not (type(item) is list and len(item) == 7 and type(item[0]) is int and type(item[1]) is int
                        and type(item[2]) is str and type(item[3]) is int and type(item[4]) is str
                        and type(item[5]) is int and type(item[6]) is str and item[0] < item[1]):
                    return False
    return True


def _syscall_ok(obj: dict[str, Any]) -> bool:
    """:func:`_syscall` without messages (True only if it accepts); the rare calls with more to check say False."""
    args = obj["args"]
    for value in args:
        if type(value) is not int:
            return False
    name = obj["name"]
    want = SYSCALL_ARGS.get(name)
    if want is not None and len(args) != want:
        return False
    if obj["ret"] < 0:
        return True
    if name == "mmap":
        file = obj.get("file", _ABSENT)
        if file is _ABSENT:
            return True
        if type(file) is not dict or type(file.get("dev")) is not str or type(file.get("ino")) is not int:
            return False
        return type(file.get("path", "")) is str and type(file.get("shmem", False)) is bool
    return name not in ("shmat", "io_uring_register", "vmsplice")


#: per folio field of a snapshot, the types :func:`_snapshot` accepts (an absent field reads as None)
_FOLIO_TYPES = (("order", frozenset({int})), ("refcount", frozenset({int})),
                *((name, _INT_NULL_TYPES) for name in FOLIO_FIELDS[2:]), ("shared_bit", frozenset({bool, _NONE})))
_ONLY_LIST, _ONLY_INT, _ONLY_DICT = frozenset({list}), frozenset({int}), frozenset({dict})


def _snapshot_ok(obj: dict[str, Any]) -> bool:
    """:func:`_snapshot` without messages (True only if it accepts), column by column: a snapshot has thousands
    of pages and folios."""
    if obj["at"] not in ("fork", "exit"):
        return False
    collapsed = obj.get("khugepaged_collapsed")
    if collapsed is not None and not (type(collapsed) is int and collapsed >= 0):
        return False
    pages = obj["pages"]
    if pages:
        if set(map(type, pages)) != _ONLY_LIST:
            return False
        try:
            columns = list(zip(*pages, strict=True))  # vaddr, pfn, head_pfn, order, mapcount, exclusive
        except ValueError:  # not all of one length
            return False
        if len(columns) != 6:
            return False
        if any(set(map(type, column)) != _ONLY_INT for column in columns[:5]):
            return False
        if not set(map(type, columns[5])) <= _PAGE_LAST or min(columns[3]) < 0 or max(columns[3]) > 20:
            return False
        if any(min(column) < _I64_MIN or max(column) > _I64_MAX for column in columns[:5]):
            return False
    folios = obj["folios"]
    if not folios:
        return True
    try:
        deque(map(int, folios, repeat(0)), maxlen=0)  # every key a head PFN
    except ValueError:
        return False
    values = list(folios.values())
    if set(map(type, values)) != _ONLY_DICT:
        return False
    for name, types in _FOLIO_TYPES:
        if not set(map(type, map(dict.get, values, repeat(name)))) <= types:
            return False
    for name, single in (("mm_ids", int), ("mm_id_mapcount", _NONE)):
        column = list(map(dict.get, values, repeat(name)))
        kinds = set(map(type, column))
        if not kinds <= {_NONE, single, list}:
            return False
        if list in kinds and not all(len(x) == 2 and type(x[0]) is int and type(x[1]) is int
                                     for x in column if type(x) is list):
            return False
    return True


def _pages_array(pages: list[list[Any]]) -> Pages:
    """A checked snapshot's pages as json gives them (lists) in the array :class:`Snapshot` holds."""
    out = np.empty((len(pages), 6), dtype=np.int64)
    if pages:
        columns = list(zip(*pages, strict=True))
        for k in range(5):
            out[:, k] = columns[k]
        out[:, 5] = list(map(bool, columns[5]))
    return out


#: the key of a snapshot's pages as the recorder writes it (compact JSON)
_PAGES_KEY = '"pages":['


def _bulk_pages(span: str) -> Pages | None:
    """The pages of a snapshot's ``pages`` value (``span``: its text, brackets included) read without json, or
    None unless it has exactly the recorder's form: ``[[i,i,i,i,i,true|false],...]`` with no whitespace, each
    ``i`` a JSON integer of at most 18 digits (so within int64) and each order 0..20, which is a value json reads
    and :func:`_snapshot` accepts, with these numbers. Anything else (None) is left to json and the checks."""
    if span == "[]":
        return np.empty((0, 6), dtype=np.int64)
    if not (span.startswith("[[") and span.endswith("]]")) or ";" in span or not span.isascii():
        return None
    # the pages' fields in one list: "," between two fields, ";" where a page ends (its boolean, now 1 or 0)
    body = span[2:-2].replace(",true],[", ",1;").replace(",false],[", ",0;")
    if body.endswith(",true"):
        body = body[:-4] + "1"
    elif body.endswith(",false"):
        body = body[:-5] + "0"
    else:
        return None
    text = np.frombuffer(body.encode("ascii"), dtype=np.uint8)
    minus = text == ord("-")
    # between fields: every character but a digit or a '-': "," or ";", or any other (a bracket left by a page of
    # another length or by nesting, a letter, a space, a dot, a quote ...), which is then not a "," or ";" where one
    # must be (uint8 wraps: only the digits are below 10 after the subtraction)
    seps = np.flatnonzero(~(((text - ord("0")) < 10) | minus))
    n = len(seps) + 1  # fields
    if n % 6:
        return None
    between = np.append(text[seps], ord(";")).reshape(-1, 6)  # each page's five "," then its ";" (the last implied)
    if not ((between[:, :5] == ord(",")).all() and (between[:, 5] == ord(";")).all()):
        return None
    starts = np.empty(n, dtype=np.int64)  # each field's first character, and its length
    starts[0] = 0
    starts[1:] = seps + 1
    lengths = np.empty(n, dtype=np.int64)
    lengths[:-1] = seps
    lengths[-1] = len(text)
    lengths -= starts
    negative = minus[starts]
    if np.count_nonzero(minus) != np.count_nonzero(negative):  # a '-' not at the start of its field
        return None
    digits = lengths - negative
    if digits.min() < 1 or digits.max() > 18:  # an empty field, a lone '-', a number that may not fit
        return None
    if ((text[starts + negative] == ord("0")) & (digits > 1)).any():  # a leading zero: not JSON
        return None
    # every field is now a JSON integer of 1 to 18 digits between two separators: numpy's text reader reads them
    pages = np.fromstring(body.replace(";", ","), dtype=np.int64, sep=",").reshape(-1, 6)
    if pages[:, 3].min() < 0 or pages[:, 3].max() > 20:
        return None
    return pages


#: the key of a snapshot's folios as the recorder writes it (compact JSON)
_FOLIOS_KEY = '"folios":{'
#: a folio's fields as the recorder writes them (live/record.py _folio_json), in its order
_FOLIO_KEYS = ("order", "refcount", "large_mapcount", "entire_mapcount", "pincount", "nr_pages_mapped", "mm_ids",
               "mm_id_mapcount", "shared_bit", "slots", "lock_bit", "is_anon", "page_mapcount", "anon_exclusive")
#: the columns of :attr:`SnapshotFolios.columns`: the recorded fields a snapshot check reads (mm_ids the raw _mm_ids
#: word, as int64 bits), :data:`FOLIO_NULL` where a field is null
FOLIO_COLUMNS = ("order", "refcount", "large_mapcount", "entire_mapcount", "pincount", "nr_pages_mapped", "mm_ids",
                 "mm_id_mapcount 0", "mm_id_mapcount 1", "shared_bit")
FOLIO_NULL = _I64_MIN


def _folios_form() -> Callable[[str], Any]:
    """The fullmatch of a snapshot's ``folios`` text in the recorder's form (see :func:`_bulk_folios`)."""
    i18 = r"-?(?:0|[1-9][0-9]{0,17})"  # a JSON integer within int64 (at most 18 digits)
    scalar = r"(?:-?(?:0|[1-9][0-9]{0,18})|null|true|false)"  # an integer of at most 19 digits or a literal
    flag = r"(?:false|true|null|-?(?:0|[1-9][0-9]{0,18}))"  # the same, tried in the order a flag's values are likely
    items = rf"\[{scalar}(?:,{scalar})*+\]"  # a non-empty list of those
    flags = rf"\[{flag}(?:,{flag})*+\]"
    value = {"order": i18, "refcount": i18, "mm_ids": r"(?:0|[1-9][0-9]{0,18}|null)",
             "mm_id_mapcount": rf"(?:\[{i18},{i18}\]|null)", "shared_bit": "(?:true|false|null)",
             "slots": rf"(?:{items}|{scalar})", "lock_bit": flag, "is_anon": flag, "page_mapcount": items,
             "anon_exclusive": flags}
    folio = r'"(?:0|[1-9][0-9]{0,17})":\{' + ",".join(
        f'"{name}":{value.get(name, f"(?:{i18}|null)")}' for name in _FOLIO_KEYS) + r"\}"
    return re.compile(rf"\{{{folio}(?:,{folio})*+\}}").fullmatch


_FOLIOS_FORM = _folios_form()
_TEN = np.array([10**k for k in range(18, -1, -1)], dtype=np.uint64)  # 10**18 .. 1


class SnapshotFolios(Mapping[str, dict[str, Any]]):
    """A snapshot's ``folios`` read in bulk (:func:`_bulk_folios`): the columns a snapshot check reads, and the
    object json gives (made from the text on first use) for every other reader: it is the mapping json gives."""

    __slots__ = ("_dict", "columns", "heads", "text")

    def __init__(self, text: str, heads: Pages, columns: Pages) -> None:
        self.text = text  # the folios' JSON text, in the recorder's form
        self.heads = heads  # per folio, in the line's order: its head PFN (the key)
        self.columns = columns  # (N, len(FOLIO_COLUMNS)) int64: per folio the values of FOLIO_COLUMNS
        self._dict: dict[str, dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """The object json gives for the text (made once)."""
        if self._dict is None:
            self._dict = json.loads(self.text)
        return self._dict

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self.as_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.heads)

    def __repr__(self) -> str:
        return repr(self.as_dict())


def _integers(windows: npt.NDArray[np.uint8], start: Pages, end: Pages) -> Pages:
    """The JSON integers at ``[start, end)`` of a text (``windows``: its 19-byte windows, the text after 19 zero
    bytes), each of at most 19 digits: a value of 19 digits beyond int64 as its int64 bits (non-negative ones only)."""
    nd = end - start
    negative = windows[start + 1, 18] == ord("-")  # (the last byte of the window before start + 1)
    nd -= negative
    width = int(nd.max()) if len(nd) else 1
    digits = windows[end, 19 - width:].astype(np.uint64) - np.uint64(ord("0"))  # the ``width`` bytes before end
    digits[np.arange(width) < width - nd[:, None]] = 0
    magnitude = (digits * _TEN[19 - width:]).sum(axis=1, dtype=np.uint64).view(np.int64)
    out: Pages = np.where(negative, -magnitude, magnitude)
    return out


def _bulk_folios(span: str) -> SnapshotFolios | None:
    """A snapshot's ``folios`` value (``span``: its text, braces included) read without json, or None unless it has
    exactly the recorder's form (:data:`_FOLIOS_FORM`): ``{"pfn":{"order":v,...,"anon_exclusive":[...]},...}``
    with the fields of :data:`_FOLIO_KEYS` in that order and no whitespace; each key a head PFN in decimal (at most
    18 digits, no leading zero), written once; order, refcount, the four counters (or null) and mm_id_mapcount's two
    integers (or null) JSON integers of at most 18 digits; mm_ids a non-negative integer of at most 19 digits (not
    1 << 63) or null; shared_bit true, false or null; the other four fields an integer of at most 19 digits, true,
    false or null, or (slots, page_mapcount, anon_exclusive) a non-empty list of those. Such text is an object json
    reads with these values and :func:`_snapshot` accepts; anything else (None) is left to json and the checks."""
    if span == "{}":
        return SnapshotFolios(span, np.empty(0, dtype=np.int64), np.empty((0, len(FOLIO_COLUMNS)), dtype=np.int64))
    if _FOLIOS_FORM(span) is None:
        return None
    text = np.frombuffer(span.encode("ascii"), dtype=np.uint8)
    q = np.flatnonzero(text == ord('"')).reshape(-1, 30)  # per folio: its key and 14 field names, in quotes
    n = len(q)
    # the key inside its quotes, then each field up to shared_bit from after its '":' to before the next ',"'
    starts = np.empty((n, 10), dtype=np.int64)
    ends = np.empty((n, 10), dtype=np.int64)
    starts[:, 0], ends[:, 0] = q[:, 0] + 1, q[:, 1]
    starts[:, 1:] = q[:, 3:20:2] + 2
    ends[:, 1:] = q[:, 4:21:2] - 1
    first = text[starts]
    ints = first < ord(":")  # a digit or '-' (else null, true, false, or mm_id_mapcount's '[')
    ints[:, 8] = False
    pairs = first[:, 8] == ord("[")  # mm_id_mapcount [a,b]: its two integers after the others
    at, end = starts[pairs, 8] + 1, ends[pairs, 8] - 1
    comma = at + np.argmax(text[np.minimum(at[:, None] + np.arange(20), len(text) - 1)] == ord(","), axis=1)
    # row i of windows: the 19 bytes before position i of the text
    windows = np.lib.stride_tricks.as_strided(np.concatenate([np.zeros(19, dtype=np.uint8), text]),
                                              (len(text) + 1, 19), (1, 1), writeable=False)
    values = _integers(windows, np.concatenate([starts[ints], at, comma + 1]),
                       np.concatenate([ends[ints], comma, end]))
    k, m = len(values) - 2 * len(at), len(at)
    numbers = np.full((n, 10), FOLIO_NULL, dtype=np.int64)  # the key, then the fields up to mm_ids
    numbers[ints] = values[:k]
    columns = np.empty((n, len(FOLIO_COLUMNS)), dtype=np.int64)
    columns[:, :7] = numbers[:, 1:8]
    if (columns[ints[:, 7], 6] == FOLIO_NULL).any():  # mm_ids 1 << 63: its bits are the null mark
        return None
    columns[:, 7:9] = FOLIO_NULL
    columns[pairs, 7] = values[k:k + m]
    columns[pairs, 8] = values[k + m:]
    shared = first[:, 9]
    columns[:, 9] = np.where(shared == ord("n"), FOLIO_NULL, shared == ord("t"))
    heads = numbers[:, 0].copy()
    order = np.sort(heads)
    if (order[1:] == order[:-1]).any():  # a key written twice: json's way
        return None
    return SnapshotFolios(span, heads, columns)


def _snapshot_event(line: str) -> dict[str, Any] | None:
    """A snapshot line read with its pages (:func:`_bulk_pages`) and, when they have the recorder's form, its folios
    (:func:`_bulk_folios`) in bulk and the rest by json: the event :func:`parse_event` gives but for ``pages``, the
    array :class:`Snapshot` holds, and ``folios``, a :class:`SnapshotFolios`; or None (then the line goes the usual
    way) unless the quick checks vouch for the whole line. The bulk-read values' text is replaced by ``[]`` and
    ``{}`` before json reads the rest: in a line without escapes, whether a quote opens or closes a string does not
    change, so when json reads the rest as a snapshot the checks accept, the line's only ``"pages"`` and
    ``"folios"`` were its keys, with the values read in bulk."""
    at = line.find(_PAGES_KEY)
    if at < 0 or line.count('"pages"') != 1 or "\\" in line:
        return None
    start = at + len(_PAGES_KEY) - 1
    end = start + 2 if line.startswith("[]", start) else line.find("]]", start) + 2
    if end < start + 2:
        return None
    pages = _bulk_pages(line[start:end])
    if pages is None:
        return None
    rest = line[:start] + "[]" + line[end:]
    folios = None
    at = rest.find(_FOLIOS_KEY)
    if at >= 0 and rest.count('"folios"') == 1:  # (else json reads them, and the checks)
        fstart = at + len(_FOLIOS_KEY) - 1
        fend = fstart + 2 if rest.startswith("{}", fstart) else rest.find("]}}", fstart) + 3
        if fend >= fstart + 2:
            folios = _bulk_folios(rest[fstart:fend])
            if folios is not None:
                rest = rest[:fstart] + "{}" + rest[fend:]
    try:
        ev, stop = _scan_once(rest, 0)
    except (StopIteration, json.JSONDecodeError):
        return None
    if not (stop == len(rest) or (stop == len(rest) - 1 and rest[stop] == "\n")):
        return None
    if type(ev) is not dict or ev.get("ev") != "snapshot" or not _event_ok(ev):
        return None
    ev["pages"] = pages
    if folios is not None:
        ev["folios"] = folios
    return ev


# ---------------------------------------------------------------------------------------------- converting
@dataclass(slots=True, eq=False)
class Snapshot:
    """A ``snapshot`` event, placed in the step stream: compare the simulator's state here."""

    line: int
    task: str
    pid: int
    at: str
    mm_id: int | None
    pages: Pages  # one row per page: vaddr, pfn, head_pfn, order, mapcount, exclusive (0 or 1)
    folios: Mapping[str, dict[str, Any]]  # json's object, or the same read in bulk (SnapshotFolios)
    scope: str | None = None  # "anon": also the anonymous copies in private file mappings; None: anonymous mappings
    #: khugepaged's collapses on the machine from the start of the recording to this snapshot (its pages_collapsed
    #: count's rise; None: not recorded or not readable)
    khugepaged: int | None = None

    def __eq__(self, other: object) -> bool:
        """Field by field, as a dataclass compares, but the pages by value (an array's ``==`` is per element)."""
        if type(other) is not Snapshot:
            return NotImplemented
        return ((self.line, self.task, self.pid, self.at, self.mm_id, self.folios, self.scope, self.khugepaged)
                == (other.line, other.task, other.pid, other.at, other.mm_id, other.folios, other.scope,
                    other.khugepaged)
                and self.pages.shape == other.pages.shape and bool((self.pages == other.pages).all()))

    __hash__ = None  # type: ignore[assignment]  # (a dataclass that compares is not hashable)


@dataclass(slots=True)
class ConvertStats:
    """What the conversion found and did, by cause; nothing recorded is dropped without a count here."""

    lines: int = 0
    events: Counter[str] = field(default_factory=Counter)
    processes: int = 0
    threads: int = 0
    faults: int = 0  # recorded user faults
    fault_steps: int = 0  # ... turned into accesses
    write_faults: int = 0
    kernel_faults: int = 0  # faults the kernel took on a user address in kernel mode (page_fault_kernel)
    fault_skips: Counter[str] = field(default_factory=Counter)  # recorded faults not turned into steps, by cause
    skipped: Counter[str] = field(default_factory=Counter)  # recorded events not turned into steps, by cause
    syscalls: Counter[str] = field(default_factory=Counter)  # every recorded memory call, by name
    failed: Counter[str] = field(default_factory=Counter)  # calls that failed in the trace (they change nothing)
    unexpressed: Counter[str] = field(default_factory=Counter)  # what the simulator cannot express, by name
    approximated: Counter[str] = field(default_factory=Counter)  # expressed with a documented approximation
    ignored: Counter[str] = field(default_factory=Counter)  # calls that change nothing the simulator models
    populated: int = 0  # pages accessed because a call populates them (MAP_POPULATE, MADV_POPULATE_*)
    snapshots: int = 0
    files: int = 0
    steps: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = dict(value.most_common()) if isinstance(value, Counter) else value
        return out


@dataclass(slots=True)
class _Area:
    """One mapping of the converter's picture of an address space (virtual page numbers)."""

    start: int
    end: int
    kind: str  # anon, shared-anon, file-private, file-shared, opaque
    prot: str
    file: str | None = None
    pgoff: int = 0
    hugepage: bool | None = None  # MADV_HUGEPAGE (True), MADV_NOHUGEPAGE (False)
    dontfork: bool = False
    wipeonfork: bool = False
    growsdown: bool = False
    why: str = ""  # opaque: what the simulator cannot express

    def cut(self, start: int, end: int) -> _Area:
        return _Area(start, end, self.kind, self.prot, self.file,
                     self.pgoff + (start - self.start) if self.file else self.pgoff, self.hugepage, self.dontfork,
                     self.wipeonfork, self.growsdown, self.why)

    def with_prot(self, prot: str) -> _Area:
        """``replace(self, prot=prot)``, without dataclasses.replace()'s cost."""
        return _Area(self.start, self.end, self.kind, prot, self.file, self.pgoff, self.hugepage, self.dontfork,
                     self.wipeonfork, self.growsdown, self.why)

    def joins(self, nxt: _Area) -> bool:
        """Whether the kernel would merge ``nxt`` (starting at our end) into us (mm/vma.c, same flags and file)."""
        if self.end != nxt.start or self.kind != nxt.kind or self.kind in ("opaque", "shared-anon"):
            return False
        same = (self.prot, self.file, self.hugepage, self.dontfork, self.wipeonfork) == (
            nxt.prot, nxt.file, nxt.hugepage, nxt.dontfork, nxt.wipeonfork)
        return same and (self.file is None or nxt.pgoff == self.pgoff + self.end - self.start)


def _area_start(a: _Area) -> int:
    return a.start


def _joined_runs(pieces: list[tuple[int, int]], length: int) -> tuple[list[tuple[int, int]], int]:
    """The pieces ``(lo, hi)`` (in order, none overlapping) joined where they touch, and how many of ``length``
    pages they leave out."""
    out: list[tuple[int, int]] = []
    covered = 0
    for lo, hi in pieces:
        covered += hi - lo
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out, length - covered


class _Space:
    """The converter's picture of one MM: its mappings (sorted) and its program break.

    While the mappings are *clean* (each non-empty, none overlapping: the normal case) they are kept in place
    with bisection over their starts; an unmapping, a mapping or a change of a range costs O(log n + pieces).
    A call of length zero or less can leave empty or overlapping pieces (as the plain list algorithm does); the
    space then uses that algorithm (:meth:`_remove_list`) until it is clean again, so both give the same pieces.
    Areas are never changed in place (a change makes a new one), so a forked space may share them."""

    def __init__(self, described: bool) -> None:
        self.areas: list[_Area] = []
        self.starts: list[int] = []
        self.clean = True  # every area non-empty, sorted, none overlapping the next
        self.brk: int | None = None
        self.described = described  # the mappings execve set up are known (``maps``), or there was no exec
        self.handles: list[str] = []  # pins and pipes to release when the MM goes away
        self.users = 0
        self.lock_future = False  # mlockall(MCL_FUTURE): new mappings are populated (mm->def_flags VM_LOCKED)
        self.thp_disabled = False  # prctl(PR_SET_THP_DISABLE): MMF_DISABLE_THP, no large anonymous folio at all

    def find(self, vpn: int) -> _Area | None:
        i = bisect.bisect_right(self.starts, vpn) - 1
        if i >= 0 and self.areas[i].end > vpn:
            return self.areas[i]
        return None

    def above(self, vpn: int) -> _Area | None:
        i = bisect.bisect_right(self.starts, vpn)
        return self.areas[i] if i < len(self.areas) else None

    def below(self, vpn: int) -> _Area | None:
        i = bisect.bisect_left(self.starts, vpn) - 1
        return self.areas[i] if i >= 0 else None

    def _reindex(self) -> None:
        self.starts = [a.start for a in self.areas]
        areas = self.areas
        self.clean = all(a.start < a.end for a in areas) and all(
            areas[k].end <= areas[k + 1].start for k in range(len(areas) - 1))

    def _span(self, start: int, end: int) -> tuple[int, int]:
        """Clean space, ``start < end``: the index range of the areas overlapping ``[start, end)``."""
        starts = self.starts
        i = bisect.bisect_right(starts, start) - 1
        if i < 0 or self.areas[i].end <= start:
            i += 1
        return i, bisect.bisect_left(starts, end, i)

    def _cut(self, start: int, end: int) -> tuple[int, int, list[_Area], list[_Area]]:
        """Clean space, ``start < end``: the index range ``[i, j)`` of the areas overlapping ``[start, end)``, those
        areas cut to the range (in order), and what is left of them outside it (the piece before, the piece
        after). Nothing is changed."""
        starts = self.starts
        i = bisect.bisect_right(starts, start) - 1
        areas = self.areas
        if i < 0 or areas[i].end <= start:
            i += 1
        j = bisect.bisect_left(starts, end, i)
        if i >= j:
            return i, j, [], []
        first, last = areas[i], areas[j - 1]
        gone = areas[i:j]
        if first.start >= start and last.end <= end:  # whole areas (the common case)
            return i, j, gone, []
        left: list[_Area] = []
        if first.start < start:
            left.append(first.cut(first.start, start))
            gone[0] = first.cut(start, min(first.end, end))
        if last.end > end:
            left.append(last.cut(end, last.end))
            if gone[-1] is last:  # (else the one area was cut at both ends just above)
                gone[-1] = last.cut(last.start, end)
        return i, j, gone, left

    def _remove_list(self, start: int, end: int) -> list[_Area]:
        """The plain algorithm of :meth:`remove` over the whole list, for any ``start`` and ``end``."""
        keep: list[_Area] = []
        gone: list[_Area] = []
        for a in self.areas:
            if a.end <= start or a.start >= end:
                keep.append(a)
                continue
            if a.start < start:
                keep.append(a.cut(a.start, start))
            if a.end > end:
                keep.append(a.cut(end, a.end))
            gone.append(a.cut(max(a.start, start), min(a.end, end)))
        self.areas = sorted(keep, key=_area_start)
        return gone

    def remove(self, start: int, end: int) -> list[_Area]:
        """Unmap ``[start, end)``; returns the removed pieces."""
        if self.clean and start < end:
            i, j, gone, keep = self._cut(start, end)
            if gone:
                self.areas[i:j] = keep
                self.starts[i:j] = [a.start for a in keep]
            return gone
        gone = self._remove_list(start, end)
        self._reindex()
        return gone

    def insert(self, area: _Area) -> None:
        if self.clean and area.start < area.end:
            i, j, _gone, keep = self._cut(area.start, area.end)
            if not keep:  # a hole, or whole areas replaced
                self.areas[i:j] = [area]
                self.starts[i:j] = [area.start]
            else:  # keep: the piece before and/or the piece after
                new = [keep[0], area, keep[1]] if len(keep) == 2 else (
                    [keep[0], area] if keep[0].start < area.start else [area, keep[0]])
                self.areas[i:j] = new
                self.starts[i:j] = [a.start for a in new]
            return
        self._remove_list(area.start, area.end)
        bisect.insort(self.areas, area, key=_area_start)
        self._reindex()

    def update(self, start: int, end: int, change: Callable[[_Area], _Area]) -> None:
        if self.clean and start < end:
            i, j, gone, keep = self._cut(start, end)
            self._put_back(start, end, i, j, gone, keep, [change(piece) for piece in gone])
            return
        for piece in self._remove_list(start, end):
            bisect.insort(self.areas, change(piece), key=_area_start)
        self._reindex()

    def _put_back(self, start: int, end: int, i: int, j: int, gone: list[_Area], keep: list[_Area],
                  new: list[_Area]) -> None:
        """:meth:`update`'s second half: ``new``, the changed ``gone`` of ``_cut(start, end)``, put in place."""
        for n, p in zip(new, gone, strict=True):
            if n.start != p.start or n.end != p.end:
                break
        else:  # the pieces go back where they were, in order, between the pieces kept
            if keep:
                if keep[0].start < start:
                    new.insert(0, keep[0])
                if keep[-1].end > end:
                    new.append(keep[-1])
            self.areas[i:j] = new
            self.starts[i:j] = [a.start for a in new]
            return
        self.areas[i:j] = keep
        self.starts[i:j] = [a.start for a in keep]
        for n in new:
            bisect.insort(self.areas, n, key=_area_start)
        self._reindex()

    def covered_parts(self, start: int, end: int) -> list[_Area]:
        if self.clean and start < end:
            i, j = self._span(start, end)
            return self.areas[i:j]
        return [a for a in self.areas if a.start < end and a.end > start]

    def runs(self, start: int, end: int) -> tuple[list[tuple[int, int]], int]:
        """Maximal runs of ``[start, end)`` covered by expressible mappings, and the pages outside them."""
        return _joined_runs([(max(a.start, start), min(a.end, end)) for a in self.covered_parts(start, end)
                             if a.kind != "opaque"], end - start)

    def fork(self) -> _Space:
        child = _Space(self.described)
        child.areas = [a for a in self.areas if not a.dontfork]  # areas are never changed in place
        child._reindex()
        child.brk = self.brk
        child.thp_disabled = self.thp_disabled  # MMF_DISABLE_THP is inherited (kernel/fork.c mm_init())
        return child  # mlockall() is not inherited (fork clears VM_LOCKED from mm->def_flags)

    def mergeable(self, area: _Area) -> bool:
        prev, nxt = self.below(area.start), self.above(area.start)
        return bool((prev is not None and prev.joins(area)) or (nxt is not None and area.joins(nxt)))


def _pages(length: int) -> int:
    return (length + PAGE_SIZE - 1) >> PAGE_SHIFT


def _prot(prot: int) -> str:
    """The simulator's protection: "rw", "r", "none", with "x" for PROT_EXEC (VM_EXEC keeps VMAs apart)."""
    x = "x" if prot & PROT_EXEC else ""
    if prot & PROT_WRITE:
        return "rw" + x
    if prot & (PROT_READ | PROT_EXEC):
        return "r" + x
    return "none"


#: :func:`_prot` of every protection, by its PROT_READ | PROT_WRITE | PROT_EXEC bits (``_PROTS[prot & 7]``)
_PROTS = tuple(_prot(bits) for bits in range(8))


@dataclass(frozen=True, slots=True)
class Race:
    """Placed before a ``fault`` step whose order the trace cannot tell against another process's: a fault on
    the same page by another process within :data:`RACE_US`, or a fault during another process's fork copy,
    exec or exit teardown (the kernel decided inside overlapping windows; the file orders by their times)."""

    line: int


#: two processes' faults on one page closer than this (µs) may have been decided in either order
RACE_US = 200.0
#: faults kept to compare with a fork/exec/exit window that ends later (µs)
_RACE_KEEP_US = 500_000.0


class _Races:
    """Finds the faults whose order against another process's fault, fork copy, exec or exit the recorded times
    cannot settle (first pass); their line numbers are :attr:`lines`."""

    def __init__(self) -> None:
        self.lines: set[int] = set()
        self._recent: deque[tuple[float, int, int, int]] = deque()  # (t, pid, tid, line) of faults
        self._last: dict[int, tuple[float, int, int]] = {}  # page -> (t, pid, line) of its latest fault
        self._mm_since: dict[int, float] = {}  # pid -> when its current MM began (its fork or its exec)

    def see(self, lineno: int, ev: dict[str, Any]) -> None:
        kind, t = ev["ev"], float(ev["t"])
        if kind == "fault":
            vpn, pid = ev["addr"] >> PAGE_SHIFT, ev["pid"]
            prev = self._last.get(vpn)
            since = self._mm_since
            if (prev is not None and prev[1] != pid and t - prev[0] <= RACE_US
                    and max(since.get(pid, 0.0), since.get(prev[1], 0.0)) <= prev[0]):  # both MMs existed then
                self.lines.update((prev[2], lineno))
            self._last[vpn] = (t, pid, lineno)
            self._recent.append((t, pid, ev["tid"], lineno))
            while self._recent and self._recent[0][0] < t - _RACE_KEEP_US:
                self._recent.popleft()
            return
        if kind == "fork" and not ev.get("thread"):
            self._mm_since[ev["child_pid"]] = t
        elif kind == "exec":
            self._mm_since[ev["pid"]] = t
        start: Any = None
        if kind == "fork" and not ev.get("thread"):  # the MM copy: [the call's start, end of copy_process()]
            start, pid, tid = ev.get("t_begin", ev.get("t_enter")), None, ev["tid"]
        elif kind == "exec":  # the old MM's teardown: [the call's start, exit_mmap]
            start, pid, tid = ev.get("t_begin", ev.get("t_enter")), ev["pid"], None
        elif kind == "exit" and ev.get("group"):  # the MM's teardown: [do_exit(), exit_mmap]
            start, pid, tid = ev.get("t_begin"), ev["pid"], None
        if not isinstance(start, int | float):
            return
        for ft, fpid, ftid, line in reversed(self._recent):
            if ft < start:
                break
            if ft <= t and fpid != pid and ftid != tid:
                self.lines.add(line)


_Out = Step | Snapshot | Race
#: a Step made without the frozen dataclass's ``__init__`` (a third of its cost): the object, then its three slots
_new_object = object.__new__
_SET_VERB, _SET_TASK, _SET_ARGS = (getattr(Step, name).__set__ for name in ("verb", "task", "args"))
#: lines the one-pass reader (:meth:`_Converter.run_fast`) reads between two hand-overs of what it produced
BATCH_LINES = 4096
#: items :func:`prepare` keeps for :meth:`Conversion.items` (~180 bytes each; beyond, the trace is read again)
CACHE_ITEMS = 1 << 19


@dataclass(slots=True)
class FaultColumns:
    """The fault steps :meth:`_Converter.run_fast` made itself (nearly all of a trace's), as columns beside the
    items it produced: each one's place among the steps it produced (``at``, the THP step being 0), its page,
    whether it wrote and its task -- the steps' own ``(task, (vpn, 0, write))``, told without reading them back.
    The compiled engine fills their program rows from these (foliosim.fast.sim.kprog.FaultSteps) instead of
    reading the Step objects. ``offset``: what to add to ``at`` for the place among :meth:`Conversion.items`'
    steps (its head has the file steps, the reading's only the THP step)."""

    at: list[int] = field(default_factory=list)
    vpn: list[int] = field(default_factory=list)
    write: list[bool] = field(default_factory=list)
    task: list[str] = field(default_factory=list)
    offset: int = 0

    def clear(self) -> None:
        self.at.clear()
        self.vpn.clear()
        self.write.clear()
        self.task.clear()


class _Converter:
    """Event by event to steps; ``file_pages`` (from a first pass) sizes each file before it is mapped."""

    def __init__(self, header: Header, file_pages: dict[str, int] | None) -> None:
        self.header = header
        self.stats = ConvertStats()
        self.file_pages: dict[str, int] = {}  # file name -> pages mapped (this pass)
        self.known_files = file_pages
        self.file_shmem: dict[str, bool] = {}
        self.name: dict[int, str] = {}  # tid -> task name
        self.tgid: dict[int, int] = {}  # tid -> thread group (as the trace says)
        self.space: dict[int, _Space] = {}  # tid -> its MM
        self.names_used: Counter[str] = Counter()
        self.pending: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        self.gone: set[int] = set()  # tids that exited (or left by execve)
        self.uring: dict[tuple[int, int], list[str]] = {}
        self.handle_no = 0
        self.races = _Races()
        self.racy: set[int] = set()  # fault lines found racy by the first pass
        self.fault_lines: list[int] | None = None  # run_fast(): the line of every fault step, in order

    # -- helpers -------------------------------------------------------------------------------------
    def _new_name(self, pid: int, tid: int) -> str:
        base = f"p{pid}" if pid == tid else f"p{pid}.t{tid}"
        self.names_used[base] += 1
        n = self.names_used[base]
        return base if n == 1 else f"{base}#{n}"

    def _handle(self, kind: str) -> str:
        self.handle_no += 1
        return f"{kind}{self.handle_no}"

    def _file_name(self, file: dict[str, Any]) -> str:
        path = str(file.get("path", "")) or "?"
        name = f"{path} [{file['dev']}:{file['ino']}]"
        self.file_shmem[name] = bool(file.get("shmem", False))
        return name

    def _use_file(self, name: str, end_page: int) -> None:
        self.file_pages[name] = max(self.file_pages.get(name, 0), end_page)

    def _attach(self, tid: int, pid: int, name: str, space: _Space) -> None:
        self.name[tid] = name
        self.tgid[tid] = pid
        self.space[tid] = space
        space.users += 1

    # -- the stream --------------------------------------------------------------------------------------
    def run(self, events: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[_Out]:
        h = self.header.thp
        yield Step("thp", "", (sorted(h.always), sorted(h.madvise)))
        for name, pages in sorted((self.known_files or {}).items()):
            order = self.header.thp.shmem_file_order if self.file_shmem.get(name, _shmem_name(name)) else 0
            self.stats.files += 1
            yield Step("file", "", (name, max(pages, 1), order, self.file_shmem.get(name, _shmem_name(name))))
        first_pass = self.known_files is None
        stats, counts, see, known, on_fault = self.stats, self.stats.events, self.races.see, self.name, self.on_fault
        for lineno, ev in events:
            stats.lines = lineno
            kind = ev["ev"]
            counts[kind] += 1
            if first_pass:
                see(lineno, ev)
            if kind == "fault" and ev["tid"] in known:  # most lines: what event() would call, directly
                yield from on_fault(lineno, ev)
            else:
                yield from self.event(lineno, ev)
        self._count_pending()

    def _count_pending(self) -> None:
        """At the end of the trace: the events still waiting for a task the trace never created, counted as skipped
        (their faults too)."""
        for events_left in self.pending.values():
            self.stats.skipped["events of a task the trace never created"] += len(events_left)
            for _lineno, ev in events_left:
                if ev["ev"] == "fault":
                    self.stats.faults += 1
                    self.stats.fault_skips["by a task the trace never created"] += 1

    def _head(self) -> list[_Out]:
        """What :meth:`run` yields before the first event: the THP step, then one step per file (second pass)."""
        h = self.header.thp
        out: list[_Out] = [Step("thp", "", (sorted(h.always), sorted(h.madvise)))]
        for name, pages in sorted((self.known_files or {}).items()):
            order = self.header.thp.shmem_file_order if self.file_shmem.get(name, _shmem_name(name)) else 0
            self.stats.files += 1
            out.append(Step("file", "", (name, max(pages, 1), order, self.file_shmem.get(name, _shmem_name(name)))))
        return out

    def run_fast(self, trace: RunTrace, out: list[_Out], fault_lines: list[int] | None,
                 columns: FaultColumns | None = None) -> Iterator[int]:
        """:meth:`run` over ``trace.events()`` in one loop: the same items appended to ``out``, the same figures in
        ``stats`` and the same RunTraceError for a bad line. Yields the line reached after every
        :data:`BATCH_LINES` lines and at the end (the caller takes ``out`` then); ``fault_lines`` gets the line of
        each fault step. A fault line whose parsed fields have the types :func:`_event_ok` wants is converted here
        (checks, race bookkeeping, the fault step); every other line goes through :func:`parse_event` (when the
        quick check refuses it) and :meth:`event`, as in :meth:`run`. ``columns`` (a first pass only: no Race
        markers, ``out`` never cleared) gets every fault step converted here, with its place among the steps."""
        out.extend(self._head())
        with_columns = columns is not None
        cols = columns if columns is not None else FaultColumns()
        col_at, col_vpn, col_write, col_task = cols.at.append, cols.vpn.append, cols.write.append, cols.task.append
        first_pass = self.known_files is None
        stats, counts, see, racy = self.stats, self.stats.events, self.races.see, self.racy
        race_lines, last_fault, recent, since = (self.races.lines, self.races._last, self.races._recent,
                                                 self.races._mm_since)
        names, spaces, append, scan, fault_line = self.name, self.space, out.append, _scan_once, _FAULT_LINE
        snapshot_event, pages_key = _snapshot_event, _PAGES_KEY
        # the handlers event() calls for a task it knows (spawn and exec have more to decide: they go through it)
        direct = {"syscall": self.on_syscall, "fork": self.on_fork, "exit": self.on_exit,
                  "snapshot": self.on_snapshot, "fault": self.on_fault}
        last_tf = float("-inf")  # the latest fault's time: ``recent`` is trimmed to it before a window is looked at
        bisect_right, new, set_verb, set_task, set_args = bisect.bisect_right, _new_object, _SET_VERB, _SET_TASK, \
            _SET_ARGS
        # the fault path's tallies, added to ``stats`` at each hand-over (nothing reads them in between)
        n_events = n_faults = n_writes = n_kernel = 0
        self.fault_lines = fault_lines
        name = trace.name
        header_seen = False
        last_t: float = float("-inf")
        batch_end = BATCH_LINES
        lineno = 0
        lines = trace.lines()
        for lineno, line in lines:  # the header: the first line
            trace._header = parse_header(line, f"{name} line {lineno}")
            header_seen = True
            break
        for lineno, line in lines:
            fault: Any = fault_line(line)
            if fault is not None:  # the recorder's own fault line: its values without json (parsed on demand)
                t_float, t_int, pid, tid, addr, write, kernel = fault.groups()
                t = float(t_float) if t_float is not None else int(t_int)
                if t < last_t:
                    _in_order(t, last_t, name, lineno)
                last_t = t
                if tid == pid:  # (a process's main thread: one conversion)
                    tid = pid = int(pid)
                else:
                    pid, tid = int(pid), int(tid)
                addr, write, kernel = int(addr), write == "true", kernel == "true"
                ev: Any = None
            else:
                ev = snapshot_event(line) if pages_key in line else None  # a snapshot: its pages read in bulk
                if ev is None:
                    try:
                        ev, end = scan(line, 0)
                    except (StopIteration, json.JSONDecodeError):
                        ev, end = None, 0
                    if end == len(line) or (end == len(line) - 1 and line[end] == "\n"):
                        if type(ev) is dict and ev.get("ev") == "fault":
                            try:
                                fault = _FAULT_FIELDS(ev)
                            except KeyError:
                                pass
                            else:
                                if tuple(map(type, fault)) not in _FAULT_TYPES:
                                    fault = None
                        if fault is None and not _event_ok(ev):
                            ev = parse_event(line, f"{name} line {lineno}")
                    else:  # json.loads() also allows whitespace around the object: such a line goes the long way
                        ev = parse_event(line, f"{name} line {lineno}")
                last_t = t = _in_order(ev["t"], last_t, name, lineno)
                if fault is not None:
                    _t, pid, tid, addr, write, _ip, _code = fault
                    kernel = ev.get("kernel")
            if fault is not None:
                if not n_events and "fault" not in counts:
                    counts["fault"] = 0  # the key where the reference puts it (the JSON's order)
                n_events += 1
                vpn = addr >> PAGE_SHIFT
                if first_pass:  # _Races.see() of a fault
                    tf = float(t)
                    prev = last_fault.get(vpn)
                    if (prev is not None and prev[1] != pid and tf - prev[0] <= RACE_US
                            and max(since.get(pid, 0.0), since.get(prev[1], 0.0)) <= prev[0]):
                        race_lines.update((prev[2], lineno))
                    last_fault[vpn] = (tf, pid, lineno)
                    recent.append((tf, pid, tid, lineno))
                    last_tf = tf
                if tid in names:  # on_fault() of a page in a mapping the simulator expresses
                    space = spaces[tid]
                    i = bisect_right(space.starts, vpn) - 1
                    area = space.areas[i] if i >= 0 else None
                    if area is not None and area.end > vpn and area.kind != "opaque":
                        n_faults += 1
                        if lineno in racy:
                            append(Race(lineno))
                        if write:
                            n_writes += 1
                        if kernel:
                            n_kernel += 1
                        if fault_lines is not None:
                            fault_lines.append(lineno)
                        task = names[tid]
                        if with_columns:  # its place among the steps: every item so far is one but snapshots
                            col_at(len(out) - stats.snapshots)
                            col_vpn(vpn)
                            col_write(write)
                            col_task(task)
                        step = new(Step)
                        set_verb(step, "fault")
                        set_task(step, task)
                        set_args(step, (vpn, 0, write))
                        append(step)
                    else:
                        out.extend(self.on_fault(lineno, ev if ev is not None else scan(line, 0)[0]))
                else:
                    out.extend(self.event(lineno, ev if ev is not None else scan(line, 0)[0]))
            else:
                stats.lines = lineno
                kind = ev["ev"]
                counts[kind] += 1
                if first_pass and kind != "syscall":  # (_Races.see() of a call does nothing)
                    while recent and recent[0][0] < last_tf - _RACE_KEEP_US:  # as _Races.see() after each fault
                        recent.popleft()
                    see(lineno, ev)
                    if kind == "fault":
                        last_tf = recent[-1][0]
                handler = direct.get(kind)
                out.extend(handler(lineno, ev) if handler is not None and ev["tid"] in names else
                           self.event(lineno, ev))
            if lineno >= batch_end:
                batch_end = lineno + BATCH_LINES
                stats.lines = lineno
                _add_fault_tallies(stats, n_events, n_faults, n_writes, n_kernel)
                n_events = n_faults = n_writes = n_kernel = 0
                yield lineno
        if not header_seen:
            raise RunTraceError(f"{name}: empty file (no run-trace header)")
        if n_events:
            stats.lines = lineno
        _add_fault_tallies(stats, n_events, n_faults, n_writes, n_kernel)
        self._count_pending()
        self.fault_lines = None
        yield lineno

    def event(self, lineno: int, ev: dict[str, Any]) -> Iterator[_Out]:
        kind = ev["ev"]
        tid = ev["tid"]
        if kind == "exec" and tid not in self.name and ev.get("former_tid") in self.name:
            tid = ev["former_tid"]  # the thread that called execve, known under its own tid until now
            ev = {**ev, "tid": tid}
        if kind == "spawn":
            name = self._new_name(ev["pid"], tid)
            self._attach(tid, ev["pid"], name, _Space(described=False))
            self.stats.processes += 1
            yield Step("spawn", name)
            return
        if tid not in self.name and tid in self.gone:
            self.stats.skipped["exit of a task already gone" if kind == "exit" else
                               f"{kind} event of a task that had exited"] += 1
            if kind == "fault":
                self.stats.faults += 1
                self.stats.fault_skips["by a task that had exited"] += 1
            return
        if tid not in self.name:  # its creation is later in the file (the child ran first): hold it
            self.pending.setdefault(tid, []).append((lineno, ev))
            return
        handler = getattr(self, f"on_{kind}")
        yield from handler(lineno, ev)

    def on_fork(self, lineno: int, ev: dict[str, Any]) -> Iterator[_Out]:
        parent = self.name[ev["tid"]]
        space = self.space[ev["tid"]]
        ctid, cpid = ev["child_tid"], ev["child_pid"]
        if ctid in self.name:
            self.stats.skipped["fork of a task id that is still alive"] += 1
            return
        name = self._new_name(cpid, ctid)
        if ev["thread"] or (ev["vfork"] and ev["clone_flags"] & CLONE_VM):
            verb = "vfork" if ev["vfork"] else "thread"
            self._attach(ctid, cpid, name, space)
            if verb == "thread":
                self.stats.threads += 1
            else:
                self.stats.processes += 1
            yield Step(verb, parent, (name,))
        else:
            child = space.fork()
            self._attach(ctid, cpid, name, child)
            self.stats.processes += 1
            yield Step("fork", parent, (name,))
            for a in child.areas:  # MADV_WIPEONFORK / MAP_DROPPABLE: the child gets the mapping, empty
                if a.wipeonfork:
                    yield self._mmap_step(name, a)
        self.gone.discard(ctid)
        for held in self.pending.pop(ctid, []):
            yield from self.event(*held)

    def on_exec(self, lineno: int, ev: dict[str, Any]) -> Iterator[_Out]:
        tid, pid = ev["tid"], ev["pid"]
        name = self.name[tid]
        for other in [t for t, g in self.tgid.items() if g == pid and t != tid]:  # de_thread()
            self._detach(other)
        old = self.space[tid]
        self._detach(tid)
        self.gone.discard(tid)
        maps = ev.get("maps")
        space = _Space(described=maps is not None)
        space.thp_disabled = old.thp_disabled  # PR_SET_THP_DISABLE is kept across execve (MMF_INIT_MASK)
        self._attach(pid, pid, name, space)
        yield Step("exec", name)
        yield from self._release(old)
        populated = sorted({a >> PAGE_SHIFT for a in ev.get("populated") or ()})
        for start, end, perms, offset, dev, ino, path in maps or []:
            yield from self._exec_mapping(name, space, start, end, perms, offset, dev, ino, path, populated)

    def _exec_mapping(self, task: str, space: _Space, start: int, end: int, perms: str, offset: int, dev: str,
                      ino: int, path: str, populated: list[int]) -> Iterator[_Out]:
        """One mapping execve set up (``maps``); the pages it wrote without a fault (``populated``: the argument
        pages at the top of the stack, fs/exec.c copy_strings() through get_arg_page()) are written here."""
        prot = _prot((PROT_READ if "r" in perms else 0) | (PROT_WRITE if "w" in perms else 0)
                     | (PROT_EXEC if "x" in perms else 0))
        shared = perms.endswith("s")
        vpn, pages = start >> PAGE_SHIFT, (end - start) >> PAGE_SHIFT
        if path.startswith("[") and path not in ("[stack]", "[heap]"):
            space.insert(_Area(vpn, vpn + pages, "opaque", prot, why=f"special mapping {path}"))
            return
        if ino == 0:
            area = _Area(vpn, vpn + pages, "shared-anon" if shared else "anon", prot, growsdown=path == "[stack]")
            if path == "[heap]":
                space.brk = end
            mine = [p for p in populated if vpn <= p < vpn + pages]
            if mine and area.growsdown and not shared:
                yield from self._exec_stack(task, space, area, mine)
                return
            if mine:
                space.insert(area)
                yield self._mmap_step(task, area)
                for page in mine:
                    self.stats.populated += 1
                    yield Step("write", task, (page, 0, 1))
                return
        else:
            name = self._file_name({"dev": dev, "ino": ino, "path": path})
            area = _Area(vpn, vpn + pages, "file-shared" if shared else "file-private", prot, name,
                         offset >> PAGE_SHIFT)
        space.insert(area)
        yield self._mmap_step(task, area)

    def _exec_stack(self, task: str, space: _Space, area: _Area, populated: list[int]) -> Iterator[_Out]:
        """The stack with execve's argument pages. The kernel wrote them while the stack was a VMA growing down
        page by page from its top (fs/exec.c __bprm_mm_init(), get_arg_page()), so each is a small folio
        (no aligned range fits); here the populated top is mapped apart, small folios only, then the rest."""
        low = populated[0]
        top = _Area(low, area.end, "anon", area.prot, growsdown=True)
        space.insert(top)
        yield Step("mmap", task, (top.start, top.end - top.start, "anon", None, [], top.prot, 0))
        for vpn in populated:
            self.stats.populated += 1
            yield Step("write", task, (vpn, 0, 1))
        if low > area.start:
            rest = replace(area, end=low)
            space.insert(rest)
            yield self._mmap_step(task, rest)

    def _detach(self, tid: int) -> None:
        self.name.pop(tid, None)
        self.gone.add(tid)
        self.tgid.pop(tid, None)
        space = self.space.pop(tid, None)
        if space is not None:
            space.users -= 1

    def _release(self, space: _Space) -> Iterator[_Out]:
        """The MM is gone: the pins of its io_uring rings and its pipes' pages are released (files close)."""
        if space.users > 0:
            return
        for handle in space.handles:
            yield Step("unpin", "", (handle,))
        space.handles.clear()

    def on_exit(self, lineno: int, ev: dict[str, Any]) -> Iterator[_Out]:
        tid, pid = ev["tid"], ev["pid"]
        group = [t for t, g in self.tgid.items() if g == pid and t != tid] if ev["group"] else []
        for t in [*group, tid]:
            name = self.name[t]
            space = self.space[t]
            self._detach(t)
            yield Step("exit", name)
            yield from self._release(space)

    def on_fault(self, lineno: int, ev: dict[str, Any]) -> Iterator[_Out]:
        self.stats.faults += 1
        tid = ev["tid"]
        space = self.space[tid]
        vpn = ev["addr"] >> PAGE_SHIFT
        area = space.find(vpn)
        if area is None:
            grown = self._grow_stack(space, vpn)
            if grown is None:
                self.stats.fault_skips[FAULT_OUTSIDE if space.described else FAULT_EXEC] += 1
                return
            yield self._mmap_step(self.name[tid], grown)
            yield Step("merge", self.name[tid])
        elif area.kind == "opaque":
            self.stats.fault_skips[f"{FAULT_OPAQUE} ({area.why})"] += 1
            return
        self.stats.fault_steps += 1
        if lineno in self.racy:
            yield Race(lineno)
        if ev["write"]:
            self.stats.write_faults += 1
        if ev.get("kernel"):
            self.stats.kernel_faults += 1
        if self.fault_lines is not None:
            self.fault_lines.append(lineno)
        yield Step("fault", self.name[tid], (vpn, 0, ev["write"]))

    def _grow_stack(self, space: _Space, vpn: int) -> _Area | None:
        """A fault just below a growsdown mapping extends it (mm/mmap.c expand_downwards())."""
        above = space.above(vpn)
        if above is None or not above.growsdown or above.end - vpn > STACK_LIMIT_PAGES:
            return None
        below = space.below(vpn)
        if below is not None and below.end > vpn:
            return None
        grown = replace(above, start=vpn, end=above.start)
        space.insert(grown)
        return grown

    def on_snapshot(self, lineno: int, ev: dict[str, Any]) -> Iterator[_Out]:
        self.stats.snapshots += 1
        scope = ev.get("scope")
        pages = ev["pages"]  # an array when the line was read in bulk (_snapshot_event), else json's lists
        yield Snapshot(lineno, self.name[ev["tid"]], ev["pid"], ev["at"], ev["mm_id"],
                       _pages_array(pages) if type(pages) is list else pages, ev["folios"],
                       scope if isinstance(scope, str) else None, ev.get("khugepaged_collapsed"))

    # -- memory calls ------------------------------------------------------------------------------------
    def on_syscall(self, lineno: int, ev: dict[str, Any]) -> Iterable[_Out]:
        """The steps of a memory call: its handler's (a generator), or none. Not a generator itself (one frame
        less per call); the figures change when it is called, where a generator's first step would change them."""
        name = ev["name"]
        self.stats.syscalls[name] += 1
        ret = ev["ret"]
        if ret < 0 and not (name == "madvise" and ret == -12):  # madvise -ENOMEM still advised the mapped parts
            self.stats.failed[name] += 1
            return ()
        handler = _SYSCALL_HANDLERS.get(name)
        if name in ("mprotect", "madvise") and ev["args"][1] == 0:
            # a length of 0 succeeds and does nothing (mm/mprotect.c do_mprotect_pkey(), mm/madvise.c
            # do_madvise() return 0 before looking at any VMA): no step, no split of the mapping
            self.stats.ignored[f"{name} of length 0"] += 1
            return ()
        if name in NO_EFFECT_CALLS:
            self.stats.ignored[name] += 1
            return ()
        if handler is None:
            self.stats.unexpressed[name] += 1
            return ()
        return handler(self, self.name[ev["tid"]], self.space[ev["tid"]], ev["args"], ret, ev)

    def _mmap_step(self, task: str, a: _Area) -> Step:
        if a.file is not None:
            self._use_file(a.file, a.pgoff + a.end - a.start)
        thp = sorted(self.header.thp.shmem) if a.kind == "shared-anon" else None
        return Step("mmap", task, (a.start, a.end - a.start, a.kind, a.file, thp, a.prot, a.pgoff))

    def _map(self, task: str, space: _Space, area: _Area) -> Iterator[_Out]:
        """A new mapping (replacing whatever was there, as MAP_FIXED), merged into its neighbours."""
        if area.kind == "opaque":
            space.insert(area)
            yield Step("munmap", task, (area.start, 0, area.end - area.start))
            return
        merge = space.mergeable(area)
        space.insert(area)
        yield self._mmap_step(task, area)
        n = area.end - area.start
        if area.wipeonfork or area.dontfork:
            yield Step("madvise", task, (area.start, 0, n, "dontfork"))
        if area.kind == "anon" and space.thp_disabled:
            yield Step("madvise", task, (area.start, 0, n, "nohugepage"))
        elif area.kind == "anon" and area.hugepage is not None:
            yield Step("madvise", task, (area.start, 0, n, "hugepage" if area.hugepage else "nohugepage"))
        if merge:
            yield Step("merge", task)

    def _populate(self, task: str, area: _Area) -> Iterator[_Out]:
        """mm/gup.c populate_vma_page_range(): write faults in a private writable mapping, else read faults."""
        if area.prot.startswith("none"):
            return
        verb = "write" if area.prot.startswith("rw") and area.kind in ("anon", "file-private") else "read"
        for first in range(area.start, area.end, POPULATE_CHUNK):
            n = min(POPULATE_CHUNK, area.end - first)
            self.stats.populated += n
            yield Step(verb, task, (first, 0, n))

    def sys_mmap(self, task: str, space: _Space, args: list[int], ret: int, ev: dict[str, Any]) -> Iterator[_Out]:
        _addr, length, prot, flags, _fd, offset = args
        start, pages = ret >> PAGE_SHIFT, _pages(length)
        typ = flags & MAP_TYPE
        shared = typ in (MAP_SHARED, MAP_SHARED_VALIDATE)
        file = ev.get("file")
        p = _PROTS[prot & 7]
        if flags & MAP_NORESERVE and not shared:  # VM_NORESERVE: never VM_ACCOUNT, so it merges only with its kind
            p += NORESERVE
        if flags & MAP_HUGETLB or (file is not None and file.get("hugetlb")):
            self.stats.unexpressed["mmap(MAP_HUGETLB)"] += 1
            area = _Area(start, start + pages, "opaque", p, why="hugetlb")
        elif file is None or flags & MAP_ANONYMOUS or str(file.get("path", "")) == "/dev/zero":
            # MAP_STACK is VM_NOHUGEPAGE (include/linux/mman.h calc_vm_flag_bits(), since v6.7): thread stacks
            # get no large folios
            area = _Area(start, start + pages, "shared-anon" if shared else "anon", p,
                         hugepage=False if flags & MAP_STACK and not shared else None,
                         growsdown=bool(flags & MAP_GROWSDOWN), wipeonfork=typ == MAP_DROPPABLE)
            if typ == MAP_DROPPABLE:
                self.stats.approximated["mmap(MAP_DROPPABLE): wiped on fork, never dropped"] += 1
        elif _device(file):
            self.stats.unexpressed["mmap of a device"] += 1
            area = _Area(start, start + pages, "opaque", p, why=f"device {file.get('path', '?')}")
        else:
            name = self._file_name(file)
            area = _Area(start, start + pages, "file-shared" if shared else "file-private", p, name,
                         offset >> PAGE_SHIFT)
        yield from self._map(task, space, area)
        if (flags & (MAP_POPULATE | MAP_LOCKED) or space.lock_future) and area.kind != "opaque" and not (
                flags & MAP_NONBLOCK and not flags & MAP_LOCKED):
            yield from self._populate(task, area)

    def sys_munmap(self, task: str, space: _Space, args: list[int], ret: int, ev: dict[str, Any]) -> Iterator[_Out]:
        start, pages = args[0] >> PAGE_SHIFT, _pages(args[1])
        space.remove(start, start + pages)
        yield Step("munmap", task, (start, 0, pages))

    def _over_runs(self, name: str, space: _Space, start: int, end: int) -> list[tuple[int, int]]:
        runs, outside = space.runs(start, end)
        if outside:
            self.stats.skipped[f"{name}: pages outside the mappings the trace describes"] += 1
        return runs

    def sys_mprotect(self, task: str, space: _Space, args: list[int], ret: int,
                     ev: dict[str, Any]) -> Iterator[_Out]:
        start, pages = args[0] >> PAGE_SHIFT, _pages(args[1])
        p = _PROTS[args[2] & 7]
        end = start + pages
        if not (space.clean and start < end):
            for lo, hi in self._over_runs("mprotect", space, start, end):
                yield Step("mprotect", task, (lo, 0, hi - lo, p))
            space.update(start, end, lambda a: a if a.kind == "opaque" else a.with_prot(
                p + NORESERVE if a.prot.endswith(NORESERVE) else p))
            return
        # the same, the range cut once: its runs are those of the pieces (_over_runs), then the pieces change
        i, j, gone, keep = space._cut(start, end)
        runs, outside = _joined_runs([(a.start, a.end) for a in gone if a.kind != "opaque"], pages)
        if outside:
            self.stats.skipped["mprotect: pages outside the mappings the trace describes"] += 1
        for lo, hi in runs:
            yield Step("mprotect", task, (lo, 0, hi - lo, p))
        new = []
        for a in gone:
            if a.kind != "opaque":
                prot = p + NORESERVE if a.prot.endswith(NORESERVE) else p
                if a.prot != prot:  # (an area is never changed in place: one with the same protection stays)
                    a = a.with_prot(prot)
            new.append(a)
        space._put_back(start, end, i, j, gone, keep, new)

    def sys_madvise(self, task: str, space: _Space, args: list[int], ret: int,
                    ev: dict[str, Any]) -> Iterator[_Out]:
        start, pages, advice = args[0] >> PAGE_SHIFT, _pages(args[1]), args[2]
        what = MADV_NAMES.get(advice, f"advice {advice}")
        end = start + pages
        if advice in MADV_NO_EFFECT:
            self.stats.ignored[f"madvise({what})"] += 1
            return
        if advice in (22, 23):  # MADV_POPULATE_READ/WRITE: faults in every page (mm/madvise.c madvise_populate())
            for lo, hi in self._over_runs(f"madvise({what})", space, start, end):
                area = space.find(lo)
                assert area is not None
                verb = "write" if advice == 23 else "read"
                for first in range(lo, hi, POPULATE_CHUNK):
                    n = min(POPULATE_CHUNK, hi - first)
                    self.stats.populated += n
                    yield Step(verb, task, (first, 0, n))
            return
        if advice in (18, 19):  # WIPEONFORK / KEEPONFORK: the child gets an empty mapping (see on_fork)
            wipe = advice == 18
            for lo, hi in self._over_runs(f"madvise({what})", space, start, end):
                area = space.find(lo)
                if area is not None and area.kind == "anon" and not area.dontfork:
                    yield Step("madvise", task, (lo, 0, hi - lo, "dontfork" if wipe else "dofork"))
            space.update(start, end, lambda a: replace(a, wipeonfork=wipe) if a.kind == "anon" else a)
            return
        step = MADV_STEPS.get(advice)
        if step is None:
            if advice == 8:
                self.stats.approximated["madvise(MADV_FREE): no reclaim here, the pages stay mapped"] += 1
            elif advice == 102:
                self.stats.unexpressed["madvise(MADV_GUARD_INSTALL): zapped, no guard markers"] += 1
                for lo, hi in self._over_runs(f"madvise({what})", space, start, end):
                    yield Step("madvise", task, (lo, 0, hi - lo, "dontneed"))
            else:
                self.stats.unexpressed[f"madvise({what})"] += 1
            return
        for lo, hi in self._over_runs(f"madvise({what})", space, start, end):
            if step == "hugepage" and space.thp_disabled:
                break  # MMF_DISABLE_THP wins over VM_HUGEPAGE
            if step == "dofork":
                for a in space.covered_parts(lo, hi):
                    if not a.wipeonfork:
                        yield Step("madvise", task, (max(a.start, lo), 0, min(a.end, hi) - max(a.start, lo), step))
                continue
            yield Step("madvise", task, (lo, 0, hi - lo, step))
        if step in ("hugepage", "nohugepage"):
            flag = step == "hugepage"
            space.update(start, end, lambda a: replace(a, hugepage=flag) if a.kind == "anon" else a)
        elif step in ("dontfork", "dofork"):
            flag = step == "dontfork"
            space.update(start, end, lambda a: replace(a, dontfork=flag))

    def sys_brk(self, task: str, space: _Space, args: list[int], ret: int, ev: dict[str, Any]) -> Iterator[_Out]:
        old = space.brk
        space.brk = ret
        if old is None:
            if args[0] and args[0] == ret:
                self.stats.approximated["brk: the break before it was unknown (no brk(0) first)"] += 1
            return
        lo, hi = _pages(old), _pages(ret)
        if hi > lo:
            yield from self._map(task, space, _Area(lo, hi, "anon", "rw"))
        elif hi < lo:
            space.remove(hi, lo)
            yield Step("munmap", task, (hi, 0, lo - hi))

    def sys_mremap(self, task: str, space: _Space, args: list[int], ret: int,
                   ev: dict[str, Any]) -> Iterator[_Out]:
        old, old_size, new_size, flags, _new_addr = args
        o, on, nn, dst = old >> PAGE_SHIFT, _pages(old_size), _pages(new_size), ret >> PAGE_SHIFT
        area = space.find(o)
        if on == 0 or area is None or area.kind == "opaque" or (area.kind == "shared-anon" and nn > on):
            why = ("old size 0 (a duplicate of a shared mapping)" if on == 0 else
                   "a mapping the trace does not describe" if area is None or area.kind == "opaque" else
                   "growing anonymous shared memory")
            self.stats.unexpressed[f"mremap: {why}"] += 1
            if on and not flags & MREMAP_DONTUNMAP:
                space.remove(o, o + on)
                yield Step("munmap", task, (o, 0, on))
            space.insert(_Area(dst, dst + nn, "opaque", area.prot if area else "rw", why=f"mremap: {why}"))
            yield Step("munmap", task, (dst, 0, nn))
            return
        keep = min(on, nn)
        if on > nn:
            space.remove(o + nn, o + on)
            yield Step("munmap", task, (o + nn, 0, on - nn))
        if dst != o:
            moved = [a.cut(max(a.start, o), min(a.end, o + keep)) for a in space.covered_parts(o, o + keep)]
            space.remove(o, o + keep)
            space.remove(dst, dst + keep)
            for a in moved:
                space.insert(replace(a, start=a.start - o + dst, end=a.end - o + dst))
            yield Step("mremap", task, (o, keep, dst))
            if flags & MREMAP_DONTUNMAP:  # the old range stays mapped, empty
                for a in moved:
                    yield from self._map(task, space, a)
        if nn > on:
            tail = space.find(dst + on - 1) or area
            ext = replace(tail, start=dst + on, end=dst + nn,
                          pgoff=tail.pgoff + (dst + on - tail.start) if tail.file else tail.pgoff)
            yield from self._map(task, space, ext)

    def sys_shmat(self, task: str, space: _Space, args: list[int], ret: int, ev: dict[str, Any]) -> Iterator[_Out]:
        file = dict(ev["file"])
        file.setdefault("shmem", True)
        name = self._file_name(file)
        start = ret >> PAGE_SHIFT
        prot = "r" if args[2] & SHM_RDONLY else "rw"
        yield from self._map(task, space, _Area(start, start + _pages(ev["size"]), "file-shared", prot, name, 0))

    def sys_io_uring_register(self, task: str, space: _Space, args: list[int], ret: int,
                              ev: dict[str, Any]) -> Iterator[_Out]:
        opcode = args[1] & ~IORING_REGISTER_USE_REGISTERED_RING
        ring = (ev["pid"], args[0])
        if opcode in (IORING_REGISTER_BUFFERS, IORING_REGISTER_BUFFERS2, IORING_REGISTER_BUFFERS_UPDATE) and (
                "buffers" in ev):
            for addr, length in ev["buffers"]:
                if length <= 0:
                    continue
                first, last = addr >> PAGE_SHIFT, (addr + length - 1) >> PAGE_SHIFT
                if space.runs(first, last + 1)[1]:
                    self.stats.skipped["io_uring buffer outside the mappings the trace describes"] += 1
                    continue
                handle = self._handle("uring")
                self.uring.setdefault(ring, []).append(handle)
                space.handles.append(handle)
                self.stats.approximated["io_uring buffer: one FOLL_PIN per page (the kernel coalesces a large "
                                        "folio's)"] += 1
                yield Step("pin", task, (handle, first, 0, last + 1 - first, True, True))
        elif opcode == IORING_UNREGISTER_BUFFERS:
            for handle in self.uring.pop(ring, []):
                if handle in space.handles:
                    space.handles.remove(handle)
                yield Step("unpin", "", (handle,))
        else:
            self.stats.ignored[f"io_uring_register(opcode {opcode})"] += 1

    def sys_vmsplice(self, task: str, space: _Space, args: list[int], ret: int,
                     ev: dict[str, Any]) -> Iterator[_Out]:
        for addr, length in ev["ranges"]:
            if length <= 0:
                continue
            first, last = addr >> PAGE_SHIFT, (addr + length - 1) >> PAGE_SHIFT
            if space.runs(first, last + 1)[1]:
                self.stats.skipped["vmsplice range outside the mappings the trace describes"] += 1
                continue
            handle = self._handle("pipe")
            space.handles.append(handle)
            self.stats.approximated["vmsplice: pipe references held until the process exits"] += 1
            yield Step("vmsplice", task, (handle, first, 0, last + 1 - first))


    def sys_prctl(self, task: str, space: _Space, args: list[int], ret: int, ev: dict[str, Any]) -> Iterator[_Out]:
        """The memory options of prctl() (the only ones recorded): PR_SET_THP_DISABLE, PR_SET_VMA, KSM."""
        option = args[0] & 0xFFFFFFFF
        if option == PR_SET_THP_DISABLE:
            if args[1]:  # kernel/sys.c: MMF_DISABLE_THP; mm/huge_memory.c thp_vma_allowable_orders() then says none
                space.thp_disabled = True
                for a in space.areas:
                    if a.kind == "anon":
                        yield Step("madvise", task, (a.start, 0, a.end - a.start, "nohugepage"))
            elif space.thp_disabled:
                space.thp_disabled = False
                self.stats.approximated["prctl(PR_SET_THP_DISABLE, 0): the mappings keep no large folios"] += 1
        elif option == PR_SET_VMA:
            self.stats.approximated["prctl(PR_SET_VMA_ANON_NAME): VMA names are not modelled (differently named "
                                    "VMAs do not merge)"] += 1
        elif option == PR_SET_MEMORY_MERGE:
            self.stats.unexpressed["prctl(PR_SET_MEMORY_MERGE): KSM"] += 1
        else:
            self.stats.ignored[f"prctl({option})"] += 1
        return
        yield  # pragma: no cover - a generator

    def sys_pkey_mprotect(self, task: str, space: _Space, args: list[int], ret: int,
                          ev: dict[str, Any]) -> Iterator[_Out]:
        """mprotect() with a protection key: the keys are not modelled, the protection is."""
        yield from self.sys_mprotect(task, space, args[:3], ret, ev)

    def sys_shmdt(self, task: str, space: _Space, args: list[int], ret: int, ev: dict[str, Any]) -> Iterator[_Out]:
        """ipc/shm.c shmdt(): unmaps the segment attached at the address (every piece of it)."""
        start = args[0] >> PAGE_SHIFT
        area = space.find(start)
        if area is None or area.file is None:
            self.stats.skipped["shmdt of a segment the trace did not attach"] += 1
            return
        end = area.end
        while (nxt := space.find(end)) is not None and nxt.file == area.file:
            end = nxt.end
        space.remove(start, end)
        yield Step("munmap", task, (start, 0, end - start))

    def _lock(self, task: str, space: _Space, start: int, end: int) -> Iterator[_Out]:
        """mm/mlock.c: locking populates the range (mm/gup.c populate_vma_page_range())."""
        for lo, hi in self._over_runs("mlock", space, start, end):
            for a in space.covered_parts(lo, hi):
                yield from self._populate(task, a.cut(max(a.start, lo), min(a.end, hi)))

    def sys_mlock(self, task: str, space: _Space, args: list[int], ret: int, ev: dict[str, Any]) -> Iterator[_Out]:
        start = args[0] >> PAGE_SHIFT
        yield from self._lock(task, space, start, _pages(args[0] + args[1]))

    def sys_mlock2(self, task: str, space: _Space, args: list[int], ret: int, ev: dict[str, Any]) -> Iterator[_Out]:
        if args[2] & MLOCK_ONFAULT:
            self.stats.ignored["mlock2(MLOCK_ONFAULT)"] += 1
            return
        yield from self.sys_mlock(task, space, args[:2], ret, ev)

    def sys_mlockall(self, task: str, space: _Space, args: list[int], ret: int,
                     ev: dict[str, Any]) -> Iterator[_Out]:
        if args[0] & MCL_ONFAULT:
            self.stats.ignored["mlockall(MCL_ONFAULT)"] += 1
            return
        if args[0] & MCL_FUTURE:
            space.lock_future = True
        if args[0] & MCL_CURRENT:
            for a in list(space.areas):
                if a.kind != "opaque":
                    yield from self._populate(task, a)


#: ``_Converter.sys_<name>`` by system call name
_SYSCALL_HANDLERS: dict[str, Callable[..., Iterator[_Out]]] = {
    name[4:]: getattr(_Converter, name) for name in dir(_Converter) if name.startswith("sys_")}


def _device(file: dict[str, Any]) -> bool:
    path = str(file.get("path", ""))
    return path.startswith("/dev/") and not path.startswith("/dev/shm/") and not file.get("shmem", False)


def _shmem_name(name: str) -> bool:
    return name.startswith(("/memfd:", "/dev/shm/", "/SYSV"))


@dataclass(slots=True)
class Conversion:
    """A converted run trace: its header, the first pass's file sizes and statistics.

    :func:`prepare` keeps what its reading produced (up to :data:`CACHE_ITEMS` items), so :meth:`items` hands
    it out again without reading the trace a second time; a longer trace is read again."""

    trace: RunTrace
    header: Header
    file_pages: dict[str, int]
    file_shmem: dict[str, bool]
    stats: ConvertStats
    lines: int
    racy: set[int] = field(default_factory=set)  # lines of the faults a Race marker precedes
    kept: list[_Out] | None = field(default=None, repr=False)  # the items after the head, Race markers placed
    marks: list[tuple[int, int]] = field(default_factory=list, repr=False)  # (items in ``kept`` so far, line)
    first: ConvertStats | None = field(default=None, repr=False)  # the first pass's figures (a copy)
    kept_steps: int = 0  # the steps in ``kept``
    #: the fault steps the reading converted itself, as columns (their places counted among :meth:`items`' steps);
    #: None when ``kept`` is
    faults: FaultColumns | None = field(default=None, repr=False)

    def items(self) -> Generator[Step | Snapshot | Race, None, None]:
        """The steps (and snapshot and race markers) in order; ``stats`` is refilled as they are produced."""
        conv = _Converter(self.header, self.file_pages)
        conv.file_shmem = dict(self.file_shmem)
        conv.racy = self.racy
        self.stats = conv.stats
        if self.kept is not None and self.first is not None:
            yield from self._replay(conv, self.kept, self.first)
        else:
            yield from self._stream(conv)

    def _replay(self, conv: _Converter, kept: list[_Out], first: ConvertStats) -> Iterator[_Out]:
        """The kept items after the head; ``stats`` holds the whole trace's figures at once (``lines`` follows
        the items). Closed before the end, ``stats`` is made what it was at that item (:meth:`_stats_after`)."""
        head = conv._head()
        stats = conv.stats
        for name in ConvertStats.__slots__:
            if name not in ("files", "steps", "lines"):
                value = getattr(first, name)
                setattr(stats, name, Counter(value) if isinstance(value, Counter) else value)
        stats.steps = len(head) + self.kept_steps
        items = head + kept
        at = len(head)
        segment = items[:at]
        it = iter(segment)
        done = 0
        try:
            yield from it
            done = at
            for end, line in self.marks:
                stats.lines = line
                segment = items[at:len(head) + end]
                it = iter(segment)
                yield from it
                done = at = len(head) + end
        except GeneratorExit:
            self.stats = self._stats_after(done + len(segment) - it.__length_hint__())  # type: ignore[attr-defined]
            raise

    def _stream(self, conv: _Converter) -> Iterator[_Out]:
        """The items, read again in batches (:meth:`_Converter.run_fast`)."""
        out: list[_Out] = []
        it = iter(out)
        done = 0
        try:
            for _line in conv.run_fast(self.trace, out, None):
                conv.stats.steps += sum(1 for item in out if type(item) is Step)
                it = iter(out)
                yield from it
                done += len(out)
                out.clear()
        except GeneratorExit:
            self.stats = self._stats_after(done + len(out) - it.__length_hint__())  # type: ignore[attr-defined]
            raise

    def _stats_after(self, count: int) -> ConvertStats:
        """The figures as they were when the reading had handed out ``count`` items (one item by one event at a
        time, :meth:`_Converter.run`): for a consumer that stops early."""
        conv = _Converter(self.header, self.file_pages)
        conv.file_shmem = dict(self.file_shmem)
        conv.racy = self.racy
        if count > 0:
            for n, item in enumerate(conv.run(self.trace.events()), 1):
                if isinstance(item, Step):
                    conv.stats.steps += 1
                if n >= count:
                    break
        return conv.stats

    def steps(self) -> list[Step]:
        return [item for item in self.items() if isinstance(item, Step)]


def prepare(trace: RunTrace) -> Conversion:
    """Read the whole trace once: check every line (RunTraceError) and size every file it maps; what the reading
    produced is kept for :meth:`Conversion.items` (up to :data:`CACHE_ITEMS` items)."""
    header = trace.header
    conv = _Converter(header, None)
    out: list[_Out] = []
    fault_lines: list[int] = []
    columns = FaultColumns()
    marks: list[tuple[int, int]] = []
    keep = True
    collect = gc.isenabled()
    # the reading makes many objects and few cycles: no collections while it runs (up to a fifth), nor before the
    # converter's own objects (the race bookkeeping: one tuple per fault) are freed, on return
    gc.disable()
    try:
        for line in conv.run_fast(trace, out, fault_lines, columns):
            if keep and len(out) > CACHE_ITEMS:
                keep = False
            if keep:
                marks.append((len(out) - 1, line))
            else:
                out.clear()
                fault_lines.clear()
                columns.clear()
        lines = conv.stats.lines
        racy = conv.races.lines
        kept: list[_Out] | None = None
        if keep:
            kept = out[1:]  # after the THP step
            if racy:  # a Race marker before each racy fault's step, as the second pass places them
                at = [i for i, item in enumerate(kept) if type(item) is Step and item.verb == "fault"]
                assert len(at) == len(fault_lines)
                inserts = [(i, line) for i, line in zip(at, fault_lines, strict=True) if line in racy]
                placed: list[_Out] = []
                prev = 0
                for i, line in inserts:
                    placed.extend(kept[prev:i])
                    placed.append(Race(line))
                    prev = i
                placed.extend(kept[prev:])
                kept = placed
                starts = [i for i, _line in inserts]
                marks = [(end + bisect.bisect_left(starts, end), line) for end, line in marks]
        first = ConvertStats()
        for name in ConvertStats.__slots__:
            value = getattr(conv.stats, name)
            setattr(first, name, Counter(value) if isinstance(value, Counter) else value)
        steps = countOf(map(type, kept), Step) if kept is not None else 0
        faults: FaultColumns | None = None
        if kept is not None and len(out) - 1 - steps == conv.stats.snapshots:
            # the places were counted as every item the reading produced but the snapshots a step (as it was: the
            # Race markers are placed after; the THP step is out[0])
            faults = columns
            faults.offset = len(conv.file_pages)  # items()' head: the THP step, then one step per file
        return Conversion(trace, header, dict(conv.file_pages), dict(conv.file_shmem), conv.stats, lines, racy,
                          kept, marks, first, steps, faults)
    finally:
        if collect:
            gc.enable()


def run_trace_steps(text: str, source: str = "run trace") -> list[Step]:
    """The steps of a run trace given as text (``foliosim compare --workload-file``)."""
    return prepare(RunTrace(source, text=text)).steps()


def workload_file_steps(text: str, source: str = "workload") -> list[Step]:
    """The steps of a workload file: a run trace (detected by its header) or a workload's JSON Lines."""
    if is_run_trace(text):
        return run_trace_steps(text, source)
    return load_steps(text, source)


def read_workload_text(path: str | Path) -> str:
    """A workload file's text, gunzipped if it is gzip (a ``.gz`` run trace); OSError if it cannot be read,
    RunTraceError if it is a broken gzip stream or not UTF-8."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise RunTraceError(f"{path}: the gzip stream is truncated or corrupt ({exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunTraceError(f"{path}: not UTF-8 text (byte {exc.start})") from None


__all__ = ["FORMAT", "VERSION", "Conversion", "ConvertStats", "Header", "Race", "RunTrace", "RunTraceError", "Snapshot",
           "ThpSettings", "is_run_trace", "prepare", "read_workload_text", "run_trace_steps", "thp_settings",
           "workload_file_steps"]
