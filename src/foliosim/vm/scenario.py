"""Scenario files: a line-based language for driving the machine, and its runner.

One command per line, ``#`` starts a comment, arguments are words, numbers
(``4096``, ``0x1000``, ``16K``, ``2M``, ``3p`` = 3 pages) and ``key=value``
options. The whole file is parsed before anything runs, so a syntax error
anywhere is reported (with its line) before any state exists; a command that
fails at run time is reported with its line and leaves the machine as it was
before that line. The language is described in docs/simulator.md.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from foliosim.errors import FoliosimError
from foliosim.folio import folio_maybe_mapped_shared
from foliosim.kconfig import KernelConfig
from foliosim.vm.events import CowDecision, Event, OracleViolation, SimError, errno_name
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.vm.memory import PAGE_SHIFT, PAGE_SIZE
from foliosim.vm.mm import MM
from foliosim.vm.stats import pagemap, pagemap_present, smaps_rollup


class ScenarioError(FoliosimError):
    """A malformed or impossible scenario line; ``line`` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class Command:
    line: int
    verb: str
    args: tuple[str, ...]
    opts: dict[str, str]
    text: str


# verb -> (minimum positional args, maximum positional args, allowed option keys, usage)
VERBS: dict[str, tuple[int, int, frozenset[str], str]] = {
    "option": (0, 0, frozenset({"thp", "thp_madvise", "use_zero_page", "fault_around", "vmsplice_pages"}),
               "option [thp=ORDERS] [thp_madvise=ORDERS] [use_zero_page=0|1] [fault_around=N]"),
    "file": (2, 3, frozenset({"order", "fill"}), "file NAME SIZE [shmem] [order=N] [fill=BYTE]"),
    "spawn": (1, 1, frozenset(), "spawn TASK"),
    "fork": (2, 2, frozenset(), "fork PARENT CHILD"),
    "vfork": (2, 2, frozenset(), "vfork PARENT CHILD"),
    "thread": (2, 2, frozenset(), "thread TASK NEWTHREAD"),
    "exec": (1, 1, frozenset(), "exec TASK"),
    "exit": (1, 1, frozenset(), "exit TASK"),
    "grab": (2, 2, frozenset(), "grab HOLDER TASK   (mmgrab, e.g. a lazy-TLB reference)"),
    "mmget": (2, 2, frozenset(), "mmget HOLDER TASK"),
    "release": (1, 1, frozenset(), "release HOLDER"),
    "mmap": (3, 5, frozenset({"file", "shmem", "prot", "offset", "at", "thp"}),
             "mmap TASK REGION SIZE [shared|private] [anon] [file=NAME|shmem=NAME] [prot=rw] [offset=N] "
             "[at=ADDR] [thp=ORDERS|never]"),
    "munmap": (3, 3, frozenset(), "munmap TASK ADDR SIZE"),
    "mprotect": (4, 4, frozenset(), "mprotect TASK ADDR SIZE PROT"),
    "mremap": (4, 4, frozenset(), "mremap TASK ADDR SIZE NEWADDR"),
    "madvise": (4, 4, frozenset(), "madvise TASK ADDR SIZE ADVICE"),
    "read": (2, 3, frozenset({"expect"}), "read TASK ADDR [SIZE] [expect=BYTE|TEXT]"),
    "write": (3, 4, frozenset(), "write TASK ADDR [SIZE] BYTE|\"TEXT\""),
    "pin": (4, 7, frozenset(), "pin TASK NAME ADDR SIZE [ro|rw] [longterm|short] [fast]"),
    "vmsplice": (4, 4, frozenset(), "vmsplice TASK NAME ADDR SIZE"),
    "unpin": (1, 1, frozenset(), "unpin NAME"),
    "readpin": (1, 1, frozenset({"expect"}), "readpin NAME [expect=BYTE|TEXT]"),
    "clear_refs": (1, 1, frozenset(), "clear_refs TASK"),
    "expect": (0, 2, frozenset({"reuses", "copies", "last_cow", "rule", "shared", "exclusive", "result"}),
               "expect TASK ADDR shared=yes|no|exclusive=yes|no; expect reuses=N copies=N; "
               "expect last_cow=reuse|copy|split [rule=TEXT]"),
    "stats": (1, 1, frozenset(), "stats TASK"),
    "pagemap": (2, 3, frozenset(), "pagemap TASK ADDR [SIZE]"),
    "check": (0, 0, frozenset(), "check"),
}
PROTS = {"rw": (True, True), "r": (True, False), "ro": (True, False), "none": (False, False), "w": (True, True)}


