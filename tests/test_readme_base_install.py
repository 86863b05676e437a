"""Every command the README shows, run on the README's Demo install (`pip install -e .`, no extras).

A fresh venv gets the base install only; the commands are read from README.md
itself (the `Demo:`/`Viewer:` lines, the indented command blocks and the Python
block), so a command added to the README is tested here without editing this
file. Each must exit as documented: 0 (or its documented status, e.g. 4 for a
counterexample found), or, when it needs an extra, exit 1 with one line on
stderr saying which `foliosim[X]` to install. No command may print a traceback.

Skipped, and why (SKIPPED below is checked against the README, so it stays honest):

* the `Tests:` line, `pytest`/`ruff`/`mypy` and the `pip install ... '.[X]'` lines:
  they install extras (this test is about the base install);
* `foliosim live ...`: needs root and the running kernel (and `--set-thp` changes
  global THP settings);
* `foliosim trace -o RUN.trace -- CMD`: needs root (ptrace, tracefs, BPF), and
  `compare --workload-file ls.trace` needs its output;
* `python benchmarks/*.py`: minutes long, and they rewrite docs/.

Shortened: `foliosim trace-generate standard.npz` runs with `--ops 20000` (the
full 10-million-operation trace takes minutes); the file keeps its name, so the
`fast-replay standard.npz` line after it still reads it. `foliosim check --mms 3
--order 2 --depth 4` runs to depth 3 (pure Python here: ~2 s instead of ~35 s).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: README commands not run here (a substring of the command -> why).
SKIPPED = {
    "foliosim live": "needs root and the running kernel (--set-thp changes global THP settings)",
    "foliosim trace -o": "needs root (ptrace, tracefs, BPF)",
    "--workload-file ls.trace": "needs the run trace `foliosim trace` writes",
    "benchmarks/": "benchmarks take minutes and rewrite docs/",
    "pip install": "installs an extra; this test is about the base install",
    "pytest": "the test suite needs the dev extra",
    "ruff check": "needs the dev extra",
}

#: Commands that need an extra on the base install: the extra their one-line message must name.
NEEDS_EXTRA = {
    "foliosim fast-replay": "fast",  # the default engine is the compiled one (numba)
    "--report": "report",  # plots need matplotlib
}

#: Documented exit statuses other than 0.
EXPECTED_STATUS = {
    "--mutant never-clear-shared": 4,  # a violation found: the counterexample is the point
}

SHORTENED = {"foliosim trace-generate standard.npz": "foliosim trace-generate --ops 20000 standard.npz",
             # the base install explores in pure Python: depth 4 takes ~35 s, depth 3 ~2 s through the same code
             # (the dev install runs depth 4 on the compiled engine: tests/check/test_cli_check.py)
             "foliosim check --mms 3 --order 2 --depth 4": "foliosim check --mms 3 --order 2 --depth 3"}


@dataclass(slots=True)
class Command:
    text: str  # as the README shows it
    run: str  # what runs (optional [..] parts and comments removed)
    files: set[str] = field(default_factory=set)


def _strip(line: str) -> str:
    """A README command line without its trailing comment and its optional ``[...]`` parts."""
    if "  #" in line:
        line = line[:line.index("  #")]
    line = re.sub(r"\s*\[[^\]]*\]", "", line)
    return " ".join(line.split()) if "'" not in line else line.strip()


def readme_commands() -> tuple[list[Command], list[tuple[str, str]], list[str], str]:
    """(commands to run, skipped (command, why), trace lines for trace.jsonl, the Python block)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    raw: list[str] = []
    for line in text.splitlines()[:12]:
        for label in ("Demo:", "Viewer:", "Tests:"):
            if line.startswith(label):
                command = line[len(label):].split("`")[1]
                raw += [part.strip() for part in command.split("&&")]
    trace: list[str] = []
    in_fence = False
    python: list[str] = []
    fence_lang = ""
    for line in text.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
            fence_lang = line[3:].strip()
            continue
        if in_fence:
            if fence_lang == "python":
                python.append(line)
            continue
        if not line.startswith("    "):
            continue
        body = line.strip()
        if body.startswith('{"op"'):
            trace.append(body)
        elif body and not body.startswith("#"):
            raw.append(body)
    commands: list[Command] = []
    skipped: list[tuple[str, str]] = []
    for item in raw:
        if item.startswith("python3 -m venv") or re.search(r"pip install .*-e \.$", item):
            continue  # the venv and the base install this test makes
        why = next((reason for key, reason in SKIPPED.items() if key in item), None)
        if why is not None:
            skipped.append((item, why))
            continue
        run = _strip(item.replace(".venv/bin/", ""))
        if not run.startswith(("foliosim ", "python ")):
            skipped.append((item, "not a foliosim command"))
            continue
        run = SHORTENED.get(run, run)
        files = {w for w in re.split(r"[\s<>]+", run) if ("." in w or "/" in w) and not w.startswith("-")}
        commands.append(Command(item, run, files))
    return commands, skipped, trace, "\n".join(python)


