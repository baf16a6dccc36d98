"""Where jobs run. `Pool` is what the supervisor asks of any pool; `LocalPool` runs pinned worker processes.

A pool only starts, watches, replaces, recycles and stops its workers; what becomes of a job's file is
the file queue's business. A worker that dies, hangs or overruns its job is replaced and its job is
handed back (`Lost`), never failed here. Nothing in a pool blocks the supervisor's loop for long: a
worker being recycled or loading its model is looked at again on the next tick.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Protocol

from loguru import logger

from daemon.config import Config
from daemon.cpus import WorkerPlan
from daemon.engine import EngineFactory
from daemon.lending import Loans
from daemon.messages import (Claimed, Done, Event, Failed, Heartbeat, Job, Lost, Progress, Ready, SlotStatus,
                             WorkerState)
from daemon.model_store import ModelInfo
from daemon.pipeline import InForce
from daemon.worker import WorkerSpec, worker_main

STALE_HEARTBEATS = 6
LEND_AFTER_SECONDS = 0.5
EXIT_HEARTBEATS = 4


class Pool(Protocol):
    def start(self) -> None: ...

    def idle(self) -> list[int]: ...

    def submit(self, slot: int, job: Job, data: bytes) -> None: ...

    def collect(self, timeout: float) -> list[Event | Lost]: ...

    def in_flight(self) -> list[Job]: ...

    def drain(self) -> None: ...

    def stop(self) -> list[Job]: ...

    def healthy(self) -> bool: ...

    def slots(self) -> list[SlotStatus]: ...

    def new_window(self) -> None: ...

    def share_idle(self, waiting: bool) -> None:
        """Told every tick whether files wait: idle CPUs may go to busy workers only while none does."""


@dataclass
class Slot:
    """One worker process, and the bookkeeping the supervisor's status needs."""

    spec: WorkerSpec
    process: BaseProcess
    jobs: Queue
    state: WorkerState = WorkerState.STARTING
    pid: int | None = None
    job: Job | None = None
    job_started: float = 0.0
    progress: str = ""
    jobs_done: int = 0
    started: float = field(default_factory=time.monotonic)
    last_heartbeat: float = field(default_factory=time.monotonic)
    retire_by: float = 0.0
    idle_since: float = field(default_factory=time.monotonic)
    busy_seconds: float = 0.0
    window_started: float = field(default_factory=time.monotonic)

    def busy_fraction(self, now: float) -> float:
        busy = self.busy_seconds + (now - max(self.job_started, self.window_started) if self.job else 0.0)
        return min(1.0, busy / max(1e-9, now - self.window_started))


