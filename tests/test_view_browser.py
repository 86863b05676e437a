"""Viewer pages in a real headless Chromium (Debian's package), driven by Playwright.

Skipped, with the reason, when /usr/bin/chromium (or $FOLIOSIM_CHROMIUM) or the
Playwright client is missing: `.ci/run` installs both. Playwright's own browser
download (`playwright install`) is never used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from foliosim.kconfig import KernelConfig
from foliosim.report.view import trace_frames
from foliosim.report.view_html import render_page
from foliosim.trace.replay import replay
from tests import chromium
from tests.png import ink
from tests.view_fixture import process_model

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "examples" / "pages"
if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

_missing = chromium.missing()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(_missing is not None, reason=f"browser tests: {_missing}")]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium.launched() as b:
        yield b


class Opened:
    """A page in its own context, with every request and script error recorded."""

    def __init__(self, browser: Browser, path: Path, hash_: str = "") -> None:
        self.context = browser.new_context(viewport={"width": 1200, "height": 900})
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.url = path.resolve().as_uri()

        def route(r: Any) -> None:
            if r.request.url.split("#")[0] == self.url:
                r.continue_()
            else:
                self.blocked.append(r.request.url)
                r.abort()

        self.context.route("**/*", route)
        self.context.on("request", lambda req: self.requests.append(req.url))
        self.page: Page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.goto(self.url + hash_)
        self.page.wait_for_function("() => window.foliosimView !== undefined")

    def step(self) -> int:
        return int(self.page.evaluate("window.foliosimView.step()"))

    def key(self, key: str) -> None:
        self.page.keyboard.press(key)

    def card(self, folio: str) -> dict[str, Any]:
        """What the folio's card shows, read from the DOM."""
        return self.page.evaluate("""(name) => {
          const c = document.querySelector(`section.folio[data-folio="${name}"]`);
          if (!c) return null;
          const q = (s) => c.querySelector(s);
          const vis = (e) => !!e && !e.closest("[hidden]") && e.getClientRects().length > 0;
          const slots = [...c.querySelectorAll(".slot")].map(s => vis(s) ?
              [+s.dataset.mmId, +s.dataset.count, s.querySelector("b").textContent] : null);
          return {
            verdict: c.dataset.verdict, label: q(".verdict .lbl").textContent, text: q(".verdict .vtxt").textContent,
            why: vis(q(".why")) ? q(".why").textContent : "",
            slots: slots, shared: vis(q('[data-bit="shared"]')) ? q('[data-bit="shared"]').dataset.value : null,
            word: vis(q(".word")) ? q(".word").dataset.word : null,
            bits: [...c.querySelectorAll(".word .b")].map(b => b.textContent).join(""),
            strip: vis(q(".strip")) ? q(".strip").dataset.rle : null, stripNote: q(".stripnote").textContent,
            truth: q(".truth").dataset.mms, touched: c.classList.contains("touched"),
            verdictStyle: getComputedStyle(q(".verdict")).backgroundImage,
          };
        }""", folio)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def opened(browser: Browser) -> Iterator[Any]:
    pages: list[Opened] = []

    def open_(path: Path, hash_: str = "") -> Opened:
        o = Opened(browser, path, hash_)
        pages.append(o)
        return o

    yield open_
    for o in pages:
        assert not o.errors, f"script errors: {o.errors}"
        o.close()


def expected_records(n: int, config: KernelConfig | None = None) -> list[dict[str, Any]]:
    lines = (ROOT / "examples" / f"commit-example-{n}.jsonl").read_text().splitlines()
    return list(replay(lines, config or KernelConfig()))


def assert_card_matches(card: dict[str, Any], rec: dict[str, Any]) -> None:
    """The card shows the record's slots, shared bit, word, per-page counts, truth and verdict."""
    step = rec["step"]
    assert card is not None, f"step {step}: no card for {rec['folio']}"
    for idx in (0, 1):
        mm_id, count, _text = card["slots"][idx]
        assert mm_id == rec["mm_id"][idx], f"step {step} slot {idx}"
        assert count == rec["mm_id_mapcount"][idx] + 1, f"step {step} slot {idx}"
    assert card["shared"] == ("1" if rec["shared_bit"] else "0")
    assert int(card["word"], 16) == rec["mm_ids_word"]
    assert card["bits"] == format(rec["mm_ids_word"], "064b")
    assert json.loads(card["strip"]) == rec["pte_mapcounts"]
    assert card["truth"] == ",".join(rec["mapped_mms"])
    false_shared = rec["maybe_mapped_shared"] and len(rec["mapped_mms"]) <= 1
    want = "false" if false_shared else "shared" if rec["maybe_mapped_shared"] else "excl"
    assert card["verdict"] == want, f"step {step}"
    assert ("maybe mapped shared" if rec["maybe_mapped_shared"] else "mapped exclusively") in card["text"]


