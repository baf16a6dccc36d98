"""AWS Transcribe JSON: `results.items[...]`, speakers from `speaker_labels`, times as strings.

Items are grouped into speaker turns; without speaker labels, turns end at sentence punctuation.
"""

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

FORMAT = "aws"
SENTENCE_END = (".", "?", "!")


def matches(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("results"), dict) and "items" in doc["results"]


def _speakers_by_start(results: dict[str, Any]) -> dict[str, str]:
    labels = results.get("speaker_labels")
    found: dict[str, str] = {}
    if isinstance(labels, dict):
        for segment in labels.get("segments") or []:
            for item in segment.get("items") or [] if isinstance(segment, dict) else []:
                if isinstance(item, dict) and item.get("start_time") is not None:
                    found[str(item["start_time"])] = str(item.get("speaker_label") or segment.get("speaker_label"))
    return found


def read(doc: dict[str, Any], file: str) -> ParsedSegments:
    results = doc["results"]
    speakers = _speakers_by_start(results)
    segments: list[Segment] = []
    tokens: list[str] = []
    scores: list[float | None] = []
    turn: Segment | None = None

    def close() -> None:
        nonlocal turn, tokens, scores
        if turn is not None:
            turn.text = join_tokens(tokens)
            turn.confidence = unit_interval(mean(scores))
            segments.append(turn)
        turn, tokens, scores = None, [], []

    for i, item in enumerate(require_list(results, "items", file, FORMAT)):
        where = f"results.items[{i}]"
        item = require_dict(item, where, file, FORMAT)
        alternatives = item.get("alternatives") or [{}]
        best = require_dict(alternatives[0], f"{where}.alternatives[0]", file, FORMAT)
        content = str(best.get("content", ""))
        if item.get("type") == "punctuation":
            if turn is not None:
                tokens.append(content)
                if not speakers and content in SENTENCE_END:
                    close()
            continue
        start = number(item.get("start_time"), file, FORMAT, f"{where}.start_time")
        end = number(item.get("end_time"), file, FORMAT, f"{where}.end_time")
        speaker = item.get("speaker_label") or speakers.get(str(item.get("start_time")))
        if turn is not None and speaker != turn.speaker:
            close()
        if turn is None:
            turn = Segment(index=len(segments), text="", start=start, speaker=speaker)
        turn.end = end if end is not None else turn.end
        tokens.append(content)
        scores.append(number(best.get("confidence"), file, FORMAT, f"{where}.confidence"))
    close()
    language = results.get("language_code") or doc.get("language_code")
    return ParsedSegments(segments, language.split("-")[0] if isinstance(language, str) else None)
