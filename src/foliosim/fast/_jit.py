"""Optional numba: ``jit`` compiles with numba when it is installed and is a no-op otherwise."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

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


#: what share_scope_copies() replaced: numba's inliner's ``copy`` and ``InlineWorker.inline_ir``
_REPLACED: tuple[Any, Any] | None = None


def share_scope_copies(on: bool = True) -> OneScopeCopy | None:
    """Install :class:`OneScopeCopy` in numba's inliner (``on``) or put numba's own code back (not ``on``).

    Returns the installed instance, or None when off, when numba is missing, or when numba's inliner is not the
    one this was written against (it must use the ``copy`` module and have ``InlineWorker.inline_ir``): then
    nothing is changed. Process-wide, as numba's inliner is.
    """
    global _REPLACED
    try:
        from numba.core import inline_closurecall, ir
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    icc: Any = inline_closurecall
    if not on:
        if _REPLACED is not None:
            icc.copy, icc.InlineWorker.inline_ir = _REPLACED
            _REPLACED = None
        return None
    if isinstance(icc.copy, OneScopeCopy):
        return icc.copy
    worker: Any = getattr(icc, "InlineWorker", None)
    if getattr(icc, "copy", None) is not copy or not callable(getattr(worker, "inline_ir", None)):
        return None
    shim = OneScopeCopy(ir.Block)
    _REPLACED = (icc.copy, worker.inline_ir)
    icc.copy = shim
    worker.inline_ir = shim.around(worker.inline_ir)
    return shim


if _njit is not None:
    share_scope_copies()


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
