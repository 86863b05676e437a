"""compare's driving run on the fast engine hands the scorer a columnar stream (evaluate.stream.ColumnStream):
scored from its columns it gives every design's rows of the same stream kept as objects, both scorer paths."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

pytest.importorskip("numba")

from foliosim.evaluate.stream import ColumnStream, ScoringStream, _plan, _plan_columns, score_stream
from foliosim.fast.sim.score import drive_fast
from foliosim.kconfig import KernelConfig
from foliosim.schemes import KNOWN
from foliosim.workloads.generators import build_workload, default_params
from foliosim.workloads.runtrace import run_trace_steps

TRACES = Path(__file__).resolve().parents[2] / "examples" / "run-traces"
DESIGNS = (*KNOWN, "slots:1")


def _check(stream: ScoringStream) -> None:
    assert isinstance(stream, ColumnStream) and stream.columnar
    plan = _plan_columns(stream)
    got = [(s.design, s.rows, s.questions, s.digest) for s in score_stream(stream, DESIGNS)]
    assert stream.columnar  # scored from the columns
    objects = ScoringStream(stream.config, stream.driver, list(stream.ops), list(stream.op_step),
                            list(stream.op_mms), list(stream.questions), stream.end_step)
    want = [(s.design, s.rows, s.questions, s.digest) for s in score_stream(objects, DESIGNS)]
    slow = [(s.design, s.rows, s.questions, s.digest) for s in score_stream(objects, DESIGNS, replay=False)]
    assert got == want == slow
    assert got[0][2] > 0
    assert plan is not None
    ref = _plan(objects)
    assert (plan.large, plan.order, plan.mms, plan.small, plan.gap, plan.census, plan.census_values,
            plan.small_values, plan.large_ops) == (ref.large, ref.order, ref.mms, ref.small, ref.gap, ref.census,
                                                   ref.census_values, ref.small_values, ref.large_ops)


@pytest.mark.parametrize("name", ["fork-child.trace.gz", "sh-pipeline.census.trace.gz", "prefork-server.trace.gz"])
def test_recorded_trace_columns_score_as_objects(name: str) -> None:
    steps = run_trace_steps(gzip.decompress((TRACES / name).read_bytes()).decode(), name)
    _check(drive_fast(steps, KernelConfig(), oracle="end").stream)


@pytest.mark.parametrize("interpreter", [True, False])
@pytest.mark.parametrize("workload", ["mix", "snapshot"])
def test_generated_workload_columns_score_as_objects(workload: str, interpreter: bool) -> None:
    steps = build_workload(workload, default_params(workload), 5)
    _check(drive_fast(steps, KernelConfig(no_page_mapcount=True), interpreter=interpreter).stream)
