"""`foliosim view` without a browser: the step model, the document encoding, the page and the CLI."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from foliosim.cli import main
from foliosim.explain import explain_verdict
from foliosim.kconfig import KernelConfig
from foliosim.report.view import SCHEMA, Frame, ViewModel, encode, example_frames, trace_frames
from foliosim.report.view_html import embed_json, render_page
from foliosim.trace.examples import EXAMPLE_1, EXAMPLE_2, EXAMPLES
from foliosim.trace.generate import TraceSpec, generate_ops, setup_ops, to_op
from foliosim.trace.replay import replay
from tests.conftest import ALL_CONFIGS
from tests.view_doc import document_of, steps

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples"
PAGES_DIR = EXAMPLES_DIR / "pages"


def example_lines(n: int) -> list[str]:
    return (EXAMPLES_DIR / f"commit-example-{n}.jsonl").read_text().splitlines()


def generated_lines(seed: int, n_ops: int = 300, order: int = 3, n_folios: int = 4) -> list[str]:
    spec = TraceSpec(n_ops=n_ops, n_folios=n_folios, order=order, n_mms=3, seed=seed)
    return [json.dumps(op.to_json()) for op in setup_ops(spec) + [to_op(g) for g in generate_ops(spec)]]


def assert_document_matches_replay(lines: list[str], config: KernelConfig) -> dict[str, Any]:
    """Decode the page's document independently and compare every step with `foliosim replay`."""
    page = render_page(trace_frames(lines, config, "t"))
    doc = document_of(page)
    decoded = steps(doc)
    records = list(replay(lines, config, keep_going=True))
    assert len(decoded) == len(records)
    for got, rec in zip(decoded, records, strict=True):
        if "error" in rec:
            assert got["error"] == rec["error"] and got["touches"] == []
            continue
        assert got["error"] is None
        if "folio" not in rec:  # mm_new / mm_free
            assert got["touches"] == []
            continue
        (touch,) = got["touches"]
        expected = {k: v for k, v in rec.items() if k not in ("step", "op", "mm", "owner")}
        assert touch["record"] == expected, f"step {rec['step']}"
        assert touch["owner"] == rec.get("owner")
        shared = rec["maybe_mapped_shared"]
        false_shared = shared and len(rec["mapped_mms"]) <= 1
        assert bool(touch["flags"] & 2) == false_shared, f"step {rec['step']}"
        if false_shared:
            assert "false positive" in touch["verdict"]
    return doc


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda c: c.describe())
def test_example_documents_match_replay(config: KernelConfig) -> None:
    for n in (1, 2):
        assert_document_matches_replay(example_lines(n), config)


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda c: c.describe())
def test_generated_trace_documents_match_replay(config: KernelConfig) -> None:
    for seed in (1, 2):
        assert_document_matches_replay(generated_lines(seed), config)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), order=st.sampled_from([0, 1, 2, 4, 7]))
def test_random_traces_round_trip(seed: int, order: int) -> None:
    config = random.Random(seed).choice(ALL_CONFIGS)
    if order == 1 and config.word_bits == 32:
        order = 2  # no PMD mappings of order-1 folios on 32-bit (the generator maps PMDs)
    lines = generated_lines(seed, n_ops=60, order=order, n_folios=2)
    try:
        assert_document_matches_replay(lines, config)
    except AssertionError:
        print(f"seed={seed} order={order} config={config.describe()}")
        raise


def test_example_2_frames_say_what_the_commit_says() -> None:
    model = example_frames(EXAMPLE_2, KernelConfig())
    frames = [f for f in model.frames if f.folios and f.kind in ("map", "unmap")]
    assert [f.folios[0].owner for f in frames] == [
        "take_slot0", "take_slot1", "add_untracked", "sub_freed_keep", "sub_freed_keep"]
    assert [f.folios[0].false_shared for f in frames] == [False, False, False, False, True]
    assert frames[1].folios[0].slot_mms == ("App1", "App2")
    assert frames[-1].folios[0].slot_mms == (None, None)
    assert "not tracked" in frames[2].folios[0].why
    assert frames[-1].folios[0].verdict.endswith("false positive: really mapped by 1 MM")
    assert frames[2].note.startswith("(3) App3 faults in a folio page")
    # The one-line explanations are explain.py's, not re-worded.
    assert model.frames[-1].folios[0].verdict == explain_verdict_after(EXAMPLE_2.trace())


