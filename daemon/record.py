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

RESOLUTIONS = ("resolved", "partly", "unresolved")
FIELDS = ("reason", "actions", "next_steps")
NUMBER = re.compile(r"\d+(?:[.,:h]\d+)*")
TOKEN = re.compile(r"[\w'’-]+")
SENTENCE = re.compile(r"(?<=[.!?:;])\s+|\n")


def labels(listed: str) -> dict[str, str]:
    """`record_labels` ("Motif | Décision | Conseils"): each label, folded, to the record field it fills."""
    names = [name.strip() for name in listed.split("|")]
    return {_fold(name): field for name, field in zip(names, FIELDS) if name}


def _fold(text: str) -> str:
    """Lowercase without accents: "État", "etat" and "ÉTAT" are one label."""
    return "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn").strip()


def sorted_bullets(bullets: Sequence[str] | None, known: dict[str, str]) -> dict[str, list[str]]:
    """The bullets whose label names a record field, the label taken off ("Décision : envoi du SMUR" -> actions)."""
    found: dict[str, list[str]] = {field: [] for field in FIELDS}
    for bullet in bullets or ():
        label, colon, rest = bullet.partition(":")
        field = known.get(_fold(label.strip("*").strip())) if colon else None
        text = rest.strip().strip("*").strip()
        if field and text:
            found[field].append(text[:1].upper() + text[1:])
    return found


def _mentions(text: str) -> list[tuple[str, str]]:
    """Numbers, and capitalised words inside a sentence (a sentence's first word, or the first after a label's
    colon, is capitalised anyway): what a record calls entities, in order of first mention."""
    found = [(m.group(0), "number") for m in NUMBER.finditer(text)]
    for sentence in SENTENCE.split(text):
        for token in TOKEN.findall(sentence)[1:]:
            token = re.sub(r"['’]s?$", "", token)
            if token[:1].isupper() and not token[:1].isdigit() and len(token) > 1:
                found.append((token, "name"))
    return found


def entities(written: Sequence[str], lines: Sequence[tuple[int, str]]) -> list[dict[str, Any]]:
    """Each number or name of the written texts found as a whole word in a segment's text (case aside for names),
    with the first such segment's index; the rest left out."""
    result: list[dict[str, Any]] = []
    seen: set[str] = set()
    for text in written:
        for mention, kind in _mentions(text):
            key = mention.lower()
            if key in seen:
                continue
            seen.add(key)
            pattern = re.compile(rf"(?<![\w]){re.escape(mention)}(?![\w])", 0 if kind == "number" else re.IGNORECASE)
            segment = next((index for index, line in lines if pattern.search(line)), None)
            if segment is not None:
                result.append({"text": mention, "kind": kind, "segment": segment})
    return result


def call_record(values: dict[str, Any], record_labels: str, lines: Sequence[tuple[int, str]]) -> dict[str, Any]:
    """The record of one call from the metadata written for it and the transcript's segments (index, text)."""
    sorted_ = sorted_bullets(values.get("bullets"), labels(record_labels))
    written = [t for t in (values.get("title"), values.get("summary"), *(values.get("bullets") or ())) if t]
    reasons = sorted_["reason"]
    return {"reason": reasons[0] if reasons else None, "actions": sorted_["actions"],
            "resolution": values.get("resolution"), "next_steps": sorted_["next_steps"],
            "entities": entities(written, lines)}
