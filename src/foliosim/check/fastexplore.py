"""The compiled checker engine: the breadth-first search of :mod:`foliosim.check.explore` in numba.

Same search, same result: the successor function applies each candidate
operation with the fast path's own kernel (:func:`foliosim.fast.kernels.apply_op`,
itself differentially tested against :class:`~foliosim.system.RmapSystem`), so
the rmap and owner-tracking rules are not written a third time. Around it, this
module re-states only the checker's own definitions (state layout, candidate
order, canonical form, properties as yes/no predicates), and the tests compare
per-depth state counts, transitions, verdicts and counterexample traces with
the reference engine (tests/check/test_fastexplore.py).

States are the reference's flat tuples (:mod:`foliosim.check.state`), each
field stored as one byte ``v + KEY_BIAS`` and eight fields packed into an int64
word. The store keeps every canonical state seen, in insertion (BFS) order, with
its parent index; a level is a contiguous range of it, so the frontier needs no
list. An open-addressing hash table (linear probing; each row is one int64:
the store index and 32 bits of the key's hash, so that a probe compares the
stored key only when the tags agree) is the visited set. Violating states are
stored with a flag, as the reference's ``bad`` set.
After each candidate operation only what it can change (the folio, its MM's
row and ground truth, the id allocator) is restored from a snapshot.
Candidate operations are generated in the reference's order, so insertion
order, parent pointers and hence counterexamples are identical.

Messages and counterexample traces are produced by the reference model from the
recorded parent chain (:func:`foliosim.check.explore._rebuild`): the fast engine
only decides *which* states violate *which* property.

Not supported (the caller falls back to the reference): owner-tracking mutants
(they wrap :mod:`foliosim.owner`, which the compiled kernels do not call) and
``keep_states``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from foliosim.check.explore import (
    SANITY_CHECKS,
    Counterexample,
    ExploreResult,
    Progress,
    _Found,
    _path_ops,
    _rebuild,
    explore,
)
from foliosim.check.memory import MemoryLimitError, MemoryLimitReached, human, memory_budget_message
from foliosim.check.properties import first_violation, select, view_of
from foliosim.check.state import (
    HEADER,
    KEY_BIAS,
    CheckConfig,
    State,
    candidate_ops,
    canonical,
    crowded_after,
    decode,
    encode,
    initial_system,
    to_key,
    try_apply,
)
from foliosim.fast import kernels as K
from foliosim.fast._jit import HAVE_NUMBA, compile_notice, jit, jit_inline
from foliosim.fast.state import config_vector
from foliosim.owner import KERNEL_OWNER, OwnerTracking
from foliosim.rmap import PMD, PTE

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
U8 = npt.NDArray[np.uint8]

#: Property bits, in the reference's reporting order (:data:`foliosim.check.properties.PROPERTIES`).
PROP_ORDER = ("sanity", "soundness", "precision", "counters", "full-unmap")
P_SANITY, P_SOUND, P_PREC, P_COUNT, P_FULL = range(5)

# Checker configuration vector ``ck``.
(CK_MMS, CK_P, CK_ORDER, CK_BATCH, CK_PTE, CK_PMD, CK_OPS, CK_REUSE, CK_MNA_LEVEL, CK_COLUMNS,
 CK_WIDTH, CK_W, CK_PROPS, CK_STOP_FIRST, CK_MAX_STATES) = range(15)
CK_LEN = 15
OP_MNA, OP_MAP, OP_DUP, OP_UNMAP = 1, 2, 4, 8

# Statistics / search state vector ``st``.
(ST_STORED, ST_STATES, ST_TRANS, ST_IMPREC, ST_IMPREC_IDX, ST_FOUND, ST_NEXT, ST_EXPANDED,
 ST_ERR_FIELD, ST_ERR_VALUE, ST_FP) = range(11)
ST_SINK = ST_FP + 2 * len(PROP_ORDER)  # pass 2's loads go here, so the compiler keeps them
ST_LEN = ST_SINK + 1

#: States the visited set can index (a table row keeps the store index + 1 in 32 bits).
MAX_STORED = (1 << 32) - 1

# expand() outcomes.
RUN_DONE, RUN_GROW, RUN_STOP, RUN_BUDGET, RUN_FIELD = range(5)

_OPBIT = {"map_new_anon": OP_MNA, "map": OP_MAP, "dup": OP_DUP, "unmap": OP_UNMAP}


def supported(owner: OwnerTracking, keep_states: bool) -> str | None:
    """Why the fast engine cannot run this exploration (None: it can)."""
    if not HAVE_NUMBA:
        return "numba is not installed"
    if owner is not KERNEL_OWNER:
        return f"owner tracking {owner.name!r} (mutants wrap the Python model, which the compiled kernels do not call)"
    if keep_states:
        return "keep_states (the visited set is kept as packed words, not reference keys)"
    return None


ENGINES = ("auto", "fast", "reference")


def explore_with(
    engine: str,
    cfg: CheckConfig,
    owner: OwnerTracking = KERNEL_OWNER,
    properties: list[str] | tuple[str, ...] | None = None,
    stop_at_first: bool = False,
    max_states: int | None = None,
    max_seconds: float | None = None,
    progress: Progress | None = None,
    max_bytes: int | None = None,
    notify: Callable[[str], None] | None = None,
) -> tuple[ExploreResult, str | None]:
    """Explore with ``engine`` ("auto": fast when it can run this exploration, else the reference).

    Returns the result and, when ``engine`` is "fast" but the exploration needs the
    reference, a note saying why (the reference engine then ran). ``max_bytes``
    bounds the search's memory (see :mod:`foliosim.check.memory`); ``notify``
    hears that the fast engine is being compiled, when it is.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    reason = None if engine == "reference" else supported(owner, False)
    if engine == "reference" or reason is not None:
        result = explore(cfg, owner, properties, stop_at_first, max_states, max_seconds, progress,
                         max_bytes=max_bytes)
        note = f"the fast engine cannot run this exploration ({reason}); used the reference engine" \
            if engine == "fast" else None
        return result, note
    return explore_fast(cfg, properties, stop_at_first, max_states, max_seconds, progress,
                        max_bytes=max_bytes, notify=notify), None


def max_successors(cfg: CheckConfig) -> int:
    """An upper bound on the candidate operations of one state."""
    return cfg.mms * (2 + 3 * (cfg.nr_pages * cfg.batch + 1) + 1) + 1


def checker_vector(cfg: CheckConfig, props: list[str], stop_at_first: bool, max_states: int | None) -> I64:
    ck = np.zeros(CK_LEN, dtype=np.int64)
    ck[CK_MMS] = cfg.mms
    ck[CK_P] = cfg.nr_pages
    ck[CK_ORDER] = cfg.order
    ck[CK_BATCH] = cfg.batch
    ck[CK_PTE] = int(PTE in cfg.levels)
    ck[CK_PMD] = int(cfg.pmd_allowed)
    ck[CK_OPS] = sum(_OPBIT[op] for op in set(cfg.ops) if op in _OPBIT)
    ck[CK_REUSE] = int(cfg.reuse_ids)
    ck[CK_MNA_LEVEL] = K.L_PMD if cfg.map_new_anon_level is PMD else K.L_PTE
    ck[CK_COLUMNS] = int(cfg.batch == 1 and PTE in cfg.levels)
    ck[CK_WIDTH] = cfg.width
    ck[CK_W] = (cfg.width + 7) // 8
    ck[CK_PROPS] = sum(1 << PROP_ORDER.index(p) for p in props)
    ck[CK_STOP_FIRST] = int(stop_at_first)
    ck[CK_MAX_STATES] = -1 if max_states is None else max_states
    return ck


