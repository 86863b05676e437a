"""``foliosim live``: a scenario in the simulator and as real processes, compared after every line.

The simulator runs the scenario line by line; after each line the same line runs on the live kernel (see
:mod:`foliosim.live.driver`), both sides are observed and compared (:mod:`foliosim.live.compare`). The order of
what may fail is fixed: the scenario is parsed and every line checked for a live equivalent, the capability is
probed and the THP settings compared with what the scenario needs — all before any process starts or any
setting changes.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from foliosim.host.errors import HostError, HostUnavailable
from foliosim.kconfig import KernelConfig
from foliosim.live.compare import Comparator, LineResult, side_by_side
from foliosim.live.observe import WINDOW, LiveState, observe
from foliosim.live.plan import LivePlan, make_plan, wanted_settings
from foliosim.vm.scenario import Command, StepRecord, parse

#: how long a run waits for another foliosim live run (the lock) before giving up
LOCK_WAIT = 120.0
EXIT_AGREE, EXIT_BAD_SCENARIO, EXIT_DIVERGED, EXIT_CANNOT_RUN = 0, 1, 5, 6


class CannotRun(Exception):
    """The live side cannot run here (exit 6): the message names what is missing."""


@dataclass(slots=True)
class Capability:
    """What the live side can observe here: full (root + BPF + BTF), pages (root only) or none."""

    level: str
    reasons: list[str] = field(default_factory=list)
    faults: bool = False  # the page_fault_user tracepoint in a tracefs instance

    def describe(self) -> str:
        extra = "" if self.faults else "; fault events not observed"
        why = f" ({'; '.join(self.reasons)})" if self.reasons else ""
        return f"capability: {self.level}{why}{extra}"


@dataclass(slots=True)
class LiveRun:
    """The outcome of ``foliosim live``: per-line results and the side-by-side of the first divergence."""

    capability: Capability
    lines: list[LineResult]
    thp_changed: list[str]
    snapshots: list[dict[str, Any]]
    sim_error: str | None = None
    seconds: float = 0.0
    first: list[tuple[str, str, str]] = field(default_factory=list)  # both sides at the first divergence
    leftover: list[str] = field(default_factory=list)  # settings a killed run left, restored before this one
    #: lines during which khugepaged collapsed pages somewhere on the machine (its count went up): its background
    #: collapses, which no scenario line asks for, may be why the live folios differ from there on
    khugepaged: list[int] = field(default_factory=list)

    @property
    def diffs(self) -> int:
        return sum(len(r.diffs) for r in self.lines)

    @property
    def exit_code(self) -> int:
        return EXIT_DIVERGED if self.diffs or self.sim_error else EXIT_AGREE


def check_scenario(text: str) -> tuple[list[Command], LivePlan]:
    """Parse and check a scenario for the live side; ScenarioError (exit 1) or CannotRun (exit 6)."""
    commands = parse(text)
    plan = make_plan(commands)
    if plan.refusals:
        raise CannotRun("this scenario has lines with no live equivalent:\n  " + "\n  ".join(plan.refusals))
    return commands, plan


def thp_changes(plan: LivePlan) -> dict[str, str]:
    """The THP/mTHP sysfs values the scenario needs that differ from the machine's now."""
    from foliosim.host import thp

    s = thp.read_settings()
    available: dict[int, tuple[str, str | None]] = {}
    for order in sorted(set(s.anon) | set(s.shmem)):
        available[order] = (s.anon.get(order, ""), s.shmem.get(order))
    return wanted_settings(plan, available, s.enabled, s.shmem_enabled)


