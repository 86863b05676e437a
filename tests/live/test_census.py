"""`foliosim census`: the live kernel's own "maybe mapped shared" verdicts against the truth.

The live tests run a small C program (compiled here) that maps an order-4 mTHP region (hugepages-64kB/enabled =
always only while it faults the region in, under the live lock, restored at once) and forks children over it. The
unit tests check the verdict rule against the model, the exact interval and the truth rule on synthetic folios.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from foliosim.host.bpf import KernelFolio
from foliosim.live.census import (
    EXCLUDED,
    EXCLUSIVE,
    FALSE_SHARED,
    SHARED,
    TRUTH_CHANGED,
    TRUTH_MANY,
    TRUTH_ONE,
    CensusError,
    _judge,
    _mapping_entries,
    _Mm,
    clopper_pearson,
    consistent,
    false_shared_cause,
    kernel_verdict,
    run_census,
)
from tests.conftest import live_unavailable

ROOT = Path(__file__).resolve().parents[2]
FOLIO = 64 << 10  # hugepages-64kB: order 4
ORDER = 4
NFOLIOS = 8
PMD = 2 << 20
PMD_ORDER = 9
LOCK_WAIT = 120.0
THP = "/sys/kernel/mm/transparent_hugepage"

PROGRAM = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* One line per event on stdout (one write each): "parent PID ADDR", "child PID N", "ready", "reaped PID". */
static void say(const char *fmt, long a, long b)
{
    char buf[96];
    int n = snprintf(buf, sizeof buf, fmt, a, b);
    if (write(1, buf, n) != n)
        _exit(3);
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5)
        return 2;
    long folio = atol(argv[1]), nfolios = atol(argv[2]), nchildren = atol(argv[3]);
    int huge = argc == 5; /* MADV_HUGEPAGE on the region: PMD-mapped THPs under the boot settings */
    /* the launcher: reaps the parent and, as subreaper, the children once the parent is gone */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) || prctl(PR_SET_PDEATHSIG, SIGKILL))
        return 2;
    pid_t p = fork();
    if (p < 0)
        return 2;
    if (p == 0) {
        size_t len = (size_t)(folio * nfolios);
        char *m = mmap(NULL, len + folio, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            _exit(2);
        char *r = (char *)(((unsigned long)m + folio - 1) & ~(unsigned long)(folio - 1));
        if (huge && madvise(r, len, MADV_HUGEPAGE))
            _exit(2);
        for (size_t i = 0; i < len; i += 4096)
            r[i] = (char)((i >> 12) | 1);
        say("parent %ld %ld\n", (long)getpid(), (long)r);
        for (long c = 0; c < nchildren; c++) {
            pid_t k = fork();
            if (k < 0)
                _exit(2);
            if (k == 0)
                for (;;)
                    pause();
            say("child %ld %ld\n", (long)k, c);
        }
        say("ready %ld %ld\n", 0, 0);
        for (;;)
            pause();
    }
    for (;;) {
        int st;
        pid_t w = wait(&st);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return 0;
        }
        say("reaped %ld %ld\n", (long)w, 0);
    }
}
"""


# --------------------------------------------------------------------------- live helpers


@pytest.fixture(scope="module")
def prog(tmp_path_factory: pytest.TempPathFactory) -> str:
    if os.geteuid() != 0:
        live_unavailable("not root")
    work = tmp_path_factory.mktemp("census")
    src, exe = work / "forker.c", work / "forker"
    src.write_text(PROGRAM)
    try:
        res = subprocess.run(["gcc", "-O1", "-Wall", "-Werror", "-o", str(exe), str(src)], capture_output=True,
                             text=True, timeout=60)
    except FileNotFoundError:
        live_unavailable("no gcc")
    assert res.returncode == 0, res.stderr
    return str(exe)


