"""`foliosim replay`: the contract's records, exit statuses and rejections."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from foliosim.cli import main
from foliosim.trace.replay import ReplayStatus, replay

SETUP = [
    {"op": "mm_new", "mm": "A"},
    {"op": "mm_new", "mm": "B"},
    {"op": "folio_new", "folio": "F", "order": 4},
]


def lines(ops: list[Any]) -> list[str]:
    return [json.dumps(op) if not isinstance(op, str) else op for op in ops]


def run(ops: list[Any], *args: str) -> tuple[int, list[dict[str, Any]]]:
    result = CliRunner().invoke(main, ["replay", "-", *args], input="\n".join(lines(ops)) + "\n")
    return result.exit_code, [json.loads(x) for x in result.output.splitlines()]


def test_records_follow_the_contract() -> None:
    code, out = run([*SETUP, {"op": "map", "folio": "F", "mm": "A", "level": "pte", "page": 0, "nr": 4},
                     {"op": "map", "folio": "F", "mm": "B", "level": "pmd"}])
    assert code == 0
    assert out[0] == {"step": 0, "op": "mm_new", "mm": "A", "mm_id": 1}
    rec = out[4]
    assert rec["step"] == 4 and rec["op"] == "map" and rec["folio"] == "F"
    for key in ("order", "mapcount", "entire_mapcount", "nr_pages_mapped", "entirely_mapped", "pte_mapcounts",
                "mm_id", "mm_id_mapcount", "shared_bit", "mm_ids_word", "maybe_mapped_shared", "mapped_mms"):
        assert key in rec
    assert rec["mapcount"] == 5 and rec["entire_mapcount"] == 1
    assert rec["nr_pages_mapped"] == 4 and rec["entirely_mapped"] is True
    assert rec["pte_mapcounts"] == [[1, 4], [0, 12]]
    assert rec["mm_id"] == [1, 2] and rec["mm_id_mapcount"] == [3, 0]
    assert rec["shared_bit"] is True and rec["maybe_mapped_shared"] is True
    assert rec["mm_ids_word"] == (1 << 63) | (2 << 32) | 1
    assert rec["mapped_mms"] == ["A", "B"]


def test_small_folio_and_no_page_mapcount_nulls() -> None:
    code, out = run([{"op": "mm_new", "mm": "A"}, {"op": "folio_new", "folio": "S", "order": 0},
                     {"op": "folio_new", "folio": "L", "order": 2},
                     {"op": "map", "folio": "S", "mm": "A", "level": "pte", "page": 0},
                     {"op": "map", "folio": "L", "mm": "A", "level": "pte", "page": 0}], "--no-page-mapcount")
    assert code == 0
    small, large = out[3], out[4]
    for key in ("mm_id", "mm_id_mapcount", "shared_bit", "mm_ids_word", "entire_mapcount",
                "nr_pages_mapped", "entirely_mapped"):
        assert small[key] is None
    assert small["pte_mapcounts"] == [[1, 1]]
    assert large["pte_mapcounts"] is None and large["nr_pages_mapped"] is None
    assert large["mm_id"] == [1, 0]


def test_rejection_stops_with_exit_3_and_changes_nothing() -> None:
    bad = {"op": "unmap", "folio": "F", "mm": "B", "level": "pte", "page": 0}
    ok = {"op": "map", "folio": "F", "mm": "A", "level": "pte", "page": 0}
    code, out = run([*SETUP, ok, bad, ok])
    assert code == 3
    assert len(out) == 5
    assert out[-1]["step"] == 4 and out[-1]["op"] == "unmap" and "error" in out[-1] and out[-1]["line"] == 5
    code, out = run([*SETUP, ok, bad, ok], "--keep-going")
    assert code == 3 and len(out) == 6
    assert out[5]["mapcount"] == 2  # the rejected line changed nothing


def test_bad_lines_give_exit_1_and_name_the_line() -> None:
    code, out = run([*SETUP, "[1, 2]"])
    assert code == 1 and out[-1]["line"] == 4 and "not a JSON object" in out[-1]["error"]
    code, out = run(["# a comment", "", "{not json"])
    assert code == 1 and out == [{"step": 0, "line": 3, "error": out[0]["error"]}]


def test_field_errors_are_rejections() -> None:
    cases = [
        ({"op": "explode"}, "unknown op"),
        ({"mm": "A"}, "missing field 'op'"),
        ({"op": "folio_new", "folio": "G", "order": 21}, "outside 0..20"),
        ({"op": "folio_new", "folio": "G", "order": "4"}, "must be an integer"),
        ({"op": "folio_new", "folio": "G", "order": True}, "must be an integer"),
        ({"op": "map", "folio": "F", "mm": "A", "level": "pud"}, "level"),
        ({"op": "map", "folio": "F", "mm": "A", "level": "pte"}, "missing field 'page'"),
        ({"op": "map", "folio": "F", "mm": "A", "level": "pmd", "page": 0}, "only for pte"),
        ({"op": "map", "folio": "F", "mm": "A", "level": "pte", "page": 0, "nr": 0}, "at least 1"),
        ({"op": "map", "folio": "F", "mm": "A", "level": "pte", "page": 0, "nrr": 2}, "unexpected field"),
        ({"op": "mm_new", "mm": "A"}, "already exists"),
        ({"op": "mm_new", "mm": ""}, "non-empty string"),
    ]
    for op, message in cases:
        code, out = run([*SETUP, op])
        assert code == 3, op
        assert message in out[-1]["error"], (op, out[-1])


def test_annotations_are_allowed() -> None:
    code, _ = run([{"op": "mm_new", "mm": "A", "comment": "the parent", "_origin": "fork"}])
    assert code == 0


def test_unreadable_file_and_bad_command_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["replay", str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 1 and "cannot read" in json.loads(result.output)["error"]
    result = CliRunner().invoke(main, ["replay", "-", "--word-bits", "16"], input="")
    assert result.exit_code == 2


def test_word_bits_32_changes_the_word(tmp_path: Path) -> None:
    code, out = run([*SETUP, {"op": "map", "folio": "F", "mm": "A", "level": "pte", "page": 0},
                     {"op": "map", "folio": "F", "mm": "B", "level": "pte", "page": 1}], "--word-bits", "32")
    assert code == 0 and out[-1]["mm_ids_word"] == (1 << 31) | (2 << 16) | 1


def test_real_process_and_startup_imports(tmp_path: Path) -> None:
    """The installed command works and replay does not import heavy modules."""
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(lines(SETUP)) + "\n")
    proc = subprocess.run([sys.executable, "-m", "foliosim", "replay", str(trace)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 3
    probe = ("import sys, runpy; sys.argv=['foliosim','replay','" + str(trace) + "'];\n"
             "try:\n    runpy.run_module('foliosim', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "heavy = [m for m in ('rich', 'numpy', 'numba', 'hypothesis', 'matplotlib') if m in sys.modules]\n"
             "sys.stderr.write(repr(heavy))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert proc.stderr.strip().endswith("[]"), proc.stderr


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=8,
)
OP_LIKE = st.fixed_dictionaries(
    {"op": st.sampled_from(["mm_new", "mm_free", "folio_new", "folio_free", "map_new_anon", "map", "dup", "unmap",
                            "bogus"])},
    optional={"mm": st.sampled_from(["A", "B", "Z", "", 3]), "folio": st.sampled_from(["F", "G", None]),
              "order": st.integers(-1, 22) | st.just("4"), "level": st.sampled_from(["pte", "pmd", "x"]),
              "page": st.integers(-2, 20), "nr": st.integers(-1, 20), "extra": JSON_VALUES},
)


def _state(status_lines: list[str]) -> list[dict[str, Any]]:
    st_ = ReplayStatus()
    return [r for r in replay(status_lines, keep_going=True, status=st_) if "error" not in r]


@given(st.lists(OP_LIKE | JSON_VALUES, max_size=12))
def test_fuzz_json_lines_never_crash_and_rejections_change_nothing(ops: list[Any]) -> None:
    text = lines([*SETUP, *[json.dumps(o) for o in ops]])
    status = ReplayStatus()
    records = list(replay(text, keep_going=True, status=status))
    assert status.exit_code in (0, 1, 3)
    for rec in records:
        assert isinstance(rec, dict) and "step" in rec
    # Dropping every rejected line gives exactly the same valid records: rejections changed nothing.
    rejected_lines = {r["line"] for r in records if "error" in r and "op" in r}
    if status.exit_code != 1:
        kept = [t for i, t in enumerate(text, 1) if i not in rejected_lines]
        valid = [{k: v for k, v in r.items() if k != "step"} for r in records if "error" not in r]
        again = [{k: v for k, v in r.items() if k != "step"} for r in _state(kept)]
        assert valid == again


@given(st.binary(max_size=200))
def test_fuzz_bytes_give_clean_errors(data: bytes) -> None:
    status = ReplayStatus()
    records = list(replay(data.splitlines(keepends=True), keep_going=True, status=status))
    assert status.exit_code in (0, 1, 3)
    assert all("step" in r for r in records)
    if status.exit_code == 1:
        assert "line" in records[-1] and "error" in records[-1]


def test_cli_with_garbage_bytes_has_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "junk.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage\n{\"op\": 1}\n")
    proc = subprocess.run([sys.executable, "-m", "foliosim", "replay", str(path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "not UTF-8" in proc.stdout
