"""Import ``strace -f`` output as a workload, with a documented access model.

strace shows the process tree and the memory system calls, not the loads and
stores between them, so the importer adds accesses by a fixed, seeded model
(docs/evaluator.md, "The strace access model"):

1. Every process keeps its own address space at the program's real addresses
   (mappings are placed with MAP_FIXED semantics at the address the call
   returned).
2. After a successful ``mmap``/``mremap`` growth/``brk`` growth/``mprotect``
   making pages accessible, the process touches the start of the new range:
   writable private or shared memory is written, read-only memory is read, up
   to ``touch`` pages (``lib_touch`` for file mappings that are not writable).
3. ``execve`` gives the process a fresh MM with a stack (``stack_pages``
   anonymous pages, the top four written) and its binary (``binary_pages``
   of the executable file, read).
4. Before each traced call a process writes one page of the anonymous
   region it touched last (a seeded choice): the work it did in between. A
   forked child does the same ``child_touch`` times right after the fork.
5. Anonymous private memory may use mTHP folios of ``anon_order``; files use
   page-cache folios of ``file_order``. ``MADV_FREE`` is modelled as
   ``MADV_DONTNEED``; advice the simulator does not know is dropped.
6. ``clone`` with CLONE_VM is a thread (with CLONE_VFORK: a vfork child),
   otherwise a fork; ``exit_group`` ends every thread of the group.

Calls that failed (negative result) change nothing. Unparsable lines are
counted, never fatal.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from foliosim.workloads.steps import Step

#: The calls ``foliosim trace`` asks strace for.
TRACED = ("clone", "clone3", "fork", "vfork", "execve", "execveat", "exit", "exit_group", "mmap", "munmap",
          "mremap", "madvise", "brk", "mprotect")
PAGE = 4096
DEFAULTS: dict[str, int] = {"touch": 16, "lib_touch": 32, "stack_pages": 32, "binary_pages": 32, "child_touch": 2,
                            "anon_order": 4, "file_order": 4, "seed": 1}
ADVICE = {"MADV_DONTNEED": "dontneed", "MADV_FREE": "dontneed", "MADV_COLD": "cold", "MADV_PAGEOUT": "pageout",
          "MADV_DONTFORK": "dontfork", "MADV_DOFORK": "dofork", "MADV_HUGEPAGE": "hugepage",
          "MADV_NOHUGEPAGE": "nohugepage"}
STACK_TOP = 0x7FFFFFFF0000 >> 12

_LINE = re.compile(r"^(\d+)\s+(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)$")
_RESULT = re.compile(r"\)\s+=\s+(-?(?:0x[0-9a-fA-F]+|\d+)|\?)(?:\s.*)?$")
_UNFINISHED = " <unfinished ...>"
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")


@dataclass(slots=True)
class Call:
    pid: int
    name: str
    args: list[str]
    result: int | None  # None: no result ("?", e.g. exit_group)


@dataclass(slots=True)
class ImportStats:
    lines: int = 0
    calls: int = 0
    unparsed: int = 0
    processes: int = 0
    by_call: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def split_args(text: str) -> list[str]:
    """Split strace's argument list at top-level commas (quotes, brackets, braces, parens respected)."""
    out: list[str] = []
    depth = 0
    quote = False
    cur: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            cur.append(ch)
            if ch == "\\" and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif ch == '"':
                quote = False
        elif ch == '"':
            quote = True
            cur.append(ch)
        elif ch in "([{<":
            depth += 1
            cur.append(ch)
        elif ch in ")]}>":
            depth -= 1
            cur.append(ch)
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    if cur or out:
        out.append("".join(cur).strip())
    return out


