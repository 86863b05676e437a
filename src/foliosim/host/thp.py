"""THP/mTHP sysfs settings: read them, derive the allowed folio orders, change them with guaranteed restore.

mm/huge_memory.c exposes /sys/kernel/mm/transparent_hugepage/enabled and
shmem_enabled (mm/shmem.c), and per size hugepages-<N>kB/enabled and
hugepages-<N>kB/shmem_enabled; each lists its choices with the current one in
brackets. These files are global to the machine: :class:`ThpGuard` changes them only
while holding the live lock (:mod:`foliosim.host.runlock`), leaves a state file so a
run killed with SIGKILL can be repaired by :func:`restore_leftover`, and restores the
old values on every other exit path (return, exception, SIGINT, SIGTERM, SIGHUP).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType, MappingProxyType, TracebackType
from typing import Any

from foliosim.host.errors import HostError, os_error
from foliosim.host.runlock import RUN_DIR, LiveLock

THP_DIR = "/sys/kernel/mm/transparent_hugepage"
#: Old values of the files a live ThpGuard changed; present only while settings differ from them.
STATE_PATH = RUN_DIR + "/thp-restore.json"
PAGE_SIZE_KB = 4
#: HPAGE_PMD_ORDER on x86-64 with 4 KiB pages.
PMD_ORDER = 9
#: The choice files a ThpGuard may write (each lists its choices with the current one bracketed).
CHOICE_FILES = frozenset({"enabled", "shmem_enabled", "defrag"})
#: Signals during which a ThpGuard restores the settings before the process goes on or dies.
GUARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


def order_of_size_kb(size_kb: int) -> int:
    """The folio order of an mTHP size in KiB (``hugepages-64kB`` is order 4)."""
    pages = size_kb // PAGE_SIZE_KB
    if size_kb <= 0 or size_kb % PAGE_SIZE_KB or pages & (pages - 1):
        raise HostError(f"{size_kb} kB is not a power-of-two multiple of the {PAGE_SIZE_KB} kB page")
    return pages.bit_length() - 1


def size_kb(order: int) -> int:
    """The size in KiB of a folio of ``order`` (the N of ``hugepages-<N>kB``)."""
    if order < 0:
        raise HostError(f"negative folio order {order}")
    return PAGE_SIZE_KB << order


def anon_enabled_path(order: int) -> str:
    """The per-size anonymous THP file for ``order`` (mm/huge_memory.c thpsize_enabled)."""
    return f"{THP_DIR}/hugepages-{size_kb(order)}kB/enabled"


def shmem_enabled_path(order: int) -> str:
    """The per-size shmem THP file for ``order`` (mm/shmem.c thpsize_shmem_enabled)."""
    return f"{THP_DIR}/hugepages-{size_kb(order)}kB/shmem_enabled"


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except OSError as exc:
        raise os_error(path, exc) from None


def khugepaged_collapsed(root: str = THP_DIR) -> int | None:
    """How many huge pages khugepaged has made by collapsing since boot (``khugepaged/pages_collapsed``, read
    only: one per PMD range collapsed, counted in mm/khugepaged.c khugepaged_scan_mm_slot()), or None where the
    file is missing or unreadable.

    khugepaged works in the background, on any process with a VMA it may collapse: a live run reads this count
    around each step to tell when the machine's folios may have changed under it (MADV_COLLAPSE does not count).
    """
    try:
        with open(f"{root}/khugepaged/pages_collapsed", encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def read_choice(path: str) -> tuple[str, tuple[str, ...]]:
    """(current value, offered values) of a sysfs choice file such as ``always [madvise] never``."""
    text = _read_text(path)
    tokens = text.split()
    current = [t[1:-1] for t in tokens if t.startswith("[") and t.endswith("]")]
    if len(current) != 1:
        raise HostError(f"{path}: not a choice file with one bracketed value: {text.strip()!r}")
    return current[0], tuple(t.strip("[]") for t in tokens)


def _resolve(path: str) -> str:
    """An absolute, normalised THP choice-file path; refuses anything outside the THP sysfs directory."""
    full = os.path.normpath(path if os.path.isabs(path) else os.path.join(THP_DIR, path))
    rel = full[len(THP_DIR) + 1:].split("/") if full.startswith(THP_DIR + "/") else []
    top_level = len(rel) == 1 and rel[0] in CHOICE_FILES
    per_size = len(rel) == 2 and rel[0].startswith("hugepages-") and rel[1] in ("enabled", "shmem_enabled")
    if not (top_level or per_size):
        raise HostError(f"{path}: not a THP choice file ({THP_DIR}/{{{','.join(sorted(CHOICE_FILES))}}} or "
                        f"{THP_DIR}/hugepages-<N>kB/{{enabled,shmem_enabled}})")
    return full


def _write(path: str, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise os_error(f"open {path}", exc) from None
    try:
        os.write(fd, value.encode("ascii"))
    except OSError as exc:
        raise os_error(f"write {value!r} to {path}", exc) from None
    finally:
        os.close(fd)


def _describe(path: str, old: str, new: str) -> str:
    return f"{path}: {old} -> {new}"


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class ThpSettings:
    """The bracketed values of the THP sysfs files.

    ``anon`` maps a folio order to its ``hugepages-<N>kB/enabled`` value
    (always/inherit/madvise/never), ``shmem`` to its ``hugepages-<N>kB/shmem_enabled``
    value (always/inherit/within_size/advise/never). Sizes without a file are absent
    (anonymous order 1 has no ``enabled`` on x86-64).
    """

    enabled: str
    shmem_enabled: str
    anon: Mapping[int, str] = field(default_factory=dict, hash=False)
    shmem: Mapping[int, str] = field(default_factory=dict, hash=False)


def read_settings(root: str = THP_DIR) -> ThpSettings:
    """Read the top-level and every per-size THP setting."""
    anon: dict[int, str] = {}
    shmem: dict[int, str] = {}
    try:
        names = os.listdir(root)
    except OSError as exc:
        raise os_error(root, exc) from None
    for name in names:
        if not (name.startswith("hugepages-") and name.endswith("kB")):
            continue
        order = order_of_size_kb(int(name[len("hugepages-"):-2]))
        for fname, table in (("enabled", anon), ("shmem_enabled", shmem)):
            path = f"{root}/{name}/{fname}"
            if os.path.exists(path):
                table[order] = read_choice(path)[0]
    return ThpSettings(
        enabled=read_choice(f"{root}/enabled")[0],
        shmem_enabled=read_choice(f"{root}/shmem_enabled")[0],
        anon=MappingProxyType(dict(sorted(anon.items()))),
        shmem=MappingProxyType(dict(sorted(shmem.items()))),
    )


def effective_anon_orders(settings: ThpSettings, vma_hugepage: bool) -> frozenset[int]:
    """Orders a private anonymous VMA may get on a fault, as far as sysfs decides it.

    include/linux/huge_mm.h thp_vma_allowable_orders(): a size set to ``always``;
    ``madvise`` if the VMA has MADV_HUGEPAGE; ``inherit`` if the top level is
    ``always``, or ``madvise`` with MADV_HUGEPAGE. (VMA size and alignment, prctl and
    MADV_NOHUGEPAGE narrow this further.)
    """
    top_allows = settings.enabled == "always" or (settings.enabled == "madvise" and vma_hugepage)
    return frozenset(
        order
        for order, value in settings.anon.items()
        if value == "always" or (value == "madvise" and vma_hugepage) or (value == "inherit" and top_allows)
    )


def effective_shmem_orders(settings: ThpSettings, vma_hugepage: bool) -> frozenset[int]:
    """Orders a shared anonymous (shmem) VMA may get, as far as sysfs decides it.

    mm/shmem.c anon-shmem rules: top-level ``deny`` allows nothing; ``force`` allows
    exactly the ``inherit`` sizes; otherwise a size set to ``always`` or
    ``within_size``, ``advise`` with MADV_HUGEPAGE, and ``inherit`` when the top level
    is ``always`` or ``within_size`` or (``advise`` with MADV_HUGEPAGE). ``within_size``
    also needs the folio to lie within the file size, which sysfs cannot tell.
    """
    top = settings.shmem_enabled
    if top == "deny":
        return frozenset()
    if top == "force":
        return frozenset(order for order, value in settings.shmem.items() if value == "inherit")
    top_allows = top in ("always", "within_size") or (top == "advise" and vma_hugepage)
    return frozenset(
        order
        for order, value in settings.shmem.items()
        if value in ("always", "within_size")
        or (value == "advise" and vma_hugepage)
        or (value == "inherit" and top_allows)
    )


def _validated(changes: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """{absolute path: (current, wanted)}; HostError for a bad path or a value the file does not offer."""
    out: dict[str, tuple[str, str]] = {}
    for path, wanted in changes.items():
        full = _resolve(path)
        current, offered = read_choice(full)
        if wanted not in offered:
            raise HostError(f"{full}: {wanted!r} is not offered (choices: {' '.join(offered)})")
        out[full] = (current, wanted)
    return out


def describe_needed(changes: Mapping[str, str]) -> list[str]:
    """The changes that would alter a setting, in words: ``"<path>: never -> always"``."""
    return [_describe(path, cur, new) for path, (cur, new) in _validated(changes).items() if cur != new]


# --------------------------------------------------------------------------- state file


def _write_state(values: Mapping[str, str], wanted: Mapping[str, str]) -> None:
    """Atomically (write, fsync, rename) record the values to restore."""
    try:
        os.makedirs(RUN_DIR, mode=0o755, exist_ok=True)
        tmp = f"{STATE_PATH}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            state = {"pid": os.getpid(), "restore": dict(values), "applied": dict(wanted)}
            os.write(fd, json.dumps(state, indent=1, sort_keys=True).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, STATE_PATH)
        dfd = os.open(RUN_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        raise os_error(f"write {STATE_PATH}", exc) from None


def _read_state() -> tuple[int, dict[str, str]] | None:
    """(writer pid, {path: value to restore}) from the state file, or None if there is none."""
    try:
        with open(STATE_PATH, encoding="ascii") as f:
            state = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise HostError(f"{STATE_PATH}: unreadable THP state file ({exc}); restore the values by hand") from None
    try:
        pid = int(state["pid"])
        restore = {_resolve(str(p)): str(v) for p, v in dict(state["restore"]).items()}
    except (KeyError, TypeError, ValueError, HostError) as exc:
        raise HostError(f"{STATE_PATH}: malformed THP state file ({exc}); restore the values by hand") from None
    return pid, restore


def _remove_state() -> None:
    try:
        os.unlink(STATE_PATH)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise os_error(f"unlink {STATE_PATH}", exc) from None


def _restore_values(values: Mapping[str, str]) -> list[str]:
    """Write ``values`` back (last written first), check they read back; the changes made, in words."""
    done: list[str] = []
    failures: list[str] = []
    for path, old in reversed(list(values.items())):
        try:
            current = read_choice(path)[0]
            if current != old:
                _write(path, old)
                done.append(_describe(path, current, old))
            back = read_choice(path)[0]
            if back != old:
                failures.append(f"{path} reads {back!r}, wanted {old!r}")
        except HostError as exc:
            failures.append(str(exc))
    if failures:
        raise HostError("THP restore failed (state kept in " + STATE_PATH + "): " + "; ".join(failures))
    done.reverse()
    return done


def restore_leftover() -> list[str]:
    """Restore the values left by a foliosim run that died (SIGKILL) while it had changed THP settings.

    Returns what it changed, in words; [] when there is nothing to restore, or when
    another live run holds the live lock (then that run owns the settings). Call this
    before anything else in a live run.
    """
    if not os.path.exists(STATE_PATH):
        return []
    lock = LiveLock()
    try:
        lock.acquire()
    except HostError:
        return []
    try:
        state = _read_state()
        if state is None:
            return []
        pid, values = state
        if pid == os.getpid() and _active is not None:
            return []  # our own live guard
        done = _restore_values(values)
        _remove_state()
        return done
    finally:
        lock.release()


# --------------------------------------------------------------------------- guard


_active: ThpGuard | None = None
_active_mutex = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child must not restore its parent's settings: drop the guard's handlers there."""
    global _active
    guard = _active
    _active = None
    if guard is not None:
        guard._forget_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


