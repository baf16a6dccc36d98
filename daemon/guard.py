"""The guard around each inbox entry's handling: what goes wrong there is that entry's problem, never the loop's.

A StorageError is a fault of the host (storage.py: intake pauses, nothing is charged); anything else is the
entry's failure: it goes to failed/ with its record, or, where even that is impossible, it is set aside with a
note (quarantine.py), and the supervisor goes on with the others.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

from loguru import logger

from daemon.errors import PoolUnavailable, StorageError
from daemon.names import shown
from daemon.quarantine import Quarantine
from daemon.spool import FileQueue, Spool
from daemon.status import Reporter
from daemon.storage import StorageWatch


class EntryGuard:
    def __init__(self, spool: Spool, file_queue: FileQueue, storage: StorageWatch, quarantine: Quarantine,
                 reporter: Reporter, forget: Callable[[str], None]):
        self.spool = spool
        self.file_queue = file_queue
        self.storage = storage
        self.quarantine = quarantine
        self.reporter = reporter
        self.forget = forget  # the entry is no longer a candidate for intake

    @contextmanager
    def entry(self, name: str, step: str) -> Iterator[None]:
        """One entry's handling (`step`: taking in, claiming, settling the outcome of, putting back)."""
        try:
            yield
        except StorageError as exc:
            self.storage.report(str(exc))
        except PoolUnavailable:
            raise
        except Exception as exc:  # the loop outlives any one entry, whatever it raised
            self.set_aside(name, step, exc)

    def set_aside(self, name: str, step: str, exc: Exception) -> None:
        """An entry whose handling raised: to failed/ with the error as its record, or held with a note."""
        self.forget(name)
        problem = f"{type(exc).__name__}: {exc}"
        logger.error("{} {}: {}; the file goes to failed/", step, shown(name), shown(problem))
        in_processing = os.path.lexists(self.spool.processing / name)
        try:
            if in_processing or os.path.lexists(self.spool.inbox / name):
                verdict = self.file_queue.fail(name, {"error_type": type(exc).__name__, "message": f"{step}: {problem}",
                                                      "permanent": True}, from_inbox=not in_processing)
                self.reporter.record_verdict(verdict, type(exc).__name__)
            return
        except StorageError as fault:
            self.storage.report(str(fault))
            return
        except Exception as again:  # not even failed/ could take it: a note, and the entry is left alone
            problem = f"{problem}; then moving it to failed/: {type(again).__name__}: {again}"
        self.quarantine.hold(name, step, problem)