# -- state <-> kernel arrays ------------------------------------------------------------------

@jit_inline
def _load(ck: I64, s: I64, glob: I64, fs: I64, ms: I64, id_used: U8, pmc: I32, agg: I32, tpte: I32,
          tpmd: I32, ttot: I64) -> None:
    """Put the fast path's arrays (one folio, index 0; MM ``i`` is block ``i``) into state ``s``."""
    nr = ck[CK_P]
    mms = ck[CK_MMS]
    fs[0, K.F_LIVE] = 1
    fs[0, K.F_ORDER] = ck[CK_ORDER]
    fs[0, K.F_OFF] = 0
    fs[0, K.F_LARGE] = s[0]
    fs[0, K.F_ENTIRE] = s[1]
    fs[0, K.F_NPM] = s[2] | (s[3] << 23)
    fs[0, K.F_MMC0] = s[4]
    fs[0, K.F_MMC1] = s[5]
    fs[0, K.F_ID0] = s[6]
    fs[0, K.F_ID1] = s[7]
    fs[0, K.F_SHARED] = s[9]
    fs[0, K.F_SEQ] = 0
    fs[0, K.F_CAP] = nr
    for p in range(nr):
        pmc[p] = s[HEADER + p]
        agg[p] = 0
    for i in range(id_used.shape[0]):
        id_used[i] = 0
    glob[K.G_LOWEST_FREE] = 1
    pmds = 0
    base = HEADER + nr + 1
    for i in range(mms):
        pos = base + i * (2 + nr)
        mm_id = s[pos]
        ms[i, K.M_LIVE] = 1 if mm_id != 0 else 0
        ms[i, K.M_ID] = mm_id
        if mm_id != 0:
            id_used[mm_id] = 1
        pmd = s[pos + 1]
        tpmd[i, 0] = pmd
        pmds += pmd
        total = pmd
        for p in range(nr):
            v = s[pos + 2 + p]
            tpte[i, p] = v
            agg[p] += v
            total += v
        ttot[i, 0] = total
        ms[i, K.M_NRMAP] = total
    fs[0, K.F_PMDS] = pmds


@jit_inline
def _folio_fields(fs: I64, out: I64, bias: int) -> int:
    """The folio's ``HEADER`` state fields (as :func:`foliosim.check.state.encode` orders them) plus
    ``bias`` into ``out[0:HEADER]``; returns their bitwise or (a byte-range check for the key)."""
    npm = fs[0, K.F_NPM]
    out[0] = fs[0, K.F_LARGE] + bias
    out[1] = fs[0, K.F_ENTIRE] + bias
    out[2] = (npm & 0x7FFFFF) + bias
    out[3] = (npm >> 23) + bias
    out[4] = fs[0, K.F_MMC0] + bias
    out[5] = fs[0, K.F_MMC1] + bias
    out[6] = fs[0, K.F_ID0] + bias
    out[7] = fs[0, K.F_ID1] + bias
    out[8] = bias
    out[9] = fs[0, K.F_SHARED] + bias
    return int(out[0] | out[1] | out[2] | out[3] | out[4] | out[5] | out[6] | out[7] | out[9])


@jit_inline
def _store_state(ck: I64, c: I64, crowded: int, fs: I64, ms: I64, pmc: I32, tpte: I32, tpmd: I32) -> None:
    """:func:`foliosim.check.state.encode` from the arrays into ``c``."""
    nr = ck[CK_P]
    _folio_fields(fs, c, 0)
    for p in range(nr):
        c[HEADER + p] = pmc[p]
    c[HEADER + nr] = crowded
    base = HEADER + nr + 1
    for i in range(ck[CK_MMS]):
        pos = base + i * (2 + nr)
        if ms[i, K.M_LIVE]:
            c[pos] = ms[i, K.M_ID]
            c[pos + 1] = tpmd[i, 0]
            for p in range(nr):
                c[pos + 2 + p] = tpte[i, p]
        else:
            for j in range(2 + nr):
                c[pos + j] = 0


@jit_inline
def _snapshot(glob: I64, fs: I64, ms: I64, id_used: U8, pmc: I32, agg: I32, tpte: I32, tpmd: I32, ttot: I64,
              sv: I64, sv_id: U8, sv_pg: I32, sv_mm: I32) -> None:
    """Save the loaded state: ``sv`` = glob, fs row 0, ms, ttot; ``sv_pg`` = pmc, agg; ``sv_mm`` = tpte, tpmd."""
    k = 0
    for j in range(glob.shape[0]):
        sv[k] = glob[j]
        k += 1
    for j in range(fs.shape[1]):
        sv[k] = fs[0, j]
        k += 1
    for i in range(ms.shape[0]):
        for j in range(ms.shape[1]):
            sv[k] = ms[i, j]
            k += 1
        sv[k] = ttot[i, 0]
        k += 1
    for j in range(id_used.shape[0]):
        sv_id[j] = id_used[j]
    nr = pmc.shape[0]
    for p in range(nr):
        sv_pg[p] = pmc[p]
        sv_pg[nr + p] = agg[p]
    for i in range(tpte.shape[0]):
        for p in range(nr):
            sv_mm[i * (nr + 1) + p] = tpte[i, p]
        sv_mm[i * (nr + 1) + nr] = tpmd[i, 0]


@jit_inline
def _restore(m: int, ids: bool, glob: I64, fs: I64, ms: I64, id_used: U8, pmc: I32, agg: I32, tpte: I32,
             tpmd: I32, ttot: I64, sv: I64, sv_id: U8, sv_pg: I32, sv_mm: I32) -> None:
    """Undo an applied operation of MM ``m``: restore what :func:`foliosim.fast.kernels.apply_op` can change.

    ``ids``: the operation was mm_new or mm_free (only they touch the id allocator).
    """
    k = glob.shape[0]
    if ids:
        for j in range(k):
            glob[j] = sv[j]
        for j in range(id_used.shape[0]):
            id_used[j] = sv_id[j]
    for j in range(fs.shape[1]):
        fs[0, j] = sv[k]
        k += 1
    k += m * (ms.shape[1] + 1)
    for j in range(ms.shape[1]):
        ms[m, j] = sv[k]
        k += 1
    ttot[m, 0] = sv[k]
    nr = pmc.shape[0]
    for p in range(nr):
        pmc[p] = sv_pg[p]
        agg[p] = sv_pg[nr + p]
    for p in range(nr):
        tpte[m, p] = sv_mm[m * (nr + 1) + p]
    tpmd[m, 0] = sv_mm[m * (nr + 1) + nr]


# -- canonical form (foliosim.check.state.canonical) ------------------------------------------

