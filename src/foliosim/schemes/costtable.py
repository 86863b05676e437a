"""The numeric cost table of docs/cost-model.md, computed by running every design.

One fixed sequence of rmap calls (a 16-page mTHP faulted in, forked, one page CoW'd,
the child exiting, the page mapped back; a PMD THP faulted in, forked and unmapped;
a PTE-mapped THP forked) goes through each design under CONFIG_PAGE_MAPCOUNT and
CONFIG_NO_PAGE_MAPCOUNT, 64- and 32-bit, and each call's :class:`~foliosim.schemes.UpdateCost`
becomes a cell ``atomics / locks / cache lines``. ``python -m foliosim.schemes.costtable``
prints the table; a test checks that the docs quote it unchanged.
"""

from __future__ import annotations

from foliosim.kconfig import KernelConfig
from foliosim.rmap import PMD, PTE
from foliosim.schemes.base import make_design
from foliosim.system import Op

#: The designs of the table, in column order.
TABLE_DESIGNS = ("kernel", "exact", "slots:3", "stopped", "legacy", "precise-rmapid")

_SETUP = [Op("mm_new", "P"), Op("mm_new", "C"), Op("folio_new", folio="M", order=4),
          Op("folio_new", folio="T", order=9), Op("folio_new", folio="G", order=9)]
#: (label, op) in order; labels name the kernel entry point and what the call does.
STEPS: list[tuple[str, Op]] = [
    ("mTHP 16 pages: `folio_add_new_anon_rmap()` (fault)", Op("map_new_anon", "P", "M", None, PTE)),
    ("mTHP: dup 16 PTEs (fork)", Op("dup", "C", "M", None, PTE, 0, 16)),
    ("mTHP: remove 1 PTE, still mapped by the child (CoW)", Op("unmap", "P", "M", None, PTE, 3, 1)),
    ("mTHP: remove 16 PTEs, one page goes unmapped (child exit)", Op("unmap", "C", "M", None, PTE, 0, 16)),
    ("mTHP: add 1 PTE, page newly mapped", Op("map", "P", "M", None, PTE, 3, 1)),
    ("THP 512 pages: `folio_add_new_anon_rmap()` (PMD fault)", Op("map_new_anon", "P", "T", None, PMD)),
    ("THP: dup PMD (fork)", Op("dup", "C", "T", None, PMD)),
    ("THP: remove PMD, not the last", Op("unmap", "C", "T", None, PMD)),
    ("THP: remove the last PMD", Op("unmap", "P", "T", None, PMD)),
    ("PTE-mapped THP: add 512 PTEs, all newly mapped", Op("map", "P", "G", None, PTE, 0, 512)),
    ("PTE-mapped THP: dup 512 PTEs (fork)", Op("dup", "C", "G", None, PTE, 0, 512)),
]


#: The configurations of the tables, in order.
TABLE_CONFIGS = (KernelConfig(64, False), KernelConfig(64, True), KernelConfig(32, False), KernelConfig(32, True))


def costs(spec: str, config: KernelConfig) -> list[str]:
    """``atomics / locks / lines`` of every step of :data:`STEPS` for one design ("—" if it refuses the config)."""
    try:
        design = make_design(spec, config)
    except ValueError:
        return ["—"] * len(STEPS)
    for op in _SETUP:
        design.apply(op)
    out = []
    for _label, op in STEPS:
        cost = design.apply(op)
        out.append(f"{cost.atomics} / {cost.locks} / {cost.cache_lines}")
    return out


def metadata(spec: str, config: KernelConfig, order: int) -> str:
    """The design's sharing-tracking bytes for one folio of ``order`` mapped by one MM."""
    try:
        design = make_design(spec, config)
    except ValueError:
        return "—"
    design.apply(Op("mm_new", "P"))
    design.apply(Op("folio_new", folio="F", order=order))
    design.apply(Op("map_new_anon", "P", "F", None, PTE if order < config.pmd_order else PMD))
    return f"{design.metadata_bytes('F')} B"


def markdown_table() -> str:
    """One table per configuration, as docs/cost-model.md quotes them."""
    parts = []
    for config in TABLE_CONFIGS:
        cols = {spec: costs(spec, config) for spec in TABLE_DESIGNS}
        head = f"| operation ({config.describe()}) | "
        lines = [head + " | ".join(f"`{s}`" for s in TABLE_DESIGNS) + " |",
                 "|---" * (len(TABLE_DESIGNS) + 1) + "|"]
        for i, (label, _op) in enumerate(STEPS):
            lines.append(f"| {label} | " + " | ".join(cols[s][i] for s in TABLE_DESIGNS) + " |")
        for order in (2, 4, 9):
            cells = " | ".join(metadata(s, config, order) for s in TABLE_DESIGNS)
            lines.append(f"| metadata per order-{order} folio (one MM) | {cells} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
