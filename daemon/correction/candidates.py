"""Candidate edits from confusion sets: which words of a segment could be a sound-alike of another word.

The sets are data (`confusions/<language>.yaml`, plus any files named in the configuration); this
module turns them into edits of single words, with the case and apostrophe style of the written
word kept, and knows the margin each edit must gain to be made.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from daemon.errors import ConfigError
from daemon.text import WORD

SETS_DIR = Path(__file__).parent / "confusions"
PLURAL_ENDINGS = ("s", "x", "z")
PLURAL_X_AFTER = ("eau", "eu", "au")


def normal(word: str) -> str:
    return word.lower().replace("’", "'")


@dataclass(frozen=True)
class EndingGroup:
    kind: str
    min_stem: int
    endings: tuple[str, ...]


@dataclass(frozen=True)
class ConfusionSets:
    language: str
    words: dict[str, tuple[tuple[str, str], ...]]      # word -> ((alternative, kind), ...)
    endings: tuple[EndingGroup, ...] = ()
    determiners: frozenset[str] = frozenset()
    plural_min_length: int = 3
    margins: dict[str, float] = field(default_factory=dict)
    digest: str = ""

    def margin(self, edit: "Edit") -> float:
        """The gain an edit must beat: its direction's margin, else its kind's, else the default."""
        direction = f"{normal(edit.source)}->{normal(edit.target)}"
        for key in (direction, edit.kind, "default"):
            if key in self.margins:
                return self.margins[key]
        return 0.0


@dataclass(frozen=True)
class Edit:
    """Replace word number `word` (characters start:end of the segment) by `target`."""

    word: int
    start: int
    end: int
    source: str
    target: str
    kind: str

    def apply(self, text: str) -> str:
        return text[:self.start] + self.target + text[self.end:]


def _written_like(source: str, target: str) -> str:
    """`target` with the case and apostrophe of the word as written."""
    if "’" in source:
        target = target.replace("'", "’")
    if len(source) > 1 and source.isupper():
        return target.upper()
    if source[:1].isupper():
        return target[:1].upper() + target[1:]
    return target


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(str(path), [f"cannot read confusion sets: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["confusion sets: expected a mapping at the top level"])
    return data


def _merge(documents: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"words": {}, "endings": {}, "plural": {}, "margins": {}}
    for document in documents:
        for kind, groups in (document.get("words") or {}).items():
            merged["words"].setdefault(kind, []).extend(groups)
        merged["endings"].update(document.get("endings") or {})
        merged["plural"].update(document.get("plural") or {})
        merged["margins"].update(document.get("margins") or {})
    return merged


def _build(language: str, data: dict[str, Any], source: str) -> ConfusionSets:
    words: dict[str, list[tuple[str, str]]] = {}
    problems = []
    for kind, groups in data["words"].items():
        for group in groups:
            if not isinstance(group, list) or len(group) < 2 or not all(isinstance(w, str) and WORD.fullmatch(w) for w in group):
                problems.append(f"words.{kind}: {group!r} is not a list of two or more single words")
                continue
            for word in group:
                known = words.setdefault(normal(word), [])
                known += [(normal(other), kind) for other in group
                          if normal(other) != normal(word) and normal(other) not in {a for a, _ in known}]
    endings = []
    for kind, spec in data["endings"].items():
        if not isinstance(spec, dict) or not isinstance(spec.get("group"), list):
            problems.append(f"endings.{kind}: expected {{min_stem: N, group: [...]}}")
            continue
        group = tuple(sorted(spec["group"], key=len, reverse=True))
        endings.append(EndingGroup(kind, int(spec.get("min_stem", 3)), group))
    margins = {}
    for key, value in data["margins"].items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"margins.{key}: expected a number of nats, got {value!r}")
        else:
            margins[str(key)] = float(value)
    if problems:
        raise ConfigError(source, problems)
    plural = data["plural"]
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]
    return ConfusionSets(
        language=language, words={w: tuple(a) for w, a in words.items()}, endings=tuple(endings),
        determiners=frozenset(map(normal, plural.get("determiners", []))),
        plural_min_length=int(plural.get("min_length", 3)), margins=margins, digest=digest,
    )


@lru_cache(maxsize=8)
def load_sets(language: str, extra_files: tuple[str, ...] = (), margins: tuple[tuple[str, float], ...] = ()) -> ConfusionSets:
    """The shipped sets of `language` (none for a language without a file), extra files, margin overrides."""
    shipped = SETS_DIR / f"{language}.yaml"
    documents = [_read(shipped)] if shipped.is_file() else []
    documents += [_read(Path(f)) for f in extra_files]
    documents.append({"margins": dict(margins)})
    return _build(language, _merge(documents), ", ".join([str(shipped), *extra_files]))


def _alternatives(words: list[str], i: int, sets: ConfusionSets) -> list[tuple[str, str]]:
    word = normal(words[i])
    found = list(sets.words.get(word, ()))
    for group in sets.endings:
        ending = next((e for e in group.endings if word.endswith(e) and len(word) - len(e) >= group.min_stem), None)
        if ending is not None:
            stem = word[: len(word) - len(ending)]
            found += [(stem + other, group.kind) for other in group.endings if other != ending]
    previous = normal(words[i - 1]) if i else ""
    if previous in sets.determiners and len(word) >= sets.plural_min_length and word.isalpha():
        if not word.endswith(PLURAL_ENDINGS):
            found.append((word + ("x" if word.endswith(PLURAL_X_AFTER) else "s"), "plural"))
        elif word.endswith(("s", "x")) and not word.endswith("ss") and len(word) > sets.plural_min_length:
            found.append((word[:-1], "plural"))
    seen: set[str] = {word}
    unique = []
    for alternative, kind in found:
        if alternative not in seen:
            seen.add(alternative)
            unique.append((alternative, kind))
    return unique


def _repeated(words: list[str], i: int) -> bool:
    """Word i said twice in a row (a disfluency, "le le", "où où elle", "ses s- s- ses"): its copies are spelled
    alike, and correcting one of them would change what was said."""
    here = normal(words[i])
    fragment = lambda w: w.endswith("-")
    before = next((normal(w) for w in reversed(words[:i]) if not fragment(w)), None)
    after = next((normal(w) for w in words[i + 1:] if not fragment(w)), None)
    return here in (before, after)


def candidates(text: str, sets: ConfusionSets) -> list[Edit]:
    """Every single-word edit the sets allow in `text`, in word order; none on a word its neighbour repeats."""
    matches = list(WORD.finditer(text))
    words = [m.group(0) for m in matches]
    edits = []
    for i, match in enumerate(matches):
        if _repeated(words, i):
            continue
        for alternative, kind in _alternatives(words, i, sets):
            edits.append(Edit(i, match.start(), match.end(), match.group(0), _written_like(match.group(0), alternative), kind))
    return edits