@jit_inline
def _block_less(c: I64, a: int, b: int, blen: int) -> bool:
    """Block starting at ``a`` < block starting at ``b`` (tuple order)."""
    for j in range(blen):
        x = c[a + j]
        y = c[b + j]
        if x != y:
            return bool(x < y)
    return False


@jit_inline
def _sort_blocks(c: I64, out: I64, base: int, mms: int, blen: int, order: I64) -> None:
    """Copy ``c``'s blocks into ``out`` (same base) in sorted order (stable insertion sort)."""
    for i in range(mms):
        order[i] = i
    for i in range(1, mms):
        k = order[i]
        j = i - 1
        while j >= 0 and _block_less(c, base + k * blen, base + order[j] * blen, blen):
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = k
    for i in range(mms):
        src = base + order[i] * blen
        dst = base + i * blen
        for j in range(blen):
            out[dst + j] = c[src + j]


@jit_inline
def _canonical_reversal(ck: I64, c: I64, out: I64, tmp: I64, tmp2: I64, order: I64) -> None:
    """Sorted blocks, and the page reversal when it is smaller."""
    nr = ck[CK_P]
    mms = ck[CK_MMS]
    width = ck[CK_WIDTH]
    blen = 2 + nr
    base = HEADER + nr + 1
    for j in range(base):
        out[j] = c[j]
    _sort_blocks(c, out, base, mms, blen, order)
    # The reversed state in tmp, its blocks sorted into tmp2.
    for j in range(HEADER):
        tmp[j] = c[j]
    for p in range(nr):
        tmp[HEADER + p] = c[HEADER + nr - 1 - p]
    tmp[HEADER + nr] = c[HEADER + nr]
    for i in range(mms):
        pos = base + i * blen
        tmp[pos] = c[pos]
        tmp[pos + 1] = c[pos + 1]
        for p in range(nr):
            tmp[pos + 2 + p] = c[pos + 2 + nr - 1 - p]
    for j in range(base):
        tmp2[j] = tmp[j]
    _sort_blocks(tmp, tmp2, base, mms, blen, order)
    for j in range(HEADER, width):
        if tmp2[j] != out[j]:
            if tmp2[j] < out[j]:
                for q in range(HEADER, width):
                    out[q] = tmp2[q]
            return


@jit_inline
def _insert_sorted(arr: I64, n: int, v: int) -> None:
    """Insert ``v`` into the sorted prefix ``arr[:n]``."""
    j = n - 1
    while j >= 0 and arr[j] > v:
        arr[j + 1] = arr[j]
        j -= 1
    arr[j + 1] = v


@jit_inline
def _block_key_less(c: I64, a: int, b: int, nr: int, sa: I64, sb: I64) -> bool:
    """(mm_id, pmd, sorted(ptes)) of block ``a`` < that of block ``b``."""
    if c[a] != c[b]:
        return bool(c[a] < c[b])
    if c[a + 1] != c[b + 1]:
        return bool(c[a + 1] < c[b + 1])
    for p in range(nr):
        _insert_sorted(sa, p, c[a + 2 + p])
        _insert_sorted(sb, p, c[b + 2 + p])
    for p in range(nr):
        if sa[p] != sb[p]:
            return bool(sa[p] < sb[p])
    return False


@jit_inline
def _canonical_columns(ck: I64, c: I64, out: I64, tmp: I64, tmp2: I64, order: I64, sa: I64, sb: I64,
                       cols: I64) -> None:
    """Single-page operations: blocks by key, then page columns, then blocks again."""
    nr = ck[CK_P]
    mms = ck[CK_MMS]
    blen = 2 + nr
    base = HEADER + nr + 1
    # 1. stable sort of the blocks by (id, pmd, sorted ptes) -> tmp
    for i in range(mms):
        order[i] = i
    for i in range(1, mms):
        k = order[i]
        j = i - 1
        while j >= 0 and _block_key_less(c, base + k * blen, base + order[j] * blen, nr, sa, sb):
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = k
    for j in range(base):
        tmp[j] = c[j]
    for i in range(mms):
        src = base + order[i] * blen
        dst = base + i * blen
        for j in range(blen):
            tmp[dst + j] = c[src + j]
    # 2. sort the page columns (page mapcount, then each block's PTE count); column p at cols[p*(1+mms)]
    clen = 1 + mms
    for p in range(nr):
        cols[p * clen] = tmp[HEADER + p]
        for i in range(mms):
            cols[p * clen + 1 + i] = tmp[base + i * blen + 2 + p]
    for p in range(nr):
        order[p] = p
    for i in range(1, nr):
        k = order[i]
        j = i - 1
        while j >= 0 and _block_less(cols, k * clen, order[j] * clen, clen):
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = k
    for j in range(base):
        tmp2[j] = tmp[j]
    for p in range(nr):
        col = order[p] * clen
        tmp2[HEADER + p] = cols[col]
        for i in range(mms):
            pos = base + i * blen
            tmp2[pos] = tmp[pos]
            tmp2[pos + 1] = tmp[pos + 1]
            tmp2[pos + 2 + p] = cols[col + 1 + i]
    # 3. sort the blocks again (full tuples)
    for j in range(base):
        out[j] = tmp2[j]
    _sort_blocks(tmp2, out, base, mms, blen, order)


@jit_inline
def _pack_words(kv: I64, words: I64, w: int) -> None:
    """Eight biased bytes of ``kv`` (zero beyond the state's width) per int64 key word.

    The fields are first stored whole into ``kv`` and combined here: or-ing each
    field into its word in memory would chain every field on the previous one.
    """
    for j in range(w):
        q = 8 * j
        words[j] = (kv[q] | (kv[q + 1] << 8) | (kv[q + 2] << 16) | (kv[q + 3] << 24) | (kv[q + 4] << 32)
                    | (kv[q + 5] << 40) | (kv[q + 6] << 48) | (kv[q + 7] << 56))


@jit_inline
def _direct_key(ck: I64, crowded: int, fs: I64, ms: I64, pmc: I32, tpte: I32, tpmd: I32, kv: I64,
                words: I64) -> bool:
    """The canonical packed key of the arrays' state when no MM id changed since the (canonical) parent.

    The parent's blocks are sorted, and a block's first field is its MM id
    (distinct for live MMs; dead blocks are all zero), so an operation that
    keeps every id keeps the blocks sorted in both page orientations: only the
    reversal is left to decide, by the first page (in field order) whose value
    differs from its mirror. The biased fields go to ``kv``, the packed key to ``words``.
    Returns False when a field does not fit a byte (the caller takes the slow
    path, which names the field).
    """
    nr = ck[CK_P]
    mms = ck[CK_MMS]
    half = nr // 2
    rev = False
    decided = False
    for p in range(half):
        a = pmc[p]
        b = pmc[nr - 1 - p]
        if a != b:
            rev = b < a
            decided = True
            break
    if not decided:
        for i in range(mms):
            if decided:
                break
            for p in range(half):
                a = tpte[i, p]
                b = tpte[i, nr - 1 - p]
                if a != b:
                    rev = b < a
                    decided = True
                    break
    b = KEY_BIAS
    acc = _folio_fields(fs, kv, b)
    for p in range(nr):
        v = (pmc[nr - 1 - p] if rev else pmc[p]) + b
        kv[HEADER + p] = v
        acc |= v
    kv[HEADER + nr] = crowded + b
    f = HEADER + nr + 1
    for i in range(mms):
        if ms[i, K.M_LIVE]:
            v = ms[i, K.M_ID] + b
            kv[f] = v
            acc |= v
            v = tpmd[i, 0] + b
            kv[f + 1] = v
            acc |= v
            for p in range(nr):
                v = (tpte[i, nr - 1 - p] if rev else tpte[i, p]) + b
                kv[f + 2 + p] = v
                acc |= v
        else:
            for j in range(2 + nr):
                kv[f + j] = b
        f += 2 + nr
    _pack_words(kv, words, ck[CK_W])
    return bool((acc & ~0xFF) == 0)


