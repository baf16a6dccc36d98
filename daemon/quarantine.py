"""Inbox entries the daemon could neither handle nor park in failed/ (a producer's folder it may not write,
an entry that vanished halfway): a note in the state folder, and the entry is left alone until it changes.

Without this, an entry whose every move fails would be met again at every scan and every restart. A note
names the entry (its bytes in hex, so any name round-trips), the step that failed and why; it is dropped as
soon as the entry is gone or has changed (new inode, size or mtime), so a fixed file is taken again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from daemon.names import encodable, name_key, shown
from daemon.output import write_atomic

QUARANTINE_DIR = "quarantine"
Signature = tuple[int, int, int]


def _signature(path: Path) -> Signature | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


@dataclass
class Quarantine:
    inbox: Path
    folder: Path
    held: dict[str, Signature] = field(default_factory=dict)

    def load(self) -> None:
        """The notes of earlier runs: their entries stay set aside while unchanged."""
        try:
            notes = list(self.folder.glob("*.json"))
        except OSError:
            return
        for note in notes:
            try:
                data = json.loads(note.read_text(encoding="utf-8"))
                name = os.fsdecode(bytes.fromhex(data["name_hex"]))
                self.held[name] = (int(data["inode"]), int(data["size"]), int(data["mtime_ns"]))
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning("quarantine note {} unreadable; ignored", note.name)

    def _note(self, name: str) -> Path:
        return self.folder / (hashlib.sha256(name_key(name)).hexdigest()[:32] + ".json")

    def hold(self, name: str, step: str, problem: str) -> None:
        signature = _signature(self.inbox / name) or (0, 0, 0)
        self.held[name] = signature
        note = {"file": shown(name), "name_hex": name_key(name).hex(), "step": step, "problem": encodable(problem),
                "at": time.time(), "inode": signature[0], "size": signature[1], "mtime_ns": signature[2]}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(self._note(name), json.dumps(note, ensure_ascii=False, indent=2) + "\n")
        except Exception as exc:  # the note is a courtesy: the entry stays held in memory all the same
            logger.warning("quarantine note for {} not written: {}", shown(name), exc)
        logger.error("{} set aside: {} failed ({}) and it could not be moved to failed/; note in {}; it is taken "
                     "again once it changes", shown(name), step, problem, self.folder)

    def holds(self, name: str) -> bool:
        """Whether `name` is set aside and still the entry that was (else its note goes)."""
        if name not in self.held:
            return False
        if _signature(self.inbox / name) == self.held[name]:
            return True
        del self.held[name]
        try:
            self._note(name).unlink(missing_ok=True)
        except OSError:
            pass
        return False
