"""The step model behind ``foliosim view``: a run as a list of frames, and their compact encoding.

Pure: takes trace lines (or frames built by another driver, such as the
process simulator) and returns data; :mod:`foliosim.report.view_html` puts
the encoded document into the page and the CLI writes it. The document's
schema is described in docs/viewer.md; :data:`SCHEMA` names its version.

A frame is one step: the operation, the state of every folio the step touched
(exactly the trace contract's :func:`~foliosim.trace.format.folio_record`), the
owner-tracking event with its one-line explanation and the verdict with its
explanation (both from :mod:`foliosim.explain`), whether the verdict is a false
"maybe mapped shared", and, for process-level runs, the tasks, their page
tables and the copy-on-write decisions of the step.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from foliosim.errors import Rejected
from foliosim.explain import explain_event, explain_verdict
from foliosim.folio import folio_test_large_mapcount_locked
from foliosim.kconfig import KernelConfig
from foliosim.owner import OwnerEvent
from foliosim.system import FolioHandle, RmapSystem
from foliosim.trace.examples import Example
from foliosim.trace.format import folio_record, parse_op
from foliosim.trace.replay import apply_op, decode_line, iter_trace_lines
from foliosim.truth import FolioTruth

#: Name and version of the encoded document (docs/viewer.md).
SCHEMA = "foliosim-view/1"

# Bits of a state's ``flags`` field (docs/viewer.md).
FLAG_MAYBE_SHARED = 1  # folio_maybe_mapped_shared() answered true
FLAG_FALSE_SHARED = 2  # ... although at most one MM really maps the folio
FLAG_UNSOUND = 4  # answered false although two or more MMs map it (never expected)
FLAG_SHARED_BIT = 8  # FOLIO_MM_IDS_SHARED_BIT is set (large folios)
FLAG_FREED = 16  # the step freed the folio: the state is the one it was freed in
FLAG_LOCKED = 32  # the bit spinlock is held (never after a completed rmap call)


class ViewInputError(ValueError):
    """Input the viewer cannot turn into frames (a line that is not a JSON object, ...)."""


# -- frames ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FolioView:
    """One folio as it is after a step, with the explanations the viewer shows."""

    record: dict[str, Any]  # folio_record(): the trace contract's fields
    slot_mms: tuple[str | None, str | None]  # names of the MMs whose ids sit in the slots
    owner: str | None  # the OwnerEvent of this step's update (lower case), if the slots were updated
    why: str  # explain_event(): why the slots look as they do; "" if the step did not update them
    verdict: str  # explain_verdict(): the verdict, why, and how it compares with the truth
    false_shared: bool  # reported "maybe mapped shared", really mapped by at most one MM
    unsound: bool  # reported exclusive, really mapped by two or more MMs (would be a model bug)
    locked: bool = False
    freed: bool = False


@dataclass(frozen=True, slots=True)
class PageRun:
    """Consecutive virtual pages of one VMA mapping consecutive pages of one folio (or nothing)."""

    vpn: int  # first virtual page number
    nr: int  # number of virtual pages
    folio: str | None  # None: not present (no PTE/PMD)
    page: int = 0  # folio page mapped at ``vpn``
    write: bool = False
    pmd: bool = False  # mapped by a PMD rather than PTEs


@dataclass(frozen=True, slots=True)
class VmaView:
    """One VMA of an MM and the page-table row covering it."""

    label: str  # e.g. "anon private rw" (what the simulator's Vma.describe() says)
    start: int  # first virtual page number
    pages: int
    runs: tuple[PageRun, ...]


@dataclass(frozen=True, slots=True)
class MMView:
    """An mm_struct: its name, MM id, reference counts and page tables."""

    name: str
    mm_id: int
    users: int
    count: int
    vmas: tuple[VmaView, ...]


@dataclass(frozen=True, slots=True)
class TaskView:
    name: str
    pid: int
    mm: str


@dataclass(frozen=True, slots=True)
class ProcessView:
    """Every task and MM after a step (the optional process-level part of a frame)."""

    tasks: tuple[TaskView, ...]
    mms: tuple[MMView, ...]


@dataclass(frozen=True, slots=True)
class CowView:
    """A copy-on-write (or unshare) fault decision and the rule that decided it.

    Mirrors the simulator's CowDecision (mm/memory.c do_wp_page(),
    wp_can_reuse_anon_folio(); mm/huge_memory.c do_huge_pmd_wp_page()).
    """

    task: str
    mm: str
    vpn: int
    folio: str
    page: int
    level: str  # "pte" or "pmd"
    rule: str
    outcome: str  # "reuse", "copy", "split", "new-thp", "writable"
    unshare: bool
    mapcount: int
    refcount: int
    shared_bit: bool | None
    new_folio: str | None = None


@dataclass(frozen=True, slots=True)
class Frame:
    """One step of the run as the viewer shows it."""

    step: int
    kind: str  # the trace op ("map", "mm_new", ...) or the scenario verb
    op: str  # the operation in words
    line: int | None = None  # input line
    note: str = ""  # narration (the commit's words, a trace line's "comment")
    error: str | None = None  # the step was rejected: why (nothing changed)
    folios: tuple[FolioView, ...] = ()
    process: ProcessView | None = None
    cow: tuple[CowView, ...] = ()
    failed: str | None = None  # a scenario's failed expectation or isolation-oracle violation at this step


@dataclass(slots=True)
class ViewModel:
    """A whole run: its configuration and its frames."""

    config: KernelConfig
    title: str
    source: str = ""
    frames: list[Frame] = field(default_factory=list)

    @property
    def rejected(self) -> list[Frame]:
        return [f for f in self.frames if f.error is not None]

    @property
    def failed(self) -> list[Frame]:
        return [f for f in self.frames if f.failed is not None]


# -- from the model to frames ---------------------------------------------------------------


def mm_names(system: RmapSystem) -> dict[int, str]:
    """MM id -> name for the MMs that exist now."""
    return {mm.mm_id: mm.name for mm in system.mms.values()}


def folio_view(handle: FolioHandle, names: dict[int, str], event: OwnerEvent | None = None,
               mm: str | None = None, *, updated: bool = False, freed: bool = False) -> FolioView:
    """The viewer's picture of one folio; ``updated``: this step ran an owner-tracking update for ``mm``."""
    folio = handle.folio
    rec = folio_record(handle)
    slot_mms: tuple[str | None, str | None] = (None, None)
    if rec["mm_id"] is not None:
        slot_mms = (names.get(rec["mm_id"][0]) if rec["mm_id"][0] else None,
                    names.get(rec["mm_id"][1]) if rec["mm_id"][1] else None)
    why = explain_event(event, mm, folio, names) if updated and mm is not None else ""
    real = len(rec["mapped_mms"])
    shared = bool(rec["maybe_mapped_shared"])
    return FolioView(
        record=rec,
        slot_mms=slot_mms,
        owner=event.name.lower() if event is not None else None,
        why=why,
        verdict=explain_verdict(folio, handle.truth),
        false_shared=shared and real <= 1,
        unsound=not shared and real > 1,
        locked=folio.order > 0 and folio_test_large_mapcount_locked(folio),
        freed=freed,
    )


