"""Small pieces every format reader shares."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from daemon.errors import TranscriptError
from daemon.transcript import Segment

SPEAKER_PREFIX = re.compile(r"^\s*(?:\[(?P<tag>[^\]\n]{1,40})\]|(?P<name>[A-Z][\w.'-]*(?: [\w.'-]+){0,2}))\s*:\s+")
NO_SPACE_BEFORE = set(".,!?;:)]}%…")


@dataclass
class ParsedSegments:
    segments: list[Segment] = field(default_factory=list)
    language: str | None = None


def split_speaker(line: str) -> tuple[str | None, str]:
    """`[SPEAKER_00]: hello` or `Agent: hello` -> (speaker, text); otherwise (None, line)."""
    match = SPEAKER_PREFIX.match(line)
    if not match:
        return None, line.strip()
    return (match.group("tag") or match.group("name")).strip(), line[match.end():].strip()


def join_tokens(tokens: Iterable[str]) -> str:
    """Words with spaces, punctuation glued to the word before it (as the tools print it)."""
    out = ""
    for token in tokens:
        token = token.strip()
        if not token:
            continue
        if out and token[0] not in NO_SPACE_BEFORE and not out.endswith(("'", "’")):
            out += " "
        out += token
    return out


def mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return sum(present) / len(present) if present else None


def unit_interval(value: float | None) -> float | None:
    return None if value is None else min(1.0, max(0.0, float(value)))


def described(value: Any) -> str:
    """What a bad value is, for an error, without quoting it: the transcript's content stays out of logs."""
    size = f" of {len(value):,} characters" if isinstance(value, str) else ""
    return f"a {type(value).__name__}{size}"


def number(value: Any, file: str, fmt: str, what: str) -> float | None:
    """A time or score that may be a number, a numeric string (AWS) or absent."""
    if value is None or value == "":
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise TranscriptError(file, fmt, f"{what}: not a number ({described(value)})") from None
    if math.isnan(result) or math.isinf(result):
        raise TranscriptError(file, fmt, f"{what}: not a finite number")
    return result


def require_list(doc: Any, key: str, file: str, fmt: str) -> list[Any]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise TranscriptError(file, fmt, f"'{key}' must be a list, got {type(value).__name__}")
    return value


def require_dict(item: Any, where: str, file: str, fmt: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise TranscriptError(file, fmt, f"{where}: expected an object, got {type(item).__name__}")
    return item
