"""`enrichd bench --modes satisfaction --labels FILE`: does the satisfaction score order the calls as people did?

For each labelled call, the satisfaction step as the daemon runs it (probabilities of the answers 1..5,
then the answer continued with its reason), and the previous method on the same call and engine (the
score written out by the model, then parsed), frozen here to measure against. Both are timed as the
daemon runs them, on a transcript already read. Reported per method: the share of (unhappy, happy)
pairs ordered right (AUC, ties half), the mean per label, nulls, seconds and tokens.
"""

from __future__ import annotations

import re
import statistics
import time
from typing import Any, Callable

from daemon.calibration import Labelled, read_call
from daemon.config import Config, MetadataConfig
from daemon.engine import Engine, EngineStats
from daemon.messages import ProgressReport
from daemon.answers import SourceText
from daemon.metadata import MetadataResult, MetadataWriter
from daemon.prompts import fenced, prompt_set

PREVIOUS_TASK = {
    "fr": ("Note la satisfaction de l'appelant à la fin de l'appel de 1 (très insatisfait) à 5 (très satisfait). "
           "Réponds exactement sous la forme : Note : N. Justification : une phrase."),
    "en": ("Rate the caller's satisfaction at the end of the call from 1 (very unsatisfied) to 5 (very satisfied). "
           "Answer exactly as: Score: N. Justification: one sentence."),
}
PREVIOUS_SCORE = re.compile(r"(?:note|score|satisfaction)\s*[:=]?\s*\**\s*([1-5])\b|\b([1-5])\s*/\s*5\b", re.IGNORECASE)
LONE_DIGIT = re.compile(r"\b([1-5])\b")


def auc(unhappy: list[float], happy: list[float]) -> float | None:
    """The share of (unhappy, happy) pairs where the happy call has the higher value; ties count half."""
    if not unhappy or not happy:
        return None
    wins = sum((h > u) + 0.5 * (h == u) for u in unhappy for h in happy)
    return round(wins / (len(unhappy) * len(happy)), 3)


def _ordering(calls: list[Labelled], values: list[float | None]) -> float | None:
    unhappy = [v for c, v in zip(calls, values) if v is not None and (c.level or 3) <= 2]
    happy = [v for c, v in zip(calls, values) if v is not None and (c.level or 3) >= 4]
    return auc(unhappy, happy)


def _by_label(calls: list[Labelled], values: list[float | None]) -> dict[str, float | None]:
    labels = sorted({c.label for c in calls})
    means = {}
    for label in labels:
        found = [v for c, v in zip(calls, values) if c.label == label and v is not None]
        means[label] = round(statistics.mean(found), 2) if found else None
    return means


def previous_step(engine: Engine, metadata: MetadataConfig, system: str, context: str, language: str) -> int | None:
    """The satisfaction task as the daemon ran it before: the model writes "Note : N. Justification : ..."."""
    answer = engine.chat(system, f"{fenced(context)}\n\n{PREVIOUS_TASK[language]}",
                         max_tokens=metadata.satisfaction.max_tokens, temperature=metadata.satisfaction.temperature,
                         stop=["\n\n"], repeat_penalty=metadata.repeat_penalty).text
    match = PREVIOUS_SCORE.search(answer) or LONE_DIGIT.search(answer)
    return int(next(g for g in match.groups() if g)) if match else None


def run_satisfaction(config: Config, engine: Engine, calls: list[Labelled], progress: ProgressReport) -> dict[str, Any]:
    """Per call, the transcript is read first, untimed, as the title and summary read it before the satisfaction
    step in the daemon; then both steps are timed on the cached transcript, in turn first, so that neither
    always runs on a cache the other left or on a machine that drifts."""
    metadata = config.enrichment.metadata
    spent = {"scored": EngineStats(), "previous": EngineStats()}
    scored: list[dict[str, Any]] = []
    previous: list[dict[str, Any]] = []
    for number, call in enumerate(calls):
        dialogue, language = read_call(config, call)
        prompts = prompt_set(config.enrichment, language)
        writer = MetadataWriter(engine, metadata, prompts)
        result = MetadataResult(values={}, null_reasons={})
        context = writer.context(dialogue, result)
        engine.chat(prompts.metadata_system, f"{fenced(context)}\n\n{prompts.title}", max_tokens=1, temperature=0.0)
        steps: dict[str, Callable[[], Any]] = {
            "scored": lambda: writer.satisfaction(context, SourceText.of(dialogue), result),
            "previous": lambda: previous_step(engine, metadata, prompts.metadata_system, context, language),
        }
        values, seconds = {}, {}
        for name in ("scored", "previous") if number % 2 == 0 else ("previous", "scored"):
            before, started = engine.stats + EngineStats(), time.perf_counter()
            values[name] = steps[name]()
            seconds[name] = round(time.perf_counter() - started, 2)
            spent[name] = spent[name] + (engine.stats - before)
        scored.append({"file": call.path.name, "label": call.label, "seconds": seconds["scored"],
                       **(values["scored"] or {}), "null_reasons": result.null_reasons})
        previous.append({"score": values["previous"], "seconds": seconds["previous"]})
        progress(f"{call.path.name} ({call.label}): expected {scored[-1].get('expected')}, previous method "
                 f"{values['previous']}")
    expected = [r.get("expected") for r in scored]
    mode = [1 + max(range(5), key=r["probabilities"].__getitem__) if r.get("probabilities") else None for r in scored]
    rounded = [r.get("score") for r in scored]
    return {
        "calls": len(calls),
        "labels": {label: sum(c.label == label for c in calls) for label in sorted({c.label for c in calls})},
        "scored": {
            "auc_expected": _ordering(calls, expected),
            "auc_score_rounded_expectation": _ordering(calls, rounded),
            "auc_score_most_probable": _ordering(calls, mode),
            "mean_expected_by_label": _by_label(calls, expected),
            "mean_score_by_label": _by_label(calls, rounded),
            "null_scores": sum(e is None for e in expected),
            "null_justifications": sum(r.get("justification") is None for r in scored),
            "seconds": round(sum(r["seconds"] for r in scored), 1),
            "evaluated_tokens": spent["scored"].evaluated_tokens,
            "generated_tokens": spent["scored"].generated_tokens,
        },
        "previous": {
            "auc_score": _ordering(calls, [r["score"] for r in previous]),
            "mean_score_by_label": _by_label(calls, [r["score"] for r in previous]),
            "null_scores": sum(r["score"] is None for r in previous),
            "seconds": round(sum(r["seconds"] for r in previous), 1),
            "evaluated_tokens": spent["previous"].evaluated_tokens,
            "generated_tokens": spent["previous"].generated_tokens,
        },
        "per_call": [{**s, "previous_score": p["score"], "previous_seconds": p["seconds"]} for s, p in zip(scored, previous)],
    }
