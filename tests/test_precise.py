"""precise-rmapid: the 2023 RFC's rmap-id sums answer exactly (and where the posted scheme does not)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foliosim.errors import Rejected
from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD, PTE
from foliosim.schemes import make_design
from foliosim.schemes.base import Design
from foliosim.schemes.exact import ExactDesign
from foliosim.schemes.precise import SCHEMES, PreciseRmapIdDesign, SubIdScheme, metadata_bytes_for, scheme_for
from foliosim.system import Op
from tests.evalhelpers import random_trace, trace_text

ORDERS = (0, 1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13)


def check_against_exact(designs: list[Design], exact: ExactDesign, ops: list[Op], label: str) -> None:
    for i, op in enumerate(ops):
        exact.apply(op)
        for d in designs:
            d.apply(op)
        if op.folio is None or op.op == "folio_free":
            continue
        folio = op.folio
        crowded = exact.mapcount(folio) > 1 << exact.orders[folio]
        for d in designs:
            if crowded:
                # More mappings than pages (one MM mapping a page twice, as pagecache can): the RFC's reader
                # answers "shared" without looking, like folio_mapcount() > 1 for a small folio.
                ok = d.maybe_shared(folio) and d.exclusive_owner(folio) is None
            else:
                ok = (d.maybe_shared(folio) == exact.maybe_shared(folio)
                      and d.exclusive_owner(folio) == exact.exclusive_owner(folio))
            if not ok:
                pytest.fail(f"{d.name} disagrees with exact on {folio} ({sorted(exact.mms(folio).items())}); "
                            f"{label}, after op {i}:\n" + trace_text(ops[:i + 1]))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), no_page_mapcount=st.booleans())
def test_precise_never_disagrees_with_exact_on_random_traces(seed: int, no_page_mapcount: bool) -> None:
    config = KernelConfig(64, no_page_mapcount)
    ops = random_trace(seed, 300, config, n_mms=6, orders=ORDERS)
    designs = [make_design("precise-rmapid", config), make_design("precise-rmapid:fixed", config)]
    check_against_exact(designs, ExactDesign(config), ops, f"seed {seed}, {config.describe()}")


def crowded_trace(seed: int, order: int, n_ops: int) -> list[Op]:
    """Many live MMs (rmap ids up to 300, so chunks with the high bits set) mapping one folio heavily."""
    rng = random.Random(seed)
    ops = [Op("mm_new", f"M{i}") for i in range(1, 301)]
    ops.append(Op("folio_new", folio="F", order=order))
    nr_pages = 1 << order
    held: dict[str, int] = {}
    for _ in range(n_ops):
        if held and rng.random() < 0.4:
            mm = rng.choice(sorted(held))
            nr = rng.randint(1, min(held[mm], nr_pages))
            held[mm] -= nr
            if not held[mm]:
                del held[mm]
            ops.append(Op("unmap", mm, "F", None, PTE, 0, nr))
        else:
            mm = f"M{rng.choice([rng.randint(1, 300), rng.randint(120, 300), 255, 254, 128])}"
            nr = rng.randint(1, nr_pages)
            held[mm] = held.get(mm, 0) + nr
            ops.append(Op("map", mm, "F", None, PTE, 0, nr))
    return ops


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), order=st.sampled_from([2, 5, 6, 9, 10]))
def test_fixed_scheme_is_exact_with_many_mms_and_high_ids(seed: int, order: int) -> None:
    config = KernelConfig()
    ops = crowded_trace(seed, order, 60)
    check_against_exact([make_design("precise-rmapid:fixed", config)], ExactDesign(config), ops,
                        f"seed {seed}, order {order}")


def counterexample_ops() -> list[Op]:
    """Seven MMs map 306 PTEs of an order-9 folio; the sums wrap to 306 * sub-ID(42) (found by search)."""
    ops = [Op("mm_new", f"M{i}") for i in range(1, 256)]
    ops.append(Op("folio_new", folio="F", order=9))
    for mm_id, nr in ((251, 8), (187, 2), (171, 207), (43, 76), (42, 1), (10, 8), (2, 4)):
        ops.append(Op("map", f"M{mm_id}", "F", None, PTE, 0, nr))
    return ops


def test_posted_order_6_to_9_scheme_wraps_and_says_exclusive_for_a_shared_folio() -> None:
    config = KernelConfig()
    posted, fixed, exact = (make_design(s, config) for s in ("precise-rmapid", "precise-rmapid:fixed", "exact"))
    for op in counterexample_ops():
        for d in (posted, fixed, exact):
            d.apply(op)
    assert isinstance(posted, PreciseRmapIdDesign) and isinstance(fixed, PreciseRmapIdDesign)
    assert len(exact.mms("F")) == 7 and exact.maybe_shared("F")  # type: ignore[attr-defined]
    assert posted.mapcount("F") == 306 <= 512  # not "obviously shared": the values decide
    assert posted.matches("F", "M42") and not posted.maybe_shared("F") and posted.exclusive_owner("F") == "M42"
    assert fixed.maybe_shared("F") and fixed.exclusive_owner("F") is None
    assert not posted.sound and fixed.sound
    assert scheme_for(9).wraps and not scheme_for(9, fixed.schemes).wraps


def test_subids_are_the_rfcs() -> None:
    """calc_rmap_subid(): bit i of the chunk is (P + 1)^i; the order-10 table starts 0, 1, 1025, 1026, 1050625."""
    order10 = scheme_for(10)
    assert [order10.subid(i) for i in range(5)] == [0, 1, 1025, 1026, 1050625]
    assert order10.subid(63) == 1132513103723526  # the last entry of the RFC's rmap_subids_4[]
    assert scheme_for(12).subid(31) == 281818741907461  # rmap_subids_5[31]
    assert scheme_for(15).subid(15) == 35188667252740  # rmap_subids_6[15]
    assert [s.values for s in SCHEMES] == [1, 2, 3, 4, 5, 6]
    assert [s.bits * s.values >= 24 for s in SCHEMES] == [True] * 6  # 16M ids
    assert [s.wraps for s in SCHEMES] == [False, False, True, False, False, False]
    # k * sub-ID never equals a sum of k other sub-IDs when nothing wraps: digits of base P + 1 stay < P + 1.
    tiny = SubIdScheme(2, 1, 3)
    sums: dict[int, set[tuple[int, ...]]] = {}
    for a in range(8):
        for b in range(8):
            for c in range(8):
                for d in range(8):
                    key = tuple(sorted((a, b, c, d)))
                    sums.setdefault(sum(tiny.subid(x) for x in key), set()).add(key)
    for x in range(8):
        assert sums[4 * tiny.subid(x)] == {(x, x, x, x)}


@pytest.mark.parametrize(("order", "values"), [(1, 1), (2, 1), (3, 2), (5, 2), (6, 3), (9, 3), (10, 4), (11, 5),
                                               (12, 5), (13, 6), (15, 6)])
def test_metadata_and_atomics_by_order(order: int, values: int) -> None:
    """8 bytes per rmap value plus the 8-byte atomic seqcount; per update 2 + 1 + values atomics on top."""
    for no_page_mapcount in (False, True):
        config = KernelConfig(64, no_page_mapcount)
        design = make_design("precise-rmapid", config)
        kernel = make_design("kernel", config)
        ops = [Op("mm_new", "P"), Op("mm_new", "C"), Op("folio_new", folio="F", order=order),
               Op("map", "P", "F", None, PTE, 0, 1), Op("dup", "C", "F", None, PTE, 0, 1),
               Op("unmap", "P", "F", None, PTE, 0, 1)]
        for op in ops[:3]:
            design.apply(op)
            kernel.apply(op)
        for op in ops[3:]:
            mine, theirs = design.apply(op), kernel.apply(op)
            assert mine.atomics == theirs.atomics - 1 + 3 + values  # the bit spinlock replaced
            assert mine.locks == 0
        assert design.metadata_bytes("F") == metadata_bytes_for(order) == 8 * values + 8


def test_pmd_mappings_count_once_and_obviously_shared_short_cut() -> None:
    config = KernelConfig()
    design = make_design("precise-rmapid", config)
    for op in (Op("mm_new", "P"), Op("mm_new", "C"), Op("folio_new", folio="T", order=9),
               Op("map_new_anon", "P", "T", None, PMD)):
        design.apply(op)
    assert design.exclusive_owner("T") == "P"
    design.apply(Op("dup", "C", "T", None, PMD))
    assert design.maybe_shared("T") and design.exclusive_owner("T") is None
    design.apply(Op("unmap", "P", "T", None, PMD))
    assert not design.maybe_shared("T") and design.exclusive_owner("T") == "C"
    small = make_design("precise-rmapid", config)
    for op in (Op("mm_new", "P"), Op("folio_new", folio="S", order=1), Op("map", "P", "S", None, PTE, 0, 2),
               Op("map", "P", "S", None, PTE, 0, 2)):
        small.apply(op)
    assert small.mapcount("S") == 4 and small.maybe_shared("S")  # 4 > 2 pages: shared without looking


def test_refusals() -> None:
    with pytest.raises(ValueError, match="64BIT"):
        make_design("precise-rmapid", KernelConfig(32))
    with pytest.raises(ValueError, match="precise-rmapid:fixed"):
        make_design("precise-rmapid:exact", KernelConfig())
    design = make_design("precise-rmapid", KernelConfig())
    with pytest.raises(Rejected, match="order-16"):
        design.apply(Op("folio_new", folio="H", order=16))
    design.apply(Op("folio_new", folio="F", order=4))
    with pytest.raises(Rejected, match="unknown mm"):
        design.apply(Op("map", "Z", "F", None, PTE, 0, 1))


def test_rmap_ids_are_lowest_free_and_reused() -> None:
    design = make_design("precise-rmapid", KernelConfig())
    assert isinstance(design, PreciseRmapIdDesign)
    for name in ("A", "B", "C"):
        design.apply(Op("mm_new", name))
    design.apply(Op("mm_free", "B"))
    design.apply(Op("mm_new", "D"))
    assert [design.rmap_id(m) for m in ("A", "C", "D")] == [1, 3, 2]