def _raw_op_text(obj: dict[str, Any]) -> str:
    kind = obj.get("op")
    rest = " ".join(f"{k}={v}" for k, v in obj.items() if k != "op" and k != "comment" and not k.startswith("_"))
    return f"{kind if isinstance(kind, str) else '?'} {rest}".strip()


def trace_frames(lines: Iterable[str | bytes], config: KernelConfig, title: str = "", source: str = "",
                 notes: Sequence[str] | None = None) -> ViewModel:
    """Replay an rmap trace into frames, one per operation.

    A rejected operation becomes a frame with ``error`` set (the state is
    unchanged, as in ``foliosim replay --keep-going``). A line that is not a
    JSON object raises :class:`ViewInputError` naming the line. ``notes[i]``
    (or a line's ``comment`` field) narrates step ``i``.
    """
    system = RmapSystem(config)
    model = ViewModel(config, title or "rmap trace", source)
    for step, (lineno, text, decode_error) in enumerate(iter_trace_lines(lines)):
        if decode_error is not None or text is None:
            raise ViewInputError(decode_error or f"line {lineno}: unreadable")
        obj = decode_line(lineno, text)  # ValueError names the line
        note = notes[step] if notes is not None and step < len(notes) else ""
        comment = obj.get("comment")
        if not note and isinstance(comment, str):
            note = comment
        model.frames.append(_trace_frame(system, obj, step, lineno, note))
    return model


