"""Who called, judged rather than written: the summary's opening ("Appel d'une sœur pour son frère").

A 1.5B model asked to write who called names the first person of the transcript, which is the agent ("Appel de
Madame LAKHLIFI", the doctor), or inverts the relation ("pour sa mère" read as "la mère appelle"). Asked instead
for whom the caller calls, among a closed list of relations, it is right far more often; the caller is that
relation's converse, made a woman's or a man's word by how the agent addresses the caller ("madame" /
"monsieur"), and left neutral ("un parent", "un proche") when the transcript does not say. The relations and
forms of address are texts of the prompt set (prompts.py), so a deployment can give its own (a customer
service's "son contrat | une cliente | un client | un client"); a language without them gets no opening.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.text import words


@dataclass(frozen=True)
class Relation:
    """For whom the caller calls, and the caller it makes: a woman's word, a man's, and one for either."""

    concerned: str
    woman: str
    man: str
    either: str


def relations(listed: str) -> tuple[Relation, ...]:
    """The prompt set's `relations`: "concerned | woman | man | either" rows separated by ";"."""
    rows = [row.split("|") for row in listed.split(";") if row.strip()]
    return tuple(Relation(*(part.strip() for part in row)) for row in rows if len(row) == 4)


SELF = {"elle-même": "lui-même", "lui-même": "elle-même", "herself": "himself", "himself": "herself"}


def addressed_as(dialogue: str, women: str, men: str) -> str | None:
    """"woman" or "man" when the transcript uses one form of address (the prompt set's comma lists) more often
    than the other, else None."""
    tokens = words(dialogue)
    heard = [sum(token in forms for token in tokens) for forms in (set(words(women)), set(words(men)))]
    return None if heard[0] == heard[1] else "woman" if heard[0] > heard[1] else "man"


def opening(relation: Relation, sex: str | None, frame: str) -> str:
    """The summary's first words: `frame` ("Appel de {caller} pour {concerned}") filled in ("Appel de une sœur
    pour son frère"; French elision is the writer's)."""
    caller = relation.woman if sex == "woman" else relation.man if sex == "man" else relation.either
    concerned = relation.concerned
    if concerned in SELF and (sex == "woman") != (concerned in ("elle-même", "herself")):
        concerned = SELF[concerned]
    return frame.format(caller=caller, concerned=concerned)