@pytest.fixture(scope="module")
def bpf() -> Iterator[tuple[object, object]]:
    """One BPF folio reader and task iterator for the module (start-up once)."""
    if os.geteuid() != 0:
        live_unavailable("not root")
    from foliosim.host.bpf import FolioReader
    from foliosim.host.errors import HostUnavailable
    from foliosim.host.tasks import TaskIterator

    try:
        reader = FolioReader()
    except HostUnavailable as exc:
        live_unavailable(str(exc))
    try:
        tasks = TaskIterator(reader.btf)
    except HostUnavailable as exc:
        reader.close()
        live_unavailable(str(exc))
    yield reader, tasks
    tasks.close()
    reader.close()


def thp_snapshot() -> dict[str, str]:
    out = {}
    for name in ["enabled", *sorted(f"{d}/enabled" for d in os.listdir(THP) if d.startswith("hugepages-"))]:
        if os.path.exists(f"{THP}/{name}"):  # hugepages-8kB has no anonymous "enabled" on x86-64
            with open(f"{THP}/{name}") as fh:
                out[name] = fh.read()
    return out


@dataclass
class Forker:
    """The running program: the launcher, the parent P that owns the region, the children in fork order."""

    proc: subprocess.Popen[bytes]
    parent: int = 0
    region: int = 0
    children: list[int] = field(default_factory=list)
    reaped: set[int] = field(default_factory=set)
    _buf: bytes = b""

    def line(self, timeout: float = 10.0) -> list[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                assert left > 0, "the forker said nothing in time"
                if sel.select(left):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    assert chunk, f"the forker exited (status {self.proc.poll()})"
                    self._buf += chunk
        text, self._buf = self._buf.split(b"\n", 1)
        return text.decode().split()

    def kill(self, pid: int) -> None:
        """SIGKILL one of ours and wait until the launcher has reaped it (its memory is released by then).

        A child is reaped by the launcher only once the parent is gone: kill the parent first."""
        os.kill(pid, signal.SIGKILL)
        while pid not in self.reaped:
            words = self.line()
            if words[0] == "reaped":
                self.reaped.add(int(words[1]))

    def close(self) -> None:
        """The parent first (its children then belong to the launcher, which reaps them), then the children;
        the launcher exits by itself once it has no child left."""
        for pid in [self.parent, *self.children]:
            if pid and pid not in self.reaped:
                with contextlib.suppress(ProcessLookupError, AssertionError):
                    self.kill(pid)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def forker(prog: str) -> Iterator[object]:
    started: list[Forker] = []

    def start(nchildren: int, pmd: bool = False) -> Forker:
        """Order-4 folios (64 kB set to always for the fault-in), or with ``pmd`` PMD-mapped THPs of a
        MADV_HUGEPAGE region under the boot settings (nothing changed)."""
        from foliosim.host.runlock import LiveLock
        from foliosim.host.thp import ThpGuard, effective_anon_orders, read_settings

        with LiveLock(timeout=LOCK_WAIT):  # held across the snapshots too: nobody else changes settings meanwhile
            before = thp_snapshot()
            if pmd and PMD_ORDER not in effective_anon_orders(read_settings(), vma_hugepage=True):
                live_unavailable("THP settings here give MADV_HUGEPAGE regions no PMD-sized folio")
            guard = contextlib.nullcontext() if pmd else ThpGuard({"hugepages-64kB/enabled": "always"},
                                                                  lock_timeout=LOCK_WAIT)
            with guard:
                args = [str(PMD), "2", str(nchildren), "huge"] if pmd else [str(FOLIO), str(NFOLIOS), str(nchildren)]
                fk = Forker(subprocess.Popen([prog, *args], stdout=subprocess.PIPE))
                started.append(fk)
                words = fk.line()
                assert words[0] == "parent", words
                fk.parent, fk.region = int(words[1]), int(words[2])
                for _ in range(nchildren):
                    words = fk.line()
                    assert words[0] == "child", words
                    fk.children.append(int(words[1]))
                assert fk.line() == ["ready", "0", "0"]
            assert thp_snapshot() == before  # restored as soon as the region is faulted in
        return fk

    yield start
    for fk in started:
        fk.close()


def region_heads(fk: Forker, size: int = FOLIO, count: int = NFOLIOS, order: int = ORDER) -> set[int]:
    """Head PFNs of the region's folios, each checked to be a folio of ``order``."""
    from foliosim.host import procfs

    entries = procfs.read_pagemap(fk.parent, fk.region, count * size // procfs.PAGE_SIZE)
    assert all(e.present for e in entries)
    heads = set()
    with procfs.PhysReader() as phys:
        for e in entries[:: size // procfs.PAGE_SIZE]:
            head, got = phys.folio_extent(e.pfn)
            assert (head, got) == (e.pfn, order), f"the region did not get order-{order} folios"
            heads.add(head)
    assert len(heads) == count
    return heads


# --------------------------------------------------------------------------- live tests


@pytest.mark.live
def test_fork_three_children_then_the_stuck_bit(live_root: None, forker: object, bpf: tuple[object, object]) -> None:
    reader, tasks = bpf
    fk = forker(3)  # type: ignore[operator]
    c1, c2, c3 = fk.children
    heads = region_heads(fk)
    ids = tasks.mm_ids()  # type: ignore[attr-defined]

    # all four alive: every region folio is mapped by the four MMs and maybe shared; no false answer anywhere
    res = run_census([fk.parent, c1, c2, c3], reader, tasks)  # type: ignore[arg-type]
    region = {f.head_pfn: f for f in res.folios if f.head_pfn in heads}
    assert set(region) == heads
    for f in region.values():
        assert (f.truth, f.outcome, f.maybe_shared, f.order) == (TRUTH_MANY, SHARED, True, ORDER)
        assert sorted(m.tgids[0] for m in f.mappers) == sorted([fk.parent, c1, c2, c3])
        assert f.mapcount == 4 * 16 and f.unseen == 0 and f.stale == 0
        assert {f.slots[0][0], f.slots[1][0]} == {ids[fk.parent], ids[c1]}  # P faulted, C1 forked first
    assert res.false_answers() == []
    assert res.false_exclusive.k == 0 and res.false_shared.k == 0

    # P and C1 exit: both slots free, the bit stays set; C2 and C3 still map every folio (correctly "shared")
    fk.kill(fk.parent)
    fk.kill(c1)
    res = run_census([c2, c3], reader, tasks)  # type: ignore[arg-type]
    region = {f.head_pfn: f for f in res.folios if f.head_pfn in heads}
    assert set(region) == heads
    for f in region.values():
        assert (f.truth, f.outcome, f.slots, f.shared_bit) == (TRUTH_MANY, SHARED, ((0, 0), (0, 0)), True)
        assert len(f.mappers) == 2
    # reading C3 alone, the folio's own mapcounts show the mappings of an MM outside the set: >= 2 MMs
    res = run_census([c3], reader, tasks)  # type: ignore[arg-type]
    region = {f.head_pfn: f for f in res.folios if f.head_pfn in heads}
    assert set(region) == heads
    for f in region.values():
        assert (f.truth, f.outcome, len(f.mappers), f.unseen) == (TRUTH_MANY, SHARED, 1, 16)
    assert res.outside() >= NFOLIOS

    # C2 exits: C3 alone maps the folios, the stuck bit still says "shared": false "shared", cause the stuck bit
    fk.kill(c2)
    res = run_census([c3], reader, tasks)  # type: ignore[arg-type]
    region = {f.head_pfn: f for f in res.folios if f.head_pfn in heads}
    assert set(region) == heads
    for f in region.values():
        assert (f.truth, f.outcome, f.maybe_shared, f.cause) == (TRUTH_ONE, FALSE_SHARED, True,
                                                                 "stuck-bit-both-slots-free")
        assert (f.mapcount, f.slots, f.shared_bit, f.unseen) == (16, ((0, 0), (0, 0)), True, 0)
        assert [m.tgids for m in f.mappers] == [(c3,)] and f.mappers[0].mm_id == ids[c3]
    assert res.false_shared.k >= NFOLIOS and res.false_shared.n >= res.false_shared.k
    assert res.false_shared.low > 0.0
    assert res.false_exclusive.k == 0
    assert res.causes()["stuck-bit-both-slots-free"] >= NFOLIOS


@pytest.mark.live
def test_private_exclusive_mthp_gives_no_false_answer(live_root: None, forker: object,
                                                      bpf: tuple[object, object]) -> None:
    reader, tasks = bpf
    fk = forker(0)  # type: ignore[operator]
    heads = region_heads(fk)
    mm_id = tasks.mm_ids()[fk.parent]  # type: ignore[attr-defined]
    res = run_census([fk.parent], reader, tasks)  # type: ignore[arg-type]
    region = {f.head_pfn: f for f in res.folios if f.head_pfn in heads}
    assert set(region) == heads
    for f in region.values():
        assert (f.truth, f.outcome, f.maybe_shared, f.shared_bit) == (TRUTH_ONE, EXCLUSIVE, False, False)
        assert f.slots == ((mm_id, 16), (0, 0))  # the mapper's own slot, named by the task iterator
        assert f.mappers[0].mm_id == mm_id and f.mappers[0].entries == 16
    assert res.false_answers() == []
    assert res.false_shared.k == 0 and res.false_shared.n >= NFOLIOS


@pytest.mark.live
def test_pmd_mapped_thp_stuck_bit_is_ignored(live_root: None, forker: object, bpf: tuple[object, object]) -> None:
    reader, tasks = bpf
    fk = forker(3, pmd=True)  # type: ignore[operator]
    c1, c2, c3 = fk.children
    heads = region_heads(fk, PMD, 2, PMD_ORDER)
    res = run_census([fk.parent, c1, c2, c3], reader, tasks)  # type: ignore[arg-type]
    region = {f.head_pfn: f for f in res.folios if f.head_pfn in heads}
    assert set(region) == heads
    for f in region.values():  # four PMD mappings: one per MM, counted on every page through the entire mapcount
        assert (f.truth, f.outcome, f.mapcount, f.entire_mapcount, f.unseen) == (TRUTH_MANY, SHARED, 4, 4, 0)
        assert sorted(m.entries for m in f.mappers) == [512] * 4
    fk.kill(fk.parent)
    fk.kill(c1)
    fk.kill(c2)
    res = run_census([c3], reader, tasks)  # type: ignore[arg-type]
    region = {f.head_pfn: f for f in res.folios if f.head_pfn in heads}
    assert set(region) == heads
    for f in region.values():  # the bit is stuck here too, but a mapcount of 1 makes the verdict "exclusive"
        assert (f.truth, f.outcome, f.maybe_shared, f.shared_bit, f.slots) == (TRUTH_ONE, EXCLUSIVE, False, True,
                                                                               ((0, 0), (0, 0)))
        assert (f.mapcount, f.entire_mapcount) == (1, 1)
    assert res.bit_ignored() >= 2
    assert not [f for f in res.false_answers() if f.head_pfn in heads]


@pytest.mark.live
def test_cli_census_of_a_pid(live_root: None, forker: object, tmp_path: Path) -> None:
    fk = forker(1)  # type: ignore[operator]
    heads = region_heads(fk)
    out = tmp_path / "census.json"
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "foliosim", "census", "--pid", f"{fk.parent},{fk.children[0]}",
                          "--json", str(out)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert time.perf_counter() - t0 < 30
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert lines[0]["record"] == "census" and lines[0]["mode"] == "pids"
    assert lines[0]["false_exclusive"]["k"] == 0
    assert lines[0]["by_order"][str(ORDER)]["folios"] >= NFOLIOS
    assert "Large anonymous folios" in res.stderr and 'false "shared"' in res.stderr
    doc = json.loads(out.read_text())
    folios = {int(f["head_pfn"], 16): f for f in doc["folios"]}
    assert heads <= set(folios)
    assert all(folios[h]["outcome"] == SHARED and len(folios[h]["mappers"]) == 2 for h in heads)


@pytest.mark.live
@pytest.mark.parametrize("arg", ["abc", "-3", "0", "12x"])
def test_cli_bad_pid_is_one_line(live_root: None, arg: str) -> None:
    res = subprocess.run([sys.executable, "-m", "foliosim", "census", "--pid", arg], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1 and "not a process id" in res.stderr, res.stderr


@pytest.mark.live
def test_cli_pid_that_does_not_exist(live_root: None) -> None:
    with open("/proc/sys/kernel/pid_max") as fh:
        missing = int(fh.read()) + 1  # above pid_max: no process can have it
    res = subprocess.run([sys.executable, "-m", "foliosim", "census", "--pid", str(missing)], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 2
    assert res.stderr == f"foliosim census: --pid: no process {missing}\n"
    with pytest.raises(CensusError, match=f"no process {missing}"):
        run_census([missing])


def test_cli_needs_pid_or_all() -> None:
    for args in ([], ["--all", "--pid", "1"]):
        res = subprocess.run([sys.executable, "-m", "foliosim", "census", *args], capture_output=True, text=True,
                             timeout=60, cwd=ROOT)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--all" in res.stderr


# --------------------------------------------------------------------------- unit tests (no kernel)


def kfolio(order: int, large_mapcount: int, shared: bool, slots: tuple[tuple[int, int], tuple[int, int]] = ((0, -1),
           (0, -1)), page_mapcount: tuple[int, ...] | None = None, entire: int = -1) -> KernelFolio:
    """A synthetic raw folio (mapcounts stored as count - 1, 31-bit slot ids, lock bit 31, shared bit 63)."""
    mm_ids = slots[0][0] | (slots[1][0] << 32) | (int(shared) << 63)
    nr = 1 << order
    return KernelFolio(head_pfn=0x1000, order=order, flags=0, is_anon=True, refcount=1,
                       large_mapcount=large_mapcount, entire_mapcount=entire, pincount=0, nr_pages_mapped=0,
                       mm_ids=mm_ids, mm_id_mapcount=(slots[0][1], slots[1][1]),
                       page_mapcount=page_mapcount if page_mapcount is not None else (-1,) * nr,
                       anon_exclusive=(False,) * nr)


@pytest.mark.parametrize("order", [1, 4, 9])
@pytest.mark.parametrize("mapcount", [0, 1, 2, 16, 40])
@pytest.mark.parametrize("shared", [False, True])
def test_verdict_is_the_models_rule(order: int, mapcount: int, shared: bool) -> None:
    from foliosim.folio import Folio, folio_maybe_mapped_shared
    from foliosim.kconfig import KernelConfig

    model = Folio(KernelConfig(64, False), order)
    model.large_mapcount = mapcount - 1
    model.mm_ids = model.config.shared_bit if shared else 0
    raw = kfolio(order, mapcount - 1, shared)
    assert kernel_verdict(raw, hugetlb=False) == folio_maybe_mapped_shared(model)
    assert kernel_verdict(raw, hugetlb=False) == (mapcount > 1 and shared)
    assert kernel_verdict(raw, hugetlb=True) == (mapcount > 1)  # hugetlb: the bit plays no part


def binom_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k + 1))


def test_clopper_pearson_known_values() -> None:
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** 0.1, abs=1e-9)  # 0.3085
    lo, hi = clopper_pearson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** 0.1, abs=1e-9)
    assert clopper_pearson(5, 10) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    for k, n in ((65, 772), (3, 40), (1, 7)):  # against the definition, by exact binomial sums
        lo, hi = clopper_pearson(k, n)
        assert 1 - binom_cdf(k - 1, n, lo) == pytest.approx(0.025, abs=1e-9)  # P(X >= k | lo) = alpha/2
        assert binom_cdf(k, n, hi) == pytest.approx(0.025, abs=1e-9)  # P(X <= k | hi) = alpha/2
    assert clopper_pearson(65, 772) == pytest.approx((0.0655805, 0.1060590), abs=1e-7)
    assert clopper_pearson(1, 1000) == pytest.approx((2.5317e-5, 0.0055589), rel=1e-4)
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)