def _trace_frame(system: RmapSystem, obj: dict[str, Any], step: int, lineno: int, note: str) -> Frame:
    try:
        op = parse_op(obj)
    except Rejected as exc:
        kind = obj.get("op")
        return Frame(step, kind if isinstance(kind, str) else "?", _raw_op_text(obj), lineno, note, exc.reason)
    freed_handle = system.folios.get(op.folio) if op.op == "folio_free" and op.folio else None
    names_before = mm_names(system)
    try:
        rec = apply_op(system, op, step)
    except Rejected as exc:
        return Frame(step, op.op, op.describe(), lineno, note, exc.reason)
    text = op.describe()
    if op.op in ("mm_new", "mm_free"):
        return Frame(step, op.op, f"{text} (MM id {rec['mm_id']})", lineno, note)
    assert op.folio is not None
    if op.op == "folio_free":
        assert freed_handle is not None
        gone = FolioHandle(op.folio, freed_handle.folio, FolioTruth(freed_handle.folio.nr_pages))
        return Frame(step, op.op, text, lineno, note, folios=(folio_view(gone, names_before, freed=True),))
    handle = system.folios[op.folio]
    owner = rec.get("owner")
    event = OwnerEvent[owner.upper()] if isinstance(owner, str) else None
    # Small folios have no slots: explain_event(None, ...) says so for every map/unmap.
    view = folio_view(handle, mm_names(system), event, op.mm, updated=op.mm is not None)
    return Frame(step, op.op, text, lineno, note, folios=(view,))


# -- the compact document ----------------------------------------------------------------------


