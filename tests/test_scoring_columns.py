"""The columnar scoring stream (evaluate.stream.ColumnStream): its objects, checks, digest, plan and scores equal
those of the same stream kept as Op and Question objects, on every design and on streams that break the rules."""

from __future__ import annotations

import pickle
from dataclasses import fields

import numpy as np
import pytest

from foliosim.errors import Rejected
from foliosim.evaluate.stream import (
    CENSUS,
    ColumnStream,
    Question,
    ScoringStream,
    StreamError,
    _plan,
    _plan_columns,
    score_stream,
)
from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD, PTE
from foliosim.system import Op
from tests.test_scoring_replay import DESIGNS, WORKLOADS, _stream


def _objects(stream: ScoringStream) -> ScoringStream:
    """The same stream kept as objects (a plain ScoringStream)."""
    return ScoringStream(stream.config, stream.driver, list(stream.ops), list(stream.op_step), list(stream.op_mms),
                         list(stream.questions), stream.end_step)


def _same_plan(stream: ScoringStream, columns: ColumnStream) -> None:
    want, got = _plan(stream), _plan_columns(columns)
    assert got is not None
    for f in fields(want):
        if f.name != "questions":
            assert getattr(got, f.name) == getattr(want, f.name), f.name
    in_bulk = {qi + k for qi, bulk in want.census.items() for k in range(len(bulk))}
    assert bool(in_bulk) == any(q.consumer == CENSUS for q in stream.questions)  # census questions in bulk
    for qi, q in enumerate(got.questions):
        assert (q is None) == (qi in in_bulk)
        assert q is None or q == want.questions[qi]


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_columns_score_as_objects(workload: str) -> None:
    stream = _stream(workload, WORKLOADS[workload], 2, KernelConfig())
    columns = ColumnStream.of(stream)
    assert columns.columnar and columns.check() is None
    assert columns.digest() == stream.digest()
    _same_plan(stream, columns)
    got = score_stream(columns, DESIGNS)
    assert columns.columnar  # scored from the columns: no objects set
    want, slow = score_stream(stream, DESIGNS), score_stream(stream, DESIGNS, replay=False)
    assert [(s.design, s.rows, s.questions, s.digest) for s in got] == \
        [(s.design, s.rows, s.questions, s.digest) for s in want] == \
        [(s.design, s.rows, s.questions, s.digest) for s in slow]
    assert columns.ops == stream.ops and columns.questions == stream.questions  # made from the columns


@pytest.mark.parametrize(("word_bits", "no_page_mapcount"), [(32, False), (64, True)])
def test_columns_score_as_objects_on_other_configurations(word_bits: int, no_page_mapcount: bool) -> None:
    config = KernelConfig(word_bits=word_bits, no_page_mapcount=no_page_mapcount)
    stream = _stream("fork-child", {"rounds": 2}, 3, config)
    designs = [d for d in DESIGNS if not (word_bits == 32 and d.startswith("precise"))]
    columns = ColumnStream.of(stream)
    _same_plan(stream, columns)
    got, want = score_stream(columns, designs), score_stream(stream, designs)
    assert [(s.rows, s.questions, s.digest) for s in got] == [(s.rows, s.questions, s.digest) for s in want]


def _small(*ops: Op, questions: list[Question] | None = None) -> ScoringStream:
    base = [Op("mm_new", mm="mm1"), Op("folio_new", folio="f1", order=0),
            Op("map_new_anon", mm="mm1", folio="f1", level=PTE)]
    stream = ScoringStream(KernelConfig(), "kernel", base + list(ops))
    stream.op_step = list(range(len(stream.ops)))
    stream.op_mms = [-1, 0, 1] + [1] * len(ops)
    stream.questions = questions or []
    return stream