def test_false_shared_causes() -> None:
    assert false_shared_cause(((0, 0), (0, 0)), 7) == "stuck-bit-both-slots-free"
    assert false_shared_cause(((7, 16), (0, 0)), 7) == "stuck-bit-other-slot-free"
    assert false_shared_cause(((0, 0), (7, 16)), 7) == "stuck-bit-other-slot-free"
    assert false_shared_cause(((9, 3), (0, 0)), 7) == "stale-slot"
    assert false_shared_cause(((0, 0), (0, 0)), None) == "mm-ids-unknown"


def test_truth_from_the_folios_own_mapcounts() -> None:
    mm = _Mm(key=5, mm_id=5, tgids=[100], comm="x")
    mms = {5: mm, 6: _Mm(key=6, mm_id=6, tgids=[200], comm="y")}
    every_page = ([1, 1, 1, 1], {5: 4})  # entries per page over the MMs read; MM 5 shows them all
    # order 2 mapped once per page by MM 5 only, bit stuck: a false "shared"
    one = kfolio(2, 3, True, page_mapcount=(0, 0, 0, 0))
    f = _judge(one, False, *every_page, mms, set())
    assert (f.truth, f.outcome, f.cause, f.unseen, f.stale) == (TRUTH_ONE, FALSE_SHARED, "stuck-bit-both-slots-free",
                                                                0, 0)
    # the folio counts two entries on page 0 and MM 5 shows one: an MM not read maps it -> >= 2 MMs, shared
    two = kfolio(2, 4, True, page_mapcount=(1, 0, 0, 0))
    f = _judge(two, False, *every_page, mms, set())
    assert (f.truth, f.outcome, f.unseen) == (TRUTH_MANY, SHARED, 1)
    # the folio counts fewer entries than were read: it changed in between -> left out
    gone = kfolio(2, 2, False, page_mapcount=(-1, 0, 0, 0))
    f = _judge(gone, False, *every_page, mms, set())
    assert (f.truth, f.outcome, f.stale) == (TRUTH_CHANGED, EXCLUDED, 1)
    # an MM whose id changed between the two task passes (exec): left out too
    f = _judge(one, False, *every_page, mms, {5})
    assert f.outcome == EXCLUDED
    # a PMD mapping counts on every page through the entire mapcount
    pmd = kfolio(2, 0, False, page_mapcount=(-1,) * 4, entire=0)
    f = _judge(pmd, False, *every_page, mms, set())
    assert (f.truth, f.outcome, f.mapcount, f.entire_mapcount) == (TRUTH_ONE, EXCLUSIVE, 1, 1)


