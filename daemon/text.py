"""Words, as the corrector, the metadata validators and the studies count them."""

from __future__ import annotations

import re

WORD = re.compile(r"[\w'’-]+")


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]