def test_readme_parsing_finds_the_commands() -> None:
    commands, skipped, trace, python = readme_commands()
    runs = [c.run for c in commands]
    assert "foliosim examples" in runs
    mutant = "foliosim check --mutant never-clear-shared --depth 4 --counterexample cx.jsonl"
    assert any(r.startswith(mutant) for r in runs)
    assert "foliosim replay cx.jsonl" in runs  # the counterexample the README writes replays
    assert any(r.startswith("foliosim check --interleave") for r in runs)
    assert any("trace-generate --ops 20000 standard.npz" in r for r in runs)
    assert all("[" not in r for r in runs)
    assert any("foliosim live" in s for s, _why in skipped)
    assert len(trace) >= 3 and "folio_maybe_mapped_shared" in python


def _venv(tmp: Path) -> Path:
    venv = tmp / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-c", str(ROOT / "constraints.txt"),
                          "-e", str(ROOT)], capture_output=True, text=True, env=env, check=False)
    if pip.returncode != 0:
        pytest.fail(f"pip install -e . failed:\n{pip.stderr[-3000:]}")
    return venv


def test_every_readme_command_runs_on_the_base_install(tmp_path: Path) -> None:
    commands, skipped, trace, python = readme_commands()
    began = time.monotonic()
    venv = _venv(tmp_path)
    # No extra came in with the base install.
    listed = subprocess.run([str(venv / "bin" / "python"), "-c", "import numba"], capture_output=True, check=False)
    assert listed.returncode != 0, "numba must stay in the fast extra"
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(ROOT / "examples", work / "examples")
    (work / "trace.jsonl").write_text("\n".join(trace) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "120"

    def run(cmd: Command, after: list[Future[tuple[Command, subprocess.CompletedProcess[str], float]]]
            ) -> tuple[Command, subprocess.CompletedProcess[str], float]:
        for dep in after:
            dep.result()
        start = time.monotonic()
        argv = cmd.run.replace("python ", f"{venv / 'bin' / 'python'} ", 1) if cmd.run.startswith("python ") \
            else cmd.run
        proc = subprocess.run(["bash", "-c", argv], cwd=work, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=300, check=False)
        return cmd, proc, time.monotonic() - start

    futures: list[Future[tuple[Command, subprocess.CompletedProcess[str], float]]] = []
    done: list[tuple[Command, Future[tuple[Command, subprocess.CompletedProcess[str], float]]]] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for cmd in commands:
            # A command waits for the earlier ones that name one of its files (cx.jsonl, standard.npz, ...).
            after = [f for c, f in done if c.files & cmd.files]
            fut = pool.submit(run, cmd, after)
            done.append((cmd, fut))
            futures.append(fut)
        py = pool.submit(subprocess.run, [str(venv / "bin" / "python"), "-c", python], cwd=work, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    failures: list[str] = []
    timings: list[str] = []
    for fut in futures:
        cmd, proc, seconds = fut.result()
        timings.append(f"{seconds:6.1f}s  {cmd.run}")
        failures += _judge(cmd, proc)
        if proc.returncode == 1 and any(key in cmd.run for key in NEEDS_EXTRA):
            # refused for a missing extra: before doing the work, so the files only it names were not written
            others = set().union(*(c.files for c in commands if c is not cmd))
            made = sorted(f for f in cmd.files - others if (work / f).exists())
            if made:
                failures.append(f"`{cmd.run}`: refused for a missing extra, but wrote {', '.join(made)}")
    pyproc = py.result()
    if pyproc.returncode != 0 or pyproc.stdout.strip() != "True":
        failures.append(f"README's Python block: exit {pyproc.returncode}, stdout {pyproc.stdout!r}, "
                        f"stderr {pyproc.stderr[-500:]!r}")
    report = "\n".join(timings) + f"\n(total {time.monotonic() - began:.0f}s; skipped: " \
        + "; ".join(f"{s} ({why})" for s, why in skipped) + ")"
    print(report)
    assert not failures, "\n".join(failures) + "\n" + report
    assert "# violates sanity:" in (work / "cx.jsonl").read_text(encoding="utf-8")


def _judge(cmd: Command, proc: subprocess.CompletedProcess[str]) -> list[str]:
    out: list[str] = []
    where = f"`{cmd.run}`"
    both = proc.stdout + proc.stderr
    if "Traceback" in both:
        out.append(f"{where}: traceback:\n{both[-2000:]}")
        return out
    extra = next((name for key, name in NEEDS_EXTRA.items() if key in cmd.run), None)
    if extra is not None and proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or [""]
        if proc.returncode != 1 or f"foliosim[{extra}]" not in last[0]:
            out.append(f"{where}: exit {proc.returncode}; expected 0 or exit 1 with a one-line "
                       f"'install foliosim[{extra}]' message, got stderr {proc.stderr[-500:]!r}")
        return out
    expected = next((code for key, code in EXPECTED_STATUS.items() if key in cmd.run), 0)
    if proc.returncode != expected:
        out.append(f"{where}: exit {proc.returncode}, documented {expected}; stderr {proc.stderr[-800:]!r}")
    return out

