"""Differential tests: the compiled fast path against the reference model.

After every operation of random traces (mostly valid, some invalid), for
every configuration, every field of every folio, the ground truth, the MMs and
the MM id allocator must be identical, the same operations must be rejected,
and the replay records (rejection messages included) must be equal. A
failure prints the seed and the trace as JSON Lines that ``foliosim replay``
reruns.
"""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("numpy")
pytest.importorskip("numba")

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from foliosim.errors import Rejected
from foliosim.fast import kernels as K
from foliosim.fast.replay import FastReplay, reference_records
from foliosim.fast.state import FastState, capacity_orders
from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD, PTE, RmapResult
from foliosim.system import Op, RmapSystem
from foliosim.trace.columnar import from_jsonl_lines, from_ops, read_npz, write_npz
from foliosim.trace.replay import ReplayStatus, replay

CONFIGS = [KernelConfig(64, False), KernelConfig(64, True), KernelConfig(32, False), KernelConfig(32, True)]
CONFIG_IDS = ["64bit-pmc", "64bit-nopmc", "32bit-pmc", "32bit-nopmc"]
MM_POOL = ["A", "B", "C", "D"]
FOLIO_POOL = ["F", "G", "H"]
ORDERS = [0, 1, 1, 2, 3, 4, 9]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)


# -- random traces guided by the reference state ----------------------------------------

def _run(rng: random.Random, ok: list[bool], npages: int) -> tuple[int, int]:
    """A random run of pages where ``ok`` holds (or any range when none does)."""
    candidates = [i for i, flag in enumerate(ok) if flag]
    if not candidates:
        page = rng.randrange(npages)
        return page, rng.randint(1, npages - page)
    start = end = rng.choice(candidates)
    want = rng.randint(1, npages)
    while end - start + 1 < want and end + 1 < npages and ok[end + 1]:
        end += 1
    while end - start + 1 < want and start > 0 and ok[start - 1]:
        start -= 1
    return start, end - start + 1


def draw_op(rng: random.Random, system: RmapSystem, orders: list[int], invalid: float) -> Op:
    """One operation, valid most of the time given ``system``'s state."""
    live_mms = list(system.mms)
    mm = rng.choice(live_mms) if live_mms and rng.random() > invalid else rng.choice(MM_POOL)
    live_folios = list(system.folios)
    folio = rng.choice(live_folios) if live_folios and rng.random() > invalid else rng.choice(FOLIO_POOL)
    free_mms = [name for name in MM_POOL if name not in system.mms]
    free_folios = [name for name in FOLIO_POOL if name not in system.folios]
    if free_mms and len(live_mms) < 2 and rng.random() < 0.5:
        return Op("mm_new", mm=rng.choice(free_mms))
    if free_folios and not live_folios and rng.random() < 0.5:
        return Op("folio_new", folio=rng.choice(free_folios), order=rng.choice(orders))
    r = rng.random()
    if r < 0.05:
        return Op("mm_new", mm=rng.choice(free_mms) if free_mms and rng.random() > invalid else rng.choice(MM_POOL))
    if r < 0.07:
        return Op("mm_free", mm=mm)
    if r < 0.11:
        order = rng.choice(orders) if rng.random() > invalid else rng.choice([-1, 21, 127])
        return Op("folio_new", folio=rng.choice(FOLIO_POOL), order=order)
    if r < 0.14:
        return Op("folio_free", folio=folio)
    handle = system.folios.get(folio)
    if r < 0.22:
        level = PMD if handle is not None and handle.folio.order >= system.config.pmd_order else PTE
        if rng.random() < invalid:
            level = PTE if level is PMD else PMD
        return Op("map_new_anon", mm=mm, folio=folio, level=level)
    kind = rng.choice(["map", "map", "dup", "unmap", "unmap", "unmap"])
    if handle is None or handle.folio.order == 0 or rng.random() < 0.3:
        level = PMD if handle is None or handle.folio.order > 0 or rng.random() < invalid else PTE
        if level is PMD:
            if kind == "unmap" and handle is not None and handle.truth.pmd and rng.random() > invalid:
                mm = rng.choice(list(handle.truth.pmd))
            return Op(kind, mm=mm, folio=folio, level=PMD)
    assert handle is not None
    npages = handle.folio.nr_pages
    truth = handle.truth
    if kind == "unmap" and truth.pte and rng.random() > invalid:
        mm = rng.choice(list(truth.pte))
        page, nr = _run(rng, [c > 0 for c in truth.pte[mm]], npages)
    elif kind == "dup" and rng.random() > invalid:
        page, nr = _run(rng, [truth.pte_mapcount(p) > 0 for p in range(npages)], npages)
    else:
        page = rng.randrange(npages)
        nr = rng.randint(1, npages - page)
    if rng.random() < invalid / 2:
        nr += rng.randint(1, 3)  # out of the folio
    return Op(kind, mm=mm, folio=folio, level=PTE, page=page, nr=nr)


