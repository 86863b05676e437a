"""Sweeps: resumable SQLite store, CSV/Parquet export, local pool vs a real Dask cluster."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from foliosim.evaluate.store import ResultsDB, StoreError
from foliosim.evaluate.sweep import Grid, pending, run_dask, run_local

SMALL = Grid(designs=("kernel", "stopped"), workloads=("fork-child", "handover"), seeds=(1, 2),
             params={"fork-child.rounds": [2], "handover.generations": [2]})


def all_rows(db: ResultsDB) -> list[tuple[object, ...]]:
    return list(db.metric_rows())


def test_resumable_and_identical_on_rerun(tmp_path: Path) -> None:
    cells = SMALL.cells()
    assert len(cells) == 8
    db = ResultsDB(tmp_path / "r.sqlite")
    seen: list[str] = []
    assert run_local(cells[:3], db, jobs=1, on_result=lambda r: seen.append(r.cell_id)) == 3
    assert len(pending(cells, db)) == 5, "finished cells are not recomputed"
    run_local(pending(cells, db), db, jobs=2)
    assert pending(cells, db) == []
    first = all_rows(db)
    # Delete one cell (as if the sweep had stopped before it): only that one runs again.
    victim = cells[4].cell_id
    with db.conn:
        db.conn.execute("DELETE FROM metrics WHERE cell_id = ?", (victim,))
        db.conn.execute("DELETE FROM cells WHERE cell_id = ?", (victim,))
    again = pending(cells, db)
    assert [c.cell_id for c in again] == [victim]
    run_local(again, db, jobs=1)
    assert all_rows(db) == first, "the same seeds give the same rows"
    db.close()


def test_csv_and_parquet_export(tmp_path: Path) -> None:
    db = ResultsDB(tmp_path / "r.sqlite")
    run_local(SMALL.cells()[:2], db, jobs=1)
    n = db.export_csv(tmp_path / "m.csv")
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0].startswith("cell_id,design,workload,params,seed") and len(lines) == n + 1 and n > 10
    if importlib.util.find_spec("duckdb") is None:
        pytest.skip("DuckDB (the parquet extra) is not installed")
    import duckdb

    assert db.export_parquet(tmp_path / "m.parquet") == n
    back = duckdb.connect().execute(f"SELECT count(*), sum(value) FROM '{tmp_path / 'm.parquet'}'").fetchone()
    total = sum(float(line.rsplit(",", 1)[1]) for line in lines[1:])
    assert back is not None and back[0] == n and abs(back[1] - total) < 1e-6


def test_a_file_that_is_not_a_results_db_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.sqlite"
    bad.write_text("hello, I am not SQLite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite"):
        ResultsDB(bad)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DASK = Path(sys.executable).parent / "dask"


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None or not DASK.exists(),
                    reason="dask.distributed (the dask extra) is not installed")
def test_dask_cluster_gives_the_same_results_as_local(tmp_path: Path) -> None:
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    common = ["--no-dashboard"]
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), *common],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the dask scheduler did not start within 60 s")
        procs.append(subprocess.Popen([str(DASK), "worker", address, "--nworkers", "1", "--nthreads", "1",
                                       "--host", "127.0.0.1", *common],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path))
        cells = SMALL.cells()
        remote = ResultsDB(tmp_path / "dask.sqlite")
        assert run_dask(cells, remote, address, timeout=60) == len(cells)
        local = ResultsDB(tmp_path / "local.sqlite")
        run_local(cells, local, jobs=2)
        assert all_rows(remote) == all_rows(local)
        assert {c["cell_id"] for c in remote.cells()} == {c.cell_id for c in cells}
        remote.close()
        local.close()
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def test_compare_cli_runs_resumes_and_rejects_bad_grids(tmp_path: Path) -> None:
    foliosim = [sys.executable, "-m", "foliosim"]
    db = tmp_path / "r.sqlite"
    args = [*foliosim, "compare", "-d", "kernel,exact", "-w", "fork-child", "--param", "rounds=2", "--seeds", "1",
            "--db", str(db), "-j", "1", "--csv", str(tmp_path / "m.csv")]
    first = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    assert "2 to run" in first.stderr and first.stdout.startswith("On the synthetic workloads (fork-child; open loop")
    second = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert "2 already in" in second.stderr and "0 to run" in second.stderr
    for bad, why in ((["-d", "kernal"], "unknown design"), (["-w", "forkbomb"], "unknown workload"),
                     (["--param", "childs=3", "-w", "prefork"], "has parameter 'childs'"),
                     (["--param", "x"], "expected")):
        run = subprocess.run([*foliosim, "compare", "--db", str(db), *bad], capture_output=True, text=True,
                             timeout=60, check=False)
        assert run.returncode == 2 and why in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert shutil.which(foliosim[0])


def test_default_designs_leave_precise_rmapid_out_of_32_bit_cells_and_say_so() -> None:
    from foliosim.evaluate.sweep import Grid
    from foliosim.schemes.base import DESIGNS

    assert "precise-rmapid" in DESIGNS
    grid = Grid(workloads=("fork-child",), seeds=(1,), word_bits=(64, 32), skip_unsupported=True)
    cells = grid.cells()
    by_bits = {bits: {c.design for c in cells if c.word_bits == bits} for bits in (64, 32)}
    assert "precise-rmapid" in by_bits[64]
    assert by_bits[32] == set(DESIGNS) - {"precise-rmapid"}
    assert grid.skipped == ["precise-rmapid on 32-bit"]


def test_an_explicit_design_a_configuration_lacks_is_refused_naming_both() -> None:
    from foliosim.evaluate.sweep import Grid

    grid = Grid(designs=("kernel", "precise-rmapid"), workloads=("fork-child",), seeds=(1,), word_bits=(32,))
    with pytest.raises(ValueError, match=r"precise-rmapid.*--word-bits 32"):
        grid.cells()
