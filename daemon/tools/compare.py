"""How far one run's titles, summaries, bullets and scores moved from another run's on the same files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daemon.text import words


def _word_overlap(a: str | None, b: str | None) -> float | None:
    """Jaccard overlap of the two texts' lowercased words: 1 the same words, 0 none in common."""
    if not a or not b:
        return None
    first, second = set(words(a)), set(words(b))
    return len(first & second) / len(first | second) if first | second else None


def compare_metadata(outbox: Path, reference: Path, names: list[str]) -> dict[str, Any]:
    """How far titles, summaries, bullet points and satisfaction moved from another run's outputs (same files)."""
    overlaps: dict[str, list[float]] = {"title": [], "summary": [], "bullet_points": []}
    same_score, compared = 0, 0
    for name in names:
        if not (reference / name).is_file():
            continue
        ours, theirs = (json.loads(p.read_text())["metadata"] or {} for p in (outbox / name, reference / name))
        compared += 1
        for key, values in overlaps.items():
            joined = [" ".join(v) if isinstance(v, list) else v for v in (ours.get(key), theirs.get(key))]
            overlap = _word_overlap(*joined)
            if overlap is not None:
                values.append(overlap)
        scores = [(m.get("satisfaction") or {}).get("score") for m in (ours, theirs)]
        same_score += scores[0] is not None and scores[0] == scores[1]
    return {"files": compared, "same_satisfaction_score": same_score,
            **{f"{key}_word_overlap": round(sum(v) / len(v), 3) if v else None for key, v in overlaps.items()}}