# -- properties (foliosim.check.properties, as yes/no) ----------------------------------------

@jit_inline
def _maybe_shared(fs: I64) -> bool:
    """:func:`foliosim.folio.folio_maybe_mapped_shared` for a large folio."""
    return bool(fs[0, K.F_LARGE] + 1 > 1 and fs[0, K.F_SHARED] != 0)


@jit_inline
def _violated(ck: I64, kc: I64, live: int, crowded: int, fs: I64, ms: I64, pmc: I32, agg: I32,
              tpmd: I32, ttot: I64) -> int:
    """The first property in ``live`` (bit mask) that the state violates, or -1."""
    mms = ck[CK_MMS]
    nr = ck[CK_P]
    nmap = 0
    entries = 0
    pmds = 0
    for i in range(mms):
        if ttot[i, 0] != 0:
            nmap += 1
        entries += ttot[i, 0]
        pmds += tpmd[i, 0]
    shared = _maybe_shared(fs)
    large = fs[0, K.F_LARGE]
    id0 = fs[0, K.F_ID0]
    id1 = fs[0, K.F_ID1]
    mmc0 = fs[0, K.F_MMC0]
    mmc1 = fs[0, K.F_MMC1]
    sbit = fs[0, K.F_SHARED]
    npm = fs[0, K.F_NPM]
    if live & (1 << P_SANITY) and not K._sanity_ok(kc, fs, 0, 1, 1):
        return P_SANITY
    if live & (1 << P_SOUND) and not shared and nmap > 1:
        return P_SOUND
    if live & (1 << P_PREC) and crowded == 0 and nmap <= 1 and shared:
        return P_PREC
    if live & (1 << P_COUNT):
        bad = large + 1 != entries
        if K._has_entire(ck[CK_ORDER], kc[K.C_IS64]) and fs[0, K.F_ENTIRE] + 1 != pmds:
            bad = True
        if kc[K.C_PAGE_MC]:
            mapped = 0
            for p in range(nr):
                if pmc[p] + 1 != agg[p]:
                    bad = True
                if agg[p] > 0:
                    mapped += 1
            if pmds:
                mapped += K.ENTIRELY_MAPPED
            if npm != mapped:
                bad = True
        else:
            for p in range(nr):
                if pmc[p] != -1:
                    bad = True
            if npm != 0:
                bad = True
        for idx in range(2):
            sid = id0 if idx == 0 else id1
            stored = mmc0 if idx == 0 else mmc1
            if sid == 0:
                if stored != -1:
                    bad = True
                continue
            real = 0
            known = False
            for i in range(mms):
                if ms[i, K.M_LIVE] and ms[i, K.M_ID] == sid:
                    real = ttot[i, 0]
                    known = True
            if stored + 1 > real or stored + 1 < 1:
                bad = True
            if not known:  # a slot naming a dead MM
                bad = True
        if id0 != 0 and id0 == id1:
            bad = True
        if id0 != 0 and id1 != 0 and sbit == 0:
            bad = True
        if entries == 0 and (id0 != 0 or id1 != 0 or sbit != 0):
            bad = True
        if not bad and crowded == 0:
            for i in range(mms):
                if ttot[i, 0] == 0:
                    continue
                mm_id = ms[i, K.M_ID]
                if mm_id == id0:
                    if mmc0 + 1 != ttot[i, 0]:
                        bad = True
                elif mm_id == id1:
                    if mmc1 + 1 != ttot[i, 0]:
                        bad = True
                else:
                    bad = True
        if bad:
            return P_COUNT
    if live & (1 << P_FULL) and entries == 0:
        fresh = (large == -1 and fs[0, K.F_ENTIRE] == -1 and npm == 0 and mmc0 == -1 and mmc1 == -1
                 and id0 == 0 and id1 == 0 and sbit == 0)
        for p in range(nr):
            if pmc[p] != -1:
                fresh = False
        if not fresh or not K._free_check_ok(kc, fs, pmc, 0):
            return P_FULL
    return -1


# -- the visited set --------------------------------------------------------------------------

@jit_inline
def _hash(words: I64, w: int) -> np.uint64:
    h = np.uint64(0xCBF29CE484222325)
    for j in range(w):
        h = (h ^ np.uint64(words[j])) * np.uint64(0x100000001B3)
        h ^= h >> np.uint64(29)
    return h


@jit_inline
def _find_or_slot(table: I64, store: I64, words: I64, w: int, h: np.uint64) -> int:
    """The store index of ``words`` (hash ``h``), or -(table slot) - 1 where it would go.

    A table row is ``(tag << 32) | (store index + 1)``, 0 when empty, with the
    tag the hash's high 32 bits and the slot its low bits: a probe reads the
    stored key only when the tags agree (rows are 8 bytes, so the table is a
    sixth of a table holding whole keys and stays in the caches longer).
    """
    mask = table.shape[0] - 1
    slot = np.int64(h & np.uint64(mask))
    tag = np.int64(h >> np.uint64(32))
    while True:
        row = table[slot]
        if row == 0:
            return int(-slot - 1)
        if (row >> 32) & 0xFFFFFFFF == tag:
            idx = (row & 0xFFFFFFFF) - 1
            same = True
            for j in range(w):
                if store[idx, j] != words[j]:
                    same = False
                    break
            if same:
                return int(idx)
        slot = (slot + 1) & mask


@jit_inline
def _put(table: I64, slot: int, idx: int, h: np.uint64) -> None:
    table[slot] = (np.int64(h >> np.uint64(32)) << 32) | (idx + 1)


@jit
def rehash(store: I64, n: int, table: I64, w: int, words: I64) -> None:
    """Insert store rows ``0..n-1`` into the empty ``table`` (``words``: scratch of ``w`` words)."""
    for idx in range(n):
        for j in range(w):
            words[j] = store[idx, j]
        h = _hash(words, w)
        r = _find_or_slot(table, store, words, w, h)
        _put(table, -r - 1, idx, h)


# -- the search -------------------------------------------------------------------------------

