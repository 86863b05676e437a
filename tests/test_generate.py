from __future__ import annotations

from foliosim.system import RmapSystem
from foliosim.trace.generate import TraceSpec, generate_ops, measure_mix, setup_ops, to_op
from tests.conftest import ALL_CONFIGS


def test_generated_traces_are_valid_and_deterministic() -> None:
    spec = TraceSpec(n_ops=3000, n_folios=4, order=3, n_mms=3, seed=7)
    ops = list(generate_ops(spec))
    assert ops == list(generate_ops(spec))
    assert ops != list(generate_ops(TraceSpec(n_ops=3000, n_folios=4, order=3, n_mms=3, seed=8)))
    for config in ALL_CONFIGS:
        system = RmapSystem(config)
        for op in setup_ops(spec):
            system.apply(op)
        for gen in ops:
            system.apply(to_op(gen))  # raises Rejected if the generator made an invalid op


def test_standard_mix_is_realised() -> None:
    mix = measure_mix(list(generate_ops(TraceSpec(n_ops=40000, seed=3))))
    want = {"map pte": 0.23, "map pmd": 0.11, "dup pte": 0.09, "dup pmd": 0.09, "unmap pte": 0.29, "unmap pmd": 0.19}
    for key, share in want.items():
        assert abs(mix[key] - share) < 0.02, (key, mix[key])
    assert 6.5 < mix["mean pte range"] < 8.5