class ThpGuard:
    """Apply THP sysfs values for the duration of a ``with`` block and restore them on every exit.

    ``changes`` maps a THP choice file (absolute, or relative to THP_DIR such as
    ``"hugepages-64kB/enabled"``) to its wanted value. On entry, before writing
    anything, the guard takes the live lock (waiting up to ``lock_timeout`` s),
    restores a leftover state file of a dead run, records the old values in
    /run/foliosim/thp-restore.json, then writes the new ones and checks them. On exit,
    and on SIGINT/SIGTERM/SIGHUP while active (handlers installed from the main thread),
    it writes the old values back, checks them, deletes the state file and releases
    the lock; a signal then continues as the previous handler would (KeyboardInterrupt
    for SIGINT, ``SystemExit(128 + signo)`` for a default-action signal).
    """

    def __init__(self, changes: Mapping[str, str], lock_timeout: float = 0.0) -> None:
        self.changes = dict(changes)
        self.lock_timeout = lock_timeout
        self.old: dict[str, str] = {}
        self.new: dict[str, str] = {}
        self.restored_leftover: list[str] = []
        self.interrupted_by: int | None = None
        self._lock = LiveLock(timeout=lock_timeout)
        self._prev_handlers: dict[int, _SignalHandler] = {}
        self._signal_prev: dict[int, _SignalHandler] = {}
        self._wrote_state = False
        self._owner_pid = 0
        self._critical = False
        self._pending: int | None = None
        self._finished = True

    # -- entry

    def __enter__(self) -> ThpGuard:
        global _active
        wanted = _validated(self.changes)  # read-only: checked before taking the lock
        with _active_mutex:
            if _active is not None:
                raise HostError("a ThpGuard is already active in this process: pass all changes to one guard")
            _active = self
        try:
            self._lock.acquire()
        except BaseException:
            _active = None
            raise
        self._owner_pid = os.getpid()
        self._finished = False
        self._critical = True
        try:
            self._install_handlers()
            if os.path.exists(STATE_PATH):
                state = _read_state()
                if state is not None:
                    self.restored_leftover = _restore_values(state[1])
                    _remove_state()
            self.old = {path: read_choice(path)[0] for path in wanted}
            self.new = {path: new for path, (_, new) in wanted.items()}
            _write_state(self.old, self.new)
            self._wrote_state = True
            self._apply()
        except BaseException:
            self._critical = False
            self._finish()
            raise
        self._critical = False
        self._deliver_pending()
        return self

    def _apply(self) -> None:
        """Write the new values and check them; on any failure the caller's _finish restores all."""
        for path, new in self.new.items():
            if self.old[path] != new:
                _write(path, new)
        wrong = [f"{p} reads {read_choice(p)[0]!r}, wanted {v!r}" for p, v in self.new.items()
                 if read_choice(p)[0] != v]
        if wrong:
            raise HostError("THP setting did not take: " + "; ".join(wrong))

    # -- exit

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if os.getpid() != self._owner_pid:
            return  # a forked child leaving the block: the parent owns the settings
        self._critical = True
        try:
            self._finish()
        finally:
            self._critical = False
        self._deliver_pending()

    def _finish(self) -> None:
        """Restore the old values, delete the state file, restore the handlers, release the lock (idempotent)."""
        global _active
        if self._finished:
            return
        self._finished = True
        try:
            _restore_values(self.old)
            if self._wrote_state:
                _remove_state()
                self._wrote_state = False
        finally:
            self._restore_handlers()
            _active = None
            self._lock.release()

    # -- signals

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal only works in the main thread; the with-block still restores
        for signo in GUARDED_SIGNALS:
            prev = signal.getsignal(signo)
            if prev == signal.SIG_IGN:
                continue
            self._prev_handlers[signo] = prev
            self._signal_prev[signo] = prev
            signal.signal(signo, self._on_signal)

    def _restore_handlers(self) -> None:
        for signo, prev in self._prev_handlers.items():
            signal.signal(signo, prev if prev is not None else signal.SIG_DFL)
        self._prev_handlers.clear()

    def _forget_in_child(self) -> None:
        self._finished = True
        try:
            self._restore_handlers()
        except ValueError:
            self._prev_handlers.clear()

    def _on_signal(self, signo: int, frame: FrameType | None) -> None:
        if os.getpid() != self._owner_pid:
            return
        if self._critical:
            self._pending = signo  # delivered when the settings are consistent again
            return
        self._deliver(signo, frame)

    def _deliver_pending(self) -> None:
        signo, self._pending = self._pending, None
        if signo is not None:
            self._deliver(signo, None)

    def _deliver(self, signo: int, frame: FrameType | None) -> None:
        """Restore now, then let the signal act as it would have without the guard."""
        prev = self._signal_prev.get(signo, signal.SIG_DFL)
        self.interrupted_by = signo
        self._critical = True
        try:
            self._finish()
        finally:
            self._critical = False
        if callable(prev):
            prev(signo, frame)
        elif signo == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise SystemExit(128 + signo)
