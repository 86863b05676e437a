"""Optional numba: ``jit`` compiles with numba when it is installed and is a no-op otherwise."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import numpy as np

F = TypeVar("F", bound=Callable[..., Any])

_njit: Any
try:  # pragma: no cover - depends on the environment
    from numba import njit as _njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - depends on the environment
    _njit = None
    HAVE_NUMBA = False

# Compile options. ``_nrt=False``: the kernels allocate nothing, and without the
# numba runtime no array argument costs an atomic reference-count update. Note
# that numba's on-disk cache is keyed on the kernels' source file, not on this
# one: after changing these options, delete foliosim/fast/__pycache__/*.nb[ic].
_OPTIONS: dict[str, Any] = {"cache": True, "nogil": True, "_nrt": False}

NUMBA_MISSING = "numba is not installed: the fast path needs it (pip install 'foliosim[fast]')"


class OneScopeCopy:
    """Stands in for the ``copy`` module inside numba's inliner (``numba.core.inline_closurecall``), which uses it
    for one thing: copying a callee's IR block by block before inlining it (``InlineWorker.inline_ir``). Within one
    inlining, every block's copy here shares one copy of the callee's scope, as the blocks copied share one scope.

    numba deep-copies each block with a memo of its own, so each block's variables drag along a copy of the whole
    scope (every variable of the function) and the inliner then compares these copies with each other: time
    quadratic in the callee's size, paid again at each nested inline. The inlined code is the same (its LLVM IR is
    compared in tests/test_jit.py); the checker's cold compile went from 192 s to 119 s (one core, the other as
    busy; docs/fast-path.md), more than half of it spent in ``copy.deepcopy`` before.
    """

    def __init__(self, block_type: Any) -> None:
        self._block_type = block_type  # numba.core.ir.Block
        self._local = threading.local()
        self.blocks_copied = 0
        self.scopes_copied = 0

    def deepcopy(self, x: Any, memo: dict[int, Any] | None = None) -> Any:
        stack: list[dict[int, tuple[Any, Any]]] | None = getattr(self._local, "stack", None)
        if not stack or not isinstance(x, self._block_type):
            return copy.deepcopy(x, memo)
        scope: Any = x.scope
        memo = {} if memo is None else memo
        scopes = stack[-1]
        known = scopes.get(id(scope))
        if known is None:
            # the original is held with its copy, so that its id is not reused while this inlining runs
            scopes[id(scope)] = (scope, copy.deepcopy(scope, memo))
            self.scopes_copied += 1
        else:
            memo[id(scope)] = known[1]
        self.blocks_copied += 1
        return copy.deepcopy(x, memo)

    def around(self, inline_ir: Callable[..., Any]) -> Callable[..., Any]:
        """``inline_ir`` with the scope copies of each call shared within that call (and only within it)."""

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            stack = getattr(self._local, "stack", None)
            if stack is None:
                stack = self._local.stack = []
            stack.append({})
            try:
                return inline_ir(*args, **kwargs)
            finally:
                stack.pop()

        wrapped.__wrapped__ = inline_ir  # type: ignore[attr-defined]
        return wrapped


class Replaced:
    """The attributes of numba's modules one compile shim replaced, with what they were, so that it can be undone
    (process-wide, as the modules are)."""

    def __init__(self) -> None:
        self.saved: list[tuple[Any, str, Any]] = []

    def __bool__(self) -> bool:
        return bool(self.saved)

    def replace(self, owner: Any, name: str, value: Any) -> None:
        self.saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def undo(self) -> None:
        for owner, name, old in reversed(self.saved):
            setattr(owner, name, old)
        self.saved.clear()


#: what share_scope_copies() replaced: numba's inliner's ``copy`` and ``InlineWorker.inline_ir``
SCOPE_COPIES = Replaced()


def share_scope_copies(on: bool = True) -> OneScopeCopy | None:
    """Install :class:`OneScopeCopy` in numba's inliner (``on``) or put numba's own code back (not ``on``).

    Returns the installed instance, or None when off, when numba is missing, or when numba's inliner is not the
    one this was written against (it must use the ``copy`` module and have ``InlineWorker.inline_ir``): then
    nothing is changed. Process-wide, as numba's inliner is.
    """
    try:
        from numba.core import inline_closurecall, ir
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    icc: Any = inline_closurecall
    if not on:
        SCOPE_COPIES.undo()
        return None
    if isinstance(icc.copy, OneScopeCopy):
        return icc.copy
    worker: Any = getattr(icc, "InlineWorker", None)
    if getattr(icc, "copy", None) is not copy or not callable(getattr(worker, "inline_ir", None)):
        return None
    shim = OneScopeCopy(ir.Block)
    SCOPE_COPIES.replace(icc, "copy", shim)
    SCOPE_COPIES.replace(worker, "inline_ir", shim.around(worker.inline_ir))
    return shim


class SparseSsa:
    """Stands in for numba's SSA reconstruction (``numba.core.ssa._run_ssa``): the same rewrites, made only in the
    blocks that name the variable being rewritten.

    numba rewrites one SSA-violating variable (one assigned more than once) at a time, and for each it rebuilds
    every block of the function twice (``_fresh_vars``, ``_fix_ssa_vars``), calling a handler on every statement: time
    proportional to the violators times the function's size, both of which grow with inlining (the checker's
    ``expand()``: ~370 violators over ~1,900 blocks). A block that does not name the variable comes out of either
    rebuild as a new block holding the same statements, so here it is copied as that without the handler, and numba's
    own rebuild runs on the blocks that do name it, in the same order: the same fresh names, phi nodes and blocks
    (tests/test_jit.py compares the LLVM IR).
    """

    def __init__(self, ssa: Any, ir: Any) -> None:
        self._ssa = ssa  # numba.core.ssa
        self._ir = ir  # numba.core.ir
        self._rewrite = ssa._run_block_rewrite  # numba's own
        self._local = threading.local()
        self.blocks_rewritten = 0
        self.blocks_copied = 0

    def run(self, blocks: dict[int, Any]) -> dict[int, Any]:
        """numba's ``_run_ssa``: each violator's assignments renamed, then its uses pointed at their reaching
        definitions, with the rebuilds limited to the blocks that name it."""
        ssa = self._ssa
        if not blocks:
            return {}
        cfg = ssa.compute_cfg_from_blocks(blocks)
        df_plus = ssa._iterated_domfronts(cfg)
        violators = ssa._find_defs_violators(blocks, cfg)
        cache = ssa._CacheListVars()
        naming: dict[str, set[int]] = {}  # variable -> labels of the blocks that name it
        for label, block in blocks.items():
            for stmt in block.body:
                for var in stmt.list_vars():
                    naming.setdefault(var.name, set()).add(label)
        # Rewriting one variable renames only that variable and adds phi nodes of it: the blocks that name each of the
        # others stay the same, so the index made once serves every violator.
        for name in violators:
            self._local.only = naming.get(name, set())
            try:
                blocks, defmap = ssa._fresh_vars(blocks, name)
                blocks = ssa._fix_ssa_vars(blocks, name, defmap, cfg, df_plus, cache)
            finally:
                self._local.only = None
        if ssa.compute_cfg_from_blocks(blocks) != cfg:
            raise ssa.errors.CompilerError("CFG mutated in SSA pass")
        return blocks

    def rewrite(self, blocks: dict[int, Any], states: dict[str, Any], handler: Any) -> dict[int, Any]:
        """numba's ``_run_block_rewrite``, on the blocks that name the variable when :meth:`run` said which."""
        only: set[int] | None = getattr(self._local, "only", None)
        if only is None:
            return self._rewrite(blocks, states, handler)  # type: ignore[no-any-return]
        block_type = self._ir.Block
        out: dict[int, Any] = {}
        for label, block in blocks.items():
            if label in only:
                out.update(self._rewrite({label: block}, states, handler))
                self.blocks_rewritten += 1
            else:
                copied = block_type(scope=block.scope, loc=block.loc)
                copied.body = list(block.body)
                out[label] = copied
                self.blocks_copied += 1
        return out