def random_ops(seed: int, n: int, config: KernelConfig, orders: list[int] | None = None,
               invalid: float = 0.08) -> list[Op]:
    rng = random.Random(seed)
    system = RmapSystem(config)
    ops = []
    for _ in range(n):
        op = draw_op(rng, system, orders or ORDERS, invalid)
        with contextlib.suppress(Rejected):
            system.apply(op)
        ops.append(op)
    return ops


def trace_text(ops: list[Op]) -> str:
    return "\n".join(json.dumps(op.to_json(), separators=(",", ":")) for op in ops)


# -- comparison --------------------------------------------------------------------------

def observable(system: RmapSystem) -> Any:
    """Every field of every folio, the ground truth, the MMs and the allocator."""
    return (
        [(name, h.folio.key(), sorted((k, tuple(v)) for k, v in h.truth.pte.items()),
          sorted(h.truth.pmd.items()), sorted(h.truth.total.items()))
         for name, h in system.folios.items()],
        sorted((h.name, h.mm_id, h.nr_mappings) for h in system.mms.values()),
        system.ids.peek(),
    )


def run_stepwise(ops: list[Op], config: KernelConfig) -> None:
    """Apply ``ops`` to both models, comparing everything after each operation."""
    col = from_ops(ops)
    state = FastState(config, col.folio_names, col.mm_names,
                      capacity_orders(col.kind, col.folio, col.order, len(col.folio_names)))
    ref = RmapSystem(config)
    for i, op in enumerate(ops):
        try:
            result = ref.apply(op)
            ref_event: int | None = -1
            if isinstance(result, RmapResult) and result.owner is not None:
                ref_event = int(result.owner)
        except Rejected:
            ref_event = None
        event = K.apply_op(*state.arrays(), int(col.kind[i]), int(col.folio[i]), int(col.mm[i]),
                           int(col.level[i]), int(col.page[i]), int(col.nr[i]), int(col.order[i]))
        where = f"step {i} ({json.dumps(op.to_json())}), {config.describe()}"
        assert (event == -2) == (ref_event is None), f"{where}: fast rejected={event == -2}, reference={ref_event}"
        if ref_event is not None:
            assert event == ref_event, f"{where}: owner event {event} != {ref_event}"
        assert observable(state.export_system()) == observable(ref), f"{where}: states differ"


# -- tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 150))
def test_every_field_after_every_op(config: KernelConfig, seed: int, n: int) -> None:
    ops = random_ops(seed, n, config)
    note(f"seed={seed}; trace:\n{trace_text(ops)}")
    run_stepwise(ops, config)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 120), keep_going=st.booleans())
def test_replay_records_equal_reference(config: KernelConfig, seed: int, n: int, keep_going: bool) -> None:
    rng = random.Random(seed)
    lines = trace_text(random_ops(seed, n, config, invalid=0.15)).splitlines()
    # Lines the parser rejects, comments and blank lines, which the columns keep as RAW or skip.
    junk = ['{"op":"map","folio":"F"}', '{"op":"bogus"}', '{"op":"map","folio":"F","mm":"A","level":"pte",'
            '"page":"0"}', '{"op":"unmap","folio":"F","mm":"A","level":"pte","page":4294967296}',
            '{"op":"folio_new","folio":"Z","order":300}', "# comment", "", '{"op":"mm_new","mm":7}']
    for _ in range(rng.randint(0, 4)):
        lines.insert(rng.randint(0, len(lines)), rng.choice(junk))
    note(f"seed={seed}; trace:\n" + "\n".join(lines))
    ref_status, fast_status = ReplayStatus(), ReplayStatus()
    expected = list(replay(lines, config, keep_going, ref_status))
    got = list(FastReplay(from_jsonl_lines(lines), config).records(keep_going, fast_status))
    assert got == expected
    assert (fast_status.exit_code, fast_status.steps, fast_status.rejected) == (
        ref_status.exit_code, ref_status.steps, ref_status.rejected)
    final_ref = list(reference_records(lines, config, keep_going, final_only=True))
    final_fast = list(FastReplay(from_jsonl_lines(lines), config).records(keep_going, final_only=True))
    assert final_fast == final_ref


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_bad_line_stops_like_reference(config: KernelConfig) -> None:
    lines = ['{"op":"mm_new","mm":"A"}', '{"op":"folio_new","folio":"F","order":2}',
             '{"op":"map_new_anon","folio":"F","mm":"A","level":"pte"}', "[1, 2]",
             '{"op":"mm_new","mm":"B"}']
    ref_status, fast_status = ReplayStatus(), ReplayStatus()
    expected = list(replay(lines, config, True, ref_status))
    assert list(FastReplay(from_jsonl_lines(lines), config).records(True, fast_status)) == expected
    assert fast_status.exit_code == ref_status.exit_code == 1
    assert expected[-1]["line"] == 4


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_npz_round_trip_replays_identically(config: KernelConfig, tmp_path: Any) -> None:
    lines = trace_text(random_ops(7, 300, config, invalid=0.1)).splitlines()
    lines.insert(5, '{"op":"map","folio":"F","mm":"A","level":"pte","page":-3}')
    path = str(tmp_path / "t.npz")
    write_npz(from_jsonl_lines(lines), path)
    expected = list(replay(lines, config, True))
    assert list(FastReplay(read_npz(path), config).records(True)) == expected