@jit_inline
def _candidates(ck: I64, s: I64, ops: I64, ttot: I64, tpte: I32, tpmd: I32, agg: I32) -> int:
    """:func:`foliosim.check.state.candidate_ops` (with the state): rows (kind, mm, level, page, nr, twin).

    ``twin``: for a dup, the index of the map candidate of the same MM, level and
    pages (-1 when there is none; see :func:`_same_as_map`).
    """
    nr_pages = ck[CK_P]
    mms = ck[CK_MMS]
    blen = 2 + nr_pages
    base = HEADER + nr_pages + 1
    batch = ck[CK_BATCH]
    opmask = ck[CK_OPS]
    mapped = False
    for i in range(mms):
        if ttot[i, 0] != 0:
            mapped = True
    n = 0
    dead_offered = False
    for i in range(mms):
        dup_block = False
        for j in range(i):
            same = True
            for q in range(blen):
                if s[base + i * blen + q] != s[base + j * blen + q]:
                    same = False
                    break
            if same:
                dup_block = True
                break
        if dup_block:
            continue
        if s[base + i * blen] == 0:
            if ck[CK_REUSE] and not dead_offered:
                dead_offered = True
                ops[n, 0] = K.K_MM_NEW
                ops[n, 1] = i
                ops[n, 5] = -1
                n += 1
            continue
        if opmask & OP_MNA and not mapped:
            ops[n, 0] = K.K_MAP_NEW_ANON
            ops[n, 1] = i
            ops[n, 5] = -1
            ops[n, 2] = ck[CK_MNA_LEVEL]
            ops[n, 3] = 0
            ops[n, 4] = nr_pages
            n += 1
        map_base = n if opmask & OP_MAP else -1
        for kidx in range(3):
            kind = K.K_MAP + kidx
            if not opmask & (OP_MAP << kidx):
                continue
            q = 0  # the (page, nr) pair's place among the map candidates, which are not filtered
            if ck[CK_PTE]:
                for page in range(nr_pages):
                    for nr in range(1, min(batch, nr_pages - page) + 1):
                        q += 1
                        ok = True
                        if kind == K.K_DUP:
                            for p in range(page, page + nr):
                                if agg[p] == 0:
                                    ok = False
                        elif kind == K.K_UNMAP:
                            if ttot[i, 0] == 0:
                                ok = False
                            for p in range(page, page + nr):
                                if tpte[i, p] < 1:
                                    ok = False
                        if ok:
                            ops[n, 0] = kind
                            ops[n, 1] = i
                            ops[n, 2] = K.L_PTE
                            ops[n, 3] = page
                            ops[n, 4] = nr
                            ops[n, 5] = map_base + q - 1 if kind == K.K_DUP and map_base >= 0 else -1
                            n += 1
            if ck[CK_PMD]:
                if kind == K.K_DUP:
                    anyp = False
                    for j in range(mms):
                        if tpmd[j, 0] != 0:
                            anyp = True
                    if not anyp:
                        continue
                if kind == K.K_UNMAP and tpmd[i, 0] <= 0:
                    continue
                ops[n, 0] = kind
                ops[n, 1] = i
                ops[n, 2] = K.L_PMD
                ops[n, 3] = 0
                ops[n, 4] = nr_pages
                ops[n, 5] = map_base + q if kind == K.K_DUP and map_base >= 0 else -1
                n += 1
        if ck[CK_REUSE] and ttot[i, 0] == 0:
            ops[n, 0] = K.K_MM_FREE
            ops[n, 1] = i
            ops[n, 5] = -1
            n += 1
    return n


@jit_inline
def _sanity_rejection(ck: I64, kc: I64, fs: I64, ms: I64, ttot: I64, kind: int, m: int, level: int,
                      nr: int) -> bool:
    """Whether a rejected candidate was rejected by the kernel's sanity check (as RmapSystem orders its checks)."""
    if kind == K.K_MM_NEW or kind == K.K_MM_FREE:
        return False
    if kind == K.K_MAP_NEW_ANON:
        if fs[0, K.F_LARGE] + 1 >= 1:
            return False
        for i in range(ck[CK_MMS]):
            if ttot[i, 0] != 0:
                return False
    diff = 1 if level == K.L_PMD else nr
    return not K._sanity_ok(kc, fs, 0, diff, ms[m, K.M_ID])


@jit_inline
def _same_as_map(kc: I64, fs: I64, pmc: I32, level: int, page: int, nr: int) -> bool:
    """Whether a dup leads to the same state as the map of the same MM, level and pages.

    Both add the same mappings to the owner tracking, the ground truth and the
    per-page (or entire) mapcounts; they differ only in that the map counts
    pages (or the entire mapping) that go from unmapped to mapped in
    ``_nr_pages_mapped``, and a dup is offered only for pages already mapped.
    Checked on the counters themselves, so the shortcut never depends on the
    counters property holding.
    """
    if level == K.L_PMD:
        return bool(fs[0, K.F_ENTIRE] >= 0)
    if kc[K.C_PAGE_MC]:
        for p in range(page, page + nr):
            if pmc[p] < 0:
                return False
    return True


@jit
def _apply_op(kc: I64, glob: I64, fs: I64, ms: I64, id_used: U8, pmc: I32, agg: I32, tpte: I32, tpmd: I32, ttot: I64,
              kind: int, m: int, level: int, page: int, nr: int) -> int:
    """:func:`foliosim.fast.kernels.apply_op` on folio 0, compiled as a function of its own.

    expand() applies every candidate (pass 1, inlined: the hot path) and again each new state (pass 3,
    this call). Inlining the whole rmap core at both places made expand()'s cold compile 114 s of CPU
    (numba's IR passes grow faster than the function); with this call 79 s, at the same states/s.
    """
    return K.apply_op(kc, glob, fs, ms, id_used, pmc, agg, tpte, tpmd, ttot, kind, 0, m, level, page, nr, 0)


