"""Breadth-first exploration of every rmap operation sequence up to a depth.

States are canonicalised (:mod:`foliosim.check.state`) and kept in a visited
set keyed by a compact byte fingerprint with a parent pointer, so the first
violation found for a property is a shortest one, and it is rebuilt as a list
of :class:`~foliosim.system.Op` that ``foliosim replay`` reruns. Every
transition is an operation the reference RmapSystem accepts; an operation it
rejects is not a transition (unless the rejection is the kernel's own sanity
check, which is then a violation of the ``sanity`` property).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from foliosim.check.memory import (
    MemoryLimitError,
    human,
    memory_budget_message,
    reference_state_bytes,
    successor_bound,
)
from foliosim.check.properties import (
    Property,
    first_violation,
    imprecise,
    select,
    view_of,
)
from foliosim.check.state import (
    FOLIO,
    HEADER,
    CheckConfig,
    State,
    candidate_ops,
    canonical,
    crowded_after,
    crowded_next,
    decode,
    encode,
    from_key,
    initial_system,
    restore,
    setup_ops,
    to_key,
    try_apply,
)
from foliosim.errors import Rejected
from foliosim.owner import KERNEL_OWNER, SANITY, OwnerTracking
from foliosim.system import Op, RmapSystem
from foliosim.trace.replay import ReplayStatus, replay

#: Rejections that are the kernel's own sanity checks firing (a violation, not an invalid op).
SANITY_CHECKS = frozenset((SANITY,))

_MM_OPS = frozenset(("mm_new", "mm_free"))

Progress = Callable[[dict[str, Any]], None]


@dataclass(slots=True)
class Counterexample:
    """A shortest sequence reaching a violation, as replayable trace operations."""

    prop: str
    message: str
    ops: list[Op]  # set-up lines first
    setup: int  # how many of ``ops`` are set-up lines

    @property
    def length(self) -> int:
        return len(self.ops) - self.setup

    def lines(self, header: Iterable[str] = ()) -> list[str]:
        """The trace as JSON Lines, with ``#`` comment lines (which replay skips) first."""
        out = [f"# {line}" for line in header]
        out.append(f"# violates {self.prop}: {self.message}")
        out += [json.dumps(op.to_json(), separators=(",", ":")) for op in self.ops]
        return out

    def to_json(self) -> dict[str, Any]:
        return {"property": self.prop, "message": self.message, "length": self.length,
                "trace": [op.to_json() for op in self.ops]}


@dataclass(slots=True)
class ExploreResult:
    """What one exploration established."""

    config: CheckConfig
    owner: str
    properties: list[str]
    states: int = 0
    transitions: int = 0
    depth_reached: int = 0
    exhausted: bool = False  # the frontier emptied before the depth bound: every reachable state seen
    budget_hit: str | None = None
    elapsed: float = 0.0
    level_sizes: list[int] = field(default_factory=list)
    violations: dict[str, Counterexample] = field(default_factory=dict)
    imprecise_states: int = 0
    imprecise_example: Counterexample | None = None
    visited: dict[bytes, bytes | None] | None = None  # canonical key -> parent key (keep_states=True)
    engine: str = "reference"  # which search produced it: "reference" or "fast" (check.fastexplore)

    @property
    def states_per_second(self) -> float:
        return self.states / self.elapsed if self.elapsed > 0 else 0.0

    def holds(self, prop: str) -> bool:
        return prop in self.properties and prop not in self.violations

    def to_json(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "config": {"mms": cfg.mms, "order": cfg.order, "depth": cfg.depth,
                       "word_bits": cfg.kconfig.word_bits, "no_page_mapcount": cfg.kconfig.no_page_mapcount,
                       "levels": [lv.value for lv in cfg.levels], "max_nr": cfg.batch, "ops": list(cfg.ops),
                       "reuse_ids": cfg.reuse_ids},
            "owner": self.owner,
            "engine": self.engine,
            "states": self.states,
            "transitions": self.transitions,
            "depth_reached": self.depth_reached,
            "exhausted": self.exhausted,
            "budget_hit": self.budget_hit,
            "elapsed_s": round(self.elapsed, 3),
            "states_per_second": round(self.states_per_second),
            "level_sizes": self.level_sizes,
            "properties": {p: ("violated" if p in self.violations else "holds") for p in self.properties},
            "violations": {p: cx.to_json() for p, cx in self.violations.items()},
            "imprecise_states": self.imprecise_states,
            "imprecise_example": self.imprecise_example.to_json() if self.imprecise_example else None,
        }


@dataclass(slots=True)
class _Found:
    """A violation seen during the search, before its trace is rebuilt."""

    prop: str
    message: str
    parent: bytes
    child: bytes | None  # canonical key of the violating state; None for a sanity rejection


