"""`enrichd bench --modes recall`: sound-alike errors injected into real calls, and what correction does with them.

Errors come from the confusion sets the scoring corrector uses, read backwards: a word is replaced by a
sound-alike spelling whose target is a real word (attested in the corpus or in the sets), the way a
recogniser errs. One error in a share of the segments that admit one, for several seeds; the calls are
also corrected as they are, to count what correction changes in clean text. Counted per kind and per
confusion pair: injected, restored, missed, wrongly edited; clean segments changed; and the word error
rate against the original before and after correction. The trace of every judged candidate gives the
same counts per kind for other margins, to calibrate them.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.correction import Corrector, SegmentCorrection, confusion_sets
from daemon.correction.candidates import ConfusionSets, candidates, normal
from daemon.correction.judge import Judgement
from daemon.engine import Engine, EngineStats
from daemon.formats import parse
from daemon.messages import ProgressReport
from daemon.prompts import prompt_set
from daemon.text import WORD
from daemon.transcript import Segment

MARGINS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
LANGUAGE = "fr"



@dataclass(frozen=True)
class Injection:
    segment: int
    word: int
    right: str
    wrong: str
    kind: str

    @property
    def pair(self) -> str:
        return f"{self.right}->{self.wrong}"


def vocabulary(texts: list[str], sets: ConfusionSets) -> set[str]:
    """Words a recogniser could write: those of the corpus and of the confusion sets."""
    words = {normal(w) for text in texts for w in WORD.findall(text)}
    return words | set(sets.words) | {a for alternatives in sets.words.values() for a, _ in alternatives}


def inject_errors(segments: list[Segment], sets: ConfusionSets, words: set[str], rate: float,
                  rng: random.Random) -> tuple[list[Segment], list[Injection]]:
    """In about `rate` of the segments that admit one, one word replaced by a sound-alike real word."""
    injected, made = [], []
    for i, segment in enumerate(segments):
        edits = [e for e in candidates(segment.text, sets) if normal(e.target) in words]
        if not edits or rng.random() >= rate:
            injected.append(segment)
            continue
        edit = rng.choice(edits)
        injected.append(replace(segment, text=edit.apply(segment.text)))
        made.append(Injection(i, edit.word, normal(edit.source), normal(edit.target), edit.kind))
    return injected, made


def word_at(text: str, index: int) -> str | None:
    found = WORD.findall(text)
    return normal(found[index]) if index < len(found) else None


def word_errors(reference: str, hypothesis: str) -> int:
    """Word-level Levenshtein distance, on lower-cased words without punctuation."""
    ref, hyp = [normal(w) for w in WORD.findall(reference)], [normal(w) for w in WORD.findall(hypothesis)]
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1]


def _tally(counts: dict[str, Counter[str]], key: str, outcome: str) -> None:
    counts.setdefault(key, Counter())[outcome] += 1


@dataclass
class Run:
    """One correction of one version of the corpus (clean, or with a seed's errors)."""

    seconds: float = 0.0
    segments: int = 0
    words: int = 0
    errors_before: int = 0
    errors_after: int = 0
    clean_segments: int = 0
    clean_changed: int = 0
    evaluated_tokens: int = 0
    generated_tokens: int = 0

    def figures(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 1), "evaluated_tokens": self.evaluated_tokens,
                "generated_tokens": self.generated_tokens, "segments": self.segments, "clean_segments": self.clean_segments,
                "clean_changed": self.clean_changed,
                "wer_before": round(self.errors_before / max(1, self.words), 5),
                "wer_after": round(self.errors_after / max(1, self.words), 5)}


def _outcome(injection: Injection, corrected: str) -> str:
    word = word_at(corrected, injection.word)
    return "restored" if word == injection.right else "missed" if word == injection.wrong else "wrong_edit"


def _margin_table(trace: list[Judgement], injections: dict[int, Injection], lead: float | None) -> dict[str, dict[str, list[int]]]:
    """Per kind, what the best single edit per word would do at each margin (with the first-token rule): errors
    restored, and edits made outside the injected words; pruned candidates count as never made."""
    table: dict[str, dict[str, list[int]]] = {}
    for margin in MARGINS:
        best: dict[tuple[int, int], Judgement] = {}
        for j in trace:
            place = (j.position, j.edit.word)
            if j.gain is None or j.gain <= margin or (lead is not None and j.first_gain <= lead):
                continue
            if place not in best or j.gain > (best[place].gain or 0.0):
                best[place] = j
        for (position, word), j in best.items():
            injected = injections.get(position)
            right = injected is not None and injected.word == word and normal(j.edit.target) == injected.right
            counts = table.setdefault(j.edit.kind, {}).setdefault(str(margin), [0, 0])
            counts[0 if right else 1] += 1
    return table