def parse_strace(text: str, stats: ImportStats | None = None) -> list[Call]:
    """The completed calls in start order (an unfinished call is placed where it started)."""
    stats = stats if stats is not None else ImportStats()
    calls: list[Call | None] = []
    open_calls: dict[int, tuple[int, str, str]] = {}  # pid -> (slot, name, text so far)
    for raw in text.splitlines():
        stats.lines += 1
        match = _LINE.match(raw)
        if match is None:
            if raw.strip():
                stats.unparsed += 1
            continue
        pid, rest = int(match.group(1)), match.group(2)
        if rest.startswith("+++") or rest.startswith("---"):
            continue
        resumed = _RESUMED.match(rest)
        if resumed is not None:
            pending = open_calls.pop(pid, None)
            if pending is None:
                stats.unparsed += 1
                continue
            slot, name, head = pending
            rest = f"{name}({head}{resumed.group(2)}"
            calls[slot] = _finish(pid, rest, stats)
            continue
        if rest.endswith(_UNFINISHED):
            call = _CALL.match(rest[: -len(_UNFINISHED)])
            if call is None:
                stats.unparsed += 1
                continue
            open_calls[pid] = (len(calls), call.group(1), call.group(2))
            calls.append(None)
            continue
        calls.append(_finish(pid, rest, stats))
    for pid, (slot, name, head) in open_calls.items():  # never resumed (an exit, or killed): no result
        calls[slot] = Call(pid, name, split_args(head), None)
    return [c for c in calls if c is not None]


def _finish(pid: int, rest: str, stats: ImportStats) -> Call | None:
    call = _CALL.match(rest)
    if call is None:
        stats.unparsed += 1
        return None
    name, body = call.group(1), call.group(2)
    result_match = _RESULT.search(body)
    if result_match is None:
        stats.unparsed += 1
        return None
    args = split_args(body[: result_match.start()])
    value = result_match.group(1)
    result = None if value == "?" else int(value, 0)
    stats.calls += 1
    stats.by_call[name] += 1
    return Call(pid, name, args, result)


def _int(text: str) -> int:
    text = text.split("/*")[0].strip()
    if text in ("NULL", ""):
        return 0
    return int(text, 0)


