"""Sweeps: a grid of cells run on local processes or a Dask cluster, stored as they finish.

Both backends run the same pure :func:`~foliosim.evaluate.cell.run_cells`
on the cells of one driving run (open loop: one simulator run, every design
scored on it; closed loop: one cell per run), so the same grid gives the same
metric rows whoever computes it. Cells already in the results database are
skipped (resumable).
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import itertools
import os
import signal
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

from foliosim.evaluate.cell import CellResult, CellSpec, make_cell, run_cells
from foliosim.evaluate.store import ResultsDB
from foliosim.kconfig import KernelConfig
from foliosim.schemes.base import DESIGNS, make_design
from foliosim.workloads.generators import WORKLOADS, default_params
from foliosim.workloads.steps import WorkloadError

Progress = Callable[[CellResult], None]


@dataclass(slots=True)
class Grid:
    """designs x workloads x parameter variations x seeds (x word sizes)."""

    designs: tuple[str, ...] = DESIGNS
    workloads: tuple[str, ...] = tuple(WORKLOADS)
    seeds: tuple[int, ...] = (1, 2)
    params: dict[str, list[Any]] = field(default_factory=dict)  # "key" or "workload.key" -> values
    word_bits: tuple[int, ...] = (64,)
    no_page_mapcount: bool = False
    oracle: str = "auto"  # "auto": "reuse" for generated workloads, "end" for workload files (recorded programs)
    files: dict[str, str] = field(default_factory=dict)  # "file:NAME@HASH" -> workload JSON Lines (run once)
    mode: str = "open"  # "open": designs scored on the driver's run; "closed": each design steers its own run
    driver: str = "kernel"
    #: designs a configuration does not have (precise-rmapid on 32-bit) are left out of that configuration's cells
    #: instead of refusing the grid (the default design list); ``skipped`` then names them
    skip_unsupported: bool = False
    skipped: list[str] = field(default_factory=list)

    def supported(self, design: str, bits: int) -> bool:
        """Whether ``design`` exists for this word size (ValueError naming both when not, unless skipping)."""
        try:
            make_design(design, KernelConfig(word_bits=bits, no_page_mapcount=self.no_page_mapcount))
        except ValueError as exc:
            if not self.skip_unsupported:
                raise ValueError(f"{exc} (--word-bits {bits})") from None
            note = f"{design} on {bits}-bit"
            if note not in self.skipped:
                self.skipped.append(note)
            return False
        return True

    def cells(self) -> list[CellSpec]:
        """Every cell, validated; parameter keys a workload does not have are not varied for it."""
        self._check_params()
        out: list[CellSpec] = []
        usable = {(d, b): self.supported(d, b) for d in self.designs for b in self.word_bits}
        for workload in (*self.workloads, *self.files):
            variations = self._variations(workload)
            # A workload file's steps do not depend on the seed: one seed gives every result.
            seeds = self.seeds[:1] if workload in self.files else self.seeds
            for design, variation, seed, bits in itertools.product(self.designs, variations, seeds,
                                                                    self.word_bits):
                if not usable[design, bits]:
                    continue
                out.append(make_cell(design, workload, variation, seed, word_bits=bits,
                                     no_page_mapcount=self.no_page_mapcount, oracle=self.oracle_for(workload),
                                     workload_text=self.files.get(workload), mode=self.mode,
                                     driver=self.driver))
        return out

    def oracle_for(self, workload: str) -> str:
        """The oracle mode of a workload's cells: ``auto`` runs the oracle after every reuse on generated
        workloads and once at the end on workload files (after every reuse it costs minutes on a recorded
        program: 645 s instead of 24 s for Chromium's trace)."""
        if self.oracle != "auto":
            return self.oracle
        return "end" if workload in self.files else "reuse"

    def _check_params(self) -> None:
        for key, values in self.params.items():
            scope, dot, name = key.rpartition(".")
            scopes = [scope] if dot else list(self.workloads)
            if not values:
                raise WorkloadError(f"parameter {key!r} has no values")
            if name != "probe_rate" and not any(name in default_params(w) for w in scopes):
                known = sorted({k for w in scopes for k in default_params(w)})
                raise WorkloadError(f"no selected workload has parameter {key!r} (parameters: {', '.join(known)})")

    def _variations(self, workload: str) -> list[dict[str, Any]]:
        if workload in self.files:
            return [{}]
        defaults = default_params(workload)  # WorkloadError names an unknown workload
        axes: dict[str, list[Any]] = {}
        scoped: set[str] = set()
        for key, values in self.params.items():
            scope, dot, name = key.rpartition(".")
            if dot and scope != workload:
                continue
            if (name in defaults or name == "probe_rate") and (dot or name not in scoped):
                axes[name] = values  # "WORKLOAD.KEY" wins over "KEY" for its workload
                if dot:
                    scoped.add(name)
        if not axes:
            return [{}]
        names = list(axes)
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes.values())]


