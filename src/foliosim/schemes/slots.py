"""``slots:K``: the v6.15 owner-tracking algorithm generalised to K slots.

The rules of ``folio_add_return_large_mapcount()`` / ``folio_sub_return_large_mapcount()``
(include/linux/rmap.h), with K slots instead of two: an MM adds to its own
slot, else takes the lowest free slot (the folio becomes "maybe shared" if
anything else mapped it), else stays untracked; removing empties a slot whose
count would drop below one, and the flag is cleared only when an untracked
unmap or an emptied slot leaves one slot owning every mapping. Counts wrap
like the kernel's per-MM mapcount type, including the 32-bit overflow rule.

One addition keeps K=1 sound: an untracked add marks the folio shared. For
K >= 2 this changes nothing (all slots busy implies the flag is already set),
and ``slots:2`` equals ``kernel`` on every trace (tested differentially).
"""

from __future__ import annotations

from foliosim.kconfig import KernelConfig
from foliosim.schemes.base import Design
from foliosim.schemes.cost import NO_CHARGE, Charge, meta_line, page_line
from foliosim.schemes.kernel import slot_metadata_bytes
from foliosim.system import Op


class _State:
    __slots__ = ("counts", "mms", "shared")

    def __init__(self, k: int) -> None:
        self.mms: list[str | None] = [None] * k
        self.counts: list[int] = [0] * k  # logical counts (0 for a free slot)
        self.shared = False


class SlotsDesign(Design):
    """K (MM, mapcount) slots plus a shared flag per large folio, under one lock."""

    answers_per_folio = True

    def __init__(self, config: KernelConfig, slots: int) -> None:
        super().__init__(config)
        self.k = slots
        self.name = f"slots:{slots}"
        self.state: dict[str, _State] = {}
        self._slot_bytes = slot_metadata_bytes(config, slots)
        self._ctype = config.mm_id_mapcount_type
        # Two slots fill page[1]'s _mm_id_mapcount + _mm_ids; further slots spill into page[2].
        lines = {meta_line(config)}
        if slot_metadata_bytes(config, slots) > slot_metadata_bytes(config, 2):
            lines.add(page_line(config, 2))
        self._lines = frozenset(lines)
        self._locked_charge = Charge(atomics=1, locks=1, lines=self._lines)  # the bit spinlock, as kernel
        self._set_charge = Charge(lines=frozenset((meta_line(config),)))  # folio_set_large_mapcount(): no lock

    def _new(self, folio: str, order: int) -> None:
        if order:
            self.state[folio] = _State(self.k)

    def _free(self, folio: str) -> None:
        self.state.pop(folio, None)

    def _update(self, op: Op, folio: str, mm: str, order: int, diff: int) -> Charge:
        if order == 0:
            return NO_CHARGE
        st = self.state[folio]
        total = self.total[folio]
        if op.op == "unmap":
            self._sub(st, mm, diff, total)
            return self._locked_charge
        if op.op == "map_new_anon":
            st.mms[0], st.counts[0] = mm, diff
            return self._set_charge
        self._add(st, mm, diff, total)
        return self._locked_charge

    def _add(self, st: _State, mm: str, diff: int, total: int) -> None:
        for idx in range(self.k):
            if st.mms[idx] == mm:
                raw = self._ctype.wrap(st.counts[idx] - 1 + diff)
                if not self.config.is_64bit and raw < 0:  # 32-bit: the short overflowed
                    st.mms[idx], st.counts[idx] = None, 0
                    st.shared = True
                else:
                    st.counts[idx] = raw + 1
                return
        for idx in range(self.k):
            if st.mms[idx] is None:
                st.mms[idx], st.counts[idx] = mm, diff
                if total != diff:
                    st.shared = True
                return
        st.shared = True  # untracked: see the module docstring (no-op for K >= 2)

    def _sub(self, st: _State, mm: str, diff: int, total: int) -> None:
        for idx in range(self.k):
            if st.mms[idx] == mm:
                left = self._ctype.wrap(st.counts[idx] - 1 - diff) + 1
                if left >= 1:
                    st.counts[idx] = left
                    return
                st.mms[idx], st.counts[idx] = None, 0
                break
        if total in st.counts:
            st.shared = False

    def _maybe_shared_large(self, folio: str) -> bool:
        return self.state[folio].shared

    def _owner_large(self, folio: str) -> str | None:
        st = self.state[folio]
        if st.shared and self.total[folio] > 1:
            return None
        total = self.total[folio]
        for mm, count in zip(st.mms, st.counts, strict=True):
            if mm is not None and count == total:
                return mm
        return None

    def metadata_bytes(self, folio: str) -> int:
        return self._slot_bytes if self.orders[folio] else 0
