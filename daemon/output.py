"""The enriched JSON (schema version 1), its optional Markdown rendering, and crash-safe writes."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.correction.outcomes import EMPTY, SKIPPED
from daemon.errors import OutputError, StorageError
from daemon.fields import FIELDS
from daemon.fsops import fsync_dir, is_host_fault
from daemon.names import fitted, shown
from daemon.schema import schema_errors
from daemon.transcript import Transcript

SCHEMA_VERSION = 1
OUTPUT_SUFFIX = ".enriched.json"
MARKDOWN_SUFFIX = ".enriched.md"


@dataclass
class SegmentOutcome:
    text: str
    status: str
    edits: list[dict[str, Any]] = field(default_factory=list)


def build_output(
    transcript: Transcript,
    outcomes: list[SegmentOutcome] | None,
    metadata: dict[str, Any] | None,
    provenance: dict[str, Any],
    timings: dict[str, float],
    stats: dict[str, Any],
) -> dict[str, Any]:
    """Stable key order; `outcomes` None means not corrected (every segment `skipped`)."""
    segments = []
    for i, segment in enumerate(transcript.segments):
        outcome = outcomes[i] if outcomes else SegmentOutcome(segment.text, SKIPPED if segment.text.strip() else EMPTY)
        entry: dict[str, Any] = {
            "index": segment.index, "start": segment.start, "end": segment.end, "speaker": segment.speaker,
            "text": outcome.text, "original_text": segment.text, "correction": outcome.status,
        }
        if outcome.edits:
            entry["edits"] = outcome.edits
        if segment.confidence is not None:
            entry["confidence"] = round(segment.confidence, 4)
        segments.append(entry)
    return {
        "schema_version": SCHEMA_VERSION,
        "id": transcript.id,
        "source": {"file": transcript.source_file, "format": transcript.format,
                   "sha256": transcript.sha256, "bytes": transcript.bytes},
        "language": transcript.language,
        "segments": segments,
        "metadata": None if metadata is None else {f.name: metadata.get(f.value_key) for f in FIELDS},
        "provenance": provenance,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "stats": stats,
    }


def not_of_job(document: Any, name: str, sha256: str, model_identity: str, prompt_version: str) -> str | None:
    """Why a document received for a job (from a local worker, or a Celery worker through the broker) is not that
    job's output: the input it was made from, the file it names, the model or the prompts that made it; None
    when it is."""
    if not isinstance(document, dict):
        return "the document is not an object"
    source = document.get("source") if isinstance(document.get("source"), dict) else {}
    provenance = document.get("provenance") if isinstance(document.get("provenance"), dict) else {}
    model = provenance.get("model") if isinstance(provenance.get("model"), dict) else {}
    scorer = model.get("scorer") if isinstance(model.get("scorer"), dict) else None
    made_by = f"{model.get('sha256')}+{scorer.get('sha256')}" if scorer else str(model.get("sha256"))
    if source.get("sha256") != sha256:
        return f"it was made from other bytes (sha256 {str(source.get('sha256'))[:12]}, the file's is {sha256[:12]})"
    if source.get("file") != shown(name):
        return f"it names another file ({str(source.get('file'))[:80]!r})"
    if made_by != model_identity:
        return f"it was made by another model ({made_by[:12]}, this daemon's is {model_identity[:12]})"
    if provenance.get("prompt_version") != prompt_version:
        return f"it was made with other prompts ({str(provenance.get('prompt_version'))[:12]}, this daemon's are {prompt_version})"
    return None


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes:02d}:{rest:02d}"


def render_markdown(output: dict[str, Any]) -> str:
    meta = output.get("metadata") or {}
    lines = [f"# {meta.get('title') or output['id']}", ""]
    for declared in FIELDS:
        if meta.get(declared.name):
            lines += declared.markdown(meta[declared.name])
    lines += ["## Dialogue", ""]
    for segment in output["segments"]:
        if segment["text"].strip():
            who = f"**{segment['speaker']}** " if segment["speaker"] else ""
            lines.append(f"[{_clock(segment['start'])}] {who}{segment['text']}  ")
    return "\n".join(lines).rstrip() + "\n"


def output_names(input_name: str) -> tuple[str, str]:
    """Deterministic, so a re-run after a crash overwrites instead of adding a second output; an input in a
    subfolder of the inbox gets its outputs in the same subfolder of the outbox; a stem too long for the
    file system's name limit is shortened with a hash of it (names.fitted)."""
    name = Path(input_name)
    return str(name.parent / fitted(name.stem, OUTPUT_SUFFIX)), str(name.parent / fitted(name.stem, MARKDOWN_SUFFIX))


def write_atomic(path: Path, text: str) -> None:
    """Write `.name.tmp`, fsync, rename over the final name, fsync the folder; never a partial file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        problem = f"cannot write {shown(path.name)}: {exc.strerror or exc}"
        if is_host_fault(exc, path.parent):
            raise StorageError(path.parent, problem) from exc
        raise OutputError(f"{path.parent}: {problem}") from exc


def write_outputs(outbox: Path, input_name: str, output: dict[str, Any], markdown: bool) -> list[Path]:
    errors = schema_errors(output)
    if errors:
        raise OutputError(f"{input_name}: output does not match the schema: {'; '.join(errors[:5])}")
    json_name, md_name = output_names(input_name)
    written = [outbox / json_name]
    try:
        written[0].parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_host_fault(exc, outbox):
            raise StorageError(outbox, f"cannot make the folder of {json_name}: {exc.strerror}") from exc
        raise OutputError(f"{outbox}: cannot make the folder of {json_name}: {exc.strerror}") from exc
    if markdown:
        write_atomic(outbox / md_name, render_markdown(output))
        written.append(outbox / md_name)
    write_atomic(outbox / json_name, json.dumps(output, ensure_ascii=False, indent=2) + "\n")
    return written
