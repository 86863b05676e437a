"""The trace generator of :mod:`foliosim.trace.generate` as one compiled loop over arrays.

:func:`generate_columns` writes exactly the operations that
:func:`foliosim.trace.generate.generate_reference` yields for the same spec
and mix, straight into preallocated numpy columns. It reproduces Python's
``random.Random`` stream bit for bit: the Mersenne Twister state is taken from
``random.Random(seed).getstate()`` and advanced here (MT19937, as CPython's
``Modules/_randommodule.c``), and every draw the reference makes
(``random()``, ``_randbelow()`` through ``getrandbits()``, ``choice``,
``choices``, ``randint``, ``randrange``, ``shuffle``) is re-implemented with
CPython's algorithm (``Lib/random.py``) in the same order.

The list of owed operations (drawn while impossible, emitted later) is kept as
a Fenwick tree over append positions plus one FIFO of positions per
(kind, level), so that picking the i-th owed entry and removing the first
entry equal to a given one cost O(log n) instead of the list's O(n).

Without numba the same functions run as plain Python (correct but slow);
:func:`foliosim.trace.generate.generate_columns` then uses the reference
generator instead.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import accumulate
from math import isfinite

import numpy as np
import numpy.typing as npt

from foliosim.fast._jit import HAVE_NUMBA, NUMBA_MISSING, jit, jit_inline

I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
I32 = npt.NDArray[np.int32]
U32 = npt.NDArray[np.uint32]
U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]

MT_N, MT_M = 624, 397

# Generator codes (as foliosim.trace.generate).
_MAP, _DUP, _UNMAP = 0, 1, 2
_PMD = 1

# ``meta`` entries: loop state kept between calls.
(G_EMITTED, G_OWED_USED, G_OWED_ALIVE) = range(3)
G_HEAD = 3  # heads of the six per-(kind, level) FIFOs, then their tails
G_TAIL = G_HEAD + 6
G_DRAWS = G_TAIL + 6  # statistics: draws made, full shuffles done
G_SHUFFLES = G_DRAWS + 1
G_RPOS = G_SHUFFLES + 1  # position in the tempered output buffer (624: refill before the next draw)
G_LEN = G_RPOS + 1

# generate_loop stop reasons.
STOP_DONE, STOP_OWED_FULL = 0, 1

#: Largest ``_randbelow`` argument reproduced (one 32-bit word per ``getrandbits``).
MAX_BELOW = 1 << 32


@jit
def _refill(mt: U32, buf: I64) -> None:
    """Regenerate the 624 state words (CPython ``genrand_uint32``'s refill) and temper them all into ``buf``.

    In uint32 arithmetic throughout (``0 - (y & 1)`` is the all-ones mask for
    an odd ``y``), which the compiler vectorizes.
    """
    upper, lower, matrix = np.uint32(0x80000000), np.uint32(0x7FFFFFFF), np.uint32(0x9908B0DF)
    one, zero = np.uint32(1), np.uint32(0)
    for kk in range(MT_N - MT_M):
        y = (mt[kk] & upper) | (mt[kk + 1] & lower)
        mt[kk] = mt[kk + MT_M] ^ (y >> one) ^ ((zero - (y & one)) & matrix)
    for kk in range(MT_N - MT_M, MT_N - 1):
        y = (mt[kk] & upper) | (mt[kk + 1] & lower)
        mt[kk] = mt[kk + (MT_M - MT_N)] ^ (y >> one) ^ ((zero - (y & one)) & matrix)
    y = (mt[MT_N - 1] & upper) | (mt[0] & lower)
    mt[MT_N - 1] = mt[MT_M - 1] ^ (y >> one) ^ ((zero - (y & one)) & matrix)
    _temper(mt, buf)


@jit
def _temper(mt: U32, buf: I64) -> None:
    for i in range(MT_N):
        y = mt[i]
        y ^= y >> np.uint32(11)
        y ^= (y << np.uint32(7)) & np.uint32(0x9D2C5680)
        y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
        y ^= y >> np.uint32(18)
        buf[i] = y


@jit_inline
def _next32(mt: U32, buf: I64, pos: int) -> tuple[int, int]:
    """The next 32-bit output and the new position in ``buf`` (624: refill first)."""
    if pos >= MT_N:
        _refill(mt, buf)
        pos = 0
    return buf[pos], pos + 1


@jit_inline
def _random(mt: U32, buf: I64, pos: int) -> tuple[float, int]:
    """``random.random()`` (53 bits from two words)."""
    a, pos = _next32(mt, buf, pos)
    b, pos = _next32(mt, buf, pos)
    return ((a >> 5) * 67108864.0 + (b >> 6)) * (1.0 / 9007199254740992.0), pos


@jit_inline
def _bit_length(n: int) -> int:
    k = 0
    if n >> 16:
        n >>= 16
        k += 16
    if n >> 8:
        n >>= 8
        k += 8
    if n >> 4:
        n >>= 4
        k += 4
    if n >> 2:
        n >>= 2
        k += 2
    if n >> 1:
        n >>= 1
        k += 1
    return k + n


@jit_inline
def _randbelow(mt: U32, buf: I64, pos: int, n: int) -> tuple[int, int]:
    """``Random._randbelow_with_getrandbits(n)`` for ``0 < n < 2**32``: (value, new position)."""
    shift = 32 - _bit_length(n)
    while True:
        if pos >= MT_N:
            _refill(mt, buf)
            pos = 0
        r = buf[pos] >> shift
        pos += 1
        if r < n:
            return r, pos


@jit
def _shuffle_draws(mt: U32, buf: I64, pos: int, n: int, draws: I64) -> int:
    """The draws of ``shuffle()`` on ``n`` items into ``draws[i]`` (i = n - 1 .. 1); the new position.

    ``_randbelow(i + 1)`` for i = n - 1 .. 1 without a branch per word: while
    ``i + 1`` keeps its bit length the shift is fixed, and a word is accepted
    when ``word >> shift <= i`` (a rejected value in ``draws[i]`` is overwritten
    by the next word's).
    """
    i = n - 1
    while i > 0:
        k = _bit_length(i + 1)
        shift = 32 - k
        low = max((1 << (k - 1)) - 1, 1)  # i + 1 keeps k bits while i >= low
        while i >= low:
            if pos >= MT_N:
                _refill(mt, buf)
                pos = 0
            while pos < MT_N and i >= low:
                r = buf[pos] >> shift
                pos += 1
                draws[i] = r
                i -= int(r <= i)
    return pos


@jit_inline
def _fen_add(fen: I32, idx: int, delta: int) -> None:
    i = idx + 1
    size = fen.shape[0] - 1
    while i <= size:
        fen[i] += delta
        i += i & (-i)


@jit_inline
def _byte_count(x: int) -> int:
    x = x - ((x >> 1) & 0x55)
    x = (x & 0x33) + ((x >> 2) & 0x33)
    return (x + (x >> 4)) & 0x0F


@jit_inline
def _owed_select(fen: I32, mask: I64, rank: int) -> int:
    """The position of the ``rank``-th (0-based) live owed entry.

    ``mask[b]`` has bit ``i`` set when position ``32 * b + i`` is live;
    ``fen`` is a Fenwick tree over the blocks' live counts (its size a power
    of two), small enough to stay in cache.
    """
    size = fen.shape[0] - 1
    block = 0
    rem = rank + 1
    step = size
    while step > 0:
        nxt = block + step
        if nxt <= size:
            v = fen[nxt]
            if v < rem:
                block = nxt
                rem -= v
        step >>= 1
    word = mask[block]
    bit = 0
    c = _byte_count(word & 0xFF)
    while c < rem:  # whole bytes first
        rem -= c
        bit += 8
        c = _byte_count((word >> bit) & 0xFF)
    while True:
        if (word >> bit) & 1:
            rem -= 1
            if rem == 0:
                break
        bit += 1
    return block * 32 + bit


@jit_inline
def _owed_flip(fen: I32, mask: I64, pos: int, delta: int) -> None:
    """Mark position ``pos`` live (``delta`` 1) or dead (-1)."""
    block = pos >> 5
    mask[block] ^= 1 << (pos & 31)
    _fen_add(fen, block, delta)


@jit_inline
def _ok(kind: int, pte: I64, agg: I64, f: int, m: int, p: int) -> bool:
    if kind == _DUP:
        return bool(agg[f, p] > 0)
    return bool(pte[f, m, p] > 0)


@jit_inline
def _feasible(kind: int, level: int, f: int, m: int, order: int, cap: int, pmd_cap: int, pmd: I64, total: I64,
              total_pmd: I64, row_total: I64) -> bool:
    """Whether ``generate_reference``'s ``_try`` succeeds for this target (it draws nothing when it fails).

    The counts never go negative, so a folio has a page mapped iff its total is
    positive, and an MM maps a page of it iff its row total is.
    """
    if level == _PMD:
        if order == 0:
            return False
        if kind == _UNMAP:
            return bool(pmd[f, m] != 0)
        return not (total_pmd[f] >= pmd_cap or (kind == _DUP and total_pmd[f] == 0))
    if kind == _UNMAP:
        return bool(row_total[f, m] > 0)
    if total[f] >= cap:
        return False
    return kind == _MAP or bool(total[f] > 0)


@jit_inline
def _census(census: I64, sign: int, f: int, m: int, cap: int, pmd_cap: int, pmd: I64, total: I64, total_pmd: I64,
            row_total: I64) -> None:
    """Add (``sign`` 1) or take away (-1) folio ``f``'s and target (f, m)'s share of ``census``.

    ``census[kind * 2 + level]`` counts the folios (map, dup) or targets (unmap)
    for which that operation is feasible (see :func:`_feasible`), so that "is it
    feasible anywhere?" costs O(1) instead of a pass over every target.
    """
    t = total[f]
    tp = total_pmd[f]
    census[_MAP * 2] += sign * int(t < cap)
    census[_DUP * 2] += sign * int(0 < t < cap)
    census[_UNMAP * 2] += sign * int(row_total[f, m] > 0)
    census[_MAP * 2 + 1] += sign * int(tp < pmd_cap)
    census[_DUP * 2 + 1] += sign * int(0 < tp < pmd_cap)
    census[_UNMAP * 2 + 1] += sign * int(pmd[f, m] > 0)


@jit_inline
def _take(mt: U32, buf: I64, pos: int, kind: int, level: int, f: int, m: int, nr_pages: int,
          map_range: int, unmap_range: int, pte: I64, pmd: I64, agg: I64, total: I64, total_pmd: I64,
          row_total: I64, cand: I64) -> tuple[int, int, int]:
    """``_try`` for a target :func:`_feasible` accepted: (page, nr, new random position), the state updated."""
    if level == _PMD:
        if kind == _UNMAP:
            pmd[f, m] -= 1
            total_pmd[f] -= 1
        else:
            pmd[f, m] += 1
            total_pmd[f] += 1
        return 0, nr_pages, pos
    if kind == _MAP:
        nr, pos = _randbelow(mt, buf, pos, map_range)
        nr += 1
        page, pos = _randbelow(mt, buf, pos, nr_pages - nr + 1)
    else:
        # _random_run over the pages that are mapped at all (dup) or by this MM (unmap).
        max_len = map_range if kind == _DUP else unmap_range
        n_cand = 0
        for p in range(nr_pages):
            if _ok(kind, pte, agg, f, m, p):
                cand[n_cand] = p
                n_cand += 1
        pick, pos = _randbelow(mt, buf, pos, n_cand)
        start = cand[pick]
        end = start
        want, pos = _randbelow(mt, buf, pos, max_len)
        want += 1
        while end - start + 1 < want:
            grow_left = start > 0 and _ok(kind, pte, agg, f, m, start - 1)
            grow_right = end + 1 < nr_pages and _ok(kind, pte, agg, f, m, end + 1)
            if not (grow_left or grow_right):
                break
            coin = 0.0
            if grow_right and grow_left:
                coin, pos = _random(mt, buf, pos)
            if grow_right and (not grow_left or coin < 0.5):
                end += 1
            else:
                start -= 1
        page = start
        nr = end - start + 1
    step = -1 if kind == _UNMAP else 1
    for p in range(page, page + nr):
        pte[f, m, p] += step
        agg[f, p] += step
    total[f] += step * nr
    row_total[f, m] += step * nr
    return page, nr, pos


@jit
def generate_loop(mt: U32, buf: I64, meta: I64, n_ops: int, stop_at: int, order: int, n_mms: int, n_targets: int,
                  cap: int, pmd_cap: int, map_range: int, unmap_range: int,
                  mix_kind: I64, mix_level: I64, cum_weights: F64,
                  pte: I64, pmd: I64, agg: I64, total: I64, total_pmd: I64, row_total: I64, census: I64,
                  o_code: I8, o_next: I64, o_mask: I64, o_fen: I32, cand: I64, shuffled: I64, draws: I64, target_f: I64,
                  target_m: I64, kind_codes: I64,
                  out_kind: U8, out_folio: I32, out_mm: I32, out_level: U8, out_page: I32, out_nr: I32,
                  base: int) -> int:
    """Run the generator until ``stop_at`` operations are emitted (``STOP_DONE``) or the owed list is full.

    Operation ``i`` goes to row ``base + i`` of the ``out_*`` columns, with its
    kind translated through ``kind_codes``. All state lives in the arguments,
    so the caller can resume after ``STOP_OWED_FULL`` (having grown the owed
    arrays with ``_rebuild``) or after ``stop_at``.
    """
    nr_pages = 1 << order
    n_mix = mix_kind.shape[0]
    weight_total = cum_weights[n_mix - 1] + 0.0
    o_cap = o_code.shape[0]
    emitted = meta[G_EMITTED]
    rpos = meta[G_RPOS]
    while emitted < stop_at and emitted < n_ops:
        if meta[G_OWED_USED] >= o_cap:
            meta[G_RPOS] = rpos
            return STOP_OWED_FULL  # before any draw: the caller makes room and calls again
        alive = meta[G_OWED_ALIVE]
        meta[G_DRAWS] += 1
        from_debt = False
        if alive > 0:
            coin, rpos = _random(mt, buf, rpos)
            from_debt = coin < 0.5
        if from_debt:
            rank, rpos = _randbelow(mt, buf, rpos, alive)
            pos = _owed_select(o_fen, o_mask, rank)
            code = o_code[pos]
            kind = code >> 1
            level = code & 1
        else:
            x, rpos = _random(mt, buf, rpos)
            x *= weight_total
            lo = 0
            hi = n_mix - 1
            while lo < hi:  # bisect_right(cum_weights, x, 0, n - 1)
                mid = (lo + hi) // 2
                if x < cum_weights[mid]:
                    hi = mid
                else:
                    lo = mid + 1
            kind = mix_kind[lo]
            level = mix_level[lo]
            code = kind * 2 + level
        t0, rpos = _randbelow(mt, buf, rpos, n_targets)
        t1, rpos = _randbelow(mt, buf, rpos, n_targets)
        t2, rpos = _randbelow(mt, buf, rpos, n_targets)
        t3, rpos = _randbelow(mt, buf, rpos, n_targets)
        found = False
        page = 0
        nr = 0
        f = 0
        m = 0
        for j in range(4):
            t = t0 if j == 0 else (t1 if j == 1 else (t2 if j == 2 else t3))
            f = target_f[t]
            m = target_m[t]
            if _feasible(kind, level, f, m, order, cap, pmd_cap, pmd, total, total_pmd, row_total):
                found = True
                break
        if not found and not from_debt:
            meta[G_SHUFFLES] += 1
            if census[code] > 0 and (level != _PMD or order != 0):
                # Feasible somewhere: shuffle, then the first feasible target in the shuffled order.
                rpos = _shuffle_draws(mt, buf, rpos, n_targets, draws)
                for i in range(n_targets):
                    shuffled[i] = i
                for i in range(n_targets - 1, 0, -1):
                    j = draws[i]
                    tmp = shuffled[i]
                    shuffled[i] = shuffled[j]
                    shuffled[j] = tmp
                for i in range(n_targets):
                    t = shuffled[i]
                    f = target_f[t]
                    m = target_m[t]
                    if _feasible(kind, level, f, m, order, cap, pmd_cap, pmd, total, total_pmd, row_total):
                        found = True
                        break
            else:  # every try fails without drawing: only the shuffle's draws remain
                rpos = _shuffle_draws(mt, buf, rpos, n_targets, draws)
        if found:
            _census(census, -1, f, m, cap, pmd_cap, pmd, total, total_pmd, row_total)
            page, nr, rpos = _take(mt, buf, rpos, kind, level, f, m, nr_pages, map_range, unmap_range,
                                   pte, pmd, agg, total, total_pmd, row_total, cand)
            _census(census, 1, f, m, cap, pmd_cap, pmd, total, total_pmd, row_total)
        if not found:
            if not from_debt:  # owe it: append to the code's FIFO
                pos = meta[G_OWED_USED]
                meta[G_OWED_USED] = pos + 1
                o_code[pos] = code
                o_next[pos] = -1
                tail = meta[G_TAIL + code]
                if tail >= 0:
                    o_next[tail] = pos
                else:
                    meta[G_HEAD + code] = pos
                meta[G_TAIL + code] = pos
                _owed_flip(o_fen, o_mask, pos, 1)
                meta[G_OWED_ALIVE] = alive + 1
            continue
        if from_debt:  # list.remove: the first owed entry equal to this one
            pos = meta[G_HEAD + code]
            nxt = o_next[pos]
            meta[G_HEAD + code] = nxt
            if nxt < 0:
                meta[G_TAIL + code] = -1
            _owed_flip(o_fen, o_mask, pos, -1)
            meta[G_OWED_ALIVE] = alive - 1
        row = base + emitted
        out_kind[row] = kind_codes[kind]
        out_folio[row] = f
        out_mm[row] = m
        out_level[row] = level
        out_page[row] = page
        out_nr[row] = nr
        emitted += 1
        meta[G_EMITTED] = emitted
    meta[G_RPOS] = rpos
    return STOP_DONE


def _owed_arrays(cap: int) -> tuple[I8, I64, I64, I32]:
    """Empty owed arrays for at least ``cap`` positions: codes, FIFO links, live masks, block Fenwick tree."""
    size = 32
    while size < cap:
        size <<= 1
    return (np.zeros(size, dtype=np.int8), np.full(size, -1, dtype=np.int64), np.zeros(size // 32, dtype=np.int64),
            np.zeros(size // 32 + 1, dtype=np.int32))


def _rebuild(meta: I64, o_code: I8) -> tuple[I8, I64, I64, I32]:
    """Compact the owed entries (keeping their order) into new arrays, at most half full."""
    used = int(meta[G_OWED_USED])
    at = np.arange(used, dtype=np.int64)
    held = o_code[:used]
    live = np.zeros(used, dtype=bool)
    for code in range(6):  # each FIFO only loses its head: its live entries are those from the head on
        head = int(meta[G_HEAD + code])
        if head >= 0:
            live |= (held == code) & (at >= head)
    codes = held[live]
    n = int(codes.shape[0])
    new_code, new_next, new_mask, new_fen = _owed_arrays(2 * n)
    new_code[:n] = codes
    for code in range(6):
        at = np.flatnonzero(codes == code)
        if at.shape[0]:
            new_next[at[:-1]] = at[1:]
            meta[G_HEAD + code] = at[0]
            meta[G_TAIL + code] = at[-1]
        else:
            meta[G_HEAD + code] = -1
            meta[G_TAIL + code] = -1
    # Positions 0..n-1 live: full blocks, then a partial one.
    full, rest = divmod(n, 32)
    new_mask[:full] = (1 << 32) - 1
    if rest:
        new_mask[full] = (1 << rest) - 1
    counts = np.zeros(new_mask.shape[0], dtype=np.int64)
    counts[:full] = 32
    if rest:
        counts[full] = rest
    # Fenwick node i covers blocks (i - lowbit(i), i]: a difference of prefix sums.
    prefix = np.concatenate([[0], np.cumsum(counts)])
    idx = np.arange(1, new_fen.shape[0], dtype=np.int64)
    new_fen[1:] = prefix[idx] - prefix[idx - (idx & -idx)]
    meta[G_OWED_USED] = n
    meta[G_OWED_ALIVE] = n
    return new_code, new_next, new_mask, new_fen


def supported(n_folios: int, n_mms: int, order: int, mix: tuple[tuple[tuple[int, int], float], ...]) -> bool:
    """Whether :func:`generate_columns` reproduces the reference for this shape (else use the reference)."""
    return (n_folios * n_mms < MAX_BELOW and (1 << order) < MAX_BELOW and len(mix) > 0
            and all(k in (_MAP, _DUP, _UNMAP) and lv in (0, 1) for (k, lv), _w in mix))


def generate_columns(seed: int, n_ops: int, n_folios: int, order: int, n_mms: int, map_range: int,
                     unmap_range: int, cap_per_page: int, mix: tuple[tuple[tuple[int, int], float], ...],
                     kind_codes: tuple[int, int, int], out_kind: U8, out_folio: I32, out_mm: I32, out_level: U8,
                     out_page: I32, out_nr: I32, base: int = 0, chunk: int = 1 << 20,
                     progress: Callable[[int], None] | None = None, owed_cap: int = 1 << 12,
                     loop: Callable[..., int] | None = None) -> dict[str, int]:
    """Write the reference generator's ``n_ops`` operations into rows ``base..`` of the ``out_*`` columns.

    ``map_range`` / ``unmap_range`` are the spec's, clipped as the reference
    clips them here; ``kind_codes`` translates map/dup/unmap into the output's
    kind codes. ``progress`` is called with the operations done after every
    ``chunk``; ``owed_cap`` is the owed list's first capacity (it grows as
    needed); ``loop`` replaces :func:`generate_loop` by the same function built
    ahead of time (:mod:`foliosim.replay_aot`). The caller checks
    :func:`supported` first. Returns counts of the work done (draws, full
    shuffles, owed operations left).
    """
    weights = [w for _c, w in mix]
    cum = list(accumulate(weights))  # as random.choices builds them
    total = cum[-1] + 0.0 if cum else 0.0
    if total <= 0.0:
        raise ValueError("Total of weights must be greater than zero")
    if not isfinite(total):
        raise ValueError("Total of weights must be finite")
    nr_pages = 1 << order
    state = random.Random(seed).getstate()[1]
    mt = np.array(state[:MT_N], dtype=np.uint32)
    buf = np.zeros(MT_N, dtype=np.int64)
    _temper(mt, buf)  # the outputs of the current state words, from state[624] on
    meta = np.zeros(G_LEN, dtype=np.int64)
    meta[G_HEAD:G_DRAWS] = -1
    meta[G_RPOS] = state[MT_N]
    o_code, o_next, o_mask, o_fen = _owed_arrays(owed_cap)
    pte = np.zeros((n_folios, n_mms, nr_pages), dtype=np.int64)
    pmd = np.zeros((n_folios, n_mms), dtype=np.int64)
    agg = np.zeros((n_folios, nr_pages), dtype=np.int64)
    tot = np.zeros(n_folios, dtype=np.int64)
    tot_pmd = np.zeros(n_folios, dtype=np.int64)
    row_total = np.zeros((n_folios, n_mms), dtype=np.int64)
    census = np.zeros(6, dtype=np.int64)
    for f in range(n_folios):  # the empty state's census (every target alike)
        _census(census, 1, f, 0, cap_per_page * nr_pages, cap_per_page * n_mms, pmd, tot, tot_pmd, row_total)
    cand = np.zeros(nr_pages, dtype=np.int64)
    shuffled = np.zeros(n_folios * n_mms, dtype=np.int64)
    draws = np.zeros(n_folios * n_mms, dtype=np.int64)
    target_f, target_m = np.divmod(np.arange(n_folios * n_mms, dtype=np.int64), n_mms)  # targets[t] = (f, m)
    mix_kind = np.array([k for (k, _lv), _w in mix], dtype=np.int64)
    mix_level = np.array([lv for (_k, lv), _w in mix], dtype=np.int64)
    cum_weights = np.array(cum, dtype=np.float64)
    codes = np.array(kind_codes, dtype=np.int64)
    map_range = max(1, min(map_range, nr_pages))
    unmap_range = max(1, min(unmap_range, nr_pages))
    run = loop if loop is not None else generate_loop
    done = 0
    while done < n_ops:
        stop_at = min(n_ops, done + chunk)
        reason = run(mt, buf, meta, n_ops, stop_at, order, n_mms, n_folios * n_mms,
                               cap_per_page * nr_pages, cap_per_page * n_mms, map_range, unmap_range,
                               mix_kind, mix_level, cum_weights, pte, pmd, agg, tot, tot_pmd, row_total, census,
                               o_code, o_next, o_mask, o_fen, cand, shuffled, draws, target_f, target_m, codes,
                               out_kind, out_folio, out_mm, out_level, out_page, out_nr, base)
        if reason == STOP_OWED_FULL:
            o_code, o_next, o_mask, o_fen = _rebuild(meta, o_code)
            continue
        done = int(meta[G_EMITTED])
        if progress is not None:
            progress(done)
    return {"draws": int(meta[G_DRAWS]), "full shuffles": int(meta[G_SHUFFLES]),
            "owed at the end": int(meta[G_OWED_ALIVE])}


def warm_up() -> None:
    """Compile the generator (or load it from numba's cache): one operation of a tiny trace."""
    if HAVE_NUMBA:
        cols = (np.zeros(1, np.uint8), np.zeros(1, np.int32), np.zeros(1, np.int32), np.zeros(1, np.uint8),
                np.zeros(1, np.int32), np.zeros(1, np.int32))
        generate_columns(0, 1, 1, 1, 1, 1, 1, 1, (((_MAP, 0), 1.0),), (0, 1, 2), *cols)


__all__ = ["HAVE_NUMBA", "NUMBA_MISSING", "generate_columns", "generate_loop", "supported", "warm_up"]
