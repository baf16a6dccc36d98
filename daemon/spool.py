"""The file queue: spool directories, the state of each file, the moves between them, and what a job's
outcome does to its file.

inbox/ --claim (atomic rename)--> processing/ --retire--> archive/ (or deleted)
                                      |--release (crash, drain, transient error)--> inbox/
                                      '--fail--> failed/ + <name>.error.json
Every move is an os.rename inside one filesystem, so a file is always in exactly one place; the
input is retired only after its output is on disk (the worker wrote it). Attempt counts and retry
times live in a small SQLite ledger so they survive restarts. With `queue.recursive`, a name is a path
relative to the inbox (`2026/11/27/call.srt`) and every folder mirrors it; the daemon never removes a
folder of the inbox (a producer may still be writing into it), only the empty ones it made in processing/.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from loguru import logger

from daemon.config import Config, QueueConfig
from daemon.errors import QueueError
from daemon.messages import ErrorInfo, Job
from daemon.output import write_atomic

ALWAYS_IGNORED = (".*", "~$*", "*.tmp", "*.part", "*.crdownload", "*.swp")
ERROR_SUFFIX = ".error.json"
LEDGER_FILE = "ledger.sqlite"


def entries(root: Path, recursive: bool, prefix: str = "") -> Iterator[str]:
    """Names of what lies in `root`, relative to it. With `recursive`, the files of its folders at any depth
    instead of the folders themselves; links are never followed and hidden folders never entered."""
    with os.scandir(root / prefix if prefix else root) as found:
        for entry in found:
            name = f"{prefix}{entry.name}"
            if recursive and entry.is_dir(follow_symlinks=False):
                if not entry.name.startswith("."):
                    yield from entries(root, True, name + "/")
            else:
                yield name


def _move(source: Path, target: Path) -> None:
    """One rename, into a folder made for it if it is new."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(source, target)


def _prune(root: Path, name: str) -> None:
    """Remove the folders of `name` under `root` that the last move left empty (never `root` itself)."""
    folder = (root / name).parent
    while folder != root:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def backoff_seconds(base: float, attempts: int) -> float:
    """The wait before attempt `attempts + 1`: `base`, doubled with every further attempt."""
    return base * 2 ** max(0, attempts - 1)


@dataclass
class Spool:
    inbox: Path
    processing: Path
    outbox: Path
    failed: Path
    archive: Path
    state: Path

    @classmethod
    def from_config(cls, config: Config) -> "Spool":
        p = config.paths
        return cls(p.inbox, p.processing, p.outbox, p.failed, p.archive, p.state)

    def directories(self) -> dict[str, Path]:
        return {"inbox": self.inbox, "processing": self.processing, "outbox": self.outbox,
                "failed": self.failed, "archive": self.archive, "state": self.state}

    def count(self, folder: str) -> int:
        """Files in `processing` or parked in `failed`, at any depth (error records not counted)."""
        try:
            return sum(1 for name in entries(self.directories()[folder], True) if not name.endswith(ERROR_SUFFIX))
        except OSError:
            return -1

    def prepare(self) -> None:
        """Create the folders and refuse a layout where a rename could cross filesystems."""
        devices: dict[int, list[str]] = {}
        for name, path in self.directories().items():
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise QueueError(f"paths.{name}: cannot create {path}: {exc.strerror}") from exc
            if not os.access(path, os.W_OK | os.X_OK):
                raise QueueError(f"paths.{name}: {path} is not writable by this user")
            if name != "state":
                devices.setdefault(path.stat().st_dev, []).append(name)
        if len(devices) > 1:
            groups = " / ".join(", ".join(names) for names in devices.values())
            raise QueueError(f"inbox, processing, outbox, failed and archive must be on one filesystem; found: {groups}")


@dataclass
class Intake:
    """Which inbox entries are ours to take."""

    extensions: tuple[str, ...]
    ignore: tuple[str, ...]
    recursive: bool = False

    @classmethod
    def from_config(cls, config: Config) -> "Intake":
        return cls(tuple(e.lower() for e in config.queue.extensions), ALWAYS_IGNORED + tuple(config.queue.ignore),
                   config.queue.recursive)

    def ignored(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(os.path.basename(name), pattern) for pattern in self.ignore)

    def wanted(self, name: str) -> bool:
        return not self.ignored(name) and Path(name).suffix.lower() in self.extensions

    def scan(self, inbox: Path) -> set[str]:
        """Every entry of the inbox (a full scan: filesystem events get lost); files at any depth if recursive."""
        try:
            return set(entries(inbox, self.recursive))
        except OSError as exc:
            logger.error("cannot list inbox {}: {}", inbox, exc)
            return set()

    def depth(self, inbox: Path) -> int:
        """How many files wait in the inbox (-1 when it cannot be listed)."""
        try:
            return sum(1 for name in entries(inbox, self.recursive) if self.wanted(name))
        except OSError:
            return -1