class LocalPool:
    """Worker processes started with the spawn method (llama.cpp links OpenMP: a forked child hangs), each
    pinned to its own CPUs with its own model."""

    def __init__(self, config: Config, plan: WorkerPlan, cpus: list[int], model: ModelInfo, factory: EngineFactory,
                 in_force: InForce):
        self.config = config
        self.cpu_sets = plan.cpu_sets(cpus)
        self.model = model
        self.in_force = in_force  # the supervisor's thresholds and prompt version: every worker enriches with them
        self.factory = factory
        self.context = multiprocessing.get_context("spawn")
        self.events: Queue = self.context.Queue()
        self.loans = Loans(self.context, len(self.cpu_sets))
        self.workers: dict[int, Slot] = {}
        self.stopping = False
        # a worker asked to stop has a few heartbeats' time to exit before it is killed
        self.grace = max(2.0, EXIT_HEARTBEATS * config.workers.heartbeat_seconds)

    # ----- starting and replacing ----------------------------------------------------------------
    def start(self) -> None:
        for worker_id, cpus in enumerate(self.cpu_sets):
            self._spawn(worker_id)

    def _spawn(self, worker_id: int) -> None:
        spec = WorkerSpec(worker_id, tuple(tuple(cpus) for cpus in self.cpu_sets), self.loans, self.config, self.model,
                          self.factory, self.in_force)
        jobs: Queue = self.context.Queue()
        process = self.context.Process(target=worker_main, args=(spec, jobs, self.events),
                                       name=f"enrichd-worker-{worker_id}", daemon=True)
        process.start()
        self.workers[worker_id] = Slot(spec, process, jobs)
        logger.info("worker {} started (pid {}, CPUs {})", worker_id, process.pid, ",".join(map(str, spec.cpus)))

    def _replace(self, slot: Slot, reason: str) -> Lost:
        """Kill the worker, start a new one on its CPUs (unless stopping), and hand its job back."""
        if slot.process.is_alive():
            slot.process.kill()
        slot.process.join(timeout=self.grace)
        lost = Lost(slot.spec.id, slot.job, reason, slot.pid)
        self.loans.withdraw_involving(slot.spec.id)
        if self.stopping:
            del self.workers[slot.spec.id]
        else:
            logger.warning("worker {} replaced: {}", slot.spec.id, reason)
            self._spawn(slot.spec.id)
        return lost

    def _reap(self) -> list[Lost]:
        """Workers that died, hang, overran their job or never finished loading their model."""
        now = time.monotonic()
        workers = self.config.workers
        stale = max(30.0, STALE_HEARTBEATS * workers.heartbeat_seconds)
        lost: list[Lost] = []
        for slot in list(self.workers.values()):
            reason = None
            if slot.state is WorkerState.RETIRING:
                self._retire(slot, now)
            elif not slot.process.is_alive():
                reason = f"process {slot.process.pid} exited with code {slot.process.exitcode}"
            elif slot.job is not None and now - slot.job_started > workers.job_timeout_seconds:
                reason = f"job {slot.job.name} exceeded {workers.job_timeout_seconds:.0f} s"
            elif slot.state is WorkerState.STARTING and now - slot.started > workers.load_timeout_seconds:
                reason = f"did not load its model within {workers.load_timeout_seconds:.0f} s"
                logger.error("worker {} (pid {}) {}", slot.spec.id, slot.process.pid, reason)
            elif slot.state is not WorkerState.STARTING and now - slot.last_heartbeat > stale:
                reason = f"no heartbeat for {now - slot.last_heartbeat:.0f} s"
            if reason is not None:
                lost.append(self._replace(slot, reason))
        return lost

    def _retire(self, slot: Slot, now: float) -> None:
        """A recycled worker has been asked to stop: start its successor once it is gone, kill it if it lingers.
        Never two workers on one CPU set."""
        if slot.process.is_alive() and now < slot.retire_by:
            return
        if slot.process.is_alive():
            logger.warning("worker {} (pid {}) did not exit within {:.0f} s of being recycled; killed", slot.spec.id,
                           slot.process.pid, self.grace)
            slot.process.kill()
            slot.process.join(timeout=self.grace)
        logger.info("worker {} recycled after {} jobs", slot.spec.id, slot.jobs_done)
        self._spawn(slot.spec.id)

    # ----- jobs ----------------------------------------------------------------------------------
    def idle(self) -> list[int]:
        return [i for i, slot in self.workers.items() if slot.state is WorkerState.IDLE]

    def submit(self, slot_id: int, job: Job, data: bytes) -> None:
        slot = self.workers[slot_id]
        self.loans.withdraw(slot_id)
        slot.job, slot.job_started, slot.state, slot.progress = job, time.monotonic(), WorkerState.BUSY, ""
        slot.jobs.put(Claimed(job, data))

    def in_flight(self) -> list[Job]:
        return [slot.job for slot in self.workers.values() if slot.job]

    def _finish(self, slot: Slot) -> None:
        """The worker's job is over; past `max_jobs_per_worker` it is asked to stop and will be replaced."""
        now = time.monotonic()
        slot.busy_seconds += now - max(slot.job_started, slot.window_started)
        slot.job, slot.progress, slot.state, slot.idle_since = None, "", WorkerState.IDLE, now
        slot.jobs_done += 1
        self.loans.withdraw_involving(slot.spec.id)
        recycle = self.config.workers.max_jobs_per_worker
        if recycle and slot.jobs_done >= recycle and not self.stopping:
            slot.jobs.put(None)
            slot.state, slot.retire_by = WorkerState.RETIRING, now + self.grace

    def collect(self, timeout: float) -> list[Event | Lost]:
        """What happened since the last call: events for the current jobs, and jobs lost with their worker."""
        found: list[Event | Lost] = []
        try:
            event = self.events.get(timeout=timeout)
            while True:
                found += self._note(event)
                event = self.events.get_nowait()
        except queue.Empty:
            pass
        return found + self._reap()

    def _note(self, event: Event) -> list[Event]:
        slot = self.workers.get(event.worker)
        if slot is None:
            return []
        slot.last_heartbeat = time.monotonic()
        if isinstance(event, Ready):
            slot.state, slot.pid = WorkerState.IDLE, event.pid
            logger.info("worker {} ready (pid {}, {} loaded in {:.1f} s)", slot.spec.id, event.pid,
                        "model and scorer" if self.model.scorer else "model", event.load_seconds)
            return [event]
        if isinstance(event, (Progress, Done, Failed)) and (slot.job is None or slot.job.name != event.job.name):
            return []
        if isinstance(event, Progress):
            slot.progress = event.text
            return []
        if isinstance(event, (Done, Failed)):
            self._finish(slot)
        return [] if isinstance(event, Heartbeat) else [event]

    # ----- lending CPUs --------------------------------------------------------------------------
    def share_idle(self, waiting: bool) -> None:
        """Each worker idle for a while lends its CPUs to the busy worker with the fewest; every loan is withdrawn
        while files wait, so their workers have their CPUs back by the time the files are claimed."""
        if not self.config.workers.lend_cpus:
            return
        now = time.monotonic()
        busy = [s.spec.id for s in self.workers.values() if s.state is WorkerState.BUSY]
        for slot in self.workers.values():
            lender = slot.spec.id
            current = self.loans.borrower(lender)
            if waiting or not busy or slot.state is not WorkerState.IDLE or now - slot.idle_since < LEND_AFTER_SECONDS:
                self.loans.withdraw(lender)
            elif current not in busy:
                borrower = min(busy, key=lambda worker: (len(self.loans.cpus_of(worker, self.cpu_sets)), worker))
                self.loans.lend(lender, borrower)

    # ----- stopping ------------------------------------------------------------------------------
    def drain(self) -> None:
        """From now on a worker that dies is not replaced and none is recycled: jobs in flight may finish."""
        self.stopping = True

    def stop(self) -> list[Job]:
        """Kill the workers still on a job (returning those jobs), let the others exit, wait for all."""
        self.stopping = True
        unfinished = []
        for slot in self.workers.values():
            if slot.job is not None:
                slot.process.kill()
                unfinished.append(slot.job)
                slot.job = None
            elif slot.process.is_alive():
                slot.jobs.put(None)
        deadline = time.monotonic() + self.grace
        for slot in self.workers.values():
            slot.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(timeout=self.grace)
        return unfinished

    # ----- reporting -----------------------------------------------------------------------------
    def healthy(self) -> bool:
        return all(slot.process.is_alive() or slot.state is WorkerState.RETIRING for slot in self.workers.values())

    def slots(self) -> list[SlotStatus]:
        now = time.monotonic()
        return [SlotStatus(s.spec.id, s.pid, s.state, self.loans.cpus_of(s.spec.id, self.cpu_sets) if s.job else s.spec.cpus, s.job, s.progress,
                           s.jobs_done, s.busy_fraction(now))
                for s in self.workers.values()]

    def new_window(self) -> None:
        now = time.monotonic()
        for slot in self.workers.values():
            slot.busy_seconds, slot.window_started = 0.0, now

