"""Attempt counts and retry times per inbox file, in a small SQLite file so they survive restarts.

Keyed by the name's bytes (daemon/names.py): a name that is not UTF-8 is stored as it is, never refused by
SQLite. A write that fails (disk full, read-only state folder) is a StorageError: a fault of the host.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from daemon.errors import StorageError
from daemon.names import encodable, name_key


class Ledger:
    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS files (name BLOB PRIMARY KEY, attempts INTEGER NOT NULL, "
                             "not_before REAL NOT NULL, first_seen REAL NOT NULL, last_error TEXT)")
            # ledgers before names were bytes keyed them by text: the same name, as its UTF-8 bytes
            self._db.execute("UPDATE OR REPLACE files SET name = CAST(name AS BLOB) WHERE typeof(name) = 'text'")
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(path.parent, f"cannot open the ledger {path.name}: {exc}") from exc

    def _run(self, sql: str, *values: Any) -> Any:
        try:
            return self._db.execute(sql, values)
        except sqlite3.Error as exc:
            raise StorageError(self.path.parent, f"ledger {self.path.name}: {exc}") from exc

    def _value(self, column: str, name: str, default: Any) -> Any:
        row = self._run(f"SELECT {column} FROM files WHERE name = ?", name_key(name)).fetchone()
        return row[0] if row else default

    def attempts(self, name: str) -> int:
        return int(self._value("attempts", name, 0))

    def not_before(self, name: str) -> float:
        return float(self._value("not_before", name, 0.0))

    def first_seen(self, name: str) -> float:
        return float(self._value("first_seen", name, time.time()))

    def record_attempt(self, name: str, error: str | None, not_before: float) -> int:
        self._run("INSERT INTO files (name, attempts, not_before, first_seen, last_error) VALUES (?, 1, ?, ?, ?) "
                  "ON CONFLICT(name) DO UPDATE SET attempts = attempts + 1, not_before = excluded.not_before, "
                  "last_error = excluded.last_error", name_key(name), not_before, time.time(),
                  None if error is None else encodable(error))
        return self.attempts(name)

    def forget(self, name: str) -> None:
        self._run("DELETE FROM files WHERE name = ?", name_key(name))

    def close(self) -> None:
        self._db.close()
