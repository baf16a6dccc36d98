"""Satisfaction per deployment: labelled calls read by the model, and thresholds fitted to their labels.

A call centre labels some of its own calls (a CSV of file name and label, 1 to 5, or happy/unhappy for
studies); `enrichd calibrate` reads each with the satisfaction question, and fits the cut points that map
the model's expected satisfaction to the labels (metadata.fit_thresholds).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.engine import Engine
from daemon.errors import ConfigError
from daemon.formats import parse
from daemon.language import detect_language
from daemon.messages import ProgressReport
from daemon.metadata import MetadataResult, MetadataWriter
from daemon.prompts import prompt_set

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
