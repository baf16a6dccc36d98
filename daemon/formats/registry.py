"""Every input format, declared once: its name (the output's `source.format`), the extensions its files come with
(queue.extensions' default is all of them), its reader, and for JSON how its shape is recognised.

A new format is one entry here; tests/test_formats.py fails until the output schema's format enum names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from daemon.formats import aws, rev, srt, text, vtt, whisper, whisper_cpp
from daemon.formats.common import ParsedSegments


@dataclass(frozen=True)
class Format:
    name: str
    extensions: tuple[str, ...]
    read: Callable[[Any, str], ParsedSegments]  # (parsed JSON or the text, the file's name) -> segments
    matches: Callable[[Any], bool] | None = None  # JSON formats: whether a parsed document has this shape


# JSON formats first, in the order their shapes are tried (the first that matches wins); then the text formats.
FORMATS: tuple[Format, ...] = (
    Format(rev.FORMAT, (".json",), rev.read, rev.matches),
    Format(aws.FORMAT, (".json",), aws.read, aws.matches),
    Format(whisper_cpp.FORMAT, (".json",), whisper_cpp.read, whisper_cpp.matches),
    Format(whisper.WHISPERX, (".json",), whisper.read, whisper.matches_whisperx),
    Format(whisper.WHISPER, (".json",), whisper.read, whisper.matches),
    Format(srt.FORMAT, (".srt",), srt.read),
    Format(vtt.FORMAT, (".vtt",), vtt.read),
    Format(text.FORMAT, (".txt",), text.read),
)
JSON_FORMATS = tuple(f for f in FORMATS if f.matches is not None)
TEXT_FORMATS = {f.name: f for f in FORMATS if f.matches is None}
EXTENSION_FORMATS = {extension: f.name for f in TEXT_FORMATS.values() for extension in f.extensions}
EXTENSIONS = tuple(dict.fromkeys(extension for f in FORMATS for extension in f.extensions))
