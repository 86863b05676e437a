"""Seeded workload generators: the process patterns the evaluation runs.

Each generator is a pure function of its parameters and a ``random.Random``
seeded from (workload name, seed), so the same cell always yields the same
steps whatever machine or worker builds it. The patterns:

``fork-child``  fork with a short-lived child (the parent keeps writing)
``fork-exec``   a shell: pipelines of children that fork, touch a page, exec
``handover``    state handover between two instances (plus long-lived helpers)
``prefork``     one parent, K long-lived children (Apache, PostgreSQL, zygote)
``snapshot``    Redis BGSAVE: the child reads everything while the parent writes
``shared-file`` K processes sharing a file and shmem, joining and leaving
``mix``         random mixes of all of the above operations
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from foliosim.workloads.steps import Step, WorkloadError

Params = dict[str, Any]


class Builder:
    """Emits steps and tracks which task maps which region, so every step is valid."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.steps: list[Step] = []
        self.maps: dict[str, dict[str, int]] = {}  # task -> region -> pages
        self.holes: dict[tuple[str, str], set[int]] = {}  # (task, region) -> unmapped pages
        self.counter = 0

    def add(self, verb: str, task: str = "", *args: Any) -> None:
        self.steps.append(Step(verb, task, tuple(args)))

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # -- processes -------------------------------------------------------------
    def spawn(self, task: str) -> None:
        self.add("spawn", task)
        self.maps[task] = {}

    def fork(self, parent: str, child: str) -> None:
        self.add("fork", parent, child)
        self.maps[child] = dict(self.maps[parent])
        for (task, region), holes in list(self.holes.items()):
            if task == parent:
                self.holes[(child, region)] = set(holes)

    def exec(self, task: str) -> None:
        self.add("exec", task)
        self.maps[task] = {}

    def exit(self, task: str) -> None:
        self.add("exit", task)
        del self.maps[task]

    # -- memory ----------------------------------------------------------------
    def mmap(self, task: str, region: str, pages: int, kind: str = "anon", file: str | None = None,
             order: int | None = None, prot: str = "rw", offset: int = 0) -> None:
        thp = (order,) if order else (() if kind == "anon" else None)
        self.add("mmap", task, region, pages, kind, file, thp, prot, offset)
        self.maps[task][region] = pages

    def run(self, task: str, region: str, longest: int) -> tuple[int, int] | None:
        """A random run of consecutive mapped pages (first, count), at most ``longest`` long.

        The first page is the k-th of the region's mapped pages (holes skipped), k drawn as ``rng.choice`` draws on
        the list of them (the same draw: the same steps for a seed as ever), found by counting the holes below it
        instead of listing the region's pages: a list per step made a 2,048-page heap's 1,400 steps take 160 ms."""
        limit = self.maps[task][region]
        holes = self.holes.get((task, region))
        below = sorted(h for h in holes if h < limit) if holes else ()
        n = limit - len(below)
        if n <= 0:
            return None
        first = self.rng.choice(range(n))  # rng.choice(seq) draws seq[randbelow(len(seq))]: an index here
        for h in below:  # the k-th mapped page: k plus the holes at or below it
            if h > first:
                break
            first += 1
        count = 1
        while count < longest and first + count < limit and not (holes and first + count in holes):
            count += 1
        return first, self.rng.randint(1, count)

    def access(self, verb: str, task: str, region: str, longest: int = 1) -> None:
        span = self.run(task, region, longest)
        if span is not None:
            self.add(verb, task, region, span[0], span[1])

    def write_all(self, task: str, region: str) -> None:
        self.add("write", task, region, 0, self.maps[task][region])

    def read_all(self, task: str, region: str) -> None:
        self.add("read", task, region, 0, self.maps[task][region])

    def madvise(self, task: str, region: str, advice: str, longest: int) -> None:
        span = self.run(task, region, longest)
        if span is None:
            return
        self.add("madvise", task, region, span[0], span[1], advice)

    def munmap(self, task: str, region: str, longest: int) -> None:
        span = self.run(task, region, longest)
        if span is None:
            return
        self.add("munmap", task, region, span[0], span[1])
        self.holes.setdefault((task, region), set()).update(range(span[0], span[0] + span[1]))

    def probes(self, task: str, region: str, p: Params) -> None:
        """The consumers that are not syscalls: khugepaged and NUMA migration, and a pageout hint."""
        if self.rng.random() < p.get("probe_rate", 0.5):
            self.add("khugepaged", task)
        if self.rng.random() < p.get("probe_rate", 0.5):
            self.add("numa", task, region)
        if self.rng.random() < p.get("probe_rate", 0.5):
            self.madvise(task, region, self.rng.choice(("cold", "pageout")), 1 << max(p.get("order", 4), 1))


