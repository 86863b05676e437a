"""strace import: the parser on canned output, and real multi-process programs traced live."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from foliosim.evaluate.cell import make_cell, run_cell
from foliosim.workloads.steps import dump_steps, load_steps
from foliosim.workloads.strace import TRACED, check_params, import_strace, parse_strace, split_args

ROOT = Path(__file__).resolve().parent.parent
FOLIOSIM = [sys.executable, "-m", "foliosim"]

CANNED = """\
100 execve("/usr/bin/sh", ["sh", "-c", "x | y"], 0x7ffc /* 3 vars */) = 0
100 brk(NULL)                         = 0x5562000
100 brk(0x5583000)                    = 0x5583000
100 mmap(NULL, 65536, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
100 mmap(NULL, 32768, PROT_READ, MAP_PRIVATE|MAP_DENYWRITE, 3</usr/lib/libc.so.6>, 0) = 0x7f0000100000
100 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD <unfinished ...>
101 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_ANONYMOUS, -1, 0) = 0x7f0000200000
100 <... clone resumed>, child_tidptr=0x7f00) = 101
101 clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD, exit_signal=0}, 88) = 102
102 madvise(0x7f0000000000, 16384, MADV_DONTNEED) = 0
102 munmap(0x7f0000300000, 4096)      = -1 EINVAL (Invalid argument)
101 exit_group(0)                     = ?
101 +++ exited with 0 +++
this line is garbage
100 exit_group(0 <unfinished ...>
"""


def test_split_args_respects_nesting() -> None:
    assert split_args('{flags=A|B, x=1}, 88') == ["{flags=A|B, x=1}", "88"]
    assert split_args('"a,b", ["c", "d"], 3</x, y>') == ['"a,b"', '["c", "d"]', "3</x, y>"]


def test_parse_and_import_canned_output() -> None:
    calls = parse_strace(CANNED)
    names = [(c.pid, c.name) for c in calls]
    assert (100, "clone") in names and names.index((100, "clone")) < names.index((101, "mmap")), \
        "an unfinished call is placed where it started, before the child's calls"
    clone = next(c for c in calls if c.name == "clone")
    assert clone.result == 101
    assert calls[-1].name == "exit_group" and calls[-1].result is None
    steps, stats = import_strace(CANNED)
    assert stats.unparsed == 1 and stats.processes == 2
    verbs = [(s.verb, s.task) for s in steps]
    assert ("fork", "p100") in verbs and ("thread", "p101") in verbs
    assert ("exit", "p101") in verbs and ("exit", "p102") in verbs, "exit_group ends every thread"
    assert ("munmap", "p102") not in verbs, "failed calls change nothing"
    assert steps[0].verb == "file" and steps[0].args[0] == "/usr/bin/sh"
    libc = next(s for s in steps if s.verb == "file" and s.args[0] == "/usr/lib/libc.so.6")
    assert libc.args[1] == 8
    assert load_steps(dump_steps(steps)) == steps
    for design in ("kernel", "legacy"):
        result = run_cell(make_cell(design, "file:canned", None, 1, workload_text=dump_steps(steps)))
        assert result.skipped == 0, result.notes


def _can_strace() -> str | None:
    if shutil.which("strace") is None:
        return "strace is not installed (apt-get install strace)"
    probe = subprocess.run(["strace", "-f", "-qq", "-o", os.devnull, "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"strace cannot trace here (ptrace not permitted?): {probe.stderr.decode()[:200]}"
    return None


needs_strace = pytest.mark.skipif(_can_strace() is not None, reason=_can_strace() or "")

POOL = """
import multiprocessing as mp
def square(x):
    return x * x
if __name__ == "__main__":
    with mp.get_context("fork").Pool(3) as pool:
        print(sum(pool.map(square, range(200))))
"""


def _strace_workload(command: list[str], tmp_path: Path) -> Path:
    """Run COMMAND under strace as `foliosim trace` used to, and import the log as a workload file (the library
    path `compare --workload-file` keeps for strace logs; `foliosim trace` itself now records run traces)."""
    log = tmp_path / "raw.txt"
    argv = ["strace", "-f", "-y", "-qq", "-o", str(log), "-e", "trace=" + ",".join(TRACED), "-e", "signal=none",
            "--", *command]
    run = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    steps, stats = import_strace(log.read_text(encoding="utf-8", errors="replace"))
    assert stats.processes >= 1
    out = tmp_path / "w.jsonl"
    out.write_text("# foliosim workload imported from strace\n" + dump_steps(steps), encoding="utf-8")
    return out


@needs_strace
@pytest.mark.parametrize("command", [["sh", "-c", "seq 1 2000 | sort -r | head -n 3 | cat >/dev/null"],
                                     [sys.executable, "-c", POOL]], ids=["shell-pipeline", "python-pool"])
def test_import_a_real_multi_process_program(command: list[str], tmp_path: Path) -> None:
    out = _strace_workload(command, tmp_path)
    steps = load_steps(out.read_text())
    forks = sum(s.verb in ("fork", "vfork") for s in steps)
    assert forks >= 3, f"expected a multi-process tree, got {forks} forks"
    assert sum(s.verb == "exec" for s in steps) >= (3 if command[0] == "sh" else 1)
    text = out.read_text()
    results = {d: run_cell(make_cell(d, "file:w.jsonl", None, 1, workload_text=text)) for d in ("kernel", "exact")}
    for design, result in results.items():
        rows = {r[0]: 0.0 for r in result.rows}
        for metric, _c, _o, _n, value in result.rows:
            rows[metric] += value
        assert rows.get("rmap_ops", 0) > 100, design
        assert rows.get("unsafe", 0) == 0 and rows.get("oracle_leaks", 0) == 0, result.notes
        assert result.skipped < len(steps) // 10, result.notes
    # The same file through the CLI grid.
    db = tmp_path / "r.sqlite"
    cmp = subprocess.run([*FOLIOSIM, "compare", "--workload-file", str(out), "-d", "kernel,stopped", "--seeds", "1",
                          "--db", str(db), "-j", "1", "-q"], capture_output=True, text=True, timeout=120, check=False)
    assert cmp.returncode == 0, cmp.stderr
    assert cmp.stdout.startswith("On the recorded real programs (")


def test_import_parameter_errors_are_clear() -> None:
    steps, _stats = import_strace(CANNED, {"touch": 4})
    assert steps and steps[0].verb == "file"
    with pytest.raises(ValueError, match="unknown strace import parameter 'tuoch'"):
        import_strace(CANNED, {"tuoch": 4})
    with pytest.raises(ValueError, match="touch"):
        check_params({"touch": -1})
