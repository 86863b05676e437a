"""THP settings: sizes and orders, allowed orders, and ThpGuard's restore on every exit path (live)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest

from foliosim.host import thp
from foliosim.host.errors import HostError
from foliosim.host.runlock import LiveLock
from foliosim.host.thp import (
    ThpGuard,
    ThpSettings,
    describe_needed,
    effective_anon_orders,
    effective_shmem_orders,
    order_of_size_kb,
    read_choice,
    read_settings,
    restore_leftover,
    size_kb,
)
from tests.helpers import sigint_default

KNOB = thp.anon_enabled_path(2)  # hugepages-16kB/enabled: never -> madvise is harmless
LOCK_WAIT = 60.0

# --------------------------------------------------------------------------- unit tests


def test_sizes_and_orders() -> None:
    assert [order_of_size_kb(k) for k in (4, 8, 16, 64, 2048)] == [0, 1, 2, 4, 9]
    assert [size_kb(o) for o in (0, 1, 2, 4, 9)] == [4, 8, 16, 64, 2048]
    for bad in (0, 6, 12, 48):
        with pytest.raises(HostError):
            order_of_size_kb(bad)
    with pytest.raises(HostError):
        size_kb(-1)


def _settings(top: str, anon: dict[int, str], shmem_top: str = "never",
              shmem: dict[int, str] | None = None) -> ThpSettings:
    return ThpSettings(top, shmem_top, MappingProxyType(anon), MappingProxyType(shmem or {}))


def test_effective_anon_orders() -> None:
    anon = {2: "always", 3: "madvise", 4: "inherit", 5: "never", 9: "inherit"}
    assert effective_anon_orders(_settings("never", anon), False) == {2}
    assert effective_anon_orders(_settings("never", anon), True) == {2, 3}
    assert effective_anon_orders(_settings("madvise", anon), False) == {2}
    assert effective_anon_orders(_settings("madvise", anon), True) == {2, 3, 4, 9}
    assert effective_anon_orders(_settings("always", anon), False) == {2, 4, 9}
    assert effective_anon_orders(_settings("always", anon), True) == {2, 3, 4, 9}


def test_effective_shmem_orders() -> None:
    shmem = {1: "always", 2: "advise", 3: "inherit", 4: "within_size", 5: "never", 9: "inherit"}

    def s(top: str) -> ThpSettings:
        return _settings("never", {}, top, shmem)

    assert effective_shmem_orders(s("never"), False) == {1, 4}
    assert effective_shmem_orders(s("never"), True) == {1, 2, 4}
    assert effective_shmem_orders(s("advise"), False) == {1, 4}
    assert effective_shmem_orders(s("advise"), True) == {1, 2, 3, 4, 9}
    assert effective_shmem_orders(s("always"), False) == {1, 3, 4, 9}
    assert effective_shmem_orders(s("within_size"), False) == {1, 3, 4, 9}
    assert effective_shmem_orders(s("deny"), True) == set()
    assert effective_shmem_orders(s("force"), False) == {3, 9}


def test_read_choice_parses_bracket_and_rejects_plain_files(tmp_path: Path) -> None:
    f = tmp_path / "enabled"
    f.write_text("always inherit [madvise] never\n")
    assert read_choice(str(f)) == ("madvise", ("always", "inherit", "madvise", "never"))
    f.write_text("1\n")
    with pytest.raises(HostError, match="not a choice file"):
        read_choice(str(f))
    with pytest.raises(HostError, match="ENOENT"):
        read_choice(str(tmp_path / "missing"))


def test_paths_outside_thp_choice_files_are_refused() -> None:
    for bad in ("../../kernel/foo/enabled", "khugepaged/pages_to_scan", "khugepaged/defrag", "/etc/passwd",
                "use_zero_page", "hugepages-16kB/stats/enabled", "hugepages-16kB/defrag"):
        with pytest.raises(HostError, match="not a THP choice file"):
            describe_needed({bad: "1"})


# --------------------------------------------------------------------------- live


def _all_choice_files() -> dict[str, str]:
    """Every THP choice file (top level and per size) with its value."""
    out = {f"{thp.THP_DIR}/{name}": read_choice(f"{thp.THP_DIR}/{name}")[0] for name in thp.CHOICE_FILES}
    for sub in os.listdir(thp.THP_DIR):
        for name in ("enabled", "shmem_enabled"):
            path = f"{thp.THP_DIR}/{sub}/{name}"
            if sub.startswith("hugepages-") and os.path.exists(path):
                out[path] = read_choice(path)[0]
    return out


@pytest.fixture
def thp_unchanged(live_root: None) -> Iterator[dict[str, str]]:
    """Snapshot every THP choice file (under the live lock) and assert they read the same afterwards."""
    restore_leftover()
    lock = LiveLock(timeout=LOCK_WAIT)
    try:
        lock.acquire()
    except HostError as exc:
        pytest.skip(f"live lock busy: {exc}")
    try:
        before = _all_choice_files()
    finally:
        lock.release()
    assert len(before) >= 3 + 2 * 8
    if before[KNOB] != "never" or os.path.exists(thp.STATE_PATH):
        pytest.skip(f"{KNOB} is {before[KNOB]!r}, not the boot value 'never'")
    yield before
    with LiveLock(timeout=LOCK_WAIT):
        after = _all_choice_files()
        leftover = os.path.exists(thp.STATE_PATH)
        for path, value in before.items():  # repair first, then fail
            if after[path] != value:
                thp._write(path, value)
        if leftover:
            os.unlink(thp.STATE_PATH)
        assert after == before
        assert not leftover


def locked() -> LiveLock:
    """The live lock, for checks that must not race with other developers' live runs."""
    return LiveLock(timeout=LOCK_WAIT)


