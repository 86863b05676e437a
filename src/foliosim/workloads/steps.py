"""The step vocabulary of a workload and its JSON Lines form.

A step is ``{"verb": ..., "task": ..., "args": [...]}``. Places in memory are
``(region, first page, number of pages)``: ``region`` is either a name given
by an earlier ``mmap`` (names are global: a forked child sees its parent's
regions at the same addresses) or an integer absolute virtual page number
(used by imported traces).

=============  ===============================================================
verb           args
=============  ===============================================================
file           name, pages, folio order, shmem (bool)                [no task]
spawn          -- (a new process with a fresh MM)
fork           child                 vfork  child          thread  child
exec           --                    exit   --
mmap           region, pages, kind, file, thp orders (list or null), prot,
               file offset in pages (kind: anon, shared-anon, file-shared,
               file-private; prot: rw, r, none, also rx, rwx, and +noreserve: see PROT_FLAGS)
munmap         region, first, pages
mprotect       region, first, pages, prot
mremap         region, pages, new region (move the first ``pages`` pages)
write / read   region, first, pages (one access per page)
madvise        region, first, pages, advice (dontneed, cold, pageout, ...)
khugepaged     -- (one khugepaged scan of the task's anonymous memory)
numa           region (mbind(MPOL_MF_MOVE) over it; null: every mapping)
thp            always orders, madvise orders (lists)                 [no task]
               the machine's THP settings from here on: the anon orders every
               private anonymous VMA may use, and those MADV_HUGEPAGE adds
fault          region, page, write (bool): one recorded user page fault, as
               one access of that page; the runner counts the faults the
               simulator does not take (already mapped, outside any VMA)
pin            handle, region, first, pages, write (bool), longterm (bool)
               (FOLL_PIN, e.g. an io_uring registered buffer)
unpin          handle                                                [no task]
vmsplice       handle, region, first, pages (FOLL_GET pipe references)
merge          -- (vma_merge() of the task's adjacent compatible VMAs: the
               kernel merges a new mapping into its neighbours)
=============  ===============================================================
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from foliosim.errors import FoliosimError

#: verb -> (needs a task, number of args)
VERBS: dict[str, tuple[bool, int]] = {
    "file": (False, 4), "spawn": (True, 0), "fork": (True, 1), "vfork": (True, 1), "thread": (True, 1),
    "exec": (True, 0), "exit": (True, 0), "mmap": (True, 7), "munmap": (True, 3), "mprotect": (True, 4),
    "mremap": (True, 3), "write": (True, 3), "read": (True, 3), "madvise": (True, 4), "khugepaged": (True, 0),
    "numa": (True, 1), "thp": (False, 2), "fault": (True, 3), "pin": (True, 6), "unpin": (False, 1),
    "vmsplice": (True, 4), "merge": (True, 0),
}
KINDS = ("anon", "shared-anon", "file-shared", "file-private")
#: a step's protection -> (read, write, exec, noreserve): "rw", "r" or "none", "x" for PROT_EXEC and "+noreserve"
#: for MAP_NORESERVE; the last two only decide which VMAs merge (VM_EXEC, VM_NORESERVE and the VM_ACCOUNT it avoids)
PROT_FLAGS: dict[str, tuple[bool, bool, bool, bool]] = {
    base + suffix: (*access, suffix == "+noreserve")
    for base, access in {"rw": (True, True, False), "r": (True, False, False), "none": (False, False, False),
                         "rx": (True, False, True), "rwx": (True, True, True)}.items()
    for suffix in ("", "+noreserve")}
PROTS = tuple(PROT_FLAGS)


class WorkloadError(FoliosimError):
    """A malformed workload (the step or line is named)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One thing a task does."""

    verb: str
    task: str = ""
    args: tuple[Any, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verb": self.verb}
        if self.task:
            out["task"] = self.task
        if self.args:
            out["args"] = list(self.args)
        return out


def region_vpn(regions: dict[str, int], region: Any) -> int:
    """A step's region argument as a virtual page number: a number as is, a name by what its mmap step recorded
    in ``regions``; one rule for every runner (reference, compiled, scoring)."""
    if isinstance(region, int):
        return region
    try:
        return regions[region]
    except KeyError:
        raise WorkloadError(f"unknown region {region!r}") from None


def check_step(step: Step, where: str) -> None:
    """Validate a step's shape (names, counts, kinds); WorkloadError says what and where."""
    spec = VERBS.get(step.verb)
    if spec is None:
        raise WorkloadError(f"{where}: unknown verb {step.verb!r} (known: {', '.join(VERBS)})")
    needs_task, nargs = spec
    if needs_task and (not isinstance(step.task, str) or not step.task):
        raise WorkloadError(f"{where}: {step.verb} needs a task name")
    if len(step.args) != nargs:
        raise WorkloadError(f"{where}: {step.verb} takes {nargs} args, got {len(step.args)}")
    a = step.args
    if step.verb == "mmap":
        if a[2] not in KINDS:
            raise WorkloadError(f"{where}: mmap kind must be one of {', '.join(KINDS)}, not {a[2]!r}")
        if a[5] not in PROTS:
            raise WorkloadError(f"{where}: mmap prot must be one of {', '.join(PROTS)}, not {a[5]!r}")
        if not isinstance(a[1], int) or a[1] <= 0:
            raise WorkloadError(f"{where}: mmap pages must be a positive integer, not {a[1]!r}")
    if step.verb in ("munmap", "mprotect", "write", "read", "madvise") and (
            not isinstance(a[1], int) or not isinstance(a[2], int) or a[1] < 0 or a[2] <= 0):
        raise WorkloadError(f"{where}: {step.verb} needs first >= 0 and pages > 0, got {a[1]!r}, {a[2]!r}")
    if step.verb in ("munmap", "mprotect", "write", "read", "madvise", "mremap", "mmap", "fault") and not isinstance(
            a[0], str | int):
        raise WorkloadError(f"{where}: region must be a name or a page number, not {a[0]!r}")
    if step.verb in ("pin", "vmsplice") and (
            not isinstance(a[0], str) or not a[0] or not isinstance(a[1], str | int) or not isinstance(a[2], int)
            or not isinstance(a[3], int) or a[2] < 0 or a[3] <= 0):
        raise WorkloadError(f"{where}: {step.verb} needs a handle name, a region, first >= 0 and pages > 0")
    if step.verb == "unpin" and (not isinstance(a[0], str) or not a[0]):
        raise WorkloadError(f"{where}: unpin needs a handle name")
    if step.verb == "fault" and (not isinstance(a[1], int) or a[1] < 0 or not isinstance(a[2], bool)):
        raise WorkloadError(f"{where}: fault needs a page >= 0 and write true/false, got {a[1]!r}, {a[2]!r}")
    if step.verb == "thp" and not all(isinstance(x, tuple | list) and all(isinstance(o, int) for o in x)
                                      for x in a):
        raise WorkloadError(f"{where}: thp needs two lists of folio orders")


def step_from_json(obj: Any, where: str) -> Step:
    if not isinstance(obj, dict):
        raise WorkloadError(f"{where}: a step must be a JSON object, not {type(obj).__name__}")
    unknown = set(obj) - {"verb", "task", "args"}
    if unknown:
        raise WorkloadError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    args = obj.get("args", [])
    if not isinstance(args, list):
        raise WorkloadError(f"{where}: args must be a list")
    step = Step(str(obj.get("verb", "")), obj.get("task", ""), tuple(tuple(x) if isinstance(x, list) else x
                                                                     for x in args))
    check_step(step, where)
    return step


def load_steps(text: str, source: str = "workload") -> list[Step]:
    """Parse a workload in JSON Lines; blank lines and lines starting with # are skipped."""
    steps = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"{source} line {lineno}: not JSON ({exc.msg})") from None
        steps.append(step_from_json(obj, f"{source} line {lineno}"))
    return steps


def dump_steps(steps: Iterable[Step]) -> str:
    return "".join(json.dumps(s.to_json(), separators=(",", ":")) + "\n" for s in steps)
