"""`foliosim live` on this machine's own kernel: the shipped scenarios agree, mutants are caught, settings restored.

Marked live: they need root, and (FOLIOSIM_LIVE=required in CI) the full capability, BPF included.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import live_unavailable
from tests.helpers import sigint_default

ROOT = Path(__file__).resolve().parents[2]
THP = "/sys/kernel/mm/transparent_hugepage"
LIVE_EXAMPLES = sorted(glob.glob(str(ROOT / "examples/live/*.scenario")))
#: the top-level examples that have a live equivalent (the others are refused with exit 6, tested below)
TOP_EXAMPLES = ["fork-short-lived-child-pte-thp", "prefork-server", "fork-with-pinned-page", "vmsplice-leak-demo"]

pytestmark = pytest.mark.live


def thp_snapshot() -> dict[str, str]:
    out = {}
    for path in sorted(glob.glob(f"{THP}/*enabled") + glob.glob(f"{THP}/hugepages-*/*enabled")):
        with open(path) as fh:
            out[path] = fh.read()
    return out


def tracefs_instances() -> list[str]:
    return sorted(p for p in glob.glob("/sys/kernel/tracing/instances/*") if "foliosim" in p)


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "foliosim", "live", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def run_api(path: str, **kw: object) -> object:
    from foliosim.live.run import run_live

    return run_live(Path(path).read_text(), set_thp=True, **kw)  # type: ignore[arg-type]


def agreeing_run(path: str) -> object:
    """``run_api(path)``, run once more when it diverged after khugepaged collapsed pages on the machine: its
    background collapses (of a region the scenario made MADV_HUGEPAGE, or anyone's) are in no scenario line. A real
    divergence repeats; khugepaged wakes every 10 s here (scan_sleep_millisecs) and a run takes 1-3 s, so it rarely
    collapses during both."""
    run = run_api(path)
    if run.diffs and run.khugepaged:  # type: ignore[attr-defined]
        run = run_api(path)
    return run


@pytest.mark.parametrize("path", LIVE_EXAMPLES, ids=lambda p: Path(p).stem)
def test_live_family_agrees(full: str, path: str) -> None:
    before = thp_snapshot()
    run = agreeing_run(path)
    problems = [d.describe() for r in run.lines for d in r.diffs]  # type: ignore[attr-defined]
    assert problems == [], "\n".join(problems[:20])
    assert run.sim_error is None  # type: ignore[attr-defined]
    assert sum(r.compared for r in run.lines) > 0  # type: ignore[attr-defined]
    assert sum(r.not_observed for r in run.lines) == 0  # type: ignore[attr-defined]
    assert thp_snapshot() == before
    assert tracefs_instances() == []
    assert orphan_agents() == []


@pytest.mark.parametrize("name", TOP_EXAMPLES)
def test_live_top_example_agrees(full: str, name: str) -> None:
    run = agreeing_run(str(ROOT / f"examples/{name}.scenario"))
    problems = [d.describe() for r in run.lines for d in r.diffs]  # type: ignore[attr-defined]
    assert problems == [], "\n".join(problems[:20])


def _first_diff_line(run: object) -> int:
    return next(r.line for r in run.lines if r.diffs)  # type: ignore[attr-defined]


def test_mutant_never_clear_shared_diverges_at_the_exit(full: str) -> None:
    from foliosim.live.mutants import LIVE_MUTANTS

    path = ROOT / "examples/live/fork-child-exits-order4.scenario"
    run = run_api(str(path), simulator_hook=LIVE_MUTANTS["never-clear-shared"])
    lines = path.read_text().splitlines()
    exit_line = next(i for i, t in enumerate(lines, 1) if t.startswith("exit "))
    assert _first_diff_line(run) == exit_line
    first = next(r for r in run.lines if r.diffs)  # type: ignore[attr-defined]
    assert any(d.field == "shared bit" and d.sim is True and d.live is False for d in first.diffs)


def test_mutant_never_reuse_diverges_at_the_write(full: str) -> None:
    from foliosim.live.mutants import LIVE_MUTANTS

    path = ROOT / "examples/live/fork-child-exits-order4.scenario"
    run = run_api(str(path), simulator_hook=LIVE_MUTANTS["never-reuse-large"])
    lines = path.read_text().splitlines()
    exit_line = next(i for i, t in enumerate(lines, 1) if t.startswith("exit "))
    write_line = next(i for i, t in enumerate(lines, 1) if i > exit_line and t.startswith("write "))
    assert _first_diff_line(run) == write_line
    first = next(r for r in run.lines if r.diffs)  # type: ignore[attr-defined]
    assert any(d.field == "fault outcome" and d.sim == "copy" and d.live == "reuse" for d in first.diffs)


def test_cli_agrees_and_writes_json(full: str, tmp_path: Path) -> None:
    out = tmp_path / "live.json"
    proc = run_cli(str(ROOT / "examples/live/fork-child-exits-order2.scenario"), "--set-thp", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "capability: full" in proc.stderr
    assert "all agree" in proc.stdout
    import json

    doc = json.loads(out.read_text())
    assert doc["lines"] and all(not line["diffs"] for line in doc["lines"])
    assert doc["snapshots"][0]["live"]["tasks"]
    assert set(doc["khugepaged_lines"]) <= {line["line"] for line in doc["lines"]}  # usually none


def test_khugepaged_count_read_around_every_line(full: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lines during which khugepaged's count went up are named (the count here is a stand-in that goes up
    during the third line: a real collapse cannot be had on demand)."""
    from foliosim.host import thp

    calls: list[int] = []

    def count() -> int:
        calls.append(1)
        return 100 if len(calls) <= 3 else 105  # at the start, after lines 1 and 2: 100; from line 3 on: 105

    monkeypatch.setattr(thp, "khugepaged_collapsed", count)
    path = ROOT / "examples/live/fork-child-exits-order2.scenario"
    run = run_api(str(path))
    steps = [r.line for r in run.lines]  # type: ignore[attr-defined]
    assert run.khugepaged == [steps[2]]  # type: ignore[attr-defined]
    assert len(calls) == 1 + len(steps)
    assert run.diffs == 0  # type: ignore[attr-defined]


def test_cli_mutant_exits_5_with_side_by_side(full: str) -> None:
    proc = run_cli(str(ROOT / "examples/live/fork-child-exits-order4.scenario"), "--set-thp",
                   "--mutant", "never-clear-shared")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "first divergence, both sides:" in proc.stdout
    assert "shared bit" in proc.stdout


def test_needs_set_thp_without_changing_anything(full: str) -> None:
    before = thp_snapshot()
    proc = run_cli(str(ROOT / "examples/live/fork-child-exits-order4.scenario"))
    assert before == thp_snapshot()
    if proc.returncode == 0:  # the machine already has the needed settings
        return
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert "hugepages-64kB/enabled" in proc.stderr and "--set-thp" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_refused_scenario_exits_6_before_running(tmp_path: Path) -> None:
    path = tmp_path / "v.scenario"
    path.write_text("spawn P\nvfork P C\n")
    proc = run_cli(str(path))
    assert proc.returncode == 6
    assert "line 2: vfork" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_scenario_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.scenario"
    path.write_text("spawn P\nfrobnicate P\n")
    proc = run_cli(str(path))
    assert proc.returncode == 1
    assert "line 2" in proc.stderr and "Traceback" not in proc.stderr


def test_not_root_exits_6() -> None:
    """A run that has dropped root (setuid in a forked child of this test) exits 6 and says why."""
    if os.geteuid() != 0:
        live_unavailable("not root: cannot drop privileges to test the non-root path")
    import tempfile

    import foliosim.cli
    import foliosim.live.plan
    import foliosim.live.run
    import foliosim.report.live  # loaded before the privileges go

    folder = tempfile.mkdtemp(prefix="foliosim-nonroot-")
    try:
        os.chmod(folder, 0o755)
        path = os.path.join(folder, "ok.scenario")
        Path(path).write_text("spawn P\nmmap P m 16K\nwrite P m 16K 1\n")
        os.chmod(path, 0o644)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 99
            try:
                os.close(r)
                os.dup2(w, 1)
                os.dup2(w, 2)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the child's own streams
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                os.setgid(65534)
                os.setuid(65534)
                foliosim.cli.main(args=["live", path], standalone_mode=True)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                code = 98
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(w)
        with os.fdopen(r) as fh:
            output = fh.read()
        _, status = os.waitpid(pid, 0)
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    assert os.waitstatus_to_exitcode(status) == 6, output
    assert "not root" in output and "Traceback" not in output


def test_sigint_mid_run_restores_settings_and_cleans_up(full: str, tmp_path: Path) -> None:
    before = thp_snapshot()
    path = tmp_path / "slow.scenario"
    # enough lines that the run is still going when the signal comes
    body = ["option thp=4", "spawn P", "mmap P buf 64K anon private", "write P buf 64K 1"]
    for i in range(200):
        body += [f"fork P C{i}", f"write C{i} buf 64K 2", f"exit C{i}"]
    path.write_text("\n".join(body) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "foliosim", "live", str(path), "--set-thp"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=sigint_default)
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        seen = 0
        while time.monotonic() < deadline and seen < 8:
            if proc.stdout.readline().startswith(("ok ", "DIFF")):
                seen += 1
        assert seen >= 8, "the run did not get going"
        assert thp_snapshot() != before  # the settings are changed while it runs
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert thp_snapshot() == before
    assert tracefs_instances() == []
    assert not os.path.exists("/run/foliosim/thp-restore.json")
    time.sleep(0.2)
    assert orphan_agents() == []


def orphan_agents() -> list[int]:
    """Agent processes whose run is over (their driver's socket directory is gone)."""
    out = []
    for entry in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            argv = Path(entry).read_bytes().split(b"\0")
        except OSError:
            continue
        if b"foliosim.live.agent" in argv and len(argv) > 3 and not os.path.exists(os.path.dirname(argv[3])):
            out.append(int(entry.split("/")[2]))
    return out


def test_pages_level_counts_folio_fields_as_not_observed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without BPF the folio fields are reported as not observed, never as agreeing."""
    if os.geteuid() != 0:
        live_unavailable("not root")
    from foliosim.host import bpf
    from foliosim.host.errors import HostUnavailable
    from foliosim.live.run import run_live

    def no_bpf(self: object, *args: object, **kwargs: object) -> None:
        raise HostUnavailable("BPF disabled by this test")

    monkeypatch.setattr(bpf.FolioReader, "__init__", no_bpf)
    run = run_live((ROOT / "examples/live/fork-child-exits-order4.scenario").read_text(), set_thp=True)
    assert run.capability.level == "pages"
    assert "BPF disabled by this test" in run.capability.describe()
    assert run.diffs == 0
    assert sum(r.not_observed for r in run.lines) > 0
    fields = {d.field for r in run.lines for d in r.diffs}
    assert not any(f.startswith(("slot", "refcount", "_")) for f in fields)
    # the page-level fields were still compared: at least 16 pages x 7 fields on the line after the first write
    assert max(r.compared for r in run.lines) >= 16 * 7


def test_sigkill_leaves_settings_that_the_next_run_restores_first(full: str, tmp_path: Path) -> None:
    before = thp_snapshot()
    path = tmp_path / "slow.scenario"
    body = ["option thp=4", "spawn P", "mmap P buf 64K anon private", "write P buf 64K 1"]
    for i in range(200):
        body += [f"fork P C{i}", f"exit C{i}"]
    path.write_text("\n".join(body) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "foliosim", "live", str(path), "--set-thp"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        seen = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and seen < 6:
            if proc.stdout.readline().startswith(("ok ", "DIFF")):
                seen += 1
        assert seen >= 6
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert thp_snapshot() != before, "a SIGKILLed run cannot restore; the state file must be there"
    assert os.path.exists("/run/foliosim/thp-restore.json")
    # the next run restores first, and says so
    nxt = run_cli(str(ROOT / "examples/live/fork-child-exits-order2.scenario"), "--set-thp")
    assert nxt.returncode == 0, nxt.stdout + nxt.stderr
    assert "left by an earlier run that was killed, restored before this run" in nxt.stdout
    assert thp_snapshot() == before
    deadline = time.monotonic() + 10
    while orphan_agents() and time.monotonic() < deadline:  # the killed run's agents exit on end-of-file
        time.sleep(0.1)
    assert orphan_agents() == []
