from __future__ import annotations

import os

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
