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


def _load_columnar(path: str) -> Any:
    """A ColumnarTrace from a .npz file or JSON Lines (``-``: stdin); FoliosimError if unreadable."""
    from foliosim.errors import FoliosimError
    from foliosim.trace.columnar import from_jsonl_lines, read_npz

    if _is_npz(path):
        return read_npz(path)
    lines, error = _open_lines(path)
    if lines is None:
        raise FoliosimError(error or f"cannot read {path}")
    try:
        return from_jsonl_lines(lines)
    except OSError as exc:
        raise FoliosimError(f"cannot read {path}: {exc.strerror or exc}") from None


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
    from foliosim.fast import HAVE_NUMBA, NUMBA_MISSING
    from foliosim.trace.replay import EXIT_BAD_INPUT, ReplayStatus

    config = _config(word_bits, no_page_mapcount)
    status = ReplayStatus()
    if engine == "fast" and not HAVE_NUMBA:
        click.echo(f"foliosim fast-replay: {NUMBA_MISSING}; or use --engine reference", err=True)
        sys.exit(EXIT_BAD_INPUT)
    try:
        if engine == "fast":
            from foliosim.fast.replay import FastReplay

            records = FastReplay(_load_columnar(trace), config).records(keep_going, status, final_only)
        else:
            from foliosim.fast.replay import reference_records

            if _is_npz(trace):
                from foliosim.trace.columnar import read_npz

                lines: Any = read_npz(trace).iter_jsonl()
            else:
                lines, error = _open_lines(trace)
                if lines is None:
                    raise FoliosimError(error or f"cannot read {trace}")
            records = reference_records(lines, config, keep_going, status, final_only)
        for rec in records:
            _emit(rec)
        sys.stdout.flush()
    except FoliosimError as exc:
        _emit({"step": status.steps, "error": str(exc)})
        sys.exit(EXIT_BAD_INPUT)
    except BrokenPipeError:
        _quiet_broken_pipe()
    sys.exit(status.exit_code)


@main.command("trace-convert")
@click.argument("source", metavar="IN")
@click.argument("dest", metavar="OUT")
@click.option("--to", "fmt", type=click.Choice(["npz", "jsonl"]), default=None,
              help="Output format (default: npz if OUT ends in .npz, else jsonl).")
def trace_convert(source: str, dest: str, fmt: str | None) -> None:
    """Convert an rmap trace between JSON Lines and the columnar .npz form (either direction)."""
    from foliosim.errors import FoliosimError
    from foliosim.trace.columnar import write_npz

    fmt = fmt or ("npz" if dest.endswith(".npz") else "jsonl")
    try:
        columnar = _load_columnar(source)
        if columnar.bad_line is not None:
            raise FoliosimError(f"{source}: {columnar.bad_line.error}")
        if fmt == "npz":
            write_npz(columnar, dest)
        else:
            with open(dest, "w", encoding="utf-8") as out:
                for line in columnar.iter_jsonl():
                    out.write(line + "\n")
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
def trace_generate(dest: str, n_ops: int | None, n_folios: int | None, order: int | None, n_mms: int | None,
                   seed: int | None) -> None:
    """Write a seeded valid rmap trace (default: the standard replay benchmark) as .npz or JSON Lines."""
    import dataclasses

    from foliosim.errors import FoliosimError
    from foliosim.trace.columnar import generated_columnar, write_npz
    from foliosim.trace.generate import STANDARD_SPEC

    changes = {k: v for k, v in (("n_ops", n_ops), ("n_folios", n_folios), ("order", order),
                                 ("n_mms", n_mms), ("seed", seed)) if v is not None}
    spec = dataclasses.replace(STANDARD_SPEC, **changes)
    columnar = generated_columnar(spec)
    try:
        if dest.endswith(".npz"):
            write_npz(columnar, dest)
        else:
            with open(dest, "w", encoding="utf-8") as out:
                for line in columnar.iter_jsonl():
                    out.write(line + "\n")
    except (FoliosimError, OSError) as exc:
        click.echo(f"foliosim trace-generate: cannot write {dest}: {exc}", err=True)
        sys.exit(1)
    click.echo(f"foliosim trace-generate: {len(columnar)} operations -> {dest}", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
