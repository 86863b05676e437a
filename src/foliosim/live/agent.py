"""The process behind one scenario task on the live kernel: it makes the task's system calls and memory accesses.

``foliosim live`` starts one agent per ``spawn``; ``fork`` is a real fork() of the agent, ``thread`` a real thread,
``exec`` a real execve() of a fresh agent and ``exit`` a real exit. Each agent (each thread of one) holds its own
connection to the driver: a Unix stream socket carrying one JSON object per line, requests from the driver and one
reply each. Memory is touched only by these processes' own loads and stores, so every page fault the kernel takes
is a user fault of the task (``exceptions:page_fault_user``) as the scenario describes it.

The agent imports nothing heavy (no click, rich or model): its start-up and its forks stay cheap, and nothing but
the scenario's own accesses touches the scenario's memory.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from typing import Any

from foliosim.host import syscalls as sc
from foliosim.host.errors import HostError, HostUnavailable

#: how the driver tells an agent to announce its MM id to the BPF folio reader (set when BPF is in use)
ANNOUNCE_ENV = "FOLIOSIM_LIVE_ANNOUNCE"


class _Agent:
    """State shared by the threads of one agent process: pins and pipes it holds, its socket path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.handles: dict[str, sc.IoUringPin | sc.SplicePipe] = {}
        self.lock = threading.Lock()


def _announce() -> None:
    if os.environ.get(ANNOUNCE_ENV) == "1":
        from foliosim.host.bpf import announce_mm

        announce_mm()


