"""A worker process: pinned to its own CPUs, one model instance for its whole life, one job at a time.

While other workers sit idle and no file waits, its threads grow onto their CPUs and give them back
before those workers start a job (lending.py): a lone file gets every core.

Started with the spawn method (llama.cpp links OpenMP; a child forked after a decode hangs). It
reads only from processing/ and writes only to the outbox; the supervisor owns the inbox and every
move of the input. Signals are ignored: the supervisor decides when a worker stops. Whatever goes
wrong inside a job is that job's failure, reported with its traceback; the worker lives on.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue

from loguru import logger

from daemon.cache import Cache, cache_path
from daemon.config import Config
from daemon.engine import Engine, EngineFactory
from daemon.errors import StorageError, TranscriptError
from daemon.formats import parse
from daemon.lending import Lending, Loans
from daemon.logs import setup_logging
from daemon.messages import Done, ErrorInfo, Failed, Fatal, Heartbeat, Job, JobSummary, Progress, Ready, throttled
from daemon.model_store import ModelInfo
from daemon.names import shown
from daemon.output import write_outputs
from daemon.pipeline import EnrichContext, enrich

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerSpec:
    id: int
    cpu_sets: tuple[tuple[int, ...], ...]
    loans: Loans
    config: Config
    model: ModelInfo
    factory: EngineFactory

    @property
    def cpus(self) -> tuple[int, ...]:
        """The CPUs this worker owns (it may borrow others' while they are idle)."""
        return self.cpu_sets[self.id]


def run_job(job: Job, spec: WorkerSpec, context: EnrichContext, events: Queue) -> None:
    config = spec.config
    progress = throttled(lambda text: events.put(Progress(spec.id, job, text)))
    dispatch = job.dispatch_seconds()
    try:
        started = time.perf_counter()
        transcript = parse(config.paths.processing / job.name, config.queue.limits, shown(job.name))
        output = enrich(transcript, context, time.perf_counter() - started, progress, dispatch)
        writing = time.perf_counter()
        written = write_outputs(config.paths.outbox, job.name, output, config.output.markdown)
        write_seconds = time.perf_counter() - writing
    except TranscriptError as exc:
        events.put(Failed(spec.id, job, ErrorInfo.of(exc), permanent=True))
        return
    except StorageError as exc:
        events.put(Failed(spec.id, job, ErrorInfo.of(exc), permanent=False, host_fault=True))
        return
    except Exception as exc:  # anything else is this job's transient failure, not the worker's end
        events.put(Failed(spec.id, job, ErrorInfo.of(exc), permanent=False))
        return
    events.put(Done(spec.id, job, JobSummary.of(output, tuple(p.name for p in written), write_seconds)))


def _heartbeat(spec: WorkerSpec, events: Queue, stop: threading.Event) -> None:
    while not stop.wait(spec.config.workers.heartbeat_seconds):
        events.put(Heartbeat(spec.id))


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
    setup_logging(spec.config.logging, process=f"worker-{spec.id}")
    logger.debug("worker {} pinned to CPUs {}", spec.id, ",".join(map(str, spec.cpus)))
    loading = time.perf_counter()
    try:
        engine, scorer = spec.factory.load_all(spec.config, len(spec.cpus))
    except Exception as exc:  # any load failure is fatal for this worker; the supervisor decides what next
        events.put(Fatal(spec.id, ErrorInfo.of(exc)))
        return
    engines: list[Engine] = [engine] if scorer is None else [engine, scorer]

    def set_threads(threads: int) -> None:
        for each in engines:
            each.set_threads(threads)

    lending = Lending(spec.id, list(spec.cpu_sets), spec.loans, spec.config.paths.state, set_threads)
    for each in engines:
        each.on_decode(lending.adjust)
    cache = Cache(cache_path(spec.config)) if spec.config.cache.enabled else None
    context = EnrichContext(spec.config, spec.model, lambda: engine, cache, (lambda: scorer) if scorer else None)
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(spec, events, stop), daemon=True).start()
    events.put(Ready(spec.id, os.getpid(), time.perf_counter() - loading))
    while (job := jobs.get()) is not None:
        lending.hold_own()
        try:
            run_job(job, spec, context, events)
        finally:
            lending.free_own()
    stop.set()
    if cache is not None:
        cache.close()