def test_32bit_per_mm_overflow_and_untrackable_orders() -> None:
    """The 32-bit short per-MM mapcount overflow (slot freed, shared bit set) and order-16 rejection."""
    config = KernelConfig(32, False)
    n = 1 << 14
    ops = [Op("mm_new", mm="A"), Op("mm_new", mm="B"), Op("folio_new", folio="F", order=14),
           Op("map_new_anon", mm="A", folio="F", level=PMD)]
    ops += [Op("map", mm="A", folio="F", level=PTE, page=0, nr=n)] * 3  # 1 + 2 * 16384 - 1 > SHRT_MAX
    ops += [Op("map", mm="B", folio="F", level=PMD), Op("dup", mm="B", folio="F", level=PTE, page=3, nr=9)]
    ops += [Op("unmap", mm="A", folio="F", level=PTE, page=0, nr=n)] * 2
    ops += [Op("folio_new", folio="G", order=16), Op("map", mm="A", folio="G", level=PTE, page=0, nr=1)]
    run_stepwise(ops, config)
    ref = RmapSystem(config)
    events = [ref.apply(op) for op in ops[:7]]
    assert isinstance(events[5], RmapResult) and events[5].owner is not None
    assert events[5].owner.name == "ADD_OVERFLOW0"  # the scenario reaches the overflow branch
    run_stepwise(ops, KernelConfig(64, False))


def test_mm_id_reuse_and_exhaustion() -> None:
    """Lowest-free MM id reuse, and -ENOSPC when every id is taken (small id space via many MMs)."""
    ops = [Op("mm_new", mm=f"M{i}") for i in range(6)]
    ops += [Op("mm_free", mm="M2"), Op("mm_free", mm="M4"), Op("mm_new", mm="X"), Op("mm_new", mm="M2"),
            Op("mm_new", mm="M2"), Op("mm_free", mm="nope"), Op("mm_new", mm="Y")]
    for config in CONFIGS:
        run_stepwise(ops, config)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 150))
def test_rejection_changes_no_array(config: KernelConfig, seed: int, n: int) -> None:
    """A rejected operation leaves every state array as it was, the per-page PTE totals that no export
    shows included (apply_op checks before it changes anything)."""
    np = pytest.importorskip("numpy")
    ops = random_ops(seed, n, config, invalid=0.3)
    note(f"seed={seed}; trace:\n{trace_text(ops)}")
    col = from_ops(ops)
    state = FastState(config, col.folio_names, col.mm_names,
                      capacity_orders(col.kind, col.folio, col.order, len(col.folio_names)))
    for i, op in enumerate(ops):
        before = [a.copy() for a in state.arrays()]
        event = K.apply_op(*state.arrays(), int(col.kind[i]), int(col.folio[i]), int(col.mm[i]),
                           int(col.level[i]), int(col.page[i]), int(col.nr[i]), int(col.order[i]))
        if event == -2:
            changed = [j for j, (a, b) in enumerate(zip(state.arrays(), before, strict=True))
                       if not np.array_equal(a, b)]
            assert not changed, f"step {i} ({json.dumps(op.to_json())}) rejected but changed arrays {changed}"


@pytest.mark.slow
@pytest.mark.skipif("not config.getoption('--runslow', default=False)", reason="slow: run with --runslow")
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 600))
def test_every_field_long_traces(config: KernelConfig, seed: int, n: int) -> None:
    ops = random_ops(seed, n, config, orders=[0, 1, 2, 4, 5, 9, 10])
    note(f"seed={seed}; trace:\n{trace_text(ops)}")
    run_stepwise(ops, config)


