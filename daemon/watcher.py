"""Inbox discovery: watchdog events while running, with a restartable observer.

Events get lost (network filesystems, inotify overflow), so the supervisor also rescans the inbox
periodically; this module only makes events arrive sooner and reports an observer that died. An observer
that cannot watch the inbox at all (a folder tree too deep for watchdog's walk, no inotify watches left)
leaves the daemon on its rescans, with one line a minute saying so, and is tried again as long as it fails.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from loguru import logger
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

RETRY_SECONDS = 60.0


class _Collector(FileSystemEventHandler):
    def __init__(self, names: set[str], lock: threading.Lock, inbox: Path, recursive: bool):
        self._names, self._lock, self._inbox, self._recursive = names, lock, inbox, recursive

    def _note(self, path: str | bytes) -> None:
        candidate = Path(path if isinstance(path, str) else path.decode(errors="surrogateescape"))
        if candidate.parent == self._inbox or (self._recursive and self._inbox in candidate.parents):
            with self._lock:
                self._names.add(str(candidate.relative_to(self._inbox)))

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("created", "modified", "moved", "closed"):
            self._note(getattr(event, "dest_path", "") or event.src_path)


class InboxWatcher:
    """Collects names of inbox entries that changed; `drain()` hands them to the supervisor."""

    def __init__(self, inbox: Path, polling: bool, recursive: bool = False, poll_seconds: float = 1.0):
        self.inbox = inbox.resolve()
        self.polling = polling
        self.recursive = recursive
        self.poll_seconds = poll_seconds
        self._names: set[str] = set()
        self._lock = threading.Lock()
        self._observer: BaseObserver | None = None
        self.restarts = 0
        self.failing: str | None = None
        self.last_try = 0.0

    def start(self) -> None:
        """Start observing; an observer that cannot start leaves the inbox to the rescans until the next try."""
        self.last_try = time.monotonic()
        observer = PollingObserver(timeout=self.poll_seconds) if self.polling else Observer()
        try:
            observer.schedule(_Collector(self._names, self._lock, self.inbox, self.recursive), str(self.inbox),
                              recursive=self.recursive)
            observer.daemon = True
            observer.start()
        except Exception as exc:  # watchdog's own walk and inotify raise what they meet (RecursionError, OSError)
            with_reason = f"{type(exc).__name__}: {exc}"[:200]
            logger.error("inbox watcher for {} cannot run ({}); files are found by the rescan every "
                         "queue.rescan_seconds; tried again in {:.0f} s", self.inbox, with_reason, RETRY_SECONDS)
            self.failing, self._observer = with_reason, None
            return
        if self.failing is not None:
            logger.info("inbox watcher for {} running again", self.inbox)
        self.failing, self._observer = None, observer

    def healthy(self) -> bool:
        """Running, or failing with its reason logged and the rescan standing in."""
        return self.failing is not None or (self._observer is not None and self._observer.is_alive())

    def ensure_running(self) -> None:
        """Restart an observer thread that died; an unwatched inbox must never go unnoticed."""
        if self.failing is not None:
            if time.monotonic() - self.last_try >= RETRY_SECONDS:
                self.start()
        elif self._observer is not None and not self._observer.is_alive():
            self.restarts += 1
            logger.error("inbox watcher for {} stopped; restarting it (restart #{})", self.inbox, self.restarts)
            self.start()

    def drain(self) -> set[str]:
        """The names noted since the last drain; the set is emptied in place, since the observer's handler
        holds it (swapping in a new set would leave every later event in the old one)."""
        with self._lock:
            names = set(self._names)
            self._names.clear()
        return names

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
