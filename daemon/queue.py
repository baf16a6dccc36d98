"""The file queue: spool directories, the state of each file, and the moves between them.

inbox/ --claim (atomic rename)--> processing/ --retire--> archive/ (or deleted)
                                      |--release (crash, drain, transient error)--> inbox/
                                      '--fail--> failed/ + <name>.error.json
Every move is an os.rename inside one filesystem, so a file is always in exactly one place; the
input is retired only after its output is on disk. Attempt counts live in a small SQLite ledger so
they survive restarts.
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
from typing import Any

from loguru import logger

from daemon.config import Config
from daemon.errors import QueueError
from daemon.output import write_atomic

ALWAYS_IGNORED = (".*", "~$*", "*.tmp", "*.part", "*.crdownload", "*.swp")
ERROR_SUFFIX = ".error.json"


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

    @classmethod
    def from_config(cls, config: Config) -> "Intake":
        return cls(tuple(e.lower() for e in config.queue.extensions), ALWAYS_IGNORED + tuple(config.queue.ignore))

    def ignored(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.ignore)

    def wanted(self, name: str) -> bool:
        return not self.ignored(name) and Path(name).suffix.lower() in self.extensions


def entry_problem(path: Path) -> str | None:
    """Why an inbox entry must not be read (it is not a plain file), or None."""
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
    """`name`, or `name` with a timestamp when a previous failure of the same name is still there."""
    target = directory / name
    if not os.path.lexists(target):
        return target
    stem, suffix = os.path.splitext(name)
    return directory / f"{stem}.{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}{suffix}"


@dataclass
class FileQueue:
    spool: Spool
    ledger: Ledger
    on_success: str = "archive"

    def claim(self, name: str) -> Path | None:
        """Move an inbox file into processing/; None if someone else took it or a twin is in flight."""
        source, target = self.spool.inbox / name, self.spool.processing / name
        if os.path.lexists(target):
            return None
        try:
            os.rename(source, target)
        except FileNotFoundError:
            return None
        return target

    def release(self, name: str) -> None:
        """Back to the inbox (crash recovery, drain, transient failure); the ledger keeps the count."""
        source = self.spool.processing / name
        if os.path.lexists(source):
            os.rename(source, _unique(self.spool.inbox, name))

    def retire(self, name: str) -> None:
        source = self.spool.processing / name
        if self.on_success == "delete":
            source.unlink(missing_ok=True)
        elif os.path.lexists(source):
            os.replace(source, self.spool.archive / name)
        self.ledger.forget(name)

    def fail(self, name: str, details: dict[str, Any], from_inbox: bool = False) -> Path:
        """Park the file in failed/ beside `<name>.error.json`; nothing is deleted."""
        source = (self.spool.inbox if from_inbox else self.spool.processing) / name
        target = _unique(self.spool.failed, name)
        os.rename(source, target)
        record = {"file": name, "attempts": self.ledger.attempts(name), "first_seen": self.ledger.first_seen(name),
                  "failed_at": time.time(), **details}
        write_atomic(target.with_name(target.name + ERROR_SUFFIX), json.dumps(record, ensure_ascii=False, indent=2) + "\n")
        self.ledger.forget(name)
        return target

    def recover(self) -> list[str]:
        """After a crash: put processing/ back in the inbox and drop half-written outputs."""
        moved = []
        for path in sorted(self.spool.processing.iterdir()):
            self.release(path.name)
            moved.append(path.name)
        for tmp in self.spool.outbox.glob(".*.tmp"):
            if tmp.is_file():
                tmp.unlink()
        return moved

    def requeue(self, names: list[str] | None) -> list[str]:
        """failed/ -> inbox with a fresh attempt count; `names` None means every failed file."""
        if names is None:
            names = sorted(p.name for p in self.spool.failed.iterdir() if not p.name.endswith(ERROR_SUFFIX))
        moved = []
        for name in names:
            source = self.spool.failed / name
            if not os.path.lexists(source) or name.endswith(ERROR_SUFFIX):
                logger.warning("requeue {}: not in {}", name, self.spool.failed)
                continue
            if entry_problem(source):
                logger.warning("requeue {}: {}; left in failed/", name, entry_problem(source))
                continue
            os.rename(source, _unique(self.spool.inbox, name))
            (self.spool.failed / (name + ERROR_SUFFIX)).unlink(missing_ok=True)
            self.ledger.forget(name)
            moved.append(name)
        return moved