def test_a_torn_read_is_left_out() -> None:
    mm = _Mm(key=5, mm_id=5, tgids=[100], comm="x")
    mms = {5: mm}
    every_page = ([1, 1, 1, 1], {5: 4})
    # _large_mapcount says 5 mappings, the pages count 4: read between the per-page and the per-folio update
    torn = kfolio(2, 4, True, page_mapcount=(0, 0, 0, 0))
    f = _judge(torn, False, *every_page, mms, set())
    assert (f.truth, f.outcome) == (TRUTH_CHANGED, EXCLUDED)
    # the lock bit (bit 31 of _mm_ids) set: an update in progress
    locked = kfolio(2, 3, True, page_mapcount=(0, 0, 0, 0), slots=((1 << 31, -1), (0, -1)))
    assert locked.lock_bit and _judge(locked, False, *every_page, mms, set()).outcome == EXCLUDED
    assert consistent(kfolio(2, 3, True, page_mapcount=(0, 0, 0, 0)), False)
    assert consistent(torn, True)  # hugetlb folios keep no per-page counts: not checked


def test_mapping_entries_locate_every_pfn_in_its_folio() -> None:
    from array import array

    extents = {0x1000: 2, 0x2000: 4}  # an order-2 folio at 0x1000, an order-4 one at 0x2000
    a = _Mm(key=1, mm_id=1, tgids=[10], pfns=array("Q", [0x1000, 0x1001, 0x1003, 0x0FFF, 0x1004, 0x2005, 0x5]))
    b = _Mm(key=2, mm_id=2, tgids=[20], pfns=array("Q", [0x2005, 0x2005, 0x200F, 0x2010]))  # 0x2005 at two addresses
    counts, per_mm = _mapping_entries([a, b], extents)
    assert counts[0x1000] == [1, 1, 0, 1]
    assert counts[0x2000] == [0] * 5 + [3] + [0] * 9 + [1]
    assert per_mm == {0x1000: {1: 3}, 0x2000: {1: 1, 2: 3}}
    assert _mapping_entries([a], {}) == ({}, {})