def explain_verdict_after(ops: list[dict[str, Any]]) -> str:
    from foliosim.system import RmapSystem
    from foliosim.trace.format import parse_op

    system = RmapSystem(KernelConfig())
    for op in ops:
        system.apply(parse_op(op))
    handle = system.folio_handle("F")
    return explain_verdict(handle.folio, handle.truth)


def test_example_1_ends_exclusive_without_false_positive() -> None:
    model = example_frames(EXAMPLE_1, KernelConfig())
    last = model.frames[-1].folios[0]
    assert not last.record["maybe_mapped_shared"] and not last.false_shared
    assert last.owner == "sub_freed_clear" and "shared bit cleared" in last.why


def test_rejected_operation_is_a_frame_and_changes_nothing() -> None:
    lines = [*example_lines(2)[:5],
             json.dumps({"op": "unmap", "folio": "F", "mm": "App3", "level": "pte", "page": 0}),
             json.dumps({"op": "bogus"}),
             *example_lines(2)[5:]]
    model = trace_frames(lines, KernelConfig())
    assert [f.step for f in model.rejected] == [5, 6]
    assert "does not map" in (model.rejected[0].error or "")
    assert "unknown op" in (model.rejected[1].error or "")
    assert model.frames[5].folios == ()
    # The state after the rejected lines is the same as without them.
    clean = trace_frames(example_lines(2), KernelConfig())
    assert model.frames[-1].folios[0].record == clean.frames[-1].folios[0].record


def test_bad_line_names_the_line() -> None:
    from foliosim.report.view import ViewInputError

    with pytest.raises(ValueError, match="line 2: not a JSON object"):
        trace_frames(['{"op": "mm_new", "mm": "A"}', "[1, 2]"], KernelConfig())
    with pytest.raises(ViewInputError, match="line 1: not UTF-8"):
        trace_frames([b"\xff\xfe"], KernelConfig())


def test_comments_and_line_numbers_survive() -> None:
    lines = ["# a comment line", "", json.dumps({"op": "mm_new", "mm": "A", "comment": "the first MM"}),
             json.dumps({"op": "folio_new", "folio": "F", "order": 2})]
    decoded = steps(document_of(render_page(trace_frames(lines, KernelConfig()))))
    assert [d["line"] for d in decoded] == [3, 4]
    assert decoded[0]["note"] == "the first MM"


def test_document_is_compact_and_deterministic() -> None:
    lines = generated_lines(7, n_ops=2000, order=4, n_folios=16)
    a = render_page(trace_frames(lines, KernelConfig(), "x"))
    b = render_page(trace_frames(lines, KernelConfig(), "x"))
    assert a == b
    doc = document_of(a)
    assert doc["schema"] == SCHEMA
    assert len(doc["states"]) < len(doc["steps"])  # states are interned
    # The whole page, template included, stays well under 250 bytes per step.
    assert len(a.encode()) < 250 * len(lines) + 60_000


def test_page_is_self_contained() -> None:
    page = render_page(example_frames(EXAMPLE_2, KernelConfig()))
    lowered = page.lower()
    for needle in ("http://", "https://", "src=", "@import", "url(", "fetch(", "xmlhttprequest", "websocket"):
        assert needle not in lowered, needle
    assert "content-security-policy" in lowered and "default-src 'none'" in lowered


def test_markers_and_script_end_in_input_are_harmless() -> None:
    lines = [json.dumps({"op": "mm_new", "mm": "</script><b>@@DATA@@", "comment": "@@TITLE@@ \u2028"})]
    page = render_page(trace_frames(lines, KernelConfig(), title="<t>@@DATA@@"))
    assert page.count("</script>") == 2  # the data element's and the program's
    assert "<title>&lt;t&gt;@@DATA@@</title>" in page
    assert steps(document_of(page))[0]["op"] == "mm_new </script><b>@@DATA@@ (MM id 1)"
    assert "<" not in embed_json({"a": "<"})


