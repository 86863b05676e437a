"""Folio, MM and ground-truth state in numpy arrays, and its conversion to model objects.

:class:`FastState` is sized once for a trace (its name tables and the largest
order each folio name is created with) and then updated in place by the
kernels in :mod:`foliosim.fast.kernels`. The ``export_*`` methods rebuild the
reference model's objects (:class:`~foliosim.folio.Folio`,
:class:`~foliosim.truth.FolioTruth`, :class:`~foliosim.system.RmapSystem`) from
it: the differential tests compare those, and the replayer asks the reference
model for rejection messages through them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from foliosim.fast import kernels as K
from foliosim.folio import Folio
from foliosim.kconfig import MAX_ORDER, MM_ID_MIN, KernelConfig
from foliosim.system import FolioHandle, MMHandle, RmapSystem
from foliosim.truth import FolioTruth


def config_vector(config: KernelConfig) -> npt.NDArray[np.int64]:
    """The kernels' view of a :class:`KernelConfig`."""
    cfg = np.zeros(K.C_LEN, dtype=np.int64)
    cfg[K.C_IS64] = int(config.is_64bit)
    cfg[K.C_PAGE_MC] = int(config.page_mapcount)
    cfg[K.C_PMD_ORDER] = config.pmd_order
    cfg[K.C_MM_ID_MAX] = config.mm_id_max
    cfg[K.C_MC_MAX] = config.mm_id_mapcount_max
    cfg[K.C_MAX_ORDER] = MAX_ORDER
    return cfg


