"""Step-by-step narration of the commit message's examples (pure: returns lines)."""

from __future__ import annotations

from foliosim.errors import Rejected
from foliosim.explain import explain_event, explain_verdict, verdict
from foliosim.folio import folio_mm_id
from foliosim.kconfig import MM_ID_DUMMY, KernelConfig
from foliosim.rmap import RmapResult
from foliosim.system import RmapSystem
from foliosim.trace.examples import Example
from foliosim.trace.format import parse_op


def _slots(system: RmapSystem, folio_name: str) -> str:
    folio = system.folio(folio_name)
    names = {mm.mm_id: mm.name for mm in system.mms.values()}
    parts = []
    for idx in (0, 1):
        mm_id = folio_mm_id(folio, idx)
        who = "free" if mm_id == MM_ID_DUMMY else f"{names.get(mm_id, mm_id)}:{folio.mm_id_mapcount[idx] + 1}"
        parts.append(f"slot{idx}=[{who}]")
    shared = "set" if folio.mm_ids & folio.config.shared_bit else "clear"
    return f"{' '.join(parts)} shared-bit={shared} mapcount={folio.large_mapcount + 1}"


def run_example(example: Example, config: KernelConfig) -> tuple[list[str], bool]:
    """Replay ``example`` and narrate it; the flag says whether the commit's conclusion held."""
    system = RmapSystem(config)
    lines = [example.title, f"  ({config.describe()})"]
    for step in example.steps:
        op = parse_op(step.op)
        try:
            result = system.apply(op)
        except Rejected as exc:  # would be a model bug: the examples are valid
            lines.append(f"  rejected: {exc.reason}")
            return lines, False
        if not step.narration:
            continue
        handle = system.folios[example.folio]
        names = {mm.mm_id: mm.name for mm in system.mms.values()}
        event = result.owner if isinstance(result, RmapResult) else None
        lines.append(f"  {step.narration}")
        lines.append(f"      {_slots(system, example.folio)}")
        lines.append(f"      why: {explain_event(event, op.mm or '?', handle.folio, names)}")
        lines.append(f"      -> {explain_verdict(handle.folio, handle.truth)}")
    got = verdict(system.folio(example.folio))
    ok = got == example.expected
    said = "as the commit message says" if ok else f"NOT as the commit says: {example.expected}"
    lines.append(f"  result: {got} ({said})")
    return lines, ok
