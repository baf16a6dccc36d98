"""The satisfaction score as read from the model's probabilities for the answers 1 to 5: their expectation,
rounded or placed among a deployment's calibrated thresholds."""

from __future__ import annotations

import math
from dataclasses import dataclass



@dataclass(frozen=True)
class Satisfaction:
    """The model's probabilities for the answers 1..5, and what the output reports of them."""

    probabilities: tuple[float, ...]

    @classmethod
    def of(cls, logprobs: list[float]) -> "Satisfaction":
        return cls(normalised(logprobs))

    @property
    def expected(self) -> float:
        return sum(p * score for score, p in enumerate(self.probabilities, start=1))

    @property
    def confidence(self) -> float:
        return max(self.probabilities)

    def score(self, thresholds: tuple[float, ...] | None = None) -> int:
        return score_of(self.expected, thresholds)


def normalised(logprobs: list[float]) -> tuple[float, ...]:
    """Log-likelihoods of a set of answers as probabilities over that set."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    return tuple(w / sum(weights) for w in weights)


def score_of(expected: float, thresholds: tuple[float, ...] | None = None) -> int:
    """The expectation rounded, or placed among a deployment's calibrated thresholds."""
    if thresholds:
        return 1 + sum(expected >= t for t in thresholds)
    return min(5, max(1, math.floor(expected + 0.5)))
