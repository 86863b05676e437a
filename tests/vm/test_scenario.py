"""Scenario files: parsing, errors naming the line, the CLI, the shipped examples, trace replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from foliosim.cli import main
from foliosim.vm.scenario import ScenarioError, parse, run

EXAMPLES = sorted(Path(__file__).parents[2].joinpath("examples").glob("*.scenario"))


@pytest.mark.parametrize(("text", "line", "words"), [
    ("spawn P\nfrobnicate P\n", 2, "unknown command"),
    ("spawn P\n\nmmap P buf 2Q\n", 3, "not a size"),
    ("spawn P\nfork P\n", 2, "expected 2..2 arguments"),
    ("spawn P\nmmap P buf 4K colour=red\n", 2, "unknown option 'colour'"),
    ("spawn P\noption thp=4\n", 2, "before every other command"),
    ("spawn P\nwrite P 0x1000 \"unterminated\n", 2, "cannot split"),
    ("spawn P\nmadvise P 0 4K sleep\n", 2, "unknown advice"),
    ("spawn P\nwrite P 0 300\n", 2, "outside 0..255"),
])
def test_parse_errors_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse(text)
    assert info.value.line == line and words in info.value.message


def test_runtime_errors_name_the_line_and_change_nothing() -> None:
    result = run("spawn P\nmmap P buf 8K\nwrite P buf 1\nfork P C\nwrite nobody buf 2\n")
    assert result.error is not None and result.error.line == 5 and "no task 'nobody'" in result.error.message
    assert result.machine.counters["fork"] == 1
    result = run("spawn P\nwrite P nowhere+4K 1\n")
    assert result.error is not None and result.error.line == 2 and "unknown region" in result.error.message


def test_expectations_fail_and_syscall_errors_are_results() -> None:
    result = run("spawn P\nmmap P buf 8K prot=r\nwrite P buf 1\nmunmap P 1 4K\nread P buf expect=7\n")
    assert result.error is None
    assert [s.result for s in result.steps][2:] == ["SIGSEGV", "-EINVAL", "0x00 x 1"]
    assert result.failures == ["line 5: read 0x00 x 1, expected 0x07 x 1"]


def test_cli_malformed_scenario_exits_1_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.scenario"
    bad.write_text("spawn P\nfork P C D E\n")
    res = CliRunner().invoke(main, ["run", str(bad)])
    assert res.exit_code == 1
    assert "line 2" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["run", str(tmp_path / "missing.scenario")])
    assert res.exit_code == 1 and "cannot read" in res.output


def test_cli_failed_expectation_exits_4(tmp_path: Path) -> None:
    f = tmp_path / "x.scenario"
    f.write_text("spawn P\nmmap P buf 4K\nwrite P buf 1\nexpect reuses=5\n")
    res = CliRunner().invoke(main, ["run", str(f)])
    assert res.exit_code == 4 and "expected reuses=5, counted 0" in res.output


@pytest.mark.parametrize("flags", [[], ["--no-page-mapcount"], ["--word-bits", "32"]], ids=["64", "npm", "32"])
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_examples_run_and_their_traces_replay(example: Path, flags: list[str], tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    runner = CliRunner()
    res = runner.invoke(main, ["run", str(example), "--trace", str(trace), *flags])
    assert res.exit_code == 0, res.output
    assert "all held" in res.output
    replayed = runner.invoke(main, ["replay", str(trace), *flags])
    assert replayed.exit_code == 0, replayed.output[-500:]
    records = [json.loads(line) for line in replayed.output.splitlines()]
    assert len(records) == len(trace.read_text().splitlines())


def test_examples_exist() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"fork-short-lived-child-pte-thp", "commit-example-1-processes", "commit-example-2-processes",
            "prefork-server"} <= names
