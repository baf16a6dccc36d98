"""whisper.cpp `-oj` / `-ojf` JSON: `transcription[{timestamps, offsets, text, speaker?, tokens?}]`."""

from __future__ import annotations

import re
from typing import Any

from daemon.errors import TranscriptError
from daemon.formats.common import (
    ParsedSegments,
    described,
    mean,
    require_dict,
    require_list,
    unit_interval,
)
from daemon.transcript import Segment

FORMAT = "whisper.cpp"
TIMESTAMP = re.compile(r"^(\d+):(\d{2}):(\d{2})[,.](\d{1,3})$")


def matches(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("transcription"), list)


def _seconds(item: dict[str, Any], end: str, file: str, where: str) -> float | None:
    offsets = item.get("offsets")
    if isinstance(offsets, dict) and isinstance(offsets.get(end), (int, float)):
        return offsets[end] / 1000.0
    stamps = item.get("timestamps")
    if isinstance(stamps, dict) and stamps.get(end) is not None:
        match = TIMESTAMP.match(str(stamps[end]).strip())
        if not match:
            raise TranscriptError(file, FORMAT, f"{where}.timestamps.{end}: bad timestamp ({described(stamps[end])}), "
                                  "expected HH:MM:SS,mmm")
        h, m, s, ms = match.groups()
        return int(h) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000.0
    return None


def read(doc: dict[str, Any], file: str) -> ParsedSegments:
    segments = []
    for i, item in enumerate(require_list(doc, "transcription", file, FORMAT)):
        where = f"transcription[{i}]"
        item = require_dict(item, where, file, FORMAT)
        tokens = [t for t in item.get("tokens") or [] if isinstance(t, dict) and not str(t.get("text", "")).startswith("[_")]
        speaker = item.get("speaker")
        segments.append(Segment(
            index=i,
            text=str(item.get("text", "")).strip(),
            start=_seconds(item, "from", file, where),
            end=_seconds(item, "to", file, where),
            speaker=str(speaker) if speaker not in (None, "") else None,
            confidence=unit_interval(mean(t.get("p") for t in tokens)),
        ))
    result = doc.get("result")
    language = result.get("language") if isinstance(result, dict) else None
    return ParsedSegments(segments, language if isinstance(language, str) else None)
