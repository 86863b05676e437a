from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from foliosim.kconfig import KernelConfig

settings.register_profile("ci", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("thorough", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

ALL_CONFIGS = [
    KernelConfig(64, False),
    KernelConfig(64, True),
    KernelConfig(32, False),
    KernelConfig(32, True),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


#: node-id prefixes of the tests that use the machine's kernel (the live-kernel tests are all under these; a few
#: host tests that are not live come along)
LIVE_TEST_PATHS = ("tests/live/", "tests/host/")


@pytest.hookimpl(optionalhook=True)  # xdist's hook: without xdist installed, not called (and not an error)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under xdist, the live-kernel tests go to one worker as one unit, every other test on its own.

    They run one at a time on the machine (:func:`_live_tests_one_at_a_time`); distributed as the others are, both
    workers reached them together and one waited for the lock (~100 s of a fresh clone's suite). Most of a live
    test's time is the kernel's and its child processes', so the other worker runs the rest meanwhile. (xdist's own
    ``--dist loadgroup`` does this by the ``xdist_group`` mark, but its marks are silently ignored with pytest 9.2:
    pytest-dev/pytest-xdist#1386.)
    """
    from xdist.scheduler import LoadScopeScheduling

    class LiveTestsTogether(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "live" if nodeid.startswith(LIVE_TEST_PATHS) else nodeid

    return LiveTestsTogether(config, log)


def live_unavailable(what: str) -> None:
    """Skip a live-kernel test for ``what``, or fail it when FOLIOSIM_LIVE=required (CI sets that)."""
    if os.environ.get("FOLIOSIM_LIVE") == "required":
        pytest.fail(f"FOLIOSIM_LIVE=required but the live kernel cannot be used: {what}")
    pytest.skip(f"live kernel not usable here: {what}")


@pytest.fixture
def live_root() -> None:
    """Live tests need root (pagemap PFNs, kpageflags, BPF)."""
    if os.geteuid() != 0:
        live_unavailable("not root")


@pytest.fixture(params=ALL_CONFIGS, ids=lambda c: f"{c.word_bits}bit-{'nopmc' if c.no_page_mapcount else 'pmc'}")
def config(request: pytest.FixtureRequest) -> KernelConfig:
    return request.param  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- cold numba compiles under xdist
def _warm_checker() -> None:
    from foliosim.check.fastexplore import explore_fast
    from foliosim.check.state import CheckConfig

    explore_fast(CheckConfig(KernelConfig(64, False), mms=2, order=1, depth=1))


def _warm_simulator() -> None:
    from foliosim.fast.sim.scenario import unsupported_reason
    from foliosim.fast.sim.timeline import fast_timeline
    from foliosim.vm.scenario import parse

    root = Path(__file__).resolve().parents[1]
    for path in sorted([*root.glob("examples/*.scenario"), *root.glob("examples/live/*.scenario")]):
        text = path.read_text()
        if unsupported_reason(parse(text)) is None:
            fast_timeline(text, KernelConfig(64, False))
    # `foliosim compare`'s driving runs: the step interpreter and the scoring loop (tests run it in subprocesses
    # with a timeout).
    from click.testing import CliRunner

    from foliosim.cli import main

    with tempfile.TemporaryDirectory() as work:
        res = CliRunner().invoke(main, ["compare", "-d", "kernel", "-w", "fork-child", "--seeds", "1", "--param",
                                        "pages=16", "-j", "1", "-q", "--db", str(Path(work) / "warm.sqlite")])
        assert res.exit_code == 0, res.output


def _warm_run_trace() -> None:
    """A recorded trace on the fast engine: the compiled stretches (kprog.run_program) and the snapshot checks."""
    from foliosim.live.tracesim import simulate
    from foliosim.workloads.runtrace import RunTrace

    run = simulate(RunTrace.open(_EXAMPLE_RUN_TRACE), engine="fast")
    assert run.faults_taken > 0


def _warm_replay() -> None:
    from click.testing import CliRunner

    from foliosim.cli import main
    from foliosim.trace import genfast

    res = CliRunner().invoke(main, ["fast-replay", str(_EXAMPLE_TRACE)])
    assert res.exit_code == 0, res.output
    genfast.warm_up()


def _warm_apply_op() -> None:
    """One operation through apply_op called from Python, as tests/test_fast_differential.py steps traces."""
    from foliosim.fast import kernels
    from foliosim.fast.state import FastState, capacity_orders
    from foliosim.trace.columnar import from_jsonl_lines

    col = from_jsonl_lines(_EXAMPLE_TRACE.read_text().splitlines())
    state = FastState(KernelConfig(64, False), col.folio_names, col.mm_names,
                      capacity_orders(col.kind, col.folio, col.order, len(col.folio_names)))
    kernels.apply_op(*state.arrays(), int(col.kind[0]), int(col.folio[0]), int(col.mm[0]), int(col.level[0]),
                     int(col.page[0]), int(col.nr[0]), int(col.order[0]))


_EXAMPLE_TRACE = Path(__file__).resolve().parents[1] / "examples" / "commit-example-1.jsonl"
_EXAMPLE_RUN_TRACE = Path(__file__).resolve().parents[1] / "examples" / "run-traces" / "fork-child.trace.gz"

#: Kernel sets whose cold numba compile takes a quarter of a minute or more (each alone in a cold cache, the other
#: core idle, 2026-12-02, with foliosim.fast._jit's compile shims: checker ~65 s, simulator with compare's driving
#: loop ~125 s, the run-trace stretches ~180 s of which most is the simulator's kernels they share, fast-replay +
#: trace generator ~30 s, apply_op ~15 s), the tests that need them (path prefixes), and a call
#: compiling them (or loading them from numba's cache). Some tests
#: compare a command's whole output, which on a cold cache has a "compiling ..." notice, or run a command
#: under a timeout: in one process an earlier test has compiled the kernels, under xdist this does.
WARM_UPS: list[tuple[str, tuple[str, ...], Callable[[], None]]] = [
    ("checker", ("tests/check/",), _warm_checker),
    ("apply_op", ("tests/test_fast",), _warm_apply_op),
    ("replay", ("tests/test_columnar.py", "tests/test_fast"), _warm_replay),
    ("simulator", ("tests/fastsim/",), _warm_simulator),
    ("run-trace", ("tests/fastsim/", "tests/live/", "tests/test_runtrace", "tests/test_score", "tests/test_paired"),
     _warm_run_trace),
]


def _session_lock(config: pytest.Config, name: str) -> Path:
    """A lock file shared by the xdist workers of test sessions in this checkout."""
    key = hashlib.sha1(str(config.rootpath).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"foliosim-tests-{key}-{name}.lock"


#: the lock that live-kernel tests of every test session on this machine take (not one per checkout: the THP
#: settings, tracefs and BPF they touch are the machine's)
LIVE_TESTS_LOCK = Path(tempfile.gettempdir()) / "foliosim-tests-live.lock"


@pytest.fixture(autouse=True)
def _live_tests_one_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """No two live-kernel tests run at the same time on this machine: not two xdist workers of one session, and not
    two sessions (two checkouts' suites, say CI and a developer's run).

    A live test reads the global THP settings before and after its run and compares them, and takes tracefs
    instances and BPF programs: another live test changing the settings in between (under the flock of
    /run/foliosim/live.lock, as it should, but between this test's two readings) would fail it.
    """
    if "live" not in request.keywords:
        yield
        return
    with open(LIVE_TESTS_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session", autouse=True)
def _compiled_kernels(request: pytest.FixtureRequest) -> None:
    """Under pytest-xdist, compile each heavy kernel set once, on one worker, before the tests that need it.

    Without this, two workers that reach tests of the same kernel set while numba's cache is cold both
    compile it (minutes of CPU each, twice). Each worker takes the sets in a different order, each set under
    an exclusive flock: while one worker compiles a set the other compiles another, and a set already
    compiled is loaded from numba's on-disk cache. Without xdist (one process) the
    tests compile what they need as they reach it.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    try:
        import numba  # noqa: F401
    except ImportError:
        return
    paths = {item.nodeid.split("::", 1)[0] for item in request.session.items}
    needed = [(name, warm) for name, folders, warm in WARM_UPS if any(p.startswith(folders) for p in paths)]
    if needed:
        # Worker 0 takes the sets in WARM_UPS order, worker 1 in reverse (two workers: ~3 min cold, both busy).
        n = int(worker[2:])
        order = needed if n % 2 == 0 else needed[::-1]
        shift = (n // 2) % len(order)
        for name, warm in order[shift:] + order[:shift]:
            with open(_session_lock(request.config, f"compile-{name}"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                warm()
