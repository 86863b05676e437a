"""The compiled trace generator (foliosim.trace.genfast) against the reference generator, draw for draw."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pytest

from foliosim.trace.columnar import from_generated, generated_columnar
from foliosim.trace.generate import (
    DUP,
    LEVEL_PMD,
    LEVEL_PTE,
    MAP,
    STANDARD_MIX,
    STANDARD_SPEC,
    UNMAP,
    TraceSpec,
    fill_columns,
    folio_name,
    generate_reference,
    mm_name,
    setup_ops,
)

genfast = pytest.importorskip("foliosim.trace.genfast")
if not genfast.HAVE_NUMBA:  # pragma: no cover - depends on the environment
    pytest.skip("numba is not installed: the compiled generator is not used", allow_module_level=True)

Cols = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _columns(n: int) -> Cols:
    return (np.full(n, 99, np.uint8), np.full(n, -7, np.int32), np.full(n, -7, np.int32), np.full(n, 99, np.uint8),
            np.full(n, -7, np.int32), np.full(n, -7, np.int32))


def _fast(spec: TraceSpec, mix: tuple[tuple[tuple[int, int], float], ...] = STANDARD_MIX, **kw: int) -> list[tuple]:
    cols = _columns(spec.n_ops)
    genfast.generate_columns(spec.seed, spec.n_ops, spec.n_folios, spec.order, spec.n_mms, spec.map_range,
                             spec.unmap_range, spec.cap_per_page, mix, (MAP, DUP, UNMAP), *cols, **kw)
    return list(zip(*(c.tolist() for c in cols), strict=True))


SPECS = [
    TraceSpec(n_ops=20_000, seed=1),  # the standard shape
    TraceSpec(n_ops=20_000, seed=20250303),
    TraceSpec(n_ops=10_000, n_folios=4, order=3, n_mms=3, seed=7),
    TraceSpec(n_ops=10_000, n_folios=3, order=0, n_mms=2, seed=5),  # no PMDs at all
    TraceSpec(n_ops=10_000, n_folios=8, order=1, n_mms=8, seed=11),
    TraceSpec(n_ops=10_000, n_folios=2, order=9, n_mms=2, seed=12, map_range=300, unmap_range=40),
    TraceSpec(n_ops=10_000, n_folios=5, order=4, n_mms=3, seed=13, cap_per_page=2),  # owes a lot
    TraceSpec(n_ops=10_000, n_folios=1, order=4, n_mms=1, seed=14, cap_per_page=1, map_range=1, unmap_range=1),
]


@pytest.mark.parametrize("spec", SPECS,
                         ids=lambda s: f"f{s.n_folios}-o{s.order}-m{s.n_mms}-s{s.seed}-c{s.cap_per_page}")
def test_compiled_generator_yields_the_reference_operations(spec: TraceSpec) -> None:
    assert _fast(spec) == list(generate_reference(spec))


def test_other_mixes_and_duplicate_entries_are_reproduced() -> None:
    spec = TraceSpec(n_ops=8000, n_folios=6, order=2, n_mms=4, seed=3)
    mixes = [
        (((MAP, LEVEL_PTE), 1.0), ((UNMAP, LEVEL_PTE), 1.0)),
        (((UNMAP, LEVEL_PMD), 5.0), ((MAP, LEVEL_PMD), 1), ((DUP, LEVEL_PMD), 1), ((MAP, LEVEL_PTE), 0.5)),
        (((MAP, LEVEL_PTE), 0.3), ((DUP, LEVEL_PTE), 0.3), ((MAP, LEVEL_PTE), 0.1), ((UNMAP, LEVEL_PTE), 0.3)),
    ]
    for mix in mixes:
        assert _fast(spec, mix) == list(generate_reference(spec, mix)), mix


def test_resuming_and_growing_the_owed_list_changes_nothing() -> None:
    spec = TraceSpec(n_ops=12_000, n_folios=5, order=4, n_mms=3, seed=13, cap_per_page=2)
    want = list(generate_reference(spec))
    seen: list[int] = []
    assert _fast(spec, chunk=777, owed_cap=1, progress=seen.append) == want
    assert seen[:3] == [777, 1554, 2331] and seen[-1] == spec.n_ops
    assert _fast(spec, chunk=5000, owed_cap=64) == want


def test_owed_operations_are_counted_and_reported() -> None:
    spec = TraceSpec(n_ops=12_000, n_folios=5, order=4, n_mms=3, seed=13, cap_per_page=2)
    cols = _columns(spec.n_ops)
    stats = genfast.generate_columns(spec.seed, spec.n_ops, spec.n_folios, spec.order, spec.n_mms, spec.map_range,
                                     spec.unmap_range, spec.cap_per_page, STANDARD_MIX, (0, 1, 2), *cols, owed_cap=1)
    assert stats["draws"] > spec.n_ops and stats["full shuffles"] > 0 and stats["owed at the end"] > 0


def test_mersenne_twister_outputs_match_python_random() -> None:
    rng = random.Random(123456789)
    state = rng.getstate()[1]
    mt = np.array(state[:genfast.MT_N], dtype=np.uint32)
    buf = np.zeros(genfast.MT_N, dtype=np.int64)
    genfast._temper(mt, buf)
    pos = state[genfast.MT_N]
    got = []
    for _ in range(2000):  # crosses three refills
        value, pos = genfast._next32(mt, buf, pos)
        got.append(int(value))
    assert got == [rng.getrandbits(32) for _ in range(2000)]
    rng2 = random.Random(5)
    st = rng2.getstate()[1]
    mt2 = np.array(st[:genfast.MT_N], dtype=np.uint32)
    genfast._temper(mt2, buf)
    pos = st[genfast.MT_N]
    for n in (1, 2, 3, 191, 192, 1000, (1 << 31) + 5):
        value, pos = genfast._randbelow(mt2, buf, pos, n)
        assert value == rng2.randrange(n), n
    value2, pos = genfast._random(mt2, buf, pos)
    assert value2 == rng2.random()


def test_fill_columns_engines_agree_and_refuse_bad_requests() -> None:
    spec = TraceSpec(n_ops=3000, n_folios=4, order=3, n_mms=3, seed=9)
    fast, ref = _columns(spec.n_ops + 5), _columns(spec.n_ops + 5)
    assert fill_columns(spec, *fast, base=5, kind_codes=(5, 6, 7), engine="fast") == "fast"
    assert fill_columns(spec, *ref, base=5, kind_codes=(5, 6, 7), engine="reference") == "reference"
    for a, b in zip(fast, ref, strict=True):
        assert np.array_equal(a, b)
        assert a[0] in (99, -7)  # rows before ``base`` untouched
    assert set(fast[0][5:].tolist()) <= {5, 6, 7}
    with pytest.raises(ValueError, match="engine"):
        fill_columns(spec, *fast, engine="turbo")


def test_generated_columnar_equals_the_reference_columns() -> None:
    spec = TraceSpec(n_ops=6000, n_folios=7, order=4, n_mms=3, seed=21)
    fast = generated_columnar(spec)
    ref = from_generated(setup_ops(spec), generate_reference(spec), [mm_name(i) for i in range(spec.n_mms)],
                         [folio_name(i) for i in range(spec.n_folios)], total=spec.n_ops)
    for name in ("kind", "folio", "mm", "level", "page", "nr", "order", "line"):
        a, b = getattr(fast, name), getattr(ref, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert fast.folio_names == ref.folio_names and fast.mm_names == ref.mm_names and fast.raw == ref.raw == {}
    assert generated_columnar(spec, engine="reference").kind.tobytes() == fast.kind.tobytes()


#: SHA-256 of the standard trace's operation columns (kind, folio, mm, level, page, nr as little-endian
#: bytes, in that order), as the reference generator wrote them before the compiled one existed
#: (`foliosim trace-generate` at commit 6edf870: 1,892 s; the compiled generator matches all 13 arrays).
STANDARD_DIGEST = "756f8ebe9bfa673e2deef71a77777ac7187b9bd3f2d7d14a429d9c13e63f55b9"


def columns_digest(trace: object) -> str:
    h = hashlib.sha256()
    for name in ("kind", "folio", "mm", "level", "page", "nr"):
        h.update(np.ascontiguousarray(getattr(trace, name)).tobytes())
    return h.hexdigest()


@pytest.mark.slow
def test_standard_trace_is_the_one_the_reference_generator_wrote() -> None:
    assert columns_digest(generated_columnar(STANDARD_SPEC)) == STANDARD_DIGEST


def test_trace_generate_engines_write_the_same_trace(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from foliosim.cli import main
    from foliosim.trace.columnar import read_npz

    out = {}
    for engine in ("fast", "reference"):
        path = tmp_path / f"{engine}.npz"
        res = CliRunner().invoke(main, ["trace-generate", str(path), "--ops", "3000", "--folios", "5", "--seed", "4",
                                        "--engine", engine])
        assert res.exit_code == 0, res.output
        assert "3008 operations" in res.stderr  # 3 mm_new, 5 folio_new, 3000 generated
        out[engine] = read_npz(str(path))
    for name in ("kind", "folio", "mm", "level", "page", "nr", "order", "line"):
        assert np.array_equal(getattr(out["fast"], name), getattr(out["reference"], name)), name
    res = CliRunner().invoke(main, ["trace-generate", str(tmp_path / "x.npz"), "--ops", "10", "--engine", "turbo"])
    assert res.exit_code == 2 and not (tmp_path / "x.npz").exists()
