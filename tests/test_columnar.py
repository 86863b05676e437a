"""The columnar trace format, its conversions, and the fast-path CLI verbs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")

from click.testing import CliRunner  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from foliosim.cli import main  # noqa: E402
from foliosim.trace import columnar  # noqa: E402
from foliosim.trace.columnar import (  # noqa: E402
    KINDS,
    RAW,
    ColumnarTrace,
    TraceFormatError,
    from_jsonl_lines,
    generated_columnar,
    read_npz,
    write_npz,
)
from foliosim.trace.generate import TraceSpec, generate_ops, setup_ops  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.jsonl"))
TRACE = [
    '{"op":"mm_new","mm":"A"}',
    "# a comment",
    '{"op":"mm_new","mm":"B"}',
    '{"op":"folio_new","folio":"F","order":4}',
    '{"op":"map_new_anon","folio":"F","mm":"A","level":"pte"}',
    '{"op":"dup","folio":"F","mm":"B","level":"pte","page":2,"nr":5}',
    '{"op":"map","folio":"F","mm":"B","level":"pmd"}',
    '{"op":"unmap","folio":"F","mm":"B","level":"pte","page":"x"}',
    '{"op":"unmap","folio":"F","mm":"B","level":"pte","page":99999999999,"nr":1}',
    '{"op":"unmap","folio":"F","mm":"B","level":"pte","page":2,"nr":5}',
]


def _objs(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(x) for x in lines if x.strip() and not x.startswith("#")]


def test_jsonl_round_trip_keeps_every_operation() -> None:
    trace = from_jsonl_lines(TRACE)
    assert len(trace) == 9
    assert trace.mm_names == ["A", "B"] and trace.folio_names == ["F"]
    assert [int(x) for x in trace.kind].count(RAW) == 2  # the mistyped and the oversized page
    assert [json.loads(line) for line in trace.iter_jsonl()] == _objs(TRACE)
    assert int(trace.line[0]) == 1 and int(trace.line[1]) == 3  # source line numbers survive the comment


def test_npz_round_trip(tmp_path: Path) -> None:
    trace = from_jsonl_lines(TRACE)
    path = str(tmp_path / "t.npz")
    write_npz(trace, path)
    back = read_npz(path)
    for name in ("kind", "folio", "mm", "level", "page", "nr", "order", "line"):
        assert np.array_equal(getattr(back, name), getattr(trace, name)), name
    assert back.raw == trace.raw and back.mm_names == trace.mm_names and back.folio_names == trace.folio_names
    assert list(back.iter_jsonl()) == list(trace.iter_jsonl())


def test_generated_columns_match_the_generator() -> None:
    spec = TraceSpec(n_ops=2000, n_folios=5, order=3, n_mms=3, seed=11)
    trace = generated_columnar(spec)
    expected = [op.to_json() for op in setup_ops(spec)]
    from foliosim.trace.generate import to_op

    expected += [to_op(g).to_json() for g in generate_ops(spec)]
    assert [json.loads(line) for line in trace.iter_jsonl()] == expected


@pytest.mark.parametrize("damage", ["not_zip", "missing", "tag", "index", "dtype", "length", "raw"])
def test_read_npz_rejects_damaged_files(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "t.npz"
    write_npz(from_jsonl_lines(TRACE), str(path))
    if damage == "not_zip":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    else:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if damage == "missing":
            del arrays["nr"]
        elif damage == "tag":
            arrays["format"] = np.array(["something-else"])
        elif damage == "index":
            arrays["folio"] = arrays["folio"].copy()
            arrays["folio"][3] = 7
        elif damage == "dtype":
            arrays["page"] = arrays["page"].astype(np.int64)
        elif damage == "length":
            arrays["mm"] = arrays["mm"][:-1]
        elif damage == "raw":
            arrays["raw_index"] = arrays["raw_index"][:1]
            arrays["raw_text"] = arrays["raw_text"][:1]
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
    with pytest.raises(TraceFormatError) as info:
        read_npz(str(path))
    assert str(path) in str(info.value)


def test_conversion_refuses_a_line_that_is_not_json(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"op":"mm_new","mm":"A"}\n[1]\n')
    result = CliRunner().invoke(main, ["trace-convert", str(src), str(tmp_path / "out.npz")])
    assert result.exit_code == 1
    assert "line 2" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.npz").exists()


def test_cli_convert_both_ways(tmp_path: Path) -> None:
    src = tmp_path / "t.jsonl"
    src.write_text("\n".join(TRACE) + "\n")
    npz = tmp_path / "t.npz"
    back = tmp_path / "back.jsonl"
    runner = CliRunner()
    assert runner.invoke(main, ["trace-convert", str(src), str(npz)]).exit_code == 0
    assert zipfile.is_zipfile(npz)
    assert runner.invoke(main, ["trace-convert", str(npz), str(back)]).exit_code == 0
    assert _objs(back.read_text().splitlines()) == _objs(TRACE)


needs_numba = pytest.mark.skipif(not __import__("foliosim.fast", fromlist=["HAVE_NUMBA"]).HAVE_NUMBA,
                                 reason="numba is not installed")


@needs_numba
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("flags", [[], ["--word-bits", "32"], ["--no-page-mapcount"]])
def test_cli_fast_replay_prints_what_replay_prints(tmp_path: Path, path: Path, flags: list[str]) -> None:
    runner = CliRunner()
    expected = runner.invoke(main, ["replay", str(path), *flags])
    got = runner.invoke(main, ["fast-replay", str(path), *flags])
    assert (got.exit_code, got.output) == (expected.exit_code, expected.output)
    npz = tmp_path / "t.npz"
    assert runner.invoke(main, ["trace-convert", str(path), str(npz)]).exit_code == 0
    from_binary = runner.invoke(main, ["fast-replay", str(npz), *flags])
    assert (from_binary.exit_code, from_binary.output) == (expected.exit_code, expected.output)


@needs_numba
def test_cli_fast_replay_rejections_and_final_only(tmp_path: Path) -> None:
    src = tmp_path / "t.jsonl"
    src.write_text("\n".join(TRACE) + "\n")
    runner = CliRunner()
    for extra in ([], ["--keep-going"]):
        expected = runner.invoke(main, ["replay", str(src), *extra])
        got = runner.invoke(main, ["fast-replay", str(src), *extra])
        assert (got.exit_code, got.output) == (expected.exit_code, expected.output) and got.exit_code == 3
        fast = runner.invoke(main, ["fast-replay", str(src), "--final-only", *extra])
        ref = runner.invoke(main, ["fast-replay", str(src), "--final-only", "--engine", "reference", *extra])
        assert (fast.exit_code, fast.output) == (ref.exit_code, ref.output)
    final = [json.loads(x) for x in fast.output.splitlines()]
    assert [r.get("op") for r in final] == ["unmap", "unmap", "final"]
    assert final[-1]["folio"] == "F" and final[-1]["mapped_mms"] == ["A", "B"]


@needs_numba
@pytest.mark.parametrize("args", [["fast-replay", "/nonexistent/t.npz"], ["fast-replay", "{corrupt}"]])
def test_cli_fast_replay_bad_files(tmp_path: Path, args: list[str]) -> None:
    if args[1] == "{corrupt}":
        bad = tmp_path / "bad.npz"
        bad.write_bytes(b"PK\x03\x04garbage")
        args = [args[0], str(bad)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 1 and "error" in json.loads(lines[0]) and "Traceback" not in result.output


@needs_numba
def test_cli_trace_generate(tmp_path: Path) -> None:
    out = tmp_path / "g.npz"
    result = CliRunner().invoke(main, ["trace-generate", str(out), "--ops", "500", "--folios", "4"])
    assert result.exit_code == 0
    trace = read_npz(str(out))
    assert len(trace) == 500 + 3 + 4
    replayed = CliRunner().invoke(main, ["fast-replay", str(out), "--final-only"])
    assert replayed.exit_code == 0
    assert len(replayed.output.splitlines()) == 4  # every generated operation is valid


def test_fast_modules_import_and_run_without_numba() -> None:
    """Without numba the kernels run as plain Python and give the reference's records."""
    code = """
import sys
sys.modules["numba"] = None
from foliosim.fast import HAVE_NUMBA
from foliosim.fast.replay import FastReplay, reference_records
from foliosim.trace.columnar import from_jsonl_lines
lines = open(sys.argv[1]).read().splitlines()
assert not HAVE_NUMBA
assert list(FastReplay(from_jsonl_lines(lines)).records(True)) == list(reference_records(lines, None, True))
print("ok")
"""
    src = ROOT / "examples" / "commit-example-2.jsonl"
    done = subprocess.run([sys.executable, "-c", code, str(src)], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


@needs_numba
def test_cli_fast_replay_reads_stdin() -> None:
    text = "\n".join(TRACE) + "\n"
    runner = CliRunner()
    expected = runner.invoke(main, ["replay", "-", "--keep-going"], input=text)
    got = runner.invoke(main, ["fast-replay", "-", "--keep-going"], input=text)
    assert (got.exit_code, got.output) == (expected.exit_code, expected.output)
    ref = runner.invoke(main, ["fast-replay", "-", "--final-only", "--engine", "reference"], input=text)
    fast = runner.invoke(main, ["fast-replay", "-", "--final-only"], input=text)
    assert (fast.exit_code, fast.output) == (ref.exit_code, ref.output)


def test_read_npz_maps_uncompressed_columns_and_reads_compressed_ones(tmp_path: Path) -> None:
    trace = generated_columnar(TraceSpec(n_ops=3000, n_folios=5, seed=4))
    plain, packed = tmp_path / "plain.npz", tmp_path / "packed.npz"
    write_npz(trace, str(plain))
    with np.load(plain, allow_pickle=False) as data:
        np.savez_compressed(packed, **{k: data[k] for k in data.files})
    for path in (plain, packed):
        back = read_npz(str(path))
        for name in ("kind", "folio", "mm", "level", "page", "nr", "order", "line"):
            col = getattr(back, name)
            assert np.array_equal(col, getattr(trace, name)) and col.flags.writeable, (path.name, name)
    assert isinstance(read_npz(str(plain)).kind.base, memoryview)  # a view of the file mapping
    assert not isinstance(read_npz(str(packed)).kind.base, memoryview)


@pytest.mark.parametrize("damage", ["kind", "folio", "mm_missing", "level", "nr", "page", "mm_range"])
def test_validation_finds_a_bad_row_in_a_later_chunk(damage: str) -> None:
    trace = generated_columnar(TraceSpec(n_ops=70_000, seed=6))
    trace.validate()
    at = 69_000  # past the first 65,536-row chunk
    col = {"kind": "kind", "folio": "folio", "mm_missing": "mm", "level": "level", "nr": "nr", "page": "page",
           "mm_range": "mm"}[damage]
    value = {"kind": 9, "folio": -1, "mm_missing": -1, "level": 255, "nr": 0, "page": -3, "mm_range": 3}[damage]
    getattr(trace, col)[at] = value
    with pytest.raises(TraceFormatError, match=f"operation {at}"):
        trace.validate()


def _row_ok(kind: int, folio: int, mm: int, level: int, nr: int, page: int, n_folios: int, n_mms: int) -> bool:
    """The per-row rules of the columnar format, one row at a time, from the operation names."""
    if kind > RAW or not (-1 <= folio < n_folios and -1 <= mm < n_mms):
        return False
    if kind == RAW:
        return True
    name = KINDS[kind]
    needs_folio = name not in ("mm_new", "mm_free")
    needs_mm = name in ("mm_new", "mm_free", "map_new_anon", "map", "dup", "unmap")
    needs_level = name in ("map_new_anon", "map", "dup", "unmap")
    return ((folio >= 0) == needs_folio and (mm >= 0) == needs_mm and (level in (0, 1)) == needs_level
            and nr >= 1 and page >= 0)


@st.composite
def _rows(draw: st.DrawFn) -> list[tuple[int, ...]]:
    """Rows that follow the rules for their kind (RAW rows: anything in range), then up to two fields damaged."""
    rows = []
    for kind in draw(st.lists(st.integers(0, RAW), min_size=1, max_size=30)):
        name = KINDS[kind] if kind < RAW else "raw"
        folio = draw(st.integers(0, 2)) if name not in ("mm_new", "mm_free", "raw") else -1
        mm = draw(st.integers(0, 1)) if name not in ("folio_new", "folio_free", "raw") else -1
        level = draw(st.sampled_from([0, 1])) if name in ("map_new_anon", "map", "dup", "unmap") else 255
        if name == "raw":
            folio, mm, level = draw(st.integers(-1, 2)), draw(st.integers(-1, 1)), draw(st.sampled_from([0, 2, 255]))
        rows.append([kind, folio, mm, level, draw(st.integers(1, 3)), draw(st.integers(0, 2))])
    for _ in range(draw(st.integers(0, 2))):
        row, field = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, 5))
        values = [st.integers(0, 9), st.integers(-2, 3), st.integers(-2, 2), st.sampled_from([0, 1, 2, 255]),
                  st.integers(-1, 2), st.integers(-1, 2)]
        rows[row][field] = draw(values[field])
    return [tuple(r) for r in rows]


