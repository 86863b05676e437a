from __future__ import annotations

import pytest

from foliosim.errors import MMIdExhausted
from foliosim.kconfig import MM_ID_DUMMY, KernelConfig
from foliosim.mmid import MMIdAllocator


def test_lowest_free_id_and_reuse() -> None:
    ids = MMIdAllocator(KernelConfig())
    assert [ids.alloc() for _ in range(4)] == [1, 2, 3, 4]
    ids.free(3)
    ids.free(2)
    assert ids.peek() == 2
    assert ids.alloc() == 2
    assert ids.alloc() == 3
    assert ids.alloc() == 5
    assert ids.in_use == 5


def test_dummy_never_handed_out_and_free_of_dummy_ignored() -> None:
    ids = MMIdAllocator(KernelConfig())
    ids.free(MM_ID_DUMMY)
    assert ids.alloc() != MM_ID_DUMMY


def test_exhaustion_on_32bit_is_clear_and_changes_nothing() -> None:
    ids = MMIdAllocator(KernelConfig(32))
    got = [ids.alloc() for _ in range(32767)]
    assert got[0] == 1 and got[-1] == 32767
    with pytest.raises(MMIdExhausted, match="ENOSPC"):
        ids.alloc()
    assert ids.in_use == 32767
    ids.free(100)
    assert ids.alloc() == 100
    with pytest.raises(MMIdExhausted):
        ids.alloc()