def explore(
    cfg: CheckConfig,
    owner: OwnerTracking = KERNEL_OWNER,
    properties: list[str] | tuple[str, ...] | None = None,
    stop_at_first: bool = False,
    max_states: int | None = None,
    max_seconds: float | None = None,
    progress: Progress | None = None,
    keep_states: bool = False,
    max_bytes: int | None = None,
) -> ExploreResult:
    """Explore every sequence of ``cfg``'s operations up to ``cfg.depth`` and check ``properties``.

    ``max_bytes`` bounds the visited set's estimated memory
    (:func:`foliosim.check.memory.reference_state_bytes` per state): the search
    stops cleanly, as at a time budget, when it would pass it.
    """
    props = select(properties)
    per_state = reference_state_bytes(cfg.width)
    if max_bytes is not None and per_state * successor_bound(cfg) > max_bytes:
        raise MemoryLimitError(f"this bound needs about {human(per_state * successor_bound(cfg))} for the "
                               f"successors of its first state, more than --max-memory {human(max_bytes)}; "
                               "lower --mms/--order or raise --max-memory")
    result = ExploreResult(cfg, owner.name, list(props))
    start = time.perf_counter()
    crowd_at = HEADER + cfg.nr_pages
    system = initial_system(cfg, owner)
    init = canonical(encode(system, cfg, False), cfg)
    init_key = to_key(init)
    parents: dict[bytes, bytes | None] = {init_key: None}
    bad: set[bytes] = set()
    found: dict[str, _Found] = {}
    imprecise_key: bytes | None = None
    hit = first_violation(view_of(decode(init, cfg, owner), False), props)
    if hit is not None:
        found[hit[0]] = _Found(hit[0], hit[1], init_key, init_key)
    frontier = [init_key] if not found else []
    result.level_sizes.append(1)
    expanded = 0
    reported = 0.0
    stop = bool(found) and stop_at_first
    for depth in range(cfg.depth):
        if not frontier or stop:
            break
        nxt: list[bytes] = []
        for key in frontier:
            state = from_key(key)
            crowded = bool(state[crowd_at])
            system = decode(state, cfg, owner)
            # A list, not the generator: the generator reads ``system``'s truth object,
            # which the operations below mutate and restore() replaces.
            for op in list(candidate_ops(system, cfg, state)):
                exc = try_apply(system, op)
                if exc is not None:
                    if exc.check in SANITY_CHECKS and "sanity" in props and "sanity" not in found:
                        found["sanity"] = _Found("sanity", f"{op.op} rejected by the kernel's sanity check: "
                                                 f"{exc.reason}", key, None)
                        stop = stop_at_first
                    continue
                result.transitions += 1
                c = crowded_after(system, crowded)
                child = canonical(encode(system, cfg, c), cfg)
                ckey = to_key(child)
                if ckey not in parents and ckey not in bad:
                    view = view_of(system, c)
                    live = {n: p for n, p in props.items() if n not in found} if not stop_at_first else props
                    hit = first_violation(view, live)
                    if hit is not None:
                        bad.add(ckey)
                        found[hit[0]] = _Found(hit[0], hit[1], key, ckey)
                        stop = stop_at_first
                    else:
                        parents[ckey] = key
                        nxt.append(ckey)
                        if imprecise(view):
                            result.imprecise_states += 1
                            if imprecise_key is None:
                                imprecise_key = ckey
                if op.op in _MM_OPS:
                    system = decode(state, cfg, owner)
                else:
                    restore(system, state, cfg)
                if stop:
                    break
            expanded += 1
            if stop:
                break
            # The clock is read after every expansion: with many MMs and pages one expansion
            # applies thousands of operations. Progress goes out every 256, or every second.
            elapsed = time.perf_counter() - start
            if progress is not None and (expanded % 256 == 0 or elapsed - reported > 1.0):
                reported = elapsed
                progress({"depth": depth + 1, "states": len(parents), "transitions": result.transitions,
                          "elapsed": elapsed})
            if max_seconds is not None and elapsed > max_seconds:
                result.budget_hit = f"time budget of {max_seconds:g}s reached at depth {depth + 1}"
                stop = True
                break
            if expanded % 256 == 0 and max_states is not None and len(parents) > max_states:
                result.budget_hit = f"state budget of {max_states} reached at depth {depth + 1}"
                stop = True
                break
            if max_bytes is not None and len(parents) * per_state > max_bytes:
                result.budget_hit = memory_budget_message(max_bytes, depth + 1)
                stop = True
                break
        result.level_sizes.append(len(nxt))
        frontier = nxt
        if progress is not None:
            progress({"depth": depth + 1, "states": len(parents), "transitions": result.transitions,
                      "elapsed": time.perf_counter() - start, "level_done": result.budget_hit is None})
        if stop:
            break
    result.depth_reached = max(d for d, n in enumerate(result.level_sizes) if n)
    result.exhausted = not frontier and result.budget_hit is None and not (stop and found)
    result.states = len(parents)
    result.elapsed = time.perf_counter() - start
    for name in props:
        if name in found:
            result.violations[name] = _rebuild(cfg, owner, parents, found[name])
    if keep_states:
        result.visited = parents
    if imprecise_key is not None:
        ops = _path_ops(cfg, owner, parents, imprecise_key)
        result.imprecise_example = Counterexample(
            "imprecision", "exclusive in truth but folio_maybe_mapped_shared() says maybe shared",
            ops, cfg.mms + 1)
    return result


