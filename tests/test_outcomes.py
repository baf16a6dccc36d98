"""The one outbox writer checks every document against its job, whichever backend sent it: a local worker's
document made from other bytes, for another file, or by another model or prompts is that attempt's failure."""

from __future__ import annotations

import hashlib

import pytest
from loguru import logger

from daemon.engine import EngineStats
from daemon.guard import EntryGuard
from daemon.messages import Done, Job, JobSummary
from daemon.outcomes import Outcomes
from daemon.quarantine import Quarantine
from daemon.spool import FileQueue, Spool
from daemon.status import Reporter
from daemon.storage import StorageWatch

DATA = b"Agent: Bonjour.\nClient: Ma box ne marche plus.\n"
DIGEST = hashlib.sha256(DATA).hexdigest()
IDENTITY, VERSION = "m" * 64, "v1"


def document(**changes: str) -> dict:
    source = {"file": changes.get("file", "call.txt"), "sha256": changes.get("sha256", DIGEST)}
    provenance = {"model": {"sha256": changes.get("model", IDENTITY)}, "prompt_version": changes.get("prompts", VERSION)}
    return {"source": source, "provenance": provenance}


@pytest.mark.parametrize("changes, problem", [
    ({"sha256": "f" * 64}, "made from other bytes"),
    ({"file": "other.txt"}, "names another file ('other.txt')"),
    ({"model": "e" * 64}, "made by another model"),
    ({"prompts": "v0"}, "made with other prompts (v0, this daemon's are v1)"),
])
def test_a_local_document_that_is_not_the_jobs_output_is_that_attempts_failure(spool, changes, problem):
    _, config = spool({"queue": {"max_attempts": 3}})
    files = Spool.from_config(config)
    files.prepare()
    (files.inbox / "call.txt").write_bytes(DATA)
    file_queue = FileQueue.open(files, config.queue)
    assert file_queue.claim("call.txt") is not None
    reporter = Reporter(files, 60)
    storage = StorageWatch({"outbox": files.outbox})
    guard = EntryGuard(files, file_queue, storage, Quarantine(files.inbox, files.state / "quarantine"), reporter,
                       lambda name: None)
    outcomes = Outcomes(config, files, file_queue, storage, reporter, guard, IDENTITY, VERSION)
    summary = JobSummary(("call.enriched.json",), {}, 2, {}, EngineStats(), None)

    lines: list[str] = []
    handler = logger.add(lines.append, format="{message}", level="WARNING")
    try:
        outcomes.settle(Done(0, Job("call.txt", 1, sha256=DIGEST), summary, document(**changes)))
    finally:
        logger.remove(handler)

    assert list(files.outbox.iterdir()) == [] and (files.inbox / "call.txt").read_bytes() == DATA
    assert file_queue.ledger.attempts("call.txt") == 1
    assert len(lines) == 1 and lines[0].startswith("retry call.txt") and "MismatchedResult: it " in lines[0]
    assert problem in lines[0]
