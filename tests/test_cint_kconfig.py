from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foliosim.cint import S16, S32, U32_LONG, U64
from foliosim.kconfig import KernelConfig


def test_signed_wraparound() -> None:
    assert S32.wrap(2**31 - 1 + 1) == -(2**31)
    assert S32.wrap(-(2**31) - 1) == 2**31 - 1
    assert S16.wrap(32767 + 1) == -32768
    assert S16.wrap(-1) == -1
    assert S16.wrap(65535) == -1
    assert S16.wrap(32768 + 32767) == -1


def test_unsigned_wraparound() -> None:
    assert U64.wrap(-1) == 2**64 - 1
    assert U64.wrap(2**64) == 0
    assert U32_LONG.wrap(-1) == 2**32 - 1


@given(st.integers(min_value=-(2**80), max_value=2**80))
def test_wrap_is_modular_and_in_range(value: int) -> None:
    for ctype in (S16, S32, U32_LONG, U64):
        got = ctype.wrap(value)
        assert ctype.fits(got)
        assert (got - value) % (1 << ctype.bits) == 0


def test_64bit_constants() -> None:
    cfg = KernelConfig(64)
    assert cfg.mm_id_bits == 31
    assert cfg.mm_id_max == 2**31 - 1
    assert cfg.lock_bitnum == 31
    assert cfg.shared_bitnum == 63
    assert cfg.slot_shift == 32
    assert cfg.mm_id_mapcount_type is S32
    assert cfg.mm_id_mapcount_max == 2**31 - 1


def test_32bit_constants() -> None:
    cfg = KernelConfig(32)
    assert cfg.mm_id_bits == 15
    assert cfg.mm_id_max == 32767
    assert cfg.lock_bitnum == 15
    assert cfg.shared_bitnum == 31
    assert cfg.slot_shift == 16
    assert cfg.mm_id_mapcount_type is S16
    assert not cfg.has_entire_mapcount(1)
    assert cfg.has_entire_mapcount(2)
    assert KernelConfig(64).has_entire_mapcount(1)


def test_bad_word_bits() -> None:
    with pytest.raises(ValueError, match="64 or 32"):
        KernelConfig(16)
