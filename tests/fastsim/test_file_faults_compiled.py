"""The compiled fault loop finishes copy-on-write faults in private file mappings itself (mm/memory.c
do_cow_fault()) unless the reference view is kept, when it hands them back (``O_HANDBACK``) so that the view is
privatized first. Both ways must leave the same machine: random file programs (files, shmem, shared and private
file mappings) run both ways give the same rmap operations, CoW decisions, folios, page tables and page contents
after every line, in two configurations. (The reference view's own verdicts, which the in-loop path does not
privatize, are not compared: the differential tests compare those against the reference engine.)"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest.mock import patch

import pytest

pytest.importorskip("numba")

from hypothesis import given, settings
from hypothesis import strategies as st

from foliosim.fast.sim import files
from foliosim.fast.sim import layout as L
from foliosim.fast.sim.engine import FastMachine
from foliosim.fast.sim.timeline import Timeline, fast_timeline
from foliosim.kconfig import KernelConfig
from tests.fastsim.test_differential import program


@contextmanager
def in_loop_cow_faults() -> Iterator[list[int]]:
    """Every FastMachine made inside finishes copy-on-write file faults in the compiled loop; yields the number
    of faults handed back to Python meanwhile (one element)."""
    init = FastMachine.__init__
    service = files.service
    handed = [0]

    def no_handback(self: FastMachine, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.opt[L.O_HANDBACK] = 0

    def counted(*args: Any, **kwargs: Any) -> None:
        handed[0] += 1
        service(*args, **kwargs)

    with patch.object(FastMachine, "__init__", no_handback), patch.object(files, "service", counted):
        yield handed


def machine_states(t: Timeline) -> list[tuple[Any, ...]]:
    return [(s.line, s.cows, s.ops, s.folios, s.mms, s.contents) for s in t.lines]


def cow_file_faults(text: str) -> int:
    """Copy-on-write faults in private file mappings that the run hands back (with the reference view kept)."""
    service = files.service
    calls = [0]

    def counted(*args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        service(*args, **kwargs)

    with patch.object(files, "service", counted):
        fast_timeline(text, KernelConfig(), check=False)
    return calls[0]


def test_programs_take_copy_on_write_file_faults() -> None:
    """The random file programs reach do_cow_fault() (else the comparison below would not test it)."""
    assert sum(cow_file_faults(program(seed, files=True)) for seed in range(6)) > 0


@settings(max_examples=10, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1))
def test_cow_file_faults_in_the_loop_equal_handed_back(seed: int) -> None:
    text = program(seed, files=True)
    for config in (KernelConfig(64, False), KernelConfig(32, True)):
        handed_back = fast_timeline(text, config, check=False)
        with in_loop_cow_faults() as handed:
            in_loop = fast_timeline(text, config, check=False)
        assert handed[0] == 0, "a fault was handed back with O_HANDBACK off"
        assert machine_states(in_loop) == machine_states(handed_back), f"seed {seed} ({config.describe()}):\n{text}"