@pytest.mark.parametrize("n", [1, 2])
def test_stepping_shows_what_the_trace_says(opened: Any, n: int) -> None:
    o = opened(PAGES / f"commit-example-{n}.html")
    records = expected_records(n)
    assert o.step() == 0
    assert o.card("F") is None  # the folio does not exist before folio_new
    seen = []
    for rec in records[1:]:
        o.key("ArrowRight")
        assert o.step() == rec["step"]
        if "folio" in rec:
            card = o.card("F")
            assert_card_matches(card, rec)
            assert card["touched"]
            seen.append((card["slots"], card["verdict"], card["truth"], card["strip"]))
    # Back again: every step shows its own state, not the last one.
    for rec in reversed(records[3:-1]):
        o.key("ArrowLeft")
        assert o.step() == rec["step"]
        assert_card_matches(o.card("F"), rec)
    assert len({json.dumps(s) for s in seen}) == len(seen)  # every map/unmap changed what is shown
    assert o.requests == [o.url] and not o.blocked


def test_example_2_false_positive_is_labelled_and_explained(opened: Any) -> None:
    o = opened(PAGES / "commit-example-2.html")
    o.key("End")
    card = o.card("F")
    assert card["verdict"] == "false"
    assert "FALSE" in card["label"]  # a label, not only a colour
    assert "repeating-linear-gradient" in card["verdictStyle"]  # and a pattern
    assert "false positive: really mapped by 1 MM" in card["text"]
    assert "no slot owns all 2 mapping(s)" in card["why"]
    assert card["slots"][0][0] == 0 and card["slots"][1][0] == 0 and card["shared"] == "1"
    note = o.page.text_content("#noteText") or ""
    assert note.startswith("(4) App1 and App2 unmap")
    row = o.page.text_content("#timeline li.cur") or ""
    assert "FALSE shared" in row
    o.key("ArrowLeft")
    card = o.card("F")
    assert card["verdict"] == "shared" and "FALSE" not in card["label"]
    assert card["slots"][1][0] == 2 and card["slots"][1][1] == 2  # App2 (id 2) still holds 2 mappings


def test_address_keys_slider_and_play(opened: Any) -> None:
    o = opened(PAGES / "commit-example-2.html", "#step=6")
    assert o.step() == 6
    assert o.card("F")["why"].endswith("App3's mappings are not tracked")
    o.key("Home")
    assert o.step() == 0
    o.page.wait_for_function("() => location.hash === '#step=0'")
    o.key("End")
    assert o.step() == 8
    o.page.wait_for_function("() => location.hash === '#step=8'")
    o.page.evaluate("location.hash = '#step=5'")
    o.page.wait_for_function("() => window.foliosimView.step() === 5")
    o.page.fill("#slider", "3")
    assert o.step() == 3
    # The race CI once lost: the page's delayed address sync rewrites the hash
    # after the user typed a new one but before its hashchange event runs.
    o.page.evaluate("location.hash = '#step=6'; history.replaceState(null, '', '#step=3')")
    o.page.wait_for_function("() => window.foliosimView.step() === 6", timeout=5000)
    o.page.wait_for_function("() => location.hash === '#step=6'", timeout=5000)
    o.page.click("#timeline li[data-step='7']")
    assert o.step() == 7
    o.page.click("#bHome")
    o.page.select_option("#speed", "60")
    o.page.click("#bPlay")
    o.page.wait_for_function("() => window.foliosimView.step() === 8", timeout=5000)
    o.page.wait_for_function("() => document.getElementById('bPlay').textContent === 'play'")  # stopped at the end
    assert o.requests == [o.url] and not o.blocked


def test_screenshot_is_not_blank(opened: Any, tmp_path: Path) -> None:
    o = opened(PAGES / "commit-example-2.html", "#step=8")
    png = o.page.screenshot(clip={"x": 0, "y": 0, "width": 700, "height": 500})
    colours, share = ink(png)
    assert colours > 20 and share > 0.05, (colours, share)
    blank = o.context.new_page()
    blank.set_content("<html><body></body></html>")
    colours, share = ink(blank.screenshot(clip={"x": 0, "y": 0, "width": 200, "height": 100}))
    assert colours == 1 and share == 0  # the measure does tell a blank page