@pytest.mark.live
def test_read_settings_matches_the_files(thp_unchanged: dict[str, str]) -> None:
    with locked():
        s = read_settings()
        files = _all_choice_files()
    assert s.enabled == files[f"{thp.THP_DIR}/enabled"]
    assert s.shmem_enabled == files[f"{thp.THP_DIR}/shmem_enabled"]
    assert {o: files[thp.anon_enabled_path(o)] for o in s.anon} == dict(s.anon)
    assert {o: files[thp.shmem_enabled_path(o)] for o in s.shmem} == dict(s.shmem)
    assert len(s.anon) + len(s.shmem) + 3 == len(files)
    assert 9 in s.anon and 2 in s.anon and 1 not in s.anon  # no anonymous order-1 THP on x86-64


@pytest.mark.live
def test_guard_applies_then_restores_on_normal_exit(thp_unchanged: dict[str, str]) -> None:
    with locked():
        assert describe_needed({"hugepages-16kB/enabled": "madvise"}) == [f"{KNOB}: never -> madvise"]
    with ThpGuard({"hugepages-16kB/enabled": "madvise"}, lock_timeout=LOCK_WAIT) as guard:
        assert read_choice(KNOB)[0] == "madvise"
        assert guard.old == {KNOB: "never"} and guard.new == {KNOB: "madvise"}
        state = json.loads(Path(thp.STATE_PATH).read_text())
        assert state["pid"] == os.getpid() and state["restore"] == {KNOB: "never"}
        assert describe_needed({KNOB: "madvise"}) == []
        assert 2 in effective_anon_orders(read_settings(), vma_hugepage=True)
        assert 2 not in effective_anon_orders(read_settings(), vma_hugepage=False)
        assert restore_leftover() == []  # our own live guard: not a leftover
        with pytest.raises(HostError, match="already active"):
            ThpGuard({KNOB: "always"}).__enter__()
        probe = subprocess.run(
            [sys.executable, "-c", "from foliosim.host.runlock import LiveLock\nLiveLock().acquire()"],
            capture_output=True, text=True)
        assert probe.returncode != 0 and f"(pid {os.getpid()})" in probe.stderr
        with locked():  # reentrant inside the guard
            pass
    with locked():
        assert read_choice(KNOB)[0] == "never"
        assert not os.path.exists(thp.STATE_PATH)


@pytest.mark.live
def test_guard_restores_on_exception(thp_unchanged: dict[str, str]) -> None:
    handlers = {signo: signal.getsignal(signo) for signo in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(ZeroDivisionError), ThpGuard({KNOB: "madvise"}, lock_timeout=LOCK_WAIT):
        assert read_choice(KNOB)[0] == "madvise"
        _ = 1 / 0
    with locked():
        assert read_choice(KNOB)[0] == "never"
        assert not os.path.exists(thp.STATE_PATH)
    assert {signo: signal.getsignal(signo) for signo in handlers} == handlers  # as found, whatever they were


@pytest.mark.live
def test_guard_refuses_values_not_offered_and_writes_nothing(thp_unchanged: dict[str, str]) -> None:
    with locked():
        with pytest.raises(HostError, match="'within_size' is not offered"):
            ThpGuard({KNOB: "within_size"}).__enter__()
        with pytest.raises(HostError, match="'inherit' is not offered"):
            ThpGuard({KNOB: "madvise", "enabled": "inherit"}).__enter__()
        assert read_choice(KNOB)[0] == "never"
        assert not os.path.exists(thp.STATE_PATH)


@pytest.mark.live
def test_guarded_mthp_size_is_what_a_fault_gets(thp_unchanged: dict[str, str]) -> None:
    """End to end: with 16 kB at madvise, a 16 kB MADV_HUGEPAGE VMA faults in one order-2 folio."""
    from foliosim.host.procfs import PhysReader, read_pagemap
    from tests.host.livemem import MADV_HUGEPAGE, AnonMap

    with ThpGuard({KNOB: "madvise"}, lock_timeout=LOCK_WAIT), AnonMap(4, align=16384) as m:
        m.madvise(MADV_HUGEPAGE)
        m.write(1)
        entries = read_pagemap(os.getpid(), m.addr, 4)
        assert all(e.present for e in entries)
        with PhysReader() as phys:
            assert phys.folio_extent(entries[1].pfn) == (entries[0].pfn, 2)


GUARD_CHILD = textwrap.dedent(
    """
    import sys, time
    from foliosim.host.thp import ThpGuard
    with ThpGuard({sys.argv[1]: "madvise"}, lock_timeout=60):
        print("ready", flush=True)
        time.sleep(60)
    """
)


def _start_guard_child() -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", GUARD_CHILD, KNOB], stdout=subprocess.PIPE, text=True,
                             preexec_fn=sigint_default)
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if line != "ready":
        child.kill()
        child.wait()
        pytest.fail(f"guard child did not start: {line!r}")
    assert read_choice(KNOB)[0] == "madvise"
    assert json.loads(Path(thp.STATE_PATH).read_text())["pid"] == child.pid
    with pytest.raises(HostError, match=rf"\(pid {child.pid}\)"):
        LiveLock().acquire()
    return child


