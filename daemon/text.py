"""Words and sentences, as the corrector, the metadata validators and the studies count them; and what tells a turn
of a dialogue instead of a fact of the call."""

from __future__ import annotations

import re

WORD = re.compile(r"[\w'’-]+")
ABBREVIATED_HONORIFICS = ("Mr", "Mrs", "Ms", "Dr", "M")  # written with a dot that ends no sentence
HONORIFICS = {h.lower() for h in ABBREVIATED_HONORIFICS} | {"mme", "mlle", "madame", "monsieur", "docteur"}
_NOT_AFTER_HONORIFIC = "".join(rf"(?<!\b{h}\.)" for h in ABBREVIATED_HONORIFICS)
# a sentence ends at . ! ?, but not at an honorific's dot ("Dr. Martin", "M. Dupont")
SENTENCE_END = re.compile(_NOT_AFTER_HONORIFIC + r"(?<=[.!?])\s+")
# ... and at a label's colon, a semicolon or a line break: the word after "Motif :" opens a sentence too
CLAUSE_END = re.compile(_NOT_AFTER_HONORIFIC + r"(?<=[.!?:;])\s+|\n")


# a hesitation the model copied from the transcript: "Envoyer un heu les secours"
FILLER = re.compile(r"(?<![\w'’-])(?:euh+|heu+|hum+|hmm+|mmh+|uh+|um+|uhm+|erm)(?![\w'’-])\s*,?", re.IGNORECASE)


def without_fillers(text: str) -> str:
    """`text` without the hesitations a transcript holds and an answer has no use for."""
    return " ".join(FILLER.sub(" ", text).split())


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def sentences(text: str) -> list[str]:
    return SENTENCE_END.split(text)


# a speaker's label standing alone before a colon: "Agent", "le médecin", "Client 2", "SPEAKER_01", "#Person1#"
ROLE_LABEL = re.compile(r"#?(?:l'|le |la |the )?(?:agent|client|appelant|médecin|medecin|docteur|patient|opérateur|"
                        r"conseiller|caller|doctor|operator|customer|speaker|person)e?s?[\s_#-]*\d*#?", re.IGNORECASE)
# a bullet that tells the dialogue instead of the call: a turn introduced, the call's opening, a quoted turn
NARRATION = (
    re.compile(r"\b(?:l'appel|la conversation|le dialogue|the call|the conversation)\s+(?:commence|débute|se termine|"
               r"s'achève|finit|starts|begins|ends|opens)\b", re.IGNORECASE),
    re.compile(r"\b(?:répond|dit|déclare|demande|commence par dire|replies|answers|says|asks)\b[^.]{0,25}[«\"“]",
               re.IGNORECASE),
    re.compile(r"[«\"“][^»\"”]{0,40}\b(?:bonjour|allo|allô|hello|au revoir|goodbye)\b", re.IGNORECASE),
)


def narrates(item: str, speakers: frozenset[str] = frozenset()) -> bool:
    """A bullet that tells a turn of the dialogue (begins with a speaker's label or a role's, quotes a turn, says how
    the call opens) instead of a fact of the call. `speakers`: the transcript's own labels, lowercased."""
    label, colon, _ = item.partition(":")
    head = label.strip().lower()
    if colon and (head in speakers or ROLE_LABEL.fullmatch(head)):
        return True
    return any(pattern.search(item) for pattern in NARRATION)
