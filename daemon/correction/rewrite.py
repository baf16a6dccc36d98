"""The rewrite corrector: the model re-types batches of numbered lines, mapped back by number, guarded.

Small models hallucinate, so a correction is kept only when it stays close to what was said; a
batch whose answer does not map one line to one segment is split in halves, down to single lines.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter

from daemon.config import CorrectionConfig
from daemon.correction.base import CorrectorBase
from daemon.correction.outcomes import (
    CORRECTED,
    REJECTED,
    UNCHANGED,
    SegmentCorrection,
    settled_without_model,
    word_changes,
)
from daemon.text import words
from daemon.transcript import Segment

NUMBERED_LINE = re.compile(r"^\s*\[(\d+)\]\s?(.*)$")
RULE = "rewrite"


def _repeats(sequence: list[str]) -> Counter[tuple[str, ...]]:
    """Phrases of 2 to 4 words that occur more than twice."""
    found: Counter[tuple[str, ...]] = Counter()
    for n in (2, 3, 4):
        grams = Counter(tuple(sequence[i:i + n]) for i in range(len(sequence) - n + 1))
        found.update({g: c for g, c in grams.items() if c > 2})
    return found


def check_correction(original: str, candidate: str, config: CorrectionConfig) -> SegmentCorrection:
    """Keep the candidate only if it is a plausible correction of the original, else say why not."""
    candidate = " ".join(candidate.split())
    if not candidate:
        return SegmentCorrection(original, REJECTED, "empty answer")
    if candidate == original.strip():
        return SegmentCorrection(original, UNCHANGED)
    ratio = len(candidate) / max(1, len(original.strip()))
    if not config.min_length_ratio <= ratio <= config.max_length_ratio:
        return SegmentCorrection(original, REJECTED, f"length ratio {ratio:.2f}")
    similarity = difflib.SequenceMatcher(None, original.strip().lower(), candidate.lower()).ratio()
    if similarity < config.min_similarity:
        return SegmentCorrection(original, REJECTED, f"similarity {similarity:.2f}")
    before, after = words(original), words(candidate)
    if set(_repeats(after)) - set(_repeats(before)):
        return SegmentCorrection(original, REJECTED, "repeated phrase")
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes():
        if op == "insert":
            return SegmentCorrection(original, REJECTED, f"added words: {' '.join(after[j1:j2])}")
        if op == "delete":
            return SegmentCorrection(original, REJECTED, f"removed words: {' '.join(before[i1:i2])}")
    return SegmentCorrection(candidate, CORRECTED, changes=word_changes(original, candidate, RULE))


def parse_numbered_answer(answer: str) -> dict[int, str] | None:
    """`[n] text` lines -> {n: text}; None when a number repeats (merged or duplicated lines)."""
    lines: dict[int, str] = {}
    last: int | None = None
    for raw in answer.strip().split("\n"):
        match = NUMBERED_LINE.match(raw)
        if match:
            number = int(match.group(1))
            if number in lines:
                return None
            lines[number] = match.group(2).strip()
            last = number
        elif raw.strip() and last is not None:
            return None
    return lines


def _batch_prompt(texts: list[str]) -> str:
    return "\n".join(f"[{i}] {text}" for i, text in enumerate(texts, start=1))


def _line_spans(texts: list[str]) -> list[tuple[int, int]]:
    """Where each text sits in `_batch_prompt(texts)`, as UTF-8 byte offsets (after its `[n] ` label)."""
    spans, at = [], 0
    for number, text in enumerate(texts, start=1):
        start = at + len(f"[{number}] ".encode("utf-8"))
        at = start + len(text.encode("utf-8")) + 1
        spans.append((start, at - 1))
    return spans


class Rewriter(CorrectorBase):
    def _ask(self, texts: list[str]) -> dict[int, str] | None:
        tokens = sum(self.engine.count_tokens(t) for t in texts)
        completion = self.engine.chat(
            self.prompts.correction_system, _batch_prompt(texts),
            max_tokens=int(tokens * self.config.max_length_ratio) + 6 * len(texts) + 8,
            temperature=self.config.temperature,
            stop=["\n"] if len(texts) == 1 else [f"[{len(texts) + 1}]", "\n\n"],
            copies_prompt=True,
        )
        self.stats.model_calls += 1
        if len(texts) == 1 and not NUMBERED_LINE.match(completion.text.strip().split("\n")[0] or ""):
            return {1: completion.text.strip().split("\n")[0]}
        return parse_numbered_answer(completion.text)

    def _correct_batch(self, texts: list[str]) -> list[SegmentCorrection]:
        self.stats.batches += 1
        answer = self._ask(texts)
        if answer is not None and set(answer) == set(range(1, len(texts) + 1)):
            return [check_correction(t, answer[i], self.config) for i, t in enumerate(texts, start=1)]
        if len(texts) == 1:
            return [SegmentCorrection(texts[0], REJECTED, "unparseable answer")]
        self.stats.batch_splits += 1
        half = len(texts) // 2
        return self._correct_batch(texts[:half]) + self._correct_batch(texts[half:])

    def _batches(self, indices: list[int], texts: list[str], budget: int) -> list[list[int]]:
        """Consecutive segments up to the token budget; a long segment travels alone."""
        batches: list[list[int]] = []
        current: list[int] = []
        used = 0
        for i in indices:
            cost = self.engine.count_tokens(texts[i]) + 4
            if current and used + cost > budget:
                batches.append(current)
                current, used = [], 0
            current.append(i)
            used += cost
        if current:
            batches.append(current)
        return batches

    def worst_gaps(self, indices: list[int], texts: list[str]) -> dict[int, float]:
        """Each segment's largest logit gap: how far its least expected token trails the model's favourite.

        Segments with small gaps read as the model would have written them, so a rewrite would only copy them.
        """
        budget = (self.engine.n_ctx - self.engine.count_tokens(self.prompts.correction_system)) // 2
        worst: dict[int, float] = {}
        for window in self._batches(indices, texts, budget):
            lines = [texts[i] for i in window]
            spans = list(zip(window, _line_spans(lines)))
            worst.update(dict.fromkeys(window, 0.0))
            for offset, gap in self.engine.surprise(self.prompts.correction_system, _batch_prompt(lines)):
                for i, (start, end) in spans:
                    if start <= offset < end:
                        worst[i] = max(worst[i], gap)
        return worst

    def correct(self, segments: list[Segment], language: str) -> list[SegmentCorrection]:
        results: dict[int, SegmentCorrection] = {}
        pending: list[int] = []
        texts = [s.text for s in segments]
        for i, segment in enumerate(segments):
            settled = settled_without_model(segment, self.config) or self._cached(language, segment.text)
            if settled is not None:
                results[i] = settled
            else:
                pending.append(i)
        total = len(segments)
        if pending and self.config.surprise_threshold is not None:
            flagged = {i for i, gap in self.worst_gaps(pending, texts).items() if gap >= self.config.surprise_threshold}
            for i in pending:
                if i not in flagged:
                    results[i] = SegmentCorrection(texts[i], UNCHANGED)
                    self._store(language, texts[i], results[i])
            self.stats.gated += len(pending) - len(flagged)
            pending = [i for i in pending if i in flagged]
        self._report(len(results), total)
        for batch in self._batches(pending, texts, self.config.batch_tokens):
            for i, outcome in zip(batch, self._correct_batch([texts[i] for i in batch])):
                results[i] = outcome
                self._store(language, texts[i], outcome)
            self._report(len(results), total)
        return [results[i] for i in range(total)]

    def _report(self, done: int, total: int) -> None:
        if self.progress:
            self.progress(f"{done}/{total} segments")

    def _key(self, language: str, text: str) -> list[str]:
        return [self.cache_scope, language, text]

    def _cached(self, language: str, text: str) -> SegmentCorrection | None:
        if self.cache is None:
            return None
        value = self.cache.get("segment", self._key(language, text))
        if value is None:
            return None
        changes = word_changes(text, value["text"], RULE) if value["status"] == CORRECTED else ()
        return SegmentCorrection(value["text"], value["status"], value.get("reason"), changes)

    def _store(self, language: str, text: str, outcome: SegmentCorrection) -> None:
        if self.cache is not None:
            self.cache.put("segment", self._key(language, text),
                           {"text": outcome.text, "status": outcome.status, "reason": outcome.reason})
