"""A Python reader of the viewer's document (docs/viewer.md), used by the tests to check the encoding.

It decodes exactly what the page's script decodes, independently of the encoder.
"""

from __future__ import annotations

import json
import re
from typing import Any

DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def document_of(page: str) -> dict[str, Any]:
    """The JSON document embedded in a page."""
    match = re.search(r'<script id="foliosim-data" type="application/json">(.*?)</script>', page, re.S)
    assert match is not None, "no foliosim-data element in the page"
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def _rle(counts: str | list[list[int]] | None) -> list[list[int]] | None:
    if counts is None or isinstance(counts, list):
        return counts
    out: list[list[int]] = []
    for ch in counts:
        value = DIGITS.index(ch)
        if out and out[-1][0] == value:
            out[-1][1] += 1
        else:
            out.append([value, 1])
    return out


def state_record(doc: dict[str, Any], folio: int, state: int) -> dict[str, Any]:
    """A folio state of the document as the trace contract's record fields."""
    s = doc["strings"]
    x = doc["states"][state]
    order, mapcount, entire, nrpm, entirely, counts, ids, mcs, word, _slots, mms, flags, _verdict = x
    return {
        "folio": doc["folios"][folio],
        "order": order,
        "mapcount": mapcount,
        "entire_mapcount": entire,
        "nr_pages_mapped": nrpm,
        "entirely_mapped": None if entirely is None else bool(entirely),
        "pte_mapcounts": _rle(counts),
        "mm_id": ids,
        "mm_id_mapcount": mcs,
        "shared_bit": None if order == 0 else bool(flags & 8),
        "mm_ids_word": None if word is None else int(word, 16),
        "maybe_mapped_shared": bool(flags & 1),
        "mapped_mms": [s[i] for i in mms],
    }


def steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every step decoded: op text, line, note, error and the touched folios' records."""
    s = doc["strings"]
    out = []
    line = 0
    for row in doc["steps"]:
        row = row + [None, [], -1, -1, -1, -1, [], -1][len(row):]  # trailing defaults are left out
        op, touches, line_field, note, error, proc, cows, failed = row
        line = line + 1 if line_field == -1 else line_field
        out.append({
            "op": s[op],
            "line": line,
            "note": s[note] if note >= 0 else "",
            "error": s[error] if error >= 0 else None,
            "failed": s[failed] if failed >= 0 else None,
            "proc": proc,
            "cows": cows,
            "touches": [
                {
                    "record": state_record(doc, t[0], t[1]),
                    "flags": doc["states"][t[1]][11],
                    "verdict": s[doc["states"][t[1]][12]],
                    "slot_mms": [s[i] if i >= 0 else None for i in doc["states"][t[1]][9]],
                    "owner": s[t[2]] if len(t) > 2 and t[2] >= 0 else None,
                    "why": s[t[3]] if len(t) > 3 and t[3] >= 0 else "",
                }
                for t in touches
            ],
        })
    return out


def process_at(doc: dict[str, Any]) -> list[dict[str, Any] | None]:
    """For every step, the tasks and MMs shown (a snapshot stays shown until the next one), decoded.

    ``{"tasks": {name: (pid, mm)}, "mms": {name: {"mm_id", "users", "count", "vmas": [(start, pages, label)],
    "pages": {vpn: (folio, page, write, pmd)}}}}``: the runs expanded to one entry per present page.
    """
    s, folios = doc["strings"], doc["folios"]
    snapshots = doc.get("process", {}).get("snapshots", [])
    out: list[dict[str, Any] | None] = []
    shown: dict[str, Any] | None = None
    for row in doc["steps"]:
        proc = row[5] if len(row) > 5 else -1
        if proc >= 0:
            tasks, mms = snapshots[proc]
            shown = {"tasks": {s[name]: (pid, s[mm]) for name, pid, mm in tasks}, "mms": {}}
            for name, mm_id, users, count, vmas in mms:
                pages: dict[int, tuple[str, int, bool, bool]] = {}
                spans = []
                for label, start, npages, runs in vmas:
                    spans.append((start, npages, s[label]))
                    pos = start
                    for vpn, nr, folio, page, write, pmd in runs:
                        assert vpn == pos, "runs must cover the VMA in order"
                        pos += nr
                        if folio >= 0:
                            pages.update({vpn + k: (folios[folio], page + k, bool(write), bool(pmd))
                                          for k in range(nr)})
                    assert pos == start + npages
                shown["mms"][s[name]] = {"mm_id": mm_id, "users": users, "count": count, "vmas": spans,
                                         "pages": pages}
        out.append(shown)
    return out


def cows_of(doc: dict[str, Any], cows: list[int]) -> list[tuple[Any, ...]]:
    """A step's copy-on-write decisions as tuples of plain values (folio names, strings resolved)."""
    s, folios, table = doc["strings"], doc["folios"], doc["process"]["cows"]
    out = []
    for i in cows:
        task, mm, vpn, folio, page, level, rule, outcome, unshare, mapcount, refcount, shared, new = table[i]
        out.append((s[task], s[mm], vpn, folios[folio], page, s[level], s[rule], s[outcome], bool(unshare),
                    mapcount, refcount, None if shared is None else bool(shared), folios[new] if new >= 0 else None))
    return out
