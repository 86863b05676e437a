"""`foliosim check` under bad input and tight limits (issue 15 items 2-4).

Each case feeds the input, then asserts the exit status, one line on stderr
naming the problem, no traceback, and that no existing file changed and no
partial file remains.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner, Result

from foliosim.cli import main


def _check(*args: str) -> Result:
    return CliRunner().invoke(main, ["check", *args])


def _no_traceback(res: Result) -> None:
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# -- item 2: --counterexample writes exactly the named file ------------------------------------

def test_counterexample_writes_exactly_the_named_file_and_names_the_others(tmp_path: Path) -> None:
    cx = tmp_path / "cx.jsonl"
    res = _check("--mutant", "never-clear-shared", "--mms", "2", "--order", "1", "--depth", "4",
                 "--counterexample", str(cx))
    _no_traceback(res)
    assert res.exit_code == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cx.jsonl"]  # no cx-*.jsonl, no temporary file
    text = cx.read_text()
    first = next(line for line in text.splitlines() if line.startswith("# violates "))
    assert first.startswith("# violates sanity")  # the first violated property in the summary's order
    assert f"wrote {cx}: the sanity counterexample" in res.stdout
    others = [line for line in res.stderr.splitlines() if "also found" in line]
    assert len(others) == 1 and "precision" in others[0] and "imprecision example" in others[0]
    # The README's next line: the file replays on the kernel's tracking (exit 0) ...
    replayed = CliRunner().invoke(main, ["replay", str(cx)])
    assert replayed.exit_code == 0, replayed.output
    # ... and the violation needs the mutant.
    again = _check("--replay", str(cx), "--mutant", "never-clear-shared")
    assert again.exit_code == 4 and "violates sanity" in again.stdout


def test_counterexample_of_one_property_with_json(tmp_path: Path) -> None:
    cx = tmp_path / "p.jsonl"
    res = _check("--mutant", "never-clear-shared", "--mms", "2", "--order", "1", "--depth", "4",
                 "--property", "precision", "--counterexample", str(cx), "--json", "--quiet")
    assert res.exit_code == 4
    payload = json.loads(res.stdout)
    assert payload["files"] == [str(cx)]
    assert "# violates precision" in cx.read_text()


def test_counterexample_in_a_missing_folder_is_refused_before_the_search(tmp_path: Path) -> None:
    before = _files(tmp_path)
    began = time.monotonic()
    # A bound that would take minutes: the refusal must come first.
    res = _check("--mms", "4", "--order", "3", "--depth", "12", "--counterexample",
                 str(tmp_path / "nodir" / "cx.jsonl"))
    assert time.monotonic() - began < 10
    _no_traceback(res)
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "nodir" in lines[0] and "does not exist" in lines[0], res.stderr
    assert res.stdout == ""
    assert _files(tmp_path) == before


def test_counterexample_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    res = _check("--counterexample", str(tmp_path))
    _no_traceback(res)
    assert res.exit_code in (1, 2)  # click's own Path check (2) or ours (1): one line, no search
    assert "directory" in res.stderr


def test_no_counterexample_leaves_an_existing_file_alone(tmp_path: Path) -> None:
    cx = tmp_path / "keep.jsonl"
    cx.write_text("precious\n")
    res = _check("--mms", "2", "--order", "1", "--depth", "3", "--counterexample", str(cx), "--quiet")
    _no_traceback(res)
    assert res.exit_code == 0
    assert cx.read_text() == "precious\n" and _files(tmp_path) == {"keep.jsonl": b"precious\n"}
    assert "not written" in res.stderr and "holds" in res.stdout


def test_counterexample_with_replay_is_a_usage_error(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"op":"mm_new","mm":"A"}\n')
    res = _check("--replay", str(trace), "--counterexample", str(tmp_path / "x.jsonl"))
    assert res.exit_code == 2 and "--counterexample does not go with --replay" in res.stderr
    assert not (tmp_path / "x.jsonl").exists()


# -- item 3: --interleave honours the budgets, --quiet and --counterexample --------------------

def test_interleave_honours_max_seconds_and_reports_progress() -> None:
    began = time.monotonic()
    res = _check("--interleave", "--cpus", "3", "--reader", "cow", "--max-seconds", "3")
    elapsed = time.monotonic() - began
    _no_traceback(res)
    assert elapsed < 30, elapsed  # listing the start states plus one scenario past the budget
    assert res.exit_code == 0
    assert "stopped early: time budget of 3s" in res.stdout
    # the status line's first report comes after 2 s: on a slow or busy machine the listing of the start states is
    # still going then, on a fast one the interleavings are
    progress = [ln for ln in res.stderr.splitlines()
                if ("start state" in ln and "interleaving states" in ln) or "listing the start states" in ln]
    assert progress and "stopped early" in res.stderr.splitlines()[-1]


def test_interleave_honours_max_states_and_quiet() -> None:
    res = _check("--interleave", "--mms", "2", "--order", "1", "--depth", "2", "--max-states", "50", "--quiet",
                 "--json")
    assert res.exit_code == 0 and res.stderr == ""
    payload = json.loads(res.stdout)
    assert payload["budget_hit"].startswith("state budget of 50") and payload["states"] > 50


def test_interleave_bounds_the_listing_of_start_states() -> None:
    # 8 MMs of order 6: listing the start states alone would take hours and gigabytes.
    began = time.monotonic()
    res = _check("--interleave", "--mms", "8", "--order", "6", "--max-seconds", "2", "--json", "--quiet")
    _no_traceback(res)
    assert time.monotonic() - began < 30
    assert res.exit_code == 0, res.output
    assert "the listing of start states was cut: time budget" in json.loads(res.stdout)["budget_hit"]
    tiny = _check("--interleave", "--mms", "8", "--order", "6", "--max-memory", "1M")
    _no_traceback(tiny)
    assert tiny.exit_code == 1
    lines = tiny.stderr.strip().splitlines()
    assert len(lines) == 1 and "more than --max-memory 1 MiB" in lines[0], tiny.stderr


def test_interleave_counterexample_and_stop_at_first(tmp_path: Path) -> None:
    cx = tmp_path / "lost.jsonl"
    res = _check("--interleave", "--no-lock", "--mms", "2", "--order", "1", "--depth", "1", "--stop-at-first",
                 "--counterexample", str(cx))
    _no_traceback(res)
    assert res.exit_code == 4
    assert "stopped early: stopped at the first lost-update" in res.stdout
    assert cx.read_text().startswith("# lost-update:")
    assert CliRunner().invoke(main, ["replay", str(cx)]).exit_code == 0


def test_interleave_refuses_options_it_does_not_use() -> None:
    for args, name in ((["--levels", "pte"], "--levels"), (["--engine", "fast"], "--engine"),
                       (["--property", "soundness"], "--property"), (["--max-nr", "1"], "--max-nr")):
        res = _check("--interleave", *args)
        _no_traceback(res)
        assert res.exit_code == 2, args
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and f"does not use {name}" in lines[0], res.stderr


# -- item 4: memory ----------------------------------------------------------------------------

def test_a_bound_that_cannot_start_within_max_memory_is_refused() -> None:
    for engine in ("fast", "reference"):
        began = time.monotonic()
        res = _check("--mms", "8", "--order", "6", "--depth", "60", "--max-memory", "1M", "--engine", engine)
        _no_traceback(res)
        assert res.exit_code == 1, (engine, res.output)
        lines = [ln for ln in res.stderr.strip().splitlines() if "compiling" not in ln]
        assert len(lines) == 1 and "more than --max-memory 1 MiB" in lines[0], res.stderr
        assert time.monotonic() - began < 150  # (a first compile of the fast engine included)


def test_the_search_stops_cleanly_at_max_memory_and_says_how_far_it_got() -> None:
    for engine, limit in (("fast", "8M"), ("reference", "4M")):
        res = _check("--mms", "3", "--order", "2", "--depth", "9", "--max-memory", limit, "--engine", engine,
                     "--json")
        _no_traceback(res)
        assert res.exit_code == 0, (engine, res.output)
        payload = json.loads(res.stdout)
        hit = payload["budget_hit"]
        assert hit.startswith("memory limit of") and "complete" in hit, hit
        complete = int(hit.rsplit("depth ", 1)[1].split()[0])
        assert 1 <= complete < 9 and payload["depth_reached"] >= complete
        assert not payload["exhausted"]
        assert sum(payload["level_sizes"][:complete + 1]) <= payload["states"]
        assert any("stopped early: memory limit" in ln for ln in res.stderr.splitlines())


def test_the_memory_limit_does_not_change_a_run_that_fits() -> None:
    small = _check("--mms", "2", "--order", "1", "--depth", "3", "--quiet", "--json", "--max-memory", "64M")
    free = _check("--mms", "2", "--order", "1", "--depth", "3", "--quiet", "--json")
    a, b = json.loads(small.stdout), json.loads(free.stdout)
    assert a["states"] == b["states"] == 149 and a["budget_hit"] is None


def test_a_malformed_max_memory_is_a_usage_error() -> None:
    for value in ("lots", "-1G", "0", "12Q"):
        res = _check("--max-memory", value)
        _no_traceback(res)
        assert res.exit_code == 2 and "--max-memory" in res.stderr, value
