"""Title, summary, satisfaction and bullet points from one read of the transcript.

Every task prompt is [system][fenced transcript][task], run back to back on one model instance, so
llama.cpp evaluates the transcript once and only the short task text afterwards. Each answer is
validated and normalised; a field that cannot be produced validly after one stricter retry is null
with its reason, never an invented value. Transcripts longer than the context are summarised in
chunks first (map-reduce), and the four tasks then read the chunk summaries. The summary's first words are
judged, not written, where the language has relations to judge among (caller.py). The satisfaction score
is not written but read: the model's probabilities for the answers 1 to 5, in one pass; its justification
is the scored answer continued ("Note : 4/5, car ..."), refused when it says the opposite of the score. Whether
the call was resolved is read the same way, from the probabilities of three answers (for the call record).
How answers are checked is answers.py's; how probabilities become a score, satisfaction.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from daemon.answers import Invalid, SourceText, contracted, first_sentences, validate_justification
from daemon.caller import addressed_as, opening, relations
from daemon.config import MetadataConfig, TaskSettings
from daemon.engine import Engine
from daemon.errors import EngineError
from daemon.fields import WRITER_FIELDS
from daemon.messages import ProgressReport
from daemon.prompts import Prompts, fenced
from daemon.record import RESOLUTIONS
from daemon.satisfaction import Satisfaction, normalised

TASKS = tuple(f.value_key for f in WRITER_FIELDS)
STOP = {f.value_key: f.stop for f in WRITER_FIELDS}  # where a written answer ends
ANSWER_MARGIN_TOKENS = 64
REASON_STOPS = [". ", "\n"]
RETRY_TEMPERATURE = 0.7
DIGITS = ("1", "2", "3", "4", "5")


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
    thresholds: tuple[float, ...] | None = None

    def _settings(self, task: str) -> TaskSettings:
        return getattr(self.config, task)

    def _user(self, context: str, instruction: str) -> str:
        parts = [fenced(context), instruction] if self.config.transcript_first else [instruction, fenced(context)]
        return "\n\n".join(parts)

    def _ask(self, context: str, instruction: str, settings: TaskSettings, stop: list[str], begun: str = "") -> str:
        """The answer to one task; with `begun`, the answer starts with those words and the model goes on from them
        (the summary's "Appel de": the caller is named first, by the frame, not by chance)."""
        if not begun:
            return self.engine.chat(
                self.prompts.metadata_system, self._user(context, instruction),
                max_tokens=settings.max_tokens, temperature=settings.temperature,
                stop=stop, repeat_penalty=self.config.repeat_penalty,
            ).text
        prompt = self.engine.render(self.prompts.metadata_system, self._user(context, instruction)) + begun
        return contracted(begun + self.engine.complete(prompt, max_tokens=settings.max_tokens,
                                                       temperature=settings.temperature, stop=stop,
                                                       repeat_penalty=self.config.repeat_penalty).text)

    def _summary_sentences(self) -> int:
        return int(self.prompts.summary_sentences)  # a count of 0 or more, checked with the config

    def _stop(self, task: str) -> list[str]:
        """Where a written answer ends: a summary of one sentence at its first full stop, since nothing after it
        would be kept."""
        return [*STOP[task], ". ", "\n"] if task == "summary" and self._summary_sentences() == 1 else STOP[task]

    def _answer(self, task: str, context: str, instruction: str, validate: Callable[[str], Any],
                result: MetadataResult, reason_key: str, begun: str = "") -> Any:
        """A validated answer, asked once more with a stricter instruction if the first is invalid, else None
        with the reason recorded."""
        for attempt in range(2):
            try:
                return validate(self._ask(context, instruction, self._settings(task), self._stop(task), begun))
            except Invalid as exc:
                result.null_reasons[reason_key] = str(exc)
                if attempt == 0:
                    result.retries += 1
                    instruction = f"{instruction} {getattr(self.prompts, exc.retry)}"
        return None

    def opening(self, context: str, dialogue: str) -> str:
        """The summary's first words: for whom the caller calls, judged among the prompt set's relations in one
        pass over the options (the transcript is in the cache already), the caller made of it (caller.py); the
        plain frame ("Appel de") where the language has no relations or the options cannot be scored."""
        known = relations(self.prompts.relations)
        if not known or not self.prompts.summary_opening:
            return self.prompts.summary_answer
        prompt = self.engine.render(self.prompts.metadata_system, self._user(context, self.prompts.caller_question))
        try:
            scores = self.engine.choose(prompt + self.prompts.caller_answer, [r.concerned for r in known])
        except EngineError:
            return self.prompts.summary_answer
        relation = known[max(range(len(known)), key=scores.__getitem__)]
        sex = addressed_as(dialogue, self.prompts.address_women, self.prompts.address_men)
        return contracted(opening(relation, sex, self.prompts.summary_opening))

    def reading_prompt(self, context: str) -> str:
        """The satisfaction question with its answer begun ("Note : "), where the digit comes next."""
        prompt = self.engine.render(self.prompts.metadata_system, self._user(context, self.prompts.satisfaction))
        return prompt + self.prompts.satisfaction_answer

    def reading(self, prompt: str) -> Satisfaction:
        """The model's probabilities for the answers 1..5 to the satisfaction question, in one pass."""
        return Satisfaction.of(self.engine.choose(prompt, DIGITS))

    def justification(self, prompt: str, score: int, source: SourceText, result: MetadataResult) -> str | None:
        """The scored answer continued with its reason ("Note : 4/5, car ..."): the reason is the model's for that
        score, and nothing but a few tokens is read before it (the question is in the cache). An invalid reason
        gets one sampled retry (when the first was not already sampled as hot), then null."""
        settings = self.config.satisfaction
        answer = f"{prompt}{score}{self.prompts.satisfaction_because}"
        retry = (RETRY_TEMPERATURE,) if settings.temperature < RETRY_TEMPERATURE else ()
        for attempt, temperature in enumerate((settings.temperature, *retry)):
            reason = self.engine.complete(answer, max_tokens=settings.max_tokens, temperature=temperature,
                                          stop=REASON_STOPS, repeat_penalty=self.config.repeat_penalty).text.strip()
            try:
                return validate_justification(reason[:1].upper() + reason[1:], source, score, self.prompts)
            except Invalid as exc:
                result.null_reasons["satisfaction.justification"] = str(exc)
                if attempt == 0:
                    result.retries += 1
        return None

    def satisfaction(self, context: str, source: SourceText, result: MetadataResult) -> dict[str, Any] | None:
        """Score read from the probabilities of the five answers, then the answer continued with its reason."""
        prompt = self.reading_prompt(context)
        try:
            reading = self.reading(prompt)
        except EngineError as exc:
            result.null_reasons["satisfaction"] = f"the answers could not be scored: {exc}"
            return None
        score = reading.score(self.thresholds)
        justification = self.justification(prompt, score, source, result)
        if justification is not None:
            result.null_reasons.pop("satisfaction.justification", None)
        return {"score": score, "expected": round(reading.expected, 1), "confidence": round(reading.confidence, 3),
                "probabilities": [round(p, 3) for p in reading.probabilities], "justification": justification}

    def resolution(self, context: str, result: MetadataResult) -> dict[str, Any] | None:
        """Resolved, partly or unresolved at the end of the call: the model's probabilities for the prompt set's
        three answers after the question, in one pass over the cached transcript (record.py)."""
        options = [option.strip() for option in self.prompts.resolution_options.split("|")]
        if len(options) != len(RESOLUTIONS) or not all(options):
            result.null_reasons["resolution"] = "resolution_options must list three answers: resolved | partly | unresolved"
            return None
        prompt = self.engine.render(self.prompts.metadata_system, self._user(context, self.prompts.resolution_question))
        try:
            probabilities = normalised(self.engine.choose(prompt + self.prompts.resolution_answer, options))
        except EngineError as exc:
            result.null_reasons["resolution"] = f"the answers could not be scored: {exc}"
            return None
        best = max(range(len(RESOLUTIONS)), key=probabilities.__getitem__)
        return {"value": RESOLUTIONS[best], "confidence": round(probabilities[best], 3),
                "probabilities": {name: round(p, 3) for name, p in zip(RESOLUTIONS, probabilities)}}

    def _budget(self) -> int:
        """Tokens of transcript one prompt may carry."""
        fixed = self.engine.count_tokens(self.prompts.metadata_system) + max(
            self.engine.count_tokens(f"{_task_text(self.prompts, t, self.config)} {retry}")
            for t in TASKS for retry in (self.prompts.stricter, self.prompts.shorter, self.prompts.facts_only))
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

    def context(self, dialogue: str, result: MetadataResult) -> str:
        """The transcript itself when it fits, else summaries of its parts (recursively)."""
        budget = self._budget()
        context = dialogue
        while self.engine.count_tokens(context) > budget:
            parts = self._chunks(context.split("\n"), budget)
            settings = self._settings("summary")
            instruction = _task_text(self.prompts, "chunk_summary", self.config)
            summaries = []
            for i, part in enumerate(parts, start=1):
                summaries.append(" ".join(self._ask(part, instruction, settings, STOP["summary"]).split()))
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
        context = self.context(dialogue, result)
        source = SourceText.of(dialogue)
        for declared in WRITER_FIELDS:
            task, validate = declared.value_key, declared.validate
            if declared.made == "read":
                value = self.satisfaction(context, source, result)
            else:
                assert validate is not None
                begun = self.opening(context, dialogue) if task == "summary" else ""
                kept = self._summary_sentences() if task == "summary" else 0
                value = self._answer(task, context, _task_text(self.prompts, task, self.config),
                                     lambda answer: validate(first_sentences(answer, kept) if kept else answer,
                                                             source, self.config), result, task, begun)
            result.values[task] = value
            if value is not None:
                result.null_reasons.pop(task, None)
            if self.progress:
                self.progress(task)
        result.values["resolution"] = self.resolution(context, result)
        return result