def parse(text: str) -> list[Command]:
    """Parse a whole scenario; ScenarioError names the first bad line."""
    commands: list[Command] = []
    seen_other = False
    regions: dict[str, int] = {}  # region name -> the line of the mmap that names it
    for lineno, raw in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(raw, comments=True)
        except ValueError as exc:
            raise ScenarioError(lineno, f"cannot split the line into words ({exc})") from None
        if not words:
            continue
        verb = words[0].lower()
        if verb not in VERBS:
            raise ScenarioError(lineno, f"unknown command {words[0]!r} (known: {', '.join(VERBS)})")
        lo, hi, keys, usage = VERBS[verb]
        args: list[str] = []
        opts: dict[str, str] = {}
        for word in words[1:]:
            key, eq, value = word.partition("=")
            if eq and key and not word.startswith('"'):
                if key not in keys:
                    raise ScenarioError(lineno, f"{verb}: unknown option {key!r} (usage: {usage})")
                if key in opts:
                    raise ScenarioError(lineno, f"{verb}: option {key!r} given twice")
                opts[key] = value
            else:
                args.append(word)
        if not lo <= len(args) <= hi:
            raise ScenarioError(lineno, f"{verb}: expected {lo}..{hi} arguments, got {len(args)} (usage: {usage})")
        if verb == "option":
            if seen_other:
                raise ScenarioError(lineno, "option lines must come before every other command")
        else:
            seen_other = True
        cmd = Command(lineno, verb, tuple(args), opts, shlex.join(words))
        _static_check(cmd)
        if verb == "mmap":
            region = args[1]
            if region in regions:  # names are global and bound once: a second mmap would silently rebind it
                raise ScenarioError(lineno, f"mmap: region {region!r} is already named by line {regions[region]}; "
                                            "a region name is given once per scenario (pick a new name; at=OLD "
                                            "maps at the old one's address)")
            regions[region] = lineno
        commands.append(cmd)
    return commands


def _static_check(cmd: Command) -> None:
    """Syntax of numbers and keywords that does not depend on run-time names."""
    a, o = cmd.args, cmd.opts
    if cmd.verb == "option":
        for key in ("thp", "thp_madvise"):
            if key in o:
                parse_orders(cmd.line, o[key])
        for key in ("use_zero_page", "fault_around", "vmsplice_pages"):
            if key in o:
                parse_int(cmd.line, o[key], key)
    elif cmd.verb == "file":
        parse_size(cmd.line, a[1])
        if len(a) == 3 and a[2] != "shmem":
            raise ScenarioError(cmd.line, f"file: the third word may only be 'shmem', not {a[2]!r}")
    elif cmd.verb == "mmap":
        parse_size(cmd.line, a[2])
        for word in a[3:]:
            if word not in ("shared", "private", "anon"):
                raise ScenarioError(cmd.line, f"mmap: unexpected word {word!r} (shared, private or anon)")
        if "prot" in o and o["prot"] not in PROTS:
            raise ScenarioError(cmd.line, f"mmap: prot must be one of {', '.join(PROTS)}, not {o['prot']!r}")
        if "thp" in o:
            parse_orders(cmd.line, o["thp"])
        if "file" in o and "shmem" in o:
            raise ScenarioError(cmd.line, "mmap: give file= or shmem=, not both")
    elif cmd.verb == "mprotect" and a[3] not in PROTS:
        raise ScenarioError(cmd.line, f"mprotect: protection must be one of {', '.join(PROTS)}, not {a[3]!r}")
    elif cmd.verb == "madvise":
        from foliosim.vm.machine import MADVISE

        if a[3] not in MADVISE:
            raise ScenarioError(cmd.line, f"madvise: unknown advice {a[3]!r} (known: {', '.join(MADVISE)})")
    elif cmd.verb == "write":
        parse_value(cmd.line, a[-1])
        if len(a) == 4:
            parse_size(cmd.line, a[2])
    elif cmd.verb == "pin":
        for word in a[4:]:
            if word not in ("ro", "rw", "longterm", "short", "fast"):
                raise ScenarioError(cmd.line, f"pin: unexpected word {word!r} (ro, rw, longterm, short, fast)")
    elif cmd.verb == "expect":
        if "last_cow" in o and o["last_cow"] not in ("reuse", "copy", "split", "new-thp", "writable"):
            raise ScenarioError(cmd.line, "expect: last_cow must be reuse, copy, split, new-thp or writable")
        for key in ("reuses", "copies"):
            if key in o:
                parse_int(cmd.line, o[key], key)
        for key in ("shared", "exclusive"):
            if key in o and o[key] not in ("yes", "no"):
                raise ScenarioError(cmd.line, f"expect: {key} must be yes or no, not {o[key]!r}")
    if "expect" in o:
        parse_value(cmd.line, o["expect"])


