"""Title, summary, satisfaction and bullet points from one read of the transcript.

Every task prompt is [system][fenced transcript][task], run back to back on one model instance, so
llama.cpp evaluates the transcript once and only the short task text afterwards. Each answer is
validated and normalised; a field that cannot be produced validly after one stricter retry is null
with its reason, never an invented value. Transcripts longer than the context are summarised in
chunks first (map-reduce), and the four tasks then read the chunk summaries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from daemon.config import MetadataConfig, TaskSettings
from daemon.engine import Engine
from daemon.messages import ProgressReport
from daemon.prompts import Prompts, fenced
from daemon.text import words
BULLET = re.compile(r"^\s*(?:[-*•·–]|\d+[.)])\s*(.+)$")
SCORE = re.compile(r"(?:note|score|satisfaction)\s*[:=]?\s*\**\s*([1-5])\b|\b([1-5])\s*/\s*5\b", re.IGNORECASE)
LONE_DIGIT = re.compile(r"\b([1-5])\b")
JUSTIFICATION = re.compile(r"justification\s*:\s*(.+)", re.IGNORECASE | re.DOTALL)
LABEL = re.compile(r"^\s*(?:\*\*)?(?:titre|title|résumé|resume|summary)\s*(?:\*\*)?\s*:\s*", re.IGNORECASE)
TITLE_TRIM = " \t\u00a0\u202f#*.\"'«»“”"
TASKS = ("title", "summary", "satisfaction", "bullets")
ANSWER_MARGIN_TOKENS = 64
COPY_RUN_WORDS = 15
COPY_LINE_WORDS = 5


class Invalid(Exception):
    """An answer that fails validation; the message is the reason recorded in stats."""


@dataclass
class SourceText:
    """The transcript as the validators see it, to catch answers that copy it verbatim."""

    lines: list[tuple[str, ...]]
    runs: set[tuple[str, ...]] = field(default_factory=set)

    @classmethod
    def of(cls, dialogue: str) -> "SourceText":
        lines = [tuple(words(line.partition(": ")[2] or line)) for line in dialogue.split("\n")]
        runs = {ws[i:i + COPY_RUN_WORDS] for ws in lines for i in range(len(ws) - COPY_RUN_WORDS + 1)}
        return cls([ws for ws in lines if len(ws) >= COPY_LINE_WORDS], runs)

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


def _first_line(answer: str) -> str:
    return next((line.strip() for line in answer.strip().split("\n") if line.strip()), "")


def validate_title(answer: str, source: SourceText, config: MetadataConfig) -> str:
    title = LABEL.sub("", _first_line(answer)).strip(TITLE_TRIM)
    count = len(words(title))
    if count < 2:
        raise Invalid("title too short")
    if count > 12:
        raise Invalid(f"title has {count} words")
    if source.copies(title):
        raise Invalid("title copies the transcript")
    return title


def _trim_to_words(text: str, limit: int) -> str:
    """Whole sentences within the limit; a first sentence longer than the limit is invalid."""
    if len(words(text)) <= limit:
        return text
    kept = ""
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        if len(words(kept + " " + sentence)) > limit:
            break
        kept = f"{kept} {sentence}".strip()
    if not kept:
        raise Invalid(f"summary over {limit} words with no sentence boundary within it")
    return kept


def validate_summary(answer: str, source: SourceText, config: MetadataConfig) -> str:
    text = " ".join(LABEL.sub("", answer.strip()).split())
    if len(words(text)) < 5:
        raise Invalid("summary too short")
    if repeats_itself(text):
        raise Invalid("summary repeats itself")
    if source.copies(text):
        raise Invalid("summary copies the transcript")
    return _trim_to_words(text, config.summary_max_words)


def validate_satisfaction(answer: str, source: SourceText, config: MetadataConfig) -> dict[str, Any]:
    match = SCORE.search(answer) or LONE_DIGIT.search(answer)
    if not match:
        raise Invalid("no score from 1 to 5 in the answer")
    score = int(next(g for g in match.groups() if g))
    found = JUSTIFICATION.search(answer)
    rest = found.group(1) if found else answer[match.end():]
    rest = " ".join(rest.strip(" .:-*\n").split())
    sentence = re.split(r"(?<=[.!?])\s", rest, maxsplit=1)[0].strip()
    if len(words(sentence)) < 3:
        raise Invalid("no justification sentence")
    if "(1" in sentence or "5 (" in sentence:
        raise Invalid("justification repeats the rating scale")
    if len(words(sentence)) > 40:
        sentence = " ".join(sentence.split()[:40]).rstrip(",;") + "…"
    return {"score": score, "justification": sentence}


def validate_bullets(answer: str, source: SourceText, config: MetadataConfig) -> list[str]:
    items: list[str] = []
    for line in answer.split("\n"):
        match = BULLET.match(line)
        if not match:
            continue
        item = " ".join(match.group(1).strip().strip("*").split())
        n = len(words(item))
        if 2 <= n <= 25 and not source.copies(item) and item.lower() not in (i.lower() for i in items):
            items.append(item)
    if len(items) < 3:
        raise Invalid(f"{len(items)} valid bullet points, need 3")
    return items[:6]


VALIDATORS: dict[str, Callable[[str, SourceText, MetadataConfig], Any]] = {
    "title": validate_title,
    "summary": validate_summary,
    "satisfaction": validate_satisfaction,
    "bullets": validate_bullets,
}
STOPS: dict[str, list[str]] = {"title": ["\n"], "summary": ["\n\n\n"], "satisfaction": ["\n\n"], "bullets": ["\n\n\n"]}


@dataclass
class MetadataResult:
    values: dict[str, Any]
    null_reasons: dict[str, str]
    retries: int = 0
    chunks: int = 0


def _task_text(prompts: Prompts, task: str, config: MetadataConfig) -> str:
    return getattr(prompts, task).format(max_words=config.summary_max_words)


@dataclass
class MetadataWriter:
    engine: Engine
    config: MetadataConfig
    prompts: Prompts
    progress: ProgressReport | None = None

    def _settings(self, task: str) -> TaskSettings:
        return getattr(self.config, task)

    def _ask(self, context: str, instruction: str, settings: TaskSettings, stop: list[str]) -> str:
        parts = [fenced(context), instruction] if self.config.transcript_first else [instruction, fenced(context)]
        return self.engine.chat(
            self.prompts.metadata_system, "\n\n".join(parts),
            max_tokens=settings.max_tokens, temperature=settings.temperature,
            stop=stop, repeat_penalty=self.config.repeat_penalty,
        ).text

    def _budget(self) -> int:
        """Tokens of transcript one prompt may carry."""
        fixed = self.engine.count_tokens(self.prompts.metadata_system) + max(
            self.engine.count_tokens(_task_text(self.prompts, t, self.config) + " " + self.prompts.stricter) for t in TASKS)
        answer = max(self._settings(t).max_tokens for t in TASKS)
        return self.engine.n_ctx - fixed - answer - ANSWER_MARGIN_TOKENS

    def _chunks(self, lines: list[str], budget: int) -> list[str]:
        chunks: list[str] = []
        current: list[str] = []
        used = 0
        for line in lines:
            cost = self.engine.count_tokens(line) + 1
            if cost > budget:
                line = " ".join(line.split()[: max(1, budget // 3)])
                cost = self.engine.count_tokens(line) + 1
            if current and used + cost > budget:
                chunks.append("\n".join(current))
                current, used = [], 0
            current.append(line)
            used += cost
        if current:
            chunks.append("\n".join(current))
        return chunks

    def _context(self, dialogue: str, result: MetadataResult) -> str:
        """The transcript itself when it fits, else summaries of its parts (recursively)."""
        budget = self._budget()
        context = dialogue
        while self.engine.count_tokens(context) > budget:
            parts = self._chunks(context.split("\n"), budget)
            settings = self._settings("summary")
            instruction = _task_text(self.prompts, "chunk_summary", self.config)
            summaries = []
            for i, part in enumerate(parts, start=1):
                summaries.append(" ".join(self._ask(part, instruction, settings, STOPS["summary"]).split()))
                result.chunks += 1
                if self.progress:
                    self.progress(f"chunk {i}/{len(parts)}")
            context = self.prompts.chunk_header + "\n" + "\n".join(f"- {s}" for s in summaries if s)
        return context

    def write(self, dialogue: str) -> MetadataResult:
        result = MetadataResult(values={t: None for t in TASKS}, null_reasons={})
        if not self.config.enabled:
            result.null_reasons = {t: "metadata disabled" for t in TASKS}
            return result
        context = self._context(dialogue, result)
        source = SourceText.of(dialogue)
        for task in TASKS:
            instruction = _task_text(self.prompts, task, self.config)
            for attempt in range(2):
                answer = self._ask(context, instruction, self._settings(task), STOPS[task])
                try:
                    result.values[task] = VALIDATORS[task](answer, source, self.config)
                    result.null_reasons.pop(task, None)
                    break
                except Invalid as exc:
                    result.null_reasons[task] = str(exc)
                    if attempt == 0:
                        result.retries += 1
                        instruction = f"{instruction} {self.prompts.stricter}"
            if self.progress:
                self.progress(task)
        return result
