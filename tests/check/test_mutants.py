"""Every mutant is caught, with a shortest counterexample that replays to the same violation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from foliosim.check.explore import explore, violation_of
from foliosim.check.mutants import MUTANTS
from foliosim.cli import main

EXPECTED = {  # mutant -> (property, shortest length)
    "never-clear-shared": ("precision", 3),
    "slot1-not-shared": ("soundness", 2),
    "slot0-not-shared": ("soundness", 4),
    "no-clamp": ("sanity", 6),
    "slot1-first": ("precision", 1),
    "clear-only-unmapped": ("precision", 3),
    "clear-slot0-only": ("precision", 3),
    "stale-id": ("sanity", 2),
}


def test_every_mutant_is_listed() -> None:
    assert set(MUTANTS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_is_caught_with_a_shortest_counterexample(name: str) -> None:
    mutant = MUTANTS[name]
    result = explore(mutant.config, mutant.owner, stop_at_first=True)
    prop, length = EXPECTED[name]
    assert list(result.violations) == [prop]
    cx = result.violations[prop]
    assert cx.length == length
    # Replaying the trace with the mutant reaches the same violation at the last step ...
    verdict = violation_of(cx.ops, mutant.config, mutant.owner)
    assert verdict is not None and verdict.prop == prop and verdict.step == len(cx.ops) - 1
    # ... and the kernel's own tracking does not violate anything on it.
    assert violation_of(cx.ops, mutant.config) is None


@pytest.mark.parametrize("name", ["slot1-not-shared", "never-clear-shared", "stale-id"])
def test_cli_counterexample_file_replays(name: str, tmp_path: Path) -> None:
    """The file `foliosim check` writes is accepted by `foliosim replay` (exit 0: every op valid)
    and `foliosim check --replay` with the mutant finds the same violation."""
    mutant = MUTANTS[name]
    cfg = mutant.config
    path = tmp_path / "cx.jsonl"
    runner = CliRunner()
    args = ["check", "--mms", str(cfg.mms), "--order", str(cfg.order), "--depth", str(cfg.depth),
            "--levels", ",".join(lv.value for lv in cfg.levels), "--ops", ",".join(cfg.ops),
            "--mutant", name, "--stop-at-first", "--counterexample", str(path), "--json", "--quiet"]
    res = runner.invoke(main, args)
    assert res.exit_code == 4, res.output
    payload = json.loads(res.output)
    prop = EXPECTED[name][0]
    assert payload["properties"][prop] == "violated"
    assert payload["files"] == [str(path)]
    plain = subprocess.run([sys.executable, "-m", "foliosim", "replay", str(path)], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stdout
    assert len(plain.stdout.splitlines()) == EXPECTED[name][1] + cfg.mms + 1
    again = runner.invoke(main, ["check", "--replay", str(path), "--mutant", name, "--json"])
    assert again.exit_code == 4
    assert json.loads(again.output)["property"] == prop
    clean = runner.invoke(main, ["check", "--replay", str(path), "--json"])
    assert clean.exit_code == 0 and json.loads(clean.output) is None
