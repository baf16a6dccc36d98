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
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from loguru import logger

from daemon.cache import Cache, cache_path
from daemon.config import Config
from daemon.engine import EngineFactory
from daemon.errors import EnrichdError, TranscriptError
from daemon.formats import parse_bytes
from daemon.logs import setup_logging
from daemon.messages import ErrorInfo, Job, JobSummary
from daemon.metadata import read_thresholds
from daemon.names import shown
from daemon.output import output_names
from daemon.pipeline import EnrichContext, enrich, prompt_version

RESULT_KEY = "enrichd:result:{}"
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
    os.sched_setaffinity(0, cpus)
    setup_logging(config.logging, process=f"worker-{slot}")
    started = time.perf_counter()
    model = factory.describe(config)
    engine, scorer = factory.load_all(config, len(cpus))
    cache = Cache(cache_path(config)) if config.cache.enabled else None
    context = EnrichContext(config, model, lambda: engine, cache, (lambda: scorer) if scorer else None)
    logger.info("worker child {} (pid {}) on CPUs {}: model {}{} loaded in {:.1f} s", slot, os.getpid(),
                ",".join(map(str, cpus)), model.name, f" and scorer {model.scorer.name}" if model.scorer else "",
                time.perf_counter() - started)
    return Child(config, slot, cpus, lock, context, model.identity)


def short_identity(identity: str) -> str:
    """The first 12 hex digits of each sha256 in a model identity (main model, then scorer)."""
    return "+".join(part[:12] for part in identity.split("+"))


def failure(exc: BaseException, permanent: bool) -> dict[str, Any]:
    return {"status": "failed", "permanent": permanent, "error": ErrorInfo.of(exc).as_dict()}


def run_job(child: Child, message: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """One job, from its message to the result the supervisor writes: the document, or why it failed."""
    name = message["name"]
    dispatch = Job(name, message["attempt"], message.get("claimed", 0.0)).dispatch_seconds()
    data = base64.b64decode(message["data"])
    if hashlib.sha256(data).hexdigest() != message["sha256"]:
        return failure(EnrichdError(f"{name}: its bytes do not match their sha256 (damaged in transit)"), False)
    expected = (message["model_identity"], message["prompt_version"])
    thresholds = read_thresholds(child.config.paths.state, child.context.model.sha256, child.config.enrichment)
    here = (child.model_identity, prompt_version(child.config.enrichment, thresholds))
    if expected != here:
        return failure(EnrichdError(f"{name}: this worker on {child.host} runs model {short_identity(here[0])} with "
                                    f"prompts {here[1]}, the job was sent for model {short_identity(expected[0])} with "
                                    f"prompts {expected[1]}"),
                       False)
    try:
        started = time.perf_counter()
        transcript = parse_bytes(data, shown(name), child.config.queue.limits)
        output = enrich(transcript, child.context, time.perf_counter() - started, progress, dispatch)
    except TranscriptError as exc:
        return failure(exc, True)
    except Exception as exc:  # anything else is this job's transient failure, not the child's end
        return failure(exc, False)
    summary = JobSummary.of(output, (output_names(name)[0],), 0.0)
    return {"status": "done", "document": output,
            "summary": {**summary.as_dict(), "host": child.host, "pid": os.getpid()}}


def first_result(client: Any, task: str, result: dict[str, Any], keep_seconds: int) -> dict[str, Any]:
    """Keep `result` as the job's result unless an earlier run of the same task kept one: that one wins."""
    if client.set(RESULT_KEY.format(task), json.dumps(result), nx=True, ex=keep_seconds):
        return result
    logger.warning("{}: a second run of task {} finished; its result is dropped, the first one stands",
                   result.get("summary", {}).get("outputs", ["?"])[0], task)
    return json.loads(client.get(RESULT_KEY.format(task)))


def earlier_result(client: Any, task: str) -> dict[str, Any] | None:
    kept = client.get(RESULT_KEY.format(task))
    return json.loads(kept) if kept else None

