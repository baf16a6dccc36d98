"""The call record: fields sorted from labelled bullets, the resolution judged, entities found in a segment."""

from typing import Sequence

from daemon.config import MetadataConfig
from daemon.metadata import MetadataResult, MetadataWriter
from daemon.prompts import DEFAULTS, Prompts
from daemon.record import RESOLUTIONS, call_record, entities, labels, sorted_bullets
from tests.fakes import FakeEngine
from tests.test_metadata import DIALOGUE, QUICK, small_engine

FR = Prompts(**DEFAULTS["fr"])
LINES = [(0, "bonjour je suis le docteur du SAMU, vous appelez pour votre fils c'est ça ?"),
         (2, "il a trois ans, il a 39 de fièvre depuis hier soir"),
         (5, "d'accord je vous envoie le docteur Martin dans l'heure, au 12 rue Pasteur")]


def test_labelled_bullets_fill_reason_actions_and_next_steps_whatever_their_case_or_accents():
    bullets = ["Un fait avant toute étiquette", "Motif : enfant de trois ans fiévreux", "État : 39 de fièvre",
               "un fait sous l'état", "DÉCISION : médecin envoyé", "decision: rappeler si ça s'aggrave",
               "Conseils : le faire boire", "le surveiller cette nuit", "rappeler le 15 : si ça empire, sans attendre"]
    found = sorted_bullets(bullets, labels(FR.record_labels))
    assert found == {"reason": ["Enfant de trois ans fiévreux"],
                     "actions": ["Médecin envoyé", "Rappeler si ça s'aggrave"],
                     "next_steps": ["Le faire boire", "Le surveiller cette nuit",
                                    "Rappeler le 15 : si ça empire, sans attendre"]}
    assert sorted_bullets(None, labels(FR.record_labels)) == {"reason": [], "actions": [], "next_steps": []}


def test_entities_are_the_written_numbers_and_names_the_transcript_holds_with_their_segment():
    written = ["Fièvre à 39 chez un enfant", "Appel d'une mère : le docteur Martin passe au 12 rue Pasteur ; "
               "le docteur Dupont et le 15 sont prévenus, avec M. Martin et le SAMU"]
    assert entities("Enfant Fiévreux Vu Par Le SAMU", written, LINES) == [
        {"text": "39", "kind": "number", "segment": 2}, {"text": "12", "kind": "number", "segment": 5},
        {"text": "Martin", "kind": "name", "segment": 5}, {"text": "Pasteur", "kind": "name", "segment": 5},
        {"text": "SAMU", "kind": "name", "segment": 0}]
    # "Fièvre" and "Appel" open their sentence, "M." is an honorific, "Fiévreux" and "Vu" are a title's Title
    # Case; "Dupont" and "15" are not in the call: left out
    assert entities(None, ["The doctor sees Mr. White", "Legs and arms"], [(0, "mr white"), (1, "legs")]) == []


def test_the_record_of_a_call():
    values = {"title": "Enfant fiévreux", "summary": "Appel d'une mère pour son fils ; le docteur Martin passe.",
              "bullets": ["Motif : fièvre à 39", "Décision : visite du docteur Martin", "Conseils : le faire boire"],
              "resolution": {"value": "resolved", "confidence": 0.8,
                             "probabilities": {"resolved": 0.8, "partly": 0.15, "unresolved": 0.05}}}
    record = call_record(values, FR.record_labels, LINES)
    assert record["reason"] == "Fièvre à 39" and record["actions"] == ["Visite du docteur Martin"]
    assert record["next_steps"] == ["Le faire boire"] and record["resolution"]["value"] == "resolved"
    assert [e["text"] for e in record["entities"]] == ["Martin", "39"]  # the title is read last
    empty = call_record({"title": None, "summary": None, "bullets": None, "resolution": None}, FR.record_labels, LINES)
    assert empty == {"reason": None, "actions": [], "resolution": None, "next_steps": [], "entities": []}


def test_the_resolution_is_read_from_the_probabilities_of_the_prompt_sets_three_answers():
    class Judging(FakeEngine):
        def choose(self, prompt: str, options: Sequence[str]) -> list[float]:
            if prompt.endswith(FR.resolution_answer):
                assert list(options) == ["résolue", "en partie", "non résolue"]
                assert FR.resolution_question in prompt and "<transcription>" in prompt
                return [-3.0, -0.2, -2.0]
            return super().choose(prompt, options)

    value = MetadataWriter(Judging(), MetadataConfig(), FR).write(DIALOGUE).values["resolution"]
    assert value["value"] == "partly" and value["confidence"] == max(value["probabilities"].values())
    assert abs(sum(value["probabilities"].values()) - 1) < 0.01


def test_the_test_model_reads_a_resolution():
    writer = MetadataWriter(small_engine(2048), QUICK, FR)
    result = MetadataResult({}, {})
    value = writer.resolution(writer.context(DIALOGUE, result), result)
    assert value["value"] in RESOLUTIONS and abs(sum(value["probabilities"].values()) - 1) < 0.01
