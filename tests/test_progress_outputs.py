"""Progress lines, compile notices and whole-or-nothing output files (issue 15 item 3).

trace-generate: the path is checked before generating, progress is shown, the
file appears whole (temporary file + rename) and a failure leaves an existing
file as it was and no partial file.
"""

from __future__ import annotations

import io
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from foliosim.cli import main
from foliosim.fast import _jit
from foliosim.outfile import replaced_on_success
from foliosim.report.progress import StatusLine, reading
from foliosim.trace import columnar
from foliosim.trace.generate import TraceSpec


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_line_rewrites_one_line_on_a_terminal() -> None:
    out = _Tty()
    status = StatusLine("x: ", stream=out, tty_interval=0.0)
    assert status.update("first, a long one") and status.update("second")
    status.done()
    text = out.getvalue()
    assert "\n" not in text and text.count("\r") >= 3
    assert text.startswith("\rx: first, a long one\rx: second")  # padded over the longer line
    assert text.endswith("\r")


def test_status_line_throttles_full_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    status = StatusLine("x: ", stream=out, interval=60.0)
    assert status.update("a")  # the first one is shown at once (first_after=0)
    assert not status.update("b")  # then at most one a minute
    assert status.update("c", force=True)
    status.done("end")
    assert out.getvalue() == "x: a\nx: c\nx: end\n"
    quiet = io.StringIO()
    silent = StatusLine("x: ", stream=quiet, quiet=True)
    silent.update("a", force=True)
    silent.done("end")
    assert quiet.getvalue() == ""


def test_first_line_waits_for_first_after() -> None:
    out = io.StringIO()
    status = StatusLine("x: ", stream=out, interval=0.0, first_after=30.0)
    assert not status.update("too early")
    assert out.getvalue() == ""


def test_reading_reports_lines_and_share_of_the_file() -> None:
    out = io.StringIO()
    status = StatusLine("view: ", stream=out, interval=0.0)
    lines = [b"x" * 9 + b"\n"] * 10_000
    assert list(reading(iter(lines), status, 100_000, "t.jsonl")) == lines
    shown = out.getvalue().splitlines()
    assert shown[0] == "view: reading t.jsonl: 4,096 lines, 40.0 KiB of 97.7 KiB (41%)"
    assert len(shown) == 2


def test_compile_notice_says_so_when_the_cache_is_cold(monkeypatch: pytest.MonkeyPatch) -> None:
    heard: list[str] = []
    monkeypatch.setattr(_jit, "_njit", object())  # as if numba were installed
    monkeypatch.setattr(_jit, "cached", lambda fn: False)
    with _jit.compile_notice((object(),), heard.append, "the engine", "1 min"):
        pass
    assert heard == ["compiling the engine (first run only, ~1 min; numba caches it in __pycache__)"]
    # Cache present: only a call still running after the delay is announced.
    monkeypatch.setattr(_jit, "cached", lambda fn: True)
    heard.clear()
    with _jit.compile_notice((object(),), heard.append, "the engine", "1 min", delay=0.05):
        pass
    assert heard == []
    with _jit.compile_notice((object(),), heard.append, "the engine", "1 min", delay=0.05):
        time.sleep(0.3)
    assert len(heard) == 1


def test_cache_probe_answers_for_numba_functions_and_none_for_others() -> None:
    assert _jit.cached(lambda: None) is None
    if _jit.HAVE_NUMBA:
        from foliosim.fast import kernels

        assert _jit.cached(kernels.replay_loop) in (True, False)


def test_generated_columns_report_progress_and_match_unchunked() -> None:
    spec = TraceSpec(n_ops=5000, seed=3)
    seen: list[int] = []
    chunked = columnar.from_generated(columnar.setup_ops(spec), columnar.generate_ops(spec),
                                      [columnar.mm_name(i) for i in range(spec.n_mms)],
                                      [columnar.folio_name(i) for i in range(spec.n_folios)], chunk=1024,
                                      total=spec.n_ops, progress=seen.append)
    plain = columnar.from_generated(columnar.setup_ops(spec), columnar.generate_ops(spec),
                                    [columnar.mm_name(i) for i in range(spec.n_mms)],
                                    [columnar.folio_name(i) for i in range(spec.n_folios)])
    assert seen == [1024, 2048, 3072, 4096, 5000]
    assert list(chunked.iter_jsonl()) == list(plain.iter_jsonl())


def test_trace_generate_refuses_a_missing_folder_before_generating(tmp_path: Path) -> None:
    began = time.monotonic()
    res = CliRunner().invoke(main, ["trace-generate", str(tmp_path / "nodir" / "standard.npz")])  # 10M ops
    assert time.monotonic() - began < 5
    assert res.exit_code == 1 and "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "nodir" in lines[0] and "does not exist" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_trace_generate_failure_leaves_the_old_file_and_no_partial_one(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "keep.npz"
    dest.write_bytes(b"old contents")

    def full_disk(handle: Any, **arrays: object) -> None:  # the disk fills up half-way through the file
        handle.write(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(columnar.np, "savez", full_disk)
    res = CliRunner().invoke(main, ["trace-generate", "--ops", "100", str(dest)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and str(dest) in lines[0]
    assert dest.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.npz"]


def test_trace_generate_writes_a_whole_file_with_the_usual_mode(tmp_path: Path) -> None:
    dest = tmp_path / "t.jsonl"
    res = CliRunner().invoke(main, ["trace-generate", "--ops", "200", str(dest)])
    assert res.exit_code == 0, res.output
    assert [p.name for p in tmp_path.iterdir()] == ["t.jsonl"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~mask
    assert len(dest.read_text().splitlines()) >= 200


def test_replaced_on_success_keeps_an_existing_files_mode(tmp_path: Path) -> None:
    dest = tmp_path / "x.txt"
    dest.write_text("a")
    dest.chmod(0o640)
    with replaced_on_success(str(dest)) as tmp:
        Path(tmp).write_text("b")
    assert dest.read_text() == "b" and stat.S_IMODE(dest.stat().st_mode) == 0o640
    with pytest.raises(KeyboardInterrupt), replaced_on_success(str(dest)) as tmp:
        Path(tmp).write_text("partial")
        raise KeyboardInterrupt
    assert dest.read_text() == "b" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]
