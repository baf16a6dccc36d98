"""Inbox names seen (by the watcher or a scan) and not yet claimed, and which of them may be claimed now.

Hostile entries go straight to failed/; a folder is walked (with queue.recursive) or left alone with one warning;
what is ignored, gone or set aside is dropped; a wanted file is ready once it has settled and its retry is due.
"""

from __future__ import annotations

import os
import time

from loguru import logger

from daemon.guard import EntryGuard
from daemon.intake import Intake, Settler, entry_problem
from daemon.names import shown
from daemon.quarantine import Quarantine
from daemon.spool import FileQueue, Spool
from daemon.status import Reporter


class Candidates:
    def __init__(self, spool: Spool, intake: Intake, settler: Settler, quarantine: Quarantine):
        self.spool = spool
        self.intake = intake
        self.settler = settler
        self.quarantine = quarantine
        self.names: set[str] = set()
        self.folders: set[str] = set()  # folders left alone (queue.recursive off), warned about once

    def add(self, names: set[str]) -> None:
        self.names |= names

    def forget(self, name: str) -> None:
        """No longer a candidate (claimed, failed, set aside); its settle timer starts again if it comes back."""
        self.names.discard(name)
        self.settler.forget(name)

    def ready(self, file_queue: FileQueue, reporter: Reporter, guard: EntryGuard) -> list[str]:
        """Candidates that are plain, settled, wanted and due, in name order."""
        now_wall, now = time.time(), time.monotonic()
        ready = []
        for name in sorted(self.names):
            with guard.entry(name, "taking in"):
                if self._take_in(name, now, now_wall, file_queue, reporter):
                    ready.append(name)
        return ready

    def _take_in(self, name: str, now: float, now_wall: float, file_queue: FileQueue, reporter: Reporter) -> bool:
        path = self.spool.inbox / name
        if self.intake.ignored(name) or not os.path.lexists(path) or self.quarantine.holds(name):
            self.forget(name)
            return False
        if path.is_dir() and not path.is_symlink():
            self.names.discard(name)
            if self.intake.recursive:
                self.names |= self.intake.walk(self.spool.inbox, name)
            elif name not in self.folders:
                self.folders.add(name)
                logger.warning("inbox folder {} left alone: queue.recursive is off", shown(name))
            return False
        if problem := entry_problem(path):
            self.names.discard(name)
            reporter.record_verdict(file_queue.reject(name, problem), "UnsafeEntry")
            return False
        if not self.intake.wanted(name):
            self.names.discard(name)
            return False
        return self.settler.ready(name, path, now) and file_queue.ledger.not_before(name) <= now_wall