@pytest.mark.live
@pytest.mark.parametrize(("signo", "codes"), [(signal.SIGINT, (-signal.SIGINT, 130)),
                                              (signal.SIGTERM, (128 + signal.SIGTERM,)),
                                              (signal.SIGHUP, (128 + signal.SIGHUP,))],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_guard_restores_when_child_is_signalled(thp_unchanged: dict[str, str], signo: int,
                                                codes: tuple[int, ...]) -> None:
    child = _start_guard_child()
    try:
        child.send_signal(signo)
        assert child.wait(timeout=20) in codes
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    with locked():
        assert read_choice(KNOB)[0] == "never"
        assert not os.path.exists(thp.STATE_PATH)
        assert restore_leftover() == []


def _kill_guard_child() -> int:
    """Start a guard child, SIGKILL it, and take the live lock; skip if another run repaired it first."""
    child = _start_guard_child()
    child.kill()
    child.wait(timeout=20)
    return child.pid


@pytest.mark.live
def test_restore_leftover_after_sigkill(thp_unchanged: dict[str, str]) -> None:
    _kill_guard_child()
    with locked():
        try:
            if not os.path.exists(thp.STATE_PATH):
                pytest.skip("another live run restored the leftover first")
            assert read_choice(KNOB)[0] == "madvise"  # the killed run could not restore
            assert restore_leftover() == [f"{KNOB}: madvise -> never"]
            assert read_choice(KNOB)[0] == "never"
            assert not os.path.exists(thp.STATE_PATH)
            assert restore_leftover() == []
        finally:
            restore_leftover()


@pytest.mark.live
def test_guard_entry_restores_a_leftover_first(thp_unchanged: dict[str, str]) -> None:
    other = thp.anon_enabled_path(3)
    _kill_guard_child()
    with locked():
        try:
            if not os.path.exists(thp.STATE_PATH):
                pytest.skip("another live run restored the leftover first")
            with ThpGuard({other: "madvise"}) as guard:
                assert guard.restored_leftover == [f"{KNOB}: madvise -> never"]
                assert read_choice(KNOB)[0] == "never"
                assert read_choice(other)[0] == "madvise"
            assert read_choice(other)[0] == thp_unchanged[other]
        finally:
            restore_leftover()


@pytest.mark.live
def test_guard_inside_a_live_lock_of_the_same_process(thp_unchanged: dict[str, str]) -> None:
    probe = [sys.executable, "-c", "from foliosim.host.runlock import LiveLock\nLiveLock().acquire()"]
    with LiveLock(timeout=LOCK_WAIT):
        with ThpGuard({KNOB: "madvise"}):  # reentrant: no deadlock, no "busy" error
            assert read_choice(KNOB)[0] == "madvise"
        assert read_choice(KNOB)[0] == "never"
        # Still held by the outer LiveLock after the guard released its level.
        assert subprocess.run(probe, capture_output=True).returncode != 0


def test_khugepaged_collapsed_reads_the_count_or_says_none(tmp_path: Path) -> None:
    assert thp.khugepaged_collapsed(str(tmp_path)) is None  # no such file
    (tmp_path / "khugepaged").mkdir()
    (tmp_path / "khugepaged" / "pages_collapsed").write_text("1509\n")
    assert thp.khugepaged_collapsed(str(tmp_path)) == 1509
    (tmp_path / "khugepaged" / "pages_collapsed").write_text("many\n")
    assert thp.khugepaged_collapsed(str(tmp_path)) is None
    if os.path.exists(f"{thp.THP_DIR}/khugepaged/pages_collapsed"):
        count = thp.khugepaged_collapsed()
        assert count is not None and count >= 0
