"""What a written answer states that the transcript does not hold: a number in digits that the call never says (in
digits or in words, French or English), a name (a capitalised word inside a sentence) the call never uses. The
metadata validators drop or refuse such statements; the summaries study counts them by the same rule."""

from __future__ import annotations

import re
from dataclasses import dataclass

from daemon.text import words

UNITS = {"zéro": 0, "un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "six": 6, "sept": 7,
         "huit": 8, "neuf": 9, "dix": 10, "onze": 11, "douze": 12, "treize": 13, "quatorze": 14, "quinze": 15,
         "seize": 16, "vingt": 20, "trente": 30, "quarante": 40, "cinquante": 50, "soixante": 60, "cent": 100,
         "mille": 1000, "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "seven": 7, "eight": 8,
         "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fifteen": 15, "twenty": 20,
         "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "hundred": 100, "thousand": 1000}
DIGITS = re.compile(r"\d+")
STATED = re.compile(r"(?<![^\W\d_]-)\b\d+")  # a number, not the digits of a name such as "COVID-19"
TOKEN = re.compile(r"[\w'’-]+")
CAPITALS = re.compile(r"\b[A-ZÉÈ]{2,}\b")
# sentence ends, and a label's colon: "Motif : Enfant ...": the word after a label opens a sentence
SENTENCE = re.compile(r"(?<=[.!?:])\s+|\n")


def numbers(text: str) -> set[int]:
    """Every number the text states, in digits or in words (French or English, compounds like quatre-vingt-six)."""
    found = {int(d) for d in DIGITS.findall(text)}
    run: list[int] = []
    for word in re.findall(r"[a-zéèû]+", text.lower().replace("-", " ")) + [""]:
        if word in UNITS or (word in ("et", "and") and run):
            if word not in ("et", "and"):
                run.append(UNITS[word])
            continue
        if run:
            total, current = 0, 0
            for value in run:
                if value in (100, 1000):
                    current = max(1, current) * value
                    total, current = total + current, 0
                elif value == 20 and current == 4:  # quatre-vingt
                    current *= 20
                else:
                    current += value
            found.add(total + current)
            found.update(run)
        run = []
    return found


@dataclass(frozen=True)
class Evidence:
    """The numbers a transcript says and the words it uses (with the parts of elided and hyphenated words)."""

    numbers: frozenset[int]
    vocabulary: frozenset[str]

    @classmethod
    def of(cls, transcript: str) -> "Evidence":
        vocabulary = {part for word in words(transcript) for part in (word, *re.split(r"['’-]", word)) if part}
        return cls(frozenset(numbers(transcript)), frozenset(vocabulary))

    def _absent(self, token: str) -> bool:
        """A name is held when the call uses it, its parts, or its form with or without a final s: transcripts
        misspell names ("Bill Gate's home"), and a summary that writes "Gates'" names the same man."""
        token = re.sub(r"['’]s?$", "", token).lower()
        parts = [p for p in re.split(r"['’-]", token) if p]
        forms = {token, token[:-1] if token.endswith("s") else f"{token}s"}
        return not forms & self.vocabulary and not all(p in self.vocabulary for p in parts)

    def unsupported(self, text: str, heading: bool = False) -> list[str]:
        """The numbers and names `text` states that the transcript does not. A heading (a title, often in Title
        Case) is held to its numbers and its words in capitals only. The digits of a name ("COVID-19") go with the
        name."""
        missing = [str(n) for n in sorted({int(d) for d in STATED.findall(text)} - self.numbers)]
        if heading:
            return missing + [t for t in CAPITALS.findall(text) if self._absent(t)]
        for sentence in SENTENCE.split(text):
            missing += [t for t in TOKEN.findall(sentence)[1:]
                        if t[:1].isupper() and not t.isdigit() and self._absent(t)]
        return missing
