"""Sharing-detection designs behind one small interface (see docs/evaluator.md).

``kernel`` is the v6.15 core model itself, ``exact`` keeps per-MM counts,
``slots:K`` generalises the two-slot algorithm to K slots, ``stopped`` tracks
up to two MMs and then gives up until the folio is freed, and ``legacy`` is
the pre-v6.15 per-page heuristic; ``precise-rmapid`` is the 2023 RFC's per-MM rmap
ids summed into per-folio values. Costs per update: :mod:`foliosim.schemes.cost`.
"""

from foliosim.schemes.base import DESIGNS, KNOWN, Design, UpdateCost, make_design

__all__ = ["DESIGNS", "KNOWN", "Design", "UpdateCost", "make_design"]