def test_mm_id_space_exhaustion_32bit() -> None:
    """32-bit kernels have 32767 MM ids: the next mm_new is -ENOSPC, freeing one makes room again."""
    config = KernelConfig(32, False)
    lines = [json.dumps({"op": "mm_new", "mm": f"M{i}"}) for i in range(config.mm_id_max + 1)]
    lines += ['{"op":"mm_free","mm":"M5"}', '{"op":"mm_new","mm":"late"}', '{"op":"mm_new","mm":"later"}']
    expected = list(replay(lines, config, keep_going=True))
    got = list(FastReplay(from_jsonl_lines(lines), config).records(keep_going=True))
    assert got == expected
    assert [r.get("check") for r in got if "error" in r] == ["mm_alloc_id", "mm_alloc_id"]
    assert got[-2]["mm_id"] == 6  # the freed id is handed out again


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 8), st.integers(-1, 3), st.integers(-3, 25)), max_size=30))
def test_capacity_orders_is_the_largest_valid_order_of_each_folio(rows: list[tuple[int, int, int]]) -> None:
    """Only folio_new rows with an order from 0 to MAX_ORDER and a folio count; -1 for a name never created."""
    np = pytest.importorskip("numpy")
    from foliosim.kconfig import MAX_ORDER

    kind = np.array([r[0] for r in rows], dtype=np.uint8)
    folio = np.array([r[1] for r in rows], dtype=np.int32)
    order = np.array([r[2] for r in rows], dtype=np.int8)
    expected = [max([o for k, f, o in rows if k == K.K_FOLIO_NEW and f == name and 0 <= o <= MAX_ORDER], default=-1)
                for name in range(4)]
    assert capacity_orders(kind, folio, order, 4).tolist() == expected



def _numba_env(disabled: str) -> tuple[Path, dict[str, str]]:
    """(the project root, an environment for a child Python that imports this tree's sources with
    ``NUMBA_DISABLE_JIT`` set to ``disabled``)."""
    import os

    root = Path(__file__).resolve().parents[1]
    return root, dict(os.environ, NUMBA_DISABLE_JIT=disabled,
                      PYTHONPATH=str(root / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))


#: run with NUMBA_DISABLE_JIT=1: the kernels as Python functions, against the reference model
_INTERPRETED = """
import json, random, sys
import foliosim.fast.sim  # every compiled module imports
from foliosim.fast import kernels as K
from foliosim.fast.replay import FastReplay, reference_records
from foliosim.kconfig import KernelConfig
from foliosim.trace.columnar import from_jsonl_lines
lines = sys.stdin.read().splitlines()
config = KernelConfig()
assert not hasattr(K.replay_loop, "get_call_template"), "numba compiled it"
fast = list(FastReplay(from_jsonl_lines(lines), config).records(True))
print(json.dumps([fast == list(reference_records(lines, config, True)), len(fast)]))
"""


def test_interpreted_kernels_under_numba_disable_jit() -> None:
    """numba's debugging mode (``NUMBA_DISABLE_JIT=1``: the kernels run as Python, e.g. under pdb): the fast
    modules import (``_jit.unify_calls`` gets the plain function there) and the kernels replay as the reference."""
    import subprocess
    import sys

    root, env = _numba_env("1")
    lines = trace_text(random_ops(3, 120, KernelConfig(), invalid=0.1))
    proc = subprocess.run([sys.executable, "-c", _INTERPRETED], input=lines, capture_output=True, text=True, env=env,
                          cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    same, records = json.loads(proc.stdout.strip().splitlines()[-1])
    assert same and records >= 100


def test_interpreted_simulator_under_numba_disable_jit() -> None:
    """The compiled simulator run as Python (``NUMBA_DISABLE_JIT=1``) prints what it prints compiled: forks, writes
    that copy and reuse, mprotect, a PMD split, exits (its PTE write-bit clears keep to the flag byte:
    ``layout.PW_CLEAR``)."""
    import subprocess
    import sys

    for scenario in ("prefork-server", "fork-short-lived-child-pte-thp"):
        outs = []
        for disabled in ("1", "0"):
            root, env = _numba_env(disabled)
            proc = subprocess.run([sys.executable, "-m", "foliosim", "run", f"examples/{scenario}.scenario",
                                   "--engine", "fast"], capture_output=True, text=True, env=env, cwd=root)
            assert proc.returncode == 0, f"{scenario}: {proc.stderr[-2000:]}"
            outs.append(proc.stdout)
        assert outs[0] == outs[1] and "copy-on-write" in outs[0], scenario
