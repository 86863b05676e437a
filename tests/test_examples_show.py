"""The commit message's examples, `foliosim examples` and `foliosim show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from foliosim.cli import main
from foliosim.explain import verdict
from foliosim.kconfig import KernelConfig
from foliosim.report.show import render_mm_ids_word
from foliosim.system import RmapSystem
from foliosim.trace.examples import EXAMPLE_1, EXAMPLE_2, EXAMPLES
from foliosim.trace.format import parse_op
from tests.conftest import ALL_CONFIGS

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda c: c.describe())
def test_example_1_is_detected_exclusive(config: KernelConfig) -> None:
    s = RmapSystem(config)
    for op in EXAMPLE_1.trace():
        s.apply(parse_op(op))
    assert verdict(s.folio("F")) == "mapped exclusively"
    assert s.folio_handle("F").truth.mapped_mms() == ["App2"]


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda c: c.describe())
def test_example_2_stays_maybe_shared(config: KernelConfig) -> None:
    s = RmapSystem(config)
    for op in EXAMPLE_2.trace():
        s.apply(parse_op(op))
    assert verdict(s.folio("F")) == "maybe mapped shared"
    assert s.folio_handle("F").truth.mapped_mms() == ["App3"]  # truly exclusive: a false positive


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_shipped_example_traces_match(example) -> None:  # type: ignore[no-untyped-def]
    path = EXAMPLES_DIR / f"commit-{example.name.replace('example', 'example-')}.jsonl"
    shipped = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert shipped == example.trace()


def test_examples_command_narrates_both() -> None:
    result = CliRunner().invoke(main, ["examples"])
    assert result.exit_code == 0
    out = result.output
    assert "Example 1" in out and "Example 2" in out
    assert "takes free slot 1" in out and "not tracked" in out
    assert out.count("as the commit message says") == 2
    assert "false positive" in out


def test_show_draws_the_word_for_both_sizes() -> None:
    for bits in ("64", "32"):
        result = CliRunner().invoke(main, ["show", str(EXAMPLES_DIR / "commit-example-2.jsonl"), "--word-bits", bits])
        assert result.exit_code == 0, result.output
        assert f"lock bit {int(bits) // 2 - 1}, shared bit {int(bits) - 1}" in result.output
        assert "slot 0" in result.output and "App3" in result.output
        assert "maybe mapped shared" in result.output


def test_word_drawing_places_ids_and_flags() -> None:
    cfg = KernelConfig(32)
    word = (1 << cfg.shared_bitnum) | (5 << cfg.slot_shift) | 3
    rows = render_mm_ids_word(word, 32, {3: "A", 5: "B"})
    bits_row = rows[3].strip()
    assert bits_row.split() == ["1", format(5, "015b"), "0", format(3, "015b")]
    assert "= 5 (B)" in rows[4] and "= 3 (A)" in rows[4]
    rows64 = render_mm_ids_word(1 << 31, 64)
    assert rows64[3].split()[2] == "1"  # the lock bit, drawn as held
    assert "held" in rows64[5]


def test_show_errors_name_the_problem(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["show", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 1 and "cannot read" in result.output
    path = tmp_path / "t.jsonl"
    path.write_text('{"op": "mm_new", "mm": "A"}\n')
    result = CliRunner().invoke(main, ["show", str(path)])
    assert result.exit_code == 1 and "no folio" in result.output
