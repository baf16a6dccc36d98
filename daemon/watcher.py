"""Inbox discovery: watchdog events while running, with a restartable observer.

Events get lost (network filesystems, inotify overflow), so the supervisor also rescans the inbox
periodically; this module only makes events arrive sooner and reports an observer that died.
"""

from __future__ import annotations

import threading
from pathlib import Path

from loguru import logger
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver


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

    def start(self) -> None:
        observer = PollingObserver(timeout=self.poll_seconds) if self.polling else Observer()
        observer.schedule(_Collector(self._names, self._lock, self.inbox, self.recursive), str(self.inbox),
                          recursive=self.recursive)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def healthy(self) -> bool:
        return self._observer is not None and self._observer.is_alive()

    def ensure_running(self) -> None:
        """Restart an observer thread that died; an unwatched inbox must never go unnoticed."""
        if self._observer is not None and not self._observer.is_alive():
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
