"""The file queue's parts on their own, without a daemon: settling, the ledger, backoff, outcomes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from daemon.config import QueueConfig
from daemon.messages import ErrorInfo, Job
from daemon.intake import Settler
from daemon.ledger import Ledger
from daemon.spool import FileQueue, Spool, backoff_seconds


def spool_in(tmp_path: Path) -> Spool:
    spool = Spool(*(tmp_path / name for name in ("inbox", "processing", "outbox", "failed", "archive", "state")))
    spool.prepare()
    return spool


def test_backoff_doubles_from_its_base():
    assert [backoff_seconds(5.0, n) for n in (0, 1, 2, 3, 4)] == [5.0, 5.0, 10.0, 20.0, 40.0]


def test_a_file_is_ready_once_size_and_mtime_hold_for_the_settle_time(tmp_path):
    path = tmp_path / "call.txt"
    path.write_text("a")
    settler = Settler(2.0)
    assert not settler.ready("call.txt", path, 100.0)
    assert not settler.ready("call.txt", path, 101.0)
    path.write_text("ab")
    assert not settler.ready("call.txt", path, 101.5)
    assert not settler.ready("call.txt", path, 103.0)
    assert settler.ready("call.txt", path, 103.6)
    assert Settler(0.0).ready("call.txt", path, 0.0)
    path.unlink()
    assert not settler.ready("call.txt", path, 200.0) and "call.txt" not in settler.seen


def test_the_ledger_counts_attempts_and_keeps_them_across_connections(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    assert ledger.attempts("a.txt") == 0 and ledger.not_before("a.txt") == 0.0
    assert ledger.record_attempt("a.txt", "boom", 123.0) == 1
    assert ledger.record_attempt("a.txt", "boom again", 456.0) == 2
    first_seen = ledger.first_seen("a.txt")
    ledger.close()
    again = Ledger(tmp_path / "ledger.sqlite")
    assert again.attempts("a.txt") == 2 and again.not_before("a.txt") == 456.0 and again.first_seen("a.txt") == first_seen
    again.forget("a.txt")
    assert again.attempts("a.txt") == 0
    again.close()


def test_settle_retires_retries_with_backoff_then_fails_with_the_record(tmp_path):
    spool = spool_in(tmp_path)
    queue = FileQueue.open(spool, QueueConfig(max_attempts=2, backoff_seconds=10.0))
    (spool.inbox / "a.txt").write_text("x")
    (spool.inbox / "b.txt").write_text("y")
    for name in ("a.txt", "b.txt"):
        assert queue.claim(name) == spool.processing / name
    assert queue.settle(Job("a.txt", 1)).action == "retired" and (spool.archive / "a.txt").exists()
    error = ErrorInfo("OSError", "disk hiccup", "Traceback ...", 42)
    before = time.time()
    verdict = queue.settle(Job("b.txt", 1), error)
    assert (verdict.action, verdict.attempts, verdict.delay) == ("retry", 1, 10.0)
    assert (spool.inbox / "b.txt").exists() and queue.ledger.not_before("b.txt") >= before + 10.0
    queue.claim("b.txt")
    verdict = queue.settle(Job("b.txt", 2), error)
    assert verdict.action == "failed" and verdict.target == spool.failed / "b.txt" and verdict.target.read_text() == "y"
    record = json.loads((spool.failed / "b.txt.error.json").read_text())
    assert record["attempts"] == 2 and record["error_type"] == "OSError" and record["traceback"] == "Traceback ..."
    assert record["worker_pid"] == 42 and record["permanent"] is False
    assert queue.ledger.attempts("b.txt") == 0 and not any(spool.processing.iterdir())


def test_a_permanent_error_fails_at_once_and_an_unsafe_entry_fails_unread(tmp_path):
    spool = spool_in(tmp_path)
    queue = FileQueue.open(spool, QueueConfig(max_attempts=5))
    (spool.inbox / "bad.json").write_text("{")
    queue.claim("bad.json")
    assert queue.settle(Job("bad.json", 1), ErrorInfo("TranscriptError", "invalid JSON"), permanent=True).action == "failed"
    os.symlink("/etc/passwd", spool.inbox / "link.txt")
    verdict = queue.reject("link.txt", "a symbolic link: never followed or read")
    assert verdict.action == "failed" and (spool.failed / "link.txt").is_symlink()
    assert json.loads((spool.failed / "link.txt.error.json").read_text())["error_type"] == "UnsafeEntry"


def test_a_failed_name_taken_twice_keeps_both(tmp_path):
    spool = spool_in(tmp_path)
    queue = FileQueue.open(spool, QueueConfig(max_attempts=1))
    for content in ("first", "second"):
        (spool.inbox / "x.txt").write_text(content)
        queue.claim("x.txt")
        queue.settle(Job("x.txt", 1), ErrorInfo("E", "m"))
    kept = sorted(p.read_text() for p in spool.failed.iterdir() if not p.name.endswith(".error.json"))
    assert kept == ["first", "second"]
