"""The error-injection study behind `enrichd bench --modes recall`: what it injects and how it counts."""

from __future__ import annotations

import random

from daemon.correction.candidates import load_sets, normal
from daemon.formats import parse
from daemon.text import WORD
from daemon.tools.recall import inject_errors, vocabulary, word_at, word_errors
from tests.conftest import SIMSAMU

SETS = load_sets("fr")


def test_injection_replaces_one_word_by_a_real_sound_alike_and_is_reproducible():
    segments = parse(SIMSAMU / "dj_2022_msn.json").segments
    words = vocabulary([s.text for s in segments], SETS)
    first, injections = inject_errors(segments, SETS, words, 0.5, random.Random(7))
    again, same = inject_errors(segments, SETS, words, 0.5, random.Random(7))
    assert len(injections) > 5 and injections == same and [s.text for s in first] == [s.text for s in again]
    changed = {i for i, (a, b) in enumerate(zip(segments, first)) if a.text != b.text}
    assert changed == {j.segment for j in injections}
    for j in injections:
        before = [normal(w) for w in WORD.findall(segments[j.segment].text)]
        after = [normal(w) for w in WORD.findall(first[j.segment].text)]
        assert before[j.word] == j.right and after[j.word] == j.wrong and j.wrong in words
        assert [w for k, w in enumerate(after) if k != j.word] == [w for k, w in enumerate(before) if k != j.word]
        assert word_at(segments[j.segment].text, j.word) == j.right
    assert len({j.kind for j in injections}) >= 2


def test_word_errors_count_substitutions_insertions_and_deletions_without_punctuation_or_case():
    assert word_errors("Il est là.", "il est là") == 0
    assert word_errors("il est là", "il et là") == 1
    assert word_errors("il est là", "il est") == 1
    assert word_errors("il est là", "oui il est là") == 1