class FastState:
    """Array state for ``folio_names`` (each up to ``cap_orders[i]``) and ``mm_names``.

    Memory: per folio name ``8 * F_COLS`` bytes; per page of capacity
    ``4 * (2 + len(mm_names))`` bytes; plus ``12 * len(mm_names)`` bytes per folio name.
    """

    def __init__(self, config: KernelConfig, folio_names: Sequence[str], mm_names: Sequence[str],
                 cap_orders: Sequence[int] | npt.NDArray[np.int64]) -> None:
        self.config = config
        self.folio_names = list(folio_names)
        self.mm_names = list(mm_names)
        n_folios = len(self.folio_names)
        n_mms = len(self.mm_names)
        caps = np.asarray(cap_orders, dtype=np.int64)
        if caps.shape != (n_folios,):
            raise ValueError("cap_orders needs one entry per folio name")
        pages = np.where(caps >= 0, np.left_shift(np.int64(1), np.clip(caps, 0, MAX_ORDER)), 0)
        self.cfg = config_vector(config)
        self.glob = np.zeros(K.G_LEN, dtype=np.int64)
        self.glob[K.G_LOWEST_FREE] = MM_ID_MIN
        self.fs = np.zeros((max(n_folios, 1), K.F_COLS), dtype=np.int64)
        self.fs[:n_folios, K.F_CAP] = pages
        self.fs[:n_folios, K.F_OFF] = np.concatenate([[0], np.cumsum(pages)[:-1]]) if n_folios else []
        total_pages = int(pages.sum())
        self.ms = np.zeros((max(n_mms, 1), K.M_COLS), dtype=np.int64)
        self.id_used = np.zeros(n_mms + 2, dtype=np.uint8)
        self.pmc = np.full(max(total_pages, 1), -1, dtype=np.int32)
        self.agg = np.zeros(max(total_pages, 1), dtype=np.int32)
        self.tpte = np.zeros((max(n_mms, 1), max(total_pages, 1)), dtype=np.int32)
        self.tpmd = np.zeros((max(n_mms, 1), max(n_folios, 1)), dtype=np.int32)
        self.ttot = np.zeros((max(n_mms, 1), max(n_folios, 1)), dtype=np.int64)
        self.max_pages = int(pages.max()) if n_folios else 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the state arrays."""
        arrays = (self.cfg, self.glob, self.fs, self.ms, self.id_used, self.pmc, self.agg,
                  self.tpte, self.tpmd, self.ttot)
        return sum(int(a.nbytes) for a in arrays)

    def arrays(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64],
                              npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.int32],
                              npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int32],
                              npt.NDArray[np.int64]]:
        """The kernels' state arguments, in their order."""
        return (self.cfg, self.glob, self.fs, self.ms, self.id_used, self.pmc, self.agg,
                self.tpte, self.tpmd, self.ttot)

    # -- queries -------------------------------------------------------------------
    def folio_live(self, f: int) -> bool:
        return bool(self.fs[f, K.F_LIVE]) if f < len(self.folio_names) else False

    def mm_live(self, m: int) -> bool:
        return bool(self.ms[m, K.M_LIVE]) if m < len(self.mm_names) else False

    def live_folios(self) -> list[int]:
        """Indices of the live folios, in creation order (as the reference's dict keeps them)."""
        n = len(self.folio_names)
        idx = np.flatnonzero(self.fs[:n, K.F_LIVE])
        return [int(i) for i in idx[np.argsort(self.fs[idx, K.F_SEQ], kind="stable")]]

    def live_mms(self) -> list[int]:
        n = len(self.mm_names)
        return [int(i) for i in np.flatnonzero(self.ms[:n, K.M_LIVE])]

    # -- export to reference objects -------------------------------------------------
    def mm_ids_word(self, f: int) -> int:
        """The ``_mm_ids`` word: both ids and the shared bit (the lock bit is clear)."""
        cfg = self.config
        row = self.fs[f]
        word = int(row[K.F_ID0]) | (int(row[K.F_ID1]) << cfg.slot_shift)
        if row[K.F_SHARED]:
            word |= cfg.shared_bit
        return word

    def export_folio(self, f: int, pages: Iterable[int] | None = None) -> Folio:
        """Folio ``f`` as a reference :class:`Folio` (``pages``: its raw page mapcounts, if known)."""
        row = self.fs[f].tolist()
        folio = Folio(self.config, int(row[K.F_ORDER]))
        off = int(row[K.F_OFF])
        folio.page_mapcount = list(pages) if pages is not None else self.pmc[off:off + folio.nr_pages].tolist()
        folio.large_mapcount = row[K.F_LARGE]
        folio.entire_mapcount = row[K.F_ENTIRE]
        folio.nr_pages_mapped = row[K.F_NPM]
        folio.mm_id_mapcount = [row[K.F_MMC0], row[K.F_MMC1]]
        folio.mm_ids = self.mm_ids_word(f)
        return folio

    def export_truth(self, f: int) -> FolioTruth:
        """Folio ``f``'s ground truth as a reference :class:`FolioTruth` (keys: MM names)."""
        nr_pages = 1 << int(self.fs[f, K.F_ORDER])
        off = int(self.fs[f, K.F_OFF])
        truth = FolioTruth(nr_pages)
        for m in np.flatnonzero(self.ttot[:len(self.mm_names), f]).tolist():
            name = self.mm_names[m]
            counts = self.tpte[m, off:off + nr_pages].tolist()
            if any(counts):
                truth.pte[name] = counts
            if self.tpmd[m, f]:
                truth.pmd[name] = int(self.tpmd[m, f])
            truth.total[name] = int(self.ttot[m, f])
        return truth

    def export_system(self, folios: Iterable[int] | None = None) -> RmapSystem:
        """An :class:`RmapSystem` equal to this state: every live MM, the given live folios (default all)."""
        system = RmapSystem(self.config)
        live = self.live_mms()
        ids = {m: int(self.ms[m, K.M_ID]) for m in live}
        top = max(ids.values(), default=MM_ID_MIN - 1)
        allocated = [system.ids.alloc() for _ in range(MM_ID_MIN, top + 1)]
        in_use = set(ids.values())
        for mm_id in allocated:
            if mm_id not in in_use:
                system.ids.free(mm_id)
        for m in live:
            system.mms[self.mm_names[m]] = MMHandle(self.mm_names[m], ids[m], int(self.ms[m, K.M_NRMAP]))
        wanted = set(self.live_folios() if folios is None else folios)
        for f in self.live_folios():
            if f in wanted:
                name = self.folio_names[f]
                system.folios[name] = FolioHandle(name, self.export_folio(f), self.export_truth(f))
        return system


def capacity_orders(kind: npt.NDArray[np.uint8], folio: npt.NDArray[np.int32], order: npt.NDArray[np.int8],
                    n_folios: int) -> npt.NDArray[np.int64]:
    """For each folio name, the largest valid order a ``folio_new`` gives it (-1: never created)."""
    caps = np.full(n_folios, -1, dtype=np.int64)
    at = np.flatnonzero(kind == K.K_FOLIO_NEW)  # one pass over the trace; the rest looks at these rows only
    new_order, new_folio = order[at], folio[at]
    mask = (new_order >= 0) & (new_order <= MAX_ORDER) & (new_folio >= 0)
    np.maximum.at(caps, new_folio[mask].astype(np.int64), new_order[mask].astype(np.int64))
    return caps
