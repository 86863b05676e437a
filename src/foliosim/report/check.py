"""The `foliosim check` verb's work: build the bounds, run the checker, report.

Lives in report/ because it does I/O (writes counterexample files and prints
through the callbacks the CLI passes); the checking itself is foliosim.check.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from foliosim.check.explore import Counterexample, ExploreResult, check_trace
from foliosim.check.fastexplore import explore_with
from foliosim.check.interleave import InterleaveResult, check_interleavings
from foliosim.check.memory import MemoryLimitError, default_limit, human, parse_size
from foliosim.check.mutants import MUTANTS, owner_by_name
from foliosim.check.properties import DESCRIPTIONS, select
from foliosim.check.state import ALL_OPS, CheckConfig
from foliosim.errors import Rejected
from foliosim.kconfig import KernelConfig
from foliosim.outfile import folder_problem, write_text
from foliosim.report.progress import StatusLine
from foliosim.rmap import PMD, PTE
from foliosim.system import RmapSystem

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_VIOLATED = 4

Echo = Callable[[str], None]


def _levels(text: str) -> tuple[Any, ...]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    table = {"pte": PTE, "pmd": PMD}
    bad = [n for n in names if n not in table]
    if bad or not names:
        raise ValueError(f"--levels: expected pte, pmd or pte,pmd, not {text!r}")
    return tuple(table[n] for n in dict.fromkeys(names))


def _ops(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [n for n in names if n not in ALL_OPS or n in ("mm_new", "mm_free")]
    if bad or not names:
        raise ValueError(f"--ops: unknown {', '.join(bad) or 'empty list'} "
                         "(known: map_new_anon, map, dup, unmap; use --reuse-ids for mm_free/mm_new)")
    return names


#: Findings of --interleave that are failures (exit 4); the others are observations.
INTERLEAVE_BAD = ("lost-update", "non-sequential", "cow-unsafe-reuse", "reader-false-negative", "deadlock",
                  "cow-warn-refcount", "cow-warn-slot")


def _chosen_cx(result: ExploreResult) -> tuple[Counterexample | None, list[str]]:
    """The counterexample --counterexample writes (the first violated property in the summary's
    order, else the imprecision example) and the names of the others found."""
    found: list[tuple[str, Counterexample]] = [(name, result.violations[name]) for name in result.properties
                                              if name in result.violations]
    if result.imprecise_example is not None:
        found.append(("imprecision example", result.imprecise_example))
    if not found:
        return None, []
    return found[0][1], [name for name, _cx in found[1:]]


def format_explore(result: ExploreResult) -> list[str]:
    """The readable summary of an exploration."""
    cfg = result.config
    out = [f"foliosim check: {cfg.describe()}",
           f"  owner tracking: {result.owner}, engine: {result.engine}",
           f"  states: {result.states} distinct (canonical), transitions: {result.transitions}, "
           f"depth reached: {result.depth_reached}"
           + (" (every reachable state explored)" if result.exhausted else ""),
           f"  time: {result.elapsed:.2f}s, {result.states_per_second:,.0f} states/s, "
           f"states per depth: {result.level_sizes}"]
    if result.budget_hit:
        out.append(f"  stopped early: {result.budget_hit}")
    out.append("  properties:")
    for name in result.properties:
        if name in result.violations:
            cx = result.violations[name]
            out.append(f"    VIOLATED {name}: {cx.message} (shortest: {cx.length} operations)")
        else:
            out.append(f"    holds    {name}: {DESCRIPTIONS[name]}")
    out.append(f"  imprecision: {result.imprecise_states} state(s) exclusive in truth but reported maybe-shared")
    if result.imprecise_example is not None:
        out.append(f"    shortest path to one ({result.imprecise_example.length} operations):")
        out += [f"      {json.dumps(op.to_json())}" for op in result.imprecise_example.ops]
    for name, cx in result.violations.items():
        out.append(f"  counterexample for {name} (replay with: foliosim replay TRACE):")
        out += [f"      {json.dumps(op.to_json())}" for op in cx.ops]
    return out


def format_interleave(result: InterleaveResult, writers: int, reader: str) -> list[str]:
    out = [f"foliosim check --interleave: {writers} writer CPUs"
           + (f" + a lock-free {reader} reader" if reader != "none" else "")
           + (", bit spinlock REMOVED" if not result.lock else ", with the bit spinlock"),
           f"  scenarios: {result.scenarios}, interleaving states: {result.states}, final states: {result.finals}, "
           f"time: {result.elapsed:.2f}s ({result.states / max(result.elapsed, 1e-9):,.0f} states/s)",
           f"  final states no sequential order explains: {result.non_sequential}"]
    if result.budget_hit:
        out.append(f"  stopped early: {result.budget_hit}")
    for kind, count in sorted(result.observations.items()):
        out.append(f"  {kind}: {count}")
    for kind, finding in result.examples.items():
        out.append(f"  example of {kind}:")
        out += [f"    {line}" for line in finding.lines()]
    return out


def run_check(*, mms: int, order: int, depth: int, kconfig: KernelConfig, levels: str, max_nr: int, ops: str,
              reuse_ids: bool, properties: tuple[str, ...], mutant: str | None, stop_at_first: bool,
              max_states: int | None, max_seconds: float | None, cx_path: str | None, replay_path: str | None,
              interleave: bool, cpus: int, reader: str, no_lock: bool, as_json: bool, quiet: bool,
              out: Echo, err: Echo, engine: str = "auto", max_memory: str | None = None,
              interleave_ignored: tuple[str, ...] = ()) -> int:
    """Run what the options ask for; returns the exit status.

    ``interleave_ignored`` names the sequential-search options given on the command
    line, which --interleave refuses (exit 2) rather than silently ignores.
    """
    if mutant == "list":
        for name, m in MUTANTS.items():
            out(f"{name}: {m.description}")
        return EXIT_OK
    try:
        owner = owner_by_name(mutant)
        select(list(properties))
        cfg = CheckConfig(kconfig, mms, order, depth, _levels(levels), max_nr, _ops(ops), reuse_ids)
        max_bytes = default_limit() if max_memory is None else parse_size(max_memory)
    except ValueError as exc:
        err(f"foliosim check: {exc}")
        return EXIT_USAGE
    if replay_path is not None:
        if cx_path is not None:
            err("foliosim check: --counterexample does not go with --replay (the trace is already the example)")
            return EXIT_USAGE
        return _replay(replay_path, kconfig, owner, properties, as_json, out, err)
    if cx_path is not None:
        problem = folder_problem(cx_path)
        if problem is not None:
            err(f"foliosim check: --counterexample {cx_path}: {problem} (nothing was explored)")
            return EXIT_BAD_INPUT
    if interleave:
        if interleave_ignored:
            err(f"foliosim check: --interleave does not use {', '.join(interleave_ignored)} (it explores the PTE "
                "map/unmap start states of --mms/--order/--depth; it honours --cpus, --reader, --no-lock, "
                "--mutant, --max-seconds, --max-states, --max-memory, --stop-at-first, --counterexample, --json, "
                "--quiet)")
            return EXIT_USAGE
        return _interleave(kconfig, mms, order, depth, cpus, reader, no_lock, owner, stop_at_first, max_seconds,
                           max_states, max_bytes, cx_path, as_json, quiet, out, err)

    status = StatusLine("foliosim check: ", quiet=quiet)

    def progress(info: dict[str, Any]) -> None:
        if "sizing" in info:
            status.update(f"depth {info['depth']}: making room for up to {info['sizing']:,} states, "
                          f"{info['elapsed']:.1f}s", force=info["sizing"] > 1 << 22)
            return
        done = info.get("level_done")
        text = (f"depth {info['depth']}{' done' if done else ''}: {info['states']:,} states, "
                f"{info['transitions']:,} transitions, {info['elapsed']:.1f}s")
        status.update(text, force=bool(done) and not status.tty)

    def notify(message: str) -> None:
        status.done()
        err(f"foliosim check: {message}")

    try:
        result, note = explore_with(engine, cfg, owner, list(properties) or None, stop_at_first, max_states,
                                    max_seconds, progress, max_bytes=max_bytes, notify=notify)
    except ValueError as exc:
        status.done()
        err(f"foliosim check: {exc}")
        return EXIT_USAGE
    except MemoryLimitError as exc:
        status.done()
        err(f"foliosim check: {exc}")
        return EXIT_BAD_INPUT
    except MemoryError:
        status.done()
        err(f"foliosim check: out of memory for this bound ({cfg.describe()}); lower --depth or "
            f"--max-memory (now {human(max_bytes)})")
        return EXIT_BAD_INPUT
    status.done()
    if note is not None:
        if "numba is not installed" in note:
            note = "--engine fast needs numba (pip install 'foliosim[fast]'); used the reference engine"
        err(f"foliosim check: {note}")
    if result.budget_hit is not None and not quiet:
        err(f"foliosim check: stopped early: {result.budget_hit} ({result.states:,} states; the summary covers "
            "what was explored)")
    header = [f"foliosim check: {cfg.describe()}; owner tracking {owner.name}",
              f"replay: foliosim replay THIS_FILE{' --word-bits 32' if kconfig.word_bits == 32 else ''}"
              f"{' --no-page-mapcount' if kconfig.no_page_mapcount else ''}"
              + (f" (the violation needs the mutant: foliosim check --replay THIS_FILE --mutant {owner.name})"
                 if mutant else "")]
    written: list[str] = []
    write_error: str | None = None
    others: list[str] = []
    chosen: Counterexample | None = None
    if cx_path is not None:
        chosen, others = _chosen_cx(result)
        if chosen is not None:
            try:
                write_text(cx_path, "\n".join(chosen.lines(header)) + "\n")
                written.append(cx_path)
            except OSError as exc:
                write_error = f"cannot write {cx_path}: {exc.strerror or exc}"
    if as_json:
        payload = result.to_json()
        payload["files"] = written
        out(json.dumps(payload))
    else:
        for line in format_explore(result):
            out(line)
        if chosen is not None and written:
            what = "the imprecision example" if chosen.prop == "imprecision" else f"the {chosen.prop} counterexample"
            out(f"  wrote {cx_path}: {what} ({chosen.length} operations)")
    if cx_path is not None:
        if chosen is None:
            err(f"foliosim check: no counterexample or imprecision example found; {cx_path} not written")
        elif others and written:
            err(f"foliosim check: {cx_path} holds {chosen.prop}; also found: {', '.join(others)} "
                "(write one with --property NAME --counterexample FILE; the summary above shows each)")
    if write_error is not None:
        err(f"foliosim check: {write_error}")
        return EXIT_BAD_INPUT
    return EXIT_VIOLATED if result.violations else EXIT_OK


def _interleave(kconfig: KernelConfig, mms: int, order: int, depth: int, cpus: int, reader: str, no_lock: bool,
                owner: Any, stop_at_first: bool, max_seconds: float | None, max_states: int | None,
                max_bytes: int, cx_path: str | None, as_json: bool, quiet: bool, out: Echo, err: Echo) -> int:
    status = StatusLine("foliosim check --interleave: ", quiet=quiet, interval=2.0, first_after=2.0)

    def progress(info: dict[str, Any]) -> None:
        if "listing" in info:
            status.update(f"listing the start states (a sequential search): {info['listing']:,} so far, "
                          f"{info['elapsed']:.0f}s")
            return
        status.update(f"start state {info['start']:,} of {info['starts']:,}: {info['scenarios']:,} scenarios, "
                      f"{info['states']:,} interleaving states, {info['elapsed']:.0f}s")

    try:
        result_i = check_interleavings(kconfig, mms=max(mms, cpus + (reader != "none")), order=order,
                                       depth=min(depth, 3), writers=cpus,
                                       reader=None if reader == "none" else reader, lock=not no_lock, owner=owner,
                                       stop_at=INTERLEAVE_BAD if stop_at_first else None, max_seconds=max_seconds,
                                       max_states=max_states, progress=progress, max_bytes=max_bytes)
    except MemoryLimitError as exc:
        status.done()
        err(f"foliosim check --interleave: listing the start states: {exc}")
        return EXIT_BAD_INPUT
    status.done()
    if result_i.budget_hit is not None and not quiet:
        err(f"foliosim check --interleave: stopped early: {result_i.budget_hit}")
    bad = [kind for kind in INTERLEAVE_BAD if kind in result_i.examples]
    written: list[str] = []
    write_error: str | None = None
    if cx_path is not None and bad:
        try:
            write_text(cx_path, "\n".join(result_i.examples[bad[0]].lines()) + "\n")
            written.append(cx_path)
        except OSError as exc:
            write_error = f"cannot write {cx_path}: {exc.strerror or exc}"
    if as_json:
        payload = result_i.to_json()
        payload["files"] = written
        out(json.dumps(payload))
    else:
        for line in format_interleave(result_i, cpus, reader):
            out(line)
        if written:
            out(f"  wrote {cx_path}: the {bad[0]} example (replay with: foliosim replay {cx_path})")
    if cx_path is not None:
        if not bad:
            err(f"foliosim check --interleave: no failing interleaving found; {cx_path} not written")
        elif len(bad) > 1 and written:
            err(f"foliosim check --interleave: {cx_path} holds {bad[0]}; also found: {', '.join(bad[1:])} "
                "(the summary above shows each)")
    if write_error is not None:
        err(f"foliosim check --interleave: {write_error}")
        return EXIT_BAD_INPUT
    return EXIT_VIOLATED if bad else EXIT_OK


def _replay(path: str, kconfig: KernelConfig, owner: Any, properties: tuple[str, ...], as_json: bool,
            out: Echo, err: Echo) -> int:
    try:
        with open(path, "rb") as handle:
            lines = handle.readlines()
    except OSError as exc:
        err(f"foliosim check: cannot read {path}: {exc.strerror or exc}")
        return EXIT_BAD_INPUT
    try:
        verdict = check_trace(lines, RmapSystem(kconfig, owner), list(properties) or None)
    except Rejected as exc:
        err(f"foliosim check: {path}: {exc.reason}")
        return EXIT_BAD_INPUT
    if as_json:
        out(json.dumps(None if verdict is None else
                       {"step": verdict.step, "property": verdict.prop, "message": verdict.message}))
    elif verdict is None:
        out(f"{path}: every checked property holds after every step (owner tracking {owner.name})")
    else:
        out(f"{path}: step {verdict.step} violates {verdict.prop}: {verdict.message}")
    return EXIT_OK if verdict is None else EXIT_VIOLATED