def parse_int(line: int, text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ScenarioError(line, f"{what}: {text!r} is not an integer") from None


_SUFFIX = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "p": PAGE_SIZE}


def parse_size(line: int, text: str) -> int:
    """``4096``, ``0x1000``, ``16K``, ``2M``, ``3p`` (pages) -> bytes."""
    mult = 1
    body = text
    if body and body[-1].lower() in _SUFFIX:
        mult = _SUFFIX[body[-1].lower()]
        body = body[:-1]
    try:
        value = int(body, 0) * mult
    except ValueError:
        raise ScenarioError(line, f"{text!r} is not a size (like 4096, 0x1000, 16K, 2M or 3p)") from None
    if value < 0:
        raise ScenarioError(line, f"size {text!r} is negative")
    return value


def parse_orders(line: int, text: str) -> frozenset[int]:
    if text in ("never", "none", ""):
        return frozenset()
    try:
        return frozenset(int(x) for x in text.split(","))
    except ValueError:
        raise ScenarioError(line, f"{text!r} is not a list of folio orders (like 4 or 2,4,9 or never)") from None


def parse_value(line: int, text: str) -> bytes:
    """A byte (``0xff``, ``7``) meaning "that byte", or any other text meaning its UTF-8 bytes."""
    try:
        value = int(text, 0)
    except ValueError:
        if not text:
            raise ScenarioError(line, "empty value") from None
        return text.encode()
    if not 0 <= value <= 255:
        raise ScenarioError(line, f"byte value {text!r} is outside 0..255")
    return bytes([value])


@dataclass(slots=True)
class StepRecord:
    """What one scenario line did: its events and a one-line result."""

    command: Command
    result: str
    events: list[Event] = field(default_factory=list)
    failed: str | None = None  # a failed expectation

    def headline(self) -> str:
        """The first line a timeline shows for this scenario line: the command and its result."""
        return f"line {self.command.line:>3}  {self.command.text}   -> {self.result}"


@dataclass(slots=True)
class RunResult:
    machine: Machine
    steps: list[StepRecord]
    failures: list[str]
    error: ScenarioError | None = None
    violation: str | None = None


def summary_head(title: str, steps: int, trace_ops: int, kernel: str, pmd_order: int,
                 counters: Mapping[str, int]) -> list[str]:
    """The opening lines of a run's summary (shared by the reference's and the fast engine's): totals, the
    copy-on-write counts and how often each reuse rule decided."""
    c = counters
    out = ["", title]
    out.append(f"  steps {steps}, rmap trace {trace_ops} operations, kernel {kernel}, PMD order {pmd_order}")
    out.append(f"  copy-on-write: {c.get('cow reuse', 0)} reuse(s), {c.get('cow copy', 0)} copy(ies), "
               f"{c.get('pmd split', 0)} PMD split(s), {c.get('fork early copy', 0)} early copies at fork, "
               f"{c.get('SIGSEGV', 0)} SIGSEGV(s)")
    rules = sorted((k[len('cow rule: '):], v) for k, v in c.items() if k.startswith("cow rule: "))
    for rule, count in rules:
        out.append(f"    {count:>4} x {rule}")
    return out