def _heap_pages(p: Params) -> int:
    order = int(p.get("order", 4))
    pages = int(p.get("pages", 256))
    if order:
        pages = max(pages, 1 << order)
        pages -= pages % (1 << order)
    return pages


def fork_child(p: Params, b: Builder) -> None:
    order, pages = int(p["order"]), _heap_pages(p)
    b.spawn("P")
    b.mmap("P", "heap", pages, order=order)
    b.write_all("P", "heap")
    for r in range(int(p["rounds"])):
        child = f"C{r}"
        b.fork("P", child)
        for _ in range(3):
            b.access("read", child, "heap", 8)
        for _ in range(int(p["child_writes"])):
            b.access("write", child, "heap")
            if b.rng.random() < 0.3:
                b.access("write", "P", "heap")
        b.exit(child)
        for _ in range(int(p["parent_writes"])):
            b.access("write", "P", "heap")
        b.probes("P", "heap", p)


def fork_exec(p: Params, b: Builder) -> None:
    order, pages = int(p["order"]), _heap_pages(p)
    b.add("file", "", "libc", int(p["lib_pages"]), int(p["lib_order"]), False)
    b.spawn("sh")
    b.mmap("sh", "sh.heap", pages, order=order)
    b.write_all("sh", "sh.heap")
    b.mmap("sh", "sh.lib", int(p["lib_pages"]), kind="file-private", file="libc", prot="r")
    b.read_all("sh", "sh.lib")
    for _ in range(int(p["commands"])):
        kids = [b.name("cmd") for _ in range(b.rng.randint(1, int(p["pipeline"])))]
        for kid in kids:
            b.fork("sh", kid)
            b.access("write", kid, "sh.heap")  # the child's stack/heap touch before exec
        b.rng.shuffle(kids)
        for kid in kids:
            b.exec(kid)
            lib, heap = f"{kid}.lib", f"{kid}.heap"
            b.mmap(kid, lib, int(p["lib_pages"]), kind="file-private", file="libc", prot="r")
            b.access("read", kid, lib, int(p["lib_pages"]))
            b.mmap(kid, heap, 1 << max(order, 2), order=order)
            b.write_all(kid, heap)
            if b.rng.random() < 0.5:
                b.madvise(kid, lib, "cold", 1 << max(int(p["lib_order"]), 1))
            b.exit(kid)
            b.access("write", "sh", "sh.heap", 2)
        b.probes("sh", "sh.heap", p)


