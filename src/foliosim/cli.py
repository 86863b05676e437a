"""The ``foliosim`` command: one thin function per verb; all I/O lives here.

Start-up matters (people script thousands of replays), so heavy modules are
imported inside the verbs that need them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
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
    """foliosim: Linux v6.15 large-folio mapcounts and MM owner tracking, bit for bit."""


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
    for rec in run_replay(lines, None, False, status, system):
        if "error" in rec:
            where = f"line {rec['line']}" if "line" in rec else f"step {rec['step']}"
            click.echo(f"foliosim show: {where}: {rec['error']} (state shown as before it)", err=True)
        elif "folio" in rec and rec["folio"] in system.folios:
            last = rec["folio"]
    name = folio_name or last
    if name is None or name not in system.folios:
        known = ", ".join(sorted(system.folios)) or "none"
        click.echo(f"foliosim show: no folio {name!r} after the trace (folios: {known})", err=True)
        sys.exit(EXIT_BAD_INPUT)
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
              help="Write each counterexample (and the imprecision example) as a replayable trace.")
@click.option("--replay", "replay_path", default=None, metavar="TRACE.jsonl",
              help="Instead of exploring, replay TRACE (with --mutant's tracking) and report the first violation.")
@click.option("--interleave", is_flag=True, help="Explore CPU interleavings of concurrent updates instead.")
@click.option("--cpus", type=click.IntRange(2, 3), default=2, show_default=True,
              help="--interleave: writer CPUs, each updating for a different MM.")
@click.option("--reader", type=click.Choice(["none", "maybe_shared", "cow", "cow_precheck"]), default="none",
              show_default=True, help="--interleave: add a lock-free reader CPU.")
@click.option("--no-lock", is_flag=True, help="--interleave: remove the bit spinlock (finds the lost update).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def check(mms: int, order: int, depth: int, word_bits: str, no_page_mapcount: bool, levels: str, max_nr: int,
          ops: str, reuse_ids: bool, properties: tuple[str, ...], mutant: str | None, stop_at_first: bool,
          max_states: int | None, max_seconds: float | None, cx_path: str | None, replay_path: str | None,
          interleave: bool, cpus: int, reader: str, no_lock: bool, as_json: bool, quiet: bool) -> None:
    """Exhaustively explore a bounded configuration and prove the tracking's properties, or print
    the shortest counterexample as an rmap trace that `foliosim replay` accepts.

    Exit status: 0 every checked property holds (no finding), 4 a property is
    violated (or, with --interleave, a lost update / unsafe decision was found),
    1 unreadable input, 2 a bad command line.
    """
    from foliosim.report.check import run_check

    code = run_check(
        mms=mms, order=order, depth=depth, kconfig=_config(word_bits, no_page_mapcount), levels=levels,
        max_nr=max_nr, ops=ops, reuse_ids=reuse_ids, properties=properties, mutant=mutant,
        stop_at_first=stop_at_first, max_states=max_states, max_seconds=max_seconds, cx_path=cx_path,
        replay_path=replay_path, interleave=interleave, cpus=cpus, reader=reader, no_lock=no_lock,
        as_json=as_json, quiet=quiet, out=click.echo, err=lambda s: click.echo(s, err=True))
    sys.exit(code)



@main.command("run")
@click.argument("scenario", metavar="FILE.scenario")
@click.option("--trace", "trace_out", default=None, metavar="OUT.jsonl",
              help="Write every rmap call the simulator made as an rmap trace (replayable with `foliosim replay`).")
@WORD_BITS
@NO_PAGE_MAPCOUNT
@click.option("--no-check", is_flag=True, help="Do not run the isolation oracle after every step.")
@click.option("-v", "--verbose", is_flag=True, help="Also show every rmap call and memory access.")
def run_scenario(scenario: str, trace_out: str | None, word_bits: str, no_page_mapcount: bool,
                 no_check: bool, verbose: bool) -> None:
    """Run a scenario file on the simulated machine and print its timeline and a summary.

    Exit status: 0 ok, 1 unreadable or malformed scenario (the line is named),
    4 an `expect` failed or the isolation oracle found a violation.
    """
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

    def show(rec: Any, machine: Any) -> None:
        for line in render_step(rec, machine, verbose):
            click.echo(line)

    try:
        result = run_file(text, config, not no_check, on_step=show)
    except ScenarioError as exc:
        click.echo(f"foliosim run: {scenario}: {exc}", err=True)
        sys.exit(1)
    if trace_out is not None:
        try:
            with open(trace_out, "w", encoding="utf-8") as out:
                for op in result.machine.trace:
                    out.write(json.dumps(op.to_json(), separators=(",", ":")) + "\n")
        except OSError as exc:
            click.echo(f"foliosim run: cannot write {trace_out}: {exc.strerror or exc}", err=True)
            sys.exit(1)
    if result.error is not None:
        click.echo(f"foliosim run: {scenario}: {result.error}", err=True)
        sys.exit(1)
    for line in render_summary(result):
        click.echo(line)
    if result.violation or result.failures:
        sys.exit(4)


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
        tmp = f"{path}.tmp{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)  # all or nothing: no half-written page
        except OSError as exc:
            if os.path.exists(tmp):
                os.unlink(tmp)
            fail(f"cannot write {path}: {exc.strerror or exc}")
        click.echo(f"foliosim view: wrote {path} ({len(text.encode('utf-8')) / 1024:.0f} KiB)", err=True)

    def scenario(path: str, page_title: str | None) -> ViewModel:
        from foliosim.report.view_scenario import scenario_frames
        from foliosim.vm.scenario import ScenarioError

        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
        name = os.path.basename(path)
        try:
            return scenario_frames(text, config, page_title or name, name)[0]
        except ScenarioError as exc:
            fail(f"{path}: {exc} (no page written)")

    def failures(path: str, model: ViewModel) -> str | None:
        failed = model.failed
        if not failed:
            return None
        return (f"{path}: {len(failed)} step(s) failed, first at line {failed[0].line} (step {failed[0].step}): "
                f"{failed[0].failed}; the page shows them")

    config = _config(word_bits, no_page_mapcount)
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
    if input_path != "-" and not os.path.isfile(input_path):
        fail(f"cannot read {input_path}: no such file")
    if output is None:
        if input_path == "-":
            fail("reading standard input: give the page's name with -o OUT.html", 2)
        output = os.path.splitext(input_path)[0] + ".html"
    if input_path != "-" and not input_path.endswith(".jsonl"):
        model = scenario(input_path, title)
        write(output, render_page(model))
        failure = failures(input_path, model)
        if failure:
            fail(failure, 4)
        return
    lines, error = _open_lines(input_path)
    if lines is None:
        fail(str(error))
    source = "standard input" if input_path == "-" else os.path.basename(input_path)
    try:
        model = trace_frames(lines, config, title or source, source)
    except (ViewInputError, ValueError) as exc:
        fail(f"{input_path}: {exc} (no page written)")
    except (OSError, FoliosimError) as exc:
        fail(f"cannot read {input_path}: {exc}")
    write(output, render_page(model))
    rejected = model.rejected
    if rejected:
        first = rejected[0]
        fail(f"{source}: {len(rejected)} operation(s) rejected, first at line {first.line} (step {first.step}): "
             f"{first.error}; the page shows them", 3)


if __name__ == "__main__":  # pragma: no cover
    main()
