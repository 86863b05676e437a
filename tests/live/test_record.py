"""`foliosim trace`: small C programs whose memory history is known exactly, recorded on this machine's kernel.

Marked live (root, tracefs, ptrace; BPF for the folio fields). The programs are compiled with gcc at test time;
each maps its memory with MADV_NOHUGEPAGE unless the test is about mTHP, so the fault counts do not depend on
THP settings another developer may have set.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from foliosim.host import thp
from foliosim.live.record import RecordError, parse_thp, prepare_output, record
from tests.conftest import live_unavailable
from tests.helpers import sigint_default

ROOT = Path(__file__).resolve().parents[2]
FOLIOSIM = [sys.executable, "-m", "foliosim"]
PAGE = 4096

pytestmark = pytest.mark.live

PROGRAMS = {
    # N pages written, fork, the child writes the first M and exits, then the parent writes the first K
    "fork_writes": r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
  long n = atol(argv[1]), m = atol(argv[2]), k = atol(argv[3]);
  char *p = mmap(NULL, n * 4096L, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED || madvise(p, n * 4096L, MADV_NOHUGEPAGE)) return 1;
  FILE *f = fopen(argv[4], "w"); fprintf(f, "%lu\n", (unsigned long)p); fclose(f);
  for (long i = 0; i < n; i++) p[i * 4096L] = 1;
  pid_t c = fork();
  if (c == 0) { for (long i = 0; i < m; i++) p[i * 4096L] = 2; _exit(0); }
  waitpid(c, NULL, 0);
  for (long i = 0; i < k; i++) p[i * 4096L] = 3;
  return 0;
}
""",
    # mremap, madvise(MADV_DONTNEED) and a partial munmap of a 64 KiB-aligned range written in full
    "remap": r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#define K64 (64 * 1024)
int main(int argc, char **argv) {
  char *raw = mmap(NULL, 8 * K64, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return 1;
  char *p = (char *)(((uintptr_t)raw + K64 - 1) & ~(uintptr_t)(K64 - 1));
  memset(p, 1, 4 * K64);
  char *q = mremap(p + 2 * K64, K64, 2 * K64, MREMAP_MAYMOVE);
  int r1 = madvise(p, K64, MADV_DONTNEED);
  int r2 = munmap(p + K64 + 4096, 8192);
  FILE *f = fopen(argv[1], "w");
  fprintf(f, "%lu %lu %lu %d %d\n", (unsigned long)raw, (unsigned long)p, (unsigned long)q, r1, r2);
  fclose(f);
  return 0;
}
""",
    # writes N pages, then dies of SIGSEGV
    "crash": r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
int main(int argc, char **argv) {
  long n = atol(argv[1]);
  char *p = mmap(NULL, n * 4096L, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED || madvise(p, n * 4096L, MADV_NOHUGEPAGE)) return 1;
  FILE *f = fopen(argv[2], "w"); fprintf(f, "%lu\n", (unsigned long)p); fclose(f);
  for (long i = 0; i < n; i++) p[i * 4096L] = 1;
  *(volatile int *)8 = 1;
  return 0;
}
""",
    # two threads, each writes its own page of a shared mapping
    "threads": r"""
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
static char *p;
static void *run(void *arg) { p[(long)arg * 4096] = 1; return NULL; }
int main(int argc, char **argv) {
  p = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED || madvise(p, 2 * 4096, MADV_NOHUGEPAGE)) return 1;
  FILE *f = fopen(argv[1], "w"); fprintf(f, "%lu\n", (unsigned long)p); fclose(f);
  pthread_t t[2];
  for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, run, (void *)i);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  return 0;
}
""",
    # installs its own seccomp filter that asks for a tracer at getppid: without one that call fails with ENOSYS
    "own_filter": r"""
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE | 7),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {4, f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) return 1;
  long r = syscall(SYS_getppid);
  int e = errno;
  char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  FILE *out = fopen(argv[1], "w"); fprintf(out, "%ld %d %lu\n", r, e, (unsigned long)p); fclose(out);
  return 0;
}
""",
    # writes pages, forks a child that waits forever, says "ready", waits forever
    "sleeper": r"""
#include <stdio.h>
#include <unistd.h>
#include <sys/mman.h>
int main(void) {
  char *p = mmap(NULL, 64 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return 1;
  for (int i = 0; i < 64; i++) p[i * 4096] = 1;
  if (fork() == 0) { p[0] = 2; pause(); }
  printf("ready\n"); fflush(stdout);
  pause();
  return 0;
}
""",
}


