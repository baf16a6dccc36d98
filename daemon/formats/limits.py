"""What one input may hold: the limits every reader is held to (queue.max_* in the configuration)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_INPUT_BYTES = 20_000_000


@dataclass(frozen=True)
class InputLimits:
    """What one input may hold; past any of these it fails at once with the limit named (never retried)."""

    max_bytes: int = MAX_INPUT_BYTES
    max_segments: int = 20_000
    max_segment_chars: int = 20_000
    max_seconds: float = 86_400.0
