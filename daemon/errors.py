"""Typed errors. Each carries the context an operator needs to act without reading code."""

from __future__ import annotations


class EnrichdError(Exception):
    """Base of every error the daemon raises on purpose."""


class ConfigError(EnrichdError):
    """The configuration is invalid; `problems` lists every bad key, not just the first."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class ModelError(EnrichdError):
    """The model file is missing, incomplete, or not the one expected."""


class TranscriptError(EnrichdError):
    """An input file cannot be read as a transcript. Permanent: retrying will not help."""

    def __init__(self, file: str, fmt: str | None, problem: str, line: int | None = None):
        self.file = file
        self.format = fmt
        self.problem = problem
        self.line = line
        where = f" line {line}" if line is not None else ""
        super().__init__(f"{file} ({fmt or 'unknown format'}){where}: {problem}")


class EngineError(EnrichdError):
    """llama.cpp failed while evaluating or generating."""


class OutputError(EnrichdError):
    """The enriched output could not be written (disk full, read-only outbox). Transient."""


class StorageError(OutputError):
    """A folder of the daemon's own (outbox, failed/, archive, state) cannot be written: disk full, read-only,
    over quota, permissions. A fault of the host, not of the file: intake pauses until writing works again,
    and no file is charged an attempt for it."""

    def __init__(self, folder: object, problem: str):
        self.folder = str(folder)
        self.problem = problem
        super().__init__(f"{folder}: {problem}")


class PoolUnavailable(EnrichdError):
    """The pool cannot take a job now (a remote pool's broker is down): the file goes back to the inbox."""


class QueueError(EnrichdError):
    """The spool directories are unusable (missing, on different filesystems, not writable)."""


class WireError(EnrichdError):
    """A message from the broker that this daemon cannot take: not an object, another wire version, a kind or a
    field it does not know (a newer worker's), or a value of the wrong type. That job's failure, never a crash."""
