"""OpenAI Whisper, faster-whisper, whisper-timestamped and WhisperX JSON: `segments[...]`."""

from __future__ import annotations

import math
from typing import Any

from daemon.formats.common import (
    ParsedSegments,
    mean,
    number,
    require_dict,
    require_list,
    unit_interval,
)
from daemon.transcript import Segment

WHISPER = "whisper"
WHISPERX = "whisperx"


def matches(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("segments"), list)


def matches_whisperx(doc: Any) -> bool:
    """WhisperX marks itself by diarised speakers or word `score`s, which Whisper never writes."""
    if not matches(doc):
        return False
    for segment in doc["segments"]:
        if isinstance(segment, dict) and ("speaker" in segment or any(
            isinstance(w, dict) and "score" in w for w in segment.get("words") or []
        )):
            return True
    return False


def _confidence(segment: dict[str, Any]) -> float | None:
    """Word probabilities when present (they are per word), else exp(avg_logprob)."""
    words = [w for w in segment.get("words") or [] if isinstance(w, dict)]
    per_word = mean(w.get("probability", w.get("confidence", w.get("score"))) for w in words)
    if per_word is not None:
        return unit_interval(per_word)
    logprob = segment.get("avg_logprob")
    if isinstance(logprob, (int, float)):
        return unit_interval(math.exp(logprob))
    return None


def read(doc: dict[str, Any], file: str) -> ParsedSegments:
    fmt = WHISPERX if matches_whisperx(doc) else WHISPER
    segments = []
    for i, segment in enumerate(require_list(doc, "segments", file, fmt)):
        where = f"segments[{i}]"
        segment = require_dict(segment, where, file, fmt)
        speaker = segment.get("speaker")
        segments.append(Segment(
            index=i,
            text=str(segment.get("text", "")).strip(),
            start=number(segment.get("start"), file, fmt, f"{where}.start"),
            end=number(segment.get("end"), file, fmt, f"{where}.end"),
            speaker=str(speaker) if speaker not in (None, "") else None,
            confidence=_confidence(segment),
        ))
    language = doc.get("language")
    return ParsedSegments(segments, language if isinstance(language, str) else None)
