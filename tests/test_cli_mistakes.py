"""Ordinary mistakes get one line on stderr naming the problem and where, no traceback, and touch no file.

Issue 15, items 7 (tracebacks and silent damage), 8 (nonsense accepted, work hidden) and 9 (rough edges).
Every test runs the real command in a subprocess, so a traceback would show on its stderr.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SMALL = ["-d", "kernel", "-w", "fork-child", "--seeds", "1", "--param", "pages=16", "-j", "1", "-q"]


def run(args: list[str], cwd: Path, stdin: bytes | None = None, user: int | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", COLUMNS="200")
    prefix = [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    return subprocess.run([*prefix, sys.executable, "-m", "foliosim", *args], cwd=cwd, input=stdin,
                          capture_output=True, timeout=timeout, check=False, env=env)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (names as bytes, so any name works) with a hash of its content."""
    out: dict[str, str] = {}
    for folder, _dirs, names in os.walk(os.fsencode(root)):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                out[os.fsdecode(os.path.relpath(path, os.fsencode(root)))] = hashlib.sha256(handle.read()).hexdigest()
    return out


def refused(args: list[str], cwd: Path, code: int, *words: str, stdin: bytes | None = None,
            user: int | None = None) -> str:
    """Run, and assert: exit ``code``, exactly one stderr line containing ``words``, no traceback, no file changed."""
    before = snapshot(cwd)
    result = run(args, cwd, stdin, user)
    err = result.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert result.returncode == code, (result.returncode, err)
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert snapshot(cwd) == before, "a file was created, changed or left behind"
    return lines[0]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory an unprivileged user may write (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="foliosim-mistakes-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def unprivileged() -> int | None:
    """The uid to run as so that permissions apply (None when already unprivileged); skips if root cannot drop."""
    if os.geteuid() != 0:
        return None
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*drop, sys.executable, "-c", "import foliosim.cli"], capture_output=True,
                           check=False) if shutil.which("setpriv") else None
    if probe is None or probe.returncode != 0:
        pytest.skip("cannot run foliosim as an unprivileged user here (setpriv missing or python unreachable)")
    return 65534


# -- item 7: tracebacks on ordinary mistakes, silent damage --------------------------------------------------

def test_report_into_a_read_only_directory(public_dir: Path) -> None:
    locked = public_dir / "rofs"
    locked.mkdir()
    locked.chmod(0o555)
    refused(["compare", *SMALL, "--db", "r.sqlite", "--report", "rofs/rep"], public_dir, 1, "--report rofs/rep",
            "cannot write", user=unprivileged())


def test_report_onto_a_file_keeps_the_file(work: Path) -> None:
    (work / "notes.txt").write_text("my notes\n")
    refused(["compare", *SMALL, "--db", "r.sqlite", "--report", "notes.txt"], work, 1, "--report notes.txt",
            "is a file")


