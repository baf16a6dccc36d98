"""The supervisor: finds inbox files, claims them one per idle worker slot, and hands each outcome to the queue.

It never touches llama.cpp. Its loop collects what the pool reports, settles finished jobs through the
file queue (which owns every move of an input), takes new files in, and reports. Shutdown is
cooperative: stop claiming, let in-flight jobs finish within the drain time, put the rest back.

No single entry can end the loop: each entry's handling (intake, claim, dispatch, settling its outcome)
runs inside one guard. A StorageError there is a fault of the host (storage.py: intake pauses, nothing is
charged); anything else is that entry's failure: it goes to failed/ with its record, or, where even that
is impossible, it is set aside with a note (quarantine.py), and the loop goes on with the others.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator

from loguru import logger

from daemon import cache as result_cache
from daemon.config import Config
from daemon.cpus import available_cpus, host_plan
from daemon.engine import EngineFactory
from daemon.errors import EnrichdError, OutputError, PoolUnavailable, StorageError
from daemon.logs import setup_logging
from daemon.messages import Done, ErrorInfo, Event, Failed, Fatal, Job, JobSummary, Lost, Ready
from daemon.calibration import SATISFACTION_FILE
from daemon.metrics import METRICS_FILE, Metrics
from daemon.output import output_names, write_outputs
from daemon.permissions import exposure
from daemon.pipeline import in_force
from daemon.intake import Intake, Settler, entry_problem
from daemon.names import shown
from daemon.pool import LocalPool, Pool
from daemon.quarantine import QUARANTINE_DIR, Quarantine
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
        self.settler = Settler(config.queue.settle_seconds)
        self.reporter = Reporter(self.spool, config.logging.throughput_seconds)
        self.storage = StorageWatch({name: path for name, path in self.spool.directories().items() if name != "inbox"})
        self.quarantine = Quarantine(self.spool.inbox, self.spool.state / QUARANTINE_DIR)
        self.candidates: set[str] = set()
        self.folders: set[str] = set()
        self.stopping = False
        self.immediate = False
        self.signal_paused = False
        self.reopen_logs = False
        self.fatal: str | None = None
        self.file_queue: FileQueue
        self.pool: Pool

    # ----- signals -------------------------------------------------------------------------------
    def _on_stop(self, signum: int, _frame: Any) -> None:
        if self.stopping and signum == signal.SIGINT:
            self.immediate = True
        self.stopping = True

    def _on_hup(self, _signum: int, _frame: Any) -> None:
        self.reopen_logs = True

    def _on_usr1(self, _signum: int, _frame: Any) -> None:
        self.signal_paused = not self.signal_paused

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGUSR1, self._on_usr1)

    @property
    def pause_reason(self) -> str | None:
        """Why intake is paused, or None: a host fault, SIGUSR1, or the pause file."""
        if self.storage.fault is not None:
            return f"host fault: {self.storage.fault}"
        if self.signal_paused:
            return "SIGUSR1"
        if (self.spool.state / PAUSE_FILE).exists():
            return f"{self.spool.state / PAUSE_FILE} exists"
        return None

    def _release_leftovers(self, keep: frozenset[str] = frozenset()) -> None:
        """Files in processing/ that no job holds go back to the inbox (after a crash, after a host fault)."""
        for name in self.file_queue.leftovers(keep):
            with self._entry(name, "putting back"):
                self.file_queue.release(name)
                logger.warning("{} was left in processing/ (unclean stop or host fault); back in the inbox",
                               shown(name))

    # ----- the guard around each entry -------------------------------------------------------------
    @contextmanager
    def _entry(self, name: str, step: str) -> Iterator[None]:
        """One entry's handling: what goes wrong in it is that entry's problem (or the host's), never the loop's."""
        try:
            yield
        except StorageError as exc:
            self.storage.report(str(exc))
        except PoolUnavailable:
            raise
        except Exception as exc:  # the loop outlives any one entry, whatever it raised
            self._set_aside(name, step, exc)

    def _set_aside(self, name: str, step: str, exc: Exception) -> None:
        """An entry whose handling raised: to failed/ with the error as its record, or held with a note."""
        self.candidates.discard(name)
        self.settler.forget(name)
        problem = f"{type(exc).__name__}: {exc}"
        logger.error("{} {}: {}; the file goes to failed/", step, shown(name), shown(problem))
        in_processing = os.path.lexists(self.spool.processing / name)
        try:
            if in_processing or os.path.lexists(self.spool.inbox / name):
                verdict = self.file_queue.fail(name, {"error_type": type(exc).__name__, "message": f"{step}: {problem}",
                                                      "permanent": True}, from_inbox=not in_processing)
                self.reporter.record_verdict(verdict, type(exc).__name__)
            return
        except StorageError as fault:
            self.storage.report(str(fault))
            return
        except Exception as again:  # not even failed/ could take it: a note, and the entry is left alone
            problem = f"{problem}; then moving it to failed/: {type(again).__name__}: {again}"
        self.quarantine.hold(name, step, problem)

    # ----- outcomes ------------------------------------------------------------------------------
    def _settle(self, item: Event | Lost) -> None:
        job = getattr(item, "job", None)
        if job is None:
            self._note_worker(item)
            return
        with self._entry(job.name, "settling the outcome of"):
            self._settle_job(item)

    def _note_worker(self, item: Event | Lost) -> None:
        """Events about a worker rather than a file."""
        if isinstance(item, Lost):
            self.reporter.record_restart()
        elif isinstance(item, Ready):
            self.reporter.record_load(item.worker, item.load_seconds)
        elif isinstance(item, Fatal):
            self.fatal = f"worker {item.worker} could not start: {item.error.message}"
            logger.error(self.fatal)

    def _settle_job(self, item: Event | Lost) -> None:
        reporter = self.reporter
        if isinstance(item, Done):
            summary = self._write(item)
            if summary is None:
                return
            if self.file_queue.settle(item.job).action == "requeued":
                return  # the input changed after its claim: it is enriched again, and counted once then
            reporter.record_done(summary)
            s, t = summary, summary.timings
            where = f" on {s.host} (pid {s.pid})" if s.host else ""
            logger.info("done {}{}: {} segments {}, {} model calls, {} generated tokens, cache {}, dispatch {:.2f}s "
                        "parse {:.2f}s correction {:.2f}s metadata {:.2f}s total {:.2f}s -> {}", shown(item.job.name),
                        where,
                        s.segments, s.corrections, s.tokens.calls, s.tokens.generated_tokens, s.cache_result,
                        t.get("dispatch", 0), t.get("parse", 0),
                        t.get("correction", 0), t.get("metadata", 0), t.get("total", 0),
                        ", ".join(map(shown, s.outputs)))
        elif isinstance(item, Failed):
            if item.host_fault:
                self.storage.report(item.error.message)
            verdict = self.file_queue.settle(item.job, item.error, item.permanent, item.host_fault)
            reporter.record_verdict(verdict, item.error.type)
        elif isinstance(item, Lost):
            reporter.record_restart()
            error = ErrorInfo("WorkerDied", item.reason, None, item.pid)
            reporter.record_verdict(self.file_queue.settle(item.job, error), error.type)

    def _write(self, done: Done) -> JobSummary | None:
        """The document into the outbox, whichever backend made it: this process is the only one writing there. The
        summary then names the files written and the seconds it took; None when they could not be written."""
        try:
            started = time.perf_counter()
            written = write_outputs(self.spool.outbox, done.job.name, done.document, self.config.output.markdown)
        except StorageError as exc:
            self.storage.report(str(exc))
            self.file_queue.settle(done.job, ErrorInfo.of(exc), host_fault=True)
            return None
        except OutputError as exc:
            self.reporter.record_verdict(self.file_queue.settle(done.job, ErrorInfo.of(exc)), type(exc).__name__)
            return None
        outputs = tuple(str(path.relative_to(self.spool.outbox)) for path in written)
        timings = {**done.summary.timings, "write": round(time.perf_counter() - started, 3)}
        return replace(done.summary, outputs=outputs, timings=timings)

    # ----- intake --------------------------------------------------------------------------------
    def _ready_names(self) -> list[str]:
        """Candidates that are plain, settled, wanted and due."""
        now_wall, now = time.time(), time.monotonic()
        ready = []
        for name in sorted(self.candidates):
            with self._entry(name, "taking in"):
                if self._take_in(name, now, now_wall):
                    ready.append(name)
        return ready

    def _take_in(self, name: str, now: float, now_wall: float) -> bool:
        """Whether a candidate is ready to claim. Hostile entries go straight to failed/; a folder is walked (with
        queue.recursive) or left alone; what is ignored, gone or set aside is dropped."""
        path = self.spool.inbox / name
        if self.intake.ignored(name) or not os.path.lexists(path) or self.quarantine.holds(name):
            self.candidates.discard(name)
            self.settler.forget(name)
            return False
        if path.is_dir() and not path.is_symlink():
            self.candidates.discard(name)
            if self.intake.recursive:
                self.candidates |= self.intake.walk(self.spool.inbox, name)
            elif name not in self.folders:
                self.folders.add(name)
                logger.warning("inbox folder {} left alone: queue.recursive is off", shown(name))
            return False
        if problem := entry_problem(path):
            self.candidates.discard(name)
            self.reporter.record_verdict(self.file_queue.reject(name, problem), "UnsafeEntry")
            return False
        if not self.intake.wanted(name):
            self.candidates.discard(name)
            return False
        return self.settler.ready(name, path, now) and self.file_queue.ledger.not_before(name) <= now_wall

    def _dispatch(self) -> None:
        """One claimed file per idle slot; two inputs sharing an output name are never in flight together."""
        idle = self.pool.idle()
        if not idle:
            return
        busy_outputs = {output_names(job.name)[0] for job in self.pool.in_flight()}
        for name in self._ready_names():
            if not idle or self.storage.fault is not None:
                break
            if output_names(name)[0] in busy_outputs:
                continue
            try:
                with self._entry(name, "claiming"):
                    if self._claim_and_submit(name, idle[0]):
                        idle.pop(0)
                        busy_outputs.add(output_names(name)[0])
            except PoolUnavailable:
                return

    def _claim_and_submit(self, name: str, slot: int) -> bool:
        """Claim the file and hand it to `slot`; False when it was no longer there to claim. When the pool cannot
        take it (PoolUnavailable), the file goes back to the inbox and the error goes up."""
        self.candidates.discard(name)
        if self.file_queue.claim(name) is None:
            return False
        self.settler.forget(name)
        job = Job(name, self.file_queue.ledger.attempts(name) + 1, time.time())
        try:
            self.pool.submit(slot, job)
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
        if thresholds is None and (self.spool.state / SATISFACTION_FILE).exists():
            logger.warning("{}: satisfaction thresholds ignored (damaged, or fitted for another model or question); "
                           "scores are rounded expectations until `enrichd calibrate --write` is run again",
                           self.spool.state / SATISFACTION_FILE)
        if self.config.metrics.enabled:
            self.reporter.metrics = Metrics(self.config.metrics.file or self.spool.state / METRICS_FILE, model, version)
            if self.config.metrics.listen:
                self.reporter.metrics.serve(self.config.metrics.listen)
        self.file_queue = FileQueue.open(self.spool, self.config.queue)
        self._release_leftovers()
        self.file_queue.drop_partial_outputs()
        self.quarantine.load()
        if self.config.cache.enabled:
            try:
                result_cache.open_cache_file(result_cache.cache_path(self.config))
            except (sqlite3.Error, OSError) as exc:  # each worker tries again, and goes on without it if it must
                logger.error("cache {} cannot be prepared: {}", result_cache.cache_path(self.config), exc)
        self.candidates |= self.intake.walk(self.spool.inbox)
        if self.config.workers.backend == "celery":
            from daemon.remote.pool import CeleryPool

            self.pool = CeleryPool(self.config, self.spool, model, version)
            workers = f"celery workers through {self.pool.broker}, queue {self.config.celery.queue}"
        else:
            self.pool = LocalPool(self.config, plan, cpus, model, self.factory)
            workers = f"{plan.count} worker(s) x {plan.threads} thread(s) on CPUs {','.join(map(str, cpus))}"
        logger.info("enrichd starting: {}, model {} ({}), inbox {}, {} file(s) waiting", workers, model.name,
                    model.sha256[:12], self.spool.inbox, len(self.candidates))
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
        notifier.ready(self.reporter.short(self.pool.slots(), len(self.candidates)))
        logger.info("ready: watching {}", self.spool.inbox)
        last_scan = time.monotonic()
        try:
            while not self.stopping and self.fatal is None:
                for item in self.pool.collect(TICK_SECONDS):
                    self._settle(item)
                watcher.ensure_running()
                if self.reopen_logs:
                    self.reopen_logs = False
                    setup_logging(self.config.logging)
                    logger.info("log files reopened")
                self.candidates |= watcher.drain()
                if time.monotonic() - last_scan >= self.config.queue.rescan_seconds:
                    self.candidates |= self.intake.walk(self.spool.inbox)
                    last_scan = time.monotonic()
                if self.storage.recovered():
                    self._release_leftovers(frozenset(job.name for job in self.pool.in_flight()))
                paused = self.pause_reason is not None
                if not paused:
                    self._dispatch()
                self.pool.share_idle(waiting=bool(self.candidates) and not paused)
                self._report("paused" if paused else "running")
                notifier.watchdog(watcher.healthy() and self.pool.healthy())
        finally:
            watcher.stop()
            stop_housekeeping.set()
            self._shutdown()
        return 1 if self.fatal else 0

    def _shutdown(self) -> None:
        """Drain in-flight jobs within the drain time, then put what is left back in the inbox."""
        self.stopping = True
        self.pool.drain()
        notifier = self.reporter.notifier
        notifier.stopping()
        drain = self.config.workers.drain_seconds
        logger.info("stopping: draining {} job(s) for up to {:.0f} s", len(self.pool.in_flight()), drain)
        notifier.extend_timeout(drain + 30)
        deadline = time.monotonic() + drain
        while self.pool.in_flight() and time.monotonic() < deadline and not self.immediate:
            for item in self.pool.collect(TICK_SECONDS):
                if isinstance(item, Lost) and item.job is not None:
                    with self._entry(item.job.name, "putting back"):
                        self.file_queue.release(item.job.name)
                elif not isinstance(item, Lost):
                    self._settle(item)
        for job in self.pool.stop():
            with self._entry(job.name, "putting back"):
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


def run_daemon(config: Config, factory: EngineFactory) -> int:
    supervisor = Supervisor(config, factory)
    supervisor.install_signal_handlers()
    try:
        return supervisor.run()
    except EnrichdError as exc:
        logger.error("cannot start: {}", exc)
        return 2
