"""The canonical transcript every input format is parsed into."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Segment:
    index: int
    text: str
    start: float | None = None
    end: float | None = None
    speaker: str | None = None
    confidence: float | None = None

    def line(self, text: str | None = None) -> str:
        """The turn as a line of the dialogue, with its speaker; `text` in place of its own (a correction)."""
        text = self.text if text is None else text
        return f"{self.speaker}: {text}" if self.speaker else text


@dataclass
class Transcript:
    id: str
    source_file: str
    format: str
    sha256: str
    bytes: int
    segments: list[Segment] = field(default_factory=list)
    language: str | None = None

    def dialogue(self, texts: list[str] | None = None) -> str:
        """One line per non-empty turn, with its speaker: the text the metadata prompts read."""
        lines = []
        for segment, text in zip(self.segments, texts or [s.text for s in self.segments]):
            if text.strip():
                lines.append(segment.line(text))
        return "\n".join(lines)
