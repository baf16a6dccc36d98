"""File names as the file system has them: bytes, not text.

A name read from the inbox is a `str` in Python's surrogateescape form (os.fsdecode), so a latin-1 name from
an SMB share (`caf\\xe9.srt`) round-trips exactly to its bytes. Three views of one name:
- `name_key`: the bytes, for keys that must be lossless (the ledger, quarantine notes);
- `shown`: printable text for logs, records, status, metrics labels and the output's `source.file`: bytes that
  are not UTF-8 as `\\xe9`, control characters (a newline would forge a log line) as `\\n`, `\\x1b`...;
- `fitted`: a derived name (`<stem>.enriched.json`, `<name>.error.json`, `.<name>.tmp`) cut to fit the
  file system's 255-byte limit, with a hash of the whole name so that two long names never share one.
"""

from __future__ import annotations

import hashlib
import os

NAME_MAX = 255
# what write_atomic adds around a final name: "." before, ".tmp" after
TEMPORARY_BYTES = len(".") + len(".tmp")
HASH_CHARS = 12
ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def name_key(name: str) -> bytes:
    """The name's bytes exactly as on disk."""
    return os.fsencode(name)


def shown(name: str) -> str:
    """The name as printable UTF-8 text: never raises, never spans two lines, never hides a byte."""
    try:
        text = os.fsencode(name).decode("utf-8", errors="backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file system name decodes to
        text = encodable(name)
    out = []
    for ch in text:
        if ch in ESCAPES:
            out.append(ESCAPES[ch])
        elif ord(ch) < 32 or ord(ch) == 127 or 0x80 <= ord(ch) < 0xA0 or ch in "\u2028\u2029":
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def encodable(text: str) -> str:
    """`text` with any lone surrogate written as `\\udce9`: UTF-8 files, SQLite and JSON take it as it is."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def fitted(stem: str, suffix: str, reserve: int = TEMPORARY_BYTES) -> str:
    """`stem + suffix` when it fits in NAME_MAX bytes with `reserve` bytes to spare; else the stem cut at a
    character boundary, `~`, the first HASH_CHARS hex digits of the whole stem's sha256, then the suffix."""
    stem_bytes, suffix_bytes = os.fsencode(stem), os.fsencode(suffix)
    if len(stem_bytes) + len(suffix_bytes) + reserve <= NAME_MAX:
        return stem + suffix
    digest = hashlib.sha256(stem_bytes).hexdigest()[:HASH_CHARS]
    room = NAME_MAX - reserve - len(suffix_bytes) - len(digest) - 1
    cut = stem_bytes[:max(0, room)]
    while cut and cut[-1] & 0xC0 == 0x80:  # never end inside a UTF-8 character: drop its continuation bytes
        cut = cut[:-1]
    if cut and cut[-1] >= 0xC0:  # and its lead byte
        cut = cut[:-1]
    return os.fsdecode(cut) + "~" + digest + suffix