def _connect(path: str, name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    hello = {"hello": name, "pid": os.getpid(), "tid": threading.get_native_id()}
    sock.sendall(json.dumps(hello).encode() + b"\n")
    return sock


def _serve(agent: _Agent, name: str, sock: socket.socket, is_thread: bool) -> None:
    """Answer the driver's requests on ``sock`` until told to exit (or the driver goes away)."""
    reader = sock.makefile("rb")
    while True:
        line = reader.readline()
        if not line:
            if is_thread:
                return
            os._exit(0)
        req = json.loads(line)
        op = req.get("op", "")
        if op == "exit":
            _reply(sock, {"ok": True, "result": "0"})
            if is_thread:
                sock.close()
                return
            os._exit(0)
        if op == "exec":
            _reply(sock, {"ok": True, "result": "0"})
            argv = [sys.executable, "-m", "foliosim.live.agent", agent.path, name]
            os.execv(sys.executable, argv)
        if op == "fork":
            _fork(agent, sock, req["child"])
            continue
        if op == "thread":
            _thread(agent, sock, req["child"])
            continue
        try:
            result = _do(agent, op, req)
            _reply(sock, {"ok": True, **result})
        except (HostError, HostUnavailable, OSError, ValueError, KeyError) as exc:
            _reply(sock, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def _reply(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall(json.dumps(obj).encode() + b"\n")


def _fork(agent: _Agent, sock: socket.socket, child: str) -> None:
    pid = os.fork()
    if pid == 0:
        # The child: the parent's connection belongs to the parent; pins and pipes stay with the parent too.
        # Close the child's copies of their fds (a pipe's page references would otherwise outlive the parent's
        # unpin) without unregistering anything.
        sock.close()
        for handle in agent.handles.values():
            for fd in (getattr(handle, "fd", -1), getattr(handle, "_memfd", -1),
                       getattr(handle, "read_fd", -1), getattr(handle, "write_fd", -1)):
                if fd >= 0:
                    os.close(fd)
        agent.handles = {}
        agent.lock = threading.Lock()
        _announce()
        new = _connect(agent.path, child)
        _serve(agent, child, new, is_thread=False)
        os._exit(0)
    _reply(sock, {"ok": True, "result": f"pid {pid}", "pid": pid})


def _thread(agent: _Agent, sock: socket.socket, child: str) -> None:
    started = threading.Event()
    tid: list[int] = []

    def body() -> None:
        tid.append(threading.get_native_id())
        conn = _connect(agent.path, child)
        started.set()
        _serve(agent, child, conn, is_thread=True)

    threading.Thread(target=body, name=child, daemon=True).start()
    started.wait()
    _reply(sock, {"ok": True, "result": f"pid {tid[0]}", "pid": tid[0]})


def _do(agent: _Agent, op: str, req: dict[str, Any]) -> dict[str, Any]:
    """One request other than the lifecycle ones; returns the reply's fields."""
    if op == "ping":
        return {"result": "pong"}
    if op == "announce":
        _announce()
        return {"result": "announced"}
    if op == "mmap":
        fd = -1
        if req.get("path"):
            fd = os.open(req["path"], os.O_RDWR if req["prot"] & sc.PROT_WRITE or not req["shared"] else os.O_RDONLY)
        try:
            addr = sc.mmap(req["addr"], req["length"], req["prot"], req["flags"], fd, req.get("offset", 0))
        finally:
            if fd >= 0:
                os.close(fd)
        for advice in req.get("advice", ()):
            sc.madvise(addr, req["length"], advice)
        return {"result": f"{addr:#x}", "addr": addr}
    if op == "munmap":
        sc.munmap(req["addr"], req["length"])
        return {"result": "0"}
    if op == "mprotect":
        sc.mprotect(req["addr"], req["length"], req["prot"])
        return {"result": "0"}
    if op == "mremap":
        addr = sc.mremap(req["addr"], req["length"], req["length"], sc.MREMAP_MAYMOVE | sc.MREMAP_FIXED,
                         req["new_addr"])
        return {"result": "0", "addr": addr}
    if op == "madvise":
        sc.madvise(req["addr"], req["length"], req["advice"])
        return {"result": "0"}
    if op == "write":
        data = bytes.fromhex(req["data"])
        length = req["length"]
        if not sc.access_ok(req["addr"], length, True):
            return {"result": "SIGSEGV", "segv": True}
        if len(data) == 1:
            sc.fill(req["addr"], data[0], length)
        else:
            sc.store(req["addr"], data)
        return {"result": f"wrote {length} bytes"}
    if op == "read":
        if not sc.access_ok(req["addr"], req["length"], False):
            return {"result": "SIGSEGV", "segv": True}
        return {"result": "read", "data": sc.load(req["addr"], req["length"]).hex()}
    if op == "pin":
        with agent.lock:
            if req["name"] in agent.handles:
                raise ValueError(f"a pin or pipe named {req['name']!r} already exists")
            agent.handles[req["name"]] = sc.IoUringPin(req["addr"], req["length"], per_page=True)
        first, last = req["addr"] >> 12, (req["addr"] + req["length"] - 1) >> 12
        return {"result": f"{last - first + 1} page(s)"}
    if op == "vmsplice":
        with agent.lock:
            if req["name"] in agent.handles:
                raise ValueError(f"a pin or pipe named {req['name']!r} already exists")
            pipe = sc.SplicePipe(want=16 * sc.PAGE_SIZE)  # a default pipe: 16 slots, as the simulator models
            agent.handles[req["name"]] = pipe
        done = pipe.vmsplice(req["addr"], req["length"])
        return {"result": f"{(done + sc.PAGE_SIZE - 1) // sc.PAGE_SIZE} page(s)"}
    if op == "unpin":
        with agent.lock:
            handle = agent.handles.pop(req["name"])
        handle.close()
        return {"result": "0"}
    if op == "readpin":
        handle = agent.handles[req["name"]]
        data = handle.read_back() if isinstance(handle, sc.IoUringPin) else handle.peek()
        return {"result": "read", "data": data.hex()}
    raise ValueError(f"unknown request {op!r}")


def main(argv: list[str]) -> None:
    """``python -m foliosim.live.agent SOCKET NAME``: connect to the driver as task NAME and serve it."""
    path, name = argv[0], argv[1]
    # Children that exit are reaped at once (their MMs go away as in the scenario); the driver is the subreaper
    # of orphans and signals nothing but the pids it knows.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    agent = _Agent(path)
    _announce()
    sock = _connect(path, name)
    _serve(agent, name, sock, is_thread=False)


if __name__ == "__main__":
    main(sys.argv[1:])