def _sum_tables(tables: list[dict[str, dict[str, list[int]]]]) -> dict[str, dict[str, dict[str, int]]]:
    """{kind: {margin: {restored, other_edits}}}, summed over runs."""
    total: dict[str, dict[str, dict[str, int]]] = {}
    for table in tables:
        for kind, by_margin in table.items():
            for margin, (right, other) in by_margin.items():
                counts = total.setdefault(kind, {}).setdefault(margin, {"restored": 0, "other_edits": 0})
                counts["restored"] += right
                counts["other_edits"] += other
    return total


def _used(engine: Engine, scorer: Engine | None) -> EngineStats:
    return engine.stats + scorer.stats if scorer is not None else engine.stats.copy()


def run_recall(config: Config, files: list[Path], engine: Engine, progress: ProgressReport,
               seeds: tuple[int, ...] = (0, 1, 2), rate: float = 0.2, scorer: Engine | None = None) -> dict[str, Any]:
    """Each file: corrected clean, then with each seed's errors; one engine (and its scorer) for everything."""
    correction = config.enrichment.correction
    sets = confusion_sets(correction, LANGUAGE)
    prompts = prompt_set(config.enrichment, LANGUAGE)
    calls = {path.name: parse(path).segments for path in files}
    words = vocabulary([s.text for segments in calls.values() for s in segments], sets)
    runs = {"clean": Run(), **{f"seed {seed}": Run() for seed in seeds}}
    by_kind: dict[str, Counter[str]] = {}
    by_pair: dict[str, Counter[str]] = {}
    false_edits: Counter[str] = Counter()
    tables: dict[bool, list[dict[str, dict[str, list[int]]]]] = {True: [], False: []}
    injected_total = 0
    rngs = {seed: random.Random(seed) for seed in seeds}
    for name, original in calls.items():
        versions: list[tuple[str, list[Segment], list[Injection]]] = [("clean", original, [])]
        versions += [(f"seed {seed}", *inject_errors(original, sets, words, rate, rngs[seed])) for seed in seeds]
        for label, segments, injections in versions:
            trace: list[Judgement] = []
            corrector = Corrector(engine, correction, prompts, trace=trace, scorer=scorer)
            started, before = time.perf_counter(), _used(engine, scorer)
            outcomes: list[SegmentCorrection] = corrector.correct(segments, LANGUAGE)
            run, used = runs[label], _used(engine, scorer) - before
            run.seconds += time.perf_counter() - started
            run.evaluated_tokens += used.evaluated_tokens
            run.generated_tokens += used.generated_tokens
            wrong = {j.segment: j for j in injections}
            for i, (before, after) in enumerate(zip(original, outcomes)):
                if not before.text.strip():
                    continue
                run.segments += 1
                run.words += len(WORD.findall(before.text))
                run.errors_before += word_errors(before.text, segments[i].text)
                run.errors_after += word_errors(before.text, after.text)
                if i not in wrong:
                    run.clean_segments += 1
                    run.clean_changed += after.text != segments[i].text
                    false_edits.update(f"{normal(c.source)}->{normal(c.target)}" for c in after.changes)
            for injection in injections:
                outcome = _outcome(injection, outcomes[injection.segment].text)
                _tally(by_kind, injection.kind, outcome)
                _tally(by_pair, injection.pair, outcome)
            injected_total += len(injections)
            tables[label == "clean"].append(_margin_table(trace, wrong, correction.first_token_margin))
        progress(f"recall: {name}: {sum(r.seconds for r in runs.values()):.0f} s so far, "
                 f"{sum(c['restored'] for c in by_kind.values())} of {injected_total} errors restored")
    totals = Counter[str]()
    for counts in by_kind.values():
        totals.update(counts)
    return {
        "mode": correction.mode, "seeds": list(seeds), "injection_rate": rate, "injected": injected_total,
        "restored": totals["restored"], "missed": totals["missed"], "wrong_edit": totals["wrong_edit"],
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "by_pair": {k: dict(v) for k, v in sorted(by_pair.items(), key=lambda kv: -sum(kv[1].values()))},
        "false_edits": dict(false_edits.most_common()),
        "runs": {label: run.figures() for label, run in runs.items()},
        "margins": {"injected_runs": _sum_tables(tables[False]), "clean_run": _sum_tables(tables[True])},
    }
