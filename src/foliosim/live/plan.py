"""What a scenario needs from the live kernel, decided before anything runs.

A scenario line either has a real equivalent (a system call or memory access of a real process) or it is
refused with the reason, and the THP/mTHP settings it assumes are turned into the sysfs values the live side
needs. Nothing here touches the machine: the caller reads the current settings and decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from foliosim.vm.scenario import Command, parse_int, parse_orders

THP_DIR = "/sys/kernel/mm/transparent_hugepage"

#: scenario verbs that have no user-space equivalent on a real machine, and why
NO_LIVE_EQUIVALENT = {
    "vfork": "vfork() cannot be issued from the Python agent (the parent would run on the child's stack)",
    "grab": "mmgrab() is a kernel-internal reference (e.g. a lazy-TLB CPU); no system call takes one",
    "mmget": "mmget() is a kernel-internal reference; no system call takes one on demand",
    "release": "it drops a kernel-internal MM reference (grab/mmget)",
    "clear_refs": "clear_refs is not run live yet (it write-protects every PTE of the task)",
}

#: the one pin a real process can hold for as long as it likes: an io_uring registered buffer
LIVE_PIN_WORDS = frozenset({"rw", "longterm", "fast"})


@dataclass(frozen=True, slots=True)
class LivePlan:
    """The live side's view of a scenario: what it cannot run, and the folio orders it assumes."""

    refusals: tuple[str, ...]
    anon_orders: frozenset[int]  # `option thp=`: every private anonymous VMA may use these ("always")
    shmem_orders: frozenset[int]  # shmem folio orders the scenario's shmem objects are cached in
    files: dict[str, tuple[int, bool, int, int]] = field(default_factory=dict)  # name -> size, shmem, order, fill


def make_plan(commands: list[Command]) -> LivePlan:
    """Check every line for a live equivalent and collect the THP orders the scenario assumes."""
    from foliosim.vm.scenario import parse_size

    refusals: list[str] = []
    anon: frozenset[int] = frozenset()
    shmem: set[int] = set()
    files: dict[str, tuple[int, bool, int, int]] = {}
    for cmd in commands:
        verb, a, o = cmd.verb, cmd.args, cmd.opts
        where = f"line {cmd.line}: {verb}"
        if verb in NO_LIVE_EQUIVALENT:
            refusals.append(f"{where}: no live equivalent ({NO_LIVE_EQUIVALENT[verb]})")
        elif verb == "option":
            if "thp" in o:
                anon = parse_orders(cmd.line, o["thp"])
            for key, default in (("fault_around", 16), ("vmsplice_pages", 16), ("use_zero_page", 1)):
                if key in o and parse_int(cmd.line, o[key], key) != default:
                    what = {"fault_around": "fault_around_bytes is a debugfs knob, which foliosim never changes",
                            "vmsplice_pages": "the kernel's vmsplice() takes what the pipe holds, not a set number",
                            "use_zero_page": "use_zero_page is left at the machine's value (1)"}[key]
                    refusals.append(f"{where}: {key}={o[key]} has no live equivalent ({what})")
            if "thp_madvise" in o:
                refusals.append(f"{where}: thp_madvise= is not run live yet (use thp=)")
        elif verb == "file":
            order = parse_int(cmd.line, o.get("order", "0"), "order")
            is_shmem = len(a) == 3
            if not is_shmem:
                refusals.append(f"{where}: a regular file has no exact live equivalent yet (its page cache follows "
                                "readahead and the filesystem's folio sizes, and ext4 holds one more reference per "
                                "folio); use a shmem object")
            if order and is_shmem:
                shmem.add(order)
            files[a[0]] = (parse_size(cmd.line, a[1]), is_shmem, order, parse_int(cmd.line, o.get("fill", "0"), "fill"))
        elif verb == "mmap":
            if "thp" in o and parse_orders(cmd.line, o["thp"]) and parse_orders(cmd.line, o["thp"]) != anon:
                refusals.append(f"{where}: a per-mapping thp={o['thp']} other than 'never' or the scenario's "
                                "thp= has no live equivalent")
            if "shared" in a[3:] and not ("file" in o or "shmem" in o):
                orders = parse_orders(cmd.line, o["thp"]) if "thp" in o else anon
                top = max(orders or {0})
                if 0 < top < 9:
                    shmem.add(top)
        elif verb == "madvise" and a[3] in ("hugepage", "nohugepage"):
            refusals.append(f"{where}: MADV_{a[3].upper()} is not run live yet")
        elif verb == "pin":
            words = set(a[4:])
            if "rw" not in words or "short" in words:
                refusals.append(f"{where}: only a R/W long-term pin (an io_uring registered buffer) has a live "
                                f"equivalent, not {' '.join(a[4:]) or 'the default R/O long-term pin'}")
    return LivePlan(tuple(refusals), anon, frozenset(shmem), files)


def size_dir(order: int) -> str:
    return f"{THP_DIR}/hugepages-{4 << order}kB"


def wanted_settings(plan: LivePlan, available: dict[int, tuple[str, str | None]], top: str,
                    top_shmem: str) -> dict[str, str]:
    """The sysfs values that differ from what the scenario needs: {path: wanted value}.

    ``available`` maps each anon order the machine offers to its (enabled, shmem_enabled) values; ``top`` and
    ``top_shmem`` are the top-level ``enabled`` and ``shmem_enabled``. A size the scenario allows must be
    effectively "always"; one it does not must be effectively "never" (or "madvise", which no scenario VMA asks
    for). Only per-size files are ever changed, never the top-level ones.
    """
    changes: dict[str, str] = {}
    for order, (enabled, shmem_enabled) in sorted(available.items()):
        if enabled:
            effective = top if enabled == "inherit" else enabled
            want_on = order in plan.anon_orders
            if want_on and effective != "always":
                changes[f"{size_dir(order)}/enabled"] = "always"
            elif not want_on and effective == "always":
                changes[f"{size_dir(order)}/enabled"] = "never"
        if shmem_enabled is not None:
            effective = top_shmem if shmem_enabled == "inherit" else shmem_enabled
            want_on = order in plan.shmem_orders
            if want_on and effective != "always":
                changes[f"{size_dir(order)}/shmem_enabled"] = "always"
            elif not want_on and effective not in ("never", "deny", "advise"):
                changes[f"{size_dir(order)}/shmem_enabled"] = "never"
    for order in sorted(plan.anon_orders - {o for o, v in available.items() if v[0]}):
        changes[f"{size_dir(order)}/enabled"] = "always (this kernel offers no such size)"
    return changes
