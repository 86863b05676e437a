"""Intervals for the report's rates: exact binomial (Clopper-Pearson) and a seeded cluster bootstrap.

A rate k/n from one run is a binomial proportion: its 95 % interval is the
Clopper-Pearson one (the beta quantiles, found here by bisection on the
regularized incomplete beta function; no SciPy). A rate pooled over several
runs (seeds × workloads) varies from run to run more than a binomial would:
its interval resamples whole runs with replacement (numpy, a fixed seed, so a
report is reproducible), takes the 2.5th and 97.5th percentiles of the pooled
ratio, and is widened to the exact interval of the pooled counts where that
one is wider.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from foliosim.binomial import beta_ppf as beta_ppf
from foliosim.binomial import betainc as betainc
from foliosim.binomial import clopper_pearson as clopper_pearson

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261130


def bootstrap_ratio(nums: Sequence[float], dens: Sequence[float], confidence: float = 0.95,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float] | None:
    """Percentile interval of sum(num)/sum(den) over resampled clusters (runs); None when the total is 0.

    Resamples whose denominator is 0 are dropped (the ratio does not exist there).
    """
    num, den = np.asarray(nums, dtype=float), np.asarray(dens, dtype=float)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError("bootstrap_ratio: one numerator and one denominator per cluster")
    if den.sum() <= 0:
        return None
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(num), size=(resamples, len(num)))
    top, bottom = num[picks].sum(axis=1), den[picks].sum(axis=1)
    ok = bottom > 0
    ratios = top[ok] / bottom[ok]
    alpha = 1.0 - confidence
    lo, hi = np.quantile(ratios, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    return float(lo), float(hi)


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate with everything a reader needs: k of n, the interval and how it was made."""

    k: float
    n: float
    low: float | None
    high: float | None
    method: str  # "exact" (Clopper-Pearson), "bootstrap" (over runs), "" (n = 0)
    runs: int = 1

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None


def rate(per_run: Sequence[tuple[float, float]]) -> Rate:
    """The pooled rate of (k, n) per run, with its 95 % interval: exact (Clopper-Pearson) when one run holds
    all the questions; otherwise a cluster bootstrap over the runs that asked any, widened where needed to
    the exact interval of the pooled counts (so a rate of 0 over many runs is not given [0, 0])."""
    runs = [(k, n) for k, n in per_run if n > 0]
    k = sum(x for x, _ in runs)
    n = sum(y for _, y in runs)
    if not runs:
        return Rate(k, n, None, None, "", 0)
    if len(runs) == 1:
        interval = clopper_pearson(round(k), round(n))
        assert interval is not None
        return Rate(k, n, interval[0], interval[1], "exact", 1)
    boot = bootstrap_ratio([x for x, _ in runs], [y for _, y in runs])
    exact = clopper_pearson(round(k), round(n))
    assert boot is not None and exact is not None
    # Never narrower than the binomial interval of the pooled counts (all-zero runs resample to [0, 0]).
    return Rate(k, n, min(boot[0], exact[0]), max(boot[1], exact[1]), "bootstrap", len(runs))


__all__ = ["BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "Rate", "beta_ppf", "betainc", "bootstrap_ratio",
           "clopper_pearson", "rate"]
