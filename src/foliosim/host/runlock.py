"""The machine-wide lock that serialises foliosim live runs (fcntl.flock on /run/foliosim/live.lock).

Live experiments and every change to the global THP/mTHP sysfs knobs must hold this
lock, because other developers run live experiments on the same machine. The lock is
one per process and per path: nested :class:`LiveLock` objects in one process share
a depth counter, so a :class:`~foliosim.host.thp.ThpGuard` inside a ``LiveLock``
does not deadlock against its own process.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from dataclasses import dataclass
from types import TracebackType

from foliosim.host.errors import HostError, os_error

#: Directory for foliosim's machine-wide run state.
RUN_DIR = "/run/foliosim"
#: The lock file every live run holds exclusively.
LOCK_PATH = RUN_DIR + "/live.lock"

_POLL_S = 0.05


@dataclass(slots=True)
class _Held:
    """This process's hold on one lock file: the open descriptor and the nesting depth."""

    fd: int
    depth: int


_mutex = threading.RLock()
_held: dict[str, _Held] = {}


def _reset_after_fork() -> None:
    """In a forked child, forget (close, never unlock) the parent's holds: the parent still owns the lock."""
    for held in _held.values():
        with contextlib.suppress(OSError):
            os.close(held.fd)
    _held.clear()


os.register_at_fork(after_in_child=_reset_after_fork)


def holder_pid(path: str = LOCK_PATH) -> int | None:
    """The pid the current holder wrote into ``path``, or None if unreadable or empty."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def held_here(path: str = LOCK_PATH) -> bool:
    """Whether this process currently holds the lock at ``path``."""
    with _mutex:
        return os.path.abspath(path) in _held


class LiveLock:
    """Exclusive flock on ``path`` (default /run/foliosim/live.lock), reentrant within one process.

    ``timeout`` 0 (the default) fails at once with a HostError naming the holder's
    pid; a positive timeout polls until then. The holder writes its pid into the file.
    """

    def __init__(self, path: str = LOCK_PATH, timeout: float = 0.0) -> None:
        self.path = os.path.abspath(path)
        self.timeout = timeout
        self._entered = 0

    def acquire(self) -> None:
        """Take the lock (or deepen this process's hold on it)."""
        with _mutex:
            held = _held.get(self.path)
            if held is not None:
                held.depth += 1
                self._entered += 1
                return
            fd = self._lock_file()
            _held[self.path] = _Held(fd, 1)
            self._entered += 1

    def release(self) -> None:
        """Undo one :meth:`acquire`; the flock is dropped when the process-wide depth reaches 0."""
        with _mutex:
            if self._entered == 0:
                raise HostError(f"{self.path}: release of a LiveLock that this object does not hold")
            held = _held[self.path]
            self._entered -= 1
            held.depth -= 1
            if held.depth > 0:
                return
            del _held[self.path]
            try:
                os.ftruncate(held.fd, 0)
                fcntl.flock(held.fd, fcntl.LOCK_UN)
            except OSError as exc:
                raise os_error(f"{self.path}: unlock", exc) from None
            finally:
                os.close(held.fd)

    @property
    def held(self) -> bool:
        """Whether this object currently holds the lock."""
        return self._entered > 0

    def __enter__(self) -> LiveLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def _lock_file(self) -> int:
        """Open, flock and stamp the lock file; retry while busy until the timeout."""
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise os_error(f"mkdir {directory}", exc) from None
        deadline = time.monotonic() + max(self.timeout, 0.0)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise os_error(f"open {self.path}", exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    raise os_error(f"flock {self.path}", exc) from None
                if time.monotonic() >= deadline:
                    pid = holder_pid(self.path)
                    who = f"pid {pid}" if pid is not None else "pid unknown"
                    raise HostError(f"another foliosim live run ({who}) holds {self.path}") from None
                time.sleep(_POLL_S)
                continue
            # The file may have been unlinked and recreated while we waited: lock the one at the path.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except OSError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            except OSError as exc:
                os.close(fd)
                raise os_error(f"write {self.path}", exc) from None
            return fd
