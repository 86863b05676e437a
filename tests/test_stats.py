"""The report's intervals: exact binomial (Clopper-Pearson) and the seeded bootstrap over runs."""

from __future__ import annotations

import math

import pytest

from foliosim.evaluate.stats import betainc, bootstrap_ratio, clopper_pearson, rate


def test_clopper_pearson_matches_published_values() -> None:
    # R: binom.test(k, n)$conf.int
    for (k, n), (lo, hi) in {(5, 10): (0.1870860, 0.8129140), (1, 4): (0.006309463, 0.8058796),
                             (6, 10): (0.2623781, 0.8784477), (1, 1000): (2.531749e-05, 0.005558924)}.items():
        got = clopper_pearson(k, n)
        assert got is not None
        assert got[0] == pytest.approx(lo, rel=1e-5) and got[1] == pytest.approx(hi, rel=1e-5), (k, n, got)
    # k = 0 and k = n have closed forms
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** 0.1, rel=1e-9))
    assert clopper_pearson(10, 10) == (pytest.approx(0.025 ** 0.1, rel=1e-9), 1.0)
    assert clopper_pearson(0, 0) is None
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)


def test_incomplete_beta_against_a_closed_form() -> None:
    # I_x(1, b) = 1 - (1 - x)^b and I_x(a, 1) = x^a
    for x in (0.01, 0.3, 0.77):
        assert betainc(1, 7, x) == pytest.approx(1 - (1 - x) ** 7, rel=1e-10)
        assert betainc(4, 1, x) == pytest.approx(x ** 4, rel=1e-10)
    assert math.isclose(betainc(3, 3, 0.5), 0.5, rel_tol=1e-12)


def test_bootstrap_is_seeded_and_spans_the_runs() -> None:
    a = bootstrap_ratio([1, 3], [10, 10])
    assert a == bootstrap_ratio([1, 3], [10, 10])  # reproducible
    assert a == (0.1, 0.3)  # two runs: the extremes are the runs alone (each drawn twice in 1/4 of resamples)
    assert bootstrap_ratio([0, 0], [0, 0]) is None


def test_rate_picks_exact_for_one_run_and_bootstrap_for_several() -> None:
    one = rate([(1, 4), (0, 0)])  # a run without questions does not count
    assert one.method == "exact" and one.runs == 1 and (one.low, one.high) == clopper_pearson(1, 4)
    two = rate([(1, 4), (3, 15)])
    cp = clopper_pearson(4, 19)
    assert cp is not None
    assert two.method == "bootstrap" and two.runs == 2 and (two.k, two.n) == (4, 19)
    assert two.low == min(cp[0], 3 / 15) and two.high == max(cp[1], 1 / 4)
    zero = rate([(0, 100), (0, 200)])
    assert zero.low == 0.0 and zero.high == pytest.approx(clopper_pearson(0, 300)[1])  # type: ignore[index]
    nothing = rate([(0, 0)])
    assert nothing.value is None and nothing.low is None and nothing.method == ""
