"""Rev-style JSON: `monologues[{speaker{id,name}, start, end, terms[{text, type}]}]`."""

from __future__ import annotations

from typing import Any

from daemon.formats.common import (
    ParsedSegments,
    join_tokens,
    mean,
    number,
    require_dict,
    require_list,
    unit_interval,
)
from daemon.transcript import Segment

FORMAT = "rev"


def matches(doc: Any) -> bool:
    return isinstance(doc, dict) and "monologues" in doc


def read(doc: dict[str, Any], file: str) -> ParsedSegments:
    segments = []
    for i, monologue in enumerate(require_list(doc, "monologues", file, FORMAT)):
        where = f"monologues[{i}]"
        monologue = require_dict(monologue, where, file, FORMAT)
        terms = [require_dict(t, f"{where}.terms", file, FORMAT) for t in monologue.get("terms") or []]
        speaker = monologue.get("speaker")
        if isinstance(speaker, dict):
            speaker = speaker.get("name") or speaker.get("id")
        words = [t for t in terms if t.get("type", "WORD") != "PUNCTUATION"]
        segments.append(Segment(
            index=i,
            text=join_tokens(str(t.get("text", t.get("value", ""))) for t in terms),
            start=number(monologue.get("start", words[0].get("start") if words else None), file, FORMAT, f"{where}.start"),
            end=number(monologue.get("end", words[-1].get("end") if words else None), file, FORMAT, f"{where}.end"),
            speaker=str(speaker) if speaker not in (None, "") else None,
            confidence=unit_interval(mean(t.get("confidence") for t in words)),
        ))
    return ParsedSegments(segments, doc.get("language"))
