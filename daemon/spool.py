"""The file queue: spool directories, the moves between them, and what a job's outcome does to its file.

inbox/ --claim (atomic rename)--> processing/ --retire--> archive/ (or deleted)
                                      |--release (crash, drain, transient error, host fault)--> inbox/
                                      '--fail--> failed/ + <name>.error.json
Every move is a rename inside one filesystem, made relative to folders opened without following links
(fsops.py), never over an existing name, and fsynced; so a file is always in exactly one place, and the
input is retired only after its output is on disk and only if it has not changed since its claim. Attempt
counts live in the ledger (ledger.py). With `queue.recursive`, a name is a path relative to the inbox
(`2026/11/27/call.srt`) and every folder mirrors it; the daemon never removes a folder of the inbox (a
producer may still be writing into it), only the empty ones it made in processing/.
A move or a record that fails because one of the daemon's own folders cannot be written raises StorageError
(a fault of the host); any other OSError is the entry's own problem, raised as it is.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from daemon.config import Config, QueueConfig
from daemon.errors import QueueError, StorageError
from daemon.fsops import Folder, fsync_dir, is_host_fault, rename_noreplace, twin_names
from daemon.intake import entries, entry_problem
from daemon.ledger import Ledger
from daemon.messages import ErrorInfo, Job
from daemon.names import encodable, fitted, shown
from daemon.output import write_atomic

ERROR_SUFFIX = ".error.json"
LEDGER_FILE = "ledger.sqlite"
Signature = tuple[int, int, int, int]


def error_record_name(name: str) -> str:
    """`<name>.error.json` beside a failed file, shortened to fit the file system's name limit."""
    folder, base = os.path.split(name)
    return os.path.join(folder, fitted(base, ERROR_SUFFIX))


def _signature(info: os.stat_result) -> Signature:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


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


@dataclass(frozen=True)
class Verdict:
    """What an outcome did to the file: `retired`, `retry` (after `delay` seconds), `failed` (to `target`),
    `requeued` (it changed while it was enriched) or `held` (a host fault: back in the inbox, nothing counted)."""

    action: str
    attempts: int
    delay: float = 0.0
    target: Path | None = None


