"""Satisfaction thresholds: labelled calls read by the model, and the cut points fitted to their labels.

A call centre labels some of its own calls (a CSV of file name and label, 1 to 5, or happy/unhappy for
studies); `enrichd calibrate` reads each with the satisfaction question, and fits the cut points that map
the model's expected satisfaction to the labels (`fit_thresholds`), stored in the state folder with what they
were fitted for (`write_thresholds`, `read_thresholds`). Without them, the thresholds shipped per language for
the default model (`satisfaction_defaults.yaml`, fitted the same way on one labelled set and checked on another)
apply where they were fitted for the model and question in use; else the expectation is rounded.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from daemon.config import Config, EnrichmentConfig
from daemon.engine import Engine
from daemon.errors import ConfigError
from daemon.formats import parse
from daemon.language import detect_language
from daemon.messages import ProgressReport
from daemon.metadata import MetadataResult, MetadataWriter
from daemon.prompts import LANGUAGES, prompt_set

BINARY = {"unhappy": 1, "happy": 5}


def level(label: str) -> int | None:
    """A label as 1..5 (happy 5, unhappy 1), None when it is neither."""
    if label in BINARY:
        return BINARY[label]
    return int(label) if label in ("1", "2", "3", "4", "5") else None


@dataclass(frozen=True)
class Labelled:
    path: Path
    label: str

    @property
    def level(self) -> int | None:
        return level(self.label)


def read_labels(labels: Path, corpus: Path | None = None) -> list[Labelled]:
    """Rows `file,label` (a header and # comments allowed); files relative to `corpus`, else to the CSV's folder."""
    base = corpus or labels.parent
    rows = [row for row in csv.reader(line for line in labels.read_text(encoding="utf-8").splitlines()
                                      if line.strip() and not line.startswith("#"))]
    rows = rows[1:] if rows and rows[0] == ["file", "label"] else rows
    problems = [f"row {i}: expected file,label with a label 1-5, happy or unhappy: {row!r}"
                for i, row in enumerate(rows, start=1) if len(row) != 2 or level(row[1].strip()) is None]
    problems += [f"{row[0]}: not found in {base}" for row in rows if len(row) == 2 and not (base / row[0].strip()).is_file()]
    if problems or not rows:
        raise ConfigError(str(labels), problems or ["no labelled call"])
    return [Labelled(base / row[0].strip(), row[1].strip()) for row in rows]


def read_call(config: Config, call: Labelled) -> tuple[str, str]:
    """A labelled call's dialogue and language, as the daemon would read them."""
    transcript = parse(call.path, config.queue.limits)
    dialogue = transcript.dialogue()
    configured = config.enrichment.language
    return dialogue, detect_language(dialogue[:20_000], transcript.language if configured == "auto" else configured)


def read_calls(config: Config, engine: Engine, calls: list[Labelled], progress: ProgressReport) -> list[dict[str, Any]]:
    """Each labelled call's satisfaction reading: its expectation, rounded score and confidence."""
    enrichment = config.enrichment
    results = []
    for call in calls:
        dialogue, language = read_call(config, call)
        writer = MetadataWriter(engine, enrichment.metadata, prompt_set(enrichment, language))
        result = MetadataResult(values={}, null_reasons={})
        reading = writer.reading(writer.reading_prompt(writer.context(dialogue, result)))
        results.append({"file": call.path.name, "label": call.label, "expected": round(reading.expected, 3),
                        "score": reading.score(), "confidence": round(reading.confidence, 3)})
        progress(f"{call.path.name} ({call.label}): expected {results[-1]['expected']}")
    return results


SATISFACTION_FILE = "satisfaction.yaml"
DEFAULTS_FILE = Path(__file__).with_name("satisfaction_defaults.yaml")
Thresholds = dict[str, tuple[float, ...]]  # language -> the four cut points in force for it


def fit_thresholds(labelled: list[tuple[float, int]]) -> tuple[float, ...]:
    """Four cut points on `expected` that put each labelled call's score as near its label as scores rising with
    `expected` allow: the least total distance between scores and labels (then the most exact agreements), found
    by dynamic programming over the calls sorted by `expected`; calls with equal expectations are never split. A
    cut falls midway between its two runs. Distance, not agreement alone: a call that no rising score can match
    goes to the nearest score, not to whichever end is free (a satisfied caller scored 1)."""
    values = sorted({e for e, _ in labelled})
    blocks = [[label for e, label in labelled if e == value] for value in values]
    cost = lambda block, s: 1000 * sum(abs(s - label) for label in block) - block.count(s)  # noqa: E731
    # best[i][s]: the least cost of the first i blocks, scored at most s
    unreachable = float("inf")
    best = [[0.0] * 6] + [[unreachable] * 6 for _ in blocks]
    for i, block in enumerate(blocks, start=1):
        for s in range(1, 6):
            best[i][s] = min(best[i][s - 1] if s > 1 else unreachable, best[i - 1][s] + cost(block, s))
    scores, s = [0] * len(blocks), 5
    for i in range(len(blocks), 0, -1):
        while s > 1 and best[i][s] == best[i][s - 1]:
            s -= 1
        scores[i - 1] = s
    cuts = []
    for s in range(1, 5):
        below = [v for v, sc in zip(values, scores) if sc <= s]
        above = [v for v, sc in zip(values, scores) if sc > s]
        cut = (max(below) + min(above)) / 2 if below and above else (max(values) + 0.01 if below else min(values) - 0.01)
        cuts.append(round(max([cut, *cuts]), 3))
    return tuple(cuts)


def satisfaction_fit(model_sha256: str, enrichment: EnrichmentConfig) -> str:
    """What thresholds are fitted for: the model and the satisfaction question. Another model, or another
    question, moves the expectations, and thresholds fitted before would misplace every score."""
    question = [[p.metadata_system, p.satisfaction, p.satisfaction_answer]
                for p in (prompt_set(enrichment, language) for language in LANGUAGES)]
    material = [model_sha256, question, enrichment.metadata.transcript_first]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:12]