#: what sparse_ssa() replaced: numba's ``_run_ssa`` and ``_run_block_rewrite``
SSA = Replaced()


def sparse_ssa(on: bool = True) -> SparseSsa | None:
    """Install :class:`SparseSsa` as numba's SSA reconstruction (``on``) or put numba's own back (not ``on``).

    Returns the installed instance, or None when off, when numba is missing, or when numba's SSA module is not the one
    this was written against (the helpers :class:`SparseSsa` calls must all be there): then nothing is changed.
    Process-wide, as numba's SSA pass is.
    """
    try:
        from numba.core import ir, ssa
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    mod: Any = ssa
    if not on:
        SSA.undo()
        return None
    current = getattr(mod._run_ssa, "__self__", None)
    if isinstance(current, SparseSsa):
        return current
    needed = ("_run_ssa", "_run_block_rewrite", "_fresh_vars", "_fix_ssa_vars", "_find_defs_violators",
              "_iterated_domfronts", "_CacheListVars", "compute_cfg_from_blocks", "errors")
    if not all(hasattr(mod, name) for name in needed) or getattr(mod, "reconstruct_ssa", None) is None:
        return None
    shim = SparseSsa(mod, ir)
    SSA.replace(mod, "_run_ssa", shim.run)
    SSA.replace(mod, "_run_block_rewrite", shim.rewrite)
    return shim


