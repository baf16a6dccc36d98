"""Faults of the host, not of a file: a folder of the daemon's own that cannot be written pauses intake.

A full or read-only outbox, failed/, archive, processing or state folder is no reason to charge queued files
an attempt: whoever meets the fault reports it here (a StorageError), intake pauses, one line a minute says
why, and every few seconds a probe write into each folder decides whether writing works again; then intake
resumes by itself (Postfix's queue manager does the same with a full queue file system).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from daemon.errors import StorageError

PROBE_SECONDS = 5.0
LOG_SECONDS = 60.0
PROBE_BYTES = 64 * 1024
PROBE_NAME = ".enrichd-probe"


def probe(folder: Path) -> None:
    """Write, fsync and remove a file about the size of an output; StorageError if any step fails."""
    path = folder / PROBE_NAME
    try:
        with open(path, "wb") as handle:
            handle.write(b"\0" * PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise StorageError(folder, f"cannot be written: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


@dataclass
class StorageWatch:
    folders: dict[str, Path]
    fault: str | None = None
    since: float = 0.0
    last_probe: float = 0.0
    last_log: float = 0.0
    faults: int = 0

    def report(self, fault: str) -> None:
        """A write into one of the daemon's folders failed for a reason of the folder's: pause intake."""
        now = time.monotonic()
        if self.fault is None:
            self.since, self.last_log = now, now
            self.faults += 1
            logger.error("host fault: {}; intake paused, no file is charged for it; retrying every {:.0f} s",
                         fault, PROBE_SECONDS)
        self.fault, self.last_probe = fault, now

    def recovered(self) -> bool:
        """Called every tick: while a fault lasts, probe the folders now and then; True once, when all can be
        written again."""
        if self.fault is None:
            return False
        now = time.monotonic()
        if now - self.last_log >= LOG_SECONDS:
            self.last_log = now
            logger.error("host fault for {:.0f} s: {}; intake still paused", now - self.since, self.fault)
        if now - self.last_probe < PROBE_SECONDS:
            return False
        self.last_probe = now
        try:
            for folder in self.folders.values():
                probe(folder)
        except StorageError as exc:
            self.fault = str(exc)
            return False
        logger.info("host fault over after {:.0f} s ({}); intake resumes", now - self.since, self.fault)
        self.fault = None
        return True
