"""The supervisor's side of `workers.backend: celery`: a `Pool` whose slots are the remote workers' children.

A claimed file is published as one task: its bytes, its name, and the job's identity (name, input, model
and prompt version hashed, plus the attempt) as the task id. Before publishing, the task id is looked up in
the result backend: a result already there is taken as it is, a task a worker is already running is
followed; so a supervisor that restarts (and puts processing/ back in the inbox) enriches nothing twice.
Results are read by polling the backend; a task no worker has started for `republish_seconds` (lost with
a broker restarted without persistence) is published again under the same id. While the broker cannot
be reached, no slot is offered (files stay in the inbox) and one error line is logged per retry period.

A task whose worker is gone is noticed within about two capacity checks (20 s), not after the visibility
timeout: a started task that no living worker lists as active twice in a row, or that starts again in another
child (its child died and Celery redelivered it), is lost. Its id is revoked (a redelivery of it is dropped
and a run of it killed) and the job comes back as `Lost`: that counts an attempt, and the next attempt is a
task of its own id, so a late result of the lost one is never taken.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from daemon.config import Config
from daemon.errors import PoolUnavailable, WireError
from daemon.messages import (Done, ErrorInfo, Event, Failed, Job, Lost, SlotStatus, TaskMessage, WorkerState,
                             from_wire, to_wire)
from daemon.model_store import ModelInfo
from daemon.names import shown
from daemon.remote.app import RESULT_KEY, TASK, endpoints, job_id, make_app, signing_key, task_id
from daemon.remote.signing import signed, verified
from daemon.secrets import redacted, scrubbed

CAPACITY_SECONDS = 10.0
INSPECT_TIMEOUT_SECONDS = 1.0
MISSING_CHECKS = 2
RUNNING = ("STARTED", "PROGRESS")


@dataclass
class Task:
    job: Job
    id: str
    message: TaskMessage
    published: float = field(default_factory=time.monotonic)
    started: bool = False
    host: str | None = None
    pid: int | None = None
    progress: str = ""
    missing: int = 0


class CeleryPool:
    def __init__(self, config: Config, model: ModelInfo, prompt_version: str):
        self.config = config
        self.model = model
        self.prompt_version = prompt_version
        self.app = make_app(config)
        self.key = signing_key(config)
        urls = endpoints(config)
        self.urls = list(urls.values())
        self.broker = redacted(urls["broker_url"])
        self.tasks: dict[str, Task] = {}
        self.ended: list[Event | Lost] = []
        self.capacity = 0
        self.checked = -CAPACITY_SECONDS
        self.reachable = True
        self.complained = -CAPACITY_SECONDS
        self.stopping = False

    # ----- capacity ------------------------------------------------------------------------------
    def start(self) -> None:
        self._refresh()

    def _complain(self, what: str, exc: Exception) -> None:
        """One line per retry period, not one per file or per tick."""
        if time.monotonic() - self.complained >= CAPACITY_SECONDS:
            logger.error("celery broker {} unreachable ({}: {}); files wait in the inbox, retrying every {:.0f} s",
                         self.broker, what, scrubbed(str(exc), self.urls), CAPACITY_SECONDS)
            self.complained = time.monotonic()

    def _refresh(self) -> None:
        """How many worker children are there to take jobs (asked of the workers every CAPACITY_SECONDS)."""
        if time.monotonic() - self.checked < CAPACITY_SECONDS:
            return
        self.checked = time.monotonic()
        try:
            stats = self.app.control.inspect(timeout=INSPECT_TIMEOUT_SECONDS).stats() or {}
            active = self.app.control.inspect(timeout=INSPECT_TIMEOUT_SECONDS, limit=len(stats)).active() or {} \
                if stats else {}
        except Exception as exc:  # kombu and redis raise their own connection errors
            self.reachable = False
            self._complain("asking the workers", exc)
            return
        self._find_lost({entry["id"] for tasks in active.values() for entry in tasks or []})
        if not self.reachable:
            logger.info("celery broker {} reachable again", self.broker)
        self.reachable = True
        capacity = sum(int(s.get("pool", {}).get("max-concurrency", 0)) for s in stats.values())
        if capacity != self.capacity:
            logger.info("celery workers: {} host process(es), {} slot(s)", len(stats), capacity)
        self.capacity = capacity

    def _find_lost(self, running: set[str]) -> None:
        """Started tasks that no living worker runs, `MISSING_CHECKS` checks in a row: lost with their worker."""
        for task in list(self.tasks.values()):
            task.missing = task.missing + 1 if task.started and task.id not in running else 0
            if task.missing >= MISSING_CHECKS:
                self._lose(task, f"task {task.id} is run by no living worker (it was on {task.host}, pid {task.pid})")

    def _lose(self, task: Task, reason: str) -> None:
        """The task is given up: revoked (a redelivery is dropped, a run of it killed), its job handed back."""
        del self.tasks[task.id]
        logger.warning("{}: {}; revoked, the job comes back as a lost attempt", shown(task.job.name), reason)
        try:
            self.app.control.revoke(task.id, terminate=True, signal="SIGKILL")
        except Exception as exc:  # a revoke that does not arrive leaves a duplicate run whose result nobody reads
            self._complain("revoking a lost task", exc)
        self.ended.append(Lost(0, task.job, reason, task.pid))

    def idle(self) -> list[int]:
        self._refresh()
        if self.stopping or not self.reachable:
            return []
        return list(range(len(self.tasks), max(len(self.tasks), self.capacity)))

    # ----- jobs ----------------------------------------------------------------------------------
    def submit(self, slot: int, job: Job, data: bytes) -> None:
        """Publish the job with the bytes the supervisor read at the claim."""
        message = TaskMessage(job, base64.b64encode(data).decode("ascii"), self.model.identity, self.prompt_version)
        task = Task(job, task_id(job_id(job.name, job.sha256, self.model.identity, self.prompt_version), job.attempt),
                    message)
        try:
            state = self.app.AsyncResult(task.id).state
            if state == "PENDING":
                self._publish(task)
            else:
                logger.info("{}: task {} is already {} on a worker; followed, not sent again", shown(job.name), task.id,
                            state.lower())
        except Exception as exc:
            self.reachable = False
            self._complain("publishing", exc)
            raise PoolUnavailable(f"{shown(job.name)}: the broker {self.broker} cannot be reached: "
                                  f"{scrubbed(str(exc), self.urls)}") from None
        self.tasks[task.id] = task

    def _publish(self, task: Task) -> None:
        logger.debug("{}: published as task {}", shown(task.job.name), task.id)
        # kwargsrepr: what task events (Flower, exporters) and worker logs show in place of the transcript
        self.app.send_task(TASK, kwargs=signed(to_wire(task.message), self.key, task.id), task_id=task.id,
                           kwargsrepr=f"<{shown(task.job.name)} attempt {task.job.attempt}: transcript withheld>",
                           queue=self.config.celery.queue, time_limit=self.config.workers.job_timeout_seconds)
        task.published = time.monotonic()

    def in_flight(self) -> list[Job]:
        return [task.job for task in self.tasks.values()]

    def collect(self, timeout: float) -> list[Event | Lost]:
        """Results and progress of the tasks in flight, read from the backend; lost tasks published again."""
        time.sleep(timeout)
        self._refresh()
        found: list[Event | Lost] = []
        for task in list(self.tasks.values()):
            try:
                result = self.app.AsyncResult(task.id)
                state, info = result.state, result.info
            except Exception as exc:
                self._complain("reading results", exc)
                break
            if state in RUNNING and isinstance(info, dict):
                pid = info.get("pid", task.pid)
                if task.started and None not in (pid, task.pid) and pid != task.pid:
                    self._lose(task, f"task {task.id} started again in pid {pid}: its child pid {task.pid} died")
                    continue
                task.started = True
                task.host = info.get("host") or info.get("hostname") or task.host
                task.pid, task.progress = pid, info.get("progress", task.progress)
            elif state == "SUCCESS":
                found.append(self._ended(task, info))
                self._forget(result, task.id)
            elif state in ("FAILURE", "REVOKED"):
                error = ErrorInfo(type(info).__name__ if isinstance(info, BaseException) else state, str(info), None, task.pid)
                found.append(Failed(0, task.job, error, permanent=False))
                del self.tasks[task.id]
                self._forget(result, task.id)
            elif state == "PENDING" and time.monotonic() - task.published > self.config.celery.republish_seconds:
                logger.warning("{}: task {} not started by any worker in {:.0f} s; published again",
                               shown(task.job.name), task.id, self.config.celery.republish_seconds)
                try:
                    self._publish(task)
                except Exception as exc:  # the broker went away: published again on a later tick
                    self._complain("publishing again", exc)
        found += self.ended
        self.ended = []
        return found

    def _ended(self, task: Task, payload: Any) -> Event:
        """The task's result as an event for the job the supervisor sent (whatever job the result names); a result
        not signed with the deployment's key, or of any other shape, is that file's (transient) failure. Whether
        a document is this job's output is checked where every document is, before it is written (outcomes.py)."""
        del self.tasks[task.id]
        try:
            payload = verified(payload, self.key, task.id)
        except WireError as exc:
            return Failed(0, task.job, ErrorInfo("UnsignedResult", f"task {task.id}: result refused: {exc}", None,
                                                 task.pid), permanent=False)
        try:
            outcome = from_wire(payload)
            if not isinstance(outcome, (Done, Failed)) or outcome.job.name != task.job.name:
                raise WireError(f"a result for {shown(getattr(getattr(outcome, 'job', None), 'name', '?'))[:80]!r}")
        except WireError as exc:
            problem = f"task {task.id} returned a result of an unexpected shape ({exc})"
            return Failed(0, task.job, ErrorInfo("MalformedResult", problem[:500], None, task.pid), permanent=False)
        if isinstance(outcome, Failed):
            return Failed(0, task.job, outcome.error, permanent=bool(outcome.permanent))
        return Done(0, task.job, outcome.summary, outcome.document)

    def _forget(self, result: Any, task_id: str) -> None:
        """A settled task's result and the worker's kept copy, deleted: documents hold transcript text."""
        try:
            result.forget()
            self.app.backend.client.delete(RESULT_KEY.format(task_id))
        except Exception as exc:  # both expire after the visibility timeout; a lost delete only keeps them longer
            self._complain("forgetting a result", exc)

    # ----- stopping and reporting ------------------------------------------------------------------
    def drain(self) -> None:
        self.stopping = True

    def stop(self) -> list[Job]:
        """The jobs still out: their files go back to the inbox; their tasks go on, and a later claim of the
        same file finds their result."""
        self.stopping = True
        jobs = self.in_flight()
        self.tasks.clear()
        return jobs

    def healthy(self) -> bool:
        return True

    def slots(self) -> list[SlotStatus]:
        busy = [SlotStatus(i, t.pid, WorkerState.BUSY if t.started else WorkerState.STARTING, (), t.job, t.progress, 0,
                           1.0, t.host) for i, t in enumerate(self.tasks.values())]
        idle = [SlotStatus(i, None, WorkerState.IDLE, (), None, "", 0, 0.0) for i in range(len(busy), self.capacity)]
        return busy + idle

    def new_window(self) -> None:
        pass

    def share_idle(self, waiting: bool) -> None:
        pass