class _Strings:
    """A string table: each distinct string stored once, referenced by index (-1: none)."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def __call__(self, text: str | None) -> int:
        if text is None:
            return -1
        idx = self.index.get(text)
        if idx is None:
            idx = self.index[text] = len(self.items)
            self.items.append(text)
        return idx


def _trim(row: list[Any]) -> list[Any]:
    """Drop trailing fields that hold their default (-1 or []), so that common rows stay short."""
    while row and (row[-1] == -1 or row[-1] == []) and not isinstance(row[-1], bool):
        row.pop()
    return row


#: Per-page mapcounts of folios with at most this many pages travel as one base-36 digit per page.
DIGITS_MAX_PAGES = 64


def _page_counts(rle: list[list[int]] | None) -> str | list[list[int]] | None:
    """Per-page mapcounts: a string of base-36 digits (small folios, counts < 36) or the RLE pairs."""
    if rle is None:
        return None
    if sum(run for _, run in rle) <= DIGITS_MAX_PAGES and all(0 <= value < 36 for value, _ in rle):
        return "".join(_DIGITS[value] * run for value, run in rle)
    return rle


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _word_hex(word: int | None, word_bits: int) -> str | None:
    # JSON numbers lose bits above 2**53 in JavaScript: the word travels as hex text.
    return None if word is None else format(word, f"0{word_bits // 4}x")


def encode(model: ViewModel, generator: str = "") -> dict[str, Any]:
    """The document the page embeds (schema in docs/viewer.md): interned strings and folio states."""
    cfg = model.config
    strings = _Strings()
    folio_index: dict[str, int] = {}
    states: list[list[Any]] = []
    state_index: dict[str, int] = {}
    snapshots: list[list[Any]] = []
    snapshot_index: dict[str, int] = {}
    cows: list[list[Any]] = []
    steps: list[list[Any]] = []

    def folio_idx(name: str) -> int:
        idx = folio_index.get(name)
        if idx is None:
            idx = folio_index[name] = len(folio_index)
        return idx

    def state_idx(view: FolioView) -> int:
        rec = view.record
        flags = ((FLAG_MAYBE_SHARED if rec["maybe_mapped_shared"] else 0)
                 | (FLAG_FALSE_SHARED if view.false_shared else 0)
                 | (FLAG_UNSOUND if view.unsound else 0)
                 | (FLAG_SHARED_BIT if rec["shared_bit"] else 0)
                 | (FLAG_FREED if view.freed else 0)
                 | (FLAG_LOCKED if view.locked else 0))
        entirely = rec["entirely_mapped"]
        row = [
            rec["order"], rec["mapcount"], rec["entire_mapcount"], rec["nr_pages_mapped"],
            None if entirely is None else int(entirely), _page_counts(rec["pte_mapcounts"]),
            rec["mm_id"], rec["mm_id_mapcount"], _word_hex(rec["mm_ids_word"], cfg.word_bits),
            [strings(view.slot_mms[0]), strings(view.slot_mms[1])],
            [strings(str(mm)) for mm in rec["mapped_mms"]], flags, strings(view.verdict),
        ]
        key = json.dumps(row, separators=(",", ":"))
        idx = state_index.get(key)
        if idx is None:
            idx = state_index[key] = len(states)
            states.append(row)
        return idx

    def snapshot_idx(proc: ProcessView) -> int:
        row = [
            [[strings(t.name), t.pid, strings(t.mm)] for t in proc.tasks],
            [[strings(mm.name), mm.mm_id, mm.users, mm.count,
              [[strings(v.label), v.start, v.pages,
                [[r.vpn, r.nr, -1 if r.folio is None else folio_idx(r.folio), r.page, int(r.write), int(r.pmd)]
                 for r in v.runs]] for v in mm.vmas]]
             for mm in proc.mms],
        ]
        key = json.dumps(row, separators=(",", ":"))
        idx = snapshot_index.get(key)
        if idx is None:
            idx = snapshot_index[key] = len(snapshots)
            snapshots.append(row)
        return idx

    def cow_idx(cow: CowView) -> int:
        cows.append([strings(cow.task), strings(cow.mm), cow.vpn, folio_idx(cow.folio), cow.page,
                     strings(cow.level), strings(cow.rule), strings(cow.outcome), int(cow.unshare),
                     cow.mapcount, cow.refcount, None if cow.shared_bit is None else int(cow.shared_bit),
                     -1 if cow.new_folio is None else folio_idx(cow.new_folio)])
        return len(cows) - 1

    last_proc = -1
    last_line = 0
    for frame in model.frames:
        touches = [_trim([folio_idx(v.record["folio"]), state_idx(v), strings(v.owner), strings(v.why or None)])
                   for v in frame.folios]
        proc = -1
        if frame.process is not None:
            proc = snapshot_idx(frame.process)
            if proc == last_proc:
                proc = -1  # unchanged: the page keeps showing the last snapshot
            else:
                last_proc = proc
        line = frame.line if frame.line is not None else 0
        row = [strings(frame.op), touches, -1 if line == last_line + 1 else line,
               strings(frame.note or None), strings(frame.error), proc, [cow_idx(c) for c in frame.cow],
               strings(frame.failed)]
        last_line = line
        steps.append(_trim(row))
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "generator": generator,
        "title": model.title,
        "source": model.source,
        "config": {
            "word_bits": cfg.word_bits,
            "no_page_mapcount": cfg.no_page_mapcount,
            "mm_id_bits": cfg.mm_id_bits,
            "slot_shift": cfg.slot_shift,
            "lock_bitnum": cfg.lock_bitnum,
            "shared_bitnum": cfg.shared_bitnum,
            "describe": cfg.describe(),
        },
        "folios": list(folio_index),
        "strings": strings.items,
        "states": states,
        "steps": steps,
    }
    if snapshots or cows:
        doc["process"] = {"snapshots": snapshots, "cows": cows}
    return doc


def example_frames(example: Example, config: KernelConfig) -> ViewModel:
    """One of the commit message's examples, narrated in the commit's words."""
    lines = [json.dumps(op) for op in example.trace()]
    notes = [step.narration for step in example.steps]
    shipped = f"examples/commit-{example.name[:-1]}-{example.name[-1]}.jsonl"
    source = f"foliosim.trace.examples ({example.name}); the same trace as {shipped}"
    return trace_frames(lines, config, example.title, source, notes)


# -- process-level input ------------------------------------------------------------------------


def page_runs(start: int, end: int, entries: Iterable[tuple[int, int, str, int, bool, bool]]) -> tuple[PageRun, ...]:
    """One VMA's page-table row as runs: ``entries`` are ``(vpn, nr, folio, page, write, pmd)`` mappings.

    Adjacent mappings of consecutive pages of one folio with the same permission
    and level merge into one run; holes become "not present" runs.
    """
    runs: list[PageRun] = []
    pos = start
    for vpn, nr, folio, page, write, pmd in sorted(e for e in entries if e[0] < end and e[0] + e[1] > start):
        if vpn < pos:  # overlapping input: keep the first mapping of each page
            continue
        if vpn > pos:
            runs.append(PageRun(pos, vpn - pos, None))
        last = runs[-1] if runs else None
        if (last is not None and last.folio == folio and last.vpn + last.nr == vpn
                and last.page + last.nr == page and last.write == write and last.pmd == pmd):
            runs[-1] = PageRun(last.vpn, last.nr + nr, folio, last.page, write, pmd)
        else:
            runs.append(PageRun(vpn, nr, folio, page, write, pmd))
        pos = vpn + nr
    if pos < end:
        runs.append(PageRun(pos, end - pos, None))
    return tuple(runs)


def snapshot_process_view(snapshot: Mapping[str, Any], pmd_order: int,
                          cache: dict[str, tuple[Any, tuple[VmaView, ...]]] | None = None) -> ProcessView:
    """The process-level part of a frame from a plain snapshot of tasks and MMs.

    ``snapshot`` has the shape of the process simulator's ``Machine.snapshot()``:
    ``tasks``: name -> (pid, mm name); ``mms``: name -> {mm_id, users, count,
    vmas: ((start vpn, end vpn, label), ...), ptes: ((vpn, folio, page, write), ...),
    pmds: ((vpn >> pmd_order, folio, write), ...)}. Only plain data is read, so
    this layer does not import the simulator. ``cache`` (one dict kept across
    the snapshots of a run) reuses an MM's rows while its page tables are unchanged.
    """
    tasks = tuple(TaskView(name, int(pid), str(mm)) for name, (pid, mm) in
                  sorted(snapshot["tasks"].items(), key=lambda kv: kv[1][0]))
    mms = []
    span = 1 << pmd_order
    for name, mm in snapshot["mms"].items():
        key = (mm["vmas"], mm["ptes"], mm["pmds"])
        hit = cache.get(name) if cache is not None else None
        if hit is not None and hit[0] == key:
            vmas = hit[1]
        else:
            entries = [(vpn, 1, folio, page, bool(write), False) for vpn, folio, page, write in mm["ptes"]]
            entries += [(idx << pmd_order, span, folio, 0, bool(write), True) for idx, folio, write in mm["pmds"]]
            vmas = tuple(VmaView(str(label), start, end - start, page_runs(start, end, entries))
                         for start, end, label in mm["vmas"])
            if cache is not None:
                cache[name] = (key, vmas)
        mms.append(MMView(name, int(mm["mm_id"]), int(mm["users"]), int(mm["count"]), vmas))
    return ProcessView(tasks, tuple(mms))