def test_report_that_fails_late_still_prints_the_headline(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    from click.testing import CliRunner

    from foliosim import cli
    from foliosim.report import evaluation

    def broken(*_args: object, **_kw: object) -> object:
        raise ValueError("cannot write the report into rep: rep/report.md: No space left on device")

    monkeypatch.setattr(evaluation, "write_report", broken)
    monkeypatch.chdir(work)
    result = CliRunner().invoke(cli.main, ["compare", *SMALL, "--db", "r.sqlite", "--report", "rep"])
    assert result.exit_code == 1
    assert result.stdout.startswith("On the synthetic workloads (fork-child; open loop")
    assert "No space left on device" in result.stderr


def test_report_without_matplotlib_is_refused_before_anything_runs(work: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the report extra, `compare --report` says so before its sweep (no database made) and `report` before
    reading its database (no folder made): one line naming the extra, exit 1."""
    from click.testing import CliRunner

    from foliosim import cli

    real = cli._have_module
    monkeypatch.setattr(cli, "_have_module", lambda name: name != "matplotlib" and real(name))
    monkeypatch.chdir(work)
    (work / "r.sqlite").write_bytes(b"")  # `report` reads it only after its outputs are checked
    before = snapshot(work)
    for args in (["compare", *SMALL, "--db", "new.sqlite", "--report", "rep"], ["report", "r.sqlite", "-o", "rep"]):
        result = CliRunner().invoke(cli.main, args)
        assert result.exit_code == 1, (args, result.output)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "plots need matplotlib" in lines[0] and "foliosim[report]" in lines[0], lines
        assert snapshot(work) == before, args


def test_parquet_into_a_missing_directory(work: Path) -> None:
    refused(["compare", *SMALL, "--db", "r.sqlite", "--parquet", "nodir/x.parquet"], work, 1,
            "--parquet nodir/x.parquet", "does not exist")


def test_csv_onto_a_directory(work: Path) -> None:
    (work / "out").mkdir()
    refused(["compare", *SMALL, "--db", "r.sqlite", "--csv", "out"], work, 1, "--csv out", "is a directory")


def test_dask_address_that_is_not_one(work: Path) -> None:
    line = refused(["compare", *SMALL, "--db", "r.sqlite", "--dask", "notanaddress"], work, 2, "--dask")
    assert "notanaddress" in line or "foliosim[dask]" in line


def test_trace_output_in_a_missing_directory(work: Path) -> None:
    refused(["trace", "-o", "nodir/run.trace", "--", "true"], work, 2, "nodir", "does not exist")


def _foreign_db(path: Path, table: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {table} (cell_id TEXT, x TEXT)")
    conn.execute(f"INSERT INTO {table} VALUES ('a', 'b')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("table", ["cells", "people"])
def test_another_programs_sqlite_file_is_refused_and_left_alone(work: Path, table: str) -> None:
    _foreign_db(work / "theirs.sqlite", table)
    refused(["compare", *SMALL, "--db", "theirs.sqlite"], work, 1, "theirs.sqlite", "did not write",
            f"tables: {table}")
    refused(["report", "theirs.sqlite", "-o", "rep"], work, 1, "theirs.sqlite", "did not write")


def test_results_db_in_a_missing_directory(work: Path) -> None:
    refused(["compare", *SMALL, "--db", "nodir/x.sqlite"], work, 1, "nodir/x.sqlite", "does not exist")


def test_results_db_that_is_a_text_file(work: Path) -> None:
    (work / "notes.txt").write_text("hello\n" * 200)
    refused(["compare", *SMALL, "--db", "notes.txt"], work, 1, "notes.txt", "not a usable SQLite")


def test_own_databases_are_recognised_new_and_old(work: Path) -> None:
    first = run(["compare", *SMALL, "--db", "r.sqlite"], work)
    assert first.returncode == 0, first.stderr
    conn = sqlite3.connect(work / "r.sqlite")
    from foliosim.evaluate.store import APPLICATION_ID

    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    # A database written before the marker existed: application_id 0, foliosim's tables.
    conn.execute("PRAGMA application_id = 0")
    conn.commit()
    conn.close()
    again = run(["compare", *SMALL, "--db", "r.sqlite"], work)
    assert again.returncode == 0, again.stderr
    assert b"1 already in r.sqlite" in again.stderr


def test_view_of_a_file_name_that_is_not_utf8(work: Path) -> None:
    trace = run(["examples", "1", "--trace"], work).stdout
    name = b"bad\xff.jsonl"
    with open(os.path.join(os.fsencode(work), name), "wb") as handle:
        handle.write(trace)
    result = run(["view", os.fsdecode(name)], work)
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr
    pages = [n for n in os.listdir(os.fsencode(work)) if n.endswith(b".html")]
    assert pages == [b"bad\xff.html"]
    leftovers = [n for n in os.listdir(os.fsencode(work)) if b"tmp" in n]
    assert leftovers == []
    page = (work / os.fsdecode(b"bad\xff.html")).read_text(encoding="utf-8")
    assert "bad\ufffd.jsonl" in page


# -- item 8: nonsense accepted, work hidden ------------------------------------------------------------------

@pytest.mark.parametrize("value", ["-5", "0", "abc", "1.5"])
def test_nonsense_parameter_values(work: Path, value: str) -> None:
    args = ["compare", "-d", "kernel", "-w", "fork-child", "--seeds", "1", "--param", f"pages={value}",
            "--db", "r.sqlite", "-q"]
    line = refused(args, work, 2, "pages", "whole number >= 1")
    assert "int()" not in line


def test_a_repeated_parameter_is_refused(work: Path) -> None:
    args = ["compare", "-d", "kernel", "-w", "fork-child", "--seeds", "1", "--param", "pages=16",
            "--param", "pages=32", "--db", "r.sqlite", "-q"]
    refused(args, work, 2, "--param pages", "twice", "pages=V1,V2")


def test_a_value_listed_twice_is_refused(work: Path) -> None:
    args = ["compare", "-d", "kernel", "-w", "fork-child", "--param", "pages=16,16", "--db", "r.sqlite"]
    refused(args, work, 2, "16 listed twice")


def test_trace_thp_settings_are_checked_before_the_command_runs(work: Path) -> None:
    refused(["trace", "--thp", "3K=always", "-o", "r.trace", "--", "touch", "ran"], work, 2, "3K", "folio size")
    refused(["trace", "--thp", "16K=sometimes", "-o", "r.trace", "--", "touch", "ran"], work, 2, "16K", "always")
    assert not (work / "ran").exists()


def test_an_empty_workload_file_is_refused(work: Path) -> None:
    (work / "empty.jsonl").write_text("# nothing here\n")
    refused(["compare", "--workload-file", "empty.jsonl", "--db", "r.sqlite"], work, 2, "empty.jsonl", "no steps")


REFUSING: list[dict[str, object]] = [
    {"verb": "spawn", "task": "P"},
    {"verb": "mmap", "task": "P", "args": ["heap", 16, "anon", None, [4], "rw", 0]},
    {"verb": "write", "task": "P", "args": ["heap", 0, 16]},
    {"verb": "write", "task": "P", "args": ["nope", 0, 1]},
    {"verb": "fork", "task": "P", "args": ["C"]},
    {"verb": "write", "task": "Q", "args": ["heap", 0, 1]},
    {"verb": "read", "task": "C", "args": ["heap", 0, 4]},
]


def _workload(path: Path, steps: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(s) + "\n" for s in steps))


def test_refused_steps_are_shown_and_reported(work: Path) -> None:
    _workload(work / "w.jsonl", REFUSING)
    result = run(["compare", "-d", "kernel,exact", "--workload-file", "w.jsonl", "--db", "r.sqlite", "-q", "-j", "1"]
                 + (["--report", "rep"] if importlib.util.find_spec("matplotlib") else []), work)
    assert result.returncode == 0, result.stderr
    err = result.stderr.decode()
    assert "the simulator refused 4 step(s) of file:w.jsonl@" in err and "in 2 cell(s)" in err
    assert "step 4 (write P): unknown region 'nope'" in err and "step 6 (write Q)" in err
    if importlib.util.find_spec("matplotlib"):
        md = (work / "rep" / "report.md").read_text()
        assert "## Steps the simulator refused" in md and "unknown region 'nope'" in md


def test_the_headline_is_about_this_run(work: Path) -> None:
    _workload(work / "w.jsonl", [*REFUSING[:3], {"verb": "fork", "task": "P", "args": ["C"]},
                                 {"verb": "write", "task": "C", "args": ["heap", 0, 2]}])
    alone = run(["compare", "-d", "kernel", "--workload-file", "w.jsonl", "--db", "alone.sqlite", "-q", "-j", "1"],
                work)
    assert alone.returncode == 0, alone.stderr
    other = run(["compare", "-d", "kernel", "-w", "fork-child", "--seeds", "2", "--db", "mixed.sqlite", "-q",
                 "-j", "1"], work)
    assert other.returncode == 0, other.stderr
    mixed = run(["compare", "-d", "kernel", "--workload-file", "w.jsonl", "--db", "mixed.sqlite", "-q", "-j", "1"],
                work)
    assert mixed.returncode == 0, mixed.stderr
    assert mixed.stdout == alone.stdout and mixed.stdout != other.stdout


def test_same_named_workload_files_stay_apart_and_run_once(work: Path) -> None:
    (work / "a").mkdir()
    (work / "b").mkdir()
    _workload(work / "a" / "w.jsonl", REFUSING[:3])
    _workload(work / "b" / "w.jsonl", [*REFUSING[:3], {"verb": "fork", "task": "P", "args": ["C"]}])
    result = run(["compare", "-d", "kernel,exact", "--workload-file", "a/w.jsonl", "--workload-file", "b/w.jsonl",
                  "--seeds", "3", "--db", "r.sqlite", "-q", "-j", "1"], work)
    assert result.returncode == 0, result.stderr
    assert b"run once each" in result.stderr
    conn = sqlite3.connect(work / "r.sqlite")
    rows = conn.execute("SELECT workload, seed FROM cells").fetchall()
    workloads = {w for w, _ in rows}
    assert len(workloads) == 2 and all(w.startswith("file:w.jsonl@") for w in workloads)
    assert len(rows) == 4 and {s for _, s in rows} == {1}, "two designs x two files, one seed each"


# -- item 9: rough edges ---------------------------------------------------------------------------------------

def _example_trace(work: Path) -> bytes:
    trace = run(["examples", "1", "--trace"], work).stdout
    assert trace.count(b"\n") >= 5
    return trace


SCENARIO = b"# a scenario\nspawn P\nmmap P heap 16K\nwrite P heap 1\nfork P C\nread C heap expect=1\n"


def test_view_sniffs_a_trace_whatever_its_name(work: Path) -> None:
    (work / "trace.json").write_bytes(_example_trace(work))
    result = run(["view", "trace.json"], work)
    assert result.returncode == 0, result.stderr
    page = (work / "trace.html").read_text()
    assert "rmap trace" in page or "App1" in page
    assert b"unknown command" not in result.stderr


def test_view_reads_a_scenario_on_stdin(work: Path) -> None:
    result = run(["view", "-", "-o", "s.html"], work, stdin=SCENARIO)
    assert result.returncode == 0, result.stderr
    assert "mmap P heap 16K" in (work / "s.html").read_text()
    traced = run(["view", "-", "-o", "t.html"], work, stdin=_example_trace(work))
    assert traced.returncode == 0, traced.stderr


def test_view_of_a_directory_says_so(work: Path) -> None:
    (work / "somedir").mkdir()
    refused(["view", "somedir"], work, 1, "somedir", "is a directory")


def test_view_of_a_missing_file(work: Path) -> None:
    refused(["view", "nothere.jsonl"], work, 1, "nothere.jsonl", "no such file")


needs_numpy = pytest.mark.skipif(importlib.util.find_spec("numpy") is None, reason="numpy is not installed")
ENGINES = ["reference"] + (["fast"] if importlib.util.find_spec("numba") else [])


@needs_numpy
@pytest.mark.parametrize("engine", ENGINES)
def test_fast_replay_reads_npz_on_stdin(work: Path, engine: str) -> None:
    (work / "t.jsonl").write_bytes(_example_trace(work))
    assert run(["trace-convert", "t.jsonl", "t.npz"], work).returncode == 0
    from_file = run(["fast-replay", "--engine", engine, "t.npz"], work)
    from_stdin = run(["fast-replay", "--engine", engine, "-"], work, stdin=(work / "t.npz").read_bytes())
    from_text = run(["fast-replay", "--engine", engine, "-"], work, stdin=(work / "t.jsonl").read_bytes())
    assert from_file.returncode == from_stdin.returncode == from_text.returncode == 0, from_stdin.stdout[-300:]
    assert from_stdin.stdout == from_file.stdout == from_text.stdout and from_file.stdout.count(b"\n") >= 5


@needs_numpy
def test_trace_convert_to_standard_output(work: Path) -> None:
    trace = _example_trace(work)
    (work / "t.jsonl").write_bytes(trace)
    assert run(["trace-convert", "t.jsonl", "t.npz"], work).returncode == 0
    before = snapshot(work)
    result = run(["trace-convert", "t.npz", "-"], work)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [line for line in trace.splitlines() if line.strip()]
    assert snapshot(work) == before, "no file named '-' (or any other) is written"
    refused(["trace-convert", "t.jsonl", "-", "--to", "npz"], work, 2, "standard output", ".npz")


@needs_numpy
@pytest.mark.parametrize("engine", ENGINES)
def test_npz_with_two_mms_of_one_name_is_refused_by_both_engines(work: Path, engine: str) -> None:
    from foliosim.trace.columnar import from_jsonl_lines, write_npz

    columnar = from_jsonl_lines(_example_trace(work).splitlines())
    assert columnar.mm_names == ["App1", "App2"]
    columnar.mm_names = ["App1", "App1"]
    write_npz(columnar, str(work / "dup.npz"))
    result = run(["fast-replay", "--engine", engine, "dup.npz"], work)
    assert result.returncode == 1 and b"Traceback" not in result.stderr
    record = json.loads(result.stdout.decode().splitlines()[-1])
    assert "mm_names holds 'App1' twice" in record["error"]


def test_show_names_the_line_once_and_no_python_none(work: Path) -> None:
    line = refused(["show", "-"], work, 1, "line 1: not a JSON object", "no folio to draw", stdin=b"not json\n")
    assert "line 1: line 1" not in line and "None" not in line
    line = refused(["show", "-"], work, 1, "no folio to draw", stdin=b"")
    assert "None" not in line


def test_main_help_says_where_to_start(work: Path) -> None:
    result = run(["--help"], work)
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "Start here" in text and "foliosim examples" in text and "foliosim run examples/" in text


def test_a_region_name_mapped_twice_is_a_scenario_error(work: Path) -> None:
    (work / "dup.scenario").write_text("spawn P\nmmap P heap 16K\nmunmap P heap 16K\nmmap P heap 8K\nwrite P heap 1\n")
    refused(["run", "dup.scenario"], work, 1, "line 4", "already named by line 2")
    refused(["view", "dup.scenario"], work, 1, "line 4", "already named by line 2", "no page written")


def test_report_verb_checks_its_outputs_first(work: Path) -> None:
    assert run(["compare", *SMALL, "--db", "r.sqlite"], work).returncode == 0
    (work / "notes.txt").write_text("mine\n")
    refused(["report", "r.sqlite", "-o", "notes.txt"], work, 1, "-o notes.txt", "is a file")
    refused(["report", "r.sqlite", "-o", "rep", "--csv", "nodir/m.csv"], work, 1, "--csv nodir/m.csv",
            "does not exist")


def test_view_checks_its_page_path_before_reading(work: Path) -> None:
    (work / "t.jsonl").write_bytes(_example_trace(work))
    refused(["view", "t.jsonl", "-o", "nodir/t.html"], work, 1, "-o nodir/t.html", "does not exist")


def test_strace_access_model_parameters_are_range_checked() -> None:
    from foliosim.workloads.strace import check_params

    assert check_params({"touch": 0})["touch"] == 0
    for bad, words in (({"touch": -1}, "touch must be"), ({"anon_order": 1}, "anon_order must be 0 or 2..9"),
                       ({"stack_pages": 0}, "stack_pages must be"), ({"bogus": 1}, "unknown strace import")):
        with pytest.raises(ValueError, match=words):
            check_params(bad)


def test_check_help_says_truly_what_interleave_uses_and_refuses(work: Path) -> None:
    import re

    from foliosim import cli

    option = next(p for p in cli.check.params if p.name == "interleave")
    assert isinstance(option.help, str) and "it refuses" in option.help
    uses_text, refuses_text = option.help.split("it refuses")
    uses = re.findall(r"--[a-z][a-z-]*[a-z]", uses_text)
    refuses = re.findall(r"--[a-z][a-z-]*[a-z]", refuses_text)
    values = {"--levels": ["pte"], "--max-nr": ["1"], "--ops": ["map"], "--reuse-ids": [], "--property": ["sanity"],
              "--engine": ["reference"], "--max-memory": ["1G"], "--mms": ["3"], "--order": ["2"], "--depth": ["2"],
              "--word-bits": ["32"], "--no-page-mapcount": [], "--cpus": ["2"], "--reader": ["cow"],
              "--no-lock": [], "--mutant": ["never-clear-shared"], "--max-seconds": ["20"], "--max-states": ["50"],
              "--stop-at-first": [], "--counterexample": ["cx.jsonl"], "--json": [], "--quiet": []}
    assert set(uses) | set(refuses) <= set(values), "a new option: give it a value here"
    assert {"--levels", "--property", "--engine"} <= set(refuses) and {"--cpus", "--max-seconds"} <= set(uses)
    for name in refuses:
        refused(["check", "--interleave", name, *values[name]], work, 2, name, "--interleave does not use")
    everything = [arg for name in uses if name != "--interleave" for arg in (name, *values[name])]
    result = run(["check", "--interleave", *everything], work)
    assert result.returncode in (0, 4), result.stderr
    assert b"does not use" not in result.stderr and b"Traceback" not in result.stderr
    assert json.loads(result.stdout.decode().splitlines()[0])["states"] > 0


def test_run_trace_path_checked_first_and_never_clobbered(tmp_path: Path) -> None:
    """`run --trace` refuses a missing folder before running, and a scenario that stops leaves the old file alone."""
    from click.testing import CliRunner

    from foliosim.cli import main

    scenario = tmp_path / "bad.scenario"
    scenario.write_text("spawn P\nfork P P\n")  # line 2 fails at run time: P exists already
    keep = tmp_path / "keep.jsonl"
    keep.write_text("precious\n")
    res = CliRunner().invoke(main, ["run", str(scenario), "--trace", str(keep)])
    assert res.exit_code == 1
    assert keep.read_text() == "precious\n"
    assert "not written" in res.output and "Traceback" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.scenario", "keep.jsonl"]
    res = CliRunner().invoke(main, ["run", str(scenario), "--trace", str(tmp_path / "nodir" / "t.jsonl")])
    assert res.exit_code == 1
    assert "--trace" in res.output and "does not exist" in res.output
    assert "spawn" not in res.output  # nothing ran


def test_csv_export_is_atomic(tmp_path: Path) -> None:
    """A failing CSV export leaves an existing file as it was and no temporary file behind."""
    from foliosim.evaluate.store import ResultsDB

    db = ResultsDB(str(tmp_path / "r.sqlite"))
    out = tmp_path / "m.csv"
    out.write_text("old\n")

    def broken() -> object:
        yield ("x",) * 3
        raise OSError(28, "No space left on device")

    db.metric_rows = broken  # type: ignore[method-assign]
    with pytest.raises(OSError):
        db.export_csv(out)
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "r.sqlite"]


def test_trace_convert_checks_its_output_first_and_writes_whole(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from foliosim.cli import main
    from foliosim.trace import columnar

    src = Path(__file__).resolve().parents[1] / "examples" / "commit-example-2.jsonl"
    res = CliRunner().invoke(main, ["trace-convert", str(src), str(tmp_path / "nodir" / "x.npz")])
    assert res.exit_code == 1 and "does not exist" in res.output and "Traceback" not in res.output
    keep = tmp_path / "keep.npz"
    keep.write_bytes(b"old")

    def full_disk(handle: object, **arrays: object) -> None:
        handle.write(b"PK half")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(columnar.np, "savez", full_disk)
    res = CliRunner().invoke(main, ["trace-convert", str(src), str(keep)])
    assert res.exit_code == 1 and "No space left" in res.output
    assert keep.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.npz"]