@jit
def expand(ck: I64, kc: I64, store: I64, parent: I64, bad: U8, table: I64, st: I64, lo: int, hi: int,
           glob: I64, fs: I64, ms: I64, id_used: U8, pmc: I32, agg: I32, tpte: I32, tpmd: I32, ttot: I64,
           s: I64, c: I64, cc: I64, tmp: I64, tmp2: I64, order: I64, sa: I64, sb: I64, cols: I64,
           words: I64, ops: I64, sv: I64, sv_id: U8, sv_pg: I32, sv_mm: I32, keys: I64,
           kinfo: I64, kv: I64) -> tuple[int, int]:
    """Expand store rows ``lo..hi-1`` (one level, skipping violating rows); (row reached, RUN_*)."""
    w = ck[CK_W]
    width = ck[CK_WIDTH]
    props = ck[CK_PROPS]
    stop_first = ck[CK_STOP_FIRST]
    crowd_at = HEADER + ck[CK_P]
    cap = store.shape[0]
    room = ops.shape[0]
    for idx in range(lo, hi):
        if bad[idx]:
            continue
        if st[ST_STORED] + room > cap or 2 * (st[ST_STORED] + room) > table.shape[0]:
            return idx, RUN_GROW
        for j in range(w):
            word = store[idx, j]
            for b in range(8):
                f = j * 8 + b
                if f < width:
                    s[f] = ((word >> (8 * b)) & 0xFF) - KEY_BIAS
        was_crowded = s[crowd_at]
        _load(ck, s, glob, fs, ms, id_used, pmc, agg, tpte, tpmd, ttot)
        _snapshot(glob, fs, ms, id_used, pmc, agg, tpte, tpmd, ttot, sv, sv_id, sv_pg, sv_mm)
        nops = _candidates(ck, s, ops, ttot, tpte, tpmd, agg)
        # Pass 1: every candidate's canonical packed key (and whether it was rejected).
        mask = table.shape[0] - 1
        for o in range(nops):
            kind = ops[o, 0]
            m = ops[o, 1]
            level = ops[o, 2]
            twin = ops[o, 5]
            if twin >= 0 and _same_as_map(kc, fs, pmc, level, ops[o, 3], ops[o, 4]):
                # The map twin's outcome: rejected alike, or the same state (looked up by the twin).
                kinfo[o, 0] = kinfo[twin, 0] if kinfo[twin, 0] < 2 else 3
                continue
            ev = K.apply_op(kc, glob, fs, ms, id_used, pmc, agg, tpte, tpmd, ttot, kind, 0, m, level,
                            ops[o, 3], ops[o, 4], 0)
            if ev < -1:
                kinfo[o, 0] = 1 if (props & 1 and _sanity_rejection(ck, kc, fs, ms, ttot, kind, m, level,
                                                                    ops[o, 4])) else 0
                continue
            kinfo[o, 0] = 2
            nmap = 0
            for i in range(ck[CK_MMS]):
                if ttot[i, 0] != 0:
                    nmap += 1
            crowded = 0 if nmap == 0 else (1 if was_crowded or nmap >= 3 else 0)
            kinfo[o, 1] = nmap
            kinfo[o, 2] = crowded
            direct = (not ck[CK_COLUMNS] and kind != K.K_MM_NEW and kind != K.K_MM_FREE
                      and _direct_key(ck, crowded, fs, ms, pmc, tpte, tpmd, kv, words))
            if not direct:
                _store_state(ck, c, crowded, fs, ms, pmc, tpte, tpmd)
                if ck[CK_COLUMNS]:
                    _canonical_columns(ck, c, cc, tmp, tmp2, order, sa, sb, cols)
                else:
                    _canonical_reversal(ck, c, cc, tmp, tmp2, order)
                for f in range(width):
                    v = cc[f] + KEY_BIAS
                    if v < 0 or v > 255:
                        st[ST_ERR_FIELD] = f
                        st[ST_ERR_VALUE] = cc[f]
                        return idx, RUN_FIELD
                    kv[f] = v
                _pack_words(kv, words, w)
            for j in range(w):
                keys[o, j] = words[j]
            kinfo[o, 3] = np.int64(_hash(words, w))
            _restore(m, kind == K.K_MM_NEW or kind == K.K_MM_FREE, glob, fs, ms, id_used, pmc, agg, tpte, tpmd,
                     ttot, sv, sv_id, sv_pg, sv_mm)
        # Pass 2: touch every key's first table slot, then the stored key it names when the
        # tags agree, so that the cache misses of all candidates overlap.
        touch = np.int64(0)
        for o in range(nops):
            if kinfo[o, 0] == 2:
                touch += table[kinfo[o, 3] & mask]
        for o in range(nops):
            if kinfo[o, 0] == 2:
                row = table[kinfo[o, 3] & mask]
                if row != 0 and (row >> 32) & 0xFFFFFFFF == (kinfo[o, 3] >> 32) & 0xFFFFFFFF:
                    touch += store[(row & 0xFFFFFFFF) - 1, 0]
        st[ST_SINK] += touch
        # Pass 3: look the keys up and insert the new states, in candidate order.
        stop = False
        for o in range(nops):
            flag = kinfo[o, 0]
            if flag == 3:  # the state its map twin has just found or stored
                st[ST_TRANS] += 1
                continue
            if flag < 2:
                if flag == 1 and not st[ST_FOUND] & 1:
                    st[ST_FOUND] |= 1
                    st[ST_FP + 2 * P_SANITY] = idx
                    st[ST_FP + 2 * P_SANITY + 1] = -1
                    if stop_first:
                        stop = True
                        break
                continue
            st[ST_TRANS] += 1
            for j in range(w):
                words[j] = keys[o, j]
            h = np.uint64(kinfo[o, 3])
            r = _find_or_slot(table, store, words, w, h)
            if r < 0:
                m = ops[o, 1]
                _apply_op(kc, glob, fs, ms, id_used, pmc, agg, tpte, tpmd, ttot, ops[o, 0], m, ops[o, 2], ops[o, 3],
                          ops[o, 4])
                nmap = kinfo[o, 1]
                crowded = kinfo[o, 2]
                live = props if stop_first else props & ~st[ST_FOUND]
                hit = _violated(ck, kc, live, crowded, fs, ms, pmc, agg, tpmd, ttot)
                new = st[ST_STORED]
                for j in range(w):
                    store[new, j] = words[j]
                parent[new] = idx
                _put(table, -r - 1, new, h)
                st[ST_STORED] = new + 1
                if hit >= 0:
                    bad[new] = 1
                    st[ST_FOUND] |= 1 << hit
                    st[ST_FP + 2 * hit] = idx
                    st[ST_FP + 2 * hit + 1] = new
                    if stop_first:
                        stop = True
                else:
                    bad[new] = 0
                    st[ST_STATES] += 1
                    st[ST_NEXT] += 1
                    if nmap == 1 and _maybe_shared(fs):  # entries > 0 and one MM maps it
                        st[ST_IMPREC] += 1
                        if st[ST_IMPREC_IDX] < 0:
                            st[ST_IMPREC_IDX] = new
                _restore(m, ops[o, 0] == K.K_MM_NEW or ops[o, 0] == K.K_MM_FREE, glob, fs, ms, id_used, pmc, agg,
                         tpte, tpmd, ttot, sv, sv_id, sv_pg, sv_mm)
            if stop:
                break
        st[ST_EXPANDED] += 1
        if stop:
            return idx + 1, RUN_STOP
        if st[ST_EXPANDED] % 256 == 0 and ck[CK_MAX_STATES] >= 0 and st[ST_STATES] > ck[CK_MAX_STATES]:
            return idx + 1, RUN_BUDGET
    return hi, RUN_DONE


# -- the driver -------------------------------------------------------------------------------

def _pack(state: State, w: int) -> I64:
    raw = np.zeros(w * 8, dtype=np.uint8)
    raw[:len(state)] = np.asarray(state, dtype=np.int64) + KEY_BIAS
    return raw.view("<i8").astype(np.int64)


def _unpack(words: I64, width: int) -> State:
    raw = np.ascontiguousarray(words, dtype="<i8").view(np.uint8)[:width]
    return tuple(int(v) - KEY_BIAS for v in raw)


