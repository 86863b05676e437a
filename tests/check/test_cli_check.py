"""The `foliosim check` verb: summary, JSON, exit statuses, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from foliosim.cli import main


def test_summary_and_json_agree_and_exit_zero() -> None:
    runner = CliRunner()
    text = runner.invoke(main, ["check", "--mms", "2", "--order", "1", "--depth", "3", "--quiet"])
    assert text.exit_code == 0
    assert "states: 149 distinct" in text.output and "VIOLATED" not in text.output
    js = runner.invoke(main, ["check", "--mms", "2", "--order", "1", "--depth", "3", "--quiet", "--json"])
    payload = json.loads(js.output)
    assert payload["states"] == 149 and set(payload["properties"].values()) == {"holds"}


def test_the_readme_check_runs_and_finds_what_pure_python_finds() -> None:
    """The README's `foliosim check --mms 3 --order 2 --depth 4` (on this install the compiled engine; the base
    install's test runs it shorter, in pure Python): the state and transition counts the reference explorer
    reaches (84,754 and 530,907, `foliosim check` without numba), every property holding."""
    res = CliRunner().invoke(main, ["check", "--mms", "3", "--order", "2", "--depth", "4", "--quiet", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output)
    assert (payload["states"], payload["transitions"]) == (84_754, 530_907)
    assert set(payload["properties"].values()) == {"holds"}


def test_imprecision_example_is_written_and_replays(tmp_path: Path) -> None:
    path = tmp_path / "imprecise.jsonl"
    res = CliRunner().invoke(main, ["check", "--mms", "3", "--order", "1", "--depth", "5", "--levels", "pte",
                                    "--quiet", "--counterexample", str(path)])
    assert res.exit_code == 0, res.output
    replayed = CliRunner().invoke(main, ["replay", str(path)])
    assert replayed.exit_code == 0
    last = json.loads(replayed.output.splitlines()[-1])
    assert last["maybe_mapped_shared"] is True and len(last["mapped_mms"]) == 1


def test_no_lock_interleaving_finds_the_lost_update_and_exits_4() -> None:
    res = CliRunner().invoke(main, ["check", "--interleave", "--no-lock", "--mms", "2", "--order", "1",
                                    "--depth", "1", "--json"])
    assert res.exit_code == 4
    payload = json.loads(res.output)
    assert payload["non_sequential"] > 0 and "lost-update" in payload["examples"]
    locked = CliRunner().invoke(main, ["check", "--interleave", "--mms", "2", "--order", "1", "--depth", "1"])
    assert locked.exit_code == 0 and "no sequential order explains: 0" in locked.output


def test_bad_options_are_clear_errors_without_traceback(tmp_path: Path) -> None:
    runner = CliRunner()
    for args, needle in ((["--mutant", "bogus"], "unknown mutant 'bogus'"),
                         (["--levels", "pmx"], "--levels"),
                         (["--ops", "map,fork"], "--ops: unknown fork"),
                         (["--property", "precise"], "unknown property precise"),
                         (["--replay", str(tmp_path / "missing.jsonl")], "cannot read")):
        res = runner.invoke(main, ["check", *args])
        assert res.exit_code in (1, 2), args
        assert needle in res.output, (args, res.output)
        assert "Traceback" not in res.output