def build_machine(commands: list[Command], config: KernelConfig, check: bool) -> Machine:
    opts = MachineOptions(check=check)
    for cmd in commands:
        if cmd.verb != "option":
            break
        o = cmd.opts
        try:
            if "thp" in o:
                opts = replace(opts, thp=parse_orders(cmd.line, o["thp"]))
            if "thp_madvise" in o:
                opts = replace(opts, thp_madvise=parse_orders(cmd.line, o["thp_madvise"]))
            if "use_zero_page" in o:
                opts = replace(opts, use_zero_page=bool(parse_int(cmd.line, o["use_zero_page"], "use_zero_page")))
            if "fault_around" in o:
                opts = replace(opts, fault_around_pages=parse_int(cmd.line, o["fault_around"], "fault_around"))
            if "vmsplice_pages" in o:
                opts = replace(opts, vmsplice_max_pages=parse_int(cmd.line, o["vmsplice_pages"], "vmsplice_pages"))
            Machine(config, opts)
        except SimError as exc:
            raise ScenarioError(cmd.line, str(exc)) from None
    return Machine(config, opts)


def run(text: str, config: KernelConfig | None = None, check: bool = True,
        on_step: Callable[[StepRecord, Machine], None] | None = None,
        on_start: Callable[[Machine], None] | None = None) -> RunResult:
    """Parse and run a scenario. Parse errors raise ScenarioError before anything runs.

    ``on_start`` is called with the machine once it is built, before its first
    step: the place to append to ``machine.observers``, which see every
    :class:`~foliosim.vm.events.Event` as it is emitted (the viewer reads each
    rmap call's folio there). ``on_step`` is called after each scenario line.
    """
    commands = parse(text)
    machine = build_machine(commands, config or KernelConfig(), check)
    if on_start is not None:
        on_start(machine)
    runner = _Runner(machine)
    result = RunResult(machine, [], [])
    for cmd in commands:
        if cmd.verb == "option":
            continue
        mark = len(machine.events)
        rec = StepRecord(cmd, "")
        try:
            rec.result = runner.execute(cmd)
        except ScenarioError as exc:
            result.error = exc
            return result
        except SimError as exc:
            result.error = ScenarioError(cmd.line, str(exc))
            return result
        except OracleViolation as exc:
            rec.events = machine.events[mark:]
            result.steps.append(rec)
            result.violation = f"line {cmd.line}: {exc}"
            if on_step:
                on_step(rec, machine)
            return result
        rec.events = machine.events[mark:]
        if runner.failed is not None:
            rec.failed = runner.failed
            result.failures.append(f"line {cmd.line}: {runner.failed}")
            runner.failed = None
        result.steps.append(rec)
        if on_step:
            on_step(rec, machine)
    return result


def _pagemap_text(m: Machine, mm: MM, start: int, end: int) -> str:
    """``ADDR:FOLIO[PAGE] [excl] [file]`` per present page, ``ADDR:-`` for a page that is not present and
    ``FIRST..LAST:-`` for a longer run of them: the text and its cost follow the present pages."""
    out = []
    cur = start
    for e in pagemap_present(m, mm, start, end):
        vpn = e.addr >> PAGE_SHIFT
        if vpn > cur:
            out.append(_absent(cur, vpn))
        out.append(f"{e.addr:#x}:{e.folio}[{e.page}]{' excl' if e.exclusive else ''}{' file' if e.file else ''}")
        cur = vpn + 1
    if cur < end:
        out.append(_absent(cur, end))
    return " ".join(out)


def _absent(start: int, end: int) -> str:
    if end - start == 1:
        return f"{start << PAGE_SHIFT:#x}:-"
    return f"{start << PAGE_SHIFT:#x}..{(end - 1) << PAGE_SHIFT:#x}:-"


