"""Helpers for the evaluator tests: random valid rmap traces and their replayable text."""

from __future__ import annotations

import json
import random

from foliosim.errors import Rejected
from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD, PTE
from foliosim.system import Op, RmapSystem


def random_trace(seed: int, n_ops: int = 300, config: KernelConfig | None = None, n_mms: int = 5,
                 orders: tuple[int, ...] = (0, 2, 4, 9)) -> list[Op]:
    """A valid rmap trace: MMs and folios come and go, maps/dups/unmaps of random page ranges."""
    rng = random.Random(seed)
    system = RmapSystem(config or KernelConfig())
    ops: list[Op] = []
    mms: list[str] = []
    folios: list[str] = []
    counter = 0

    def attempt(op: Op) -> bool:
        try:
            system.apply(op)
        except Rejected:
            return False
        ops.append(op)
        return True

    while len(ops) < n_ops:
        roll = rng.random()
        counter += 1
        if roll < 0.06 or not mms:
            name = f"M{counter}"
            if attempt(Op("mm_new", name)):
                mms.append(name)
        elif roll < 0.09 and len(mms) > 1:
            name = rng.choice(mms)
            if attempt(Op("mm_free", name)):
                mms.remove(name)
        elif roll < 0.15 or not folios:
            name = f"F{counter}"
            if attempt(Op("folio_new", None, name, rng.choice(orders))):
                folios.append(name)
        elif roll < 0.18:
            name = rng.choice(folios)
            if attempt(Op("folio_free", None, name)):
                folios.remove(name)
        else:
            folio = rng.choice(folios)
            f = system.folio(folio)
            mm = rng.choice(mms[-n_mms:])
            kind = rng.choice(("map", "map", "dup", "unmap", "unmap", "unmap", "map_new_anon"))
            level = PMD if f.order >= system.config.pmd_order and rng.random() < 0.5 else PTE
            if kind == "map_new_anon":
                level = PMD if f.order >= system.config.pmd_order else PTE
                attempt(Op(kind, mm, folio, None, level))
                continue
            page = rng.randrange(f.nr_pages)
            nr = rng.randint(1, min(f.nr_pages - page, 8))
            if kind == "unmap":
                owners = [m for m in mms if m in system.folio_handle(folio).truth.total]
                if owners:
                    mm = rng.choice(owners)
            attempt(Op(kind, mm, folio, None, level, page, nr))
    return ops


def trace_text(ops: list[Op]) -> str:
    """The ops as an rmap trace (JSON Lines) that `foliosim replay` reruns."""
    return "\n".join(json.dumps(op.to_json()) for op in ops)
