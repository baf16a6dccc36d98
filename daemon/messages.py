"""What crosses between processes: the jobs a pool runs and the events its workers send back.

Every message is a frozen dataclass (picklable for multiprocessing queues, and plain data for a JSON
transport): a worker reports that it is ready, alive, how far a job has got, and how each job ended. What
crosses the Celery broker (a task, and how it ended) goes through `to_wire`/`from_wire` only: JSON, with a
kind and a version, and nothing taken that the dataclass does not declare.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any, Callable, Union

from daemon.engine import EngineStats
from daemon.errors import WireError

ProgressReport = Callable[[str], None]
PROGRESS_INTERVAL_SECONDS = 1.0


def throttled(report: ProgressReport, interval: float = PROGRESS_INTERVAL_SECONDS) -> ProgressReport:
    """At most one progress report per `interval`: a job reports every segment, its supervisor needs far fewer."""
    last = 0.0

    def progress(text: str) -> None:
        nonlocal last
        if time.monotonic() - last >= interval:
            last = time.monotonic()
            report(text)

    return progress


class WorkerState(Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    RETIRING = "retiring"


@dataclass(frozen=True)
class Job:
    """One claimed file: its name in processing/, which attempt this is, when it was claimed (epoch seconds: a
    worker on another host measures the dispatch latency against it), and the sha256 of the bytes the supervisor
    read at the claim (every document is checked against it before it is written)."""

    name: str
    attempt: int
    claimed: float = 0.0
    sha256: str = ""

    def dispatch_seconds(self) -> float | None:
        """Claim to the start of work; None for a job that carries no claim time."""
        return round(max(0.0, time.time() - self.claimed), 3) if self.claimed else None


@dataclass(frozen=True)
class SlotStatus:
    """One worker as a pool reports it, for the status file and the throughput line."""

    id: int
    pid: int | None
    state: WorkerState
    cpus: tuple[int, ...]
    job: Job | None
    progress: str
    jobs_done: int
    busy: float
    host: str | None = None


@dataclass(frozen=True)
class ErrorInfo:
    type: str
    message: str
    traceback: str | None = None
    pid: int | None = None

    @classmethod
    def of(cls, exc: BaseException) -> "ErrorInfo":
        """Where `exc` is being handled, its traceback too."""
        return cls(type(exc).__name__, str(exc), traceback.format_exc(), os.getpid())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JobSummary:
    """A finished job in figures: what the log line, the throughput and the bench read."""

    outputs: tuple[str, ...]
    timings: dict[str, float]
    segments: int
    corrections: dict[str, int]
    tokens: EngineStats
    cache_result: str | None
    cache: dict[str, dict[str, int]] = field(default_factory=dict)
    host: str | None = None
    pid: int | None = None
    resolution: str | None = None  # the call record's, for the metrics

    def as_dict(self) -> dict[str, Any]:
        """Plain data for a JSON transport."""
        return {**asdict(self), "outputs": list(self.outputs)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobSummary":
        return cls(**{**data, "outputs": tuple(data["outputs"]), "tokens": EngineStats(**data["tokens"])})

    @classmethod
    def of(cls, output: dict[str, Any], outputs: tuple[str, ...], write_seconds: float) -> "JobSummary":
        stats = output["stats"]
        counts = EngineStats.of_tokens(stats["tokens"], stats.get("model_calls", 0))
        timings = {**output["timings"], "write": round(write_seconds, 3)}
        record = (output.get("metadata") or {}).get("record") or {}
        return cls(outputs, timings, len(output["segments"]), stats.get("segments", {}), counts,
                   stats.get("cache"), stats.get("cache_hits_misses", {}),
                   resolution=(record.get("resolution") or {}).get("value"))


@dataclass(frozen=True)
class Ready:
    worker: int
    pid: int
    load_seconds: float


@dataclass(frozen=True)
class Heartbeat:
    worker: int


@dataclass(frozen=True)
class Progress:
    worker: int
    job: Job
    text: str


@dataclass(frozen=True)
class Done:
    """A job ended well: the document, for the supervisor to write (whichever backend ran the job)."""

    worker: int
    job: Job
    summary: JobSummary
    document: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    """A job ended badly: `permanent` (the file's content: never retried), or `host_fault` (a folder of the daemon
    could not be written: the file waits, nothing is counted), or else transient (retried with backoff)."""

    worker: int
    job: Job
    error: ErrorInfo
    permanent: bool
    host_fault: bool = False


@dataclass(frozen=True)
class Fatal:
    """The worker cannot work at all (its model did not load): the daemon stops."""

    worker: int
    error: ErrorInfo


@dataclass(frozen=True)
class Lost:
    """Not from a worker but about one: it died, hung, overran or never loaded, and was replaced; `job`, the job
    it held if any, goes back to the queue."""

    worker: int
    job: Job | None
    reason: str
    pid: int | None


Event = Union[Ready, Heartbeat, Progress, Done, Failed, Fatal]


@dataclass(frozen=True)
class Claimed:
    """A job for a local worker, with the bytes the supervisor read at the claim: a worker reads no spool folder."""

    job: Job
    data: bytes


@dataclass(frozen=True)
class TaskMessage:
    """One job sent to a Celery worker: the file's bytes (base64; their sha256 is the job's) and what they must be
    enriched with."""

    job: Job
    data: str
    model_identity: str
    prompt_version: str


WIRE_VERSION = 2  # 2: the input's sha256 travels in the job
WIRE_KINDS: dict[str, type] = {"task": TaskMessage, "done": Done, "failed": Failed}
NESTED: dict[str, Callable[[Any], Any]] = {
    "job": lambda d: Job(**_declared(Job, d)),
    "error": lambda d: ErrorInfo(**_declared(ErrorInfo, d)),
    "summary": lambda d: JobSummary.from_dict(_declared(JobSummary, d)),
}


def _declared(cls: type, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise WireError(f"a {cls.__name__} that is not an object")
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise WireError(f"{cls.__name__} with unknown field(s) {', '.join(sorted(map(str, unknown)))[:200]} "
                        "(sent by a newer enrichd?)")
    return data


def to_wire(message: TaskMessage | Done | Failed) -> dict[str, Any]:
    """Plain JSON data: the kind, the wire version, and the dataclass's own fields."""
    kind = next(k for k, cls in WIRE_KINDS.items() if isinstance(message, cls))
    body = asdict(message)
    if isinstance(message, Done):
        body["summary"] = message.summary.as_dict()
    return {"kind": kind, "version": WIRE_VERSION, **body}


def from_wire(data: Any) -> TaskMessage | Done | Failed:
    """The message `to_wire` made, rebuilt and typed; anything else raises WireError saying what is wrong."""
    if not isinstance(data, dict):
        raise WireError(f"a message that is not an object ({type(data).__name__})")
    body = dict(data)
    kind, version = body.pop("kind", None), body.pop("version", None)
    if version != WIRE_VERSION:
        raise WireError(f"wire version {str(version)[:20]!r}, this enrichd speaks version {WIRE_VERSION}")
    if kind not in WIRE_KINDS:
        raise WireError(f"a message of unknown kind {str(kind)[:40]!r}")
    try:
        values = {name: NESTED[name](value) if name in NESTED else value
                  for name, value in _declared(WIRE_KINDS[kind], body).items()}
        return WIRE_KINDS[kind](**values)
    except (TypeError, ValueError, KeyError) as exc:
        raise WireError(f"a {kind} message of the wrong shape: {str(exc)[:200]}") from exc
