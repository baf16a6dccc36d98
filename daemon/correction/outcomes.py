"""What correction says about each segment, whichever corrector produced it."""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from daemon.config import CorrectionConfig
from daemon.text import WORD
from daemon.transcript import Segment

CORRECTED, UNCHANGED, REJECTED, SKIPPED, EMPTY = "corrected", "unchanged", "rejected", "skipped", "empty"
STATUSES = (CORRECTED, UNCHANGED, REJECTED, SKIPPED, EMPTY)


@dataclass(frozen=True)
class Change:
    """One word replaced: its position among the segment's words, what was written, what is kept.

    `gain` is how many nats more likely the model found the call with the change (scoring only)."""

    word: int
    source: str
    target: str
    rule: str
    gain: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"word": self.word, "from": self.source, "to": self.target, "rule": self.rule,
                "gain": None if self.gain is None else round(self.gain, 2)}


@dataclass
class SegmentCorrection:
    text: str
    status: str
    reason: str | None = None
    changes: tuple[Change, ...] = ()


@dataclass
class CorrectionStats:
    model_calls: int = 0
    batches: int = 0
    batch_splits: int = 0
    gated: int = 0
    candidates: int = 0
    pruned: int = 0
    branches: int = 0
    settled: int = 0  # times the scorer's reading went back to read corrected lines again (score.py)
    counts: Counter[str] = field(default_factory=Counter)
    rejections: list[dict[str, object]] = field(default_factory=list)

    def record(self, outcomes: list[SegmentCorrection]) -> None:
        for i, outcome in enumerate(outcomes):
            self.counts[outcome.status] += 1
            if outcome.status == REJECTED:
                self.rejections.append({"index": i, "reason": outcome.reason})


def word_changes(before: str, after: str, rule: str) -> tuple[Change, ...]:
    """The words a rewrite replaced, as changes without a gain (punctuation alone is not a word change)."""
    old, new = WORD.findall(before), WORD.findall(after)
    matcher = difflib.SequenceMatcher(None, [w.lower() for w in old], [w.lower() for w in new], autojunk=False)
    return tuple(Change(i1, " ".join(old[i1:i2]), " ".join(new[j1:j2]), rule)
                 for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal")


def settled_without_model(segment: Segment, config: CorrectionConfig) -> SegmentCorrection | None:
    """The outcome of a segment no corrector looks at: empty, correction off, or the ASR already sure of it."""
    threshold = config.skip_confidence
    if not segment.text.strip():
        return SegmentCorrection(segment.text, EMPTY)
    if not config.enabled:
        return SegmentCorrection(segment.text, SKIPPED, "correction disabled")
    if threshold is not None and segment.confidence is not None and segment.confidence >= threshold:
        return SegmentCorrection(segment.text, SKIPPED, f"ASR confidence {segment.confidence:.2f}")
    return None
