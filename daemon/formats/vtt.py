"""WebVTT: header, NOTE/STYLE/REGION blocks, cue ids and settings, `<v Name>` voice tags."""

from __future__ import annotations

from daemon.errors import TranscriptError
from daemon.formats.common import ParsedSegments
from daemon.formats.cues import parse_cues

FORMAT = "vtt"


def read(body: str, file: str) -> ParsedSegments:
    body = body.lstrip("\ufeff")
    if not body.startswith("WEBVTT"):
        raise TranscriptError(file, FORMAT, "missing 'WEBVTT' header", line=1)
    header_end = body.find("\n\n")
    cues = body[header_end:] if header_end >= 0 else ""
    header_lines = body[:header_end].count("\n") + 1 if header_end >= 0 else 0
    return parse_cues("\n" * (header_lines - 1) + cues, file, FORMAT, voice_tags=True, skip_blocks=("NOTE", "STYLE", "REGION"))