@dataclass
class FileQueue:
    spool: Spool
    ledger: Ledger
    settings: QueueConfig = field(default_factory=QueueConfig)
    claimed: dict[str, Signature] = field(default_factory=dict)

    @classmethod
    def open(cls, spool: Spool, settings: QueueConfig) -> "FileQueue":
        return cls(spool, Ledger(spool.state / LEDGER_FILE), settings)

    # ----- moves ---------------------------------------------------------------------------------
    def _move(self, source_root: Path, name: str, target_root: Path, unique: bool) -> str:
        """`source_root/name` to `target_root/<name or a twin of it>`, returning the name it has there. Never
        follows a link, never replaces a file, fsyncs both folders."""
        folder, base = os.path.split(name)
        try:
            with Folder(source_root, folder) as source, Folder(target_root, folder, create=True) as target:
                for candidate in twin_names(base) if unique else [base]:
                    try:
                        rename_noreplace(source.fd, base, target.fd, candidate)
                        break
                    except FileExistsError:
                        continue
                else:
                    raise FileExistsError(errno.EEXIST, "every twin name is taken", shown(name))
                fsync_dir(source.fd)
                fsync_dir(target.fd)
        except OSError as exc:
            if is_host_fault(exc, target_root):
                raise StorageError(target_root, f"cannot move {shown(name)} there: {exc.strerror}") from exc
            raise
        return os.path.join(folder, candidate)

    def claim(self, name: str) -> Path | None:
        """Move an inbox file into processing/; None if someone else took it, a twin is in flight, or it is no
        longer a plain file (the next scan sees what it became)."""
        if os.path.lexists(self.spool.processing / name):
            return None
        folder, base = os.path.split(name)
        try:
            with Folder(self.spool.inbox, folder) as source:
                info = os.stat(base, dir_fd=source.fd, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):  # what the descriptor shows, not a second look by path
                return None
            self._move(self.spool.inbox, name, self.spool.processing, unique=False)
        except (FileNotFoundError, NotADirectoryError, FileExistsError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise
        self.claimed[name] = _signature(info)
        return self.spool.processing / name

    def changed_since_claim(self, name: str) -> bool:
        """Whether the claimed file differs (inode, size, mtime) from what was claimed: a producer still writing."""
        try:
            now = _signature(os.lstat(self.spool.processing / name))
        except FileNotFoundError:
            return False
        return name in self.claimed and self.claimed[name] != now

    def release(self, name: str) -> None:
        """processing/ -> inbox (crash recovery, drain, transient failure, host fault); the ledger keeps the count.
        A name taken in the inbox meanwhile gets a timestamped twin: nothing is overwritten."""
        self.claimed.pop(name, None)
        if os.path.lexists(self.spool.processing / name):
            self._move(self.spool.processing, name, self.spool.inbox, unique=True)
            _prune(self.spool.processing, name)

    def retire(self, name: str) -> None:
        """processing/ -> archive/ (or deleted), once the output is on disk. A crash before the move leaves the
        input in processing/: it is enriched again after restart and its deterministic output name is
        overwritten, never doubled. An input archived before under the same name is kept: this one gets a twin."""
        source = self.spool.processing / name
        self.ledger.forget(name)  # first: a ledger that cannot be written leaves the file where it is
        if self.settings.on_success == "delete":
            try:
                source.unlink(missing_ok=True)
            except OSError as exc:
                if is_host_fault(exc, self.spool.processing):
                    raise StorageError(self.spool.processing, f"cannot delete {shown(name)}: {exc.strerror}") from exc
                raise
        elif os.path.lexists(source):
            self._move(self.spool.processing, name, self.spool.archive, unique=True)
        self.claimed.pop(name, None)
        _prune(self.spool.processing, name)

    def fail(self, name: str, details: dict[str, Any], from_inbox: bool = False) -> Path:
        """Park the file in failed/ beside `<name>.error.json`; nothing is deleted. The file moves first: a crash
        before the record is written leaves it in failed/ without its reason, never lost. A record that cannot be
        written (failed/ full) sends the file back where it was and raises StorageError."""
        source_root = self.spool.inbox if from_inbox else self.spool.processing
        parked = self._move(source_root, name, self.spool.failed, unique=True)
        self.claimed.pop(name, None)
        if not from_inbox:
            _prune(self.spool.processing, name)
        record = {"file": shown(name), "attempts": self.ledger.attempts(name),
                  "first_seen": self.ledger.first_seen(name), "failed_at": time.time(),
                  **{key: encodable(value) if isinstance(value, str) else value for key, value in details.items()}}
        try:
            write_atomic(self.spool.failed / error_record_name(parked),
                         json.dumps(record, ensure_ascii=False, indent=2) + "\n")
        except StorageError:
            self._move(self.spool.failed, parked, source_root, unique=True)
            raise
        self.ledger.forget(name)
        return self.spool.failed / parked

    # ----- outcomes ------------------------------------------------------------------------------
    def settle(self, job: Job, error: ErrorInfo | None = None, permanent: bool = False,
               host_fault: bool = False) -> Verdict:
        """The one place that decides a file's fate after its job. Done: retired, unless the input changed since its
        claim (then it goes back to be enriched again). A host fault (the outbox full): back to the inbox, no
        attempt counted. Failed: the attempt is recorded, then the file is released to be retried after a backoff,
        or failed once the error is permanent or the attempts are spent. A crash between the ledger write and the
        move leaves the file in processing/, which the next start puts back in the inbox."""
        if error is None:
            if self.changed_since_claim(job.name):
                self.release(job.name)
                logger.warning("{} changed while it was enriched; back in the inbox to be enriched again",
                               shown(job.name))
                return Verdict("requeued", job.attempt)
            self.retire(job.name)
            return Verdict("retired", job.attempt)
        if host_fault:
            self.release(job.name)
            return Verdict("held", job.attempt - 1)
        delay = backoff_seconds(self.settings.backoff_seconds, job.attempt)
        attempts = self.ledger.record_attempt(job.name, error.message, time.time() + delay)
        if permanent or attempts >= self.settings.max_attempts:
            target = self.fail(job.name, {"error_type": error.type, "message": error.message, "worker_pid": error.pid,
                                          "traceback": error.traceback, "permanent": permanent})
            logger.error("failed {}: {}: {} (attempt {}, moved to {})", shown(job.name), error.type,
                         shown(error.message), attempts, target.parent.name + "/")
            return Verdict("failed", attempts, target=target)
        self.release(job.name)
        logger.warning("retry {} in {:.0f} s: {}: {} (attempt {} of {})", shown(job.name), delay, error.type,
                       shown(error.message), attempts, self.settings.max_attempts)
        return Verdict("retry", attempts, delay)

    def reject(self, name: str, problem: str) -> Verdict:
        """An inbox entry that must never be read (a link, a FIFO, a folder), or whose handling failed: to failed/
        as it is."""
        target = self.fail(name, {"error_type": "UnsafeEntry", "message": f"{shown(name)}: {problem}",
                                  "permanent": True}, from_inbox=True)
        logger.error("failed {}: {}; moved to failed/", shown(name), problem)
        return Verdict("failed", 0, target=target)

    def leftovers(self, keep: frozenset[str] = frozenset()) -> list[str]:
        """What lies in processing/ apart from the files of jobs in flight (`keep`): after a crash, everything;
        after a host fault, the files whose outcome could not be settled. Each goes back with `release`."""
        return sorted(set(entries(self.spool.processing, True)) - keep)

    def drop_partial_outputs(self) -> None:
        """After a crash: half-written (hidden .tmp) outputs go."""
        for tmp in self.spool.outbox.rglob(".*.tmp"):
            if tmp.is_file():
                tmp.unlink()

    def requeue(self, names: list[str] | None) -> list[str]:
        """failed/ -> inbox with a fresh attempt count; `names` None means every failed file. The record goes only
        after the file has moved."""
        if names is None:
            names = sorted(n for n in entries(self.spool.failed, True) if not n.endswith(ERROR_SUFFIX))
        moved = []
        for name in names:
            source = self.spool.failed / name
            if not os.path.lexists(source) or name.endswith(ERROR_SUFFIX):
                logger.warning("requeue {}: not in {}", shown(name), self.spool.failed)
                continue
            if problem := entry_problem(source):
                logger.warning("requeue {}: {}; left in failed/", shown(name), problem)
                continue
            self._move(self.spool.failed, name, self.spool.inbox, unique=True)
            (self.spool.failed / error_record_name(name)).unlink(missing_ok=True)
            self.ledger.forget(name)
            moved.append(name)
        return moved
