"""Which of a line's candidate edits are kept, from the gains the scoring pass measured (score.py).

Per word, the best candidate that beats the margin of its kind, its changed word itself more likely than the
written one (`first_token_margin`). With several such words, each is added only if the line with it beats the
line without it by its margin, scored jointly (one more branch, asked of the pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from daemon.correction.candidates import ConfusionSets, Edit
from daemon.correction.outcomes import CORRECTED, UNCHANGED, Change, SegmentCorrection


@dataclass(frozen=True)
class Judgement:
    """One candidate as the model judged it (for studies): the gain of its first token, and of its whole span
    (None when pruned)."""

    position: int
    edit: Edit
    first_gain: float
    gain: float | None


@dataclass(frozen=True)
class Scored:
    """A candidate's edits with the gains the pass measured: of its first changed token, and of its whole span
    (None when it was pruned before a branch)."""

    edits: tuple[Edit, ...]
    first_gain: float
    gain: float | None


def judge_line(text: str, position: int, scored: list[Scored], sets: ConfusionSets, first_token_margin: float | None,
               joint_gain: Callable[[tuple[Edit, ...]], float | None],
               trace: list[Judgement] | None = None) -> SegmentCorrection:
    """The line's correction: `joint_gain(edits)` is the gain of the line with all of `edits`, or None when it
    cannot be scored."""
    best: dict[int, tuple[float, tuple[Edit, ...]]] = {}
    for candidate in scored:
        edit = candidate.edits[0]
        if trace is not None:
            trace.append(Judgement(position, edit, candidate.first_gain, candidate.gain))
        gain = candidate.gain
        if gain is None or gain <= sets.margin(edit) or (first_token_margin is not None
                                                          and candidate.first_gain <= first_token_margin):
            continue
        if gain > best.get(edit.word, (float("-inf"), ()))[0]:
            best[edit.word] = (gain, candidate.edits)
    if not best:
        return SegmentCorrection(text, UNCHANGED)
    ranked = sorted(best.values(), key=lambda pair: -pair[0])
    gain, current = ranked[0]
    changes = [_change(current[0], gain)]
    for _, other in ranked[1:]:
        together = joint_gain(current + other)
        if together is not None and together - gain > sets.margin(other[0]):
            changes.append(_change(other[0], together - gain))
            gain, current = together, current + other
    for edit in sorted(current, key=lambda e: -e.start):
        text = edit.apply(text)
    return SegmentCorrection(text, CORRECTED, changes=tuple(sorted(changes, key=lambda c: c.word)))


def _change(edit: Edit, gain: float) -> Change:
    return Change(edit.word, edit.source, edit.target, edit.kind, gain)