def live_map_bits(cfg: Any, blocks: dict[int, Any], var_use_map: dict[int, set[str]],
                  var_def_map: dict[int, set[str]]) -> dict[int, set[str]]:
    """numba's ``compute_live_map`` (numba.core.analysis): the variables live at the entry of each block, with the
    sets held as bits of Python integers while the two fixed points run.

    numba runs both fixed points over sets of names. The first (the definitions reaching each block) grows every
    block's set towards all the function's variables, so each pass costs the blocks times the variables: after
    inlining, ~1,900 blocks and ~30,000 variables in the checker's ``expand()``, and numba computes it again after
    each inlining, rewrite and legalisation (about a thousand times in the checker's cold compile, a quarter of it).
    An integer's ``|`` and ``&`` do the same set algebra a machine word at a time. Both fixed points are the least
    ones of the same monotone equations from the same start, so the result is the same sets whatever order the
    blocks are visited in.
    """
    order = cfg.topo_order()
    index: dict[str, int] = {}

    def bits(names: set[str]) -> int:
        out = 0
        for name in names:
            i = index.get(name)
            if i is None:
                i = index[name] = len(index)
            out |= 1 << i
        return out

    use = {label: bits(var_use_map[label]) for label in blocks}
    defs = {label: bits(var_def_map[label]) for label in blocks}
    succ = {label: [s for s, _ in cfg.successors(label)] for label in order}
    pred = {label: [p for p, _ in cfg.predecessors(label)] for label in order}
    reach: dict[int, int] = {}  # a block absent: nothing reaches it (numba's defaultdict(set))
    changed = True
    while changed:  # the definitions and uses reaching each block's entry, forward
        changed = False
        for label in order:
            here = reach.get(label, 0) | use[label] | defs[label]
            if here != reach.get(label, 0):
                reach[label] = here
                changed = True
            for s in succ[label]:
                there = reach.get(s, 0)
                if here | there != there:
                    reach[s] = here | there
                    changed = True
    live = dict(use)
    changed = True
    while changed:  # live at entry: used here, or live at a successor, reached here and not defined here; backward
        changed = False
        for label in reversed(order):
            here = live[label]
            for p in pred[label]:
                add = here & reach.get(p, 0) & ~defs[p]
                if add | live[p] != live[p]:
                    live[p] |= add
                    changed = True
    names = list(index)
    nbytes = (len(names) + 7) // 8
    out: dict[int, set[str]] = {}
    for label in blocks:
        b = live[label]
        if b == use[label]:
            out[label] = set(var_use_map[label])
            continue
        found = np.flatnonzero(np.unpackbits(np.frombuffer(b.to_bytes(nbytes, "little"), dtype=np.uint8),
                                             bitorder="little"))
        out[label] = {names[i] for i in found.tolist()}
    return out


#: what bit_liveness() replaced: ``compute_live_map`` in numba.core.analysis and in numba.core.ir_utils
LIVENESS = Replaced()