@pytest.mark.live
def test_missing_pids_are_skipped_when_allowed(live_root: None, bpf: tuple[object, object]) -> None:
    reader, tasks = bpf
    with open("/proc/sys/kernel/pid_max") as fh:
        missing = int(fh.read()) + 1
    res = run_census([os.getpid(), missing], reader, tasks, missing_ok=True)  # type: ignore[arg-type]
    assert res.pids == (os.getpid(),) and res.processes == 1
    assert res.skipped == [(missing, f"no process {missing}")]
    with pytest.raises(CensusError, match=f"no process {missing}"):
        run_census([os.getpid(), missing], reader, tasks)  # type: ignore[arg-type]


class FakePhys:
    """/proc/kpageflags of a few folios: order-2 head at 0x200, order-4 head at 0x400, a tail-run cut at 0x7ff."""

    HEAD, TAIL, ANON = 1 << 15, 1 << 16, 1 << 12

    def __init__(self) -> None:
        self.flags = {0x200: self.HEAD | self.ANON, **{p: self.TAIL | self.ANON for p in range(0x201, 0x204)},
                      0x204: self.ANON, **{p: self.TAIL | self.ANON for p in range(0x401, 0x410)},
                      0x400: self.HEAD | self.ANON, 0x7FE: self.HEAD | self.ANON, 0x7FF: self.TAIL | self.ANON}
        self.last = 0x7FF  # the last PFN: a read past it fails
        self.reads: list[tuple[int, int]] = []

    def kpageflags_range(self, first: int, count: int) -> object:
        from array import array

        from foliosim.host.errors import HostError

        if first + count - 1 > self.last:
            raise HostError("short read: PFN beyond the last one")
        self.reads.append((first, count))
        return array("Q", [self.flags.get(p, 0) for p in range(first, first + count)])


def test_flags_in_bulk_and_orders_from_the_tail_runs() -> None:
    import numpy as np

    from foliosim.live.census import _flags_of

    phys = FakePhys()
    pfns = np.array([0x200, 0x202, 0x203, 0x400, 0x40F, 0x7FE, 0x7FF], dtype=np.int64)
    flags, orders = _flags_of(phys, pfns)  # type: ignore[arg-type]
    assert flags.tolist() == [phys.flags[p] for p in pfns.tolist()]
    # 0x200: tails up to 0x203, 0x204 not a tail -> order 2 (the run was read one PFN further: 0x204);
    # 0x400: 15 tails and 0x410 (read one further) is not a tail -> order 4;
    # 0x7FE: its run ends at the last PFN, nothing after it to end the tails -> left to folio_extent
    assert orders == {0x200: 2, 0x400: 4}
    assert phys.reads == [(0x200, 5), (0x400, 17), (0x7FE, 2)]
    empty, none = _flags_of(phys, np.empty(0, dtype=np.int64))  # type: ignore[arg-type]
    assert len(empty) == 0 and none == {}
