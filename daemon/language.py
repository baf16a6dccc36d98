"""French or English from the words themselves: a stop-word count is enough for phone calls."""

from __future__ import annotations

import re

FRENCH = frozenset(
    "le la les un une des du de et est à au aux en dans pour pas que qui ce cette il elle je tu vous nous "
    "ils sont avez avoir être c'est ça oui non d'accord bonjour merci monsieur madame votre vos mon ma".split()
)
ENGLISH = frozenset(
    "the a an and is are to of in for not that who this it he she i you we they have be it's yes no "
    "okay hello thank thanks sir madam your my with on at".split()
)
WORD = re.compile(r"[\w']+")


def detect_language(text: str, declared: str | None = None) -> str:
    """The declared language when it is one we have prompts for, else the stop-word majority."""
    if declared:
        short = declared.lower().split("-")[0].split("_")[0]
        if short in ("fr", "en"):
            return short
        if short in ("french", "english"):
            return short[:2]
    words = [w.lower() for w in WORD.findall(text)]
    french = sum(w in FRENCH for w in words)
    english = sum(w in ENGLISH for w in words)
    return "en" if english > french else "fr"
