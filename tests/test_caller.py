"""Who called: the relations of a prompt set, the caller's sex by how they are addressed, the summary's opening."""

from __future__ import annotations

from daemon.caller import Relation, addressed_as, opening, relations
from daemon.answers import contracted
from daemon.prompts import DEFAULTS, Prompts

FR = Prompts(**DEFAULTS["fr"])


def test_the_french_relations_parse_and_a_malformed_row_is_left_out():
    parsed = relations(FR.relations)
    assert len(parsed) == FR.relations.count(";") + 1
    assert Relation("sa mère", "une fille", "un fils", "un enfant") in parsed
    assert relations("son contrat | une cliente | un client | un client; bad row | x;  ;") == \
        (Relation("son contrat", "une cliente", "un client", "un client"),)
    assert relations(Prompts(**DEFAULTS["en"]).relations) == ()


def test_the_caller_s_sex_is_the_form_of_address_heard_more_often_and_none_on_a_tie():
    women, men = FR.address_women, FR.address_men
    assert addressed_as("oui madame\nd'accord Madame, et monsieur votre mari ?", women, men) == "woman"
    assert addressed_as("MONSIEUR vous m'entendez ? oui madame", women, men) is None
    assert addressed_as("monsieur, écoutez", women, men) == "man"
    assert addressed_as("madame", "", "") is None


def test_the_opening_names_the_converse_of_the_relation_and_agrees_with_the_caller():
    sister = Relation("son frère", "une sœur", "un frère", "un proche")
    self_ = Relation("elle-même", "une patiente", "un patient", "un patient")
    frame = FR.summary_opening
    assert [contracted(opening(sister, sex, frame)) for sex in ("woman", "man", None)] == \
        ["Appel d'une sœur pour son frère", "Appel d'un frère pour son frère", "Appel d'un proche pour son frère"]
    assert [opening(self_, sex, frame) for sex in ("woman", "man", None)] == \
        ["Appel de une patiente pour elle-même", "Appel de un patient pour lui-même", "Appel de un patient pour lui-même"]
