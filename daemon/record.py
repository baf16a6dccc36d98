"""The call record: the reason for the call, what was done, whether it was resolved, the next steps and the
key entities, as contact-centre products give them, with evidence and without more writing.

- `reason`, `actions`, `next_steps`: the labelled bullets ("Motif : ...", "Décision : ...", "Conseils : ..."),
  sorted by their label (the prompt set's `record_labels`); the record costs no generated token;
- `resolution`: resolved / partly / unresolved, read from the model's probabilities (metadata.py), as the
  satisfaction score is, with the probabilities;
- `entities`: the numbers and names the title, summary and bullets state, each found verbatim in a segment of the
  transcript, with that segment's index. One the transcript does not hold is not listed: the record never
  carries a name or a number the call did not.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Sequence

from daemon.evidence import mentions

RESOLUTIONS = ("resolved", "partly", "unresolved")
FIELDS = ("reason", "actions", "next_steps")


def labels(listed: str) -> dict[str, str]:
    """`record_labels` ("Motif | Décision | Conseils"): each label, folded, to the record field it fills."""
    names = [name.strip() for name in listed.split("|")]
    return {_fold(name): field for name, field in zip(names, FIELDS) if name}


def _fold(text: str) -> str:
    """Lowercase without accents: "État", "etat" and "ÉTAT" are one label."""
    return "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn").strip()


def sorted_bullets(bullets: Sequence[str] | None, known: dict[str, str]) -> dict[str, list[str]]:
    """The bullets whose label names a record field, the label taken off ("Décision : envoi du SMUR" -> actions);
    an unlabelled bullet right after them goes on with the same field (a list under "Conseils :"), one after
    another label ("État : ...") or before any goes nowhere."""
    found: dict[str, list[str]] = {field: [] for field in FIELDS}
    field: str | None = None
    for bullet in bullets or ():
        label, colon, rest = bullet.partition(":")
        name = _fold(label.strip("*").strip())
        labelled = bool(colon) and (name in known or len(name.split()) <= 2)  # "rappeler le 15 : ..." is no label
        if labelled:
            field = known.get(name)
        text = (rest if labelled else bullet).strip().strip("*").strip()
        if field and text:
            found[field].append(text[:1].upper() + text[1:])
    return found


def entities(title: str | None, written: Sequence[str], lines: Sequence[tuple[int, str]]) -> list[dict[str, Any]]:
    """Each number or name of the title and the other written texts found, as written, as a whole word in a
    segment's text, with the first such segment's index; the rest left out ("legs" in the call does not make
    "Legs" a name)."""
    result: list[dict[str, Any]] = []
    seen: set[str] = set()
    stated = [m for text in written for m in mentions(text)] + (mentions(title, heading=True) if title else [])
    for mention in stated:
        if mention.text in seen:
            continue
        seen.add(mention.text)
        pattern = re.compile(rf"(?<![\w]){re.escape(mention.text)}(?![\w])")
        segment = next((index for index, line in lines if pattern.search(line)), None)
        if segment is not None:
            result.append({"text": mention.text, "kind": mention.kind, "segment": segment})
    return result


def call_record(values: dict[str, Any], record_labels: str, lines: Sequence[tuple[int, str]]) -> dict[str, Any]:
    """The record of one call from the metadata written for it and the transcript's segments (index, text)."""
    sorted_ = sorted_bullets(values.get("bullets"), labels(record_labels))
    written = [t for t in (values.get("summary"), *(values.get("bullets") or ())) if t]
    reasons = sorted_["reason"]
    return {"reason": reasons[0] if reasons else None, "actions": sorted_["actions"],
            "resolution": values.get("resolution"), "next_steps": sorted_["next_steps"],
            "entities": entities(values.get("title"), written, lines)}
