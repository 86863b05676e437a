"""This machine's own page-fault rate, measured in the benchmark's run: what issue 13's "as fast as the machine faults"
compares the simulator with.

Issue 13's 0.6 M faults/s is the kernel's first-touch write fault rate on this machine when the issue was filed
(a C loop, one core). The machine's speed varies between boots and hours (a shared host), so the simulator's
faults/s mean little without the kernel's measured beside them: :func:`fault_rates` measures both kinds of fault the
workloads are made of, here and now, with a C-level loop (numpy's strided one-byte store per page):

- first touch: a write to each page of a fresh anonymous private mapping (do_anonymous_page: allocate, zero, map);
- copy-on-write: after a fork, the child writes each page the parent wrote (wp_page_copy: allocate, copy, map).

:func:`fault_rates` times long runs (128 MiB): the machine's rate with its caches warm. A workload the simulator
runs in a few milliseconds, after a pause, pays for caches and branch predictors gone cold, and so does the kernel:
:func:`short_runs` times first-touch runs of the same number of faults, each after the same pause (or back to back),
so that a short simulated run can be set beside the machine taking as many faults under the same conditions.

The mapping is 4 KiB pages whatever the THP settings (MADV_NOHUGEPAGE on it: a per-mapping hint, no global knob
touched), as the simulator's faults are page faults. Timed in CPU time (the process's, kernel time included), as
benchmarks/simulate.py times the simulator: another job's time slices on the shared machine are not counted.
Run from the benchmarks directory, or import it.

    python benchmarks/machine_faults.py [--pages N] [--runs N] [--short FAULTS]
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import struct
import time
from dataclasses import dataclass

import numpy as np

PAGE = mmap.PAGESIZE


@dataclass(frozen=True, slots=True)
class Rate:
    """Faults per second over ``runs`` runs: median and range."""

    median: float
    lo: float
    hi: float
    runs: int

    def text(self) -> str:
        return f"{self.median:,.0f} faults/s [{self.lo:,.0f}..{self.hi:,.0f}]"


def _mapping(pages: int) -> tuple[mmap.mmap, np.ndarray]:
    m = mmap.mmap(-1, pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)  # one fault per 4 KiB page, whatever THP's global setting
    return m, np.frombuffer(m, dtype=np.uint8)


def first_touch(pages: int) -> float:
    """Faults/s of one pass writing one byte of each page of a fresh mapping (each store faults)."""
    m, a = _mapping(pages)
    try:
        began = time.process_time()
        a[::PAGE] = 1
        return pages / (time.process_time() - began)
    finally:
        del a
        m.close()


def copy_on_write(pages: int) -> float:
    """Faults/s of a forked child writing one byte of each page its parent wrote (each store copies the page).
    The child only times its loop, reports through a pipe and leaves with os._exit()."""
    m, a = _mapping(pages)
    r, w = os.pipe()
    try:
        a[::PAGE] = 1
        pid = os.fork()
        if pid == 0:  # the child: no Python-level cleanup, no exit handlers
            try:
                began = time.process_time()
                a[::PAGE] = 2
                os.write(w, struct.pack("d", pages / (time.process_time() - began)))
            finally:
                os._exit(0)
        os.close(w)
        w = -1
        data = os.read(r, 8)
        os.waitpid(pid, 0)
        if len(data) != 8:
            raise RuntimeError("the copy-on-write child did not report its rate")
        rate: float = struct.unpack("d", data)[0]
        return rate
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
        del a
        m.close()


def _rate(samples: list[float]) -> Rate:
    return Rate(statistics.median(samples), min(samples), max(samples), len(samples))


def fault_rates(pages: int = 1 << 15, runs: int = 7) -> dict[str, Rate]:
    """This machine's first-touch and copy-on-write fault rates now: medians of ``runs`` runs over ``pages`` pages
    (128 MiB by default: long enough to time, small enough to leave the machine alone)."""
    first_touch(min(pages, 256))  # numpy's strided-store path loaded before the first timing
    return {"first touch": _rate([first_touch(pages) for _ in range(runs)]),
            "copy-on-write": _rate([copy_on_write(pages) for _ in range(runs)])}


def short_runs(pages: int, runs: int, pause: float) -> Rate:
    """First-touch faults/s of ``runs`` runs of ``pages`` faults each, every run after ``pause`` seconds asleep (0:
    back to back), as benchmarks/simulate.py spaces the simulator's short runs: the machine's own rate for a run that
    short under the same conditions (a fresh mapping each run; the mmap call itself is not timed, as the simulator's
    machine is made before its timing)."""
    if pages < 1 or runs < 1 or pause < 0:
        raise ValueError(f"pages and runs must be at least 1 and pause not negative, not {pages}, {runs}, {pause}")
    first_touch(min(pages, 256))  # numpy's strided-store path loaded before the first timing
    samples = []
    for _ in range(runs):
        if pause:
            time.sleep(pause)
        samples.append(first_touch(pages))
    return _rate(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=1 << 15)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--short", type=int, metavar="FAULTS",
                        help="also first touch in runs of FAULTS faults, 20 ms apart and back to back (short_runs())")
    args = parser.parse_args()
    if args.pages < 1 or args.runs < 1 or (args.short is not None and args.short < 1):
        parser.error("--pages, --runs and --short must be at least 1")
    for kind, rate in fault_rates(args.pages, args.runs).items():
        print(f"{kind}: {rate.text()}")
    if args.short:
        for how, pause in (("20 ms apart", 0.02), ("back to back", 0.0)):
            rate = short_runs(args.short, args.runs, pause)
            print(f"first touch, runs of {args.short:,} faults, {how}: {rate.text()}")


if __name__ == "__main__":
    main()
