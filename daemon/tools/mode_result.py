"""What one bench mode measured on a corpus: the figures every report row has, and the ratio of two of them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from daemon.engine import EngineStats


@dataclass
class ModeResult:
    mode: str
    transcripts: int
    wall_seconds: float
    tokens: EngineStats = field(default_factory=EngineStats)
    peak_rss_mb: float = 0.0
    outputs_valid: int = 0
    fields_null: int = 0
    segments_rejected: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    dispatch_seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    against_reference: dict[str, Any] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        data = asdict(self)
        del data["tokens"]
        data.update({f"{key}_tokens": count for key, count in self.tokens.tokens().items()})
        per_second = (lambda n: round(n / self.wall_seconds, 2) if self.wall_seconds else None)
        data["transcripts_per_hour"] = per_second(self.transcripts * 3600)
        data["generated_tokens_per_second"] = per_second(self.tokens.generated_tokens)
        data["evaluated_tokens_per_second"] = per_second(self.tokens.evaluated_tokens)
        return data


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None