def entry_problem(path: Path) -> str | None:
    """Why an inbox entry must not be read (a link, even to a folder; a FIFO, a device...), or None."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(info.st_mode):
        return None
    kinds = [(stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]
    kind = next((label for test, label in kinds if test(info.st_mode)), "not a regular file")
    return f"{kind}: never followed or read"


@dataclass
class Settler:
    """A file is ready once its size and mtime have not changed for `settle_seconds`."""

    settle_seconds: float
    seen: dict[str, tuple[int, int, float]] = field(default_factory=dict)

    def ready(self, path: Path, now: float) -> bool:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            self.seen.pop(path.name, None)
            return False
        signature = (info.st_size, info.st_mtime_ns)
        previous = self.seen.get(path.name)
        if previous is None or previous[:2] != signature:
            self.seen[path.name] = (*signature, now)
            return self.settle_seconds == 0
        return now - previous[2] >= self.settle_seconds

    def forget(self, name: str) -> None:
        self.seen.pop(name, None)


class Ledger:
    """Attempt counts and retry times per file name, kept across restarts."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS files (name TEXT PRIMARY KEY, attempts INTEGER NOT NULL, "
                         "not_before REAL NOT NULL, first_seen REAL NOT NULL, last_error TEXT)")

    def attempts(self, name: str) -> int:
        row = self._db.execute("SELECT attempts FROM files WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    def not_before(self, name: str) -> float:
        row = self._db.execute("SELECT not_before FROM files WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0.0

    def first_seen(self, name: str) -> float:
        row = self._db.execute("SELECT first_seen FROM files WHERE name = ?", (name,)).fetchone()
        return row[0] if row else time.time()

    def record_attempt(self, name: str, error: str | None, not_before: float) -> int:
        now = time.time()
        self._db.execute(
            "INSERT INTO files (name, attempts, not_before, first_seen, last_error) VALUES (?, 1, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET attempts = attempts + 1, not_before = excluded.not_before, "
            "last_error = excluded.last_error", (name, not_before, now, error))
        return self.attempts(name)

    def forget(self, name: str) -> None:
        self._db.execute("DELETE FROM files WHERE name = ?", (name,))

    def close(self) -> None:
        self._db.close()


def _unique(directory: Path, name: str) -> Path:
    """`name`, or `name` with a timestamp when a previous file of the same name is still there."""
    target = directory / name
    if not os.path.lexists(target):
        return target
    stem, suffix = os.path.splitext(target.name)
    return target.with_name(f"{stem}.{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}{suffix}")


@dataclass(frozen=True)
class Verdict:
    """What an outcome did to the file: `retired`, `retry` (after `delay` seconds) or `failed` (to `target`)."""

    action: str
    attempts: int
    delay: float = 0.0
    target: Path | None = None


@dataclass
class FileQueue:
    spool: Spool
    ledger: Ledger
    settings: QueueConfig = field(default_factory=QueueConfig)

    @classmethod
    def open(cls, spool: Spool, settings: QueueConfig) -> "FileQueue":
        return cls(spool, Ledger(spool.state / LEDGER_FILE), settings)

    def settle(self, job: Job, error: ErrorInfo | None = None, permanent: bool = False) -> Verdict:
        """The one place that decides a file's fate after its job. Done: retired. Failed: the attempt is
        recorded, then the file is released to the inbox to be retried after a backoff, or failed once
        the error is permanent or the attempts are spent. A crash between the ledger write and the move
        leaves the file in processing/, which the next start puts back in the inbox."""
        if error is None:
            self.retire(job.name)
            return Verdict("retired", job.attempt)
        delay = backoff_seconds(self.settings.backoff_seconds, job.attempt)
        attempts = self.ledger.record_attempt(job.name, error.message, time.time() + delay)
        if permanent or attempts >= self.settings.max_attempts:
            target = self.fail(job.name, {"error_type": error.type, "message": error.message, "worker_pid": error.pid,
                                          "traceback": error.traceback, "permanent": permanent})
            logger.error("failed {}: {}: {} (attempt {}, moved to {})", job.name, error.type, error.message, attempts,
                         target.parent.name + "/")
            return Verdict("failed", attempts, target=target)
        self.release(job.name)
        logger.warning("retry {} in {:.0f} s: {}: {} (attempt {} of {})", job.name, delay, error.type, error.message,
                       attempts, self.settings.max_attempts)
        return Verdict("retry", attempts, delay)

    def reject(self, name: str, problem: str) -> Verdict:
        """An inbox entry that must never be read (a link, a FIFO, a folder): to failed/ as it is."""
        target = self.fail(name, {"error_type": "UnsafeEntry", "message": f"{name}: {problem}", "permanent": True},
                           from_inbox=True)
        logger.error("failed {}: {}; moved to failed/", name, problem)
        return Verdict("failed", 0, target=target)

    def claim(self, name: str) -> Path | None:
        """Move an inbox file into processing/; None if someone else took it or a twin is in flight."""
        source, target = self.spool.inbox / name, self.spool.processing / name
        if os.path.lexists(target):
            return None
        try:
            _move(source, target)
        except FileNotFoundError:
            return None
        return target

    def release(self, name: str) -> None:
        """processing/ -> inbox (crash recovery, drain, transient failure); the ledger keeps the count. A name
        taken in the inbox meanwhile gets a timestamped twin: nothing is overwritten."""
        source = self.spool.processing / name
        if os.path.lexists(source):
            _move(source, _unique(self.spool.inbox, name))
            _prune(self.spool.processing, name)

    def retire(self, name: str) -> None:
        """processing/ -> archive/ (or deleted), once the output is on disk. A crash before the move leaves the
        input in processing/: it is enriched again after restart and its deterministic output name is
        overwritten, never doubled."""
        source = self.spool.processing / name
        if self.settings.on_success == "delete":
            source.unlink(missing_ok=True)
        elif os.path.lexists(source):
            (self.spool.archive / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, self.spool.archive / name)
        _prune(self.spool.processing, name)
        self.ledger.forget(name)

    def fail(self, name: str, details: dict[str, Any], from_inbox: bool = False) -> Path:
        """Park the file in failed/ beside `<name>.error.json`; nothing is deleted. The file moves first: a crash
        before the record is written leaves it in failed/ without its reason, never lost."""
        source = (self.spool.inbox if from_inbox else self.spool.processing) / name
        target = _unique(self.spool.failed, name)
        _move(source, target)
        if not from_inbox:
            _prune(self.spool.processing, name)
        record = {"file": name, "attempts": self.ledger.attempts(name), "first_seen": self.ledger.first_seen(name),
                  "failed_at": time.time(), **details}
        write_atomic(target.with_name(target.name + ERROR_SUFFIX), json.dumps(record, ensure_ascii=False, indent=2) + "\n")
        self.ledger.forget(name)
        return target

    def recover(self) -> list[str]:
        """After a crash: put processing/ back in the inbox and drop half-written (hidden .tmp) outputs."""
        moved = sorted(entries(self.spool.processing, True))
        for name in moved:
            self.release(name)
        for tmp in self.spool.outbox.glob(".*.tmp"):
            if tmp.is_file():
                tmp.unlink()
        return moved

    def requeue(self, names: list[str] | None) -> list[str]:
        """failed/ -> inbox with a fresh attempt count; `names` None means every failed file. The record goes only
        after the file has moved."""
        if names is None:
            names = sorted(n for n in entries(self.spool.failed, True) if not n.endswith(ERROR_SUFFIX))
        moved = []
        for name in names:
            source = self.spool.failed / name
            if not os.path.lexists(source) or name.endswith(ERROR_SUFFIX):
                logger.warning("requeue {}: not in {}", name, self.spool.failed)
                continue
            if entry_problem(source):
                logger.warning("requeue {}: {}; left in failed/", name, entry_problem(source))
                continue
            _move(source, _unique(self.spool.inbox, name))
            (self.spool.failed / (name + ERROR_SUFFIX)).unlink(missing_ok=True)
            self.ledger.forget(name)
            moved.append(name)
        return moved
