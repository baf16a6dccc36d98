"""The metadata fields of an enriched document, each declared once: its key in the document (and the schema), the
writer's task that makes it (the prompt `prompts.<task>`, the settings `enrichment.metadata.<task>`), how it is
made, the validator and stop strings of a written answer, and its lines in the Markdown view.

A new field is one entry here, plus its prompt and its validator (answers.py) and its place in the output schema;
tests/test_fields.py walks every entry through the writer's values, the document, the schema and the Markdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from daemon.answers import SourceText, validate_bullets, validate_summary, validate_title
from daemon.config import MetadataConfig

Validator = Callable[[str, SourceText, MetadataConfig], Any]


def _satisfaction_lines(satisfaction: dict[str, Any]) -> list[str]:
    because = f" — {satisfaction['justification']}" if satisfaction["justification"] else ""
    return [f"**Satisfaction:** {satisfaction['score']}/5 (expected {satisfaction['expected']}){because}", ""]


def _record_lines(record: dict[str, Any]) -> list[str]:
    lines = ["## Call record", ""]
    if record["reason"]:
        lines.append(f"**Reason:** {record['reason']}  ")
    if record["actions"]:
        lines.append(f"**Actions:** {'; '.join(record['actions'])}  ")
    resolution = record["resolution"]
    if resolution:
        lines.append(f"**Resolution:** {resolution['value']} (p = {resolution['confidence']})  ")
    if record["next_steps"]:
        lines.append(f"**Next steps:** {'; '.join(record['next_steps'])}  ")
    if record["entities"]:
        lines.append("**Entities:** " + ", ".join(f"{e['text']} (segment {e['segment']})" for e in record["entities"]))
    return lines + [""]


@dataclass(frozen=True)
class MetadataField:
    name: str
    # written: an answer generated, validated, retried once; read: probabilities read over closed answers
    # (metadata.py); derived: made after the writer from the other fields and the transcript (record.py)
    made: Literal["written", "read", "derived"]
    markdown: Callable[[Any], list[str]]  # its lines in the Markdown view, for a value that is not null
    task: str | None = None  # the writer's task, where the writer makes it
    validate: Validator | None = None
    stop: list[str] = field(default_factory=list)

    @property
    def value_key(self) -> str:
        """Its key among the values the writer and the pipeline hand to the output."""
        return self.task or self.name


# In the writer's order, which is also the document's and the Markdown view's (the title is the view's heading).
FIELDS: tuple[MetadataField, ...] = (
    MetadataField("title", "written", lambda title: [], "title", validate_title, ["\n"]),
    MetadataField("summary", "written", lambda summary: [summary, ""], "summary", validate_summary, ["\n\n\n"]),
    MetadataField("satisfaction", "read", _satisfaction_lines, "satisfaction"),
    MetadataField("bullet_points", "written", lambda bullets: [f"- {b}" for b in bullets] + [""], "bullets",
                  validate_bullets, ["\n\n\n"]),
    MetadataField("record", "derived", _record_lines),
)
WRITER_FIELDS = tuple(f for f in FIELDS if f.task is not None)
