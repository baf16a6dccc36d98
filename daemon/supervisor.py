"""The supervisor: discovers inbox files, claims them one per idle worker, and keeps the pool alive.

It never touches llama.cpp. It owns every move of an input (claim, retire, release, fail), so a
worker that dies mid-job costs a retry, never a file. Shutdown is cooperative: stop claiming, let
in-flight jobs finish within the drain time, put the rest back in the inbox.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

from loguru import logger

from daemon import cache as result_cache
from daemon.config import Config
from daemon.cpus import WorkerPlan, available_cpus, plan_workers, read_tuned
from daemon.engine import EngineFactory
from daemon.errors import EnrichdError
from daemon.logs import setup_logging
from daemon.model_store import ModelInfo
from daemon.notify import Notifier
from daemon.output import output_names
from daemon.queue import FileQueue, Intake, Ledger, Settler, Spool, entry_problem
from daemon.status import Throughput, write_status
from daemon.worker import Job, WorkerSpec, worker_main

TICK_SECONDS = 0.2
STATUS_SECONDS = 2.0
PAUSE_FILE = "pause"
STALE_HEARTBEATS = 6


@dataclass
class WorkerHandle:
    spec: WorkerSpec
    process: BaseProcess
    jobs: Queue
    state: str = "starting"
    pid: int | None = None
    job: Job | None = None
    job_started: float = 0.0
    progress: str = ""
    jobs_done: int = 0
    last_heartbeat: float = field(default_factory=time.monotonic)
    busy_seconds: float = 0.0
    busy_since: float | None = None
    window_started: float = field(default_factory=time.monotonic)

    def busy_fraction(self, now: float) -> float:
        busy = self.busy_seconds + (now - self.busy_since if self.busy_since is not None else 0.0)
        return min(1.0, busy / max(1e-9, now - self.window_started))

    def new_window(self, now: float) -> None:
        self.busy_seconds, self.window_started = 0.0, now
        if self.busy_since is not None:
            self.busy_since = now


def backoff_seconds(base: float, attempts: int) -> float:
    return base * 2 ** max(0, attempts - 1)


class Supervisor:
    def __init__(self, config: Config, factory: EngineFactory, notifier: Notifier | None = None):
        self.config = config
        self.factory = factory
        self.notifier = notifier or Notifier()
        self.spool = Spool.from_config(config)
        self.intake = Intake.from_config(config)
        self.settler = Settler(config.queue.settle_seconds)
        self.throughput = Throughput()
        self.context = multiprocessing.get_context("spawn")
        self.events: Queue = self.context.Queue()
        self.workers: dict[int, WorkerHandle] = {}
        self.candidates: set[str] = set()
        self.stopping = False
        self.immediate = False
        self.signal_paused = False
        self.reopen_logs = False
        self.fatal: str | None = None
        self.plan: WorkerPlan | None = None
        self.model: ModelInfo | None = None
        self.cpus: list[int] = []
        self.file_queue: FileQueue

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
    def paused(self) -> bool:
        return self.signal_paused or (self.spool.state / PAUSE_FILE).exists()

    # ----- workers -------------------------------------------------------------------------------
    def _start_worker(self, worker_id: int, cpus: list[int]) -> None:
        assert self.model is not None
        spec = WorkerSpec(worker_id, tuple(cpus), self.config, self.model, self.factory)
        jobs: Queue = self.context.Queue()
        process = self.context.Process(target=worker_main, args=(spec, jobs, self.events),
                                       name=f"enrichd-worker-{worker_id}", daemon=True)
        process.start()
        self.workers[worker_id] = WorkerHandle(spec, process, jobs)
        logger.info("worker {} started (pid {}, CPUs {})", worker_id, process.pid, ",".join(map(str, cpus)))

    def _replace_worker(self, handle: WorkerHandle, reason: str) -> None:
        if handle.process.is_alive():
            handle.process.kill()
        handle.process.join(timeout=10)
        if handle.job is not None:
            self._job_failed(handle, {"type": "WorkerDied", "message": reason, "pid": handle.pid}, permanent=False,
                             worker_alive=False)
        if not self.stopping:
            logger.warning("worker {} replaced: {}", handle.spec.id, reason)
            self._start_worker(handle.spec.id, list(handle.spec.cpus))
        else:
            del self.workers[handle.spec.id]

    def _check_workers(self) -> None:
        now = time.monotonic()
        limit = self.config.workers.job_timeout_seconds
        stale = max(30.0, STALE_HEARTBEATS * self.config.workers.heartbeat_seconds)
        for handle in list(self.workers.values()):
            if not handle.process.is_alive():
                self._replace_worker(handle, f"process {handle.process.pid} exited with code {handle.process.exitcode}")
            elif handle.job is not None and now - handle.job_started > limit:
                self._replace_worker(handle, f"job {handle.job.name} exceeded {limit:.0f} s")
            elif handle.state != "starting" and now - handle.last_heartbeat > stale:
                self._replace_worker(handle, f"no heartbeat for {now - handle.last_heartbeat:.0f} s")

    # ----- job outcomes --------------------------------------------------------------------------
    def _finish(self, handle: WorkerHandle, worker_alive: bool = True) -> None:
        """The worker's job is over; a live worker past `max_jobs_per_worker` is replaced by a fresh one."""
        if handle.busy_since is not None:
            handle.busy_seconds += time.monotonic() - handle.busy_since
        handle.busy_since = None
        handle.job = None
        handle.progress = ""
        handle.state = "idle"
        handle.jobs_done += 1
        recycle = self.config.workers.max_jobs_per_worker
        if worker_alive and recycle and handle.jobs_done >= recycle and not self.stopping:
            handle.jobs.put(None)
            handle.process.join(timeout=30)
            logger.info("worker {} recycled after {} jobs", handle.spec.id, handle.jobs_done)
            self._start_worker(handle.spec.id, list(handle.spec.cpus))

    def _job_failed(self, handle: WorkerHandle, error: dict[str, Any], permanent: bool, worker_alive: bool = True) -> None:
        assert handle.job is not None
        name = handle.job.name
        queue = self.file_queue
        retry_at = time.time() + backoff_seconds(self.config.queue.backoff_seconds, handle.job.attempt)
        attempts = queue.ledger.record_attempt(name, error.get("message"), retry_at)
        if permanent or attempts >= self.config.queue.max_attempts:
            target = queue.fail(name, {"error_type": error.get("type"), "message": error.get("message"),
                                       "worker_pid": error.get("pid", handle.pid), "traceback": error.get("traceback"),
                                       "permanent": permanent})
            self.throughput.record_failed()
            logger.error("failed {}: {}: {} (attempt {}, moved to {})", name, error.get("type"), error.get("message"),
                         attempts, target.parent.name + "/")
        else:
            queue.release(name)
            logger.warning("retry {} in {:.0f} s: {}: {} (attempt {} of {})", name, retry_at - time.time(),
                           error.get("type"), error.get("message"), attempts, self.config.queue.max_attempts)
        self._finish(handle, worker_alive)

    def _on_event(self, event: dict[str, Any]) -> None:
        handle = self.workers.get(event["worker"])
        if handle is None:
            return
        handle.last_heartbeat = time.monotonic()
        kind = event["kind"]
        if kind == "ready":
            handle.state, handle.pid = "idle", event["pid"]
            logger.info("worker {} ready (pid {})", handle.spec.id, handle.pid)
        elif kind == "progress" and handle.job and handle.job.name == event["job"]:
            handle.progress = event["text"]
        elif kind == "done" and handle.job and handle.job.name == event["job"]:
            self.file_queue.retire(event["job"])
            summary = event["summary"]
            self.throughput.record_done(summary)
            t = summary["timings"]
            logger.info("done {}: {} segments {}, {} model calls, {} generated tokens, cache {}, "
                        "parse {:.2f}s correction {:.2f}s metadata {:.2f}s total {:.2f}s -> {}",
                        event["job"], summary["segments"], summary["corrections"], summary["model_calls"],
                        summary["generated_tokens"], summary["cache_result"], t.get("parse", 0),
                        t.get("correction", 0), t.get("metadata", 0), t.get("total", 0), ", ".join(summary["outputs"]))
            self._finish(handle)
        elif kind == "failed" and handle.job and handle.job.name == event["job"]:
            self._job_failed(handle, event["error"], event["permanent"])
        elif kind == "fatal":
            self.fatal = f"worker {handle.spec.id} could not start: {event['error']['message']}"
            logger.error(self.fatal)

    def _drain_events(self, timeout: float) -> None:
        try:
            event = self.events.get(timeout=timeout)
        except queue_module.Empty:
            return
        while True:
            self._on_event(event)
            try:
                event = self.events.get_nowait()
            except queue_module.Empty:
                return

    # ----- intake --------------------------------------------------------------------------------
    def _scan(self) -> None:
        try:
            with os.scandir(self.spool.inbox) as entries:
                self.candidates.update(e.name for e in entries)
        except OSError as exc:
            logger.error("cannot list inbox {}: {}", self.spool.inbox, exc)

    def _in_flight_stems(self) -> set[str]:
        return {output_names(h.job.name)[0] for h in self.workers.values() if h.job}

    def _ready_names(self) -> list[str]:
        """Candidates that are plain, settled, wanted and due; hostile entries go straight to failed/."""
        now_wall, now = time.time(), time.monotonic()
        ready = []
        for name in sorted(self.candidates):
            path = self.spool.inbox / name
            if self.intake.ignored(name) or not os.path.lexists(path):
                self.candidates.discard(name)
                self.settler.forget(name)
                continue
            problem = entry_problem(path)
            if problem:
                self.candidates.discard(name)
                self.file_queue.fail(name, {"error_type": "UnsafeEntry", "message": f"{name}: {problem}",
                                            "permanent": True}, from_inbox=True)
                self.throughput.record_failed()
                logger.error("failed {}: {}; moved to failed/", name, problem)
                continue
            if not self.intake.wanted(name):
                self.candidates.discard(name)
                continue
            if self.settler.ready(path, now) and self.file_queue.ledger.not_before(name) <= now_wall:
                ready.append(name)
        return ready

    def _dispatch(self) -> None:
        idle = [h for h in self.workers.values() if h.state == "idle"]
        if not idle:
            return
        busy_outputs = self._in_flight_stems()
        for name in self._ready_names():
            if not idle:
                break
            if output_names(name)[0] in busy_outputs:
                continue
            if self.file_queue.claim(name) is None:
                self.candidates.discard(name)
                continue
            self.candidates.discard(name)
            self.settler.forget(name)
            handle = idle.pop(0)
            handle.job = Job(name, self.file_queue.ledger.attempts(name) + 1)
            handle.job_started = handle.busy_since = time.monotonic()
            handle.state = "busy"
            busy_outputs.add(output_names(name)[0])
            handle.jobs.put(handle.job)
            logger.info("claimed {} -> worker {} (attempt {})", name, handle.spec.id, handle.job.attempt)

    # ----- reporting -----------------------------------------------------------------------------
    def _inbox_depth(self) -> int:
        try:
            with os.scandir(self.spool.inbox) as entries:
                return sum(1 for e in entries if self.intake.wanted(e.name))
        except OSError:
            return -1

    def _figures(self) -> dict[str, Any]:
        now = time.monotonic()
        busy = {str(h.spec.id): h.busy_fraction(now) for h in self.workers.values()}
        in_flight = sum(1 for h in self.workers.values() if h.job)
        return self.throughput.figures(self._inbox_depth(), in_flight, busy)

    def _status(self, state: str) -> dict[str, Any]:
        return {
            "pid": os.getpid(), "state": state, "paused": self.paused,
            "started": self.throughput.started, "updated": time.time(),
            "plan": {"workers": self.plan.count, "threads": self.plan.threads} if self.plan else None,
            "model": self.model.__dict__ if self.model else None,
            "workers": [{"id": h.spec.id, "pid": h.pid, "state": h.state, "cpus": list(h.spec.cpus),
                         "file": h.job.name if h.job else None, "progress": h.progress, "jobs_done": h.jobs_done}
                        for h in self.workers.values()],
            "throughput": self._figures(),
            "cache": result_cache.cache_counts(self.throughput.cache_hits, self.throughput.cache_misses),
        }

    def _short_status(self) -> str:
        t = self.throughput.total
        return f"{t.done} done, {t.failed} failed, {self._inbox_depth()} waiting, " \
               f"{sum(1 for h in self.workers.values() if h.job)} in flight"

    def _log_throughput(self) -> None:
        figures = self._figures()
        logger.bind(throughput=figures).info(
            "throughput: {files_done} done, {files_failed} failed in {window_seconds}s ({files_per_minute}/min, "
            "{segments_per_second} segments/s, {generated_tokens_per_second} tokens/s, cache hit rate "
            "{cache_hit_rate}); totals {files_done_total} done {files_failed_total} failed; inbox {inbox_depth}, "
            "in flight {in_flight}, busy {worker_busy}", **figures)
        self.throughput.new_window()
        now = time.monotonic()
        for h in self.workers.values():
            h.new_window(now)
        self.notifier.status(self._short_status())

    # ----- life cycle ----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Everything before READY: folders, plan, model identity, crash recovery, backlog scan."""
        self.spool.prepare()
        self.cpus = available_cpus()
        tuned = read_tuned(self.spool.state) if self.config.workers.count == self.config.workers.threads == "auto" else None
        self.plan = plan_workers(self.config.workers, self.cpus, tuned[0] if tuned else None)
        if tuned and self.plan == tuned[0]:
            self.config.model.n_batch = tuned[1]
            logger.info("using the tuned split from {}: {} x {}, n_batch {}", self.spool.state / "tuned.yaml",
                        self.plan.count, self.plan.threads, tuned[1])
        self.model = self.factory.describe(self.config)
        self.file_queue = FileQueue(self.spool, Ledger(self.spool.state / "ledger.sqlite"), self.config.queue.on_success)
        recovered = self.file_queue.recover()
        for name in recovered:
            logger.warning("recovered {} from processing/ after an unclean stop; back in the inbox", name)
        if self.config.cache.enabled:
            result_cache.open_cache_file(result_cache.cache_path(self.config))
        self._scan()
        logger.info("enrichd starting: {} worker(s) x {} thread(s) on CPUs {}, model {} ({}), inbox {}, {} file(s) waiting",
                    self.plan.count, self.plan.threads, ",".join(map(str, self.cpus)), self.model.name,
                    self.model.sha256[:12], self.spool.inbox, len(self.candidates))

    def _evict_loop(self, stop: threading.Event) -> None:
        path = result_cache.cache_path(self.config)
        while not stop.wait(self.config.cache.evict_seconds):
            try:
                removed = result_cache.evict(path, self.config.cache)
                if removed:
                    logger.info("cache eviction removed {} entries from {}", removed, path.name)
            except Exception as exc:  # eviction is housekeeping: it must never stop the daemon
                logger.error("cache eviction failed on {}: {}", path.name, exc)

    def run(self) -> int:
        from daemon.watcher import InboxWatcher

        self.prepare()
        assert self.plan is not None
        for worker_id, cpus in enumerate(self.plan.cpu_sets(self.cpus)):
            self._start_worker(worker_id, cpus)
        watcher = InboxWatcher(self.spool.inbox, self.config.queue.polling)
        watcher.start()
        stop_housekeeping = threading.Event()
        if self.config.cache.enabled:
            threading.Thread(target=self._evict_loop, args=(stop_housekeeping,), daemon=True).start()
        self.notifier.ready(self._short_status())
        logger.info("ready: watching {}", self.spool.inbox)
        last_scan = last_throughput = time.monotonic()
        last_status = 0.0
        try:
            while not self.stopping and self.fatal is None:
                self._drain_events(TICK_SECONDS)
                self._check_workers()
                watcher.ensure_running()
                now = time.monotonic()
                if self.reopen_logs:
                    self.reopen_logs = False
                    setup_logging(self.config.logging)
                    logger.info("log files reopened")
                self.candidates |= watcher.drain()
                if now - last_scan >= self.config.queue.rescan_seconds:
                    self._scan()
                    last_scan = now
                if not self.paused:
                    self._dispatch()
                if now - last_status >= STATUS_SECONDS:
                    write_status(self.spool.state, self._status("paused" if self.paused else "running"))
                    last_status = now
                if now - last_throughput >= self.config.logging.throughput_seconds:
                    self._log_throughput()
                    last_throughput = now
                self.notifier.watchdog(watcher.healthy() and all(h.process.is_alive() for h in self.workers.values()))
        finally:
            watcher.stop()
            stop_housekeeping.set()
            self._shutdown()
        return 1 if self.fatal else 0

    def _shutdown(self) -> None:
        """Drain in-flight jobs within the drain time, then put what is left back in the inbox."""
        self.stopping = True
        self.notifier.stopping()
        drain = self.config.workers.drain_seconds
        in_flight = [h.job.name for h in self.workers.values() if h.job]
        logger.info("stopping: draining {} job(s) for up to {:.0f} s", len(in_flight), drain)
        self.notifier.extend_timeout(drain + 15)
        deadline = time.monotonic() + drain
        while any(h.job for h in self.workers.values()) and time.monotonic() < deadline and not self.immediate:
            self._drain_events(TICK_SECONDS)
            for handle in list(self.workers.values()):
                if handle.job and not handle.process.is_alive():
                    self.file_queue.release(handle.job.name)
                    handle.job = None
        for handle in self.workers.values():
            if handle.job is not None:
                handle.process.kill()
                self.file_queue.release(handle.job.name)
                logger.warning("stopping: {} unfinished, back in the inbox", handle.job.name)
                handle.job = None
            elif handle.process.is_alive():
                handle.jobs.put(None)
        for handle in self.workers.values():
            handle.process.join(timeout=10)
            if handle.process.is_alive():
                handle.process.kill()
                handle.process.join(timeout=5)
        write_status(self.spool.state, self._status("stopped"))
        self.file_queue.ledger.close()
        logger.info("stopped: {}", self._short_status())


def run_daemon(config: Config, factory: EngineFactory) -> int:
    supervisor = Supervisor(config, factory)
    supervisor.install_signal_handlers()
    try:
        return supervisor.run()
    except EnrichdError as exc:
        logger.error("cannot start: {}", exc)
        return 2