class _Runner:
    """Executes parsed commands against one machine; resolves regions and names."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.regions: dict[str, int] = {}
        self.failed: str | None = None

    def addr(self, cmd: Command, text: str) -> int:
        """``REGION``, ``REGION+OFF`` or a number."""
        base, plus, off = text.partition("+")
        if base in self.regions:
            return self.regions[base] + (parse_size(cmd.line, off) if plus else 0)
        if plus or not base[:1].isdigit():
            known = ", ".join(sorted(self.regions)) or "none yet"
            raise ScenarioError(cmd.line, f"unknown region {base!r} (regions: {known})")
        return parse_size(cmd.line, text)

    def fail(self, message: str) -> None:
        self.failed = message

    def execute(self, cmd: Command) -> str:
        m, a, o = self.m, cmd.args, cmd.opts
        verb = cmd.verb
        if verb == "file":
            m.create_file(a[0], parse_size(cmd.line, a[1]), parse_int(cmd.line, o.get("order", "0"), "order"),
                          parse_int(cmd.line, o.get("fill", "0"), "fill"), shmem=len(a) == 3)
            return "ok"
        if verb == "spawn":
            return _pid(m.spawn(a[0]))
        if verb == "fork":
            return _pid(m.fork(a[0], a[1]))
        if verb == "vfork":
            return _pid(m.clone_vm(a[0], a[1], vfork=True))
        if verb == "thread":
            return _pid(m.clone_vm(a[0], a[1]))
        if verb == "exec":
            return _rc(m.execve(a[0]))
        if verb == "exit":
            return _rc(m.exit(a[0]))
        if verb in ("grab", "mmget"):
            return _rc(m.mm_hold(a[0], a[1], users=verb == "mmget"))
        if verb == "release":
            return _rc(m.mm_release(a[0]))
        if verb == "mmap":
            return self._mmap(cmd)
        if verb == "munmap":
            return _rc(m.munmap(a[0], self.addr(cmd, a[1]), parse_size(cmd.line, a[2])))
        if verb == "mprotect":
            read, write = PROTS[a[3]]
            return _rc(m.mprotect(a[0], self.addr(cmd, a[1]), parse_size(cmd.line, a[2]), read, write))
        if verb == "mremap":
            return _rc(m.mremap(a[0], self.addr(cmd, a[1]), parse_size(cmd.line, a[2]), self.addr(cmd, a[3])))
        if verb == "madvise":
            return _rc(m.madvise(a[0], self.addr(cmd, a[1]), parse_size(cmd.line, a[2]), a[3]))
        if verb == "read":
            return self._read(cmd)
        if verb == "write":
            value = parse_value(cmd.line, a[-1])
            addr = self.addr(cmd, a[1])
            if len(a) == 4:
                size = parse_size(cmd.line, a[2])
                if len(value) != 1:
                    raise ScenarioError(cmd.line, "write with a SIZE needs a single byte value to fill with")
                value = value * size
            ok = m.write(a[0], addr, value)
            return f"wrote {len(value)} bytes" if ok else "SIGSEGV"
        if verb in ("pin", "vmsplice"):
            addr, size = self.addr(cmd, a[2]), parse_size(cmd.line, a[3])
            if verb == "vmsplice":
                return _count(m.vmsplice(a[0], a[1], addr, size))
            words = set(a[4:])
            return _count(m.pin(a[0], a[1], addr, size, write="rw" in words, longterm="short" not in words,
                                fast="fast" in words))
        if verb == "unpin":
            return _rc(m.unpin(a[0]))
        if verb == "readpin":
            data = m.read_pinned(a[0])
            self._expect_bytes(cmd, data)
            return _show(data)
        if verb == "clear_refs":
            return _rc(m.clear_refs(a[0]))
        if verb == "expect":
            return self._expect(cmd)
        if verb == "stats":
            task = m.task(a[0])
            roll = smaps_rollup(m, task.mm)
            return " ".join(f"{k}={v}kB" for k, v in roll.as_kb().items())
        if verb == "pagemap":
            task = m.task(a[0])
            addr = self.addr(cmd, a[1])
            size = parse_size(cmd.line, a[2]) if len(a) == 3 else PAGE_SIZE
            return _pagemap_text(m, task.mm, addr >> PAGE_SHIFT, (addr + size - 1 >> PAGE_SHIFT) + 1)
        if verb == "check":
            problems = m.check()
            if problems:
                raise OracleViolation("; ".join(problems))
            return "isolation oracle and invariants: ok"
        raise ScenarioError(cmd.line, f"unhandled command {verb!r}")  # pragma: no cover

    def _mmap(self, cmd: Command) -> str:
        m, a, o = self.m, cmd.args, cmd.opts
        name = a[1]
        shared = "shared" in a[3:]
        file = o.get("file") or o.get("shmem")
        if "shmem" in o and o["shmem"] in m.files and not m.files[o["shmem"]].shmem:
            raise ScenarioError(cmd.line, f"{o['shmem']!r} is a regular file, not shmem")
        read, write = PROTS[o.get("prot", "rw")]
        thp = parse_orders(cmd.line, o["thp"]) if "thp" in o else None
        at = self.addr(cmd, o["at"]) if "at" in o else None
        addr = m.mmap(a[0], parse_size(cmd.line, a[2]), file=file, offset=parse_size(cmd.line, o.get("offset", "0")),
                      shared=shared, read=read, write=write, addr=at, thp=thp, label=name)
        if addr < 0:
            return f"-{errno_name(addr)}"
        self.regions[name] = addr
        return f"{name} = {addr:#x}"

    def _read(self, cmd: Command) -> str:
        a = cmd.args
        size = parse_size(cmd.line, a[2]) if len(a) == 3 else 1
        if size <= 0:
            raise ScenarioError(cmd.line, "read: SIZE must be positive")
        data = self.m.read(a[0], self.addr(cmd, a[1]), size)
        if data is None:
            if "expect" in cmd.opts:
                self.fail("expected data but the read got SIGSEGV")
            return "SIGSEGV"
        self._expect_bytes(cmd, data)
        return _show(data)

    def _expect_bytes(self, cmd: Command, data: bytes) -> None:
        if "expect" not in cmd.opts:
            return
        want = parse_value(cmd.line, cmd.opts["expect"])
        if len(want) == 1:
            want = want * len(data)
        if data != want:
            self.fail(f"read {_show(data)}, expected {_show(want)}")

    def _expect(self, cmd: Command) -> str:
        m, a, o = self.m, cmd.args, cmd.opts
        checks: list[str] = []
        if "reuses" in o or "copies" in o:
            for key, counter in (("reuses", "cow reuse"), ("copies", "cow copy")):
                if key in o:
                    want, got = parse_int(cmd.line, o[key], key), m.counters[counter]
                    checks.append(f"{key}={got}")
                    if want != got:
                        self.fail(f"expected {key}={want}, counted {got}")
        if "last_cow" in o or "rule" in o:
            last: CowDecision | None = m.cow_decisions[-1] if m.cow_decisions else None
            if last is None:
                self.fail("no copy-on-write decision was taken yet")
                return "no CoW decision yet"
            if "last_cow" in o and last.outcome != o["last_cow"]:
                self.fail(f"last CoW decision was {last.outcome} ({last.rule.value}), expected {o['last_cow']}")
            if "rule" in o and o["rule"].lower() not in last.rule.value.lower():
                self.fail(f"last CoW rule was {last.rule.value!r}, expected one containing {o['rule']!r}")
            checks.append(f"last CoW: {last.outcome} ({last.rule.value})")
        if "shared" in o or "exclusive" in o:
            if len(a) != 2:
                raise ScenarioError(cmd.line, "expect shared=/exclusive= needs TASK ADDR")
            task = m.task(a[0])
            vpn = self.addr(cmd, a[1]) >> PAGE_SHIFT
            hit = m.lookup(task.mm, vpn)
            if hit is None or hit[0].is_zero:
                self.fail(f"nothing but {'the zero page' if hit else 'no page'} is mapped at {a[1]}")
                return "not mapped"
            if "shared" in o:
                got = folio_maybe_mapped_shared(hit[0].core())
                checks.append(f"{hit[0].name} maybe shared: {'yes' if got else 'no'}")
                if got != (o["shared"] == "yes"):
                    self.fail(f"folio_maybe_mapped_shared({hit[0].name}) is {got}, expected {o['shared']}")
            if "exclusive" in o:
                got = pagemap(m, task.mm, vpn).exclusive
                checks.append(f"pagemap exclusive: {'yes' if got else 'no'}")
                if got != (o["exclusive"] == "yes"):
                    self.fail(f"pagemap PM_MMAP_EXCLUSIVE is {got}, expected {o['exclusive']}")
        elif a:
            raise ScenarioError(cmd.line, "expect with TASK ADDR needs shared= or exclusive=")
        if not checks and self.failed is None:
            raise ScenarioError(cmd.line, f"expect: nothing to check (usage: {VERBS['expect'][3]})")
        return "; ".join(checks)


def _pid(value: int) -> str:
    return f"pid {value}" if value >= 0 else f"-{errno_name(value)}"


def _rc(value: int) -> str:
    return "0" if value == 0 else f"-{errno_name(value)}"


def _count(value: int) -> str:
    return f"{value} page(s)" if value >= 0 else f"-{errno_name(value)}"


def _show(data: bytes) -> str:
    if data and data.count(data[0]) == len(data):
        return f"{data[0]:#04x} x {len(data)}"
    try:
        text = data.decode()
        if text.isprintable():
            return repr(text)
    except UnicodeDecodeError:
        pass
    return data[:16].hex() + ("..." if len(data) > 16 else "")

