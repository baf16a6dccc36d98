"""A worker process: pinned to its own CPUs, one model instance for its whole life, one job at a time.

Started with the spawn method (llama.cpp links OpenMP; a child forked after a decode hangs). It
reads only from processing/ and writes only to the outbox; the supervisor owns the inbox and every
move of the input. Signals are ignored: the supervisor decides when a worker stops.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from loguru import logger

from daemon.cache import Cache, cache_path
from daemon.config import Config
from daemon.engine import Engine, EngineFactory
from daemon.errors import EnrichdError, OutputError, TranscriptError
from daemon.formats import parse
from daemon.logs import setup_logging
from daemon.model_store import ModelInfo
from daemon.output import write_outputs
from daemon.pipeline import EnrichContext, enrich

PROGRESS_INTERVAL_SECONDS = 1.0
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerSpec:
    id: int
    cpus: tuple[int, ...]
    config: Config
    model: ModelInfo
    factory: EngineFactory


@dataclass(frozen=True)
class Job:
    name: str
    attempt: int


def _summary(output: dict[str, Any], outputs: list[Path]) -> dict[str, Any]:
    stats = output["stats"]
    return {
        "outputs": [p.name for p in outputs],
        "timings": output["timings"],
        "segments": len(output["segments"]),
        "corrections": stats.get("segments", {}),
        "model_calls": stats.get("model_calls", 0),
        "generated_tokens": stats["tokens"]["generated"],
        "evaluated_tokens": stats["tokens"]["evaluated"],
        "cache_result": stats.get("cache"),
        "cache": stats.get("cache_hits_misses", {}),
    }


def _error(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc(), "pid": os.getpid()}


def run_job(job: Job, spec: WorkerSpec, context: EnrichContext, events: Queue) -> None:
    config = spec.config
    last_report = 0.0

    def progress(text: str) -> None:
        nonlocal last_report
        now = time.monotonic()
        if now - last_report >= PROGRESS_INTERVAL_SECONDS:
            last_report = now
            events.put({"kind": "progress", "worker": spec.id, "job": job.name, "text": text})

    try:
        started = time.perf_counter()
        transcript = parse(config.paths.processing / job.name, config.queue.max_bytes)
        output = enrich(transcript, context, time.perf_counter() - started, progress)
        written = write_outputs(config.paths.outbox, job.name, output, config.output.markdown)
    except TranscriptError as exc:
        events.put({"kind": "failed", "worker": spec.id, "job": job.name, "permanent": True, "error": _error(exc)})
        return
    except (OutputError, EnrichdError, OSError, RuntimeError, ValueError) as exc:
        events.put({"kind": "failed", "worker": spec.id, "job": job.name, "permanent": False, "error": _error(exc)})
        return
    events.put({"kind": "done", "worker": spec.id, "job": job.name, "summary": _summary(output, written)})


def _heartbeat(spec: WorkerSpec, events: Queue, stop: threading.Event) -> None:
    while not stop.wait(spec.config.workers.heartbeat_seconds):
        events.put({"kind": "heartbeat", "worker": spec.id})


def _die_with_parent() -> None:
    """A worker must not outlive a supervisor killed with SIGKILL: it would hold a model and CPUs."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        os._exit(1)


def worker_main(spec: WorkerSpec, jobs: Queue, events: Queue) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.sched_setaffinity(0, spec.cpus)
    setup_logging(spec.config.logging)
    logger.debug("worker {} pinned to CPUs {}", spec.id, ",".join(map(str, spec.cpus)))
    try:
        engine: Engine = spec.factory.load(spec.config, spec.model, len(spec.cpus))
    except Exception as exc:  # any load failure is fatal for this worker; the supervisor decides what next
        events.put({"kind": "fatal", "worker": spec.id, "error": _error(exc)})
        return
    cache = Cache(cache_path(spec.config)) if spec.config.cache.enabled else None
    context = EnrichContext(spec.config, spec.model, lambda: engine, cache)
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(spec, events, stop), daemon=True).start()
    events.put({"kind": "ready", "worker": spec.id, "pid": os.getpid()})
    while (job := jobs.get()) is not None:
        run_job(job, spec, context, events)
    stop.set()
    if cache is not None:
        cache.close()