@settings(max_examples=500, deadline=None)
@given(rows=_rows(), chunk=st.integers(1, 8))
def test_row_checks_agree_with_the_per_row_rules(rows: list[tuple[int, ...]], chunk: int) -> None:
    """validate() accepts a trace exactly when every row follows the rules, whatever the chunking (each chunk
    with or without RAW rows, nr/page out of range, or a kind code beyond RAW), and names a bad row otherwise."""
    cols = list(zip(*rows, strict=True))
    trace = ColumnarTrace(kind=np.array(cols[0], dtype=np.uint8), folio=np.array(cols[1], dtype=np.int32),
                          mm=np.array(cols[2], dtype=np.int32), level=np.array(cols[3], dtype=np.uint8),
                          nr=np.array(cols[4], dtype=np.int32), page=np.array(cols[5], dtype=np.int32),
                          order=np.zeros(len(rows), dtype=np.int8), line=np.arange(1, len(rows) + 1, dtype=np.int32),
                          folio_names=["F", "G", "H"], mm_names=["A", "B"],
                          raw={i: "{}" for i, r in enumerate(rows) if r[0] == RAW})
    expected = all(_row_ok(*r, 3, 2) for r in rows)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(columnar, "_CHUNK", chunk)
        assert trace._rows_ok() is expected
        if expected:
            trace.validate()
        else:
            with pytest.raises(TraceFormatError, match="operation"):
                trace.validate()


