"""A scenario run as viewer frames: one frame per scenario line, with the process level.

Runs the scenario with :func:`foliosim.vm.scenario.run` and watches the
machine's events: every rmap call names the folio it touched (whose state after
the step, explained by its last owner-tracking update, becomes a card), every
copy-on-write event carries the simulator's decision and the rule that took it,
and after each line the machine's snapshot gives the tasks, MMs and page
tables. The comments of the scenario file narrate the steps. Pure: no I/O.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from typing import Any

from foliosim.kconfig import KernelConfig
from foliosim.owner import OwnerEvent
from foliosim.report.view import (
    CowView,
    FolioView,
    Frame,
    ViewModel,
    VmaView,
    folio_view,
    mm_names,
    snapshot_process_view,
)
from foliosim.system import FolioHandle
from foliosim.vm.events import CowDecision, Event
from foliosim.vm.machine import Machine
from foliosim.vm.memory import PAGE_SHIFT
from foliosim.vm.scenario import RunResult, StepRecord, run


@dataclass(slots=True)
class _Touch:
    """The last rmap call of the current step on one folio."""

    owner: OwnerEvent | None
    mm: str | None
    names: dict[int, str]  # MM id -> name when the call was made
    freed: bool = False


@dataclass(slots=True)
class _Collector:
    """Machine observer and per-line callback that build the frames."""

    model: ViewModel
    notes: dict[int, str]
    machine: Machine | None = None
    handles: dict[str, FolioHandle] = field(default_factory=dict)  # every folio seen, freed ones included
    touched: dict[str, _Touch] = field(default_factory=dict)
    cows: list[CowDecision] = field(default_factory=list)
    rows: dict[str, tuple[Any, tuple[VmaView, ...]]] = field(default_factory=dict)  # page-table rows per MM

    def start(self, machine: Machine) -> None:
        self.machine = machine
        machine.observers.append(self.observe)

    def observe(self, event: Event) -> None:
        if event.cow is not None:
            self.cows.append(event.cow)
        op = event.data.get("op") if event.kind == "rmap" else None
        if op is None or op.folio is None:
            return
        assert self.machine is not None
        rmap = self.machine.rmap
        if op.op == "folio_new":
            self.handles[op.folio] = rmap.folios[op.folio]
        owner = event.data.get("owner")
        # The folio's state at the end of the step is the one after its last rmap call: only
        # rmap calls change what a card shows, so the view is computed once, in step().
        self.touched[op.folio] = _Touch(OwnerEvent[owner.upper()] if owner else None, op.mm, mm_names(rmap),
                                        freed=op.op == "folio_free")

    def step(self, rec: StepRecord, machine: Machine) -> None:
        views: dict[str, FolioView] = {}
        for name, touch in self.touched.items():
            handle = self.handles[name] if touch.freed else machine.rmap.folios[name]
            views[name] = folio_view(handle, touch.names, touch.owner, touch.mm, updated=touch.mm is not None,
                                     freed=touch.freed)
        for cow in self.cows:  # a reuse makes no rmap call: still show the folio it decided on
            if cow.folio not in views and cow.folio in machine.rmap.folios:
                views[cow.folio] = folio_view(machine.rmap.folios[cow.folio], mm_names(machine.rmap))
        cmd = rec.command
        self.model.frames.append(Frame(
            step=len(self.model.frames),
            kind=cmd.verb,
            op=f"{cmd.text}  \u2192 {rec.result}" if rec.result else cmd.text,
            line=cmd.line,
            note=self.notes.get(cmd.line, ""),
            folios=tuple(views.values()),
            process=snapshot_process_view(machine.snapshot(), machine.pmd_order, self.rows),
            cow=tuple(_cow_view(c) for c in self.cows),
            failed=f"expectation failed: {rec.failed}" if rec.failed else None,
        ))
        self.touched.clear()
        self.cows.clear()


def _cow_view(c: CowDecision) -> CowView:
    return CowView(c.task, c.mm, c.addr >> PAGE_SHIFT, c.folio, c.page, c.level, c.rule.value, c.outcome,
                   c.unshare, c.mapcount, c.refcount, c.shared_bit, c.new_folio)


def scenario_frames(text: str, config: KernelConfig, title: str = "", source: str = "",
                    check: bool = True) -> tuple[ViewModel, RunResult]:
    """Run a scenario (the process simulator, isolation oracle on) and return its frames and the run.

    Raises :class:`~foliosim.vm.scenario.ScenarioError`, naming the line, for a
    malformed scenario (before anything runs) or a line the machine cannot take.
    A failed ``expect`` or an oracle violation is a frame with ``failed`` set
    (the run stops at a violation, as ``foliosim run`` does).
    """
    notes, header, options = scenario_notes(text)
    described = "; ".join([source, *options] if source else options)
    model = ViewModel(config, title or source or "scenario", described)
    collector = _Collector(model, notes)
    result = run(text, config, check, on_step=collector.step, on_start=collector.start)
    if result.error is not None:
        raise result.error
    if result.violation is not None and model.frames:
        model.frames[-1] = replace(model.frames[-1], failed=f"isolation oracle violation: {result.violation}")
    if header and model.frames and not model.frames[0].note.startswith(header):
        first = model.frames[0]
        model.frames[0] = replace(first, note=f"{header}\n\n{first.note}".strip())
    return model, result


# -- narration from the scenario's comments ------------------------------------------------------


def scenario_notes(text: str) -> tuple[dict[int, str], str, list[str]]:
    """The comments of a scenario as narration.

    Returns (line -> the comment lines right above that command and its own
    trailing comment, the file's leading comment block, the ``option`` lines
    with their comments).
    """
    notes: dict[int, str] = {}
    options: list[str] = []
    block: list[str] = []
    header: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if header is None and (block or stripped) and not stripped.startswith("#"):
            header = _paragraphs(block)  # the comment lines before the first blank or command line
        if not stripped:
            block = []
            continue
        if stripped.startswith("#"):
            block.append(stripped[1:].strip())
            continue
        code, comment = _split_comment(raw)
        if code.split()[0].lower() == "option":  # not a step: described with the page's source
            options.append(f"{code} \u2014 {comment}" if comment else code)
            block = []
            continue
        note = _paragraphs([*block, comment] if comment else block)
        if note:
            notes[lineno] = note
        block = []
    return notes, header or "", options


def _paragraphs(lines: list[str]) -> str:
    return "\n".join(lines).strip("\n")


def _split_comment(raw: str) -> tuple[str, str]:
    """``(code, trailing comment)`` of a command line: the first ``#`` that starts a shell comment."""
    try:
        words = shlex.split(raw, comments=True)
    except ValueError:
        return raw.strip(), ""
    for pos, ch in enumerate(raw):
        if ch == "#" and (pos == 0 or raw[pos - 1].isspace()):
            try:
                if shlex.split(raw[:pos]) == words:
                    return raw[:pos].strip(), raw[pos + 1:].strip()
            except ValueError:
                continue
    return raw.strip(), ""
