"""What the model writes, checked and normalised before it is kept: a title, a summary, bullet points, a
justification. An answer that copies the transcript, narrates its turns, repeats itself or says the opposite of
its score is refused (`Invalid`, with the reason recorded and the instruction for one retry); a summary sentence
or a bullet that states a number or a name the call does not hold is dropped (evidence.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from daemon.config import MetadataConfig
from daemon.evidence import Evidence
from daemon.prompts import Prompts
from daemon.text import narrates, sentences, without_fillers, words

BULLET = re.compile(r"^\s*(?:[-*•·–]|\d+[.)])\s*(.+)$")
NESTED_MARKER = re.compile(r"^((?:[^:]{1,30}:\s*)?)[-*•·–]\s+")  # "- - Attendre", "- Conseils : - Attendre"
LABEL = re.compile(r"^\s*(?:\*\*)?(?:titre|title|résumé|resume|summary|justification)\s*(?:\*\*)?\s*:\s*", re.IGNORECASE)
TITLE_TRIM = " \t\u00a0\u202f#*.\"'«»“”"
TITLE_WORDS = (2, 12)
TITLE_HEAD_WORDS = 3  # a first clause shorter than this says too little to stand for the title
# where a title written as a sentence has said its motif: "Enfant de 9 mois inconscient, le père fait le massage"
TITLE_CLAUSE_END = re.compile(r"\s*(?:[,;:(]|\s[-–—]\s)")
COPY_RUN_WORDS = 15
COPY_LINE_WORDS = 5
NEGATIONS = {"ne", "n", "pas", "jamais", "sans", "not", "no", "never", "without", "n't"}


class Invalid(Exception):
    """An answer that fails validation; the message is the reason recorded in stats, `retry` the prompt added
    to the instruction for the second try (`stricter` unless the reason calls for another)."""

    def __init__(self, reason: str, retry: str = "stricter"):
        super().__init__(reason)
        self.retry = retry


@dataclass
class SourceText:
    """The transcript as the validators see it, to catch answers that copy it verbatim."""

    lines: list[tuple[str, ...]]
    evidence: Evidence  # the numbers and words the transcript holds: an answer may state no others
    runs: set[tuple[str, ...]] = field(default_factory=set)
    speakers: frozenset[str] = frozenset()

    @classmethod
    def of(cls, dialogue: str) -> "SourceText":
        lines = [tuple(words(line.partition(": ")[2] or line)) for line in dialogue.split("\n")]
        runs = {ws[i:i + COPY_RUN_WORDS] for ws in lines for i in range(len(ws) - COPY_RUN_WORDS + 1)}
        heads = (line.partition(": ")[0].strip().lower() for line in dialogue.split("\n") if ": " in line)
        speakers = frozenset(head for head in heads if 0 < len(words(head)) <= 3)
        return cls([ws for ws in lines if len(ws) >= COPY_LINE_WORDS], Evidence.of(dialogue), runs, speakers)

    def narrates(self, item: str) -> bool:
        return narrates(item, self.speakers)

    def copies(self, text: str) -> bool:
        """A whole transcript line of 5+ words inside the text, or a run of 15 words taken from one line."""
        ws = tuple(words(text))
        joined = " " + " ".join(ws) + " "
        if any(" " + " ".join(line) + " " in joined for line in self.lines):
            return True
        return any(ws[i:i + COPY_RUN_WORDS] in self.runs for i in range(len(ws) - COPY_RUN_WORDS + 1))


def repeats_itself(text: str) -> bool:
    ws = words(text)
    grams = [tuple(ws[i:i + 4]) for i in range(len(ws) - 3)]
    return any(grams.count(g) > 2 for g in set(grams))


CONTRACTIONS = ((re.compile(r"\bde (?=(?:un|une|il|elle|[aeiouyéèêh])\b|[aeiouyéèê])", re.IGNORECASE), "d'"),
                (re.compile(r"\bde le\b", re.IGNORECASE), "du"), (re.compile(r"\bde les\b", re.IGNORECASE), "des"))


def contracted(text: str) -> str:
    """French elision where an answer begun with "... de" meets the model's words: "Appel de une mère" -> "Appel
    d'une mère", "de le" -> "du" (only in the first words, where the two meet)."""
    head, tail = text[:16], text[16:]
    for pattern, replacement in CONTRACTIONS:
        head = pattern.sub(replacement, head, count=1)
    return head + tail


def _first_line(answer: str) -> str:
    return next((line.strip() for line in answer.strip().split("\n") if line.strip()), "")


def _title_head(title: str) -> str:
    """A title longer than a title may be cut to its first clause, when that clause is one by itself."""
    if len(words(title)) <= TITLE_WORDS[1]:
        return title
    head = TITLE_CLAUSE_END.split(title, maxsplit=1)[0].strip(TITLE_TRIM)
    return head if TITLE_HEAD_WORDS <= len(words(head)) <= TITLE_WORDS[1] else title


