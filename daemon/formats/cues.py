"""Cue-based subtitles (SRT and WebVTT share this): a timing line, then text lines until a blank."""

from __future__ import annotations

import html
import re

from daemon.errors import TranscriptError
from daemon.formats.common import ParsedSegments, split_speaker
from daemon.transcript import Segment

TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})"
TIMING = re.compile(rf"^\s*{TIME}\s*-->\s*{TIME}(?:\s+.*)?$")
LOOKS_LIKE_TIMING = re.compile(r"\d:\d\d.*-+>|-+>.*\d:\d\d")
VOICE = re.compile(r"<v(?:\.[\w.-]+)?\s+([^>]+)>")
TAG = re.compile(r"</?[^>\n]*>")


def _seconds(h: str | None, m: str, s: str, ms: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000.0


def _cue_text(lines: list[str], voice_tags: bool) -> tuple[str | None, str]:
    speaker = None
    if voice_tags:
        joined = " ".join(lines)
        voice = VOICE.search(joined)
        speaker = voice.group(1).strip() if voice else None
        text = html.unescape(TAG.sub("", joined))
        lines = [text]
    text = " ".join(line.strip() for line in lines if line.strip())
    named, text = split_speaker(text)
    return speaker or named, " ".join(text.split())


def parse_cues(body: str, file: str, fmt: str, voice_tags: bool, skip_blocks: tuple[str, ...] = ()) -> ParsedSegments:
    lines = body.split("\n")
    segments: list[Segment] = []
    current: Segment | None = None
    text_lines: list[str] = []
    skipping = False

    def close() -> None:
        nonlocal current, text_lines
        if current is not None:
            current.speaker, current.text = _cue_text(text_lines, voice_tags)
            segments.append(current)
        current, text_lines = None, []

    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            close()
            skipping = False
            continue
        if skipping:
            continue
        if current is None and stripped.startswith(skip_blocks):
            skipping = True
            continue
        timing = TIMING.match(line)
        if timing:
            close()
            g = timing.groups()
            current = Segment(index=len(segments), text="", start=_seconds(*g[:4]), end=_seconds(*g[4:]))
            continue
        if LOOKS_LIKE_TIMING.search(stripped) and current is None:
            raise TranscriptError(file, fmt, "malformed timing line (expected "
                                  "'HH:MM:SS,mmm --> HH:MM:SS,mmm')", line=number)
        if current is None:
            next_line = lines[number] if number < len(lines) else ""
            if TIMING.match(next_line) or stripped.isdigit():
                continue
            raise TranscriptError(file, fmt, f"text outside any cue ({len(stripped):,} characters)",
                                  line=number)
        text_lines.append(line)
    close()
    if not segments:
        raise TranscriptError(file, fmt, "no cue with a timing line found")
    return ParsedSegments(segments)
