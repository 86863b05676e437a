"""`foliosim view` on scenarios: the pages' data against a direct run of the process simulator, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from foliosim.cli import main
from foliosim.kconfig import KernelConfig
from foliosim.report.view_html import render_page
from foliosim.report.view_scenario import scenario_frames, scenario_notes
from foliosim.system import Op
from foliosim.trace.replay import replay
from foliosim.vm.machine import Machine
from foliosim.vm.memory import PAGE_SHIFT
from foliosim.vm.scenario import ScenarioError, StepRecord, run
from tests.conftest import ALL_CONFIGS
from tests.view_doc import cows_of, document_of, process_at, steps

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "examples").glob("*.scenario"))


class DirectRun:
    """What `foliosim.vm.scenario.run` says after every line, collected without the viewer's code."""

    def __init__(self, text: str, config: KernelConfig) -> None:
        self.snapshots: list[dict[str, Any]] = []
        self.cows: list[list[tuple[Any, ...]]] = []
        self.rmap_folios: list[list[str]] = []
        self.trace_end: list[int] = []
        self.records: list[StepRecord] = []
        self.result = run(text, config, on_step=self.step)
        self.trace = [op.to_json() for op in self.result.machine.trace]

    def step(self, rec: StepRecord, machine: Machine) -> None:
        self.records.append(rec)
        self.snapshots.append(machine.snapshot())
        self.cows.append([(c.task, c.mm, c.addr >> PAGE_SHIFT, c.folio, c.page, c.level, c.rule.value, c.outcome,
                           c.unshare, c.mapcount, c.refcount, c.shared_bit, c.new_folio)
                          for c in (e.cow for e in rec.events) if c is not None])
        folios: list[str] = []
        for event in rec.events:
            op = event.data.get("op") if event.kind == "rmap" else None
            if isinstance(op, Op) and op.folio is not None and op.folio not in folios:
                folios.append(op.folio)
        self.rmap_folios.append(folios)
        self.trace_end.append(len(machine.trace))


def expected_pages(snapshot: dict[str, Any], pmd_order: int) -> dict[str, dict[int, tuple[str, int, bool, bool]]]:
    """Every MM's present pages from the simulator's own snapshot: vpn -> (folio, page, write, by PMD)."""
    out: dict[str, dict[int, tuple[str, int, bool, bool]]] = {}
    for name, mm in snapshot["mms"].items():
        pages = {vpn: (folio, page, bool(write), False) for vpn, folio, page, write in mm["ptes"]}
        for idx, folio, write in mm["pmds"]:
            pages.update({(idx << pmd_order) + k: (folio, k, bool(write), True) for k in range(1 << pmd_order)})
        in_vmas = {v for start, end, _ in mm["vmas"] for v in range(start, end)}
        out[name] = {v: m for v, m in pages.items() if v in in_vmas}
    return out


def assert_page_matches_direct_run(text: str, config: KernelConfig) -> dict[str, Any]:
    model, result = scenario_frames(text, config, "t", "t.scenario")
    doc = document_of(render_page(model))
    direct = DirectRun(text, config)
    decoded, shown = steps(doc), process_at(doc)
    assert len(decoded) == len(direct.records) == len(result.steps)
    # An independent replay of the simulator's rmap trace gives every folio's state after each step.
    records = list(replay([json.dumps(op) for op in direct.trace], config))
    last: dict[str, dict[str, Any]] = {}
    pos = 0
    for i, (got, rec) in enumerate(zip(decoded, direct.records, strict=True)):
        where = f"step {i} (line {rec.command.line}: {rec.command.text})"
        assert got["line"] == rec.command.line and got["op"].startswith(rec.command.text), where
        assert got["failed"] == (f"expectation failed: {rec.failed}" if rec.failed else None), where
        assert got["error"] is None
        for r in records[pos:direct.trace_end[i]]:
            if "folio" in r:
                last[r["folio"]] = r
        pos = direct.trace_end[i]
        # the tasks, MMs and page tables, page by page
        proc = shown[i]
        snap = direct.snapshots[i]
        assert proc is not None
        assert proc["tasks"] == {t: tuple(v) for t, v in snap["tasks"].items()}, where
        assert set(proc["mms"]) == set(snap["mms"]), where
        want_pages = expected_pages(snap, config.pmd_order)
        for name, mm in proc["mms"].items():
            s_mm = snap["mms"][name]
            assert (mm["mm_id"], mm["users"], mm["count"]) == (s_mm["mm_id"], s_mm["users"], s_mm["count"]), where
            assert [(a, n, lbl) for a, n, lbl in mm["vmas"]] == [(a, b - a, lbl) for a, b, lbl in s_mm["vmas"]]
            assert mm["pages"] == want_pages[name], f"{where}: page table of {name}"
        # the copy-on-write decisions, with their rules
        assert cows_of(doc, got["cows"]) == direct.cows[i], where
        # the folio cards: every folio an rmap call touched, then the folios a CoW decision was about
        cow_folios = [c[3] for c in direct.cows[i] if c[3] not in direct.rmap_folios[i]
                      and c[3] in direct.snapshots[i]["folios"]]
        names = [t["record"]["folio"] for t in got["touches"]]
        assert names == direct.rmap_folios[i] + list(dict.fromkeys(cow_folios)), where
        for touch in got["touches"]:
            name = touch["record"]["folio"]
            want = {k: v for k, v in last[name].items() if k not in ("step", "op", "mm", "owner")}
            if last[name]["op"] == "folio_free":
                assert touch["flags"] & 16, f"{where}: {name} freed"
                continue
            assert touch["record"] == want, f"{where}: {name}"
            assert touch["owner"] == (last[name].get("owner") if name in direct.rmap_folios[i] else None), where
    return doc


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda c: c.describe())
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenario_pages_match_the_simulator(path: Path, config: KernelConfig) -> None:
    doc = assert_page_matches_direct_run(path.read_text(), config)
    assert doc["config"]["word_bits"] == config.word_bits
    assert not any(s["failed"] for s in steps(doc))


