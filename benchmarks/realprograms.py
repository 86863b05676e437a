"""Six real programs recorded with `foliosim trace --check-live`, simulated, and checked against the live folios.

A shell pipeline, a Python multiprocessing Pool over numpy arrays, `make -j2` of a small C project, a pre-forking
server, Redis's BGSAVE (fork-for-snapshot) and headless Chromium, each recorded with the mTHP sizes 16K and 64K
enabled (`--thp`, restored afterwards). For each: the recording (events, faults, processes), the slowdown of the
traced program (median of alternating untraced and traced runs, without --check-live, the same THP settings for
both), the simulator's time and faults/s, and the live agreement on anonymous memory with every disagreement by
cause. Writes the table into docs/performance.md (section "realprograms"); the traces smaller than 2 MB go to
examples/run-traces/, the others to --big-dir.

    sudo .venv/bin/python benchmarks/realprograms.py [--only sh-pipeline,pool] [--runs 5] [--big-dir DIR] [--no-doc]

Needs root (tracefs, pagemap PFNs, the BPF folio reader), gcc and make; redis-server/redis-cli/redis-benchmark and
chromium are skipped with a note when missing (Debian: apt-get install redis-server chromium).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfdoc import update_section

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "run-traces"
THP = "16K=always,64K=always"
THP_FILES = {"hugepages-16kB/enabled": "always", "hugepages-64kB/enabled": "always"}
#: traces at most this big (gzip) are written to examples/run-traces/ (committed); bigger ones to --big-dir
COMMIT_LIMIT = 2 << 20
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Program:
    """One real program: how to prepare a run (a fresh argv each time) and what to call its trace."""

    name: str
    title: str
    needs: tuple[str, ...]
    command: Callable[[Path, int], list[str]]  # (work dir, run number) -> argv
    shown: str  # the command as the table shows it
    env: dict[str, str] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sh(work: Path, run: int) -> list[str]:
    return ["sh", "-c", "ls -l /usr/bin | sort | head"]


def _pool(work: Path, run: int) -> list[str]:
    return [sys.executable, str(EXAMPLES / "pool.py")]


def _make(work: Path, run: int) -> list[str]:
    project = work / "project"
    if not project.exists():
        subprocess.run([str(EXAMPLES / "make-project.sh"), str(project)], check=True)
    return ["make", "-s", "-B", "-j2", "-C", str(project)]  # -B: every run builds everything


def _prefork(work: Path, run: int) -> list[str]:
    binary = work / "prefork-server"
    if not binary.exists():
        subprocess.run(["gcc", "-O1", "-o", str(binary), str(EXAMPLES / "prefork-server.c")], check=True)
    return [str(binary), "4", "200", "4096"]


def _redis(work: Path, run: int) -> list[str]:
    data = work / f"redis-{run}"  # a fresh data directory: no dump.rdb to load at start
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    return [str(EXAMPLES / "redis-bgsave.sh"), str(data), str(_free_port()), "50000"]


def _chromium(work: Path, run: int) -> list[str]:
    profile = work / f"chromium-{run}"  # a fresh profile: every run starts the same way
    shutil.rmtree(profile, ignore_errors=True)
    binary = shutil.which("chromium") or "chromium"
    return [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", (EXAMPLES / "page.html").as_uri(), "--dump-dom"]


PROGRAMS = [
    Program("sh-pipeline", "shell pipeline", ("sh", "ls", "sort", "head"), _sh,
            "sh -c 'ls -l /usr/bin | sort | head'"),
    Program("pool", "Python multiprocessing Pool(4) over numpy", (), _pool, "python examples/run-traces/pool.py"),
    Program("make", "make -j2 of a small C project", ("make", "gcc"), _make,
            "make -s -B -j2 -C DIR (examples/run-traces/make-project.sh DIR: 8 modules)"),
    Program("prefork-server", "pre-forking server (4 workers, 200 requests on 127.0.0.1)", ("gcc",), _prefork,
            "prefork-server 4 200 4096 (examples/run-traces/prefork-server.c)"),
    Program("redis-bgsave", "Redis BGSAVE while redis-benchmark writes", ("redis-server", "redis-cli",
                                                                         "redis-benchmark"), _redis,
            "examples/run-traces/redis-bgsave.sh DIR PORT 50000"),
    Program("chromium", "headless Chromium loading a local page", ("chromium",), _chromium,
            "chromium --headless --no-sandbox --disable-gpu ... --dump-dom file://.../page.html"),
]


def trace(out: Path, argv: list[str], *options: str) -> dict[str, Any]:
    """`foliosim trace OPTIONS -o OUT -- ARGV` (the CLI, as the README runs it); the trace's header. The exit
    status is the command's own, so the recording is judged by its file: complete, or RuntimeError."""
    out.unlink(missing_ok=True)
    if "--census" not in options:  # the figures of issue 12 are without the census (benchmarks/census.py times it)
        options = (*options, "--census", "none")
    proc = subprocess.run([sys.executable, "-m", "foliosim", "trace", *options, "-o", str(out), "--", *argv],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if not out.exists():
        raise RuntimeError(f"foliosim trace {' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    h = header(out)
    if h.get("incomplete"):
        raise RuntimeError(f"foliosim trace {' '.join(argv)}: the recording is incomplete: {proc.stderr[-2000:]}")
    return h


def header(path: Path) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return dict(json.loads(f.readline()))


def count_events(path: Path) -> int:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return sum(1 for _ in f) - 1


def slowdown(program: Program, work: Path, runs: int) -> dict[str, Any]:
    """Median wall times of ``runs`` untraced and ``runs`` traced runs (alternating; no --check-live), with the
    mTHP sizes set for both (ThpGuard, restored at the end)."""
    from foliosim.host.thp import ThpGuard

    untraced: list[float] = []
    traced: list[float] = []
    out = work / "slowdown.trace.gz"
    with ThpGuard(THP_FILES, lock_timeout=300):
        for run in range(runs):
            argv = program.command(work, 100 + 2 * run)
            t0 = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            untraced.append(time.perf_counter() - t0)
            argv = program.command(work, 101 + 2 * run)
            traced.append(float(trace(out, argv)["recorder"]["wall_s"]))
    out.unlink(missing_ok=True)
    u, t = statistics.median(untraced), statistics.median(traced)
    return {"untraced_s": u, "traced_s": t, "slowdown": t / u if u else None, "runs": runs,
            "untraced_all": untraced, "traced_all": traced}


def repeat_check(program: Program, work: Path, repeat: int, big_dir: Path) -> dict[str, Any]:
    """``repeat`` more recordings with --check-live, simulated: the spread of the agreement from run to run (the
    processes race differently each time). A recording with a disagreement other than a race is kept in
    ``big_dir`` for a look."""
    from foliosim.live.snapcheck import C_MM_ORDER, C_RACE
    from foliosim.live.tracesim import simulate
    from foliosim.workloads.runtrace import RunTrace

    percents: list[float] = []
    compared = agreed = 0
    causes: dict[str, int] = {}
    path = work / "repeat.trace.gz"
    for i in range(repeat):
        trace(path, program.command(work, 50 + i), "--thp", THP, "--check-live")
        check = simulate(RunTrace.open(path)).check
        assert check is not None
        percents.append(100.0 * check.agreed / check.compared if check.compared else 100.0)
        compared += check.compared
        agreed += check.agreed
        for (_f, cause), n in check.causes.items():
            causes[cause] = causes.get(cause, 0) + n
        if any(cause not in (C_RACE, C_MM_ORDER) for _f, cause in check.causes):
            kept = big_dir / f"{program.name}-repeat{i}.trace.gz"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, kept)
            log(f"{program.name}: kept {kept}: {dict(check.causes)}")
    path.unlink(missing_ok=True)
    return {"recordings": repeat, "min_percent": min(percents, default=None), "compared": compared,
            "agreed": agreed, "causes": causes}


def measure(program: Program, work: Path, runs: int, big_dir: Path, repeat: int) -> dict[str, Any]:
    from foliosim.live.snapcheck import C_OTHER
    from foliosim.live.tracesim import simulate
    from foliosim.workloads.runtrace import RunTrace

    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{program.name}.trace.gz"
    argv = program.command(work, 0)
    log(f"{program.name}: recording with --check-live: {' '.join(argv)}")
    t0 = time.perf_counter()
    h = trace(path, argv, "--thp", THP, "--check-live", "--measure-slowdown")
    record_s = time.perf_counter() - t0
    events = count_events(path)
    size = path.stat().st_size
    dest = (EXAMPLES if size <= COMMIT_LIMIT else big_dir) / path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), dest)
    log(f"{program.name}: {size / 1e6:.2f} MB -> {dest}; simulating")
    run = simulate(RunTrace.open(dest))
    check = run.check
    assert check is not None
    log(f"{program.name}: {run.recorded_faults} faults, {100 * check.agreed / max(check.compared, 1):.3f}% of "
        f"{check.compared} fields; measuring the slowdown ({runs} + {runs} runs)")
    slow = slowdown(program, work, runs) if runs else {}
    log(f"{program.name}: {repeat} more recordings with --check-live")
    more = repeat_check(program, work, repeat, big_dir) if repeat else {}
    rec = h["recorder"]
    causes = [{"field": f, "cause": c, "count": n} for (f, c), n in check.causes.most_common()]
    return {
        "name": program.name, "title": program.title, "command": program.shown, "trace": str(dest),
        "trace_bytes": size, "committed": dest.parent == EXAMPLES, "events": events,
        "faults": run.recorded_faults, "kernel_faults": rec.get("kernel_faults", 0),
        "processes": run.convert.processes, "threads": run.convert.threads, "snapshots": check.snapshots,
        "record_check_live_s": record_s, "check_live_wall_s": rec.get("wall_s"),
        "check_live_slowdown": rec.get("slowdown"), "snapshot_s": rec.get("snapshot_s"),
        "slowdown": slow, "sim_s": run.sim_seconds, "sim_wall_s": run.wall_seconds,
        "faults_per_s": run.faults_per_second, "faults_taken": run.faults_taken,
        "faults_not_taken": {k: n for k, n in run.faults.items() if k != "taken"},
        "copies": run.copies, "reuses": run.reuses, "compared": check.compared, "agreed": check.agreed,
        "percent": 100.0 * check.agreed / check.compared if check.compared else None,
        "causes": causes, "unexplained": sum(n for (_f, c), n in check.causes.items() if c == C_OTHER),
        "file_pages": check.file_pages, "rejected": dict(run.rejected), "unexpressed": dict(run.convert.unexpressed),
        "lost_events": rec.get("lost_events", 0), "unfrozen": rec.get("unfrozen_snapshots", 0),
        "repeat": more,
    }


