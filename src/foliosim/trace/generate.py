"""Seeded generators of valid rmap traces (benchmarks, fuzzing, differential tests).

``STANDARD_SPEC`` is *the* replay benchmark: everybody who measures replay
speed measures this sequence. :func:`generate_reference` (also known as
:func:`generate_ops`) defines the sequence: it yields small tuples
``(kind, folio, mm, level, page, nr)`` of ints, drawn from Python's
``random.Random(spec.seed)``; :func:`to_op` turns one into a
:class:`~foliosim.system.Op`. :func:`fill_columns` writes the same operations
straight into numpy columns, through the compiled generator in
:mod:`foliosim.trace.genfast` when numba is installed (the 10M-operation
standard trace in seconds instead of many minutes), else through the reference.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from foliosim.rmap import PMD, PTE
from foliosim.system import Op

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# Operation kinds in generated tuples.
MAP, DUP, UNMAP = 0, 1, 2
KIND_NAMES = ("map", "dup", "unmap")
LEVEL_PTE, LEVEL_PMD = 0, 1

GenOp = tuple[int, int, int, int, int, int]

#: The standard mix (issue "Speed"): map pte, map pmd, dup pte, dup pmd, unmap pte, unmap pmd.
STANDARD_MIX = (
    ((MAP, LEVEL_PTE), 0.23),
    ((MAP, LEVEL_PMD), 0.11),
    ((DUP, LEVEL_PTE), 0.09),
    ((DUP, LEVEL_PMD), 0.09),
    ((UNMAP, LEVEL_PTE), 0.29),
    ((UNMAP, LEVEL_PMD), 0.19),
)


@dataclass(frozen=True, slots=True)
class TraceSpec:
    """Shape of a generated trace."""

    n_ops: int
    n_folios: int = 64
    order: int = 4
    n_mms: int = 3
    seed: int = 0
    map_range: int = 14  # map/dup pte ranges: up to this many pages (clipped to the folio)
    unmap_range: int = 16  # unmap pte ranges: up to this many pages (clipped to the folio)
    cap_per_page: int = 32  # keep mapcounts bounded: no new mappings above this many entries per page


STANDARD_SPEC = TraceSpec(n_ops=10_000_000, n_folios=64, order=4, n_mms=3, seed=20250303)


def mm_name(idx: int) -> str:
    return f"M{idx}"


def folio_name(idx: int) -> str:
    return f"F{idx}"


def setup_ops(spec: TraceSpec) -> list[Op]:
    """The mm_new / folio_new lines that precede the generated operations."""
    ops = [Op("mm_new", mm=mm_name(m)) for m in range(spec.n_mms)]
    ops += [Op("folio_new", folio=folio_name(f), order=spec.order) for f in range(spec.n_folios)]
    return ops


def to_op(gen: GenOp) -> Op:
    kind, folio, mm, level, page, nr = gen
    return Op(KIND_NAMES[kind], mm=mm_name(mm), folio=folio_name(folio),
              level=PMD if level == LEVEL_PMD else PTE, page=page, nr=nr)


Mix = tuple[tuple[tuple[int, int], float], ...]


def generate_reference(spec: TraceSpec, mix: Mix = STANDARD_MIX) -> Iterator[GenOp]:
    """Yield ``spec.n_ops`` operations that are all valid in sequence after :func:`setup_ops`.

    This is the generator's definition (pure Python): :func:`fill_columns`
    must produce exactly these operations, draw for draw.

    A drawn operation that is impossible in the current state (nothing to unmap
    or dup) is redrawn, so the realised mix can differ slightly from ``mix``;
    :func:`measure_mix` reports it.
    """
    rng = random.Random(spec.seed)
    nr_pages = 1 << spec.order
    n_mms = spec.n_mms
    # pte[f][m][p]: PTE mappings of page p of folio f by MM m; pmd[f][m]: PMD mappings.
    pte = [[[0] * nr_pages for _ in range(n_mms)] for _ in range(spec.n_folios)]
    pmd = [[0] * n_mms for _ in range(spec.n_folios)]
    agg = [[0] * nr_pages for _ in range(spec.n_folios)]  # PTE mappings of each page over all MMs
    total = [0] * spec.n_folios  # PTE mappings per folio, for the cap
    total_pmd = [0] * spec.n_folios  # PMD mappings per folio
    cap = spec.cap_per_page * nr_pages
    pmd_cap = spec.cap_per_page * n_mms
    def _try(kind: int, level: int, f: int, m: int) -> GenOp | None:
        if level == LEVEL_PMD:
            if spec.order == 0:
                return None
            if kind == UNMAP:
                if not pmd[f][m]:
                    return None
                pmd[f][m] -= 1
                total_pmd[f] -= 1
            else:
                if total_pmd[f] >= pmd_cap or (kind == DUP and not total_pmd[f]):
                    return None
                pmd[f][m] += 1
                total_pmd[f] += 1
            return (kind, f, m, LEVEL_PMD, 0, nr_pages)
        if kind != UNMAP and total[f] >= cap:
            return None
        row = pte[f][m]
        if kind == MAP:
            nr = rng.randint(1, map_range)
            page = rng.randrange(nr_pages - nr + 1)
            span: tuple[int, int] | None = (page, nr)
        elif kind == DUP:
            span = _random_run(rng, [c > 0 for c in agg[f]], map_range)
        else:
            span = _random_run(rng, [c > 0 for c in row], unmap_range)
        if span is None:
            return None
        page, nr = span
        step = -1 if kind == UNMAP else 1
        arow = agg[f]
        for p in range(page, page + nr):
            row[p] += step
            arow[p] += step
        total[f] += step * nr
        return (kind, f, m, LEVEL_PTE, page, nr)

    choices = [c for c, _ in mix]
    weights = [w for _, w in mix]
    map_range = max(1, min(spec.map_range, nr_pages))
    unmap_range = max(1, min(spec.unmap_range, nr_pages))
    targets = [(f, m) for f in range(spec.n_folios) for m in range(n_mms)]
    emitted = 0
    # An operation drawn when it is impossible (nothing to unmap or dup yet) is owed
    # and emitted as soon as it becomes possible, so the realised mix converges to ``mix``.
    owed: list[tuple[int, int]] = []
    while emitted < spec.n_ops:
        from_debt = bool(owed) and rng.random() < 0.5
        kind, level = owed[rng.randrange(len(owed))] if from_debt else rng.choices(choices, weights)[0]
        found: GenOp | None = None
        for f, m in [rng.choice(targets) for _ in range(4)]:
            found = _try(kind, level, f, m)
            if found is not None:
                break
        if found is None and not from_debt:
            shuffled = targets[:]
            rng.shuffle(shuffled)
            for f, m in shuffled:
                found = _try(kind, level, f, m)
                if found is not None:
                    break
        if found is None:
            if not from_debt:
                owed.append((kind, level))
            continue
        if from_debt:
            owed.remove((kind, level))
        yield found
        emitted += 1


#: The tuple iterator: the reference generator (no compilation; for short traces and tests).
generate_ops = generate_reference


def fill_columns(spec: TraceSpec, kind: npt.NDArray[np.uint8], folio: npt.NDArray[np.int32],
                 mm: npt.NDArray[np.int32], level: npt.NDArray[np.uint8], page: npt.NDArray[np.int32],
                 nr: npt.NDArray[np.int32], base: int = 0, kind_codes: tuple[int, int, int] = (MAP, DUP, UNMAP),
                 mix: Mix = STANDARD_MIX, progress: Callable[[int], None] | None = None,
                 engine: str = "auto") -> str:
    """Write :func:`generate_reference`'s operations for ``spec`` into rows ``base..base+n_ops-1`` of the columns.

    ``kind_codes`` translates map/dup/unmap into the column's codes; levels are
    0 (pte) and 1 (pmd). ``engine``: ``"fast"`` the compiled generator (needs
    numba), ``"reference"`` the pure-Python one, ``"auto"`` fast when numba is
    installed and the shape is within its limits. ``progress`` is called with
    the operations written so far (every 2**20 when fast, 2**16 otherwise).
    Returns the engine used.
    """
    if engine not in ("auto", "fast", "reference"):
        raise ValueError(f"engine {engine!r} is not auto, fast or reference")
    if engine != "reference":
        from foliosim.replay_aot import load_generate_loop, without_numba

        built = load_generate_loop()  # the ahead-of-time build, if current: then numba is not imported
        if built is not None:
            with without_numba():
                from foliosim.trace import genfast
        else:
            from foliosim.trace import genfast
        usable = ((built is not None or genfast.HAVE_NUMBA)
                  and genfast.supported(spec.n_folios, spec.n_mms, spec.order, mix))
        if engine == "fast" and not usable:
            raise ValueError("the compiled generator needs numba (pip install 'foliosim[fast]') and fewer than "
                             "2**32 (folio, mm) targets")
        if usable:
            genfast.generate_columns(spec.seed, spec.n_ops, spec.n_folios, spec.order, spec.n_mms, spec.map_range,
                                     spec.unmap_range, spec.cap_per_page, mix, kind_codes, kind, folio, mm, level,
                                     page, nr, base=base, progress=progress, loop=built)
            return "fast"
    row = base
    for k, f, m, lv, p, n in generate_reference(spec, mix):
        kind[row] = kind_codes[k]
        folio[row] = f
        mm[row] = m
        level[row] = lv
        page[row] = p
        nr[row] = n
        row += 1
        if progress is not None and (row - base) % (1 << 16) == 0:
            progress(row - base)
    if progress is not None:
        progress(row - base)
    return "reference"


def _random_run(rng: random.Random, ok: list[bool], max_len: int) -> tuple[int, int] | None:
    """A random contiguous run of True entries: (start, length), or None if there is none."""
    candidates = [i for i, flag in enumerate(ok) if flag]
    if not candidates:
        return None
    start = end = rng.choice(candidates)
    want = rng.randint(1, max_len)
    while end - start + 1 < want:
        grow_left = start > 0 and ok[start - 1]
        grow_right = end + 1 < len(ok) and ok[end + 1]
        if not (grow_left or grow_right):
            break
        if grow_right and (not grow_left or rng.random() < 0.5):
            end += 1
        else:
            start -= 1
    return start, end - start + 1


def measure_mix(ops: list[GenOp]) -> dict[str, float]:
    """Realised share of each (kind, level) and the mean pte range length."""
    counts: dict[str, int] = {}
    pte_pages = pte_ops = 0
    for kind, _f, _m, level, _p, nr in ops:
        key = f"{KIND_NAMES[kind]} {'pmd' if level == LEVEL_PMD else 'pte'}"
        counts[key] = counts.get(key, 0) + 1
        if level == LEVEL_PTE:
            pte_ops += 1
            pte_pages += nr
    n = max(1, len(ops))
    out = {key: value / n for key, value in sorted(counts.items())}
    out["mean pte range"] = pte_pages / max(1, pte_ops)
    return out