class _Search:
    """The growable store, parent and flag arrays and the hash table, within a memory limit.

    ``fixed`` is the memory already committed elsewhere (the scratch arrays);
    :meth:`grow` sizes the arrays before allocating them and raises
    :class:`~foliosim.check.memory.MemoryLimitReached` instead of passing ``max_bytes``.
    """

    def __init__(self, w: int, cap: int, max_bytes: int | None = None, fixed: int = 0) -> None:
        self.w = w
        self.max_bytes = max_bytes
        self.fixed = fixed
        need = self.fixed + self._arrays_bytes(cap) + 8 * _pow2(3 * cap)
        if max_bytes is not None and need > max_bytes:
            raise MemoryLimitError(f"this bound needs {human(need)} before its first state is expanded "
                                   f"(one state's candidates and a first store), more than --max-memory "
                                   f"{human(max_bytes)}; lower --mms/--order or raise --max-memory")
        self.store = np.zeros((cap, w), dtype=np.int64)
        self.parent = np.full(cap, -1, dtype=np.int64)
        self.bad = np.zeros(cap, dtype=np.uint8)
        self.table = _table(cap, w)

    def _arrays_bytes(self, cap: int) -> int:
        return cap * (8 * self.w + 8 + 1)

    def in_use(self) -> int:
        """Bytes held now: the arrays and the fixed part."""
        return self.fixed + self._arrays_bytes(self.store.shape[0]) + self.table.nbytes

    def _plan(self, need: int, exact: bool = False) -> tuple[int, int, int]:
        """(store capacity, table length, peak bytes while growing) to hold ``need`` states
        (capacity doubled as usual, or ``exact``: just ``need``)."""
        cap = cap0 = self.store.shape[0]
        if exact:
            cap = max(cap0, need)
        while cap < need:
            cap *= 2
        table_len = self.table.shape[0] if self.table.shape[0] >= 2 * need else _pow2(3 * need)
        peak = self.in_use()
        if cap != cap0:
            peak += self._arrays_bytes(cap)
        if table_len != self.table.shape[0]:
            peak += 8 * table_len
        return cap, table_len, peak

    def grow(self, n: int, need: int, minimum: int | None = None) -> None:
        """Room for ``need`` states (at least ``minimum``, when the limit does not allow ``need``)."""
        minimum = need if minimum is None else min(minimum, need)
        if minimum >= MAX_STORED:
            raise MemoryLimitReached(f"the fast checker's visited set holds at most {MAX_STORED - 1:,} states "
                                     "(a table row keeps a 32-bit store index)")
        need = min(need, MAX_STORED - 1)
        cap, table_len, peak = self._plan(need)
        if self.max_bytes is not None and peak > self.max_bytes:
            # Not the predicted level at once: as much of it as fits, down to the minimum.
            target = need
            cap, table_len, peak = self._plan(target, exact=True)
            while target > minimum and peak > self.max_bytes:
                target = max(minimum, (target + n) // 2)
                cap, table_len, peak = self._plan(target, exact=True)
            if peak > self.max_bytes:
                raise MemoryLimitReached(f"the next {human(peak - self.in_use())} would pass the limit")
        if cap != self.store.shape[0]:
            store = np.zeros((cap, self.w), dtype=np.int64)
            store[:n] = self.store[:n]
            parent = np.full(cap, -1, dtype=np.int64)
            parent[:n] = self.parent[:n]
            bad = np.zeros(cap, dtype=np.uint8)
            bad[:n] = self.bad[:n]
            self.store, self.parent, self.bad = store, parent, bad
        if table_len != self.table.shape[0]:
            self.table = np.zeros(0, dtype=np.int64)  # release the old table before the new one
            self.table = np.zeros(table_len, dtype=np.int64)
            rehash(self.store, n, self.table, self.w, np.zeros(self.w, dtype=np.int64))

    def state(self, idx: int, width: int) -> State:
        return _unpack(self.store[idx], width)

    def chain_parents(self, idx: int, width: int) -> dict[bytes, bytes | None]:
        """A parents dict (reference keys) holding just the chain from the root to ``idx``."""
        out: dict[bytes, bytes | None] = {}
        cur = idx
        while cur >= 0:
            up = int(self.parent[cur])
            out[to_key(self.state(cur, width))] = to_key(self.state(up, width)) if up >= 0 else None
            cur = up
        return out


def _scratch(cfg: CheckConfig, n_ops: int) -> tuple[Any, ...]:
    """The per-expansion work arrays :func:`expand` takes after its search arguments."""
    nr, mms, width = cfg.nr_pages, cfg.mms, cfg.width
    w = (width + 7) // 8
    return (np.zeros(K.G_LEN, dtype=np.int64), np.zeros((1, K.F_COLS), dtype=np.int64),
            np.zeros((mms, K.M_COLS), dtype=np.int64), np.zeros(mms + 2, dtype=np.uint8),
            np.zeros(nr, dtype=np.int32), np.zeros(nr, dtype=np.int32),
            np.zeros((mms, nr), dtype=np.int32), np.zeros((mms, 1), dtype=np.int32),
            np.zeros((mms, 1), dtype=np.int64), np.zeros(width, dtype=np.int64),
            np.zeros(width, dtype=np.int64), np.zeros(width, dtype=np.int64),
            np.zeros(width, dtype=np.int64), np.zeros(width, dtype=np.int64),
            np.zeros(max(mms, nr), dtype=np.int64), np.zeros(nr, dtype=np.int64),
            np.zeros(nr, dtype=np.int64), np.zeros(nr * (1 + mms), dtype=np.int64),
            np.zeros(w, dtype=np.int64), np.zeros((n_ops, 6), dtype=np.int64),
            np.zeros(K.G_LEN + K.F_COLS + mms * (K.M_COLS + 1), dtype=np.int64),
            np.zeros(mms + 2, dtype=np.uint8), np.zeros(2 * nr, dtype=np.int32),
            np.zeros(mms * (nr + 1), dtype=np.int32), np.zeros((n_ops, w), dtype=np.int64),
            np.zeros((n_ops, 4), dtype=np.int64), np.zeros(8 * w, dtype=np.int64))


def _table(n: int, w: int) -> I64:
    """An empty hash table for ``n`` states (load factor at most 1/3 until the next growth)."""
    return np.zeros(_pow2(3 * n), dtype=np.int64)


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def explore_fast(
    cfg: CheckConfig,
    properties: list[str] | tuple[str, ...] | None = None,
    stop_at_first: bool = False,
    max_states: int | None = None,
    max_seconds: float | None = None,
    progress: Progress | None = None,
    chunk: int = 1 << 14,
    max_bytes: int | None = None,
    notify: Callable[[str], None] | None = None,
) -> ExploreResult:
    """:func:`foliosim.check.explore.explore` with the compiled successor function (kernel owner tracking).

    Same result fields, counts and counterexamples; time budgets are checked
    every ``chunk`` expanded states (fewer when states have many candidates) instead of every 256. ``max_bytes`` bounds
    the arrays the search allocates: it stops cleanly (``budget_hit``) when the
    next growth would pass it, and raises MemoryLimitError when not even the
    first expansion fits. ``notify`` hears when the kernels are being compiled.
    """
    props = select(properties)
    owner = KERNEL_OWNER
    result = ExploreResult(cfg, owner.name, list(props), engine="fast")
    start = time.perf_counter()
    width = cfg.width
    w = (width + 7) // 8
    ck = checker_vector(cfg, list(props), stop_at_first, max_states)
    kc = config_vector(cfg.kconfig)
    system = initial_system(cfg, owner)
    init = canonical(encode(system, cfg, False), cfg)
    to_key(init)  # the reference's range check, with its message
    n_ops = max_successors(cfg)
    # Progress and the time budget are looked at between chunks: keep a chunk's candidates bounded.
    chunk = max(64, min(chunk, (1 << 22) // n_ops))
    scratch = _scratch(cfg, n_ops)
    search = _Search(w, max(1 << 12, 2 * n_ops + 2), max_bytes, sum(a.nbytes for a in scratch))
    search.store[0] = _pack(init, w)
    st = np.zeros(ST_LEN, dtype=np.int64)
    st[ST_STORED] = 1
    st[ST_STATES] = 1
    st[ST_IMPREC_IDX] = -1
    found: dict[str, _Found] = {}
    hit = first_violation(view_of(decode(init, cfg, owner), False), props)
    if hit is not None:
        found[hit[0]] = _Found(hit[0], hit[1], to_key(init), to_key(init))
        search.bad[0] = 1
        st[ST_FOUND] |= 1 << PROP_ORDER.index(hit[0])
    with compile_notice((rehash, expand), notify, "the fast checker engine", "1 min"):
        rehash(search.store, 1, search.table, w, np.zeros(w, dtype=np.int64))
        # Compile (or load from numba's cache) before the clock starts: an empty range does nothing.
        expand(ck, kc, search.store, search.parent, search.bad, search.table, st, 0, 0, *scratch)
    start = time.perf_counter()
    lo, hi = 0, 1
    result.level_sizes.append(1)
    stop = bool(found) and stop_at_first
    frontier_empty = bool(found)
    for depth in range(cfg.depth):
        if frontier_empty or stop:
            break
        st[ST_NEXT] = 0
        if depth > 0:
            # Size the store and table for this level at once: growing them step by step
            # re-inserts every state each time the table doubles.
            stored = int(st[ST_STORED])
            ratio = result.level_sizes[-1] / max(result.level_sizes[-2], 1)
            need = stored + int(1.1 * ratio * (hi - lo)) + 2 * n_ops + 1
            if max_states is not None:
                need = min(need, max_states + 256 * n_ops + 1)
            minimum = stored + 2 * n_ops + 1
            if progress is not None and need > search.store.shape[0]:
                # Allocating and rehashing millions of states takes seconds: say so first.
                progress({"depth": depth + 1, "states": int(st[ST_STATES]), "transitions": int(st[ST_TRANS]),
                          "elapsed": time.perf_counter() - start, "sizing": need})
            try:
                search.grow(stored, max(need, minimum), minimum)
            except MemoryLimitReached:
                result.budget_hit = memory_budget_message(max_bytes or 0, depth + 1)
                break
        pos = lo
        while pos < hi:
            end = min(hi, pos + chunk)
            pos, run = expand(ck, kc, search.store, search.parent, search.bad, search.table, st, pos, end,
                              *scratch)
            if run == RUN_GROW:
                stored = int(st[ST_STORED])
                try:
                    search.grow(stored, stored + 2 * n_ops + 1)
                except MemoryLimitReached:
                    result.budget_hit = memory_budget_message(max_bytes or 0, depth + 1)
                    stop = True
                    break
                continue
            if run == RUN_FIELD:
                f, v = int(st[ST_ERR_FIELD]), int(st[ST_ERR_VALUE])
                raise ValueError(f"state field {f} = {v} does not fit the checker's byte encoding "
                                 f"({-KEY_BIAS}..{255 - KEY_BIAS}); lower --depth")
            if run == RUN_STOP:
                stop = True
                break
            if run == RUN_BUDGET:
                result.budget_hit = f"state budget of {max_states} reached at depth {depth + 1}"
                stop = True
                break
            elapsed = time.perf_counter() - start
            if progress is not None and pos < hi:
                progress({"depth": depth + 1, "states": int(st[ST_STATES]), "transitions": int(st[ST_TRANS]),
                          "elapsed": elapsed})
            if max_seconds is not None and elapsed > max_seconds and pos < hi:
                result.budget_hit = f"time budget of {max_seconds:g}s reached at depth {depth + 1}"
                stop = True
                break
        result.level_sizes.append(int(st[ST_NEXT]))
        frontier_empty = bool(st[ST_NEXT] == 0)
        lo, hi = hi, int(st[ST_STORED])
        if progress is not None:
            progress({"depth": depth + 1, "states": int(st[ST_STATES]), "transitions": int(st[ST_TRANS]),
                      "elapsed": time.perf_counter() - start, "level_done": result.budget_hit is None})
        if stop:
            break
    result.transitions = int(st[ST_TRANS])
    result.imprecise_states = int(st[ST_IMPREC])
    result.depth_reached = max(d for d, n in enumerate(result.level_sizes) if n)
    any_found = bool(found) or bool(st[ST_FOUND])
    result.exhausted = frontier_empty and result.budget_hit is None and not (stop and any_found)
    result.states = int(st[ST_STATES])
    result.elapsed = time.perf_counter() - start
    for bit, name in enumerate(PROP_ORDER):
        if name in found or not st[ST_FOUND] & (1 << bit) or name not in props:
            continue
        pidx, cidx = int(st[ST_FP + 2 * bit]), int(st[ST_FP + 2 * bit + 1])
        found[name] = _message(cfg, owner, name, search.state(pidx, width),
                               None if cidx < 0 else search.state(cidx, width))
    for name in props:
        if name in found:
            rec = found[name]
            at = int(st[ST_FP + 2 * PROP_ORDER.index(name)]) if rec.parent != rec.child else 0
            result.violations[name] = _rebuild(cfg, owner, search.chain_parents(at, width), rec)
    if st[ST_IMPREC_IDX] >= 0:
        iidx = int(st[ST_IMPREC_IDX])
        parents = search.chain_parents(iidx, width)
        ops = _path_ops(cfg, owner, parents, to_key(search.state(iidx, width)))
        result.imprecise_example = Counterexample(
            "imprecision", "exclusive in truth but folio_maybe_mapped_shared() says maybe shared",
            ops, cfg.mms + 1)
    return result


def _message(cfg: CheckConfig, owner: OwnerTracking, name: str,
             parent: State, child: State | None) -> _Found:
    """The reference's record of a violation the compiled search found (message included).

    As in the reference search: the state is decoded from the canonical parent and
    the first candidate operation (in candidate order) reaching ``child`` (or, for
    a sanity rejection, the first rejected by the sanity check) is applied.
    """
    pkey = to_key(parent)
    crowded = bool(parent[HEADER + cfg.nr_pages])
    prop = select([name])[name]
    for op in candidate_ops(decode(parent, cfg, owner), cfg, parent):
        system = decode(parent, cfg, owner)
        exc = try_apply(system, op)
        if child is None:
            if exc is not None and exc.check in SANITY_CHECKS:
                return _Found(name, f"{op.op} rejected by the kernel's sanity check: {exc.reason}", pkey, None)
            continue
        if exc is not None:
            continue
        c = crowded_after(system, crowded)
        if canonical(encode(system, cfg, c), cfg) == child:
            msg = prop(view_of(system, c))
            if msg is None:
                break
            return _Found(name, msg, pkey, to_key(child))
    raise RuntimeError(f"fast checker and reference disagree on the {name} violation found after state {parent}")