def _pages(length: int) -> int:
    return max(1, -(-length // PAGE))


def _prot(text: str) -> str:
    if "PROT_WRITE" in text:
        return "rw"
    if "PROT_READ" in text or "PROT_EXEC" in text:
        return "r"
    return "none"


def _fd_path(text: str) -> str | None:
    match = re.match(r"^-?\d+<(.*)>$", text)
    return match.group(1) if match else None


class _Importer:
    def __init__(self, params: dict[str, int]) -> None:
        self.p = params
        self.rng = random.Random(f"strace:{params['seed']}")
        self.steps: list[Step] = []
        self.tasks: dict[int, str] = {}
        self.group: dict[int, int] = {}  # pid -> thread-group leader pid
        self.last_anon: dict[int, tuple[int, int]] = {}  # thread group -> (vpn, pages) written last
        self.brk: dict[int, int] = {}  # thread group -> current break (bytes)
        self.files: dict[str, int] = {}

    def task(self, pid: int) -> str:
        return self.tasks[pid]

    def add(self, verb: str, pid: int, *args: Any) -> None:
        self.steps.append(Step(verb, self.task(pid), tuple(args)))

    def touch(self, pid: int, vpn: int, pages: int, prot: str, kind: str) -> None:
        if prot == "none":
            return
        limit = self.p["touch"] if prot == "rw" or not kind.startswith("file") else self.p["lib_touch"]
        count = min(pages, limit)
        self.add("write" if prot == "rw" else "read", pid, vpn, 0, count)
        if prot == "rw" and kind in ("anon", "shared-anon"):
            self.last_anon[self.group[pid]] = (vpn, pages)

    def activity(self, pid: int) -> None:
        last = self.last_anon.get(self.group[pid])
        if last is not None:
            self.add("write", pid, last[0], self.rng.randrange(last[1]), 1)

    def new_image(self, pid: int, path: str | None) -> None:
        stack = self.p["stack_pages"]
        base = STACK_TOP - stack - 16 * (pid % 4096)
        self.add("mmap", pid, base, stack, "anon", None, (), "rw", 0)
        self.add("write", pid, base, stack - 4, 4)
        self.last_anon[self.group[pid]] = (base, stack)
        if path:
            pages = self.p["binary_pages"]
            self.files[path] = max(self.files.get(path, 0), pages)
            self.add("mmap", pid, 0x555500000 + 64 * (pid % 4096), pages, "file-private", path, None, "r", 0)
            self.add("read", pid, 0x555500000 + 64 * (pid % 4096), 0, pages)

    def run(self, calls: list[Call]) -> list[Step]:
        if not calls:
            return []
        root = calls[0].pid
        self.tasks[root] = f"p{root}"
        self.group[root] = root
        self.steps.append(Step("spawn", self.tasks[root]))
        for call in calls:
            if call.pid not in self.tasks:
                continue  # a process whose creation we did not see
            handler = getattr(self, f"on_{call.name}", None)
            if handler is None:
                continue
            if call.name not in ("exit", "exit_group"):
                self.activity(call.pid)
            handler(call)
        file_steps = [Step("file", "", (path, pages, self.p["file_order"], False))
                      for path, pages in sorted(self.files.items())]
        return file_steps + self.steps

    # -- process tree ------------------------------------------------------------
    def _child(self, call: Call, vm: bool, vfork: bool) -> None:
        if call.result is None or call.result <= 0:
            return
        child = call.result
        self.tasks[child] = f"p{child}"
        if vm and not vfork:
            self.group[child] = self.group[call.pid]
            self.add("thread", call.pid, self.tasks[child])
            return
        self.group[child] = child
        self.add("vfork" if vfork else "fork", call.pid, self.tasks[child])
        if not vfork:
            last = self.last_anon.get(self.group[call.pid])
            if last is not None:
                self.last_anon[child] = last
                for _ in range(self.p["child_touch"]):
                    self.steps.append(Step("write", self.tasks[child], (last[0], self.rng.randrange(last[1]), 1)))
            if self.group[call.pid] in self.brk:
                self.brk[child] = self.brk[self.group[call.pid]]

    def on_clone(self, call: Call) -> None:
        flags = " ".join(call.args)
        self._child(call, "CLONE_VM" in flags, "CLONE_VFORK" in flags)

    on_clone3 = on_clone

    def on_fork(self, call: Call) -> None:
        self._child(call, False, False)

    def on_vfork(self, call: Call) -> None:
        self._child(call, True, True)

    def on_execve(self, call: Call) -> None:
        if call.result != 0:
            return
        path = call.args[0].strip('"') if call.args else None
        self.add("exec", call.pid)
        leader = self.group[call.pid]
        for pid, group in list(self.group.items()):  # de_thread(): the other threads are gone
            if group == leader and pid != call.pid:
                self.tasks.pop(pid, None)
                self.group.pop(pid, None)
        self.group[call.pid] = call.pid
        self.last_anon.pop(call.pid, None)
        self.brk.pop(call.pid, None)
        self.new_image(call.pid, path)

    def on_execveat(self, call: Call) -> None:
        if call.result == 0 and len(call.args) > 1:
            self.on_execve(Call(call.pid, "execve", call.args[1:], 0))

    def on_exit(self, call: Call) -> None:
        self.add("exit", call.pid)
        self.tasks.pop(call.pid, None)
        self.group.pop(call.pid, None)

    def on_exit_group(self, call: Call) -> None:
        leader = self.group[call.pid]
        for pid in [p for p, g in self.group.items() if g == leader]:
            if pid in self.tasks:
                self.add("exit", pid)
                self.tasks.pop(pid, None)
                self.group.pop(pid, None)

    # -- memory ------------------------------------------------------------------
    def on_mmap(self, call: Call) -> None:
        if call.result is None or call.result < 0 or len(call.args) < 6:
            return
        length, prot, flags = _int(call.args[1]), _prot(call.args[2]), call.args[3]
        path = _fd_path(call.args[4])
        vpn, pages = call.result >> 12, _pages(length)
        shared = "MAP_SHARED" in flags
        if "MAP_ANONYMOUS" in flags or path is None:
            kind, thp = ("shared-anon", ()) if shared else ("anon", (self.p["anon_order"],))
            self.add("mmap", call.pid, vpn, pages, kind, None, thp, prot, 0)
        else:
            kind = "file-shared" if shared else "file-private"
            offset = _int(call.args[5]) >> 12
            self.files[path] = max(self.files.get(path, 0), offset + pages)
            self.add("mmap", call.pid, vpn, pages, kind, path, None, prot, offset)
        self.touch(call.pid, vpn, pages, prot, kind)

    def on_munmap(self, call: Call) -> None:
        if call.result == 0 and len(call.args) >= 2:
            self.add("munmap", call.pid, _int(call.args[0]) >> 12, 0, _pages(_int(call.args[1])))

    def on_mprotect(self, call: Call) -> None:
        if call.result != 0 or len(call.args) < 3:
            return
        vpn, pages, prot = _int(call.args[0]) >> 12, _pages(_int(call.args[1])), _prot(call.args[2])
        self.add("mprotect", call.pid, vpn, 0, pages, prot)
        if prot == "rw":
            self.touch(call.pid, vpn, pages, prot, "anon")

    def on_madvise(self, call: Call) -> None:
        if call.result != 0 or len(call.args) < 3:
            return
        advice = ADVICE.get(call.args[2].strip())
        if advice is not None:
            self.add("madvise", call.pid, _int(call.args[0]) >> 12, 0, _pages(_int(call.args[1])), advice)

    def on_brk(self, call: Call) -> None:
        if call.result is None or call.result <= 0:
            return
        group = self.group[call.pid]
        old = self.brk.get(group)
        new = call.result
        self.brk[group] = new
        if old is None:
            return
        lo, hi = (old + PAGE - 1) >> 12, (new + PAGE - 1) >> 12
        if hi > lo:
            self.add("mmap", call.pid, lo, hi - lo, "anon", None, (self.p["anon_order"],), "rw", 0)
            self.touch(call.pid, lo, hi - lo, "rw", "anon")
        elif hi < lo:
            self.add("munmap", call.pid, hi, 0, lo - hi)

    def on_mremap(self, call: Call) -> None:
        if call.result is None or call.result < 0 or len(call.args) < 3:
            return
        old, old_pages, new_pages = _int(call.args[0]) >> 12, _pages(_int(call.args[1])), _pages(_int(call.args[2]))
        dst = call.result >> 12
        keep = min(old_pages, new_pages)
        if dst != old:
            self.add("mremap", call.pid, old, keep, dst)
            if old_pages > keep:
                self.add("munmap", call.pid, old + keep, 0, old_pages - keep)
        elif new_pages < old_pages:
            self.add("munmap", call.pid, old + new_pages, 0, old_pages - new_pages)
        if new_pages > keep:
            self.add("mmap", call.pid, dst + keep, new_pages - keep, "anon", None, (self.p["anon_order"],), "rw", 0)
            self.touch(call.pid, dst + keep, new_pages - keep, "rw", "anon")


#: parameter -> (smallest, largest or None); anon_order also excludes 1 (no order-1 anon folios).
PARAM_RANGES: dict[str, tuple[int | None, int | None]] = {
    "touch": (0, None), "lib_touch": (0, None), "stack_pages": (1, None), "binary_pages": (1, None),
    "child_touch": (0, None), "anon_order": (0, 9), "file_order": (0, 9), "seed": (None, None)}


def check_params(params: dict[str, int]) -> dict[str, int]:
    """The access model's parameters with defaults filled in; ValueError names a bad key or value."""
    merged = dict(DEFAULTS)
    for key, value in params.items():
        if key not in DEFAULTS:
            raise ValueError(f"unknown strace import parameter {key!r} (known: {', '.join(DEFAULTS)})")
        low, high = PARAM_RANGES[key]
        if (not isinstance(value, int) or isinstance(value, bool) or (low is not None and value < low)
                or (high is not None and value > high) or (key == "anon_order" and value == 1)):
            need = ("0 or 2..9" if key == "anon_order" else f"{low}..{high}" if low is not None and high is not None
                    else f"a whole number >= {low}" if low is not None else "a whole number")
            raise ValueError(f"strace import parameter {key} must be {need}, not {value!r}")
        merged[key] = value
    return merged


def import_strace(text: str, params: dict[str, int] | None = None) -> tuple[list[Step], ImportStats]:
    """Turn strace -f -y output into workload steps (see the module docstring for the model)."""
    merged = check_params(dict(params or {}))
    stats = ImportStats()
    calls = parse_strace(text, stats)
    importer = _Importer(merged)
    steps = importer.run(calls)
    stats.processes = sum(1 for s in steps if s.verb in ("spawn", "fork", "vfork"))
    return steps, stats