def test_32_bit_without_page_mapcounts(opened: Any, tmp_path: Path) -> None:
    config = KernelConfig(word_bits=32, no_page_mapcount=True)
    lines = (ROOT / "examples" / "commit-example-2.jsonl").read_text().splitlines()
    path = tmp_path / "ex2-32.html"
    path.write_text(render_page(trace_frames(lines, config, "32-bit")))
    o = opened(path, "#step=5")
    card = o.card("F")
    assert len(card["bits"]) == 32
    assert card["word"] == "80020001"  # shared bit 31, slot 1 = id 2 at bit 16, slot 0 = id 1
    assert card["strip"] is None and "CONFIG_NO_PAGE_MAPCOUNT" in card["stripNote"]
    assert card["verdict"] == "shared"


def test_process_level_part(opened: Any, tmp_path: Path) -> None:
    path = tmp_path / "proc.html"
    path.write_text(render_page(process_model()))
    o = opened(path, "#step=3")

    def table() -> dict[str, list[str]]:
        return o.page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#mms .mm')].map(m =>
            [m.dataset.mm, [...m.querySelectorAll('.run')].map(r => r.textContent)]))""")

    assert table() == {"mm1": ["f1[0..3] R"], "mm2": ["f1[0..3] R"]}
    assert o.page.is_hidden("#cowbox")
    o.key("ArrowRight")
    assert table() == {"mm1": ["f1[0..3] R"], "mm2": ["f2[0] W", "f1[1..3] R"]}
    cow = o.page.text_content("#cows .cow") or ""
    assert cow.startswith("COPY") and "rule: large: maybe mapped shared" in cow and "new folio f2" in cow
    tasks = o.page.text_content("#mms") or ""
    assert "tasks: C (pid 2)" in tasks
    assert o.card("f1")["verdict"] == "shared" and o.card("f2") is not None
    o.key("ArrowRight")  # exit C
    assert table() == {"mm1": ["f1[0..3] R"]}
    assert o.card("f1")["verdict"] == "excl" and o.page.is_hidden("#cowbox")
    o.key("ArrowRight")  # f2 is gone; P's write reuses f1 in place
    assert o.card("f2") is None
    assert table() == {"mm1": ["f1[0] R", "f1[1] W", "f1[2..3] R"]}
    cow = o.page.text_content("#cows .cow") or ""
    assert cow.startswith("REUSE") and "large: exclusive, refcount == mapcount" in cow
    o.key("Home")
    assert table() == {"mm1": []} and o.page.is_visible("#process")


def test_many_folios_show_touched_and_pinned(opened: Any, tmp_path: Path) -> None:
    from foliosim.trace.generate import TraceSpec, generate_ops, setup_ops, to_op

    spec = TraceSpec(n_ops=200, n_folios=12, order=4, n_mms=3, seed=5)
    ops = setup_ops(spec) + [to_op(g) for g in generate_ops(spec)]
    lines = [json.dumps(op.to_json()) for op in ops]
    path = tmp_path / "many.html"
    path.write_text(render_page(trace_frames(lines, KernelConfig(), "many")))
    records = list(replay(lines, KernelConfig()))
    o = opened(path, "#step=100")
    shown = o.page.evaluate("() => [...document.querySelectorAll('#cards .folio')].map(c => c.dataset.folio)")
    assert shown == [records[100]["folio"]]
    for rec in records[101:130]:
        o.key("ArrowRight")
        assert o.page.evaluate("() => [...document.querySelectorAll('#cards .folio')].map(c => c.dataset.folio)") \
            == [rec["folio"]]
        assert_card_matches(o.card(rec["folio"]), rec)
    pinned = "F3" if rec["folio"] != "F3" else "F4"
    o.page.click(f"#tiles .tile[data-folio='{pinned}']")
    o.key("ArrowRight")
    cards = o.page.evaluate("() => [...document.querySelectorAll('#cards .folio')].map(c => c.dataset.folio)")
    assert o.step() == 130
    assert pinned in cards and records[130]["folio"] in cards
    last = [r for r in records[:131] if r.get("folio") == pinned][-1]
    assert_card_matches(o.card(pinned), {**last, "step": 130})
    o.key("End")
    assert o.step() == len(records) - 1



# -- scenario pages: the process simulator's tasks, page tables and copy-on-write decisions ----------------


def page_table(o: Opened) -> dict[str, list[str]]:
    """Each MM's page-table row as the page shows it: the labels of its runs, VMA after VMA."""
    return o.page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#mms .mm')].map(m =>
        [m.dataset.mm, [...m.querySelectorAll('.run')].map(r => r.textContent)]))""")  # type: ignore[no-any-return]


def cow_texts(o: Opened) -> list[str]:
    if o.page.is_hidden("#cowbox"):
        return []
    return o.page.evaluate("() => [...document.querySelectorAll('#cows .cow')].map(c => c.textContent)")  # type: ignore[no-any-return]


def expected_table(snapshot: dict[str, Any], pmd_order: int) -> dict[str, list[str]]:
    """The run labels the page should show, computed page by page from the simulator's own snapshot."""
    out: dict[str, list[str]] = {}
    for name, mm in snapshot["mms"].items():
        pages = {vpn: (folio, page, write, False) for vpn, folio, page, write in mm["ptes"]}
        for idx, folio, write in mm["pmds"]:
            pages.update({(idx << pmd_order) + k: (folio, k, write, True) for k in range(1 << pmd_order)})
        labels: list[str] = []
        for start, end, _ in mm["vmas"]:
            runs: list[list[Any]] = []  # [first page's mapping or None, nr]
            for vpn in range(start, end):
                m = pages.get(vpn)
                if runs:
                    prev, nr = runs[-1]
                    if (m is None and prev is None) or (m is not None and prev is not None and m[0] == prev[0]
                                                        and m[1] == prev[1] + nr and m[2:] == prev[2:]):
                        runs[-1][1] += 1
                        continue
                runs.append([m, 1])
            for m, nr in runs:
                if m is None:
                    labels.append(f"none \u00d7{nr}" if nr > 1 else "none")
                else:
                    folio, page, write, pmd = m
                    pages_text = f"{page}..{page + nr - 1}" if nr > 1 else str(page)
                    labels.append(f"{folio}[{pages_text}] {'W' if write else 'R'}{' PMD' if pmd else ''}")
        out[name] = labels
    return out


