"""Result cache in one SQLite file (sqlitedict, JSON values, WAL), shared by every worker process.

Three levels: `segment` (one correction), `metadata` (the four fields for one exact transcript
text) and `file` (a finished output for one input's bytes). Keys hash everything that can change
a result; values are JSON so a cache file can never be a way to run code. A broken cache file is
moved aside and replaced: the daemon works without a cache rather than failing files.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger
from sqlitedict import SqliteDict

from daemon.config import CacheConfig, Config

TABLE = "entries"
LEVELS = ("segment", "metadata", "file")
BUSY_TIMEOUT_SECONDS = 30.0
RETRIES = 5


def cache_path(config: Config) -> Path:
    return config.paths.state / "cache.sqlite"


def cache_key(level: str, parts: list[Any]) -> str:
    return hashlib.sha256(json.dumps([level, *parts], ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def _prepare(path: Path) -> None:
    """Create or check the file with settings sqlitedict does not set; raise DatabaseError if corrupt."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS) as conn:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{TABLE}" (key TEXT PRIMARY KEY, value BLOB)')
        result = conn.execute("PRAGMA quick_check").fetchone()
        if result[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {result[0]}")
    conn.close()


def move_aside(path: Path, reason: str) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        part = Path(str(path) + suffix)
        if part.exists():
            part.rename(Path(f"{part}.corrupt-{stamp}"))
    logger.error("cache {} is unreadable ({}); moved aside as .corrupt-{} and starting a new one", path.name, reason, stamp)


def open_cache_file(path: Path) -> None:
    """Make sure `path` is a usable cache database, replacing a corrupt one (not one on a full or read-only disk:
    sqlite's OperationalError goes up as it is)."""
    try:
        _prepare(path)
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as exc:
        move_aside(path, str(exc))
        _prepare(path)


@dataclass
class Cache:
    """One process's connection. Open it after spawn: SQLite connections do not cross fork or pickle."""

    path: Path
    hits: Counter[str] = field(default_factory=Counter)
    misses: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._db: SqliteDict | None = None
        try:
            open_cache_file(self.path)
            self._db = self._connect()
        except (sqlite3.Error, OSError) as exc:  # a full or read-only state folder: results are computed, not cached
            logger.error("cache {} cannot be opened: {}; this process goes on without a cache", self.path.name, exc)

    def _connect(self) -> SqliteDict:
        return SqliteDict(str(self.path), tablename=TABLE, autocommit=True, journal_mode="WAL",
                          encode=json.dumps, decode=json.loads, outer_stack=False)

    def _call(self, action: str, fn: Any) -> Any:
        """Run one operation; retry while another process holds the lock; give up on the cache if broken."""
        for attempt in range(RETRIES):
            if self._db is None:
                return None
            try:
                return fn(self._db)
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    time.sleep(0.05 * 2 ** attempt)
                    self._db = self._reconnect()
                    continue
                self._disable(action, exc)
            except (sqlite3.DatabaseError, RuntimeError, json.JSONDecodeError) as exc:
                self._disable(action, exc)
        if self._db is not None:
            logger.warning("cache {} still locked after {} tries; {} skipped (the result is computed, not cached)",
                           self.path.name, RETRIES, action)
        return None

    def _reconnect(self) -> SqliteDict | None:
        if self._db is not None:
            self._db.close(force=True)
        return self._connect()

    def _disable(self, action: str, exc: Exception) -> None:
        logger.error("cache {} failed during {}: {}; continuing without cache in this process", self.path.name, action, exc)
        if self._db is not None:
            self._db.close(force=True)
        self._db = None

    def get(self, level: str, parts: list[Any]) -> Any:
        key = cache_key(level, parts)
        entry = self._call("get", lambda db: db.get(key))
        if entry is None:
            self.misses[level] += 1
            return None
        self.hits[level] += 1
        entry["used"] = time.time()
        self._call("touch", lambda db: db.__setitem__(key, entry))
        return entry["value"]

    def put(self, level: str, parts: list[Any], value: Any) -> None:
        now = time.time()
        entry = {"level": level, "created": now, "used": now, "value": value}
        self._call("put", lambda db: db.__setitem__(cache_key(level, parts), entry))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def cache_counts(hits: Counter[str], misses: Counter[str]) -> dict[str, dict[str, int]]:
    return {level: {"hits": hits[level], "misses": misses[level]} for level in LEVELS}


@dataclass
class CacheSummary:
    entries: int
    bytes: int
    by_level: dict[str, int]


def summarize(path: Path) -> CacheSummary:
    if not path.exists():
        return CacheSummary(0, 0, {})
    with sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS) as conn:
        rows = conn.execute(
            f"SELECT json_extract(value, '$.level'), count(*) FROM \"{TABLE}\" GROUP BY 1").fetchall()
    conn.close()
    size = sum(Path(str(path) + s).stat().st_size for s in ("", "-wal") if Path(str(path) + s).exists())
    by_level = {level or "?": count for level, count in rows}
    return CacheSummary(sum(by_level.values()), size, by_level)


def evict(path: Path, config: CacheConfig, older_than_days: float | None = None) -> int:
    """Drop expired entries, then the least recently used until under both bounds. Returns rows removed."""
    if not path.exists():
        return 0
    removed = 0
    with sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS) as conn:
        days = older_than_days if older_than_days is not None else config.ttl_days
        if days is not None:
            cutoff = time.time() - days * 86400
            removed += conn.execute(
                f"DELETE FROM \"{TABLE}\" WHERE json_extract(value, '$.used') < ?", (cutoff,)).rowcount
        count, size = conn.execute(f"SELECT count(*), coalesce(sum(length(value)), 0) FROM \"{TABLE}\"").fetchone()
        excess = max(0, count - config.max_entries)
        limit_bytes = config.max_mb * 1024 * 1024
        if size > limit_bytes and count:
            excess = max(excess, int(count * (1 - limit_bytes / size)) + 1)
        if excess:
            removed += conn.execute(
                f"DELETE FROM \"{TABLE}\" WHERE key IN (SELECT key FROM \"{TABLE}\" "
                "ORDER BY json_extract(value, '$.used') LIMIT ?)", (excess,)).rowcount
        conn.commit()
        if removed:
            conn.execute("PRAGMA incremental_vacuum")
    conn.close()
    return removed


def evict_periodically(config: Config, stop: threading.Event) -> None:
    """Eviction every `cache.evict_seconds` in a background thread, until `stop` is set. Housekeeping: a failure
    is logged and never stops the daemon."""

    def loop() -> None:
        path = cache_path(config)
        while not stop.wait(config.cache.evict_seconds):
            try:
                removed = evict(path, config.cache)
                if removed:
                    logger.info("cache eviction removed {} entries from {}", removed, path.name)
            except Exception as exc:
                logger.error("cache eviction failed on {}: {}", path.name, exc)

    threading.Thread(target=loop, name="cache-eviction", daemon=True).start()


def clear(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS) as conn:
        removed = conn.execute(f'DELETE FROM "{TABLE}"').rowcount
        conn.commit()
        conn.execute("PRAGMA incremental_vacuum")
    conn.close()
    return removed
