"""What a Celery worker child does: set itself up once (its own CPU set, its model), then run jobs.

A child is forked by Celery's prefork pool; it loads its model only then, never the parent before the
fork (llama.cpp's OpenMP threads do not survive a fork). Each child takes the first free CPU set of the
host's plan by locking a file for its life: a replacement child gets the set its predecessor held.
A job's result is kept under its task id as soon as it exists; a redelivered task (worker killed, host
lost, visibility timeout) finds it, says so and returns it without enriching the file again: the first
result of a job wins.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, TextIO

from loguru import logger

from daemon.config import Config
from daemon.engine import EngineFactory
from daemon.errors import EnrichdError, WireError
from daemon.job import run_job
from daemon.messages import Done, ErrorInfo, Failed, Job, TaskMessage, from_wire, to_wire
from daemon.names import shown
from daemon.pipeline import EnrichContext
from daemon.remote.app import RESULT_KEY
from daemon.worker_setup import open_context

SLOTS_DIR = "celery-slots"


@dataclass
class Child:
    """One worker child for its whole life."""

    config: Config
    slot: int
    cpus: tuple[int, ...]
    lock: TextIO
    context: EnrichContext
    model_identity: str

    @property
    def host(self) -> str:
        return socket.gethostname()


def claim_cpu_set(config: Config, cpu_sets: list[list[int]]) -> tuple[int, TextIO]:
    """The first CPU set whose lock file no living child holds (the lock goes with the process)."""
    folder = config.paths.state / SLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for slot in range(len(cpu_sets)):
        handle = open(folder / f"{slot}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return slot, handle
    raise EnrichdError(f"every CPU set of this host's plan ({len(cpu_sets)}) is taken by another worker child")


def set_up_child(config: Config, factory: EngineFactory, cpu_sets: list[list[int]]) -> Child:
    slot, lock = claim_cpu_set(config, cpu_sets)
    cpus = tuple(cpu_sets[slot])
    started = time.perf_counter()
    context, _ = open_context(config, factory, cpus, process=f"worker-{slot}")
    model = context.model
    logger.info("worker child {} (pid {}) on CPUs {}: model {}{} loaded in {:.1f} s", slot, os.getpid(),
                ",".join(map(str, cpus)), model.name, f" and scorer {model.scorer.name}" if model.scorer else "",
                time.perf_counter() - started)
    return Child(config, slot, cpus, lock, context, model.identity)


def short_identity(identity: str) -> str:
    """The first 12 hex digits of each sha256 in a model identity (main model, then scorer)."""
    return "+".join(part[:12] for part in identity.split("+"))


def refused(exc: WireError) -> dict[str, Any]:
    """The result of a task this worker cannot take (unsigned, unreadable): a transient failure of no job it could
    name; the supervisor fails the job it sent."""
    return to_wire(Failed(0, Job("?", 0), ErrorInfo.of(exc), permanent=False))


def run_task(child: Child, message: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """One task, from its message to the result the supervisor checks and writes (both `messages.to_wire`): the
    document, or why it failed. The job itself is the local worker's (job.run_job); a fault of this host's folders
    is a plain retry here, not a reason for the supervisor to pause its own intake."""
    try:
        task = from_wire(message)
        if not isinstance(task, TaskMessage):
            raise WireError(f"a {message.get('kind')} message sent as a task")
    except WireError as exc:
        return refused(exc)
    job, name = task.job, shown(task.job.name)

    def failed(problem: str) -> dict[str, Any]:
        return to_wire(Failed(0, job, ErrorInfo.of(EnrichdError(f"{name}: {problem}")), permanent=False))

    try:
        data = base64.b64decode(task.data, validate=True)
    except ValueError:
        return failed("its data is not base64 (damaged in transit)")
    if hashlib.sha256(data).hexdigest() != job.sha256:
        return failed("its bytes do not match their sha256 (damaged in transit)")
    if task.prompt_version != child.context.prompt_version:
        child.context.refresh()  # recalibrated since this child started: it enriches with what it checks
    here = (child.model_identity, child.context.prompt_version)
    if (task.model_identity, task.prompt_version) != here:
        return failed(f"this worker on {child.host} runs model {short_identity(here[0])} with prompts {here[1]}, the "
                      f"job was sent for model {short_identity(task.model_identity)} with prompts {task.prompt_version}")
    outcome = run_job(job, data, child.context, progress)
    if isinstance(outcome, Done):
        outcome = replace(outcome, summary=replace(outcome.summary, host=child.host, pid=os.getpid()))
    else:
        outcome = replace(outcome, host_fault=False)
    return to_wire(outcome)


def first_result(client: Any, task: str, result: dict[str, Any], keep_seconds: int) -> dict[str, Any]:
    """Keep `result` as the job's result unless an earlier run of the same task kept one: that one wins."""
    if client.set(RESULT_KEY.format(task), json.dumps(result), nx=True, ex=keep_seconds):
        return result
    logger.warning("a second run of task {} finished; its result is dropped, the first one stands", task)
    return json.loads(client.get(RESULT_KEY.format(task)))


def earlier_result(client: Any, task: str) -> dict[str, Any] | None:
    kept = client.get(RESULT_KEY.format(task))
    return json.loads(kept) if kept else None