def test_every_decision_kind_is_on_some_page() -> None:
    seen: set[tuple[str, str]] = set()
    for path in SCENARIOS:
        model, _ = scenario_frames(path.read_text(), KernelConfig(), path.name, path.name)
        seen |= {(c.outcome, c.rule) for f in model.frames for c in f.cow}
    assert {o for o, _ in seen} >= {"reuse", "copy", "split"}
    assert ("reuse", "pmd: refcount == 1") in seen and ("copy", "large: maybe mapped shared") in seen


def test_comments_narrate_the_steps() -> None:
    text = ("# A header\n#\n# in two paragraphs.\n\noption thp=4   # mTHP\nspawn P\n# about to map\n"
            "mmap P buf 64K anon private # one region\nwrite P buf \"a # b\"   # not '# b'\n\n# far away\n\nexit P\n")
    notes, header, options = scenario_notes(text)
    assert header == "A header\n\nin two paragraphs."
    assert options == ["option thp=4 \u2014 mTHP"]
    assert notes == {8: "about to map\none region", 9: "not '# b'"}
    model, _ = scenario_frames(text, KernelConfig(), "", "x.scenario")
    assert model.title == "x.scenario" and model.source == "x.scenario; option thp=4 \u2014 mTHP"
    assert [f.note for f in model.frames] == ["A header\n\nin two paragraphs.", "about to map\none region",
                                              "not '# b'", ""]
    assert model.frames[2].op == "write P buf 'a # b'  \u2192 wrote 5 bytes"


def test_failed_expectation_and_oracle_violation_are_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "spawn P\nmmap P buf 16K\nwrite P buf 16K 1\nexpect P buf shared=yes\nfork P C\n"
    model, result = scenario_frames(text, KernelConfig())
    assert result.failures and [f.step for f in model.failed] == [3]
    assert model.frames[3].failed is not None and "expected yes" in model.frames[3].failed
    doc = document_of(render_page(model))
    assert [s["failed"] is not None for s in steps(doc)] == [False, False, False, True, False]

    import foliosim.vm.machine as machine_module

    real = machine_module.check_machine
    monkeypatch.setattr(machine_module, "check_machine",
                        lambda m: ["P sees C's data"] if m.step == 3 else real(m))
    model, result = scenario_frames(text, KernelConfig())
    assert result.violation is not None and len(model.frames) == 3  # the run stops at the violation
    assert model.frames[-1].failed == "isolation oracle violation: line 3: P sees C's data"


@pytest.mark.parametrize(("text", "line", "words"), [
    ("spawn P\nfrobnicate P\n", 2, "unknown command"),
    ("spawn P\nwrite Q 0 1\n", 2, "no task 'Q'"),  # fails at run time: still no frames
])
def test_bad_scenarios_raise_naming_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ScenarioError) as info:
        scenario_frames(text, KernelConfig())
    assert info.value.line == line and words in info.value.message


