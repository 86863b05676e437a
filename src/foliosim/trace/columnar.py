"""The rmap trace in columnar form: one numpy array per field, read back at full speed.

A :class:`ColumnarTrace` holds the same operations as a JSON Lines trace
(``docs/trace-format.md``), one array per field, names replaced by
indices into two name tables. On disk it is an uncompressed ``.npz`` file
(numpy's zip of ``.npy`` arrays, loaded without pickle):

========== ====== ==========================================================
array      dtype  meaning
========== ====== ==========================================================
format     <U     ``FORMAT_TAG`` (one element)
kind       uint8  operation: index into :data:`KINDS`, or ``RAW``
folio      int32  index into ``folio_names`` (-1: the op has no folio)
mm         int32  index into ``mm_names`` (-1: the op has no mm)
level      uint8  0 pte, 1 pmd, 255 none
page       int32  first page of a pte range (0 otherwise)
nr         int32  pages in a pte range (1 otherwise, as the JSON default)
order      int8   ``folio_new``'s order (0 otherwise)
line       int32  the source line number (for error records)
folio_names, mm_names  <U   the name tables
raw_index  int64  indices of ``RAW`` operations
raw_text   <U     their JSON text
========== ====== ==========================================================

``RAW`` marks a line that is a JSON object but that the columns cannot hold
(a field the trace parser rejects, or an integer outside the column's type);
such a line is always rejected by replay, and the replayer hands its text to
the reference model to get the exact error. A line that is not a JSON object
at all cannot be converted.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from foliosim.errors import FoliosimError, Rejected
from foliosim.rmap import PMD, PTE
from foliosim.system import Op
from foliosim.trace.format import parse_op
from foliosim.trace.generate import (
    TraceSpec,
    fill_columns,
    folio_name,
    generate_ops,  # noqa: F401 - re-exported for from_generated's callers
    mm_name,
    setup_ops,
)
from foliosim.trace.replay import decode_line, iter_trace_lines

FORMAT_TAG = "foliosim-rmap-trace/1"

#: Operation kinds, in column code order (the trace contract's operations).
KINDS = ("mm_new", "mm_free", "folio_new", "folio_free", "map_new_anon", "map", "dup", "unmap")
MM_NEW, MM_FREE, FOLIO_NEW, FOLIO_FREE, MAP_NEW_ANON, MAP, DUP, UNMAP = range(8)
RAW = 8
KIND_CODE = {name: code for code, name in enumerate(KINDS)}
LEVEL_PTE, LEVEL_PMD, LEVEL_NONE = 0, 1, 255

_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1

COLUMNS: dict[str, type[np.generic]] = {
    "kind": np.uint8,
    "folio": np.int32,
    "mm": np.int32,
    "level": np.uint8,
    "page": np.int32,
    "nr": np.int32,
    "order": np.int8,
    "line": np.int32,
}


#: Rows per chunk when validating (temporaries stay in cache).
_CHUNK = 1 << 16
#: The kinds whose rows have no folio, and those whose rows have a level; rows of the other kinds have a folio,
#: and an mm exactly when they have no folio or have a level (RAW rows: anything; see ColumnarTrace._rows_ok).
_NO_FOLIO = (MM_NEW, MM_FREE)
_WITH_LEVEL = (MAP_NEW_ANON, MAP, DUP, UNMAP)
_WITH_MM = _NO_FOLIO + _WITH_LEVEL
# _rows_ok relies on the codes' order: _NO_FOLIO are the codes below FOLIO_NEW, _WITH_LEVEL those from
# MAP_NEW_ANON up to RAW (a compare per row, no table look-up; tests/test_columnar.py checks it by name).


class TraceFormatError(FoliosimError):
    """A columnar trace file that foliosim cannot read, or a trace it cannot convert."""


@dataclass(slots=True)
class BadLine:
    """A line that is not a JSON object: where conversion stopped, as replay reports it."""

    line: int
    error: str


@dataclass
class ColumnarTrace:
    """Operations as parallel arrays plus name tables (see the module docstring)."""

    kind: npt.NDArray[np.uint8]
    folio: npt.NDArray[np.int32]
    mm: npt.NDArray[np.int32]
    level: npt.NDArray[np.uint8]
    page: npt.NDArray[np.int32]
    nr: npt.NDArray[np.int32]
    order: npt.NDArray[np.int8]
    line: npt.NDArray[np.int32]
    folio_names: list[str]
    mm_names: list[str]
    raw: dict[int, str] = field(default_factory=dict)
    #: Set when conversion from JSON Lines stopped at a line that is not a JSON object.
    bad_line: BadLine | None = None

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def op(self, idx: int) -> Op | None:
        """Operation ``idx`` as an :class:`Op` (None for a raw line)."""
        code = int(self.kind[idx])
        if code == RAW:
            return None
        kind = KINDS[code]
        f = int(self.folio[idx])
        m = int(self.mm[idx])
        lvl = int(self.level[idx])
        return Op(
            kind,
            mm=self.mm_names[m] if m >= 0 else None,
            folio=self.folio_names[f] if f >= 0 else None,
            order=int(self.order[idx]) if code == FOLIO_NEW else None,
            level=None if lvl == LEVEL_NONE else (PMD if lvl == LEVEL_PMD else PTE),
            page=int(self.page[idx]),
            nr=int(self.nr[idx]),
        )

    def json_obj(self, idx: int) -> dict[str, Any]:
        """Operation ``idx`` as its JSON Lines object."""
        if int(self.kind[idx]) == RAW:
            obj = json.loads(self.raw[idx])
            assert isinstance(obj, dict)
            return obj
        op = self.op(idx)
        assert op is not None
        return op.to_json()

    def iter_jsonl(self) -> Iterator[str]:
        """The trace as JSON Lines text, one line per operation (no newline)."""
        for idx in range(len(self)):
            if int(self.kind[idx]) == RAW:
                yield self.raw[idx]
            else:
                yield json.dumps(self.json_obj(idx), separators=(",", ":"))

    def validate(self, where: str = "trace") -> None:
        """Check shapes, dtypes and indices; TraceFormatError naming the array otherwise."""
        n = len(self)
        for name, dtype in COLUMNS.items():
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.ndim != 1:
                raise TraceFormatError(f"{where}: array {name!r} is not one-dimensional")
            if arr.dtype != np.dtype(dtype):
                raise TraceFormatError(f"{where}: array {name!r} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
            if arr.shape[0] != n:
                raise TraceFormatError(f"{where}: array {name!r} has {arr.shape[0]} entries, 'kind' has {n}")
        if n and not self._rows_ok():
            self._report_bad_row(where)
        raw_at = np.flatnonzero(self.kind == RAW)
        if set(raw_at.tolist()) != set(self.raw):
            raise TraceFormatError(f"{where}: raw_index does not list exactly the RAW operations")
        for name in list(self.folio_names) + list(self.mm_names):
            if not name:
                raise TraceFormatError(f"{where}: a name table holds an empty name")
        for label, entries in (("folio_names", self.folio_names), ("mm_names", self.mm_names)):
            seen: dict[str, int] = {}
            for idx, entry in enumerate(entries):
                if entry in seen:
                    raise TraceFormatError(f"{where}: {label} holds {entry!r} twice (entries {seen[entry]} and "
                                           f"{idx}): two different objects cannot share a name")
                seen[entry] = idx

    def _rows_ok(self) -> bool:
        """Whether every operation passes the per-row checks (in cache-sized chunks, no messages).

        Each check is a compare of whole columns (codes ordered as ``_NO_FOLIO`` and ``_WITH_LEVEL`` say);
        the nr/page and RAW-row steps run only for the chunks that need them.
        """
        n_folios, n_mms = len(self.folio_names), len(self.mm_names)
        for start in range(0, len(self), _CHUNK):
            end = start + _CHUNK
            kind = self.kind[start:end]
            top = int(kind.max())
            if top > RAW:
                return False
            folio, mm, level = self.folio[start:end], self.mm[start:end], self.level[start:end]
            if int(folio.min()) < -1 or int(folio.max()) >= n_folios or int(mm.min()) < -1 or int(mm.max()) >= n_mms:
                return False
            with_level = kind >= MAP_NEW_ANON
            wrong = (folio >= 0) != (kind >= FOLIO_NEW)
            wrong |= (mm >= 0) != ((kind < FOLIO_NEW) | with_level)
            wrong |= (level <= LEVEL_PMD) != with_level
            nr, page = self.nr[start:end], self.page[start:end]
            if int(nr.min()) < 1 or int(page.min()) < 0:
                wrong |= (nr < 1) | (page < 0)
            if top == RAW:
                wrong &= kind != RAW
            if wrong.any():
                return False
        return True

    def _report_bad_row(self, where: str) -> None:
        """Raise TraceFormatError for the first failing per-row check (run only when one fails)."""
        if int(self.kind.max()) > RAW:
            bad = int(np.argmax(self.kind > RAW))
            raise TraceFormatError(f"{where}: operation {bad}: kind code {int(self.kind[bad])} is unknown")
        for name, table in (("folio", self.folio_names), ("mm", self.mm_names)):
            col = getattr(self, name)
            bad_mask = (col < -1) | (col >= len(table))
            if bad_mask.any():
                bad = int(np.argmax(bad_mask))
                raise TraceFormatError(
                    f"{where}: operation {bad}: {name} index {int(col[bad])} is outside the "
                    f"{len(table)}-entry {name}_names table")
        cooked = self.kind != RAW
        checks = (
            ("folio", ~np.isin(self.kind, _NO_FOLIO), self.folio >= 0),
            ("mm", np.isin(self.kind, _WITH_MM), self.mm >= 0),
            ("level", np.isin(self.kind, _WITH_LEVEL),
             (self.level == LEVEL_PTE) | (self.level == LEVEL_PMD)),
        )
        for name, needs, has in checks:
            wrong = cooked & (has != needs)
            if wrong.any():
                bad = int(np.argmax(wrong))
                raise TraceFormatError(
                    f"{where}: operation {bad} ({KINDS[int(self.kind[bad])]}): "
                    f"{name} column is inconsistent with the operation")
        bad_nr = cooked & (self.nr < 1)
        if bad_nr.any():
            bad = int(np.argmax(bad_nr))
            raise TraceFormatError(f"{where}: operation {bad}: nr {int(self.nr[bad])} is below 1")
        bad_page = cooked & (self.page < 0)
        if bad_page.any():
            bad = int(np.argmax(bad_page))
            raise TraceFormatError(f"{where}: operation {bad}: page {int(self.page[bad])} is negative")
        raise AssertionError("a per-row check failed in chunks but not on the whole trace")  # pragma: no cover


class _Builder:
    """Append operations column by column (chunked Python lists -> numpy arrays)."""

    def __init__(self) -> None:
        self.cols: dict[str, list[int]] = {name: [] for name in COLUMNS}
        self.folio_index: dict[str, int] = {}
        self.mm_index: dict[str, int] = {}
        self.raw: dict[int, str] = {}
        self.n = 0

    def _name(self, table: dict[str, int], name: str | None) -> int:
        if name is None:
            return -1
        idx = table.get(name)
        if idx is None:
            idx = table[name] = len(table)
        return idx

    def add_raw(self, text: str, line: int) -> None:
        self.raw[self.n] = text
        self._row(RAW, -1, -1, LEVEL_NONE, 0, 1, 0, line)

    def add_op(self, op: Op, line: int, text: str | None = None) -> None:
        order = op.order if op.order is not None else 0
        fits = (_I32_MIN <= op.page <= _I32_MAX and _I32_MIN <= op.nr <= _I32_MAX and -128 <= order <= 127)
        if not fits:
            self.add_raw(text if text is not None else json.dumps(op.to_json(), separators=(",", ":")), line)
            return
        level = LEVEL_NONE if op.level is None else (LEVEL_PMD if op.level is PMD else LEVEL_PTE)
        self._row(KIND_CODE[op.op], self._name(self.folio_index, op.folio), self._name(self.mm_index, op.mm),
                  level, op.page, op.nr, order, line)

    def _row(self, kind: int, folio: int, mm: int, level: int, page: int, nr: int, order: int, line: int) -> None:
        c = self.cols
        c["kind"].append(kind)
        c["folio"].append(folio)
        c["mm"].append(mm)
        c["level"].append(level)
        c["page"].append(page)
        c["nr"].append(nr)
        c["order"].append(order)
        c["line"].append(min(line, _I32_MAX))
        self.n += 1

    def build(self, bad_line: BadLine | None = None) -> ColumnarTrace:
        arrays = {name: np.array(values, dtype=COLUMNS[name]) for name, values in self.cols.items()}
        return ColumnarTrace(
            **arrays,
            folio_names=list(self.folio_index),
            mm_names=list(self.mm_index),
            raw=dict(self.raw),
            bad_line=bad_line,
        )


def from_jsonl_lines(lines: Iterable[str | bytes]) -> ColumnarTrace:
    """Parse JSON Lines into columns, exactly as ``foliosim replay`` reads them.

    Lines the parser rejects become ``RAW`` operations (replay rejects them in
    turn); the first line that is not a JSON object ends the trace and is
    recorded in ``bad_line``.
    """
    builder = _Builder()
    for lineno, text, decode_error in iter_trace_lines(lines):
        if decode_error is not None or text is None:
            return builder.build(BadLine(lineno, decode_error or f"line {lineno}: unreadable"))
        try:
            obj = decode_line(lineno, text)
        except ValueError as exc:
            return builder.build(BadLine(lineno, str(exc)))
        try:
            op = parse_op(obj)
        except Rejected:
            builder.add_raw(text, lineno)
            continue
        builder.add_op(op, lineno, text)
    return builder.build()


def from_ops(ops: Iterable[Op]) -> ColumnarTrace:
    """Columns for already-parsed operations (line numbers count from 1)."""
    builder = _Builder()
    for idx, op in enumerate(ops, 1):
        builder.add_op(op, idx)
    return builder.build()


def from_generated(setup: list[Op], ops: Iterable[tuple[int, int, int, int, int, int]],
                   mm_names: list[str], folio_names: list[str], chunk: int = 1 << 16,
                   total: int | None = None, progress: Callable[[int], None] | None = None) -> ColumnarTrace:
    """Columns for a generated trace: ``setup`` ops, then ``(kind, folio, mm, level, page, nr)`` tuples.

    The tuples use :mod:`foliosim.trace.generate`'s codes (map 0, dup 1, unmap 2;
    pte 0, pmd 1) and index ``folio_names`` / ``mm_names``, which must be the
    names the setup ops create, in creation order. With ``total`` (the number of
    tuples) the rows go straight into one preallocated array; ``progress`` is
    called with the tuples consumed so far after every ``chunk``.
    """
    head = from_ops(setup)
    if head.folio_names != folio_names[:len(head.folio_names)] or head.mm_names != mm_names[:len(head.mm_names)]:
        raise ValueError("setup ops must create the given names in order")
    to_kind = np.array([MAP, DUP, UNMAP], dtype=np.uint8)
    body = np.empty((total or 0, 6), dtype=np.int32)
    parts: list[npt.NDArray[np.int32]] = []
    filled = 0
    buf: list[tuple[int, int, int, int, int, int]] = []

    def flush() -> None:
        nonlocal filled, buf
        rows = np.array(buf, dtype=np.int32).reshape(-1, 6)
        if filled + rows.shape[0] <= body.shape[0]:
            body[filled:filled + rows.shape[0]] = rows
        else:
            parts.append(rows)
        filled += rows.shape[0]
        buf = []
        if progress is not None:
            progress(filled)

    for item in ops:
        buf.append(item)
        if len(buf) >= chunk:
            flush()
    if buf:
        flush()
    if parts or filled < body.shape[0]:
        body = np.concatenate([body[:min(filled, body.shape[0])], *parts])
    n_head = len(head)
    n = n_head + body.shape[0]
    kind = np.concatenate([head.kind, to_kind[body[:, 0]]])
    line = np.arange(1, n + 1, dtype=np.int32)
    return ColumnarTrace(
        kind=kind,
        folio=np.concatenate([head.folio, body[:, 1]]),
        mm=np.concatenate([head.mm, body[:, 2]]),
        level=np.concatenate([head.level, body[:, 3].astype(np.uint8)]),
        page=np.concatenate([head.page, body[:, 4]]),
        nr=np.concatenate([head.nr, body[:, 5]]),
        order=np.concatenate([head.order, np.zeros(body.shape[0], dtype=np.int8)]),
        line=line,
        folio_names=list(folio_names),
        mm_names=list(mm_names),
    )


def generated_columnar(spec: TraceSpec, progress: Callable[[int], None] | None = None,
                       engine: str = "auto") -> ColumnarTrace:
    """The trace :mod:`foliosim.trace.generate` produces for ``spec``, setup included, as columns.

    The generated rows are written straight into preallocated columns by
    :func:`foliosim.trace.generate.fill_columns` (``engine`` as there);
    ``progress`` is called with the number of operations generated so far.
    """
    head = from_ops(setup_ops(spec))
    mm_names = [mm_name(i) for i in range(spec.n_mms)]
    folio_names = [folio_name(i) for i in range(spec.n_folios)]
    if head.folio_names != folio_names or head.mm_names != mm_names:
        raise ValueError("setup ops must create the spec's names in order")
    n_head = len(head)
    n = n_head + spec.n_ops
    cols: dict[str, Any] = {name: np.empty(n, dtype=dtype) for name, dtype in COLUMNS.items()}
    for name in COLUMNS:
        cols[name][:n_head] = getattr(head, name)
    fill_columns(spec, cols["kind"], cols["folio"], cols["mm"], cols["level"], cols["page"], cols["nr"],
                 base=n_head, kind_codes=(MAP, DUP, UNMAP), progress=progress, engine=engine)
    cols["order"][n_head:] = 0
    line = cols["line"]
    for start in range(0, n, 1 << 20):  # line numbers from 1, without a trace-sized temporary
        end = min(n, start + (1 << 20))
        line[start:end] = np.arange(start + 1, end + 1, dtype=np.int32)
    return ColumnarTrace(**cols, folio_names=folio_names, mm_names=mm_names)


def write_file(trace: ColumnarTrace, path: str, fmt: str) -> None:
    """Write ``trace`` to ``path`` as ``"npz"`` or ``"jsonl"`` (JSON Lines), whole or not at all."""
    if fmt == "npz":
        write_npz(trace, path)
        return
    from foliosim.outfile import replaced_on_success

    with replaced_on_success(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for line in trace.iter_jsonl():
            out.write(line + "\n")


def write_npz(trace: ColumnarTrace, path: str) -> None:
    """Write ``trace`` as an uncompressed ``.npz``, whole or not at all (refuses a trace cut short by a bad line)."""
    if trace.bad_line is not None:
        raise TraceFormatError(f"cannot convert: {trace.bad_line.error}")
    raw_index = np.array(sorted(trace.raw), dtype=np.int64)
    arrays: dict[str, Any] = {name: getattr(trace, name) for name in COLUMNS}
    arrays["format"] = np.array([FORMAT_TAG])
    arrays["folio_names"] = np.array(trace.folio_names, dtype=str) if trace.folio_names else np.array([], dtype="<U1")
    arrays["mm_names"] = np.array(trace.mm_names, dtype=str) if trace.mm_names else np.array([], dtype="<U1")
    arrays["raw_index"] = raw_index
    texts = [trace.raw[int(i)] for i in raw_index]
    arrays["raw_text"] = np.array(texts, dtype=str) if texts else np.array([], dtype="<U1")
    from foliosim.outfile import replaced_on_success

    with replaced_on_success(path) as tmp, open(tmp, "wb") as handle:  # whole or not at all
        np.savez(handle, **arrays)


def _mapped_columns(path: str) -> dict[str, Any] | None:
    """The operation columns of an uncompressed ``.npz`` as views of a private (copy-on-write) file mapping.

    No copy and no read up front: pages come in as the replay touches them.
    None when a member is compressed or not a plain one-dimensional array
    (the caller then reads the file the ordinary way, which also words any error).
    """
    import io
    import mmap
    import struct

    from numpy.lib import format as npy

    try:
        with zipfile.ZipFile(path) as zf:
            infos = {info.filename: info for info in zf.infolist()}
        with open(path, "rb") as handle:
            mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        out: dict[str, Any] = {}
        for name in COLUMNS:
            info = infos.get(name + ".npy")
            if info is None or info.compress_type != zipfile.ZIP_STORED:
                return None
            at = info.header_offset
            if mapping[at:at + 4] != b"PK\x03\x04":
                return None
            name_len, extra_len = struct.unpack("<HH", mapping[at + 26:at + 30])
            start = at + 30 + name_len + extra_len
            head = io.BytesIO(mapping[start:start + min(info.file_size, 1 << 16)])
            version = npy.read_magic(head)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(head)
            elif version == (2, 0):
                shape, fortran, dtype = npy.read_array_header_2_0(head)
            else:
                return None
            if fortran or dtype.hasobject or len(shape) != 1:
                return None
            offset = start + head.tell()
            if head.tell() + shape[0] * dtype.itemsize > info.file_size:
                return None
            out[name] = np.frombuffer(mapping, dtype=dtype, count=shape[0], offset=offset)
        return out
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, struct.error):
        return None


def read_npz(source: str | IO[bytes], name: str | None = None) -> ColumnarTrace:
    """Read a file written by :func:`write_npz` (a path, or a seekable binary file called ``name``);
    TraceFormatError naming what is wrong."""
    path = name if name is not None else str(source)
    try:
        with np.load(source, allow_pickle=False) as data:
            names = set(data.files)
            needed = set(COLUMNS) | {"format", "folio_names", "mm_names", "raw_index", "raw_text"}
            missing = sorted(needed - names)
            if missing:
                raise TraceFormatError(f"{path}: not a foliosim columnar trace (missing arrays: {', '.join(missing)})")
            tag = data["format"]
            if tag.shape != (1,) or str(tag[0]) != FORMAT_TAG:
                raise TraceFormatError(f"{path}: format tag {tag.tolist()!r} is not {FORMAT_TAG!r}")
            mapped = _mapped_columns(source) if isinstance(source, str) else None
            arrays = mapped if mapped is not None else {name: data[name] for name in COLUMNS}
            folio_names = [str(x) for x in data["folio_names"].tolist()]
            mm_names = [str(x) for x in data["mm_names"].tolist()]
            raw_index = data["raw_index"]
            raw_text = data["raw_text"]
    except TraceFormatError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise TraceFormatError(f"{path}: cannot read as a columnar trace ({exc})") from None
    if raw_index.ndim != 1 or raw_text.shape != raw_index.shape:
        raise TraceFormatError(f"{path}: raw_index and raw_text disagree in length")
    raw = {int(i): str(t) for i, t in zip(raw_index.tolist(), raw_text.tolist(), strict=True)}
    trace = ColumnarTrace(**arrays, folio_names=folio_names, mm_names=mm_names, raw=raw)
    trace.validate(path)
    return trace