def test_process_part_is_encoded_only_when_present() -> None:
    assert "process" not in encode(trace_frames(example_lines(2), KernelConfig()))


# -- the CLI ---------------------------------------------------------------------------


def invoke(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(main, ["view", *args], input=input)


def test_cli_writes_a_page(tmp_path: Path) -> None:
    out = tmp_path / "v.html"
    result = invoke(str(EXAMPLES_DIR / "commit-example-2.jsonl"), "-o", str(out), "--word-bits", "32",
                    "--no-page-mapcount")
    assert result.exit_code == 0, result.output
    doc = document_of(out.read_text())
    assert doc["config"]["word_bits"] == 32 and doc["config"]["no_page_mapcount"] is True
    assert doc["title"] == "commit-example-2.jsonl"
    last = steps(doc)[-1]["touches"][0]["record"]
    assert last["pte_mapcounts"] is None and len(f"{last['mm_ids_word']:x}") <= 8


def test_cli_default_output_and_stdin(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(example_lines(1)) + "\n")
    assert invoke(str(trace)).exit_code == 0
    assert (tmp_path / "t.html").exists()
    out = tmp_path / "s.html"
    result = invoke("-", "-o", str(out), input="\n".join(example_lines(1)) + "\n")
    assert result.exit_code == 0 and "standard input" in out.read_text()
    result = invoke("-", input="{}\n")
    assert result.exit_code == 2 and "-o OUT.html" in result.output


@pytest.mark.parametrize(("content", "name", "code", "message"), [
    ("not json\n", "bad.jsonl", 1, "line 1: not a JSON object"),
    ("spawn P\nfrobnicate\n", "x.scenario", 1, "x.scenario: line 2: unknown command 'frobnicate'"),
])
def test_cli_refuses_bad_input_without_writing(tmp_path: Path, content: str, name: str, code: int,
                                               message: str) -> None:
    src = tmp_path / name
    src.write_text(content)
    out = tmp_path / "out.html"
    result = invoke(str(src), "-o", str(out))
    assert result.exit_code == code
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_cli_rejected_operation_writes_page_and_exits_3(tmp_path: Path) -> None:
    src = tmp_path / "r.jsonl"
    src.write_text('{"op":"mm_new","mm":"A"}\n{"op":"mm_new","mm":"A"}\n')
    out = tmp_path / "r.html"
    result = invoke(str(src), "-o", str(out))
    assert result.exit_code == 3
    assert "line 2 (step 1): mm 'A' already exists" in result.output
    assert steps(document_of(out.read_text()))[1]["error"] == "mm 'A' already exists"


def test_cli_errors(tmp_path: Path) -> None:
    result = invoke()
    assert result.exit_code == 2 and "missing INPUT" in result.output
    result = invoke(str(tmp_path / "none.jsonl"))
    assert result.exit_code == 1 and "no such file" in result.output
    result = invoke(str(EXAMPLES_DIR / "commit-example-1.jsonl"), "-o", str(tmp_path / "no" / "dir.html"))
    assert result.exit_code == 1 and "cannot write" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())
    result = invoke(str(EXAMPLES_DIR / "commit-example-1.jsonl"), "--examples", str(tmp_path))
    assert result.exit_code == 2


def test_examples_pages_are_committed_and_current(tmp_path: Path) -> None:
    """`foliosim view --examples examples/pages` made every committed page: the commit's examples and the scenarios."""
    result = invoke("--examples", str(tmp_path), "--scenarios", str(EXAMPLES_DIR))
    assert result.exit_code == 0, result.output
    scenarios = sorted(EXAMPLES_DIR.glob("*.scenario"))
    assert len(scenarios) >= 6
    names = [f"commit-example-{example.name[-1]}.html" for example in EXAMPLES] + [p.stem + ".html" for p in scenarios]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert sorted(p.name for p in PAGES_DIR.iterdir()) == sorted(names), \
        "examples/pages does not hold exactly these pages: run `foliosim view --examples examples/pages`"
    for name in names:
        fresh = (tmp_path / name).read_text()
        committed = PAGES_DIR / name
        assert committed.read_text() == fresh, f"{committed} is stale: run `foliosim view --examples examples/pages`"
    for example in EXAMPLES:
        doc = document_of((tmp_path / f"commit-example-{example.name[-1]}.html").read_text())
        assert doc["title"] == example.title
        assert [s["note"] for s in steps(doc)] == [s.narration for s in example.steps]
    for path in scenarios:
        doc = document_of((tmp_path / f"{path.stem}.html").read_text())
        assert doc["title"] == path.name and doc["process"]["snapshots"]


