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


if __name__ == "__main__":  # pragma: no cover
    main()


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
