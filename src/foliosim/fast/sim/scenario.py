"""Scenario files on the fast engine: the reference parser and runner (foliosim.vm.scenario) over a FastMachine.

:func:`unsupported_reason` names the first line the fast engine cannot run, before anything runs;
:func:`run` raises :class:`~foliosim.fast.sim.engine.Unsupported` if a step turns out to need a path it does not
model (nothing of that step changed; the caller reruns the scenario on the reference engine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from foliosim.fast.sim import layout as L
from foliosim.fast.sim.engine import KIND_NAMES, FastMachine, Unsupported
from foliosim.fast.sim.layout import MUTANT_NONE
from foliosim.kconfig import KernelConfig
from foliosim.vm.events import OracleViolation, SimError
from foliosim.vm.scenario import Command, ScenarioError, StepRecord, _Runner, build_machine, parse, summary_head

#: verbs the fast engine does not run, and why
UNSUPPORTED_VERBS: dict[str, str] = {}


def unsupported_reason(commands: list[Command]) -> str | None:
    """Why the fast engine cannot run these commands ('line N: what'), or None."""
    for cmd in commands:
        why = UNSUPPORTED_VERBS.get(cmd.verb)
        if why is not None:
            return f"line {cmd.line}: {why}"
    return None


@dataclass(slots=True)
class FastRunResult:
    """:class:`foliosim.vm.scenario.RunResult` of a fast run."""

    machine: FastMachine
    steps: list[StepRecord]
    failures: list[str]
    error: ScenarioError | None = None
    violation: str | None = None
    lines: list[int] = field(default_factory=list)


class _FastRunner(_Runner):
    def __init__(self, machine: FastMachine) -> None:
        super().__init__(machine)  # type: ignore[arg-type]

    def execute(self, cmd: Command) -> str:
        if cmd.verb in UNSUPPORTED_VERBS:
            raise Unsupported(UNSUPPORTED_VERBS[cmd.verb])
        return super().execute(cmd)


def run(text: str, config: KernelConfig | None = None, check: bool = True,
        on_step: Callable[[StepRecord, FastMachine], None] | None = None, *, mutant: int = MUTANT_NONE,
        record: bool = True) -> FastRunResult:
    """Parse and run a scenario on a :class:`FastMachine` (as :func:`foliosim.vm.scenario.run`)."""
    commands = parse(text)
    reason = unsupported_reason(commands)
    if reason is not None:
        raise Unsupported(reason)
    ref = build_machine(commands, config or KernelConfig(), check)  # validates the options as the reference does
    machine = FastMachine(ref.config, ref.options, record=record, mutant=mutant)
    runner = _FastRunner(machine)
    result = FastRunResult(machine, [], [])
    for cmd in commands:
        if cmd.verb == "option":
            continue
        rec = StepRecord(cmd, "")
        marks = (len(machine.cow_decisions), len(machine.trace))
        try:
            rec.result = runner.execute(cmd)
        except ScenarioError as exc:
            result.error = exc
            return result
        except SimError as exc:
            result.error = ScenarioError(cmd.line, str(exc))
            return result
        except OracleViolation as exc:
            result.steps.append(rec)
            result.violation = f"line {cmd.line}: {exc}"
            if on_step:
                on_step(rec, machine)
            return result
        if runner.failed is not None:
            rec.failed = runner.failed
            result.failures.append(f"line {cmd.line}: {runner.failed}")
            runner.failed = None
        del marks
        result.steps.append(rec)
        if on_step:
            on_step(rec, machine)
    return result


def render_step(rec: StepRecord, machine: FastMachine, cows: list[Any]) -> list[str]:
    """The lines for one scenario line on the fast engine: the command, its result and its CoW decisions."""
    out = [rec.headline()]
    for d in cows:
        what = "unshare" if d.unshare else "write"
        into = f" -> {d.new_folio}" if d.new_folio else ""
        bit = f", shared bit {'set' if d.shared_bit else 'clear'}" if d.shared_bit is not None else ""
        out.append(f"          cow      {d.mm} {what} fault at {d.addr:#x} on {d.folio} page {d.page} ({d.level}): "
                   f"{d.outcome.upper()}{into} [{d.rule.value}; mapcount {d.mapcount}, refcount {d.refcount}{bit}]")
    if rec.failed:
        out.append(f"          EXPECTATION FAILED: {rec.failed}")
    return out


def render_summary(result: FastRunResult) -> list[str]:
    """The summary of a fast run (the reference's, without the smaps figures)."""
    m = result.machine
    out = summary_head("summary (fast engine)", m.step, len(m.trace), m.config.describe(), m.pmd_order, m.counters)
    for task in sorted(m.tasks.values(), key=lambda t: t.pid):
        out.append(f"  {task.name} (pid {task.pid}) on {task.mm.name} (MM id {task.mm.mm_id}, users {task.mm.users},"
                   f" count {task.mm.count})")
    kinds: dict[str, int] = {}
    for f in m.live_folios():
        key = f"{KIND_NAMES[int(m.fs[f, L.X_KIND])]} order {int(m.fs[f, 1])}"
        kinds[key] = kinds.get(key, 0) + 1
    out.append("  live folios: " + (", ".join(f"{n} x {k}" for k, n in sorted(kinds.items())) or "none"))
    if result.violation:
        out.append(f"  ORACLE VIOLATION at {result.violation}")
    elif m.options.check:
        out.append("  isolation oracle and invariants: checked after every step, all held")
    if result.failures:
        out.append(f"  {len(result.failures)} expectation(s) FAILED:")
        out.extend(f"    {f}" for f in result.failures)
    return out