def validate_title(answer: str, source: SourceText, config: MetadataConfig) -> str:
    title = _title_head(without_fillers(LABEL.sub("", _first_line(answer))).strip(TITLE_TRIM))
    count = len(words(title))
    if count < TITLE_WORDS[0]:
        raise Invalid("title too short")
    if count > TITLE_WORDS[1]:
        raise Invalid(f"title has {count} words", retry="shorter")
    if source.copies(title):
        raise Invalid("title copies the transcript")
    unsupported = source.evidence.unsupported(title, heading=True)
    if unsupported:
        raise Invalid(f"title states {', '.join(unsupported)}, which the call does not")
    return title[:1].upper() + title[1:]


def first_sentences(text: str, count: int) -> str:
    """The first `count` sentences of an answer (all of it for 0; a line break ends a sentence too), each ended with a
    full stop where the model wrote none (a one-sentence summary is stopped at its first ". ")."""
    found = [s for line in text.split("\n") for s in sentences(" ".join(line.split())) if s]
    return " ".join(s if s[-1] in ".!?…" else f"{s}." for s in found[:count or None])


def _supported(text: str, source: SourceText) -> str:
    """The summary without its sentences that state a number or a name the call does not hold; the first sentence
    (the caller, judged) must hold, or the summary is invalid."""
    first, *rest = sentences(text)
    unsupported = source.evidence.unsupported(first)
    if unsupported:
        raise Invalid(f"summary states {', '.join(unsupported)}, which the call does not")
    return " ".join([first, *(sentence for sentence in rest if not source.evidence.unsupported(sentence))])


def _trim_to_words(text: str, limit: int) -> str:
    """Whole sentences within the limit; a first sentence longer than the limit is invalid."""
    if len(words(text)) <= limit:
        return text
    kept = ""
    for sentence in sentences(text):
        if len(words(kept + " " + sentence)) > limit:
            break
        kept = f"{kept} {sentence}".strip()
    if not kept:
        raise Invalid(f"summary over {limit} words with no sentence boundary within it")
    return kept


def validate_summary(answer: str, source: SourceText, config: MetadataConfig) -> str:
    text = without_fillers(LABEL.sub("", answer.strip()))
    if len(words(text)) < 5:
        raise Invalid("summary too short")
    if repeats_itself(text):
        raise Invalid("summary repeats itself")
    if source.copies(text):
        raise Invalid("summary copies the transcript")
    return _trim_to_words(_supported(text, source), config.summary_max_words)


def cue_phrases(listed: str) -> list[tuple[str, ...]]:
    return [tuple(words(phrase)) for phrase in listed.split(",") if words(phrase)]


def contradicts(sentence: str, score: int, prompts: Prompts) -> bool:
    """Words of unhappiness beside a 4 or 5, or of contentment beside a 1 or 2 ("pas satisfait" is unhappy)."""
    tokens = words(sentence)
    moods = []
    for mood, listed in ((-1, prompts.unhappy_words), (1, prompts.happy_words)):
        for phrase in cue_phrases(listed):
            for i in range(len(tokens) - len(phrase) + 1):
                if tuple(tokens[i:i + len(phrase)]) == phrase:
                    negated = any(t in NEGATIONS for t in tokens[max(0, i - 3):i])
                    moods.append(-mood if negated else mood)
    return (score >= 4 and -1 in moods) or (score <= 2 and 1 in moods)


def validate_justification(answer: str, source: SourceText, score: int, prompts: Prompts) -> str:
    text = without_fillers(LABEL.sub("", _first_line(answer)).lstrip(" .:-*"))
    sentence = sentences(text)[0].strip()
    if sentence.count("(") > sentence.count(")"):
        sentence = sentence.rsplit("(", 1)[0].rstrip(" ,;")
    if len(words(sentence)) < 3:
        raise Invalid("no justification sentence")
    if source.copies(sentence):
        raise Invalid("justification copies the transcript")
    if contradicts(sentence, score, prompts):
        raise Invalid(f"justification contradicts the score {score}")
    if len(words(sentence)) > 40:
        return " ".join(sentence.split()[:40]).rstrip(",;") + "…"
    return sentence if sentence[-1] in ".!?…" else f"{sentence}."


def validate_bullets(answer: str, source: SourceText, config: MetadataConfig) -> list[str]:
    """Facts of the call: items that copy the transcript, narrate its turns or state a number or a name the call does
    not hold are dropped; fewer than 3 left is invalid (retried asking for facts when narration is what was
    dropped)."""
    items: list[str] = []
    narrating = 0
    for line in answer.split("\n"):
        match = BULLET.match(line)
        if not match:
            continue
        item = NESTED_MARKER.sub(r"\1", without_fillers(match.group(1).strip().strip("*")))
        n = len(words(item))
        if source.narrates(item):
            narrating += 1
        elif (2 <= n <= 25 and not source.copies(item) and not source.evidence.unsupported(item)
              and item.lower() not in (i.lower() for i in items)):
            items.append(item)
    if len(items) < 3:
        reason = f"{len(items)} valid bullet points, need 3" + (f" ({narrating} narrated turns)" if narrating else "")
        raise Invalid(reason, retry="facts_only" if narrating else "stricter")
    return items[:6]
