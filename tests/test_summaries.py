"""The measurement of what people read: fact sheets, structural checks and ROUGE on crafted outputs."""

from __future__ import annotations

from typing import Any

from daemon.evidence import numbers
from daemon.tools.summaries import Sheet, invented, read_sheets, rouge, score_outputs


def output(title: str, summary: str | None, bullets: list[str], lines: list[str]) -> dict[str, Any]:
    return {"language": "fr", "metadata": {"title": title, "summary": summary, "bullet_points": bullets},
            "segments": [{"speaker": None, "original_text": line} for line in lines]}


CALL = ["bonjour docteur LAKHLIFI du SAMU, vous appelez pour votre fils de neuf mois qui ne respire pas ?",
        "oui ma femme elle bosse", "on envoie le SMUR, appuyez sur son thorax"]
SHEET = Sheet(caller=["père", "papa"], facts=[["9 mois", "neuf mois"], ["respire pas"], ["smur", "secours"]],
              never=["mère"])


def test_a_faithful_output_scores_every_fact_and_no_fault():
    good = output("Nourrisson de 9 mois qui ne respire pas", "Appel du père d'un bébé de neuf mois qui ne respire pas ; "
                  "le docteur Lakhlifi envoie le SMUR.", ["Bébé de 9 mois inconscient", "Massage cardiaque guidé"], CALL)
    report = score_outputs({"msn": good}, {"msn": SHEET}, {})
    assert report["fact_sheets"] == {"calls": 1, "caller_right": 1, "facts": 3, "facts_stated": 3,
                                     "contradicting_calls": 0, "facts_stated_share": 1.0}
    assert report["structure"]["narrating_bullets"] == 0 and report["structure"]["invented"] == 0


def test_an_inverted_narrating_inventing_output_is_caught_on_each_count():
    bad = output("Appel", "Le docteur Lakhlifi appelle la mère pour son fils de 10 mois.",
                 ["L'appel commence par « allo »", "Client répond avec « oui »", "Rendez-vous à Lyon"], CALL)
    report = score_outputs({"msn": bad}, {"msn": SHEET}, {})
    sheet, found = report["fact_sheets"], report["files"]["msn"]
    assert sheet["caller_right"] == 0 and sheet["contradicting_calls"] == 1 and sheet["facts_stated"] == 0
    assert "mère" in found["contradictions"] and any("appelle" in c for c in found["contradictions"])
    assert len(found["narrating"]) == 2 and set(found["invented"]) == {"10", "Lyon"}


def test_numbers_in_words_count_as_stated_and_rouge_keeps_accents():
    assert {86, 28, 14} <= numbers("quatre-vingt-six ans, vingt huit ans et quatorze ans")
    assert invented("Une fille de 14 ans", "ma fille de quatorze ans") == []
    assert invented("Voisin malade", "il a le covid", title="COVID-19 chez un voisin") == []
    assert invented("Motif : Brûlure au bras, vue par Lyon", "il s'est brûlé le bras") == ["Lyon"]
    # a name the transcript misspells is the same name with or without its final s, never another one
    assert invented("They talk about Bill Gates' home.", "have you seen Bill Gate's home?") == []
    assert invented("They talk about Bill Gates' home in Seattle.", "have you seen Bill Gate's home?") == ["Seattle"]
    # the call record's reading of a text: a name after an honorific's dot is inside its sentence, a time is one
    # number held when the call says each of its parts, and an honorific is no name
    assert invented("Vu par le Dr. Martin à 3:30.", "le docteur Dupont passe à trois heures trente") == ["Martin"]
    assert invented("Rendez-vous à 14h45 avec Mme Roux", "à quatorze heures chez madame Roux") == ["14h45"]
    assert rouge("la fièvre est élevée", "la fièvre est élevée")["rougeL"] == 1.0
    assert rouge("la fievre", "la fièvre")["rouge1"] == 0.5


def test_the_packaged_fact_sheets_cover_the_31_calls():
    sheets = read_sheets("simsamu")
    assert len(sheets) == 31 and all(s.caller and len(s.facts) >= 3 for s in sheets.values())


def test_the_spread_of_repeated_runs_is_each_figure_s_range_and_mean():
    from daemon.tools.bench import spread

    runs = [{"fields_null": 3, "fact_sheets": {"caller_right": 25, "facts_stated": 80, "contradicting_calls": 0},
             "structure": {"null_summaries": 0, "narrating_bullets": 0, "invented": 0}},
            {"fields_null": 1, "fact_sheets": {"caller_right": 24, "facts_stated": 85, "contradicting_calls": 1},
             "structure": {"null_summaries": 0, "narrating_bullets": 0, "invented": 0}}]
    found = spread(runs)
    assert found["facts_stated"] == {"min": 80, "mean": 82.5, "max": 85}
    assert found["caller_right"] == {"min": 24, "mean": 24.5, "max": 25} and found["fields_null"]["max"] == 3
    assert "rougeL" not in found  # no run has references: no ROUGE to spread