def test_on_start_sees_the_machine_before_the_first_step() -> None:
    seen: list[tuple[int, str]] = []

    def start(machine: Machine) -> None:
        assert machine.step == 0 and not machine.tasks
        machine.observers.append(lambda e: seen.append((e.step, e.kind)))

    result = run("spawn P\nmmap P buf 4K\nwrite P buf 1\n", on_start=start)
    assert seen and seen[0] == (1, "mm") and (3, "rmap") in seen
    assert len(seen) == len(result.machine.events)


def test_rmap_events_describe_their_op() -> None:
    result = run("option thp=4\nspawn P\nmmap P buf 64K\nwrite P buf 64K 1\nfork P C\nexit C\n")
    texts = {e.text for e in result.machine.events if e.kind == "rmap"}
    assert {e.data["op"].describe() for e in result.machine.events if e.kind == "rmap"} == texts
    assert "folio_new f1 (order 4, 16 pages)" in texts and "dup f1 by mm2 (pte pages 0..15)" in texts
    assert Op("map", "A", "F", None, None, 3, 1).describe() == "map F by A (pte page 3)"
    # OwnerEvent.SET is 0: the event must still name it (it used to be dropped as falsy).
    owners = {e.data["owner"] for e in result.machine.events if e.kind == "rmap" and e.data["op"].op == "map_new_anon"}
    assert owners == {"set"}


# -- the CLI ---------------------------------------------------------------------------------------


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["view", *args])


def test_cli_writes_a_scenario_page(tmp_path: Path) -> None:
    out = tmp_path / "p.html"
    result = invoke(str(ROOT / "examples" / "prefork-server.scenario"), "-o", str(out), "--word-bits", "32",
                    "--no-page-mapcount")
    assert result.exit_code == 0, result.output
    doc = document_of(out.read_text())
    assert doc["title"] == "prefork-server.scenario" and doc["config"]["word_bits"] == 32
    assert doc["source"].startswith("prefork-server.scenario; option thp=9")
    assert len(doc["process"]["cows"]) == 7
    src = tmp_path / "s.txt"  # any extension but .jsonl is a scenario; the page goes next to it by default
    src.write_text("spawn P\n")
    assert invoke(str(src)).exit_code == 0 and (tmp_path / "s.html").exists()


@pytest.mark.parametrize(("content", "message"), [
    ("spawn P\nfork P\n", "line 2: fork: expected 2..2 arguments"),
    ("spawn P\nwrite nobody 0 1\n", "line 2: no task 'nobody'"),
    ("\xff", "cannot read"),
])
def test_cli_bad_scenario_names_the_line_and_writes_nothing(tmp_path: Path, content: str, message: str) -> None:
    src = tmp_path / "bad.scenario"
    src.write_bytes(content.encode("latin-1") if content == "\xff" else content.encode())
    out = tmp_path / "bad.html"
    result = invoke(str(src), "-o", str(out))
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()


def test_cli_failed_expectation_writes_the_page_and_exits_4(tmp_path: Path) -> None:
    src = tmp_path / "f.scenario"
    src.write_text("spawn P\nmmap P buf 16K\nwrite P buf 16K 1\nexpect reuses=1\n")
    out = tmp_path / "f.html"
    result = invoke(str(src), "-o", str(out))
    assert result.exit_code == 4
    assert "1 step(s) failed, first at line 4 (step 3): expectation failed: expected reuses=1, counted 0" \
        in result.output
    assert steps(document_of(out.read_text()))[3]["failed"] == "expectation failed: expected reuses=1, counted 0"
    assert CliRunner().invoke(main, ["run", str(src)]).exit_code == 4  # as `foliosim run` says


def test_examples_scenario_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the default is ./examples, as in the README's command
    result = invoke("--examples", str(tmp_path / "a"))
    assert result.exit_code == 0 and (tmp_path / "a" / "prefork-server.html").exists()
    monkeypatch.chdir(tmp_path)
    result = invoke("--examples", "b")
    assert result.exit_code == 0 and "writing the commit's examples only" in result.output
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["commit-example-1.html", "commit-example-2.html"]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "bad.scenario").write_text("spawn P\nexpect reuses=3\n")
    result = invoke("--examples", "c", "--scenarios", "src")
    assert result.exit_code == 4 and "src/bad.scenario: 1 step(s) failed" in result.output
    assert (tmp_path / "c" / "bad.html").exists()
    assert invoke("--examples", "d", "--scenarios", "nowhere").exit_code == 1
    assert invoke("x.scenario", "--scenarios", "src").exit_code == 2
