"""Fixtures of the live-kernel tests."""

from __future__ import annotations

import os

import pytest

from tests.conftest import live_unavailable


@pytest.fixture(scope="session")
def full() -> str:
    """The full capability (root, BPF, BTF, the fault tracepoint), or skip (fail under FOLIOSIM_LIVE=required)."""
    if os.geteuid() != 0:
        live_unavailable("not root")
    from foliosim.live.run import probe_capability

    cap = probe_capability()
    if cap.level != "full" or not cap.faults:
        live_unavailable(cap.describe())
    return cap.level
