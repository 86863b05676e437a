"""foliosim.fast._jit.OneScopeCopy: numba's inliner with one scope copy per inlined callee compiles the same code.

Each compile runs in a fresh process (numba's names for compiled functions count the functions compiled so far in
the process), with the scope copies shared or numba's own inliner, and the LLVM IR of both is compared.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")

from foliosim.fast import _jit

SRC = Path(__file__).resolve().parents[1] / "src"

#: A function inlining helpers at several call sites, one of them inlining another in turn, with loops and branches
#: (blocks) in each: the nested inlining whose copies the shim shares.
PROGRAM = r'''
import json, sys
import numpy as np
from numba import njit
from foliosim.fast import _jit

shim = _jit.share_scope_copies(sys.argv[1] == "on")

@njit(inline="always", cache=False)
def wrap(x):
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= 1 << 31 else x

@njit(inline="always", cache=False)
def bump(a, i, d):
    for k in range(i, a.shape[0]):
        if a[k] > 100:
            a[k] = wrap(a[k] - d)
        elif a[k] < -100:
            a[k] = wrap(a[k] + d)
        else:
            a[k] = wrap(a[k] * 3 + d)
    return a[i]

@njit(cache=False)
def outer(a, n):
    s = 0
    for j in range(n):
        s += bump(a, j % a.shape[0], j)
        if s & 1:
            s += bump(a, 0, -j)
        else:
            s -= bump(a, a.shape[0] - 1, 2 * j)
    return s

a = np.arange(-50, 50, dtype=np.int64) * 7
result = int(outer(a, 500))
llvm = outer.inspect_llvm(outer.signatures[0])
print(json.dumps({"installed": shim is not None, "result": result, "sum": int(a.sum()),
                  "blocks": shim.blocks_copied if shim else 0, "scopes": shim.scopes_copied if shim else 0,
                  "llvm": llvm}))
'''


def _compile(mode: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": "/nonexistent"})
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_shared_scope_copies_compile_the_same_code() -> None:
    shared, numba_own = _compile("on"), _compile("off")
    assert shared["installed"] and not numba_own["installed"]
    # the same result and the same machine code's source, with every block copied against one scope copy per copy
    assert shared["result"] == numba_own["result"] and shared["sum"] == numba_own["sum"]
    assert shared["llvm"] == numba_own["llvm"]
    # 12 inlinings (bump at 3 sites; numba derives bump's IR anew for each, inlining wrap at its 3 sites), each
    # copying the callee twice: one scope copy per copy, however many blocks it has
    assert shared["scopes"] == 2 * (3 + 3 * 3)
    assert isinstance(shared["blocks"], int) and shared["blocks"] >= 3 * shared["scopes"]


def test_installed_under_the_pinned_numba_and_undone_on_request() -> None:
    from numba.core import inline_closurecall as icc

    assert _jit._REPLACED is not None, "numba's inliner changed: check OneScopeCopy against it (constraints.txt)"
    shim = icc.copy
    assert isinstance(shim, _jit.OneScopeCopy)
    try:
        assert _jit.share_scope_copies(False) is None
        assert icc.copy is __import__("copy") and not hasattr(icc.InlineWorker.inline_ir, "__wrapped__")
    finally:
        again = _jit.share_scope_copies()
    assert again is not None and icc.copy is again
    assert _jit.share_scope_copies() is again  # installing twice changes nothing