@pytest.mark.parametrize(("ops", "why"), [
    ((Op("unmap", mm="mm1", folio="f1", level=PTE, nr=2),), "unmap of 2 mappings"),
    ((Op("folio_free", folio="f1"),), "freed while mapped"),
    ((Op("unmap", mm="mm1", folio="f1", level=PTE), Op("folio_free", folio="f1"), Op("folio_new", folio="f1", order=0)),
     None),  # a folio number used again: the object path scores it
    ((Op("unmap", mm="mm1", folio="f1", level=PTE), Op("folio_new", folio="f1", order=0)), "already exists"),
])
def test_a_bad_stream_is_rejected_as_the_object_path_rejects_it(ops: tuple[Op, ...], why: str | None) -> None:
    stream = _small(*ops)
    columns = ColumnStream.of(stream)
    assert _plan_columns(columns) is None  # not what a simulator records: the object path decides
    if why is None:
        want = score_stream(stream, ["exact"])
        assert [s.rows for s in score_stream(columns, ["exact"])] == [s.rows for s in want]
        return
    with pytest.raises(Rejected, match=why):
        score_stream(columns, ["exact"])


def test_a_question_on_a_dead_folio_or_out_of_order_is_refused_as_objects_are() -> None:
    freed = _small(Op("unmap", mm="mm1", folio="f1", level=PTE), Op("folio_free", folio="f1"),
                   questions=[Question(5, "f1", "numa_migrate", False)])
    with pytest.raises(StreamError, match="not a live folio"):
        score_stream(ColumnStream.of(freed), ["exact"])
    late = _small(questions=[Question(3, "f1", "numa_migrate", False), Question(2, "f1", "numa_migrate", False)])
    with pytest.raises(StreamError) as want:
        late.check()
    with pytest.raises(StreamError) as got:
        ColumnStream.of(late).check()
    assert str(got.value) == str(want.value)


def test_columns_of_a_small_and_a_pmd_folio() -> None:
    """Small-folio answers and counts, a PMD map's one mapping, census checks in bulk: by hand."""
    ops = [Op("mm_new", mm="mm1"), Op("mm_new", mm="mm2"), Op("folio_new", folio="f1", order=0),
           Op("map_new_anon", mm="mm1", folio="f1", level=PTE), Op("dup", mm="mm2", folio="f1", level=PTE),
           Op("folio_new", folio="f2", order=9), Op("map_new_anon", mm="mm1", folio="f2", level=PMD),
           Op("dup", mm="mm2", folio="f2", level=PMD)]
    qs = [Question(5, "f1", "numa_migrate", True), Question(8, "f2", CENSUS, True),
          Question(8, "f2", "cow_reuse", True, refs_ok=False)]
    stream = ScoringStream(KernelConfig(), "kernel", ops, list(range(8)), [-1, -1, 0, 1, 2, 0, 1, 2], qs, 9)
    columns = ColumnStream.of(stream)
    plan = _plan_columns(columns)
    assert plan is not None
    assert plan.small == [True, None, None] and plan.order == [0, 9, 9] and plan.mms == [0, 2, 2]
    assert plan.large == [0, 1, 5, 6, 7] and list(plan.census) == [1]
    assert plan.small_values[("updates", "", 0, 0)] == 2.0
    assert int(columns.columns.level[6]) == 1 and np.array_equal(columns.columns.nr[6:8], [1, 1])
    for design in ("exact", "stopped"):
        assert score_stream(columns, [design])[0].rows == score_stream(stream, [design])[0].rows


def test_a_columnar_stream_pickles_as_its_columns() -> None:
    stream = _stream("fork-child", {"rounds": 2}, 2, KernelConfig())
    columns = ColumnStream.of(stream)
    again = pickle.loads(pickle.dumps(columns))
    assert isinstance(again, ColumnStream) and again.columnar
    assert again.digest() == stream.digest() and again.ops == stream.ops and again.questions == stream.questions
    columns.questions = columns.questions[:1]  # set: the objects are the stream now
    again = pickle.loads(pickle.dumps(columns))
    assert type(again) is ScoringStream and again.questions == stream.questions[:1]
