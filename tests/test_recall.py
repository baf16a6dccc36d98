"""The error-injection study behind `enrichd bench --modes recall`: what it injects and how it scores a fix."""

from __future__ import annotations

import random

from daemon.correction import WORD
from daemon.formats import parse
from daemon.recall import SWAPS, inject_errors, restored
from tests.conftest import SIMSAMU


def test_injection_swaps_one_homophone_per_chosen_segment_and_is_reproducible():
    segments = parse(SIMSAMU / "dj_2022_msn.json").segments
    first, injections = inject_errors(segments, 0.5, random.Random(7))
    again, same = inject_errors(segments, 0.5, random.Random(7))
    assert injections and injections == same and [s.text for s in first] == [s.text for s in again]
    changed = {i for i, (a, b) in enumerate(zip(segments, first)) if a.text != b.text}
    assert changed == {j.segment for j in injections}
    for j in injections:
        before = [w.lower() for w in WORD.findall(segments[j.segment].text)]
        after = [w.lower() for w in WORD.findall(first[j.segment].text)]
        assert SWAPS[j.right] == j.wrong and before[j.word] == j.right and after[j.word] == j.wrong
        assert [w for k, w in enumerate(after) if k != j.word] == [w for k, w in enumerate(before) if k != j.word]
        assert restored(segments[j.segment].text, j) and not restored(first[j.segment].text, j)
