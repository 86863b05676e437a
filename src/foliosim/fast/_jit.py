"""Optional numba: ``jit`` compiles with numba when it is installed and is a no-op otherwise."""

from __future__ import annotations

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