def assert_step_matches(o: Opened, direct: Any, i: int, pmd_order: int) -> None:
    assert o.step() == i
    assert page_table(o) == expected_table(direct.snapshots[i], pmd_order), f"step {i}"
    shown = cow_texts(o)
    assert len(shown) == len(direct.cows[i]), f"step {i}: {shown}"
    for text, (task, mm, vpn, folio, page, level, rule, outcome, *_rest) in zip(shown, direct.cows[i], strict=True):
        assert text.startswith(outcome.upper()), text
        assert f"{task} ({mm})" in text and f"at {hex(vpn << 12)} on folio {folio} page {page} ({level})" in text
        assert f"rule: {rule}" in text, text
    head = o.page.text_content("#opText") or ""
    assert f"(line {direct.records[i].command.line}): {direct.records[i].command.text}" in head


@pytest.mark.parametrize("name", ["fork-short-lived-child-pte-thp", "prefork-server"])
def test_scenario_page_steps_as_the_simulator_says(opened: Any, name: str) -> None:
    from tests.test_view_scenario import DirectRun

    config = KernelConfig()
    direct = DirectRun((ROOT / "examples" / f"{name}.scenario").read_text(), config)
    o = opened(PAGES / f"{name}.html")
    n = len(direct.records)
    assert o.page.evaluate("window.foliosimView.steps") == n
    assert_step_matches(o, direct, 0, config.pmd_order)
    for i in range(1, n):
        o.key("ArrowRight")
        assert_step_matches(o, direct, i, config.pmd_order)
    for i in range(n - 2, n // 2, -1):  # and back: every step shows its own rows and decisions
        o.key("ArrowLeft")
        assert_step_matches(o, direct, i, config.pmd_order)
    assert o.requests == [o.url] and not o.blocked


def test_fork_short_lived_child_page(opened: Any) -> None:
    o = opened(PAGES / "fork-short-lived-child-pte-thp.html", "#step=2")
    assert page_table(o) == {"mm1": ["f1[0..511] W PMD"]}
    o.key("ArrowRight")
    o.key("ArrowRight")  # mprotect: the PMD is split, one page read-only
    assert page_table(o) == {"mm1": ["f1[0] W", "f1[1] R", "f1[2..511] W"]}
    o.page.evaluate("location.hash = '#step=6'")  # fork: both MMs map the folio read-only
    o.page.wait_for_function("() => window.foliosimView.step() === 6")
    assert page_table(o) == {"mm1": ["f1[0..511] R"], "mm2": ["f1[0..511] R"]}
    assert o.card("f1")["verdict"] == "shared" and "tasks: child (pid 2)" in (o.page.text_content("#mms") or "")
    o.page.evaluate("location.hash = '#step=9'")  # the child exits: exclusive again
    o.page.wait_for_function("() => window.foliosimView.step() === 9")
    assert page_table(o) == {"mm1": ["f1[0..511] R"]} and o.card("f1")["verdict"] == "excl"
    assert cow_texts(o) == []
    o.key("ArrowRight")
    o.key("ArrowRight")  # the parent's write: reused in place
    (cow,) = cow_texts(o)
    assert cow.startswith("REUSE") and "rule: large: exclusive, refcount == mapcount" in cow
    assert page_table(o) == {"mm1": ["f1[0] W", "f1[1..511] R"]}
    assert o.card("f1")["touched"]  # the folio the decision was about is highlighted
    o.key("ArrowLeft")
    assert cow_texts(o) == [] and page_table(o) == {"mm1": ["f1[0..511] R"]}
    assert "expect parent buf shared=no" in (o.page.text_content("#opText") or "")
    assert o.page.text_content("#noteText") == ""  # the line has no comment
    o.key("ArrowLeft")  # exit child: its comment narrates the step
    assert o.page.text_content("#noteText") == "slot 1 freed, slot 0 owns all 512 mappings: shared bit cleared"
    assert o.requests == [o.url] and not o.blocked


def test_prefork_server_page(opened: Any) -> None:
    o = opened(PAGES / "prefork-server.html", "#step=8")
    assert cow_texts(o) == [] and o.card("f1")["verdict"] == "shared"
    assert page_table(o)["mm4"][0] == "f1[0..511] R PMD"
    o.key("ArrowRight")  # w1 writes its heap: split its PMD, then copy one page
    split, copy = cow_texts(o)
    assert split.startswith("SPLIT") and "rule: pmd: not exclusive -> split PMD" in split
    assert copy.startswith("COPY") and "rule: large: maybe mapped shared" in copy and "new folio f6" in copy
    assert page_table(o)["mm2"][:3] == ["f1[0..1] R", "f6[0] W", "f1[3..511] R"]
    assert page_table(o)["mm1"][0] == "f1[0..511] R PMD"  # the master's mapping is untouched
    o.key("ArrowLeft")
    assert cow_texts(o) == [] and page_table(o)["mm2"][0] == "f1[0..511] R PMD"
    o.key("End")
    o.key("ArrowLeft")
    o.key("ArrowLeft")  # the master alone writes its heap: the whole PMD is reused
    (reuse,) = cow_texts(o)
    assert reuse.startswith("REUSE") and "rule: pmd: refcount == 1" in reuse
    assert o.card("f1")["verdict"] == "excl" and list(page_table(o)) == ["mm1"]
    assert o.requests == [o.url] and not o.blocked


@pytest.mark.parametrize("name", ["fork-short-lived-child-pte-thp", "prefork-server"])
def test_scenario_screenshot_is_not_blank(opened: Any, name: str) -> None:
    o = opened(PAGES / f"{name}.html", "#step=9")
    png = o.page.screenshot(full_page=True)
    colours, share = ink(png)
    assert colours > 20 and share > 0.05, (colours, share)
    assert o.requests == [o.url] and not o.blocked


def test_failed_expectation_is_shown(opened: Any, tmp_path: Path) -> None:
    from foliosim.report.view_scenario import scenario_frames

    text = "spawn P\nmmap P buf 16K\nwrite P buf 16K 1\nexpect P buf shared=yes   # wrong on purpose\nexit P\n"
    path = tmp_path / "failed.html"
    path.write_text(render_page(scenario_frames(text, KernelConfig(), "failed")[0]))
    o = opened(path, "#step=3")
    assert o.page.is_visible("#failText") and o.page.is_hidden("#errText")
    assert (o.page.text_content("#failText") or "").startswith("expectation failed: folio_maybe_mapped_shared(f1)")
    assert "FAILED" in (o.page.text_content("#timeline li.cur") or "")
    assert o.page.text_content("#noteText") == "wrong on purpose"
    o.key("ArrowRight")
    assert o.page.is_hidden("#failText")
