"""A worker process: pinned to its own CPUs, one model instance for its whole life, one job at a time.

While other workers sit idle and no file waits, its threads grow onto their CPUs and give them back
before those workers start a job (lending.py): a lone file gets every core.

Started with the spawn method (llama.cpp links OpenMP; a child forked after a decode hangs). It is
handed each input's bytes and sends the document back; the supervisor owns the inbox, every read and
move of the input and every write to the outbox. Signals are ignored: the supervisor decides when a worker stops.
Whatever goes wrong inside a job is that job's failure, reported with its traceback; the worker lives on.
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

from daemon.config import Config
from daemon.engine import EngineFactory
from daemon.job import run_job
from daemon.lending import Lending, Loans
from daemon.messages import ErrorInfo, Fatal, Heartbeat, Progress, Ready, throttled
from daemon.model_store import ModelInfo
from daemon.pipeline import InForce
from daemon.worker_setup import open_context

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerSpec:
    id: int
    cpu_sets: tuple[tuple[int, ...], ...]
    loans: Loans
    config: Config
    model: ModelInfo
    factory: EngineFactory
    in_force: InForce

    @property
    def cpus(self) -> tuple[int, ...]:
        """The CPUs this worker owns (it may borrow others' while they are idle)."""
        return self.cpu_sets[self.id]


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
    loading = time.perf_counter()
    try:
        context, loaded = open_context(spec.config, spec.factory, spec.cpus, process=f"worker-{spec.id}", model=spec.model,
                                       in_force=spec.in_force)
    except Exception as exc:  # any load failure is fatal for this worker; the supervisor decides what next
        events.put(Fatal(spec.id, ErrorInfo.of(exc)))
        return
    logger.debug("worker {} pinned to CPUs {}", spec.id, ",".join(map(str, spec.cpus)))

    def set_threads(threads: int) -> None:
        for each in loaded.engines:
            each.set_threads(threads)

    lending = Lending(spec.id, list(spec.cpu_sets), spec.loans, spec.config.paths.state, set_threads)
    for each in loaded.engines:
        each.on_decode(lending.adjust)
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(spec, events, stop), daemon=True).start()
    events.put(Ready(spec.id, os.getpid(), time.perf_counter() - loading))
    while (claimed := jobs.get()) is not None:
        job = claimed.job
        lending.hold_own()
        try:
            progress = throttled(lambda text, job=job: events.put(Progress(spec.id, job, text)))
            events.put(run_job(job, claimed.data, context, progress, spec.id))
        finally:
            lending.free_own()
    stop.set()
    if context.cache is not None:
        context.cache.close()
