"""Correction of recognition errors, segment by segment; speaker, times and order never change.

`score` (the default): sound-alike spellings from confusion sets, judged by the model, kept when the
call reads more likely with them by a margin (score.py). `rewrite`: the model re-types batches of
lines, guarded (rewrite.py). `both`: scoring, then the rewrite of what scoring left.
"""

from __future__ import annotations

from dataclasses import replace

from daemon.correction.base import CorrectorBase
from daemon.correction.outcomes import CORRECTED, STATUSES, UNCHANGED, Change, CorrectionStats, SegmentCorrection
from daemon.correction.rewrite import Rewriter
from daemon.correction.score import ScoreCorrector, confusion_sets
from daemon.transcript import Segment

__all__ = ["Corrector", "SegmentCorrection", "CorrectionStats", "Change", "STATUSES", "confusion_sets"]


class Corrector(CorrectorBase):
    def correct(self, segments: list[Segment], language: str) -> list[SegmentCorrection]:
        mode = self.config.mode
        outcomes: list[SegmentCorrection] | None = None
        if mode in ("score", "both"):
            outcomes = ScoreCorrector(**{**self.parts(), "engine": self.scorer or self.engine}).correct(segments, language)
        if mode in ("rewrite", "both"):
            rewriter = Rewriter(**self.parts())
            if outcomes is None:
                outcomes = rewriter.correct(segments, language)
            else:
                scored = [replace(s, text=o.text) for s, o in zip(segments, outcomes)]
                outcomes = [_after_rewrite(first, second) for first, second in
                            zip(outcomes, rewriter.correct(scored, language))]
        assert outcomes is not None
        self.stats.record(outcomes)
        return outcomes


def _after_rewrite(scored: SegmentCorrection, rewritten: SegmentCorrection) -> SegmentCorrection:
    """One segment through both: the scored edits stand; the rewrite's, if any, come after them."""
    if rewritten.status == CORRECTED:
        return SegmentCorrection(rewritten.text, CORRECTED, changes=scored.changes + rewritten.changes)
    if scored.status == CORRECTED:
        return scored
    if scored.status == UNCHANGED:
        return rewritten
    return scored
