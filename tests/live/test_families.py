"""The live copy-on-write families (examples/live): generated, live-expressible, and agreeing in the simulator.

Simulator only (no live kernel): every shipped scenario must equal the generator's output, use only commands
that ``foliosim live`` can run as real processes, and run in the simulator with every ``expect`` (the kernel's
measured outcome) met and no oracle violation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from foliosim.live import families as fam
from foliosim.vm.scenario import Command, parse, run

ROOT = Path(__file__).parents[2]
LIVE_DIR = ROOT / "examples" / "live"

def _params() -> list[object]:
    return [pytest.param(name, order, id=f"{name}-order{order}") for name in fam.FAMILIES for order in fam.ORDERS]


def live_problems(commands: list[Command]) -> list[str]:
    """Every line that uses a construct without a live equivalent (the list the live side can run)."""
    problems = []
    for cmd in commands:
        where = f"line {cmd.line} ({cmd.text})"
        if cmd.verb not in fam.LIVE_VERBS:
            problems.append(f"{where}: {cmd.verb} has no live equivalent")
        elif cmd.verb == "option" and set(cmd.opts) - fam.LIVE_OPTIONS:
            problems.append(f"{where}: option {sorted(set(cmd.opts) - fam.LIVE_OPTIONS)}")
        elif cmd.verb == "mmap" and ({"file", "shmem"} & set(cmd.opts) or "anon" not in cmd.args):
            problems.append(f"{where}: only anonymous mappings")
        elif cmd.verb == "madvise" and cmd.args[3] not in fam.LIVE_ADVICE:
            problems.append(f"{where}: advice {cmd.args[3]}")
        elif cmd.verb == "pin" and set(cmd.args[4:]) != {"rw", "longterm"}:
            problems.append(f"{where}: only 'rw longterm' pins")
    return problems


def test_shipped_files_equal_the_generator() -> None:
    generated = fam.generate()
    shipped = {p.name: p.read_text(encoding="utf-8") for p in LIVE_DIR.iterdir() if p.is_file()}
    assert sorted(shipped) == sorted(generated), "regenerate: python -m foliosim.live.families examples/live"
    stale = [name for name, text in generated.items() if shipped[name] != text]
    assert not stale, f"stale files (regenerate with python -m foliosim.live.families examples/live): {stale}"


def test_every_family_for_every_order_is_named_as_documented() -> None:
    names = set(fam.generate())
    assert len(fam.FAMILIES) == 12 and fam.ORDERS == (2, 4, 5, 9)
    assert names == {f"{f}-order{o}.scenario" for f in fam.FAMILIES for o in fam.ORDERS} | {"README.md"}
    assert set(fam.ROWS) == set(fam.FAMILIES)


def test_main_writes_the_directory(tmp_path: Path) -> None:
    out = tmp_path / "new" / "live"
    assert fam.main([str(out)]) == 0
    assert {p.name: p.read_text(encoding="utf-8") for p in out.iterdir()} == fam.generate()
    with pytest.raises(SystemExit, match="usage"):
        fam.main([])


def test_unknown_family_or_order_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown family"):
        fam.scenario("no-such-family", 4)
    with pytest.raises(ValueError, match="order 3"):
        fam.scenario("vmsplice", 3)


@pytest.mark.parametrize(("name", "order"), _params())
def test_uses_only_live_constructs(name: str, order: int) -> None:
    text = fam.scenario(name, order)
    commands = parse(text)
    assert live_problems(commands) == []
    options = [c for c in commands if c.verb == "option"]
    assert [c.opts for c in options] == [{"thp": str(order)}]
    mmaps = [c for c in commands if c.verb == "mmap"]
    assert [c.args[2] for c in mmaps] == [("2M" if order == 9 else f"{4 << order}K")]
    assert any(c.verb == "expect" for c in commands), "no measured outcome is checked"
    assert any(c.verb in ("read", "readpin") and "expect" in c.opts for c in commands), "no data check"


def test_live_problems_catches_what_the_live_side_cannot_run() -> None:
    text = "\n".join([
        "option thp=4 fault_around=1",
        "file f 16K shmem order=2",
        "spawn P",
        "mmap P m 16K shared shmem=f",
        "mmap P a 16K anon private",
        "vfork P V",
        "grab H P",
        "pin P ro1 a 4K",
        "pin P ro2 a 4K rw short",
        "madvise P a 16K hugepage",
        "clear_refs P",
        "check",
        "pin P ok a 4K rw longterm",
        "madvise P a 4K cold",
    ])
    problems = live_problems(parse(text))
    assert [p.split(" ")[1] for p in problems] == [str(n) for n in range(1, 13) if n not in (3, 5)]


def test_headers_name_the_row_and_the_measured_outcome() -> None:
    for name in fam.FAMILIES:
        row = fam.ROWS[name]
        for order in fam.ORDERS:
            text = fam.scenario(name, order)
            header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
            flat = " ".join(line.lstrip("# ").strip() for line in header.splitlines())
            assert f"case: {row.case}" in flat
            cell = row.pmd if order == 9 else row.pte
            column = "PMD-mapped order 9" if order == 9 else "PTE-mapped order 2/4/5"
            assert f"{column}: {cell}" in flat
            assert f"{name}, order {order}:" in flat
            assert "The expect lines encode that outcome" in flat


@pytest.mark.parametrize(("name", "order"), _params())
def test_runs_in_the_simulator_and_agrees_with_the_kernel(name: str, order: int) -> None:
    text = fam.scenario(name, order)
    result = run(text)
    assert result.error is None, str(result.error)
    assert result.violation is None, result.violation
    assert result.failures == [], f"simulator disagrees with the measured kernel: {result.failures}"
    assert len(result.steps) == sum(1 for c in parse(text) if c.verb != "option")


def _pmd(order: int, value: int) -> int:
    return value if order == 9 else 0


# Measured facts of the table that the expect language cannot state, read from the simulator's counters:
# name -> order -> {counter: value}; "fault" counts every fault including the first touch.
MEASURED_COUNTERS: dict[str, Callable[[int], dict[str, int]]] = {
    "fork-child-exits": lambda o: {"fault": 1 + (1 if o == 9 else 1 << o), "pmd split": 0},  # R×1 then N×511
    "parent-writes-first": lambda o: {"pmd split": _pmd(o, 1)},  # parent: PMD split then C×512
    "parent-page0-child-all": lambda o: {"pmd split": _pmd(o, 2)},  # parent's and child's PMD split
    "parent-munmaps": lambda o: {"fault": 2 if o == 9 else 1 + (1 << o)},
    "dontneed-to-one": lambda o: {"pmd split": _pmd(o, 1)},
    "rw-pin-before-fork": lambda o: {"fork early copy": 1 << o, "fault": 1, "pmd split": _pmd(o, 1)},
    "vmsplice": lambda o: {"pmd split": _pmd(o, 1)},  # PMD split at the first write
}


@pytest.mark.parametrize("order", fam.ORDERS)
@pytest.mark.parametrize("name", sorted(MEASURED_COUNTERS))
def test_measured_facts_beyond_expect(name: str, order: int) -> None:
    result = run(fam.scenario(name, order))
    counters = result.machine.counters
    for key, want in MEASURED_COUNTERS[name](order).items():
        assert counters[key] == want, f"{key}: simulator {counters[key]}, measured {want}"


@pytest.mark.parametrize("order", fam.ORDERS)
def test_dontneed_to_one_frees_the_old_folio(order: int) -> None:
    """The row says "old folio freed": the large folio is gone after the copy of its last page."""
    result = run(fam.scenario("dontneed-to-one", order))
    write = next(s for s in result.steps if s.command.verb == "write" and s.command.args[1] == "buf"
                 and s.command.args[2] == "4K")
    freed = [e.text for e in write.events if e.kind == "free"]
    assert any(f"order {order}, anon" in text for text in freed), freed