# -- the process-level part from a simulator-shaped snapshot ----------------------------------


def test_snapshot_process_view() -> None:
    from foliosim.report.view import PageRun, snapshot_process_view

    snap = {
        "step": 4,
        "tasks": {"C": (2, "mm2"), "P": (1, "mm1")},
        "mms": {
            "mm1": {"mm_id": 1, "users": 1, "count": 1, "vmas": ((16, 24, "buf anon private rw"),),
                    "ptes": ((16, "f1", 0, False), (17, "f1", 1, False), (18, "f1", 2, True), (20, "f3", 0, False)),
                    "pmds": ()},
            "mm2": {"mm_id": 2, "users": 1, "count": 1, "vmas": ((512, 1024, "thp anon private rw"),),
                    "ptes": (), "pmds": ((1, "f9", True),)},
        },
    }
    view = snapshot_process_view(snap, pmd_order=9)
    assert [(t.name, t.pid, t.mm) for t in view.tasks] == [("P", 1, "mm1"), ("C", 2, "mm2")]
    mm1, mm2 = view.mms
    assert mm1.vmas[0].runs == (PageRun(16, 2, "f1", 0), PageRun(18, 1, "f1", 2, write=True),
                                PageRun(19, 1, None), PageRun(20, 1, "f3", 0), PageRun(21, 3, None))
    assert mm2.vmas[0].runs == (PageRun(512, 512, "f9", 0, write=True, pmd=True),)
    doc = encode(ViewModel(KernelConfig(), "p", frames=[Frame(0, "x", "x", process=view)]))
    f9 = doc["folios"].index("f9")
    assert doc["process"]["snapshots"][0][1][1][4][0][3] == [[512, 512, f9, 0, 1, 1]]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["a", "b"]), st.integers(0, 3), st.booleans()),
                max_size=30))
def test_page_runs_cover_the_vma_and_keep_every_mapping(ptes: list[tuple[int, str, int, bool]]) -> None:
    from foliosim.report.view import page_runs

    start, end = 5, 35
    first: dict[int, tuple[str, int, bool]] = {}
    for vpn, folio, page, write in sorted(ptes):
        first.setdefault(vpn, (folio, page, write))
    runs = page_runs(start, end, [(v, 1, f, p, w, False) for v, f, p, w in ptes])
    expanded: dict[int, tuple[str, int, bool] | None] = {}
    pos = start
    for run in runs:
        assert run.vpn == pos and run.nr >= 1
        for k in range(run.nr):
            expanded[run.vpn + k] = None if run.folio is None else (run.folio, run.page + k, run.write)
        pos += run.nr
    assert pos == end
    assert expanded == {v: first.get(v) for v in range(start, end)}
    for a, b in itertools.pairwise(runs):  # maximal: no two neighbours could merge
        assert not (a.folio is None and b.folio is None)
        assert not (a.folio is not None and a.folio == b.folio and a.page + a.nr == b.page and a.write == b.write)


def test_readme_viewer_command_builds_the_linked_page(tmp_path: Path) -> None:
    line = next(x for x in (ROOT / "README.md").read_text().splitlines()[:12] if x.startswith("Viewer:"))
    command = line.split("`")[1]
    assert command.endswith("foliosim view --examples examples/pages")
    assert "(examples/pages/commit-example-2.html)" in line
    result = invoke("--examples", str(tmp_path))
    assert result.exit_code == 0 and (tmp_path / "commit-example-2.html").exists()
    readme = (ROOT / "README.md").read_text()
    for page in PAGES_DIR.iterdir():  # every regenerated page is linked
        assert f"(examples/pages/{page.name})" in readme, page.name
