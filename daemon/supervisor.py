"""The supervisor: finds inbox files, claims them one per idle worker slot, and hands each outcome to the queue.

It never touches llama.cpp. Its loop collects what the pool reports, settles finished jobs through the
file queue (which owns every move of an input), takes new files in, and reports. Shutdown is
cooperative: stop claiming, let in-flight jobs finish within the drain time, put the rest back.

No single entry can end the loop: each entry's handling (intake, claim, dispatch, settling its outcome)
runs inside one guard (guard.py): a fault of the host pauses intake, anything else is that entry's failure.
Which inbox names may be claimed is candidates.py's to say; what a finished job does (the outbox written,
the input moved, the figures counted) is outcomes.py's.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from dataclasses import replace

from loguru import logger

from daemon import cache as result_cache
from daemon.calibration import SATISFACTION_FILE, read_thresholds
from daemon.candidates import Candidates
from daemon.config import Config
from daemon.cpus import WorkerPlan, available_cpus, host_plan
from daemon.engine import EngineFactory
from daemon.errors import EnrichdError, PoolUnavailable, StorageError, TranscriptError
from daemon.formats.reading import read_input
from daemon.guard import EntryGuard
from daemon.intake import Intake, Settler
from daemon.logs import setup_logging
from daemon.messages import ErrorInfo, Failed, Job, Lost
from daemon.metrics import METRICS_FILE, Metrics
from daemon.names import shown
from daemon.outcomes import Outcomes
from daemon.output import output_names
from daemon.permissions import exposure
from daemon.model_store import ModelInfo
from daemon.pipeline import InForce, in_force
from daemon.pool import LocalPool, Pool
from daemon.quarantine import QUARANTINE_DIR, Quarantine
from daemon.signals import Signals
from daemon.spool import FileQueue, Spool
from daemon.status import Reporter
from daemon.storage import StorageWatch
from daemon.watcher import InboxWatcher

TICK_SECONDS = 0.2
PAUSE_FILE = "pause"


class Supervisor:
    def __init__(self, config: Config, factory: EngineFactory):
        self.config = config
        self.factory = factory
        self.spool = Spool.from_config(config)
        self.intake = Intake.from_config(config)
        self.reporter = Reporter(self.spool, config.logging.throughput_seconds)
        self.storage = StorageWatch({name: path for name, path in self.spool.directories().items() if name != "inbox"})
        self.quarantine = Quarantine(self.spool.inbox, self.spool.state / QUARANTINE_DIR)
        self.candidates = Candidates(self.spool, self.intake, Settler(config.queue.settle_seconds), self.quarantine)
        self.signals = Signals()
        self.file_queue: FileQueue  # these open in prepare(), with the ledger
        self.guard: EntryGuard
        self.outcomes: Outcomes
        self.pool: Pool

    @property
    def pause_reason(self) -> str | None:
        """Why intake is paused, or None: a host fault, SIGUSR1, or the pause file."""
        if self.storage.fault is not None:
            return f"host fault: {self.storage.fault}"
        if self.signals.paused:
            return "SIGUSR1"
        if (self.spool.state / PAUSE_FILE).exists():
            return f"{self.spool.state / PAUSE_FILE} exists"
        return None

    def _release_leftovers(self, keep: frozenset[str] = frozenset()) -> None:
        """Files in processing/ that no job holds go back to the inbox (after a crash, after a host fault)."""
        for name in self.file_queue.leftovers(keep):
            with self.guard.entry(name, "putting back"):
                self.file_queue.release(name)
                logger.warning("{} was left in processing/ (unclean stop or host fault); back in the inbox",
                               shown(name))

    # ----- dispatch ------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """One claimed file per idle slot; two inputs sharing an output name are never in flight together."""
        idle = self.pool.idle()
        if not idle:
            return
        busy_outputs = {output_names(job.name)[0] for job in self.pool.in_flight()}
        for name in self.candidates.ready(self.file_queue, self.reporter, self.guard):
            if not idle or self.storage.fault is not None:
                break
            if output_names(name)[0] in busy_outputs:
                continue
            try:
                with self.guard.entry(name, "claiming"):
                    if self._claim_and_submit(name, idle[0]):
                        idle.pop(0)
                        busy_outputs.add(output_names(name)[0])
            except PoolUnavailable:
                return

    def _claim_and_submit(self, name: str, slot: int) -> bool:
        """Claim the file, read it once (the bounded read), and hand its bytes to `slot`; False when it was no longer
        there to claim, or could not be read (that attempt's failure, settled at once). When the pool cannot take it
        (PoolUnavailable), the file goes back to the inbox and the error goes up."""
        self.candidates.forget(name)
        path = self.file_queue.claim(name)
        if path is None:
            return False
        job = Job(name, self.file_queue.ledger.attempts(name) + 1, time.time())
        try:
            data = read_input(path, self.config.queue.max_bytes, shown(name))
        except (TranscriptError, OSError) as exc:
            self.outcomes.settle(Failed(0, job, ErrorInfo.of(exc), permanent=isinstance(exc, TranscriptError)))
            return False
        job = replace(job, sha256=hashlib.sha256(data).hexdigest())
        try:
            self.pool.submit(slot, job, data)
        except PoolUnavailable:
            self.file_queue.release(name)
            raise
        logger.info("claimed {} -> worker {} (attempt {})", shown(name), slot, job.attempt)
        return True

    def _report(self, state: str) -> None:
        reason = self.pause_reason
        if reason != self.reporter.pause_reason:
            self.reporter.pause_reason = reason
            self.reporter.notifier.status(self.reporter.short(self.pool.slots(), self.intake.depth(self.spool.inbox)))
        status_due, throughput_due = self.reporter.due()
        if status_due or throughput_due:
            slots, depth = self.pool.slots(), self.intake.depth(self.spool.inbox)
            if status_due:
                try:
                    self.reporter.write(state, slots, depth)
                except StorageError as exc:  # the state folder is full or read-only: the host's fault
                    self.storage.report(str(exc))
            if throughput_due:
                self.reporter.log_throughput(slots, depth)
                self.pool.new_window()

    # ----- life cycle ----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Everything before READY: folders, plan, model identity, crash recovery, backlog scan."""
        self.spool.prepare()
        cpus = available_cpus()
        plan = host_plan(self.config, cpus)
        model = self.factory.describe(self.config)
        self.reporter.plan, self.reporter.model = plan, model
        thresholds, version = in_force(self.config, model)
        own = self.spool.state / SATISFACTION_FILE
        if own.exists() and read_thresholds(self.spool.state, model.sha256, self.config.enrichment) is None:
            logger.warning("{}: satisfaction thresholds ignored (damaged, or fitted for another model or question); "
                           "scores use the packaged defaults ({}) or rounded expectations until `enrichd calibrate "
                           "--write` is run again", own, ", ".join(sorted(thresholds)) or "none for this model")
        if self.config.metrics.enabled:
            self.reporter.metrics = Metrics(self.config.metrics.file or self.spool.state / METRICS_FILE, model, version)
            if self.config.metrics.listen:
                self.reporter.metrics.serve(self.config.metrics.listen)
        self.file_queue = FileQueue.open(self.spool, self.config.queue)
        self.guard = EntryGuard(self.spool, self.file_queue, self.storage, self.quarantine, self.reporter,
                                self.candidates.forget)
        self.outcomes = Outcomes(self.config, self.spool, self.file_queue, self.storage, self.reporter, self.guard,
                                 model.identity, version)
        self._release_leftovers()
        self.file_queue.drop_partial_outputs()
        self.quarantine.load()
        if self.config.cache.enabled:
            try:
                result_cache.open_cache_file(result_cache.cache_path(self.config))
            except (sqlite3.Error, OSError) as exc:  # each worker tries again, and goes on without it if it must
                logger.error("cache {} cannot be prepared: {}", result_cache.cache_path(self.config), exc)
        self.candidates.add(self.intake.walk(self.spool.inbox))
        self.pool, workers = open_pool(self.config, plan, cpus, model, self.factory, (thresholds, version))
        logger.info("enrichd starting: {}, model {} ({}), inbox {}, {} file(s) waiting", workers, model.name,
                    model.sha256[:12], self.spool.inbox, len(self.candidates.names))
        for problem in exposure(self.config):
            logger.warning("access: {}", problem)

    def run(self) -> int:
        self.prepare()
        self.pool.start()
        watcher = InboxWatcher(self.spool.inbox, self.config.queue.polling, self.config.queue.recursive)
        watcher.start()
        stop_housekeeping = threading.Event()
        if self.config.cache.enabled:
            result_cache.evict_periodically(self.config, stop_housekeeping)
        notifier = self.reporter.notifier
        notifier.ready(self.reporter.short(self.pool.slots(), len(self.candidates.names)))
        logger.info("ready: watching {}", self.spool.inbox)
        last_scan = time.monotonic()
        try:
            while not self.signals.stopping and self.outcomes.fatal is None:
                for item in self.pool.collect(TICK_SECONDS):
                    self.outcomes.settle(item)
                watcher.ensure_running()
                if self.signals.reopen_logs:
                    self.signals.reopen_logs = False
                    setup_logging(self.config.logging)
                    logger.info("log files reopened")
                self.candidates.add(watcher.drain())
                if time.monotonic() - last_scan >= self.config.queue.rescan_seconds:
                    self.candidates.add(self.intake.walk(self.spool.inbox))
                    last_scan = time.monotonic()
                if self.storage.recovered():
                    self._release_leftovers(frozenset(job.name for job in self.pool.in_flight()))
                paused = self.pause_reason is not None
                if not paused:
                    self._dispatch()
                self.pool.share_idle(waiting=bool(self.candidates.names) and not paused)
                self._report("paused" if paused else "running")
                notifier.watchdog(watcher.healthy() and self.pool.healthy())
        finally:
            watcher.stop()
            stop_housekeeping.set()
            self._shutdown()
        return 1 if self.outcomes.fatal else 0

    def _shutdown(self) -> None:
        """Drain in-flight jobs within the drain time, then put what is left back in the inbox."""
        self.signals.stopping = True
        self.pool.drain()
        notifier = self.reporter.notifier
        notifier.stopping()
        drain = self.config.workers.drain_seconds
        logger.info("stopping: draining {} job(s) for up to {:.0f} s", len(self.pool.in_flight()), drain)
        notifier.extend_timeout(drain + 30)
        deadline = time.monotonic() + drain
        while self.pool.in_flight() and time.monotonic() < deadline and not self.signals.immediate:
            for item in self.pool.collect(TICK_SECONDS):
                if isinstance(item, Lost) and item.job is not None:
                    with self.guard.entry(item.job.name, "putting back"):
                        self.file_queue.release(item.job.name)
                elif not isinstance(item, Lost):
                    self.outcomes.settle(item)
        for job in self.pool.stop():
            with self.guard.entry(job.name, "putting back"):
                self.file_queue.release(job.name)
                logger.warning("stopping: {} unfinished, back in the inbox", shown(job.name))
        slots, depth = self.pool.slots(), self.intake.depth(self.spool.inbox)
        try:
            self.reporter.write("stopped", slots, depth)
        except StorageError as exc:
            logger.error("status file not written at stop: {}", exc)
        self.reporter.write_metrics(slots, depth)
        self.file_queue.ledger.close()
        logger.info("stopped: {}", self.reporter.short(self.pool.slots(), self.intake.depth(self.spool.inbox)))


def open_pool(config: Config, plan: WorkerPlan, cpus: list[int], model: ModelInfo, factory: EngineFactory,
              in_force: InForce) -> tuple[Pool, str]:
    """The backend's pool, and what it is in words for the start line."""
    if config.workers.backend == "celery":
        from daemon.remote.pool import CeleryPool

        remote = CeleryPool(config, model, in_force[1])
        return remote, f"celery workers through {remote.broker}, queue {config.celery.queue}"
    local = LocalPool(config, plan, cpus, model, factory, in_force)
    return local, f"{plan.count} worker(s) x {plan.threads} thread(s) on CPUs {','.join(map(str, cpus))}"


def run_daemon(config: Config, factory: EngineFactory) -> int:
    supervisor = Supervisor(config, factory)
    supervisor.signals.install()
    try:
        return supervisor.run()
    except EnrichdError as exc:
        logger.error("cannot start: {}", exc)
        return 2