def probe_capability() -> Capability:
    """Root, then BPF (the folio reader loads), then tracefs (the fault event can be enabled)."""
    if os.geteuid() != 0:
        return Capability("none", ["not root: PFNs, kpageflags, BPF and tracefs all need root"])
    from foliosim.host.bpf import FolioReader
    from foliosim.host.tracefs import FaultRecorder

    cap = Capability("full")
    try:
        with FolioReader():
            pass
    except HostUnavailable as exc:
        cap = Capability("pages", [f"BPF folio reader unavailable: {exc}"])
    try:
        with FaultRecorder():
            cap.faults = True
    except (HostUnavailable, HostError) as exc:
        cap.reasons.append(f"page_fault_user tracepoint unavailable: {exc}")
    return cap


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like an exception while a run is on, so every process and setting is cleaned up."""
    def raise_exit(signo: int, _frame: object) -> None:
        raise SystemExit(128 + signo)

    previous = {sig: signal.signal(sig, raise_exit) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_live(text: str, *, set_thp: bool = False, require_full: bool = False,
             progress: Callable[[LineResult], None] | None = None,
             keep_snapshots: bool = False, simulator_hook: Callable[[Any], None] | None = None,
             on_capability: Callable[[Capability], None] | None = None) -> LiveRun:
    """Run ``text`` on both sides. Raises ScenarioError, CannotRun; HostError for a failure mid-way."""
    import time

    from foliosim.host import thp
    from foliosim.host.runlock import LiveLock

    t0 = time.monotonic()
    commands, plan = check_scenario(text)
    cap = probe_capability()
    if on_capability is not None:
        on_capability(cap)
    if cap.level == "none" or (require_full and cap.level != "full"):
        raise CannotRun(cap.describe())
    with ExitStack() as stack:
        stack.enter_context(LiveLock(timeout=LOCK_WAIT))
        stack.enter_context(_terminate_cleanly())
        restored = thp.restore_leftover()
        changes = thp_changes(plan)
        described = thp.describe_needed(changes) if changes else []
        if changes and not set_thp:
            raise CannotRun("the scenario needs other THP settings than this machine has (run with --set-thp to "
                            "set them for the run; they are restored afterwards):\n  " + "\n  ".join(described))
        bad = [p for p, v in changes.items() if " " in v]
        if bad:
            raise CannotRun("the scenario needs a folio size this kernel does not offer: " + ", ".join(bad))
        if changes:
            stack.enter_context(thp.ThpGuard(changes))
        run = LiveRun(cap, [], described, [], leftover=restored)
        _run_both(stack, run, text, commands, plan, cap, progress, keep_snapshots, simulator_hook)
    run.seconds = time.monotonic() - t0
    return run


def _run_both(stack: ExitStack, run: LiveRun, text: str, commands: list[Command], plan: LivePlan,
              cap: Capability, progress: Callable[[LineResult], None] | None, keep_snapshots: bool,
              simulator_hook: Callable[[Any], None] | None) -> None:
    from foliosim.host import thp
    from foliosim.host.syscalls import drain_lru
    from foliosim.live.driver import LiveDriver
    from foliosim.vm import scenario

    reader = None
    if cap.level == "full":
        from foliosim.host.bpf import FolioReader

        reader = stack.enter_context(FolioReader())
    recorder = None
    if cap.faults:
        from foliosim.host.tracefs import FaultRecorder

        recorder = stack.enter_context(FaultRecorder(follow_forks=True))
    driver = LiveDriver(plan, announce=reader is not None)
    stack.callback(driver.close)
    driver.start()
    comparator = Comparator(full=reader is not None)
    marks = {"faults": 0, "cow": 0}

    def on_start(machine: Any) -> None:
        if simulator_hook is not None:
            simulator_hook(machine)

    collapsed = [thp.khugepaged_collapsed()]

    def on_step(rec: StepRecord, m: Any) -> None:
        cmd = rec.command
        if recorder is not None:
            recorder.set_pids(sorted({t.tid for t in driver.tasks.values() if t.alive}))
            recorder.drain()
        live_result, _reply = driver.execute(cmd, rec.result)
        live_faults: list[tuple[str, int, bool]] = []
        if recorder is not None:
            names = {t.tid: t.name for t in driver.tasks.values()}
            for ev in recorder.drain():
                if WINDOW[0] <= ev.address < WINDOW[1] and ev.pid in names:
                    live_faults.append((names[ev.pid], ev.address >> 12, ev.write))
        tasks = driver.live_tgids()
        drain_lru()  # per-CPU LRU add batches hold a reference on just-faulted small folios
        state: LiveState = observe(sorted(tasks), reader)
        now = thp.khugepaged_collapsed()
        if now is not None and collapsed[0] is not None and now != collapsed[0]:
            run.khugepaged.append(cmd.line)
        collapsed[0] = now
        res = LineResult(cmd.line, cmd.text, rec.result, live_result)
        if cmd.verb in ("mmap", "munmap", "mprotect", "mremap", "madvise", "write", "read", "pin", "vmsplice",
                        "unpin", "readpin"):
            comparator.check(res, "result", "result", cmd.args[0] if cmd.verb not in ("unpin", "readpin") else "",
                              None, "", rec.result, live_result)
        comparator.bind_sim_ids(m)
        sim_faults = m.user_faults[marks["faults"]:]
        decisions = m.cow_decisions[marks["cow"]:]
        marks["faults"], marks["cow"] = len(m.user_faults), len(m.cow_decisions)
        if recorder is None:
            sim_faults, live_faults = [], []
            res.not_observed += 1
        split = frozenset(str(e.data.get("folio")) for e in rec.events
                          if e.kind == "split" and e.data.get("what") == "folio")
        comparator.compare(res, m, state, tasks, sim_faults, live_faults, decisions, split)
        if res.diffs and not run.first:
            run.first = side_by_side(res.diffs[0], m, state, comparator, tasks)
        run.lines.append(res)
        if keep_snapshots:
            run.snapshots.append({"line": cmd.line, "command": cmd.text, "sim": m.snapshot(),
                                  "live": state.to_json(tasks), "faults": res.faults,
                                  "diffs": [d.describe() for d in res.diffs]})
        if progress is not None:
            progress(res)

    result = scenario.run(text, KernelConfig(64, False), check=True, on_step=on_step, on_start=on_start)
    if result.error is not None:
        run.sim_error = f"the simulator stopped: {result.error}"
    elif result.violation is not None:
        run.sim_error = f"the simulator's isolation oracle failed: {result.violation}"