def _fitted_cuts(entry: Any, fit: str) -> tuple[float, ...] | None:
    """An entry's four rising cut points when it was fitted for `fit`; None when damaged or fitted for another."""
    try:
        cuts = tuple(float(t) for t in entry["thresholds"])
        fitted_for = entry.get("fitted_for")
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return cuts if len(cuts) == 4 and list(cuts) == sorted(cuts) and fitted_for == fit else None


def read_thresholds(state_dir: Path, model_sha256: str, enrichment: EnrichmentConfig) -> tuple[float, ...] | None:
    """The thresholds `enrichd calibrate --write` stored for this deployment, if any, fitted for this model and
    question."""
    return _own_cuts(state_dir, satisfaction_fit(model_sha256, enrichment))


def _own_cuts(state_dir: Path, fit: str) -> tuple[float, ...] | None:
    try:
        data = yaml.safe_load((state_dir / SATISFACTION_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return _fitted_cuts(data, fit)


@functools.cache
def _shipped_entries(path: Path) -> dict[str, Any]:
    """The packaged defaults file, parsed once per process: it is part of the installed package, and a Celery
    child looks the thresholds up again for every task."""
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def packaged_thresholds(model_sha256: str, enrichment: EnrichmentConfig, path: Path = DEFAULTS_FILE) -> Thresholds:
    """The thresholds shipped per language, for the languages whose entry was fitted for this model and question."""
    return _packaged_cuts(satisfaction_fit(model_sha256, enrichment), path)


def _packaged_cuts(fit: str, path: Path = DEFAULTS_FILE) -> Thresholds:
    found = {language: _fitted_cuts(entry, fit) for language, entry in _shipped_entries(path).items()}
    return {language: cuts for language, cuts in found.items() if cuts is not None}


def thresholds_in_force(state_dir: Path, model_sha256: str, enrichment: EnrichmentConfig) -> Thresholds:
    """The deployment's own thresholds for every language when it has calibrated for this model and question, else
    the packaged ones where they apply; a language with neither is rounded."""
    fit = satisfaction_fit(model_sha256, enrichment)
    own = _own_cuts(state_dir, fit)
    return {language: own for language in LANGUAGES} if own else _packaged_cuts(fit)


def write_thresholds(state_dir: Path, thresholds: tuple[float, ...], calls: int, model_sha256: str,
                     enrichment: EnrichmentConfig) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / SATISFACTION_FILE
    path.write_text(f"# written by `enrichd calibrate --write` from {calls} labelled calls: a call whose expected "
                    "satisfaction reaches the k-th threshold scores k + 1; `fitted_for` names the model and the "
                    "question they were fitted with (they are ignored with any other)\n"
                    + yaml.safe_dump({"thresholds": list(thresholds),
                                      "fitted_for": satisfaction_fit(model_sha256, enrichment)}, sort_keys=False))
    return path