def _chain(parents: dict[bytes, bytes | None], key: bytes) -> list[bytes]:
    chain = [key]
    while (parent := parents[chain[-1]]) is not None:
        chain.append(parent)
    chain.reverse()
    return chain


def _step_to(cfg: CheckConfig, owner: OwnerTracking, system: RmapSystem, crowded: bool,
             target: bytes) -> tuple[Op, RmapSystem, bool]:
    """An operation taking the concrete ``system`` to a state equivalent to ``target``."""
    state = encode(system, cfg, crowded)
    for op in candidate_ops(system, cfg):
        trial = decode(state, cfg, owner)
        if try_apply(trial, op) is not None:
            continue
        c = crowded_after(trial, crowded)
        if to_key(canonical(encode(trial, cfg, c), cfg)) == target:
            return op, trial, c
    raise RuntimeError("checker bug: no operation reaches the recorded successor state")


def _walk(cfg: CheckConfig, owner: OwnerTracking, keys: list[bytes]) -> tuple[list[Op], RmapSystem, bool]:
    system = initial_system(cfg, owner)
    crowded = False
    ops = setup_ops(cfg)
    for target in keys[1:]:
        op, system, crowded = _step_to(cfg, owner, system, crowded, target)
        ops.append(op)
    return ops, system, crowded


def trace_to(cfg: CheckConfig, owner: OwnerTracking, parents: dict[bytes, bytes | None],
             key: bytes) -> tuple[list[Op], RmapSystem]:
    """The set-up and operations reaching (a state equivalent to) ``key``, and that state."""
    ops, system, _crowded = _walk(cfg, owner, _chain(parents, key))
    return ops, system


def _path_ops(cfg: CheckConfig, owner: OwnerTracking, parents: dict[bytes, bytes | None], key: bytes) -> list[Op]:
    return _walk(cfg, owner, _chain(parents, key))[0]


def _rebuild(cfg: CheckConfig, owner: OwnerTracking, parents: dict[bytes, bytes | None],
             found: _Found) -> Counterexample:
    """The concrete trace of a recorded violation."""
    ops, system, crowded = _walk(cfg, owner, _chain(parents, found.parent))
    if found.child is not None and found.child != found.parent:
        op, _system, _c = _step_to(cfg, owner, system, crowded, found.child)
        ops.append(op)
    elif found.child is None:
        state = encode(system, cfg, crowded)
        for op in candidate_ops(system, cfg):
            exc = try_apply(decode(state, cfg, owner), op)
            if exc is not None and exc.check in SANITY_CHECKS:
                ops.append(op)
                break
    return Counterexample(found.prop, found.message, ops, cfg.mms + 1)


@dataclass(slots=True)
class TraceVerdict:
    """The first property a trace violates, found by replaying it."""

    step: int  # 0-based index of the trace operation after which it fails
    prop: str
    message: str


def check_trace(
    lines: Iterable[str | bytes],
    system: RmapSystem,
    properties: list[str] | tuple[str, ...] | None = None,
) -> TraceVerdict | None:
    """Replay ``lines`` with :func:`foliosim.trace.replay.replay` on ``system`` and check the
    properties after every operation, for the folio each operation touches.

    This is how a counterexample is confirmed: the same replay code as
    ``foliosim replay``, with the owner-tracking implementation ``system`` carries.
    """
    props = select(properties)
    crowded: dict[str, bool] = {}
    status = ReplayStatus()
    for rec in replay(lines, keep_going=False, status=status, system=system):
        step = rec.get("step", 0)
        if "error" in rec:
            if rec.get("check") in SANITY_CHECKS and "sanity" in props:
                return TraceVerdict(step, "sanity", f"{rec.get('op')} rejected by the kernel's sanity check: "
                                    f"{rec['error']}")
            raise Rejected(f"step {step}: {rec['error']}")
        name = rec.get("folio")
        if name is None or name not in system.folios or system.folios[name].folio.order == 0:
            continue
        truth = system.folios[name].truth
        crowded[name] = crowded_next(truth, crowded.get(name, False))
        hit = first_violation(view_of(system, crowded[name], name), props)
        if hit is not None:
            return TraceVerdict(step, hit[0], hit[1])
    return None


def violation_of(ops: list[Op], cfg: CheckConfig, owner: OwnerTracking = KERNEL_OWNER,
                 properties: list[str] | tuple[str, ...] | None = None) -> TraceVerdict | None:
    """:func:`check_trace` for a list of operations."""
    lines = [json.dumps(op.to_json()) for op in ops]
    return check_trace(lines, RmapSystem(cfg.kconfig, owner), properties)


def describe_property_list(props: dict[str, Property]) -> list[str]:
    return list(props)


__all__ = ["FOLIO", "CheckConfig", "Counterexample", "ExploreResult", "State", "TraceVerdict",
           "check_trace", "explore", "violation_of"]
