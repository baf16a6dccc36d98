"""Bytes to text: the encodings speech-to-text tools and Windows editors actually write."""

from __future__ import annotations

import codecs

from daemon.errors import TranscriptError


def decode_text(data: bytes, file: str, fmt: str | None = None) -> str:
    """UTF-8 (BOM or not), UTF-16 with BOM, else cp1252 then latin-1; line endings folded to LF."""
    if data.startswith(codecs.BOM_UTF8):
        text = data[len(codecs.BOM_UTF8):].decode("utf-8", errors="replace")
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise TranscriptError(file, fmt, f"invalid UTF-16 at byte {exc.start}") from exc
    else:
        if b"\x00" in data:
            raise TranscriptError(file, fmt, "binary data (NUL bytes), not a text transcript")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\n\r\t\f")
    if controls > max(8, len(text) // 100):
        raise TranscriptError(file, fmt, f"binary data ({controls} control characters), not a text transcript")
    return text.replace("\r\n", "\n").replace("\r", "\n")