def handover(p: Params, b: Builder) -> None:
    order, pages = int(p["order"]), _heap_pages(p)
    b.spawn("A0")
    b.mmap("A0", "heap", pages, order=order)
    b.write_all("A0", "heap")
    b.mmap("A0", "state", 64, kind="shared-anon", order=min(order, 4) or None)
    b.write_all("A0", "state")
    life = int(p["helper_life"])
    helpers: dict[str, int] = {}  # helper -> generation it leaves in

    def hire(owner: str, generation: int) -> None:
        helper = b.name("H")
        b.fork(owner, helper)
        b.access("read", helper, "heap", 16)
        helpers[helper] = generation + life

    for _ in range(int(p["helpers"])):
        hire("A0", 0)
    old = "A0"
    for g in range(1, int(p["generations"]) + 1):
        new = f"A{g}"
        b.fork(old, new)
        b.read_all(new, "state")
        for _ in range(4):
            b.access("read", new, "heap", 32)
        for _ in range(int(p["serve_writes"])):
            b.access("write", old, "heap")
        for helper in list(helpers):
            b.access("read", helper, "heap", 8)
        b.exit(old)
        leaving = [helper for helper, leaves in helpers.items() if leaves <= g]
        for helper in leaving:  # a helper (logger, backup job) finishes ...
            b.exit(helper)
            del helpers[helper]
        for _ in range(int(p["serve_writes"])):
            b.access("write", new, "heap")
        for _ in leaving:  # ... and the new instance hires another one later
            hire(new, g)
        b.access("write", new, "state", 4)
        b.probes(new, "heap", p)
        old = new


def prefork(p: Params, b: Builder) -> None:
    order, pages = int(p["order"]), _heap_pages(p)
    b.add("file", "", "lib", 128, int(p.get("lib_order", 4)), False)
    b.spawn("P")
    b.mmap("P", "heap", pages, order=order)
    b.write_all("P", "heap")
    b.mmap("P", "lib", 128, kind="file-private", file="lib", prot="r")
    b.read_all("P", "lib")
    kids = []
    for _ in range(int(p["children"])):
        kid = b.name("W")
        b.fork("P", kid)
        kids.append(kid)
    for _ in range(int(p["requests"])):
        kid = b.rng.choice(kids)
        roll = b.rng.random()
        if roll < 0.45:
            b.access("read", kid, b.rng.choice(("heap", "lib")), 16)
        elif roll < 0.75:
            b.access("write", kid, "heap", 2)
        elif roll < 0.82:
            b.madvise(kid, "heap", "dontneed", 1 << max(order, 1))
        elif roll < 0.9:
            b.madvise(kid, b.rng.choice(("heap", "lib")), b.rng.choice(("cold", "pageout")), 1 << max(order, 1))
        else:
            b.exit(kid)
            kids.remove(kid)
            new = b.name("W")
            b.fork("P", new)
            kids.append(new)
        if b.rng.random() < float(p["parent_write_rate"]):  # the parent updates a whole folio's worth
            span = b.run("P", "heap", 1 << max(order, 1))
            if span is not None:
                b.add("write", "P", "heap", span[0], span[1])
        if b.rng.random() < 0.08:
            b.probes(b.rng.choice(kids), "heap", p)


