"""Plain text: one turn a line, optional `Speaker: text` prefix."""

from __future__ import annotations

from daemon.formats.common import ParsedSegments, split_speaker
from daemon.transcript import Segment

FORMAT = "text"


def read(body: str, file: str) -> ParsedSegments:
    segments = []
    for line in body.split("\n"):
        if line.strip():
            speaker, text = split_speaker(line)
            segments.append(Segment(index=len(segments), text=text, speaker=speaker))
    return ParsedSegments(segments)
