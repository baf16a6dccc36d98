"""The numbers and names a written answer states (`mentions`), and those of them the transcript does not hold: a
number in digits that the call never says (in digits or in words, French or English), a name (a capitalised word
inside a sentence) the call never uses. The metadata validators drop or refuse such statements, the summaries study
counts them by the same rule, and the call record lists the others as its entities."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from daemon.text import CLAUSE_END, HONORIFICS, WORD, words

UNITS = {"zéro": 0, "un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "six": 6, "sept": 7,
         "huit": 8, "neuf": 9, "dix": 10, "onze": 11, "douze": 12, "treize": 13, "quatorze": 14, "quinze": 15,
         "seize": 16, "vingt": 20, "trente": 30, "quarante": 40, "cinquante": 50, "soixante": 60, "cent": 100,
         "mille": 1000, "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "seven": 7, "eight": 8,
         "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fifteen": 15, "twenty": 20,
         "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "hundred": 100, "thousand": 1000}
DIGITS = re.compile(r"\d+")
# a number as written ("39", "3:30", "14h30", "1,5"), not the digits of a name such as "COVID-19"
NUMBER = re.compile(r"(?<![^\W\d_]-)\b\d+(?:[.,:h]\d+)*")


@dataclass(frozen=True)
class Mention:
    text: str
    kind: Literal["number", "name"]


def mentions(text: str, heading: bool = False) -> list[Mention]:
    """The numbers, then the names, `text` states, in order: a name is a capitalised word inside a sentence (a
    sentence's first word, or the first after a label's colon, is capitalised anyway); in a heading, often in Title
    Case, a word in capitals. Honorifics are not names."""
    found = [Mention(m.group(0), "number") for m in NUMBER.finditer(text)]
    for sentence in CLAUSE_END.split(text):
        for token in WORD.findall(sentence)[0 if heading else 1:]:
            token = re.sub(r"['’]s?$", "", token)
            capital = token.isupper() if heading else token[:1].isupper()
            if capital and not token[:1].isdigit() and len(token) > 1 and token.lower() not in HONORIFICS:
                found.append(Mention(token, "name"))
    return found


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

    def holds(self, mention: Mention) -> bool:
        """A number is held when the call says each of its parts ("3:30": 3 and 30). A name is held when the call
        uses it, its parts (but digits), or its form with or without a final s: transcripts misspell names ("Bill
        Gate's home"), and a summary that writes "Gates'" names the same man."""
        if mention.kind == "number":
            return {int(d) for d in DIGITS.findall(mention.text)} <= self.numbers
        token = mention.text.lower()
        parts = [p for p in re.split(r"['’-]", token) if p and not p.isdigit()]  # "COVID-19": its digits go with it
        forms = {token, token[:-1] if token.endswith("s") else f"{token}s"}
        return bool(forms & self.vocabulary) or all(p in self.vocabulary for p in parts)

    def unsupported(self, text: str, heading: bool = False) -> list[str]:
        """The numbers and names `text` states that the transcript does not (`mentions`)."""
        return [m.text for m in mentions(text, heading) if not self.holds(m)]
