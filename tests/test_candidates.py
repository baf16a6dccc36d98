"""Confusion sets as data, and the candidate edits they give for a segment."""

from __future__ import annotations

import pytest

from daemon.correction.candidates import candidates, load_sets
from daemon.errors import ConfigError

FR = load_sets("fr")
EN = load_sets("en")


def targets(text: str, sets=FR) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for edit in candidates(text, sets):
        found.setdefault(edit.source, set()).add(edit.target)
    return found


@pytest.mark.parametrize("text, word, expected", [
    ("il a mal", "a", {"à", "as"}),
    ("il et malade", "et", {"est"}),
    ("tu viens ou pas", "ou", {"où"}),
    ("ils on fini", "on", {"ont"}),
    ("ce sont mes enfants", "sont", {"son"}),
    ("ça va", "ça", {"sa"}),
    ("c'est grave", "c'est", {"s'est", "ces", "ses"}),
    ("elle la voit", "la", {"là", "l'a"}),
    ("je veux qu'elle vienne", "qu'elle", {"quel", "quelle", "quels", "quelles", "qu'elles"}),
    ("il n'y a rien", "n'y", {"ni"}),
    ("il peut venir", "peut", {"peu", "peux"}),
])
def test_word_sets_give_every_other_spelling(text, word, expected):
    assert expected <= targets(text)[word]


@pytest.mark.parametrize("text, word, expected", [
    ("il faut appeler", "appeler", {"appelé", "appelez", "appelée", "appelés", "appelées"}),
    ("il est tombé", "tombé", {"tomber", "tombez", "tombée"}),
    ("il respirait mal", "respirait", {"respirais", "respirai", "respiraient"}),
])
def test_endings_swap_within_their_group(text, word, expected):
    assert expected <= targets(text)[word]


@pytest.mark.parametrize("text, word, expected", [
    ("les enfant dorment", "enfant", {"enfants"}),
    ("le enfants dort", "enfants", {"enfant"}),
    ("des bateau", "bateau", {"bateaux"}),
])
def test_plural_marks_follow_a_determiner(text, word, expected):
    assert expected <= targets(text)[word]


def test_plural_needs_a_determiner_and_short_words_have_no_ending_swaps():
    found = targets("enfant mal ému")
    assert "enfants" not in found.get("enfant", set())
    assert "mal" not in found and "ému" not in found


@pytest.mark.parametrize("text, word, expected", [
    ("their going home", "their", {"there", "they're"}),
    ("its raining", "its", {"it's"}),
    ("I want to", "to", {"too", "two"}),
    ("better then before", "then", {"than"}),
    ("I no him", "no", {"know"}),
])
def test_english_calls_get_english_sets(text, word, expected):
    assert expected <= targets(text, EN)[word]
    assert not targets("il a mal", EN)


def test_an_edit_keeps_case_apostrophe_and_punctuation():
    text = "Et alors, C’est fini. OU PAS ?"

    def applied(target: str) -> str:
        return next(e for e in candidates(text, FR) if e.target == target).apply(text)

    assert applied("Est") == "Est alors, C’est fini. OU PAS ?"
    assert applied("S’est") == "Et alors, S’est fini. OU PAS ?"
    assert applied("OÙ") == "Et alors, C’est fini. OÙ PAS ?"


def test_extra_files_and_margins_from_configuration(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("words:\n  local:\n    - [Dupont, Dupond]\nmargins:\n  local: 6\n")
    sets = load_sets("fr", (str(extra),), (("a->à", 1.5),))
    edit = next(e for e in candidates("monsieur Dupont", sets) if e.target == "Dupond")
    assert edit.kind == "local" and sets.margin(edit) == 6.0
    assert sets.margin(next(e for e in candidates("il a", sets) if e.target == "à")) == 1.5
    assert sets.margin(next(e for e in candidates("il et", sets) if e.target == "est")) == FR.margins["homophone"]
    assert sets.margin(next(e for e in candidates("monsieur Dupond", sets) if e.target == "Dupont")) == 6.0
    assert sets.digest != FR.digest


def test_a_broken_set_names_its_file_and_group(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("words:\n  local:\n    - [seul]\n")
    with pytest.raises(ConfigError) as caught:
        load_sets("fr", (str(bad),))
    assert "bad.yaml" in str(caught.value) and "['seul']" in str(caught.value)


def test_a_word_said_twice_in_a_row_is_left_alone():
    assert "aux" not in targets("emmenez le aux aux urgences")
    assert "où" not in targets("heu où où elle est")
    assert "ses" not in targets("en dehors de ses s- s- ses crises")
    assert "est" in targets("il est est-ce que")  # "est-ce" is another word
    assert targets("le le") == {}
