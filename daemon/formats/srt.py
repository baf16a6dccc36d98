"""SubRip (.srt), tolerant of the quirks real exporters produce."""

from __future__ import annotations

from daemon.formats.common import ParsedSegments
from daemon.formats.cues import parse_cues

FORMAT = "srt"


def read(body: str, file: str) -> ParsedSegments:
    return parse_cues(body, file, FORMAT, voice_tags=False)
