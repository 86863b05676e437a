"""The ``foliosim`` command: one thin function per verb; all I/O lives here.

Start-up matters (people script thousands of replays), so heavy modules are
imported inside the verbs that need them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import click

from foliosim import __version__

WORD_BITS = click.option("--word-bits", type=click.Choice(["64", "32"]), default="64", show_default=True,
                         help="64 models CONFIG_64BIT; 32 a 32-bit kernel (15-bit ids, short per-MM counts).")
NO_PAGE_MAPCOUNT = click.option("--no-page-mapcount", is_flag=True,
                                help="Model CONFIG_NO_PAGE_MAPCOUNT (no per-page mapcounts for large folios).")


def _config(word_bits: str, no_page_mapcount: bool) -> Any:
    from foliosim.kconfig import KernelConfig

    return KernelConfig(word_bits=int(word_bits), no_page_mapcount=no_page_mapcount)


def _open_lines(path: str) -> tuple[Iterator[bytes] | None, str | None]:
    if path == "-":
        return iter(sys.stdin.buffer), None
    try:
        handle: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed when the process exits
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}"
    return iter(handle), None


def _emit(rec: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(rec, separators=(",", ":")) + "\n")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="foliosim")
def main() -> None:
    """foliosim: Linux v6.15 large-folio mapcounts and MM owner tracking, bit for bit.

    \b
    Start here (from the foliosim checkout, which has examples/):
      foliosim examples                  the commit's Example 1 and 2, step by step, with the verdict and why
      foliosim show examples/commit-example-2.jsonl
                                         one folio's counts, slots and _mm_ids word, bit by bit
      foliosim run examples/prefork-server.scenario
                                         processes on the simulated machine: a timeline and a summary
      foliosim view examples/prefork-server.scenario -o prefork.html
                                         the same as a page to step through in a browser
      foliosim check --mms 3 --order 2 --depth 4
                                         prove the tracking's properties on a small bound
    Then `foliosim COMMAND --help`; README.md and docs/ describe every command and format.
    """


@main.command()
@click.argument("trace", metavar="TRACE.jsonl")
@WORD_BITS
@NO_PAGE_MAPCOUNT
@click.option("--keep-going", is_flag=True, help="Go on after a rejected operation.")
def replay(trace: str, word_bits: str, no_page_mapcount: bool, keep_going: bool) -> None:
    """Apply an rmap trace (JSON Lines, - for stdin) and print each folio's state after each step.

    Exit status: 0 all operations valid, 3 an operation was rejected, 1 unreadable
    input or a line that is not a JSON object, 2 a bad command line.
    """
    from foliosim.trace.replay import EXIT_BAD_INPUT, ReplayStatus
    from foliosim.trace.replay import replay as run_replay

    lines, error = _open_lines(trace)
    if lines is None:
        _emit({"step": 0, "error": error})
        sys.exit(EXIT_BAD_INPUT)
    status = ReplayStatus()
    try:
        for rec in run_replay(lines, _config(word_bits, no_page_mapcount), keep_going, status):
            _emit(rec)
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
    except OSError as exc:
        _emit({"step": status.steps, "error": f"cannot read {trace}: {exc.strerror or exc}"})
        sys.exit(EXIT_BAD_INPUT)
    sys.exit(status.exit_code)


def _quiet_broken_pipe() -> None:
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)


@main.command()
@click.argument("trace", metavar="TRACE.jsonl")
@click.option("--folio", "folio_name", default=None, help="Folio to draw (default: the last one touched).")
@WORD_BITS
@NO_PAGE_MAPCOUNT
def show(trace: str, folio_name: str | None, word_bits: str, no_page_mapcount: bool) -> None:
    """Replay TRACE and draw one folio's state: counts, slots and the _mm_ids word bit by bit."""
    from foliosim.report.show import render_folio
    from foliosim.system import RmapSystem
    from foliosim.trace.replay import EXIT_BAD_INPUT, ReplayStatus
    from foliosim.trace.replay import replay as run_replay

    lines, error = _open_lines(trace)
    if lines is None:
        click.echo(f"foliosim show: {error}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    system = RmapSystem(_config(word_bits, no_page_mapcount))
    status = ReplayStatus()
    last: str | None = None
    errors: list[str] = []
    for rec in run_replay(lines, None, False, status, system):
        if "error" in rec:
            where = f"line {rec['line']}" if "line" in rec else f"step {rec['step']}"
            message = str(rec["error"])
            errors.append(message if message.startswith(f"{where}:") else f"{where}: {message}")
        elif "folio" in rec and rec["folio"] in system.folios:
            last = rec["folio"]
    name = folio_name or last
    if name is None or name not in system.folios:
        known = ", ".join(sorted(system.folios)) or "none"
        what = f"no folio {name!r}" if name is not None else "no folio to draw"
        click.echo(f"foliosim show: {'; '.join([*errors, what])} after the trace (folios: {known})", err=True)
        sys.exit(EXIT_BAD_INPUT)
    for message in errors:  # replay stops at the first one
        click.echo(f"foliosim show: {message} (state shown as before it)", err=True)
    for line in render_folio(system, system.folios[name]):
        click.echo(line)
    sys.exit(status.exit_code)


@main.command()
@click.argument("which", required=False, type=click.Choice(["1", "2", "all"]), default="all")
@WORD_BITS
@NO_PAGE_MAPCOUNT
@click.option("--trace", "trace_only", is_flag=True, help="Print the example's rmap trace instead.")
def examples(which: str, word_bits: str, no_page_mapcount: bool, trace_only: bool) -> None:
    """Replay the commit message's Example 1 and Example 2, step by step, with the verdict and why."""
    from foliosim.report.examples import run_example
    from foliosim.trace.examples import EXAMPLES

    chosen = EXAMPLES if which == "all" else (EXAMPLES[int(which) - 1],)
    config = _config(word_bits, no_page_mapcount)
    for example in chosen:
        if trace_only:
            for op in example.trace():
                _emit(op)
            continue
        lines, ok = run_example(example, config)
        for line in lines:
            click.echo(line)
        click.echo("")
        if not ok:
            sys.exit(1)



@main.command()
@click.option("--mms", type=click.IntRange(1, 8), default=2, show_default=True, help="Number of MM names.")
@click.option("--order", type=click.IntRange(1, 6), default=2, show_default=True, help="Folio order.")
@click.option("--depth", type=click.IntRange(0, 60), default=5, show_default=True,
              help="Operations after the set-up (breadth-first bound).")
@WORD_BITS
@NO_PAGE_MAPCOUNT
@click.option("--levels", default="pte,pmd", show_default=True, help="Levels offered: pte, pmd or both.")
@click.option("--max-nr", type=click.IntRange(0, 64), default=0, show_default=True,
              help="Largest PTE batch (0: the whole folio; 1 also makes all pages symmetric).")
@click.option("--ops", default="map_new_anon,map,dup,unmap", show_default=True,
              help="Operations offered (map_new_anon, map, dup, unmap).")
@click.option("--reuse-ids", is_flag=True, help="Also offer mm_free/mm_new, so MM ids are freed and reused.")
@click.option("--property", "properties", multiple=True,
              help="Check only this property (repeatable): sanity, soundness, precision, counters, full-unmap.")
@click.option("--mutant", default=None, help="Explore a deliberately wrong owner tracking ('list' lists them).")
@click.option("--stop-at-first", is_flag=True, help="Stop at the first violation.")
@click.option("--max-states", type=click.IntRange(1), default=None, help="State budget.")
@click.option("--max-seconds", type=float, default=None, help="Time budget in seconds.")
@click.option("--counterexample", "cx_path", type=click.Path(dir_okay=False), default=None,
              help="Write the first counterexample (else the imprecision example) to this file as a replayable "
                   "trace; the others found are named on stderr. The folder must exist.")
@click.option("--max-memory", default=None, metavar="SIZE",
              help="Memory the search may keep (e.g. 2G, 500M; default: half of MemAvailable). Stops cleanly, "
                   "reporting the depth completed, when the next level would pass it.")
@click.option("--replay", "replay_path", default=None, metavar="TRACE.jsonl",
              help="Instead of exploring, replay TRACE (with --mutant's tracking) and report the first violation.")
@click.option("--interleave", is_flag=True,
              help="Explore CPU interleavings of concurrent updates instead. It uses --mms (raised to one MM per "
                   "CPU), --order, --depth (at most 3: the sequential start states), --word-bits, "
                   "--no-page-mapcount, --cpus, --reader, --no-lock, --mutant, --max-seconds, --max-states, "
                   "--max-memory (with --max-seconds, also for listing the start states), --stop-at-first, "
                   "--counterexample, --json and --quiet; it refuses --levels, --max-nr, --ops, "
                   "--reuse-ids, --property and --engine.")
@click.option("--cpus", type=click.IntRange(2, 3), default=2, show_default=True,
              help="--interleave: writer CPUs, each updating for a different MM.")
@click.option("--reader", type=click.Choice(["none", "maybe_shared", "cow", "cow_precheck"]), default="none",
              show_default=True, help="--interleave: add a lock-free reader CPU.")
@click.option("--no-lock", is_flag=True, help="--interleave: remove the bit spinlock (finds the lost update).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@click.option("--engine", type=click.Choice(["auto", "fast", "reference"]), default="auto", show_default=True,
              help="Sequential search: compiled (fast, numba) or pure Python (reference); auto: fast when it "
                   "can run the exploration (kernel tracking, numba installed).")
def check(mms: int, order: int, depth: int, word_bits: str, no_page_mapcount: bool, levels: str, max_nr: int,
          ops: str, reuse_ids: bool, properties: tuple[str, ...], mutant: str | None, stop_at_first: bool,
          max_states: int | None, max_seconds: float | None, cx_path: str | None, replay_path: str | None,
          interleave: bool, cpus: int, reader: str, no_lock: bool, as_json: bool, quiet: bool,
          engine: str, max_memory: str | None) -> None:
    """Exhaustively explore a bounded configuration and prove the tracking's properties, or print
    the shortest counterexample as an rmap trace that `foliosim replay` accepts.

    Exit status: 0 every checked property holds (no finding; also when a budget
    stopped the search: the summary says where), 4 a property is violated (or,
    with --interleave, a lost update / unsafe decision was found), 1 unreadable
    input, an unwritable --counterexample or a bound that cannot start within
    --max-memory, 2 a bad command line.
    """
    from click.core import ParameterSource

    from foliosim.report.check import run_check

    ctx = click.get_current_context()
    sequential_only = [f"--{name.replace('_', '-')}" for name in ("levels", "max_nr", "ops", "reuse_ids", "engine")
                       if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE]
    if ctx.get_parameter_source("properties") is ParameterSource.COMMANDLINE:
        sequential_only.append("--property")

    code = run_check(
        mms=mms, order=order, depth=depth, kconfig=_config(word_bits, no_page_mapcount), levels=levels,
        max_nr=max_nr, ops=ops, reuse_ids=reuse_ids, properties=properties, mutant=mutant,
        stop_at_first=stop_at_first, max_states=max_states, max_seconds=max_seconds, cx_path=cx_path,
        replay_path=replay_path, interleave=interleave, cpus=cpus, reader=reader, no_lock=no_lock,
        as_json=as_json, quiet=quiet, out=click.echo, err=lambda s: click.echo(s, err=True), engine=engine,
        max_memory=max_memory, interleave_ignored=tuple(sequential_only))
    sys.exit(code)



@main.command("run")
@click.argument("scenario", metavar="FILE.scenario")
@click.option("--trace", "trace_out", default=None, metavar="OUT.jsonl",
              help="Write every rmap call the simulator made as an rmap trace (replayable with `foliosim replay`).")
@WORD_BITS
@NO_PAGE_MAPCOUNT
@click.option("--no-check", is_flag=True, help="Do not run the isolation oracle after every step.")
@click.option("-v", "--verbose", is_flag=True, help="Also show every rmap call and memory access.")
@click.option("--engine", type=click.Choice(["auto", "fast", "reference"]), default="auto", show_default=True,
              help="fast: the compiled simulator (needs the `fast` extra; steps it does not model fall back to the "
                   "reference, with a note); reference: the pure-Python one (events in the timeline); auto: fast "
                   "when numba is installed.")
def run_scenario(scenario: str, trace_out: str | None, word_bits: str, no_page_mapcount: bool,
                 no_check: bool, verbose: bool, engine: str) -> None:
    """Run a scenario file on the simulated machine and print its timeline and a summary.

    Exit status: 0 ok, 1 unreadable or malformed scenario (the line is named),
    2 --engine fast without numba, 4 an `expect` failed or the isolation oracle found a violation.
    """
    from foliosim.fast import HAVE_NUMBA, NUMBA_MISSING
    from foliosim.report.timeline import render_step, render_summary
    from foliosim.vm.scenario import ScenarioError
    from foliosim.vm.scenario import run as run_file

    try:
        with open(scenario, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        click.echo(f"foliosim run: cannot read {scenario}: {getattr(exc, 'strerror', None) or exc}", err=True)
        sys.exit(1)
    config = _config(word_bits, no_page_mapcount)
    if trace_out is not None:
        _check_writable(trace_out, "run", "--trace")

    if engine == "fast" and not HAVE_NUMBA:
        click.echo(f"foliosim run: {NUMBA_MISSING}; or use --engine reference", err=True)
        sys.exit(2)
    if engine != "reference" and HAVE_NUMBA:
        fast = _run_scenario_fast(scenario, text, config, not no_check, trace_out)
        if fast is not None:
            sys.exit(fast)

    def show(rec: Any, machine: Any) -> None:
        for line in render_step(rec, machine, verbose):
            click.echo(line)

    try:
        result = run_file(text, config, not no_check, on_step=show)
    except ScenarioError as exc:
        click.echo(f"foliosim run: {scenario}: {exc}", err=True)
        sys.exit(1)
    if trace_out is not None and result.error is not None:
        click.echo(f"foliosim run: {trace_out} not written: the scenario stopped at a bad line", err=True)
    elif trace_out is not None:  # written whole or not at all: an existing file is never left half-replaced
        _write_atomic(trace_out, "".join(json.dumps(op.to_json(), separators=(",", ":")) + "\n"
                                         for op in result.machine.trace), "run")
    if result.error is not None:
        click.echo(f"foliosim run: {scenario}: {result.error}", err=True)
        sys.exit(1)
    for line in render_summary(result):
        click.echo(line)
    if result.violation or result.failures:
        sys.exit(4)


def _run_scenario_fast(scenario: str, text: str, config: Any, check: bool, trace_out: str | None) -> int | None:
    """`run` on the compiled simulator: prints the timeline and returns the exit status, or returns None (after a
    one-line note) when the scenario needs something the fast engine does not model."""
    from foliosim.fast.sim.engine import Unsupported
    from foliosim.fast.sim.scenario import render_step, render_summary
    from foliosim.fast.sim.scenario import run as run_fast
    from foliosim.vm.scenario import ScenarioError

    lines: list[str] = []
    seen = [0]

    def show(rec: Any, machine: Any) -> None:
        lines.extend(render_step(rec, machine, machine.cow_decisions[seen[0]:]))
        seen[0] = len(machine.cow_decisions)

    try:
        result = run_fast(text, config, check, on_step=show)
    except ScenarioError as exc:
        click.echo(f"foliosim run: {scenario}: {exc}", err=True)
        return 1
    except Unsupported as exc:
        click.echo(f"foliosim run: the fast engine does not model {exc}: running the reference engine", err=True)
        return None
    for line in lines:
        click.echo(line)
    if trace_out is not None and result.error is not None:
        click.echo(f"foliosim run: {trace_out} not written: the scenario stopped at a bad line", err=True)
    elif trace_out is not None:
        _write_atomic(trace_out, "".join(json.dumps(op.to_json(), separators=(",", ":")) + "\n"
                                         for op in result.machine.trace), "run")
    if result.error is not None:
        click.echo(f"foliosim run: {scenario}: {result.error}", err=True)
        return 1
    for line in render_summary(result):
        click.echo(line)
    return 4 if result.violation or result.failures else 0


@main.command("live")
@click.argument("scenario", metavar="FILE.scenario", required=False)
@click.option("--set-thp", is_flag=True,
              help="Set the THP/mTHP sysfs sizes the scenario needs for this run (restored on every exit).")
@click.option("--json", "json_out", metavar="OUT.json", help="Write every snapshot of both sides to OUT.json.")
@click.option("-v", "--verbose", is_flag=True, help="Show every fault and every disagreement.")
@click.option("--mutant", type=click.Choice(["never-clear-shared", "never-reuse-large"]),
              help="Run a deliberately wrong simulator (to see that the comparison catches it).")
@click.option("--capability", "capability_only", is_flag=True,
              help="Only print what the live side can observe here (full, pages or none) and exit (0, or 6 for none).")
def live_cmd(scenario: str | None, set_thp: bool, json_out: str | None, verbose: bool, mutant: str | None,
             capability_only: bool) -> None:
    """Run a scenario in the simulator and as real processes on this kernel, and compare them line by line.

    Needs root (pagemap PFNs, kpageflags); with BPF and BTF it also reads each folio's own fields (slots,
    shared bit, mapcounts, refcount). Exit status: 0 all agree, 5 a divergence, 1 a bad scenario,
    6 the live side cannot run here (the message says what is missing).
    """
    import os

    from foliosim.host.errors import HostError, HostUnavailable
    from foliosim.live.run import EXIT_BAD_SCENARIO, EXIT_CANNOT_RUN, CannotRun, check_scenario, run_live
    from foliosim.report.live import line_row, side_by_side, summary
    from foliosim.vm.scenario import ScenarioError

    if capability_only:
        from foliosim.live.run import probe_capability

        cap = probe_capability()
        click.echo(cap.describe())
        sys.exit(EXIT_CANNOT_RUN if cap.level == "none" else 0)
    if scenario is None:
        click.echo("foliosim live: give a scenario file (or --capability)", err=True)
        sys.exit(2)
    try:
        with open(scenario, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        click.echo(f"foliosim live: cannot read {scenario}: {getattr(exc, 'strerror', None) or exc}", err=True)
        sys.exit(EXIT_BAD_SCENARIO)
    try:
        check_scenario(text)
    except ScenarioError as exc:
        click.echo(f"foliosim live: {scenario}: {exc}", err=True)
        sys.exit(EXIT_BAD_SCENARIO)
    except CannotRun as exc:
        click.echo(f"foliosim live: {scenario}: {exc}", err=True)
        sys.exit(EXIT_CANNOT_RUN)
    if json_out is not None:
        _check_writable(json_out, "live")

    def progress(res: Any) -> None:
        for row in line_row(res, verbose):
            click.echo(row)

    try:
        from foliosim.live.mutants import LIVE_MUTANTS

        run = run_live(text, set_thp=set_thp, require_full=os.environ.get("FOLIOSIM_LIVE") == "required",
                       progress=progress, keep_snapshots=json_out is not None,
                       simulator_hook=LIVE_MUTANTS[mutant] if mutant else None,
                       on_capability=lambda cap: click.echo(f"foliosim live: {cap.describe()}", err=True))
    except (CannotRun, HostUnavailable, HostError) as exc:  # HostUnavailable is what is missing; HostError a failure
        failed = "" if isinstance(exc, (CannotRun, HostUnavailable)) else "the live run failed: "
        click.echo(f"foliosim live: {failed}{exc}", err=True)
        sys.exit(EXIT_CANNOT_RUN)
    for row in side_by_side(run.first):
        click.echo(row)
    for row in summary(run):
        click.echo(row)
    if json_out is not None:
        doc = {"scenario": scenario, "capability": run.capability.describe(), "thp": run.thp_changed,
               "khugepaged_lines": run.khugepaged,
               "lines": [{"line": r.line, "command": r.command, "sim_result": r.sim_result,
                          "live_result": r.live_result, "compared": r.compared, "agreed": r.agreed,
                          "not_observed": r.not_observed, "faults": r.faults,
                          "diffs": [d.describe() for d in r.diffs]} for r in run.lines],
               "snapshots": run.snapshots}
        _write_atomic(json_out, json.dumps(doc, default=_json_default, indent=1), "live")
    sys.exit(run.exit_code)


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _check_writable(path: str, verb: str, option: str = "--json") -> None:
    """Fail early (exit 1, one line) when ``path`` cannot be written: before any work starts."""
    problem = _output_file_problem(path, option)
    if problem:
        click.echo(f"foliosim {verb}: {problem}", err=True)
        sys.exit(1)


def _write_atomic(path: str, text: str, verb: str) -> None:
    """Write ``text`` whole or not at all (foliosim.outfile); one line and exit 1 when it cannot."""
    from foliosim.outfile import write_text

    try:
        write_text(path, text)
    except OSError as exc:
        click.echo(f"foliosim {verb}: cannot write {path}: {exc.strerror or exc}", err=True)
        sys.exit(1)


@main.command()
@click.argument("input_path", metavar="INPUT", required=False)
@click.option("-o", "--output", metavar="OUT.html", default=None,
              help="Page to write (default: INPUT with .html instead of its extension).")
@WORD_BITS
@NO_PAGE_MAPCOUNT
@click.option("--title", default=None, help="Page title (default: the input's file name).")
@click.option("--examples", "examples_dir", metavar="DIR", default=None,
              help="Instead of INPUT: write the pages of the commit's Example 1 and Example 2, and one page per "
                   "scenario of --scenarios, into DIR.")
@click.option("--scenarios", "scenarios_dir", metavar="SRC", default=None,
              help="With --examples: the directory whose *.scenario files get pages (default: ./examples).")
def view(input_path: str | None, output: str | None, word_bits: str, no_page_mapcount: bool, title: str | None,
         examples_dir: str | None, scenarios_dir: str | None) -> None:
    """Write a self-contained HTML page that steps through an rmap trace (INPUT.jsonl, - for stdin)
    or a scenario (INPUT with any other extension: the process simulator runs it).

    The page needs no network: open it in any browser; keys Left/Right, Home/End,
    Space; the address keeps #step=N. Exit status: 0 written, 1 unreadable input
    or output or a malformed scenario (no page written), 2 bad command line, 3
    the trace has a rejected operation, 4 a scenario's `expect` failed or the
    isolation oracle found a violation (for 3 and 4 the page is written and shows it).
    """
    import os
    from typing import NoReturn

    from foliosim.errors import FoliosimError
    from foliosim.report.view import ViewInputError, ViewModel, example_frames, trace_frames
    from foliosim.report.view_html import render_page

    def fail(message: str, code: int = 1) -> NoReturn:
        click.echo(f"foliosim view: {message}", err=True)
        sys.exit(code)

    def write(path: str, text: str) -> None:
        from foliosim.outfile import write_text

        try:
            write_text(path, text)  # all or nothing: no half-written page
        except (OSError, UnicodeError) as exc:
            fail(f"cannot write {_shown(path)}: {getattr(exc, 'strerror', None) or exc}")
        click.echo(f"foliosim view: wrote {_shown(path)} ({len(text.encode('utf-8')) / 1024:.0f} KiB)", err=True)

    def scenario(path: str, page_title: str | None) -> ViewModel:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            fail(f"cannot read {_shown(path)}: {exc.strerror or exc}")
        return scenario_text(data, path, page_title)

    def scenario_text(data: bytes, path: str, page_title: str | None) -> ViewModel:
        from foliosim.report.view_scenario import scenario_frames
        from foliosim.vm.scenario import ScenarioError

        shown = "standard input" if path == "-" else _shown(path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            fail(f"cannot read {shown}: not UTF-8 text ({exc.reason} at byte {exc.start})")
        name = "standard input" if path == "-" else _shown(os.path.basename(path))
        try:
            return scenario_frames(text, config, page_title or name, name)[0]
        except ScenarioError as exc:
            fail(f"{shown}: {exc} (no page written)")

    def failures(path: str, model: ViewModel) -> str | None:
        failed = model.failed
        if not failed:
            return None
        return (f"{path}: {len(failed)} step(s) failed, first at line {failed[0].line} (step {failed[0].step}): "
                f"{failed[0].failed}; the page shows them")

    config = _config(word_bits, no_page_mapcount)
    title = _shown(title) if title is not None else None
    if examples_dir is not None:
        if input_path is not None or output is not None:
            fail("give either INPUT (with -o) or --examples DIR, not both", 2)
        from foliosim.trace.examples import EXAMPLES

        source_dir = scenarios_dir or "examples"
        if not os.path.isdir(source_dir):
            if scenarios_dir is not None:
                fail(f"--scenarios {source_dir}: no such directory")
            click.echo("foliosim view: no ./examples directory here (run from the foliosim checkout or give "
                       "--scenarios SRC): writing the commit's examples only", err=True)
            source_dir = ""
        try:
            os.makedirs(examples_dir, exist_ok=True)
        except OSError as exc:
            fail(f"cannot create {examples_dir}: {exc.strerror or exc}")
        suffix = ("" if config.word_bits == 64 else "-32bit") + ("-no-page-mapcount" if no_page_mapcount else "")
        for example in EXAMPLES:
            name = f"commit-{example.name[:-1]}-{example.name[-1]}{suffix}.html"
            write(os.path.join(examples_dir, name), render_page(example_frames(example, config)))
        problems = []
        for entry in sorted(os.listdir(source_dir)) if source_dir else []:
            if entry.endswith(".scenario"):
                path = os.path.join(source_dir, entry)
                model = scenario(path, None)
                write(os.path.join(examples_dir, entry.removesuffix(".scenario") + suffix + ".html"),
                      render_page(model))
                problems.append(failures(path, model))
        for problem in filter(None, problems):
            click.echo(f"foliosim view: {problem}", err=True)
        if any(problems):
            sys.exit(4)
        return
    if scenarios_dir is not None:
        fail("--scenarios goes with --examples DIR", 2)
    if input_path is None:
        fail("missing INPUT (an rmap trace .jsonl or - for stdin, or a scenario file), or use --examples DIR", 2)
    shown_input = "standard input" if input_path == "-" else _shown(input_path)
    if input_path != "-":
        if os.path.isdir(input_path):
            fail(f"{shown_input}: is a directory (give an rmap trace or a scenario file, or --examples DIR)")
        if not os.path.exists(input_path):
            fail(f"cannot read {shown_input}: no such file")
        if not os.path.isfile(input_path):
            fail(f"cannot read {shown_input}: not a regular file")
    if output is None:
        if input_path == "-":
            fail("reading standard input: give the page's name with -o OUT.html", 2)
        output = os.path.splitext(input_path)[0] + ".html"
    page_problem = _output_file_problem(output, "-o")
    if page_problem:
        fail(page_problem)
    lines, error = _open_lines(input_path)
    if lines is None:
        fail(_shown(str(error)))
    # A trace or a scenario? A .jsonl file is a trace and a .scenario file a scenario; anything else (standard
    # input too) is what its first line after blanks and # comments says: a JSON object starts a trace.
    is_trace: bool | None = True if input_path.endswith(".jsonl") else False if input_path.endswith(
        ".scenario") else None
    if is_trace is None:
        is_trace, lines = _sniff_trace(lines)
    if is_trace is None:
        is_trace = input_path == "-"
    if not is_trace:
        try:
            data = b"".join(lines)
        except OSError as exc:
            fail(f"cannot read {shown_input}: {exc.strerror or exc}")
        model = scenario_text(data, input_path, title)
        write(output, render_page(model))
        failure = failures(shown_input, model)
        if failure:
            fail(failure, 4)
        return
    source = "standard input" if input_path == "-" else _shown(os.path.basename(input_path))
    from foliosim.report.progress import StatusLine, reading

    status = StatusLine("foliosim view: ", interval=5.0, first_after=2.0)
    size = os.path.getsize(input_path) if input_path != "-" else None
    try:
        model = trace_frames(reading(lines, status, size, shown_input), config, title or source, source)
    except (ViewInputError, ValueError) as exc:
        status.done()
        fail(f"{shown_input}: {exc} (no page written)")
    except (OSError, FoliosimError) as exc:
        status.done()
        fail(f"cannot read {shown_input}: {exc}")
    status.update(f"writing the page ({len(model.frames):,} steps)", force=status.elapsed() > 2)
    page = render_page(model)
    status.done()
    write(output, page)
    rejected = model.rejected
    if rejected:
        first = rejected[0]
        fail(f"{source}: {len(rejected)} operation(s) rejected, first at line {first.line} (step {first.step}): "
             f"{first.error}; the page shows them", 3)



def _sniff_trace(lines: Iterator[bytes]) -> tuple[bool | None, Iterator[bytes]]:
    """Whether the first significant line (not blank, not a # comment) is a JSON object, and every line again.

    None when there is no such line. Only the lines up to that one are read ahead.
    """
    import itertools

    head: list[bytes] = []
    verdict: bool | None = None
    for raw in lines:
        head.append(raw)
        stripped = raw.strip()
        if stripped and not stripped.startswith(b"#"):
            verdict = stripped.startswith(b"{")
            break
    return verdict, itertools.chain(head, lines)


# --------------------------------------------------------------------------- evaluator (issue 5)
def _param_values(text: str) -> list[Any]:
    out: list[Any] = []
    for word in text.split(","):
        try:
            out.append(int(word))
        except ValueError:
            try:
                out.append(float(word))
            except ValueError:
                out.append(word)
    return out


def _split_list(values: tuple[str, ...]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


@main.command()
@click.option("-d", "--design", "designs", multiple=True, metavar="NAME[,NAME]",
              help="Designs: kernel, exact, slots:K, stopped, legacy, precise-rmapid[:fixed] (default: "
                   "kernel,exact,slots:3,stopped,legacy,precise-rmapid; precise-rmapid only on 64-bit).")
@click.option("-w", "--workload", "workloads", multiple=True, metavar="NAME[,NAME]",
              help="Generated workloads (default: all; see docs/evaluator.md).")
@click.option("--workload-file", "files", multiple=True, metavar="FILE",
              help="Also run a workload file or run trace of a recorded program (`foliosim trace`).")
@click.option("--recorded/--no-recorded", default=None,
              help="Also run the recorded real programs of examples/run-traces (default: when no -w or "
                   "--workload-file is given and the checkout has them).")
@click.option("--driver", default="kernel", show_default=True, metavar="DESIGN",
              help="Open loop: the design whose answers steer the runs every design is scored on.")
@click.option("--closed-loop", is_flag=True,
              help="Score each design on its own runs (its answers steer them; question sets then differ).")
@click.option("--param", "params", multiple=True, metavar="[WORKLOAD.]KEY=V1,V2",
              help="Vary a workload parameter over values (a grid axis).")
@click.option("--seeds", default=2, show_default=True, type=click.IntRange(1, 10_000), help="Seeds 1..N per cell.")
@click.option("--db", "db_path", default="foliosim-results.sqlite", show_default=True, metavar="PATH",
              help="SQLite results database; cells already in it are not recomputed.")
@click.option("-j", "--jobs", type=click.IntRange(1, 1024), default=None, help="Local worker processes "
              "(default: every core).")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS",
              help="Run on the Dask distributed scheduler at ADDRESS (e.g. tcp://127.0.0.1:8786).")
@click.option("--word-bits", type=click.Choice(["64", "32", "both"]), default="64", show_default=True)
@NO_PAGE_MAPCOUNT
@click.option("--oracle", type=click.Choice(["auto", "reuse", "every", "end", "off"]), default="auto",
              show_default=True,
              help="When to run the isolation oracle: after steps that reused a page (and at the end), after every "
                   "step, only at the end, never; auto: reuse for generated workloads, end for workload files.")
@click.option("--csv", "csv_out", default=None, metavar="FILE", help="Export every metric row as CSV.")
@click.option("--parquet", "parquet_out", default=None, metavar="FILE", help="Export as Parquet (extra: parquet).")
@click.option("--report", "report_dir", default=None, metavar="DIR", help="Write the report into DIR afterwards.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--engine", type=click.Choice(["auto", "fast", "reference"]), default="auto", show_default=True,
              help="The driving runs' simulator: fast (compiled; open loop with the kernel driver, on the steps it "
                   "models; any other run falls back to the reference with a note), reference, or auto (fast when "
                   "numba is installed). Both give the same results. --closed-loop runs on the reference only.")
def compare(designs: tuple[str, ...], workloads: tuple[str, ...], files: tuple[str, ...], recorded: bool | None,
            driver: str, closed_loop: bool, params: tuple[str, ...], seeds: int, db_path: str, jobs: int | None,
            dask_address: str | None, word_bits: str, no_page_mapcount: bool, oracle: str, csv_out: str | None,
            parquet_out: str | None, report_dir: str | None, quiet: bool, engine: str) -> None:
    """Compare sharing-detection designs on a grid of workloads x parameters x seeds.

    Open loop (default): one driving design (--driver) runs each workload and every design answers the same
    questions on the same states. Prints the headline on stdout; progress goes to stderr. Exit status: 0 ok,
    1 a run or the database failed, 2 a bad grid (unknown design, workload or parameter).
    """
    import time
    from pathlib import Path
    from typing import NoReturn

    from foliosim.errors import FoliosimError
    from foliosim.evaluate.cell import checked_steps, file_workload
    from foliosim.evaluate.store import ResultsDB
    from foliosim.evaluate.sweep import Grid, pending, run_dask, run_local
    from foliosim.schemes.base import DESIGNS
    from foliosim.workloads.generators import WORKLOADS
    from foliosim.workloads.runtrace import read_workload_text
    from foliosim.workloads.steps import WorkloadError

    def fail(message: str, code: int) -> NoReturn:
        click.echo(f"foliosim compare: {message}", err=True)
        sys.exit(code)

    grid_params: dict[str, list[Any]] = {}
    for item in params:
        key, eq, values = item.partition("=")
        key = key.strip()
        if not eq or not key or not values:
            fail(f"--param {item!r}: expected [WORKLOAD.]KEY=V1,V2", 2)
        if key in grid_params:
            fail(f"--param {key} is given twice; give all its values in one list (--param {key}=V1,V2)", 2)
        grid_params[key] = _param_values(values)
        repeated = sorted({str(v) for v in grid_params[key] if grid_params[key].count(v) > 1})
        if repeated:
            fail(f"--param {item!r}: {', '.join(repeated)} listed twice", 2)
    if closed_loop and engine == "fast":
        fail("--engine fast drives open-loop runs only (the kernel driver's answers are the fast engine's own); "
             "--closed-loop runs on the reference engine (--engine reference or auto)", 2)
    from foliosim.evaluate.cell import resolve_engine

    try:
        engine = resolve_engine("reference" if closed_loop else engine)
    except ValueError as exc:
        fail(f"{exc}; or use --engine reference", 2)
    if engine == "fast" and driver != "kernel":
        click.echo(f"foliosim compare: --driver {driver}: the fast engine drives with `kernel` only; these runs "
                   "go to the reference engine", err=True)
    if closed_loop and driver != "kernel":
        fail(f"--driver {driver} names the design that drives open-loop runs; --closed-loop runs every design on "
             "its own runs (give one or the other)", 2)
    texts: dict[str, str] = {}
    file_names: dict[str, str] = {}
    asked_recorded = recorded is True
    if recorded is None:
        recorded = not workloads and not files
    examples = _recorded_programs() if recorded else []
    if asked_recorded and not examples:
        fail("--recorded: no recorded programs here (examples/run-traces/*.trace.gz of a foliosim checkout)", 2)
    for path in (*examples, *files):
        try:
            text = read_workload_text(path)
        except (OSError, WorkloadError) as exc:
            fail(f"cannot read {_shown(path)}: {getattr(exc, 'strerror', None) or exc}", 2)
        try:
            nsteps = checked_steps(text, _shown(path))  # kept: the cells' checks and the run do not convert it again
        except WorkloadError as exc:
            fail(str(exc), 2)
        if not nsteps:
            fail(f"{_shown(path)}: no steps (an empty workload file; `foliosim trace -o FILE -- COMMAND` makes one)", 2)
        texts[file_workload(_shown(Path(path).name), text)] = text
        file_names[file_workload(_shown(Path(path).name), text)] = _shown(path)
    chosen_workloads = _split_list(workloads) or ([] if files and not recorded else list(WORKLOADS))
    if chosen_workloads == ["all"]:
        chosen_workloads = list(WORKLOADS)
    grid = Grid(designs=tuple(_split_list(designs) or DESIGNS), workloads=tuple(chosen_workloads),
                seeds=tuple(range(1, seeds + 1)), params=grid_params,
                word_bits=(64, 32) if word_bits == "both" else (int(word_bits),),
                no_page_mapcount=no_page_mapcount, oracle=oracle, files=texts,
                mode="closed" if closed_loop else "open", driver=driver, skip_unsupported=not designs)
    try:
        cells = grid.cells()
    except (ValueError, FoliosimError) as exc:
        fail(str(exc), 2)
    if grid.skipped:
        click.echo(f"foliosim compare: left out (no such configuration of the design): {', '.join(grid.skipped)}",
                   err=True)
    # Every output is checked before the first cell runs.
    problem = (_output_file_problem(csv_out, "--csv") or _output_file_problem(parquet_out, "--parquet")
               or _output_dir_problem(report_dir, "--report"))
    if problem:
        fail(problem, 1)
    if parquet_out and not _have_module("duckdb"):
        fail("--parquet needs DuckDB: pip install 'foliosim[parquet]'", 1)
    if report_dir is not None and not _have_module("matplotlib"):  # before the sweep, not after it
        from foliosim.report.evaluation import PLOTS_NEED

        fail(f"--report: {PLOTS_NEED}", 1)
    if dask_address:
        problem = _dask_address_problem(dask_address)
        if problem:
            fail(problem, 2)
    try:
        db = ResultsDB(db_path)
    except FoliosimError as exc:
        fail(str(exc), 1)
    todo = pending(cells, db)
    began = time.perf_counter()
    where = f"Dask at {dask_address}" if dask_address else f"{jobs or 'all'} local processes"
    click.echo(f"foliosim compare: {len(cells)} cells, {len(cells) - len(todo)} already in {_shown(db_path)}, "
               f"{len(todo)} to run on {where}", err=True)
    if texts and seeds > 1:
        click.echo("foliosim compare: workload files run once each (seed 1): their steps do not depend on the seed",
                   err=True)
    click.echo("foliosim compare: " + ("closed loop: each design's answers steer its own runs" if closed_loop else
                                       f"open loop: `{driver}` drives each run, every design answers its questions"),
               err=True)
    try:
        with _progress(len(todo), quiet) as advance:
            if dask_address:
                run_dask(todo, db, dask_address, advance, engine=engine)
            else:
                run_local(todo, db, jobs, advance, engine=engine)
    except (OSError, TimeoutError, RuntimeError, ValueError, FoliosimError) as exc:
        if db.discard_if_unused():
            fail(f"the sweep stopped before its first cell: {exc} (nothing written; {_shown(db_path)} not created)", 1)
        fail(f"the sweep stopped: {exc} (finished cells are kept in {_shown(db_path)}; "
             "run the same command again to resume)", 1)
    click.echo(f"foliosim compare: ran {len(todo)} cells in {time.perf_counter() - began:.1f} s", err=True)
    cell_ids = [cell.cell_id for cell in cells]
    from foliosim.report.evaluation import refused_steps, report_text, write_report

    run_cells = [c for c in db.cells() if c["cell_id"] in set(cell_ids)]
    _engine_fallbacks(run_cells, {c.cell_id for c in todo}, engine)
    for refused in refused_steps(run_cells):
        click.echo(f"foliosim compare: the simulator refused {refused.steps} step(s) of {refused.workload} in "
                   f"{refused.cells} cell(s) (skipped and counted as skipped_steps); the first:", err=True)
        for first in refused.first:
            click.echo(f"  {first}", err=True)
    if texts:
        _store_live_verdicts(db, texts, file_names)
    _exports(db, csv_out, parquet_out, "compare")
    db.close()
    mode = "closed" if closed_loop else "open"
    try:
        click.echo(report_text(db_path, cell_ids, mode), nl=False)
    except (ValueError, FoliosimError) as exc:
        fail(str(exc), 1)
    sys.stdout.flush()
    if report_dir is not None:
        try:
            files_written = write_report(db_path, report_dir, cell_ids, mode)
        except (ValueError, FoliosimError) as exc:
            fail(f"--report: {exc}", 1)
        click.echo(f"foliosim compare: report in {files_written.markdown} and {files_written.html}", err=True)


def _engine_fallbacks(cells: list[dict[str, Any]], ran: set[str], engine: str) -> None:
    """Say on stderr which driving runs of this sweep ran on the reference engine although the fast one was
    chosen, and why (one line per workload and reason)."""
    import json

    if engine != "fast":
        return
    seen: dict[tuple[str, str], int] = {}
    fast = 0
    runs: set[str] = set()
    for cell in cells:
        if cell["cell_id"] not in ran or cell["run_key"] in runs:
            continue
        runs.add(cell["run_key"])
        notes = json.loads(cell["notes"] or "[]")
        note = next((n for n in notes if isinstance(n, str) and n.startswith("engine: ")), "engine: reference")
        if note == "engine: fast":
            fast += 1
            continue
        key = (cell["workload"].split("@", 1)[0], note.removeprefix("engine: reference").strip(" ()"))
        seen[key] = seen.get(key, 0) + 1
    click.echo(f"foliosim compare: {fast} driving run(s) on the fast engine, {sum(seen.values())} on the reference",
               err=True)
    for (workload, why), count in sorted(seen.items()):
        click.echo(f"  {workload}: {count} run(s) on the reference: {why or 'no reason recorded'}", err=True)


def _recorded_programs() -> list[str]:
    """The recorded real programs of a foliosim checkout (examples/run-traces), sorted; [] when not there.

    A program recorded with the live kernel's census (NAME.census.trace.gz) is taken instead of its older
    recording (NAME.trace.gz): one run per program, and its live verdicts go beside the simulated designs."""
    from pathlib import Path

    import foliosim

    folder = Path(foliosim.__file__).resolve().parents[2] / "examples" / "run-traces"
    found: dict[str, Path] = {}
    for path in sorted((*folder.glob("*.trace.gz"), *folder.glob("*.trace"))):
        name = path.name.removesuffix(".gz").removesuffix(".trace")
        program, census = name.removesuffix(".census"), name.endswith(".census")
        if path.is_file() and (census or program not in found):
            found[program] = path
    return sorted(str(p) for p in found.values())


def _store_live_verdicts(db: Any, texts: dict[str, str], names: dict[str, str]) -> None:
    """Put the live kernel's census (if a run trace holds one) of each workload file into the results database."""
    from foliosim.live.verdicts import live_verdicts_from_trace
    from foliosim.workloads.runtrace import is_run_trace

    for label, text in texts.items():
        if not is_run_trace(text):
            continue  # a workload file (JSON Lines steps): no census
        try:
            verdicts = live_verdicts_from_trace(text)
        except ValueError as exc:  # CensusRecordError: a malformed census record must not stop the report
            click.echo(f"foliosim compare: {names[label]}: its census record is not used ({exc})", err=True)
            continue
        if verdicts is not None:
            db.put_live(label, verdicts.questions_exclusive, verdicts.false_shared, verdicts.questions_shared,
                        verdicts.false_exclusive, f"census, {verdicts.snapshots} snapshots")


def _shown(path: str) -> str:
    """``path`` as printable text (a file name that is not UTF-8 shows its bad bytes as U+FFFD)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _have_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _output_file_problem(path: str | None, option: str) -> str | None:
    """Why ``path`` cannot be written as a new or replaced file (None: it can)."""
    from foliosim.outfile import folder_problem

    why = folder_problem(path) if path else None
    return f"cannot write {option} {_shown(path)}: {why}" if path and why else None


def _output_dir_problem(path: str | None, option: str) -> str | None:
    """Why ``path`` cannot be (created as) a directory to write into (None: it can)."""
    import os

    if not path:
        return None
    what = f"cannot write {option} {_shown(path)}"
    if os.path.exists(path) and not os.path.isdir(path):
        return f"{what}: it is a file, not a directory"
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return f"{what}: {_shown(probe)} is a file, not a directory"
    if not os.access(probe, os.W_OK):
        return f"{what}: {_shown(probe)}: permission denied or a read-only file system"
    return None


def _dask_address_problem(address: str) -> str | None:
    """Why ``address`` cannot name a Dask scheduler, or why Dask cannot run here (None: it may)."""
    if not _have_module("distributed"):
        return "--dask needs dask.distributed: pip install 'foliosim[dask]'"
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls", "ws", "wss"):
            parse_host_port(location)
    except ValueError as exc:
        return f"--dask {address!r}: not a scheduler address ({exc}); expected e.g. tcp://127.0.0.1:8786"
    return None


def _exports(db: Any, csv_out: str | None, parquet_out: str | None, verb: str) -> None:
    from foliosim.errors import FoliosimError

    try:
        if csv_out:
            rows = db.export_csv(csv_out)
            click.echo(f"foliosim {verb}: {rows} metric rows written to {csv_out}", err=True)
        if parquet_out:
            rows = db.export_parquet(parquet_out)
            click.echo(f"foliosim {verb}: {rows} metric rows written to {parquet_out}", err=True)
    except (OSError, FoliosimError) as exc:
        click.echo(f"foliosim {verb}: export failed: {getattr(exc, 'strerror', None) or exc}", err=True)
        sys.exit(1)


class _progress:
    """A rich progress bar on stderr, advanced once per finished cell."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self.bar: Any = None

    def __enter__(self) -> Any:
        if self.quiet or not self.total:
            return lambda result: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=Console(stderr=True))
        self.bar.start()
        task = self.bar.add_task("cells", total=self.total)

        def advance(result: Any) -> None:
            self.bar.update(task, advance=1, description=f"{result.spec.design} {result.spec.workload}")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


@main.command("report")
@click.argument("db_path", metavar="RESULTS.sqlite")
@click.option("-o", "--out", "outdir", default="foliosim-report", show_default=True, metavar="DIR",
              help="Directory for report.md, report.html and plots/.")
@click.option("--csv", "csv_out", default=None, metavar="FILE", help="Also export every metric row as CSV.")
@click.option("--parquet", "parquet_out", default=None, metavar="FILE", help="Also export as Parquet.")
@click.option("--closed-loop", is_flag=True, help="Report the closed-loop cells (default: the open-loop ones, "
              "or the closed-loop ones when there are no others).")
def report_cmd(db_path: str, outdir: str, csv_out: str | None, parquet_out: str | None, closed_loop: bool) -> None:
    """Write the comparison report (Markdown + self-contained HTML with PNG/SVG plots) from a results DB."""
    import os

    from foliosim.errors import FoliosimError
    from foliosim.evaluate.store import ResultsDB

    if not os.path.exists(db_path):
        click.echo(f"foliosim report: no results database {db_path} (run foliosim compare --db {db_path})", err=True)
        sys.exit(1)
    problem = (_output_dir_problem(outdir, "-o") or _output_file_problem(csv_out, "--csv")
               or _output_file_problem(parquet_out, "--parquet"))
    if parquet_out and not problem and not _have_module("duckdb"):
        problem = "--parquet needs DuckDB: pip install 'foliosim[parquet]'"
    if not problem and not _have_module("matplotlib"):
        from foliosim.report.evaluation import PLOTS_NEED

        problem = PLOTS_NEED
    if problem:
        click.echo(f"foliosim report: {problem}", err=True)
        sys.exit(1)
    from foliosim.report.evaluation import write_report

    try:
        files_written = write_report(db_path, outdir, mode="closed" if closed_loop else None)
        db = ResultsDB(db_path)
    except (ValueError, FoliosimError, OSError) as exc:
        click.echo(f"foliosim report: {exc}", err=True)
        sys.exit(1)
    _exports(db, csv_out, parquet_out, "report")
    db.close()
    click.echo(f"foliosim report: wrote {files_written.markdown}, {files_written.html} and "
               f"{len(files_written.plots)} plots (PNG + SVG)", err=True)
    click.echo(files_written.headline)


@main.command("trace", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("-o", "--out", "out_path", default=None, metavar="RUN.trace",
              help="Write the run trace here (JSON Lines; .gz compresses). Required.")
@click.option("--thp", "thp_spec", default=None, metavar="SIZE=VALUE,...",
              help="Set anonymous mTHP sizes for the run only, e.g. 16K=always,64K=always (restored after, "
                   "also on SIGINT/SIGTERM). Without it nothing global changes.")
@click.option("--check-live", is_flag=True,
              help="At every fork and exit, snapshot the task's anonymous pages and folios (pagemap, kpageflags, "
                   "BPF when available) for `foliosim run-trace` to compare with.")
@click.option("--measure-slowdown", is_flag=True, help="Also run COMMAND once untraced and record the slowdown.")
@click.option("--buffer-kb", type=click.IntRange(64, 1 << 20), default=8192, show_default=True,
              help="Per-CPU tracefs ring buffer for fault events.")
@click.option("--census", "census_mode", type=click.Choice(["none", "events", "periodic"]), default="events",
              show_default=True,
              help="The live kernel's own 'maybe mapped shared' verdicts on the traced processes' large anonymous "
                   "folios against the truth (as `foliosim census`), stored in the header: before every exit and "
                   "after every fork (events), also every --census-interval ms while they run (periodic).")
@click.option("--census-interval", "census_interval", type=click.FloatRange(5.0, 60_000.0), default=100.0,
              show_default=True, metavar="MS",
              help="Periodic census: milliseconds between censuses (longer when a census takes more than a fifth "
                   "of the time).")
@click.option("--census-budget", "census_budget", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.5,
              show_default=True, metavar="SHARE",
              help="Skip a census (counted in the record) while the censuses so far took more than this share of "
                   "the traced wall time and more than 0.25 s in all; 1: never skip.")
def trace_cmd(command: tuple[str, ...], out_path: str | None, thp_spec: str | None, check_live: bool,
              measure_slowdown: bool, buffer_kb: int, census_mode: str, census_interval: float,
              census_budget: float) -> None:
    """Run COMMAND and record what it really did to memory: a run trace (docs/run-trace.md).

    Usage: foliosim trace [--thp 16K=always,64K=always] [--check-live] [--measure-slowdown]
    [--census none|events|periodic] -o RUN.trace -- COMMAND [ARGS...]. Every process and thread of COMMAND's
    tree, every memory system call with its real arguments and result, and every page fault, on one clock; with
    --census the kernel's own sharing verdicts against the truth; needs root. Exit status: COMMAND's own
    (128+N if signal N ended it); 1 recording failed; 2 bad usage; 6 cannot record here; 128+N when
    SIGINT/SIGTERM/SIGHUP (N) stopped the recording (the trace so far is written, marked incomplete).
    """
    import signal
    from typing import NoReturn

    from foliosim.host.errors import HostError, HostUnavailable
    from foliosim.live.record import RecordError, parse_thp, record

    def fail(message: str, code: int) -> NoReturn:
        click.echo(f"foliosim trace: {message}", err=True)
        sys.exit(code)

    if not command:
        fail("no command (usage: foliosim trace -o RUN.trace -- COMMAND [ARGS...])", 2)
    if not out_path:
        fail("no output file: give -o RUN.trace", 2)
    try:
        changes = parse_thp(thp_spec)
        result = record(list(command), out_path, thp_changes=changes, check_live=check_live,
                        measure_slowdown=measure_slowdown, buffer_kb=buffer_kb,
                        log=lambda msg: click.echo(f"foliosim trace: {msg}", err=True), census=census_mode,
                        census_interval_ms=census_interval, census_budget=census_budget)
    except RecordError as exc:
        fail(str(exc), 2)
    except HostUnavailable as exc:
        fail(f"cannot record here: {exc}", 6)
    except HostError as exc:
        fail(str(exc), 1)
    for warning in result.warnings:
        click.echo(f"foliosim trace: warning: {warning}", err=True)
    c = result.counts
    slow = f", slowdown {result.slowdown:.2f}x (untraced {result.untraced_wall_s:.3f} s)" if result.slowdown else ""
    click.echo(f"foliosim trace: {c['events']} events ({c['faults']} faults, {c['syscalls']} memory calls, "
               f"{c['forks']} forks, {c['threads']} threads, {c['execs']} execs, {c['snapshots']} snapshots) in "
               f"{result.wall_s:.3f} s{slow} -> {_shown(result.path)}"
               f"{' (INCOMPLETE: interrupted)' if result.incomplete else ''}", err=True)
    census = result.header.get("census")
    if isinstance(census, dict) and "totals" in census:
        tot = census["totals"]
        rate = f" = {100 * tot['false_shared'] / tot['one_mm']:.2f} %" if tot["one_mm"] else ""
        click.echo(f"foliosim trace: census ({census['mode']}): {tot['snapshots']} censuses in "
                   f"{census['seconds']:.2f} s; false \"shared\" {tot['false_shared']}/{tot['one_mm']}{rate} "
                   f"(stuck bit {tot['stuck_bit']}), false \"exclusive\" {tot['false_exclusive']}/"
                   f"{tot['many_mms']}, {tot['changed']} changed while read"
                   f"{', skipped ' + str(sum(census['skipped'].values())) if census['skipped'] else ''}", err=True)
    stopped_by = result.header.get("interrupted_by")
    if result.incomplete and stopped_by:
        sys.exit(128 + int(getattr(signal, stopped_by, signal.SIGINT)))
    sys.exit(result.command_status)


# -- run traces (issue 12) -------------------------------------------------------------
@main.command("run-trace")
@click.argument("trace_path", metavar="RUN.trace")
@click.option("-d", "--design", default="kernel", show_default=True,
              help="Sharing-detection design answering the simulator (kernel, exact, slots:K, stopped, legacy, "
                   "precise-rmapid[:fixed]; other than kernel: on the reference engine).")
@click.option("--oracle", type=click.Choice(["off", "reuse", "every"]), default="off", show_default=True,
              help="Isolation oracle after steps that reused a page / after every step. Off by default: on the "
                   "reference engine it walks every mapped page, and real programs map GiBs (the fast engine's "
                   "oracle checks every access incrementally, in either mode).")
@WORD_BITS
@NO_PAGE_MAPCOUNT
@click.option("--json", "json_out", metavar="OUT.json", help="Also write every figure (and the live comparison) "
              "as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
@click.option("--engine", type=click.Choice(["auto", "fast", "reference"]), default="auto", show_default=True,
              help="fast: the compiled simulator (the same figures and live agreement; --oracle runs its "
                   "incremental oracle); a design other than kernel, or a step it does not model, runs on the "
                   "reference instead, said on stderr; auto: fast when numba is installed.")
def run_trace_cmd(trace_path: str, design: str, oracle: str, word_bits: str, no_page_mapcount: bool,
                  json_out: str | None, quiet: bool, engine: str) -> None:
    """Simulate a run trace (from `foliosim trace`) and print what happened; with live snapshots in the trace
    (`trace --check-live`), the agreement of the simulation with the live folios.

    Every recorded fault is one access by its task; faults the simulator does not take and calls it cannot
    express are counted by cause. Exit status: 0 simulated, 1 an unreadable or malformed trace, 2 a bad option.
    """
    from foliosim.live.tracesim import Progress, simulate
    from foliosim.report.runtrace import summary_lines
    from foliosim.workloads.runtrace import RunTrace, RunTraceError, prepare

    if engine != "reference":  # foliosim.fast imports numba (a third of a second): only when it may run
        from foliosim.fast import HAVE_NUMBA, NUMBA_MISSING

        if engine == "fast" and not HAVE_NUMBA:
            click.echo(f"foliosim run-trace: {NUMBA_MISSING}; or use --engine reference", err=True)
            sys.exit(2)
        engine = "fast" if engine == "fast" or (engine == "auto" and HAVE_NUMBA) else "reference"
    if json_out is not None:
        _check_writable(json_out, "run-trace")
    try:
        from foliosim.schemes.base import make_design

        make_design(design, _config(word_bits, no_page_mapcount))
    except ValueError as exc:
        click.echo(f"foliosim run-trace: {exc}", err=True)
        sys.exit(2)
    try:
        trace = RunTrace.open(trace_path)
        if not quiet:
            click.echo(f"foliosim run-trace: reading {trace_path} ...", err=True)
        conversion = prepare(trace)
    except RunTraceError as exc:
        click.echo(f"foliosim run-trace: {exc}", err=True)
        sys.exit(1)

    def progress(p: Progress) -> None:
        if not quiet:
            click.echo(f"foliosim run-trace: line {p.line} of {p.lines}, {p.steps} steps, {p.faults} faults, "
                       f"{p.seconds:.0f} s", err=True)

    try:
        run = simulate(trace, design=design, oracle=oracle, config=_config(word_bits, no_page_mapcount),
                       progress=progress, conversion=conversion, engine=engine,
                       on_fallback=lambda why: click.echo(f"foliosim run-trace: {why}: running the reference engine",
                                                          err=True))
    except RunTraceError as exc:  # the file changed between the two readings
        click.echo(f"foliosim run-trace: {exc}", err=True)
        sys.exit(1)
    for line in summary_lines(run):
        click.echo(line)
    if json_out is not None:
        _write_atomic(json_out, json.dumps(run.to_json(), default=_json_default, indent=1), "run-trace")


# -- fast path, columnar traces (issue 6) ----------------------------------------------

def _is_npz(path: str) -> bool:
    """Whether ``path`` is a zip (columnar .npz) file; FoliosimError if it cannot be read."""
    from foliosim.errors import FoliosimError

    if path == "-":
        return False
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PK\x03\x04"
    except OSError as exc:
        raise FoliosimError(f"cannot read {path}: {exc.strerror or exc}") from None


def _open_trace(path: str) -> tuple[Any, Iterator[bytes] | None]:
    """A trace file or standard input (``-``): ``(ColumnarTrace, None)`` for a columnar .npz (recognised by its
    zip magic, on stdin too), else ``(None, lines)``; FoliosimError if unreadable."""
    import io
    import itertools

    from foliosim.errors import FoliosimError

    if path == "-":
        stdin = sys.stdin.buffer
        try:
            head = stdin.read(4)
            if head != b"PK\x03\x04":
                return None, itertools.chain([head + stdin.readline()] if head else [], stdin)
            data = head + stdin.read()
        except OSError as exc:
            raise FoliosimError(f"cannot read standard input: {exc.strerror or exc}") from None
        from foliosim.trace.columnar import read_npz

        return read_npz(io.BytesIO(data), "standard input"), None
    if _is_npz(path):
        from foliosim.trace.columnar import read_npz

        return read_npz(path), None
    lines, error = _open_lines(path)
    if lines is None:
        raise FoliosimError(error or f"cannot read {path}")
    return None, lines


def _load_columnar(path: str) -> Any:
    """A ColumnarTrace from a .npz file or JSON Lines (``-``: stdin, either form); FoliosimError if unreadable."""
    from foliosim.errors import FoliosimError
    from foliosim.trace.columnar import from_jsonl_lines

    columnar, lines = _open_trace(path)
    if columnar is not None:
        return columnar
    assert lines is not None
    try:
        return from_jsonl_lines(lines)
    except OSError as exc:
        raise FoliosimError(f"cannot read {path}: {exc.strerror or exc}") from None


@contextmanager
def _numpy_without_blas_threads() -> Iterator[None]:
    """Import numpy inside this block with one OpenBLAS thread (for verbs that do no linear algebra).

    OpenBLAS starts a worker thread per extra CPU when numpy is imported, and
    the workers busy-wait a while for work that never comes: on a small machine
    that was about a tenth of a second of CPU per ``fast-replay``. The library
    reads the variable when it loads, so it is set only around the import; a
    value the user set, or numpy already imported, is left alone.
    """
    if "numpy" in sys.modules or "OPENBLAS_NUM_THREADS" in os.environ:
        yield
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        os.environ.pop("OPENBLAS_NUM_THREADS", None)


def _no_collection_at_exit() -> None:
    """Let the interpreter's exit skip its garbage collections, for a verb that has flushed all its output.

    At exit Python collects cycles over every object several times (tens of
    milliseconds with numpy and click loaded), only to free memory the OS takes
    back anyway. Freezing the objects in an exit handler, which runs before
    those collections, skips them; the finalizers of cyclic garbage then do not
    run at exit, which Python never guarantees anyway.
    """
    import atexit
    import gc

    atexit.unregister(gc.freeze)  # registered once, however often the verb runs in one process
    atexit.register(gc.freeze)


@main.command("fast-replay")
@click.argument("trace", metavar="TRACE")
@WORD_BITS
@NO_PAGE_MAPCOUNT
@click.option("--keep-going", is_flag=True, help="Go on after a rejected operation.")
@click.option("--final-only", is_flag=True,
              help="Print only rejections and, at the end, the state of every live folio (op \"final\").")
@click.option("--engine", type=click.Choice(["fast", "reference"]), default="fast", show_default=True,
              help="fast: the compiled kernels; reference: the pure-Python model (for comparison).")
def fast_replay(trace: str, word_bits: str, no_page_mapcount: bool, keep_going: bool, final_only: bool,
                engine: str) -> None:
    """Replay TRACE (columnar .npz or JSON Lines, - for stdin) through the compiled fast path.

    Prints exactly the records of `foliosim replay` (same exit statuses), or with
    --final-only just the rejections and the final folio states.
    """
    from foliosim.errors import FoliosimError
    from foliosim.trace.replay import EXIT_BAD_INPUT, ReplayStatus

    config = _config(word_bits, no_page_mapcount)
    status = ReplayStatus()
    loop = None
    if engine == "fast":
        with _numpy_without_blas_threads():
            from foliosim.replay_aot import load_replay_loop, without_numba

        loop = load_replay_loop()  # the ahead-of-time build (python -m foliosim.replay_aot), if current
        if loop is None:
            from foliosim.fast import HAVE_NUMBA, NUMBA_MISSING

            if not HAVE_NUMBA:
                click.echo(f"foliosim fast-replay: {NUMBA_MISSING}; or use --engine reference", err=True)
                sys.exit(EXIT_BAD_INPUT)
    try:
        if engine == "fast" and loop is not None:
            with without_numba():  # start-up: neither numba's import nor its cache load is needed
                from foliosim.fast.replay import FastReplay
            records = FastReplay(_load_columnar(trace), config, loop).records(keep_going, status, final_only)
        elif engine == "fast":
            from foliosim.fast import kernels
            from foliosim.fast._jit import compile_message, compile_pending
            from foliosim.fast.replay import FastReplay

            if compile_pending((kernels.replay_loop,)):  # the first kernel call below compiles
                click.echo(f"foliosim fast-replay: {compile_message('the fast replay kernels', '30 s')}", err=True)
            records = FastReplay(_load_columnar(trace), config).records(keep_going, status, final_only)
        else:
            from foliosim.fast.replay import reference_records

            columnar, raw_lines = _open_trace(trace)
            lines: Any = columnar.iter_jsonl() if columnar is not None else raw_lines
            records = reference_records(lines, config, keep_going, status, final_only)
        for rec in records:
            _emit(rec)
        sys.stdout.flush()
    except FoliosimError as exc:
        _emit({"step": status.steps, "error": str(exc)})
        sys.exit(EXIT_BAD_INPUT)
    except BrokenPipeError:
        _quiet_broken_pipe()
    _no_collection_at_exit()
    sys.exit(status.exit_code)


@main.command("trace-convert")
@click.argument("source", metavar="IN")
@click.argument("dest", metavar="OUT")
@click.option("--to", "fmt", type=click.Choice(["npz", "jsonl"]), default=None,
              help="Output format (default: npz if OUT ends in .npz, else jsonl).")
def trace_convert(source: str, dest: str, fmt: str | None) -> None:
    """Convert an rmap trace between JSON Lines and the columnar .npz form (either direction)."""
    from foliosim.errors import FoliosimError
    from foliosim.trace.columnar import write_file

    fmt = fmt or ("npz" if dest.endswith(".npz") else "jsonl")
    if dest == "-" and fmt == "npz":
        click.echo("foliosim trace-convert: OUT - is standard output, for JSON Lines only; give .npz a file name",
                   err=True)
        sys.exit(2)
    if dest == "-":
        try:
            columnar = _load_columnar(source)
            if columnar.bad_line is not None:
                raise FoliosimError(f"{source}: {columnar.bad_line.error}")
            for line in columnar.iter_jsonl():
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except FoliosimError as exc:
            click.echo(f"foliosim trace-convert: {exc}", err=True)
            sys.exit(1)
        except BrokenPipeError:
            _quiet_broken_pipe()
        click.echo(f"foliosim trace-convert: {len(columnar)} operations -> standard output (jsonl)", err=True)
        return
    _check_writable(dest, "trace-convert", "OUT")
    try:
        columnar = _load_columnar(source)
        if columnar.bad_line is not None:
            raise FoliosimError(f"{source}: {columnar.bad_line.error}")
        write_file(columnar, dest, fmt)
    except FoliosimError as exc:
        click.echo(f"foliosim trace-convert: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"foliosim trace-convert: cannot write {dest}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    click.echo(f"foliosim trace-convert: {len(columnar)} operations -> {dest} ({fmt})", err=True)


@main.command("trace-generate")
@click.argument("dest", metavar="OUT")
@click.option("--ops", "n_ops", type=click.IntRange(min=0), default=None,
              help="Generated operations (default: the standard benchmark's 10 million).")
@click.option("--folios", "n_folios", type=click.IntRange(min=1), default=None, help="Folios (default 64).")
@click.option("--order", type=click.IntRange(0, 20), default=None, help="Folio order (default 4).")
@click.option("--mms", "n_mms", type=click.IntRange(min=1), default=None, help="MMs (default 3).")
@click.option("--seed", type=int, default=None, help="Random seed (default: the standard benchmark's).")
@click.option("--engine", type=click.Choice(["auto", "fast", "reference"]), default="auto", show_default=True,
              help="fast: the compiled generator (needs numba); reference: the pure-Python definition "
                   "(minutes for the standard trace); auto: fast when numba is installed. Both write the same "
                   "operations.")
def trace_generate(dest: str, n_ops: int | None, n_folios: int | None, order: int | None, n_mms: int | None,
                   seed: int | None, engine: str) -> None:
    """Write a seeded valid rmap trace (default: the standard replay benchmark) as .npz or JSON Lines.

    The output path is checked before generating; the file is written beside it
    and renamed when complete (an existing file is never left half-written).
    Progress goes to stderr (the standard trace takes seconds with the compiled
    generator, many minutes with the reference).
    """
    import dataclasses
    import time

    from foliosim.errors import FoliosimError
    from foliosim.outfile import folder_problem
    from foliosim.report.progress import StatusLine
    from foliosim.trace.columnar import generated_columnar, write_file
    from foliosim.trace.generate import STANDARD_SPEC

    problem = folder_problem(dest)
    if problem is not None:
        click.echo(f"foliosim trace-generate: cannot write {dest}: {problem}", err=True)
        sys.exit(1)
    changes = {k: v for k, v in (("n_ops", n_ops), ("n_folios", n_folios), ("order", order),
                                 ("n_mms", n_mms), ("seed", seed)) if v is not None}
    spec = dataclasses.replace(STANDARD_SPEC, **changes)
    status = StatusLine("foliosim trace-generate: ", interval=5.0, first_after=2.0)
    began = time.monotonic()
    window = [(began, 0)]  # (time, done) about 20 s ago: generation slows down as it goes

    def progress(done: int) -> None:
        now = time.monotonic()
        if now - window[-1][0] >= 10:
            window.append((now, done))
            del window[:-3]
        then, before = window[0]
        left = (spec.n_ops - done) * (now - then) / max(done - before, 1)
        status.update(f"{done:,} of {spec.n_ops:,} operations ({100 * done / max(spec.n_ops, 1):.0f}%), "
                      f"{now - began:.0f}s, about {left:.0f}s left at the current rate")

    try:
        from foliosim.replay_aot import load_generate_loop

        if engine != "reference" and load_generate_loop() is None:  # no ahead-of-time build: numba's JIT
            from foliosim.fast._jit import compile_notice
            from foliosim.trace import genfast

            if engine == "fast" and not genfast.HAVE_NUMBA:
                raise ValueError(f"--engine fast: {genfast.NUMBA_MISSING}")
            with compile_notice((genfast.generate_loop,), lambda msg: click.echo(f"foliosim trace-generate: {msg}",
                                                                                  err=True),
                                "the trace generator", "20 s"):
                genfast.warm_up()  # compile, or load from numba's cache, outside the progress display
        columnar = generated_columnar(spec, progress, engine)
    except ValueError as exc:
        status.done()
        click.echo(f"foliosim trace-generate: {exc}", err=True)
        sys.exit(2)
    status.done()
    try:
        write_file(columnar, dest, "npz" if dest.endswith(".npz") else "jsonl")
    except (FoliosimError, OSError) as exc:
        click.echo(f"foliosim trace-generate: cannot write {dest}: {getattr(exc, 'strerror', None) or exc}",
                   err=True)
        sys.exit(1)
    click.echo(f"foliosim trace-generate: {len(columnar)} operations -> {dest} "
               f"({time.monotonic() - began:.1f}s)", err=True)


@main.command("census")
@click.option("--pid", "pids", multiple=True, metavar="PID",
              help="A process (or thread) to read; repeat it or give a comma-separated list.")
@click.option("--all", "all_processes", is_flag=True,
              help="Read every process of the machine (the truth is complete).")
@click.option("--json", "json_out", metavar="OUT.json",
              help="Write every folio's fields, truth and verdict to OUT.json.")
def census_cmd(pids: tuple[str, ...], all_processes: bool, json_out: str | None) -> None:
    """Judge the running kernel's own "maybe mapped shared" verdicts on every large anonymous folio.

    As root with BPF: reads every large anonymous folio the processes map, the kernel's shared bit and slots, and
    the truth (which MMs map it, from their pagemaps and the folio's own mapcounts). Prints one JSON summary line,
    then one line per false answer (stdout); a table on stderr. No simulation. Exit status: 0 done, 5 a false
    "exclusive" (the kernel's rule was unsound), 2 a bad command line or pid, 6 cannot run here (not root, no
    BPF), 1 a kernel read failed.
    """
    from typing import NoReturn

    from rich.console import Console

    from foliosim.host.errors import HostError, HostUnavailable
    from foliosim.live.census import CensusError, render, run_census

    def fail(message: str, code: int) -> NoReturn:
        click.echo(f"foliosim census: {message}", err=True)
        sys.exit(code)

    if all_processes == bool(pids):
        fail("give --pid PID (one or more) or --all, not both" if pids else "give --pid PID (one or more) or --all", 2)
    wanted: list[int] = []
    for value in pids:
        for part in value.replace(",", " ").split() or [value]:
            if not part.isdigit() or int(part) <= 0:
                fail(f"--pid {part!r}: not a process id (a positive decimal number)", 2)
            wanted.append(int(part))
    if json_out is not None:
        _check_writable(json_out, "census")
    try:
        result = run_census(wanted if pids else None)
    except CensusError as exc:
        fail(f"--pid: {exc}", 2)
    except HostUnavailable as exc:
        fail(f"cannot run here: {exc}", 6)
    except HostError as exc:
        fail(f"a kernel read failed: {exc}", 1)
    _emit(result.summary_json())
    for folio in result.false_answers():
        _emit({"record": folio.outcome.replace(" ", "_"), **folio.to_json()})
    console = Console(stderr=True)
    for item in render(result):
        console.print(item)
    if json_out is not None:
        _write_atomic(json_out, json.dumps(result.to_json(), indent=1), "census")
    sys.exit(5 if result.false_exclusive.k else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
