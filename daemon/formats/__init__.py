"""parse(path) -> Transcript for every supported speech-to-text format.

The format is detected from the content first and the extension second, so a Whisper JSON saved
as `.txt` still parses, and a broken `.srt` gets an SRT error with its line number.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

from daemon.errors import TranscriptError
from daemon.formats import srt, text, vtt
from daemon.formats.common import ParsedSegments
from daemon.formats.decoding import decode_text
from daemon.formats.limits import InputLimits
from daemon.formats.reading import read_input
from daemon.formats.registry import EXTENSION_FORMATS, JSON_FORMATS, TEXT_FORMATS
from daemon.names import shown
from daemon.transcript import Segment, Transcript

SRT_TIMING = re.compile(r"^\s*(\d+:)?\d{1,2}:\d{2}[,.]\d{1,3}\s*-->", re.MULTILINE)


def _detect_text_format(body: str, extension: str) -> str:
    if body.lstrip("\ufeff").startswith("WEBVTT"):
        return vtt.FORMAT
    if SRT_TIMING.search(body):
        return vtt.FORMAT if extension == ".vtt" else srt.FORMAT
    return EXTENSION_FORMATS.get(extension, text.FORMAT)


def _parse_json(body: str, name: str) -> tuple[str, ParsedSegments]:
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise TranscriptError(name, "json", f"invalid JSON: {exc.msg} (column {exc.colno})",
                              line=exc.lineno) from None
    for fmt in JSON_FORMATS:
        assert fmt.matches is not None
        if fmt.matches(doc):
            return fmt.name, fmt.read(doc, name)
    keys = ", ".join(sorted(doc)[:8]) if isinstance(doc, dict) else type(doc).__name__
    raise TranscriptError(
        name, "json", f"unknown JSON shape (top-level: {keys}); expected Whisper, WhisperX, "
        "whisper.cpp, Rev or AWS Transcribe output"
    )


def _ms(seconds: float | None) -> float | None:
    """Times to the millisecond: tools write float noise like 1.1500000000000004."""
    return None if seconds is None else round(seconds, 3)


def _read_segments(body: str, name: str, extension: str) -> tuple[str, ParsedSegments]:
    """The format and its segments. Content that breaks a reader in a way it did not foresee (JSON nested
    thousands deep, a number with hundreds of digits) is a problem of this file, named, never a retry."""
    fmt = "json" if body.lstrip()[:1] in ("{", "[") or extension == ".json" else _detect_text_format(body, extension)
    try:
        return _parse_json(body, name) if fmt == "json" else (fmt, TEXT_FORMATS[fmt].read(body, name))
    except RecursionError:
        raise TranscriptError(name, fmt, "nested too deeply to be a transcript") from None
    except (OverflowError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise TranscriptError(name, fmt, f"cannot be read ({type(exc).__name__}: a value out of range or of the "
                              "wrong kind)") from None


def check_limits(segments: list[Segment], name: str, fmt: str, limits: InputLimits) -> None:
    """Counts and times a call can have. A time that is negative, past `max_seconds` or ends before it starts is
    an error; segments out of order are kept as they come (overlapping speakers, per-speaker exports)."""
    if len(segments) > limits.max_segments:
        raise TranscriptError(name, fmt, f"{len(segments):,} segments, over the {limits.max_segments:,}-segment "
                              "limit (queue.max_segments)")
    for s in segments:
        if len(s.text) > limits.max_segment_chars:
            raise TranscriptError(name, fmt, f"segment {s.index} has {len(s.text):,} characters, over the "
                                  f"{limits.max_segment_chars:,}-character limit (queue.max_segment_chars)")
        for what, value in (("start", s.start), ("end", s.end)):
            if value is not None and not 0 <= value <= limits.max_seconds:
                raise TranscriptError(name, fmt, f"segment {s.index}: {what} time {value:.3f} s is outside 0 to "
                                      f"{limits.max_seconds:,.0f} s (queue.max_seconds)")
        if s.start is not None and s.end is not None and s.end < s.start:
            raise TranscriptError(name, fmt, f"segment {s.index} ends ({s.end:.3f} s) before it starts "
                                  f"({s.start:.3f} s)")


def parse_bytes(data: bytes, name: str, limits: InputLimits = InputLimits()) -> Transcript:
    if len(data) > limits.max_bytes:
        raise TranscriptError(name, None, f"file is {len(data):,} bytes, over the {limits.max_bytes:,}-byte limit")
    if not data:
        raise TranscriptError(name, None, "empty file")
    extension = Path(name).suffix.lower()
    body = decode_text(data, name)
    if not body.strip():
        raise TranscriptError(name, None, "file holds only whitespace")
    fmt, parsed = _read_segments(body, name, extension)
    segments = [replace(s, index=i, start=_ms(s.start), end=_ms(s.end)) for i, s in enumerate(parsed.segments)]
    if not any(s.text.strip() for s in segments):
        raise TranscriptError(name, fmt, "no non-empty segment: nothing to enrich")
    check_limits(segments, name, fmt, limits)
    return Transcript(
        id=Path(name).stem,
        source_file=name,
        format=fmt,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        segments=segments,
        language=parsed.language,
    )


def parse(path: str | Path, limits: InputLimits = InputLimits(), name: str | None = None) -> Transcript:
    """Read one transcript file. Never modifies it. What is wrong with it (its content, its size, not a regular
    file) raises TranscriptError, naming the file and the problem (permanent: reading it again will not help);
    an OSError while reading it (EIO on a network mount, a file gone) propagates as it is, to be retried. `name`
    is how the file is called in errors and in the transcript (its path relative to the inbox, shown
    printable), its own name by default."""
    path = Path(path)
    name = name or shown(path.name)
    return parse_bytes(read_input(path, limits.max_bytes, name), name, limits)
