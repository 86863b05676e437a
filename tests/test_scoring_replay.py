"""The open-loop scorer's shortcuts for a recorded stream (small folios kept by the scorer, cached answers of large
folios) give exactly the metrics of asking the design every op and question, on every design and configuration."""

from __future__ import annotations

import pytest

from foliosim.errors import Rejected
from foliosim.evaluate.probe import Probe
from foliosim.evaluate.runner import WorkloadRunner
from foliosim.evaluate.stream import Question, Scorer, ScoringStream, score_stream
from foliosim.kconfig import KernelConfig
from foliosim.rmap import PTE
from foliosim.schemes import KNOWN, make_design
from foliosim.system import Op
from foliosim.vm.machine import Machine, MachineOptions
from foliosim.workloads import build_workload
from foliosim.workloads.generators import default_params

DESIGNS = (*KNOWN, "slots:1")
WORKLOADS = {"fork-child": {"rounds": 2}, "mix": {"ops": 200}, "handover": {"generations": 3},
             "prefork": {"requests": 40}, "shared-file": {"rounds": 10}, "snapshot": {"snapshots": 1}}


def _stream(workload: str, params: dict[str, object], seed: int, config: KernelConfig) -> ScoringStream:
    machine = Machine(config, MachineOptions(keep_events=False, check=False))
    probe = Probe(machine, make_design("kernel", config), "reuse", record=True, census=True)
    merged = default_params(workload)
    merged.update(params)
    WorkloadRunner(machine, probe, strict=True).run(build_workload(workload, merged, seed))
    probe.finish()
    assert probe.stream is not None
    return probe.stream


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_replay_scores_as_asking_the_design_everything(workload: str) -> None:
    stream = _stream(workload, WORKLOADS[workload], 2, KernelConfig())
    small = sum(1 for op in stream.ops if op.op == "folio_new" and op.order == 0)
    assert small and stream.questions  # the shortcuts are exercised
    fast, slow = score_stream(stream, DESIGNS), score_stream(stream, DESIGNS, replay=False)
    assert [(s.design, s.rows, s.questions, s.digest) for s in fast] == \
        [(s.design, s.rows, s.questions, s.digest) for s in slow]


@pytest.mark.parametrize(("word_bits", "no_page_mapcount"), [(32, False), (64, True), (32, True)])
def test_replay_scores_as_asking_the_design_on_other_configurations(word_bits: int, no_page_mapcount: bool) -> None:
    config = KernelConfig(word_bits=word_bits, no_page_mapcount=no_page_mapcount)
    stream = _stream("mix", {"ops": 300}, 5, config)
    designs = [d for d in DESIGNS if word_bits == 64 or not d.startswith("precise")]
    fast, slow = score_stream(stream, designs), score_stream(stream, designs, replay=False)
    assert [s.rows for s in fast] == [s.rows for s in slow]


@pytest.mark.parametrize("design", DESIGNS)
def test_a_cached_answer_is_the_designs_answer(design: str) -> None:
    """Where a design says its answers depend on the folio alone, the answer _track took after the folio's last op
    is what the design says at every later question; small folios answer "mapped more than once"."""
    stream = _stream("fork-child", WORKLOADS["fork-child"], 1, KernelConfig())
    d = make_design(design, stream.config)
    scorer = Scorer(d)  # not replaying: the design keeps every folio, so both answers can be read
    pos = 0
    checked = 0
    for q in stream.questions:
        for index in range(pos, q.pos):
            scorer.op(stream.ops[index], stream.op_step[index], stream.op_mms[index])
        pos = max(pos, q.pos)
        track = scorer.tracks.get(q.folio)
        if d.orders[q.folio] == 0:
            assert d.maybe_shared(q.folio) == (d.mapcount(q.folio) > 1)
        elif d.answers_per_folio:
            assert track is not None and track.design_shared == d.maybe_shared(q.folio)
            checked += 1
    assert checked or not d.answers_per_folio


def _bad(*ops: Op) -> ScoringStream:
    stream = ScoringStream(KernelConfig(), "kernel", [Op("mm_new", mm="A"), Op("folio_new", folio="f", order=0),
                                                      Op("map_new_anon", mm="A", folio="f", level=PTE), *ops])
    stream.op_step = list(range(len(stream.ops)))
    stream.op_mms = [-1, 0, 1] + [1] * len(ops)
    return stream


@pytest.mark.parametrize(("ops", "why"), [
    ((Op("folio_new", folio="f", order=0),), "already exists"),
    ((Op("folio_free", folio="f"),), "freed while mapped"),
    ((Op("unmap", mm="A", folio="f", level=PTE), Op("unmap", mm="A", folio="f", level=PTE)), "unmap of 1 mappings"),
])
def test_replay_rejects_a_bad_small_folio_op_as_the_design_does(ops: tuple[Op, ...], why: str) -> None:
    for replay in (True, False):
        with pytest.raises(Rejected, match=why):
            score_stream(_bad(*ops), ["exact"], replay=replay)


def test_small_folios_are_charged_and_answered_by_the_common_rule() -> None:
    stream = _bad(Op("dup", mm="A", folio="f", level=PTE), Op("unmap", mm="A", folio="f", level=PTE),
                  Op("unmap", mm="A", folio="f", level=PTE), Op("folio_free", folio="f"))
    stream.questions = [Question(3, "f", "numa_migrate", False, group=0, weight=1, limit=0),
                        Question(4, "f", "numa_migrate", True, group=1, weight=1, limit=0)]
    for replay in (True, False):
        for scored in score_stream(stream, DESIGNS, replay=replay):
            rows = {row[:4]: row[4] for row in scored.rows}
            assert rows[("updates", "", 0, 0)] == 4 and rows[("atomics", "", 0, 0)] == 3
            assert rows[("cache_lines", "", 0, 0)] == 4 and rows[("locks", "", 0, 0)] == 0
            # group 0: "not shared" (1 mapping), truth not shared: agree; group 1: shared, truth shared: agree
            assert rows[("decisions", "numa_migrate", -1, 0)] == 2
            assert ("unsafe", "numa_migrate", -1, 0) not in rows and ("avoidable", "numa_migrate", -1, 0) not in rows
