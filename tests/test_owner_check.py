"""owner._check()'s all-at-once test of the sanity checks rejects exactly when large_mapcount_sanity_failure()
names a failing check, on random folio states, ids and diffs around every boundary, on every configuration."""

from __future__ import annotations

import random

import pytest

from foliosim.errors import Rejected
from foliosim.folio import Folio
from foliosim.kconfig import MM_ID_DUMMY, MM_ID_MIN, KernelConfig
from foliosim.owner import _check, large_mapcount_sanity_failure

CONFIGS = [KernelConfig(), KernelConfig(word_bits=32), KernelConfig(no_page_mapcount=True)]


def _pick(rng: random.Random, *values: int) -> int:
    return rng.choice(values)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.describe())
def test_fast_check_rejects_iff_a_sanity_check_fails(config: KernelConfig) -> None:
    rng = random.Random(13)
    fails = passes = 0
    for _ in range(20_000):
        order = _pick(rng, 0, 1, 2, 4, 9, 10, 15)
        folio = Folio(config, order)
        ids = [_pick(rng, MM_ID_DUMMY, MM_ID_MIN, 7, config.mm_id_max) for _ in (0, 1)]
        folio.mm_ids = ids[0] | (ids[1] << config.slot_shift)
        folio.mm_ids |= config.lock_bit * (rng.random() < 0.05) | config.shared_bit * (rng.random() < 0.3)
        folio.mm_id_mapcount = [_pick(rng, -2, -1, 0, 3) for _ in (0, 1)]
        folio.large_mapcount = _pick(rng, -2, -1, 0, 5)
        nr = 1 << order
        diff = _pick(rng, -1, 0, 1, nr - 1, nr, nr + 1)
        mm_id = _pick(rng, MM_ID_DUMMY, MM_ID_MIN - 1, MM_ID_MIN, 9, config.mm_id_max, config.mm_id_max + 1)
        reason = large_mapcount_sanity_failure(folio, diff, mm_id)
        if reason is None:
            _check(folio, diff, mm_id)
            passes += 1
        else:
            with pytest.raises(Rejected):
                _check(folio, diff, mm_id)
            fails += 1
    assert passes > 500 and fails > 500