def snapshot(p: Params, b: Builder) -> None:
    order, pages = int(p["order"]), _heap_pages(p)
    b.spawn("R")
    b.mmap("R", "heap", pages, order=order)
    b.write_all("R", "heap")
    writes = int(p["writes"])
    for s in range(int(p["snapshots"])):
        child = f"S{s}"
        b.fork("R", child)
        chunk = max(1, pages // 8)
        for first in range(0, pages, chunk):
            b.add("read", child, "heap", first, min(chunk, pages - first))
            for _ in range(max(1, writes // 8)):
                b.access("write", "R", "heap")
        b.exit(child)
        for _ in range(writes // 2):
            b.access("write", "R", "heap")
        b.probes("R", "heap", p)


def shared_file(p: Params, b: Builder) -> None:
    fpages, forder = int(p["file_pages"]), int(p["file_order"])
    b.add("file", "", "data", fpages, forder, False)
    b.add("file", "", "shm", 64, min(forder, 4), True)
    procs = []

    def join() -> None:
        proc = b.name("S")
        b.spawn(proc)
        b.mmap(proc, f"{proc}.data", fpages, kind="file-shared", file="data", prot="r")
        b.access("read", proc, f"{proc}.data", fpages)
        b.mmap(proc, f"{proc}.shm", 64, kind="file-shared", file="shm")
        b.access("write", proc, f"{proc}.shm", 8)
        procs.append(proc)

    for _ in range(int(p["procs"])):
        join()
    for _ in range(int(p["rounds"])):
        proc = b.rng.choice(procs)
        roll = b.rng.random()
        if roll < 0.3:
            b.madvise(proc, f"{proc}.data", b.rng.choice(("cold", "pageout")), 1 << max(forder, 1))
        elif roll < 0.45:
            b.add("numa", proc, f"{proc}.data")
        elif roll < 0.6:
            b.munmap(proc, f"{proc}.data", 1 << max(forder - 1, 0))
        elif roll < 0.8:
            b.access("read", proc, f"{proc}.data", 32)
            b.access("write", proc, f"{proc}.shm", 4)
        else:
            b.exit(proc)
            procs.remove(proc)
            join()


def mix(p: Params, b: Builder) -> None:
    order, pages = int(p["order"]), _heap_pages(p)
    b.add("file", "", "lib", 64, 4, False)
    b.spawn("T0")
    b.mmap("T0", "heap", pages, order=order)
    b.write_all("T0", "heap")
    b.mmap("T0", "lib", 64, kind="file-private", file="lib", prot="r")
    tasks = ["T0"]
    for _ in range(int(p["ops"])):
        task = b.rng.choice(tasks)
        regions = list(b.maps[task])
        roll = b.rng.random()
        if roll < 0.12 and len(tasks) < int(p["max_procs"]):
            child = b.name("T")
            b.fork(task, child)
            tasks.append(child)
        elif roll < 0.18 and len(tasks) > 1:
            b.exit(task)
            tasks.remove(task)
        elif roll < 0.21 and len(tasks) > 1 and task != "T0":
            b.exec(task)
            b.mmap(task, f"{task}.x{b.counter}", 1 << max(order, 2), order=order)
        elif not regions:
            continue
        elif roll < 0.5:
            b.access("write", task, b.rng.choice([r for r in regions if "lib" not in r] or regions), 16)
        elif roll < 0.7:
            b.access("read", task, b.rng.choice(regions), 16)
        elif roll < 0.76:
            b.madvise(task, b.rng.choice(regions), "dontneed", 1 << max(order, 1))
        elif roll < 0.8:
            b.munmap(task, b.rng.choice(regions), 1 << max(order - 1, 0))
        elif roll < 0.9:
            b.madvise(task, b.rng.choice(regions), b.rng.choice(("cold", "pageout")), 1 << max(order, 1))
        elif roll < 0.95:
            b.add("khugepaged", task)
        else:
            b.add("numa", task, b.rng.choice(regions))


Generator = Callable[[Params, Builder], None]

#: name -> (generator, default parameters, one-line description)
WORKLOADS: dict[str, tuple[Generator, Params, str]] = {
    "fork-child": (fork_child, {"pages": 256, "order": 4, "rounds": 5, "child_writes": 6, "parent_writes": 24},
                   "fork with a short-lived child; the parent keeps writing"),
    "fork-exec": (fork_exec, {"pages": 128, "order": 4, "commands": 6, "pipeline": 3, "lib_pages": 64,
                              "lib_order": 4}, "a shell running pipelines: fork, touch, exec, exit"),
    "handover": (handover, {"pages": 256, "order": 4, "generations": 4, "helpers": 1, "helper_life": 1,
                             "serve_writes": 16},
                 "state handover between two instances, with long-lived helpers"),
    "prefork": (prefork, {"pages": 256, "order": 4, "children": 4, "requests": 120, "parent_write_rate": 0.15},
                "prefork server: one parent and K long-lived children"),
    "snapshot": (snapshot, {"pages": 512, "order": 4, "snapshots": 2, "writes": 48},
                 "Redis BGSAVE: the child reads everything while the parent writes"),
    "shared-file": (shared_file, {"procs": 4, "file_pages": 256, "file_order": 4, "rounds": 30},
                    "K processes sharing a file and shmem, joining and leaving"),
    "mix": (mix, {"pages": 128, "order": 4, "ops": 250, "max_procs": 6}, "random mix of process and memory operations"),
}


#: parameter -> (kind, smallest, largest): kind "int" (a whole number) or "rate" (a fraction 0..1);
#: "order" kinds take 0 or 2..9 (anon mTHP/THP orders: order-1 anon folios do not exist).
PARAM_RULES: dict[str, tuple[str, float, float | None]] = {
    "pages": ("int", 1, None), "file_pages": ("int", 1, None), "lib_pages": ("int", 1, None),
    "order": ("order", 0, 9), "lib_order": ("int", 0, 9), "file_order": ("int", 0, 9),
    "rounds": ("int", 0, None), "child_writes": ("int", 0, None), "parent_writes": ("int", 0, None),
    "commands": ("int", 0, None), "pipeline": ("int", 1, None), "generations": ("int", 0, None),
    "helpers": ("int", 0, None), "helper_life": ("int", 1, None), "serve_writes": ("int", 0, None),
    "children": ("int", 1, None), "requests": ("int", 0, None), "parent_write_rate": ("rate", 0, 1),
    "snapshots": ("int", 0, None), "writes": ("int", 0, None), "procs": ("int", 1, None),
    "ops": ("int", 0, None), "max_procs": ("int", 1, None), "probe_rate": ("rate", 0, 1),
}


def param_need(key: str) -> str:
    """What parameter ``key`` takes, in words (for error messages and docs)."""
    kind, low, high = PARAM_RULES.get(key, ("int", 0, None))
    if kind == "order":
        return "0 or 2..9 (an anon mTHP/THP order)"
    if kind == "rate":
        return "a number from 0 to 1"
    if high is None:
        return f"a whole number >= {int(low)}"
    return f"a whole number from {int(low)} to {int(high)}"


def check_param(workload: str, key: str, value: Any) -> None:
    """WorkloadError naming the workload, the parameter and what it needs when ``value`` is out of its range."""
    kind, low, high = PARAM_RULES.get(key, ("int", 0, None))
    if kind == "rate":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= (high or 1)
    else:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value and (
            high is None or value <= high) and not (kind == "order" and value == 1)
    if not ok:
        raise WorkloadError(f"workload {workload!r}: parameter {key} must be {param_need(key)}, not {value!r}")


def default_params(workload: str) -> Params:
    return dict(_lookup(workload)[1])


def _lookup(workload: str) -> tuple[Generator, Params, str]:
    try:
        return WORKLOADS[workload]
    except KeyError:
        raise WorkloadError(f"unknown workload {workload!r} (known: {', '.join(WORKLOADS)})") from None


def workload_params(workload: str, params: Params | None) -> Params:
    """``params`` over ``workload``'s defaults, checked (WorkloadError naming the workload and the parameter)."""
    _gen, defaults, _ = _lookup(workload)
    merged = dict(defaults)
    for key, value in (params or {}).items():
        if key not in defaults and key != "probe_rate":
            raise WorkloadError(f"workload {workload!r} has no parameter {key!r} "
                                f"(parameters: {', '.join(sorted(defaults))}, probe_rate)")
        merged[key] = value
    for key, value in merged.items():
        check_param(workload, key, value)
    return merged


def build_workload(workload: str, params: Params | None, seed: int) -> list[Step]:
    """The steps of ``workload`` with ``params`` (missing keys take defaults) and ``seed``."""
    merged = workload_params(workload, params)
    builder = Builder(random.Random(f"{workload}:{seed}"))
    _lookup(workload)[0](merged, builder)
    return builder.steps
