"""Optional numba: ``jit`` compiles with numba when it is installed and is a no-op otherwise."""

from __future__ import annotations

from collections.abc import Callable
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


def jit(fn: F) -> F:
    """Compile ``fn`` in nopython mode (cached on disk) when numba is available."""
    if _njit is None:
        return fn
    return cast(F, _njit(**_OPTIONS)(fn))


def jit_inline(fn: F) -> F:
    """Like :func:`jit`, but inlined into its numba callers at the IR level.

    Array arguments passed to a non-inlined numba function cost an atomic
    reference-count increment and decrement each; the helpers called once per
    operation are inlined so that the replay loop is one function.
    """
    if _njit is None:
        return fn
    return cast(F, _njit(inline="always", **_OPTIONS)(fn))