def bit_liveness(on: bool = True) -> bool:
    """Install :func:`live_map_bits` as numba's ``compute_live_map`` (``on``; in ``numba.core.analysis``, where
    numba's post-processor looks it up, and in ``numba.core.ir_utils``, which imported it by name) or put numba's own
    back (not ``on``). True when installed; False when off, when numba is missing, or when numba's function is not
    where this expects it (then nothing is changed). Process-wide, as numba's analysis is."""
    try:
        from numba.core import analysis, ir_utils
    except ImportError:  # pragma: no cover - depends on the environment
        return False
    a: Any = analysis
    u: Any = ir_utils
    if not on:
        LIVENESS.undo()
        return False
    if a.compute_live_map is live_map_bits:
        return True
    if not callable(getattr(a, "compute_live_map", None)) or getattr(u, "compute_live_map", None) is not \
            a.compute_live_map:
        return False
    LIVENESS.replace(a, "compute_live_map", live_map_bits)
    LIVENESS.replace(u, "compute_live_map", live_map_bits)
    return True


if _njit is not None:
    share_scope_copies()
    sparse_ssa()
    bit_liveness()


def _widened(ty: Any) -> Any:
    """The argument type a call from compiled code compiles ``ty`` as: a literal as its plain type (bool,
    int64), a signed integer narrower than 64 bits as int64 (numba's arithmetic promotes it so anyway)."""
    from numba.core import types as numba_types

    types: Any = numba_types
    ty = types.unliteral(ty)
    return types.int64 if ty in (types.int8, types.int16, types.int32) else ty


def unify_calls(dispatcher: Any) -> Any:
    """Make calls to ``dispatcher`` from other numba functions compile one specialization per widened
    argument types (:func:`_widened`), not one per literal constant or integer width at each call site.

    numba types a constant argument as ``Literal[int](0)`` and compiles the callee again for each
    distinct literal or narrower integer at its call sites; a cold compile of the simulator's kernels
    spent about half its time on such duplicates (``rmap`` compiled five times). The caller casts its
    arguments to the one signature, as it does for any call. Under ``NUMBA_DISABLE_JIT=1`` numba hands back the
    plain function, which is returned as it is.
    """
    resolve = getattr(dispatcher, "get_call_template", None)
    if resolve is None:
        return dispatcher

    def get_call_template(args: tuple[Any, ...], kws: dict[str, Any]) -> Any:
        return resolve(tuple(_widened(a) for a in args), {k: _widened(v) for k, v in kws.items()})

    dispatcher.get_call_template = get_call_template
    return dispatcher


def jit(fn: F) -> F:
    """Compile ``fn`` in nopython mode (cached on disk) when numba is available."""
    if _njit is None:
        return fn
    return cast(F, unify_calls(_njit(**_OPTIONS)(fn)))


def jit_inline(fn: F) -> F:
    """Like :func:`jit`, but inlined into its numba callers at the IR level.

    Array arguments passed to a non-inlined numba function cost an atomic
    reference-count increment and decrement each; the helpers called once per
    operation are inlined so that the replay loop is one function.
    """
    if _njit is None:
        return fn
    return cast(F, _njit(inline="always", **_OPTIONS)(fn))


def cached(fn: Any) -> bool | None:
    """Whether numba's on-disk cache holds a fresh compiled version of ``fn`` (None: cannot tell).

    Reads numba's cache index (private API, hence the broad guard): an empty or
    stale index means the next call compiles.
    """
    try:
        return bool(fn._cache._cache_file._load_index())
    except Exception:  # any numba-internal change: just cannot tell
        return None


def compile_pending(fns: tuple[Any, ...]) -> bool:
    """True when numba is installed and its cache is known to lack a fresh version of one of ``fns``."""
    return _njit is not None and any(cached(fn) is False for fn in fns)


def compile_message(what: str, typical: str) -> str:
    return f"compiling {what} (first run only, ~{typical}; numba caches it in __pycache__)"


@contextmanager
def compile_notice(fns: tuple[Any, ...], notify: Callable[[str], None] | None, what: str, typical: str,
                   delay: float = 1.5) -> Iterator[None]:
    """Around the first call of numba functions ``fns``: say on ``notify`` that they are being compiled.

    Said at once when numba's cache is known to be empty or stale, otherwise only
    if the call is still running after ``delay`` seconds (a cache load is faster).
    """
    if notify is None or _njit is None:
        yield
        return
    message = compile_message(what, typical)
    if compile_pending(fns):
        notify(message)
        yield
        return
    timer = threading.Timer(delay, notify, args=(message,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