def _short(cause: str) -> str:
    """A cause as the table names it (the legend under it gives the two long ones)."""
    from foliosim.live.snapcheck import C_MM_ORDER, C_RACE

    return {C_RACE: "race", C_MM_ORDER: "slot order"}.get(cause, cause)


def _causes(r: dict[str, Any]) -> str:
    if not r["causes"]:
        return "none"
    merged: dict[str, int] = {}
    for c in r["causes"]:
        merged[c["cause"]] = merged.get(c["cause"], 0) + c["count"]
    return "; ".join(f"{n} {_short(cause)}" for cause, n in sorted(merged.items(), key=lambda kv: -kv[1]))


def _repeat(r: dict[str, Any]) -> str:
    more = r.get("repeat") or {}
    if not more:
        return ""
    causes = "; ".join(f"{n} {_short(c)}" for c, n in sorted(more["causes"].items(), key=lambda kv: -kv[1])) or "none"
    return (f"; {more['recordings']} more recordings: lowest agreement {more['min_percent']:.3f} %, together "
            f"{more['agreed']:,} of {more['compared']:,} fields, disagreements {causes}")


def _not_taken(r: dict[str, Any]) -> str:
    items = sorted(r["faults_not_taken"].items(), key=lambda kv: -kv[1])
    return "; ".join(f"{n} {cause}" for cause, n in items) or "none"


