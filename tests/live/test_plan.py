"""What a scenario needs from the live kernel, decided before anything runs (no live kernel needed)."""

from __future__ import annotations

import pytest

from foliosim.live.plan import make_plan, size_dir, wanted_settings
from foliosim.live.run import CannotRun, check_scenario
from foliosim.vm.scenario import parse

BOOT = {o: ("never" if o != 9 else "inherit", "never" if o != 9 else "inherit") for o in range(2, 10)}


def test_refuses_lines_without_live_equivalent_and_names_them() -> None:
    text = "spawn P\nvfork P C\ngrab cpu P\nmmap P m 64K\npin P p m 4K\npin P q m 4K rw short\nclear_refs P\n"
    plan = make_plan(parse(text))
    joined = "\n".join(plan.refusals)
    for line, word in ((2, "vfork"), (3, "grab"), (5, "pin"), (6, "pin"), (7, "clear_refs")):
        assert f"line {line}: {word}" in joined
    assert len(plan.refusals) == 5
    with pytest.raises(CannotRun, match="line 2: vfork"):
        check_scenario(text)


def test_accepts_rw_longterm_pin_and_vmsplice() -> None:
    plan = make_plan(parse("option thp=4\nspawn P\nmmap P m 64K\npin P p m 4K rw longterm\nvmsplice P v m 4K\n"))
    assert plan.refusals == ()
    assert plan.anon_orders == frozenset({4})


def test_refuses_options_the_live_side_cannot_set() -> None:
    plan = make_plan(parse("option fault_around=1\nfile f 64K order=2\nspawn P\n"))
    assert any("fault_around=1" in r and "debugfs" in r for r in plan.refusals)
    assert any("regular file has no exact live equivalent" in r for r in plan.refusals)
    # the defaults are fine
    assert make_plan(parse("option fault_around=16 use_zero_page=1\nspawn P\n")).refusals == ()


def test_shmem_orders_from_files_and_shared_anon() -> None:
    plan = make_plan(parse("option thp=4\nfile d 32K shmem order=3\nspawn P\nmmap P b 64K anon shared\n"))
    assert plan.shmem_orders == frozenset({3, 4})
    # a shared anon mapping with thp=9 gets small shmem folios, as the simulator models it
    assert make_plan(parse("option thp=9\nspawn P\nmmap P b 2M anon shared\n")).shmem_orders == frozenset()


def test_wanted_settings_from_boot_values() -> None:
    plan = make_plan(parse("option thp=4\nspawn P\n"))
    changes = wanted_settings(plan, BOOT, "madvise", "never")
    assert changes == {f"{size_dir(4)}/enabled": "always"}
    plan9 = make_plan(parse("option thp=9\nspawn P\n"))
    assert wanted_settings(plan9, BOOT, "madvise", "never") == {f"{size_dir(9)}/enabled": "always"}
    # with nothing asked for, an "always" size must be turned off
    on = dict(BOOT)
    on[5] = ("always", "never")
    assert wanted_settings(make_plan(parse("spawn P\n")), on, "madvise", "never") == {
        f"{size_dir(5)}/enabled": "never"}
    # inherit + top-level always counts as always
    assert wanted_settings(plan9, BOOT, "always", "never") == {}


def test_wanted_settings_names_a_size_the_kernel_lacks() -> None:
    plan = make_plan(parse("option thp=3\nspawn P\n"))
    no3 = {o: v for o, v in BOOT.items() if o != 3}
    changes = wanted_settings(plan, no3, "madvise", "never")
    assert changes[f"{size_dir(3)}/enabled"].startswith("always (this kernel offers no such size)")