@pytest.fixture(scope="module")
def bins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if os.geteuid() != 0:
        live_unavailable("not root")
    gcc = shutil.which("gcc")
    if gcc is None:
        live_unavailable("gcc is not installed (the test programs are compiled at test time)")
    assert gcc is not None
    out = tmp_path_factory.mktemp("cprogs")
    paths: dict[str, str] = {}
    for name, source in PROGRAMS.items():
        src = out / f"{name}.c"
        src.write_text(source)
        run = subprocess.run([gcc, "-O1", "-pthread", "-o", str(out / name), str(src)], capture_output=True,
                             text=True, check=False)
        assert run.returncode == 0, run.stderr
        paths[name] = str(out / name)
    return paths


def load(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return lines[0], lines[1:]


def in_range(events: list[dict[str, Any]], lo: int, hi: int, mapped: dict[str, Any]) -> list[dict[str, Any]]:
    """The faults at [lo, hi) since the event that ``mapped`` the range: the same addresses may have been another
    mapping's before (the dynamic loader maps and unmaps; where a mapping lands is random), faulted by any thread."""
    return [e for e in events if e["ev"] == "fault" and lo <= e["addr"] < hi and e["t"] > mapped["t"]]


def one(events: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [e for e in events if all(e.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def test_fork_program_faults_are_exactly_the_written_pages(bins: dict[str, str], tmp_path: Path) -> None:
    n, m, k = 64, 24, 16
    addr_file = tmp_path / "addr"
    result = record([bins["fork_writes"], str(n), str(m), str(k), str(addr_file)], str(tmp_path / "run.trace"))
    assert result.command_status == 0 and not result.incomplete
    header, events = load(tmp_path / "run.trace")
    assert header["format"] == "foliosim-run-trace" and header["version"] == 1
    assert header["recorder"]["lost_events"] == 0 and header["clock"] == "CLOCK_MONOTONIC"
    collapsed = header["recorder"]["khugepaged_collapsed"]  # the machine's, while the program ran
    assert isinstance(collapsed, int) and collapsed >= 0
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)
    base = int(addr_file.read_text())
    spawn = one(events, ev="spawn")
    parent = spawn["pid"]
    mmap = one(events, ev="syscall", name="mmap", ret=base)
    assert mmap["args"][1:5] == [n * PAGE, 3, 0x22, -1] and mmap["pid"] == parent and "file" not in mmap
    fork = one(events, ev="fork", pid=parent)
    child = fork["child_pid"]
    assert not fork["thread"] and not fork["vfork"] and fork["child_tid"] == child
    child_exit = one(events, ev="exit", pid=child)
    parent_exit = one(events, ev="exit", pid=parent)
    assert child_exit["group"] and child_exit["code"] == 0 and child_exit["signal"] is None
    assert parent_exit["group"] and parent_exit["code"] == 0
    faults = in_range(events, base, base + n * PAGE, mmap)
    assert all(f["write"] and not f.get("kernel") for f in faults)
    before = [f for f in faults if f["pid"] == parent and f["t"] < fork["t"]]
    in_child = [f for f in faults if f["pid"] == child]
    after = [f for f in faults if f["pid"] == parent and f["t"] > child_exit["t"]]
    assert len(faults) == n + m + k == len(before) + len(in_child) + len(after)
    assert [f["addr"] for f in before] == [base + i * PAGE for i in range(n)]
    assert [f["addr"] for f in in_child] == [base + i * PAGE for i in range(m)]
    assert [f["addr"] for f in after] == [base + i * PAGE for i in range(k)]
    assert all(f["t"] > mmap["t"] for f in before), "a page is written after the mmap that made it"
    assert all(fork["t"] < f["t"] < child_exit["t"] for f in in_child)
    assert all(f["error_code"] & 1 for f in in_child + after), "after the fork the pages are mapped read-only"
    assert parent_exit["t"] > max(f["t"] for f in after)


def test_mremap_dontneed_and_partial_munmap_of_an_mthp_range(bins: dict[str, str], tmp_path: Path) -> None:
    before = thp.read_settings()
    out_file = tmp_path / "values"
    result = record([bins["remap"], str(out_file)], str(tmp_path / "run.trace"),
                    thp_changes=parse_thp("64K=always"), check_live=True)
    assert result.command_status == 0
    assert thp.read_settings().anon[4] == before.anon[4], "the 64K setting is restored"
    header, events = load(tmp_path / "run.trace")
    assert header["thp_set"] == {"hugepages-64kB/enabled": "always"} and header["thp"]["anon"]["4"] == "always"
    raw, p, q, r1, r2 = (int(v) for v in out_file.read_text().split())
    k64 = 64 * 1024
    mmap = one(events, ev="syscall", name="mmap", ret=raw)
    assert mmap["args"][1] == 8 * k64
    mremap = one(events, ev="syscall", name="mremap")
    assert mremap["args"][:4] == [p + 2 * k64, k64, 2 * k64, 1] and mremap["ret"] == q
    madvise = one(events, ev="syscall", name="madvise", args=[p, k64, 4])
    assert madvise["ret"] == r1 == 0
    munmap = one(events, ev="syscall", name="munmap", args=[p + k64 + PAGE, 2 * PAGE])
    assert munmap["ret"] == r2 == 0
    assert mmap["t"] < mremap["t"] < madvise["t"] < munmap["t"]
    faults = in_range(events, p, p + 4 * k64, mmap)
    assert 4 <= len(faults) <= 64 and all(f["t"] < mremap["t"] for f in faults)
    snap = one(events, ev="snapshot", at="exit")
    pages = {page[0]: page for page in snap["pages"]}
    kept = [p + k64] + [p + k64 + i * PAGE for i in range(3, 16)] + [p + 3 * k64 + i * PAGE for i in range(16)]
    assert all(a in pages for a in kept), "every page still mapped is in the exit snapshot"
    assert not any(p <= a < p + k64 or p + k64 + PAGE <= a < p + k64 + 3 * PAGE for a in pages)
    assert {pages[a][3] for a in kept} <= {0, 4}, "64 KiB folios, or order 0 where the kernel fell back"


def test_a_program_killed_by_a_signal_is_recorded_to_its_end(bins: dict[str, str], tmp_path: Path) -> None:
    n = 40
    addr_file = tmp_path / "addr"
    result = record([bins["crash"], str(n), str(addr_file)], str(tmp_path / "run.trace"))
    assert result.command_status == 128 + signal.SIGSEGV and not result.incomplete
    header, events = load(tmp_path / "run.trace")
    assert header["exit_status"] == {"code": None, "signal": signal.SIGSEGV}
    base = int(addr_file.read_text())
    faults = in_range(events, base, base + n * PAGE, one(events, ev="syscall", name="mmap", ret=base))
    assert [f["addr"] for f in faults] == [base + i * PAGE for i in range(n)]
    bad = [e for e in events if e["ev"] == "fault" and e["addr"] == 8]
    assert len(bad) == 1 and bad[0]["write"], "the fatal fault itself is recorded"
    end = one(events, ev="exit")
    assert end["signal"] == signal.SIGSEGV and end["code"] is None and end["group"]
    assert events[-1] is end and end["t"] > bad[0]["t"]


def test_threads_are_forks_with_thread_true(bins: dict[str, str], tmp_path: Path) -> None:
    addr_file = tmp_path / "addr"
    result = record([bins["threads"], str(addr_file)], str(tmp_path / "run.trace"))
    assert result.command_status == 0
    _header, events = load(tmp_path / "run.trace")
    pid = one(events, ev="spawn")["pid"]
    forks = [e for e in events if e["ev"] == "fork"]
    assert len(forks) == 2 and all(f["thread"] and not f["vfork"] and f["child_pid"] == pid for f in forks)
    assert all(f["clone_flags"] & 0x10100 == 0x10100 for f in forks), "CLONE_VM | CLONE_THREAD"
    tids = {f["child_tid"] for f in forks}
    assert len(tids) == 2 and pid not in tids
    exits = [e for e in events if e["ev"] == "exit"]
    assert Counter(e["group"] for e in exits) == {False: 2, True: 1} and exits[-1]["tid"] == pid
    base = int(addr_file.read_text())
    faults = in_range(events, base, base + 2 * PAGE, one(events, ev="syscall", name="mmap", ret=base))
    assert {f["tid"] for f in faults} == tids and {f["pid"] for f in faults} == {pid}
    for f in faults:
        start = one(events, ev="fork", child_tid=f["tid"])
        end = one(events, ev="exit", tid=f["tid"])
        assert start["t"] < f["t"] < end["t"], "a thread's fault lies between its creation and its exit"


def test_check_live_snapshots_show_the_pages_the_program_wrote(bins: dict[str, str], tmp_path: Path) -> None:
    n, m, k = 32, 12, 8
    addr_file = tmp_path / "addr"
    result = record([bins["fork_writes"], str(n), str(m), str(k), str(addr_file)], str(tmp_path / "run.trace"),
                    check_live=True)
    assert result.command_status == 0
    header, events = load(tmp_path / "run.trace")
    assert header["check_live"] is True and header["recorder"]["unfrozen_snapshots"] == 0
    base = int(addr_file.read_text())
    span = range(base, base + n * PAGE, PAGE)
    parent = one(events, ev="spawn")["pid"]
    child = one(events, ev="fork")["child_pid"]

    def pages(**match: Any) -> dict[int, list[Any]]:
        snap = one(events, ev="snapshot", **match)
        return {p[0]: p for p in snap["pages"] if p[0] in span}

    at_fork = pages(pid=parent, at="fork", role="parent")
    child_start = pages(pid=child, at="fork", role="child")
    child_end = pages(pid=child, at="exit")
    parent_end = pages(pid=parent, at="exit")
    assert sorted(at_fork) == sorted(child_start) == sorted(child_end) == sorted(parent_end) == list(span)
    assert all(at_fork[a][1] == child_start[a][1] and at_fork[a][4] == 2 and not at_fork[a][5] for a in span)
    copied = list(span)[:m]
    assert all(child_end[a][1] != at_fork[a][1] and child_end[a][4] == 1 and child_end[a][5] for a in copied)
    assert all(child_end[a][1] == at_fork[a][1] and child_end[a][4] == 2 for a in list(span)[m:])
    assert all(parent_end[a][1] == at_fork[a][1] and parent_end[a][4] == 1 for a in span), \
        "the parent reused every page once the child was gone"
    assert all(p[3] == 0 and p[2] == p[1] for p in parent_end.values())
    snaps = [e for e in events if e["ev"] == "snapshot"]
    counts = [s["khugepaged_collapsed"] for s in sorted(snaps, key=lambda s: s["t_end"])]  # since the start
    assert all(isinstance(c, int) and c >= 0 for c in counts) and counts == sorted(counts)
    assert counts[-1] <= header["recorder"]["khugepaged_collapsed"]
    exit_snap = one(events, ev="snapshot", pid=child, at="exit")
    assert events.index(exit_snap) < events.index(one(events, ev="exit", pid=child)), "snapshot before its exit"
    if header["recorder"]["folio_reader"]:
        ids = {s["pid"]: s["mm_id"] for s in snaps}
        assert None not in ids.values() and ids[parent] != ids[child], "each MM announced its own id"
        folio = one(events, ev="snapshot", pid=parent, at="fork")["folios"][str(at_fork[base][1])]
        assert folio["order"] == 0 and folio["page_mapcount"] == [1] and folio["refcount"] >= 2


def test_sigint_stops_the_program_writes_the_trace_and_restores_thp(bins: dict[str, str], tmp_path: Path) -> None:
    path16 = f"{thp.THP_DIR}/hugepages-16kB/enabled"
    old = thp.read_choice(path16)[0]
    out = tmp_path / "run.trace"
    proc = subprocess.Popen([*FOLIOSIM, "trace", "--thp", "16K=always", "-o", str(out), "--", bins["sleeper"]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=sigint_default)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        assert thp.read_choice(path16)[0] == "always", "--thp holds during the run"
        proc.send_signal(signal.SIGINT)
        _stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "INCOMPLETE" in stderr and "Traceback" not in stderr
    assert thp.read_choice(path16)[0] == old, "the 16K setting is back"
    header, events = load(out)
    assert header["incomplete"] is True and header["interrupted_by"] == "SIGINT"
    assert header["thp_set"] == {"hugepages-16kB/enabled": "always"}
    pids = {e["pid"] for e in events}
    assert len(pids) == 2
    ends = [e for e in events if e["ev"] == "exit"]
    assert {e["pid"] for e in ends} == pids and all(e["signal"] == signal.SIGKILL for e in ends)
    time.sleep(0.1)
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_a_programs_own_seccomp_trap_behaves_as_untraced(bins: dict[str, str], tmp_path: Path) -> None:
    out_file = tmp_path / "values"
    untraced = subprocess.run([bins["own_filter"], str(out_file)], check=False)
    assert untraced.returncode == 0 and out_file.read_text().split()[:2] == ["-1", "38"], "ENOSYS, no tracer"
    result = record([bins["own_filter"], str(out_file)], str(tmp_path / "run.trace"))
    assert result.command_status == 0
    ret, err, addr = out_file.read_text().split()
    assert (ret, err) == ("-1", "38"), "the program's own trap is not served by our tracer"
    _header, events = load(tmp_path / "run.trace")
    assert one(events, ev="syscall", name="mmap", ret=int(addr))["args"][1] == PAGE, "our filter still stops"
    assert not any(e["ev"] == "syscall" and "getppid" in e["name"] for e in events)


def test_a_bad_output_directory_is_refused_before_the_program_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    run = subprocess.run([*FOLIOSIM, "trace", "-o", str(tmp_path / "nodir" / "run.trace"), "--", "touch",
                          str(marker)], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert run.returncode == 2 and "does not exist" in run.stderr and "Traceback" not in run.stderr
    assert not marker.exists(), "nothing ran"
    with pytest.raises(RecordError, match="is a directory"):
        prepare_output(str(tmp_path))
    assert list(tmp_path.iterdir()) == [], "no temporary file left behind"