_BLAS_PROBE = """
import os, sys
from foliosim.cli import _numpy_without_blas_threads
with _numpy_without_blas_threads():
    import numpy
print(len(os.listdir("/proc/self/task")), os.environ.get("OPENBLAS_NUM_THREADS"))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc")
@pytest.mark.parametrize("preset", [None, "2"])
def test_fast_replay_imports_numpy_without_blas_threads(preset: str | None) -> None:
    """No OpenBLAS worker threads (they spin on a CPU at start-up), the environment as it was, a user's value kept."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT / "src")
    if preset is not None:
        env["OPENBLAS_NUM_THREADS"] = preset
    out = subprocess.run([sys.executable, "-c", _BLAS_PROBE], env=env, capture_output=True, text=True, check=True)
    threads, value = out.stdout.split()
    assert value == (preset or "None")
    if preset is None:
        assert threads == "1"


_EXIT_PROBE = """
import atexit, gc, sys
atexit.register(lambda: sys.stderr.write(f"frozen={gc.get_freeze_count() > 0}\\n"))  # runs after the verb's handler
from foliosim.cli import main
main()
"""


@needs_numba
def test_cli_fast_replay_skips_the_exit_collections(tmp_path: Path) -> None:
    """After printing everything, fast-replay freezes the heap at exit (once, its output complete) instead of letting
    the interpreter collect cycles over it."""
    src = tmp_path / "t.jsonl"
    src.write_text("\n".join(TRACE[:6]) + "\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-c", _EXIT_PROBE, "fast-replay", "--final-only", str(src)], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr.strip().endswith("frozen=True")
    assert [json.loads(x)["op"] for x in out.stdout.splitlines()] == ["final"]
