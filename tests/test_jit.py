"""foliosim.fast._jit's compile shims compile the same code as numba's own passes: OneScopeCopy (numba's inliner with
one scope copy per inlined callee), SparseSsa (SSA reconstruction rebuilding only the blocks that name a variable) and
live_map_bits (the variables live at each block's entry, computed over bits).

The whole compile runs in a fresh process (numba's names for compiled functions count the functions compiled so far
in the process), with the shims installed or numba's own passes, and the LLVM IR of both is compared. SparseSsa and
live_map_bits are also compared with numba's passes on the IR of the project's largest kernels.
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
_jit.sparse_ssa(sys.argv[1] == "on")
_jit.bit_liveness(sys.argv[1] == "on")

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


def test_the_shims_compile_the_same_code() -> None:
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

    assert _jit.SCOPE_COPIES, "numba's inliner changed: check OneScopeCopy against it (constraints.txt)"
    shim = icc.copy
    assert isinstance(shim, _jit.OneScopeCopy)
    try:
        assert _jit.share_scope_copies(False) is None
        assert icc.copy is __import__("copy") and not hasattr(icc.InlineWorker.inline_ir, "__wrapped__")
    finally:
        again = _jit.share_scope_copies()
    assert again is not None and icc.copy is again
    assert _jit.share_scope_copies() is again  # installing twice changes nothing


# ----------------------------------------------------------------------------- SparseSsa and live_map_bits
def _kernels() -> list[object]:
    """Python functions of the compiled kernels, large and small: their untyped IR has hundreds of blocks, loops,
    early returns and variables assigned many times."""
    from foliosim.check import fastexplore
    from foliosim.fast import kernels
    from foliosim.fast.sim import kern

    return [kernels.apply_op.py_func, kernels._owner_add.py_func, fastexplore.expand.py_func,
            kern.split_folio.py_func, kern.zap.py_func]


def _ssa_text(func: object, sparse: bool) -> str:
    """The IR of ``func`` after SSA reconstruction by numba's own code or by SparseSsa, as text (fresh names
    included). Each run makes its IR from the bytecode anew: the rewrite names variables in the IR's scope."""
    from numba.core import compiler, ssa

    ir = compiler.run_frontend(func)
    shim = _jit.sparse_ssa(True)
    assert shim is not None
    if sparse:
        blocks = shim.run(ir.blocks)
    else:
        _jit.sparse_ssa(False)
        try:
            blocks = ssa._run_ssa(ir.blocks)
        finally:
            _jit.sparse_ssa(True)
    return "\n".join(f"{label}:\n" + "\n".join(f"  {stmt}" for stmt in block.body) for label, block in blocks.items())


@pytest.mark.parametrize("index", range(5))
def test_sparse_ssa_rewrites_the_kernels_as_numba_does(index: int) -> None:
    func = _kernels()[index]
    shim = _jit.sparse_ssa(True)
    assert shim is not None
    copied = shim.blocks_copied
    sparse = _ssa_text(func, True)
    assert shim.blocks_copied > copied  # blocks that do not name a violator were copied without numba's handler
    assert sparse == _ssa_text(func, False)
    assert "phi(" in sparse  # the functions have variables assigned on two paths


@pytest.mark.parametrize("index", range(5))
def test_live_map_bits_is_numbas_live_map(index: int) -> None:
    from numba.core import analysis, compiler

    ir = compiler.run_frontend(_kernels()[index])
    cfg = analysis.compute_cfg_from_blocks(ir.blocks)
    usedefs = analysis.compute_use_defs(ir.blocks)
    _jit.bit_liveness(False)
    try:
        numba_own = analysis.compute_live_map(cfg, ir.blocks, usedefs.usemap, usedefs.defmap)
    finally:
        assert _jit.bit_liveness(True)
    ours = _jit.live_map_bits(cfg, ir.blocks, usedefs.usemap, usedefs.defmap)
    assert list(ours) == list(numba_own) and ours == numba_own
    assert any(ours[label] != usedefs.usemap[label] for label in ours)  # liveness did flow between blocks


def test_live_map_bits_on_a_graph_with_loops_and_dead_blocks() -> None:
    """A hand-made graph: a loop (its back edge), a block nothing reaches, and a variable defined in the loop."""
    from numba.core.controlflow import CFGraph

    cfg = CFGraph()
    for label in (0, 1, 2, 3, 9):
        cfg.add_node(label)
    for a, b in ((0, 1), (1, 2), (2, 1), (1, 3), (9, 3)):
        cfg.add_edge(a, b)
    cfg.set_entry_point(0)
    cfg.process()
    blocks = {label: None for label in (0, 1, 2, 3, 9)}
    use = {0: set(), 1: {"i"}, 2: {"i", "x"}, 3: {"y", "z"}, 9: set()}
    defs = {0: {"i", "x", "y"}, 1: set(), 2: {"i"}, 3: set(), 9: {"z"}}
    live = _jit.live_map_bits(cfg, blocks, use, defs)  # type: ignore[arg-type]
    _jit.bit_liveness(False)
    try:
        from numba.core import analysis

        assert live == analysis.compute_live_map(cfg, blocks, use, defs)
    finally:
        assert _jit.bit_liveness(True)
    # x and y are used after the loop's blocks, defined before them: live through them; z comes only from the dead
    # block 9, so it is live at 3 (used there) but nowhere above it
    assert live == {0: set(), 1: {"i", "x", "y"}, 2: {"i", "x", "y"}, 3: {"y", "z"}, 9: set()}


def test_the_compile_shims_install_once_and_come_off() -> None:
    from numba.core import analysis, ir_utils, ssa

    shim = _jit.sparse_ssa()
    assert shim is not None and ssa._run_ssa == shim.run, "numba's SSA module changed: check SparseSsa against it"
    assert _jit.bit_liveness() and analysis.compute_live_map is _jit.live_map_bits
    try:
        assert _jit.sparse_ssa(False) is None and not hasattr(ssa._run_ssa, "__self__")
        assert not _jit.bit_liveness(False)
        assert analysis.compute_live_map is not _jit.live_map_bits
        assert ir_utils.compute_live_map is analysis.compute_live_map
    finally:
        again = _jit.sparse_ssa()
        assert _jit.bit_liveness()
    assert again is not None and _jit.sparse_ssa() is again
    assert ir_utils.compute_live_map is _jit.live_map_bits
