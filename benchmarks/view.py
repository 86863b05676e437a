"""Size and step latency of a `foliosim view` page for a 10 000-step trace (run on demand).

python benchmarks/view.py [--steps 10000] [--samples 400] [--write]

Builds the page for the first STEPS lines of the standard benchmark trace
(foliosim.trace.generate: 64 order-4 folios, 3 MMs), reports its size, then
opens it in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)
and measures, in the page, the time of one step forward: the key handler plus
the style and layout it causes (performance.now() around a dispatched
ArrowRight keydown and a forced layout). Medians; --write updates
docs/performance.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from foliosim.kconfig import KernelConfig
from foliosim.report.view import trace_frames
from foliosim.report.view_html import render_page
from foliosim.trace.generate import STANDARD_SPEC, TraceSpec, generate_ops, setup_ops, to_op

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

MEASURE = """([samples, start, kind]) => {
  const v = window.foliosimView, out = [];
  v.go(start);
  for (let i = 0; i < samples; i++) {
    const t0 = performance.now();
    if (kind === "next") document.dispatchEvent(new KeyboardEvent("keydown", {key: "ArrowRight", bubbles: true}));
    else if (kind === "prev") document.dispatchEvent(new KeyboardEvent("keydown", {key: "ArrowLeft", bubbles: true}));
    else v.go((start + 7919 * (i + 1)) % v.steps);
    void document.body.offsetHeight;  // force style and layout
    out.push(performance.now() - t0);
  }
  return out;
}"""


def trace_lines(steps: int) -> list[str]:
    spec = TraceSpec(n_ops=steps, n_folios=STANDARD_SPEC.n_folios, order=STANDARD_SPEC.order,
                     n_mms=STANDARD_SPEC.n_mms, seed=STANDARD_SPEC.seed)
    ops = setup_ops(spec)
    spec = TraceSpec(n_ops=steps - len(ops), n_folios=spec.n_folios, order=spec.order, n_mms=spec.n_mms,
                     seed=spec.seed)
    ops += [to_op(g) for g in generate_ops(spec)]
    return [json.dumps(op.to_json()) for op in ops]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--write", action="store_true", help="update docs/performance.md")
    args = parser.parse_args()

    lines = trace_lines(args.steps)
    t0 = time.perf_counter()
    page = render_page(trace_frames(lines, KernelConfig(), "benchmark", "standard trace prefix"))
    build_s = time.perf_counter() - t0
    raw = page.encode("utf-8")
    gz = len(gzip.compress(raw, 9))

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        path = Path(tmp) / "bench.html"
        path.write_bytes(raw)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page_ = browser.new_page(viewport={"width": 1300, "height": 1000})
        t0 = time.perf_counter()
        page_.goto(path.as_uri())
        page_.wait_for_function("() => window.foliosimView !== undefined")
        load_s = time.perf_counter() - t0
        version = browser.version
        start = args.steps // 3
        results = {kind: page_.evaluate(MEASURE, [args.samples, start, kind]) for kind in ("next", "prev", "jump")}
        browser.close()

    med = {k: statistics.median(v) for k, v in results.items()}
    p95 = {k: sorted(v)[int(len(v) * 0.95)] for k, v in results.items()}
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    report = [
        "<!-- view:start -->",
        "## Viewer page (benchmarks/view.py)",
        "",
        f"Machine: {cpu}, Python {platform.python_version()}, Chromium {version} (headless, Debian package); "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores while measuring.",
        f"Trace: the first {args.steps:,} lines of the standard benchmark trace (64 order-4 folios, 3 MMs, "
        f"seed {STANDARD_SPEC.seed}), 64-bit, CONFIG_PAGE_MAPCOUNT.",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| page size | {len(raw) / 1024:,.0f} KiB ({gz / 1024:,.0f} KiB gzipped) |",
        f"| bytes per step | {len(raw) / args.steps:,.0f} |",
        f"| build (`foliosim view`, in-process) | {build_s:.2f} s |",
        f"| load to first step shown | {load_s * 1000:,.0f} ms |",
        f"| one step forward (Right arrow), median / p95 of {args.samples} "
        f"| {med['next']:.2f} / {p95['next']:.2f} ms |",
        f"| one step back (Left arrow), median / p95 | {med['prev']:.2f} / {p95['prev']:.2f} ms |",
        f"| jump to a far step (slider), median / p95 | {med['jump']:.2f} / {p95['jump']:.2f} ms |",
        "",
        "Step times are measured in the page (performance.now() around the key handler and the",
        "forced style and layout); painting is not included.",
        "<!-- view:end -->",
    ]
    print("\n".join(report))
    if args.write:
        from perfdoc import update_section

        body = [line for line in report if line not in ("<!-- view:start -->", "<!-- view:end -->")]
        update_section("view", "\n".join(body))

if __name__ == "__main__":
    main()
