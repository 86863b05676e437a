"""The `foliosim check` verb's work: build the bounds, run the checker, report.

Lives in report/ because it does I/O (writes counterexample files and prints
through the callbacks the CLI passes); the checking itself is foliosim.check.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from foliosim.check.explore import Counterexample, ExploreResult, check_trace
from foliosim.check.fastexplore import explore_with
from foliosim.check.interleave import InterleaveResult, check_interleavings
from foliosim.check.mutants import MUTANTS, owner_by_name
from foliosim.check.properties import DESCRIPTIONS, select
from foliosim.check.state import ALL_OPS, CheckConfig
from foliosim.errors import Rejected
from foliosim.kconfig import KernelConfig
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


def _write_cx(path: str, suffix: str | None, cx: Counterexample, header: list[str]) -> str:
    target = Path(path)
    if suffix:
        target = target.with_name(f"{target.stem}-{suffix}{target.suffix or '.jsonl'}")
    target.write_text("\n".join(cx.lines(header)) + "\n", encoding="utf-8")
    return str(target)


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
              out: Echo, err: Echo, engine: str = "auto") -> int:
    """Run what the options ask for; returns the exit status."""
    if mutant == "list":
        for name, m in MUTANTS.items():
            out(f"{name}: {m.description}")
        return EXIT_OK
    try:
        owner = owner_by_name(mutant)
        select(list(properties))
        cfg = CheckConfig(kconfig, mms, order, depth, _levels(levels), max_nr, _ops(ops), reuse_ids)
    except ValueError as exc:
        err(f"foliosim check: {exc}")
        return EXIT_USAGE
    if replay_path is not None:
        return _replay(replay_path, kconfig, owner, properties, as_json, out, err)
    if interleave:
        result_i = check_interleavings(kconfig, mms=max(mms, cpus + (reader != "none")), order=order,
                                       depth=min(depth, 3), writers=cpus,
                                       reader=None if reader == "none" else reader, lock=not no_lock, owner=owner)
        if as_json:
            out(json.dumps(result_i.to_json()))
        else:
            for line in format_interleave(result_i, cpus, reader):
                out(line)
        bad = {"lost-update", "non-sequential", "cow-unsafe-reuse", "reader-false-negative", "deadlock",
               "cow-warn-refcount", "cow-warn-slot"}
        return EXIT_VIOLATED if bad & set(result_i.examples) else EXIT_OK

    def progress(info: dict[str, Any]) -> None:
        if not quiet:
            err(f"  depth {info['depth']}: {info['states']} states, {info['transitions']} transitions, "
                f"{info['elapsed']:.1f}s")

    try:
        result, note = explore_with(engine, cfg, owner, list(properties) or None, stop_at_first, max_states,
                                    max_seconds, progress)
        if note is not None:
            err(f"foliosim check: {note}")
    except ValueError as exc:
        err(f"foliosim check: {exc}")
        return EXIT_USAGE
    header = [f"foliosim check: {cfg.describe()}; owner tracking {owner.name}",
              f"replay: foliosim replay THIS_FILE{' --word-bits 32' if kconfig.word_bits == 32 else ''}"
              f"{' --no-page-mapcount' if kconfig.no_page_mapcount else ''}"
              + (f" (the violation needs the mutant: foliosim check --replay THIS_FILE --mutant {owner.name})"
                 if mutant else "")]
    written: list[str] = []
    if cx_path is not None:
        many = len(result.violations) + (result.imprecise_example is not None) > 1
        for name, cx in result.violations.items():
            written.append(_write_cx(cx_path, name if many else None, cx, header))
        if result.imprecise_example is not None:
            written.append(_write_cx(cx_path, "imprecision" if many else None, result.imprecise_example, header))
    if as_json:
        payload = result.to_json()
        payload["files"] = written
        out(json.dumps(payload))
    else:
        for line in format_explore(result):
            out(line)
        for path in written:
            out(f"  wrote {path}")
    return EXIT_VIOLATED if result.violations else EXIT_OK


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