def pending(cells: Iterable[CellSpec], db: ResultsDB) -> list[CellSpec]:
    done = db.done()
    seen: set[str] = set()
    out = []
    for cell in cells:
        if cell.cell_id not in done and cell.cell_id not in seen:
            seen.add(cell.cell_id)
            out.append(cell)
    return out


def runs(cells: Iterable[CellSpec]) -> list[list[CellSpec]]:
    """The cells grouped by driving run (open loop: all designs of a run together), in first-seen order."""
    groups: dict[str, list[CellSpec]] = {}
    for cell in cells:
        key = cell.run_key if cell.mode == "open" else cell.cell_id
        groups.setdefault(key, []).append(cell)
    return list(groups.values())


def run_local(cells: list[CellSpec], db: ResultsDB, jobs: int | None = None, on_result: Progress | None = None,
              engine: str = "reference") -> int:
    """Run cells on ``jobs`` local processes (default: every core), one task per driving run; returns cells
    computed. ``engine``: the driving runs' engine (foliosim.evaluate.cell.ENGINES)."""
    if not cells:
        return 0
    groups = runs(cells)
    workers = max(1, min(jobs or os.cpu_count() or 1, len(groups)))
    if workers == 1:
        for group in groups:
            _store(db, run_cells(group, engine), on_result)
        return len(cells)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        # longest first (a recorded program's trace text as the estimate of its run's work), so that the
        # longest run does not start last and leave the other workers idle; results do not depend on the order
        by_size = sorted(groups, key=lambda group: -len(group[0].workload_text or ""))
        futures = [pool.submit(run_cells, group, engine) for group in by_size]
        for future in as_completed(futures):
            _store(db, future.result(), on_result)
    return len(cells)


def _die_with_parent(parent: int) -> None:
    """Pool worker initializer: the worker dies with the process that started it, even when that one is
    killed with SIGKILL and cannot shut the pool down. Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (the
    pool starts its workers from the thread that submits, which waits for them); if the parent is
    already gone, or prctl() is not available, the worker checks its parent pid and exits."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent check below still catches an early death
        pass
    if os.getppid() != parent:
        os._exit(1)


_PR_SET_PDEATHSIG = 1  # include/uapi/linux/prctl.h


def run_dask(cells: list[CellSpec], db: ResultsDB, address: str, on_result: Progress | None = None,
             timeout: float = 30, engine: str = "reference") -> int:
    """Run cells on the Dask cluster at ``address`` (its workers need foliosim installed)."""
    try:
        distributed: Any = importlib.import_module("distributed")
    except ImportError:
        raise RuntimeError("--dask needs dask.distributed: pip install 'foliosim[dask]'") from None
    if not cells:
        return 0
    client = distributed.Client(address, timeout=timeout)
    try:
        futures = client.map(functools.partial(run_cells, engine=engine), runs(cells), pure=False)
        for future in distributed.as_completed(futures):
            _store(db, future.result(), on_result)
    finally:
        client.close()
    return len(cells)


def _store(db: ResultsDB, results: list[CellResult], on_result: Progress | None) -> None:
    db.put_run(results)
    if on_result is not None:
        for result in results:
            on_result(result)
