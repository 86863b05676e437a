"""Runs scenario lines as real processes: one agent process (or thread) per scenario task.

The driver listens on a Unix socket in a private directory; every agent connects there and says which task it
is. A scenario line becomes one request to the task's agent (``fork`` makes the agent fork, and the child
connects as the new task). Mappings go at the addresses the simulator chose for the same line, so both sides
are compared address by address. The driver is the child subreaper of everything it starts, signals only
those pids, and kills and reaps them all when it closes.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from foliosim.host import syscalls as sc
from foliosim.host.errors import HostError
from foliosim.live.agent import ANNOUNCE_ENV
from foliosim.live.plan import LivePlan
from foliosim.vm.scenario import PROTS, Command, parse_size, parse_value

PR_SET_CHILD_SUBREAPER = 36
MADVICE = {"dontneed": sc.MADV_DONTNEED, "cold": sc.MADV_COLD, "pageout": sc.MADV_PAGEOUT,
           "dontfork": sc.MADV_DONTFORK, "dofork": sc.MADV_DOFORK, "hugepage": sc.MADV_HUGEPAGE,
           "nohugepage": sc.MADV_NOHUGEPAGE}
#: how long an agent may take to answer (start-up of a fresh Python included)
TIMEOUT = 30.0


class LiveRunError(HostError):
    """A live task did something the scenario did not expect (an agent died, a request failed)."""


@dataclass(slots=True)
class LiveTask:
    """One scenario task on the live side: a process (tid == tgid) or a thread of one."""

    name: str
    tid: int
    tgid: int
    sock: socket.socket
    buf: bytes = b""
    alive: bool = True
    is_thread: bool = False


@dataclass(slots=True)
class LiveDriver:
    """The real processes behind a scenario's tasks."""

    plan: LivePlan
    announce: bool = False
    tasks: dict[str, LiveTask] = field(default_factory=dict)
    handles: dict[str, str] = field(default_factory=dict)  # pin/pipe name -> the task holding it
    files: dict[str, str] = field(default_factory=dict)  # scenario file name -> path the agents open
    regions: dict[str, int] = field(default_factory=dict)
    _dir: str = ""
    _listener: socket.socket | None = None
    _spawned: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _fds: list[int] = field(default_factory=list)
    _pids: set[int] = field(default_factory=set)

    # ------------------------------------------------------------------ lifetime
    def start(self) -> None:
        """Make the socket, become the subreaper of everything started, create the scenario's files."""
        self._dir = tempfile.mkdtemp(prefix="foliosim-live-")
        path = os.path.join(self._dir, "agents.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(16)
        self._listener.settimeout(TIMEOUT)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        for name, (size, shmem, order, fill) in self.plan.files.items():
            self._create_file(name, size, shmem, fill, order)

    def _create_file(self, name: str, size: int, shmem: bool, fill: int, order: int) -> None:
        if not shmem:  # make_plan() refuses regular files: their page cache has no exact live equivalent yet
            raise LiveRunError(f"file {name!r}: only shmem objects run live")
        fd = self._create_shmem(name, size, fill, order)
        self.files[name] = f"/proc/{os.getpid()}/fd/{fd}"

    def _create_shmem(self, name: str, size: int, fill: int, order: int) -> int:
        """A shmem object cached in folios of ``order``, for the agents to open and map.

        Per-size shmem folio orders (hugepages-*/shmem_enabled) apply to anonymous shared memory only
        (mm/shmem.c shmem_allowable_huge_orders(): other shmem files follow the top-level setting), so the
        object is made as MAP_SHARED|MAP_ANONYMOUS here, aligned to its folio size, filled page by page (which
        allocates every folio), reopened through /proc/self/map_files, and unmapped before anything else runs.
        """
        align = sc.PAGE_SIZE << order
        raw = sc.mmap(0, size + align, sc.PROT_READ | sc.PROT_WRITE, sc.MAP_SHARED | sc.MAP_ANONYMOUS)
        start = (raw + align - 1) // align * align
        try:
            sc.munmap(raw, start - raw) if start > raw else None
            sc.munmap(start + size, raw + align - start)
            sc.fill(start, fill, size)
            fd = os.open(f"/proc/self/map_files/{start:x}-{start + size:x}", os.O_RDWR)
        finally:
            sc.munmap(start, size)
        self._fds.append(fd)
        return fd

    def close(self) -> None:
        """Kill every process started (by pid), reap them, remove the socket directory and the files."""
        for task in self.tasks.values():
            with contextlib.suppress(OSError):
                task.sock.close()
        for pid in sorted(self._pids):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for proc in self._spawned:
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        self._reap()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _reap(self) -> None:
        """Collect exited children, adopted orphans included (we are their subreaper)."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    # ------------------------------------------------------------------ agents
    def _accept(self, name: str) -> LiveTask:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except TimeoutError:
            raise LiveRunError(f"task {name}: its agent did not connect within {TIMEOUT:.0f} s") from None
        conn.settimeout(TIMEOUT)
        task = LiveTask(name, 0, 0, conn)
        hello = self._recv(task)
        if hello.get("hello") != name:
            raise LiveRunError(f"expected task {name} to connect, got {hello!r}")
        task.tid, task.tgid = int(hello["tid"]), int(hello["pid"])
        task.is_thread = task.tid != task.tgid
        self._pids.add(task.tgid)
        self.tasks[name] = task
        return task

    def _recv(self, task: LiveTask) -> dict[str, Any]:
        while b"\n" not in task.buf:
            try:
                chunk = task.sock.recv(65536)
            except TimeoutError:
                raise LiveRunError(f"task {task.name}: no answer within {TIMEOUT:.0f} s") from None
            if not chunk:
                raise LiveRunError(f"task {task.name}: its process went away (pid {task.tgid})")
            task.buf += chunk
        line, _, task.buf = task.buf.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def request(self, name: str, op: str, /, **args: Any) -> dict[str, Any]:
        task = self.task(name)
        task.sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        reply = self._recv(task)
        if not reply.get("ok"):
            raise LiveRunError(f"task {name}: {op} failed: {reply.get('error')}")
        return reply

    def task(self, name: str) -> LiveTask:
        task = self.tasks.get(name)
        if task is None or not task.alive:
            raise LiveRunError(f"no live task {name!r}")
        return task

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[ANNOUNCE_ENV] = "1" if self.announce else "0"
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env

    def _sock_path(self) -> str:
        return os.path.join(self._dir, "agents.sock")

    def spawn(self, name: str) -> LiveTask:
        proc = subprocess.Popen([sys.executable, "-m", "foliosim.live.agent", self._sock_path(), name],
                                env=self._env(), stdin=subprocess.DEVNULL)
        self._spawned.append(proc)
        self._pids.add(proc.pid)
        return self._accept(name)

    def _wait_gone(self, task: LiveTask) -> None:
        """Wait until the task's exit has released its memory (the thread or process is gone or a zombie)."""
        path = f"/proc/{task.tgid}/task/{task.tid}/stat" if task.is_thread else f"/proc/{task.tgid}/stat"
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            self._reap()
            try:
                with open(path) as fh:
                    state = fh.read().rpartition(")")[2].split()[0]
            except (FileNotFoundError, ProcessLookupError, IndexError):
                return
            if state in ("Z", "X"):
                return
            time.sleep(0.002)
        raise LiveRunError(f"task {task.name} (pid {task.tid}) did not exit within {TIMEOUT:.0f} s")

    # ------------------------------------------------------------------ scenario lines
    def addr(self, cmd: Command, text: str) -> int:
        base, plus, off = text.partition("+")
        if base in self.regions:
            return self.regions[base] + (parse_size(cmd.line, off) if plus else 0)
        return parse_size(cmd.line, text)

    def execute(self, cmd: Command, sim_result: str) -> tuple[str, dict[str, Any]]:
        """Run one scenario line; returns its result in the simulator's words and the raw reply."""
        a, verb = cmd.args, cmd.verb
        if verb in ("option", "file", "expect", "stats", "pagemap", "check"):
            return "-", {}
        if verb == "spawn":
            t = self.spawn(a[0])
            return f"pid {t.tgid}", {}
        if verb in ("fork", "thread"):
            reply = self.request(a[0], verb, child=a[1])
            child = self._accept(a[1])
            return f"pid {child.tid}", reply
        if verb == "exec":
            task = self.task(a[0])
            self.request(a[0], "exec")
            task.sock.close()
            del self.tasks[a[0]]
            new = self._accept(a[0])
            if new.tgid != task.tgid:
                raise LiveRunError(f"task {a[0]}: exec came back as pid {new.tgid}, not {task.tgid}")
            return "0", {}
        if verb == "exit":
            task = self.task(a[0])
            self.request(a[0], "exit")
            task.alive = False
            task.sock.close()
            self._wait_gone(task)
            for handle, holder in list(self.handles.items()):
                if holder == a[0] and not task.is_thread:
                    del self.handles[handle]
            return "0", {}
        if verb == "mmap":
            return self._mmap(cmd, sim_result)
        if verb == "munmap":
            return self._rc(a[0], "munmap", addr=self.addr(cmd, a[1]), length=parse_size(cmd.line, a[2]))
        if verb == "mprotect":
            r, w = PROTS[a[3]]
            prot = (sc.PROT_READ if r else 0) | (sc.PROT_WRITE if w else 0)
            return self._rc(a[0], "mprotect", addr=self.addr(cmd, a[1]), length=parse_size(cmd.line, a[2]), prot=prot)
        if verb == "mremap":
            return self._rc(a[0], "mremap", addr=self.addr(cmd, a[1]), length=parse_size(cmd.line, a[2]),
                            new_addr=self.addr(cmd, a[3]))
        if verb == "madvise":
            return self._rc(a[0], "madvise", addr=self.addr(cmd, a[1]), length=parse_size(cmd.line, a[2]),
                            advice=MADVICE[a[3]])
        if verb == "write":
            value = parse_value(cmd.line, a[-1])
            length = parse_size(cmd.line, a[2]) if len(a) == 4 else len(value)
            reply = self.request(a[0], "write", addr=self.addr(cmd, a[1]), length=length, data=value.hex())
            return str(reply["result"]), reply
        if verb == "read":
            size = parse_size(cmd.line, a[2]) if len(a) == 3 else 1
            reply = self.request(a[0], "read", addr=self.addr(cmd, a[1]), length=size)
            return _data_result(reply), reply
        if verb in ("pin", "vmsplice"):
            reply = self.request(a[0], verb, name=a[1], addr=self.addr(cmd, a[2]), length=parse_size(cmd.line, a[3]))
            self.handles[a[1]] = a[0]
            return str(reply["result"]), reply
        if verb in ("unpin", "readpin"):
            if a[0] not in self.handles:
                raise LiveRunError(f"no live pin or pipe {a[0]!r}")
            holder = self.handles[a[0]]
            reply = self.request(holder, verb, name=a[0])
            if verb == "unpin":
                del self.handles[a[0]]
                return "0", reply
            return _data_result(reply), reply
        raise LiveRunError(f"line {cmd.line}: {verb} has no live equivalent")

    def _rc(self, task: str, op: str, **args: Any) -> tuple[str, dict[str, Any]]:
        try:
            reply = self.request(task, op, **args)
        except LiveRunError as exc:
            return _errno_result(str(exc)), {}
        if op == "mremap":
            for name, base in list(self.regions.items()):
                if base == args["addr"]:
                    self.regions[name] = args["new_addr"]
        return "0", reply

    def _mmap(self, cmd: Command, sim_result: str) -> tuple[str, dict[str, Any]]:
        a, o = cmd.args, cmd.opts
        name, length = a[1], parse_size(cmd.line, a[2])
        shared = "shared" in a[3:]
        read, write = PROTS[o.get("prot", "rw")]
        prot = (sc.PROT_READ if read else 0) | (sc.PROT_WRITE if write else 0)
        flags = sc.MAP_SHARED if shared else sc.MAP_PRIVATE
        path = ""
        fname = o.get("file") or o.get("shmem")
        if fname:
            path = self.files[fname]
        else:
            flags |= sc.MAP_ANONYMOUS
        if "at" in o:
            addr, flags = self.addr(cmd, o["at"]), flags | sc.MAP_FIXED
        else:
            # the simulator's address for the same line ("NAME = 0x..."), not replacing anything
            _, eq, value = sim_result.partition(" = ")
            if not eq:
                return sim_result, {}
            addr, flags = int(value, 16), flags | sc.MAP_FIXED_NOREPLACE
        advice = [sc.MADV_NOHUGEPAGE] if o.get("thp") in ("never", "none") else []
        try:
            reply = self.request(a[0], "mmap", addr=addr, length=length, prot=prot, flags=flags, path=path,
                                 shared=shared, offset=parse_size(cmd.line, o.get("offset", "0")), advice=advice)
        except LiveRunError as exc:
            return _errno_result(str(exc)), {}
        got = int(reply["addr"])
        self.regions[name] = got
        return f"{name} = {got:#x}", reply

    def live_tgids(self) -> dict[int, list[str]]:
        """Every live process and its live task names (threads share their process's MM)."""
        out: dict[int, list[str]] = {}
        for t in self.tasks.values():
            if t.alive:
                out.setdefault(t.tgid, []).append(t.name)
        return out


def _data_result(reply: dict[str, Any]) -> str:
    from foliosim.vm.scenario import _show

    if reply.get("segv"):
        return "SIGSEGV"
    return _show(bytes.fromhex(reply["data"]))


def _errno_result(message: str) -> str:
    for name in ("EINVAL", "ENOMEM", "EFAULT", "EBUSY", "EPERM", "EEXIST", "EAGAIN"):
        if name in message:
            return f"-{name}"
    return f"error: {message}"