TABLE_HEAD = ("| program | events | faults | processes / threads | slowdown | recording with --check-live | simulator "
              "| agreement on anonymous memory | disagreements by cause | trace |\n"
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |\n")


LEGEND = ("*race*: a fault raced with another process's fault on the page, or with its fork, exec or exit (the kernel "
          "decided inside overlapping windows, the trace orders them by their times; docs/run-trace.md, \"Races\"); "
          "*slot order*: the same mappings in other slots, MMs came and went in another order than the trace shows "
          "(a fork copying while another process's exec or exit tore down).")


def document(results: list[dict[str, Any]], skipped: list[str], wall: float) -> str:
    rows = []
    for r in results:
        s = r["slowdown"]
        slow = (f"{s['slowdown']:.2f}× ({s['untraced_s'] * 1e3:.0f} → {s['traced_s'] * 1e3:.0f} ms)"
                if s.get("slowdown") else "-")
        trace = (f"[{Path(r['trace']).name}](../examples/run-traces/{Path(r['trace']).name})" if r["committed"]
                 else f"{r['trace_bytes'] / 1e6:.1f} MB, regenerated")
        rows.append(
            f"| {r['title']} | {r['events']:,} | {r['faults']:,} ({r['kernel_faults']} kernel) | "
            f"{r['processes']} / {r['threads']} | {slow} | "
            f"{r['check_live_wall_s']:.1f} s, {r['snapshots']} snapshots | "
            f"{r['sim_s']:.2f} s, {r['faults_per_s']:,.0f}/s | **{r['percent']:.3f} %** ({r['agreed']:,} / "
            f"{r['compared']:,}) | {_causes(r)} | {trace} |")
    notes = [f"- {r['title']}: `{r['command']}`; faults the simulator did not take: {_not_taken(r)}; "
             f"copy-on-write {r['copies']:,} copies, {r['reuses']:,} reuses{_repeat(r)}" for r in results]
    body = f"""## Real programs: recorded, simulated, checked against the live folios (benchmarks/realprograms.py)

Each program recorded as root with `foliosim trace --thp {THP} --check-live` on this machine
({platform.release()}, {os.cpu_count()} CPUs, shared with other work), then simulated with
`foliosim run-trace` (design kernel, oracle off). *Slowdown*: median wall time of
{results[0]['slowdown'].get('runs', 0) if results else 0} traced runs (`foliosim trace` without `--check-live`,
from the command's start to its end) over the median of as many untraced runs, alternating, with the same mTHP
sizes for both. *Recording with --check-live*: the traced run's wall time when every fork and exit is also
snapshotted (the snapshots dominate it). *Agreement*: the snapshots' fields (anonymous pages of the private
mappings, also the copies in private file mappings: present, folio order, page in folio, folio identity, precise
mapcount, pagemap exclusive; per large folio refcount, mapcounts, pincount, both slots by role, shared bit)
that agree with the simulator's state at the same point; each program is recorded again (notes) since its
processes race differently from run to run. Whole run: {wall:.0f} s.

""" + TABLE_HEAD + "\n".join(rows) + "\n\n" + LEGEND + "\n\n" + "\n".join(notes)
    if skipped:
        body += "\n\nNot run here: " + "; ".join(skipped) + "."
    return body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated program names: " +
                        ", ".join(p.name for p in PROGRAMS))
    parser.add_argument("--runs", type=int, default=9, help="untraced and traced runs for the slowdown (0: none)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="more recordings with --check-live, for the spread of the agreement (0: none)")
    parser.add_argument("--big-dir", default=str(Path(tempfile.gettempdir()) / "foliosim-realprograms"),
                        help="where traces over 2 MB go (default: %(default)s)")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/performance.md")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args()
    from foliosim.live.snapcheck import C_OTHER

    if os.geteuid() != 0:
        log("benchmarks/realprograms.py needs root (tracefs, pagemap PFNs, the BPF folio reader)")
        return 6
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = wanted - {p.name for p in PROGRAMS}
    if unknown:
        log(f"unknown program(s) {sorted(unknown)}; known: {', '.join(p.name for p in PROGRAMS)}")
        return 2
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="foliosim-realprograms-") as tmp:
        for program in PROGRAMS:
            if wanted and program.name not in wanted:
                continue
            missing = [tool for tool in program.needs if shutil.which(tool) is None]
            if missing:
                skipped.append(f"{program.title} (missing {', '.join(missing)})")
                log(f"{program.name}: skipped, missing {', '.join(missing)}")
                continue
            results.append(measure(program, Path(tmp) / program.name, args.runs, Path(args.big_dir), args.repeat))
            r = results[-1]
            log(f"{program.name}: slowdown {r['slowdown'].get('slowdown')}, agreement {r['percent']:.3f} %, "
                f"causes: {_causes(r)}")
    wall = time.perf_counter() - t0
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if not args.no_doc and results:
        log(f"wrote {update_section('realprograms', document(results, skipped, wall))}")
    bad = [r["name"] for r in results if r["percent"] is None or r["percent"] < 99.0 or r["unexplained"]
           or (r["repeat"] and (r["repeat"]["min_percent"] < 99.0 or r["repeat"]["causes"].get(C_OTHER)))]
    if bad:
        log(f"below 99 % or with unexplained disagreements: {', '.join(bad)}")
    return 5 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
