"""Which inbox entries are ours to take, and when: the walk of the inbox, the entry checks, the settle timer.

Names are paths relative to the inbox (`2026/11/27/call.srt`) in surrogateescape form, so any name the
file system allows is kept exactly (daemon/names.py). The walk is iterative with a depth limit: a tree of
any depth cannot overflow the stack, and folders deeper than `queue.max_depth` are reported, not entered.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from loguru import logger

from daemon.config import Config
from daemon.names import shown

ALWAYS_IGNORED = (".*", "~$*", "*.tmp", "*.part", "*.crdownload", "*.swp")
UNLIMITED_DEPTH = 1 << 30


def entries(root: Path, recursive: bool, max_depth: int = UNLIMITED_DEPTH, too_deep: set[str] | None = None,
            start: str = "") -> Iterator[str]:
    """Names of what lies in `root` (or in its folder `start`), relative to `root`. With `recursive`, the files
    of its folders down to `max_depth` levels instead of the folders themselves; links are never followed,
    hidden folders never entered, and folders past the depth limit are added to `too_deep`. A folder that
    cannot be listed (a producer's, unreadable) is skipped with its error logged."""
    pending = [(start, start.count("/") + 1 if start else 0)]
    while pending:
        prefix, depth = pending.pop()
        try:
            with os.scandir(root / prefix if prefix else root) as found:
                listed = list(found)
        except OSError as exc:
            if not prefix:
                raise
            logger.warning("inbox folder {} cannot be listed: {}; skipped", shown(prefix), exc.strerror or exc)
            continue
        for entry in listed:
            name = f"{prefix}/{entry.name}" if prefix else entry.name
            if recursive and entry.is_dir(follow_symlinks=False):
                if entry.name.startswith("."):
                    continue
                if depth + 1 > max_depth:
                    if too_deep is not None:
                        too_deep.add(name)
                    continue
                pending.append((name, depth + 1))
            else:
                yield name


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
class Intake:
    """Which inbox entries are ours to take."""

    extensions: tuple[str, ...]
    ignore: tuple[str, ...]
    recursive: bool = False
    max_depth: int = 16
    too_deep: set[str] = field(default_factory=set)

    @classmethod
    def from_config(cls, config: Config) -> "Intake":
        q = config.queue
        return cls(tuple(e.lower() for e in q.extensions), ALWAYS_IGNORED + tuple(q.ignore), q.recursive, q.max_depth)

    def ignored(self, name: str) -> bool:
        """Ignored patterns, files inside hidden folders, and names deeper than the walk goes (events name them)."""
        *folders, base = name.split("/")
        return (any(fnmatch.fnmatchcase(base, pattern) for pattern in self.ignore)
                or any(folder.startswith(".") for folder in folders) or len(folders) > self.max_depth)

    def wanted(self, name: str) -> bool:
        return not self.ignored(name) and Path(name).suffix.lower() in self.extensions

    def walk(self, inbox: Path, start: str = "") -> set[str]:
        """Every entry of the inbox, or of its folder `start` (a full scan: file system events get lost); files at
        any depth down to the limit if recursive. Folders past the limit are logged once each."""
        deep: set[str] = set()
        try:
            found = set(entries(inbox, self.recursive, self.max_depth, deep, start))
        except OSError as exc:
            logger.error("cannot list inbox {}: {}", inbox, exc.strerror or exc)
            return set()
        for name in sorted(deep - self.too_deep):
            logger.warning("inbox folder {} is deeper than queue.max_depth ({}); not entered", shown(name),
                           self.max_depth)
        self.too_deep |= deep
        return found

    def depth(self, inbox: Path) -> int:
        """How many files wait in the inbox (-1 when it cannot be listed)."""
        try:
            return sum(1 for name in entries(inbox, self.recursive, self.max_depth) if self.wanted(name))
        except OSError:
            return -1


@dataclass
class Settler:
    """A file is ready once its size and mtime have not changed for `settle_seconds`; keyed by its name
    relative to the inbox, so same-named files in two subfolders settle on their own."""

    settle_seconds: float
    seen: dict[str, tuple[int, int, float]] = field(default_factory=dict)

    def ready(self, name: str, path: Path, now: float) -> bool:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            self.seen.pop(name, None)
            return False
        signature = (info.st_size, info.st_mtime_ns)
        previous = self.seen.get(name)
        if previous is None or previous[:2] != signature:
            self.seen[name] = (*signature, now)
            return self.settle_seconds == 0
        return now - previous[2] >= self.settle_seconds

    def forget(self, name: str) -> None:
        self.seen.pop(name, None)
