"""Throughput accounting, the periodic throughput log line, and the status file `enrichd status` reads."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.output import write_atomic

STATUS_FILE = "status.json"


@dataclass
class Window:
    done: int = 0
    failed: int = 0
    segments: int = 0
    generated_tokens: int = 0
    cache_hits: int = 0
    cache_lookups: int = 0


@dataclass
class Throughput:
    started: float = field(default_factory=time.time)
    window_started: float = field(default_factory=time.monotonic)
    window: Window = field(default_factory=Window)
    total: Window = field(default_factory=Window)
    cache_hits: Counter[str] = field(default_factory=Counter)
    cache_misses: Counter[str] = field(default_factory=Counter)

    def record_done(self, summary: dict[str, Any]) -> None:
        for w in (self.window, self.total):
            w.done += 1
            w.segments += summary.get("segments", 0)
            w.generated_tokens += summary.get("generated_tokens", 0)
        for level, counts in summary.get("cache", {}).items():
            self.cache_hits[level] += counts["hits"]
            self.cache_misses[level] += counts["misses"]
            for w in (self.window, self.total):
                w.cache_hits += counts["hits"]
                w.cache_lookups += counts["hits"] + counts["misses"]

    def record_failed(self) -> None:
        self.window.failed += 1
        self.total.failed += 1

    def figures(self, inbox_depth: int, in_flight: int, busy: dict[str, float]) -> dict[str, Any]:
        """The throughput record: stable field names, for `jq` over JSON logs and the status file."""
        seconds = max(1e-9, time.monotonic() - self.window_started)
        w = self.window
        return {
            "window_seconds": round(seconds, 1),
            "files_done": w.done, "files_failed": w.failed,
            "files_done_total": self.total.done, "files_failed_total": self.total.failed,
            "files_per_minute": round(w.done * 60 / seconds, 2),
            "segments_per_second": round(w.segments / seconds, 2),
            "generated_tokens_per_second": round(w.generated_tokens / seconds, 2),
            "cache_hit_rate": round(w.cache_hits / w.cache_lookups, 3) if w.cache_lookups else None,
            "inbox_depth": inbox_depth, "in_flight": in_flight,
            "worker_busy": {k: round(v, 3) for k, v in busy.items()},
        }

    def new_window(self) -> None:
        self.window = Window()
        self.window_started = time.monotonic()


def write_status(state_dir: Path, status: dict[str, Any]) -> None:
    write_atomic(state_dir / STATUS_FILE, json.dumps(status, ensure_ascii=False, indent=2) + "\n")


def read_status(state_dir: Path) -> tuple[dict[str, Any] | None, bool]:
    """The last status written, and whether the daemon that wrote it is still alive."""
    try:
        status = json.loads((state_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, False
    pid = status.get("pid")
    alive = False
    if isinstance(pid, int) and status.get("state") != "stopped":
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
    return status, alive
