"""What the daemon tells operators: the status file `enrichd status` reads, the periodic throughput line, and
systemd's STATUS text. The supervisor hands over its facts; this module shapes and writes them."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from daemon.cache import cache_counts
from daemon.cpus import WorkerPlan
from daemon.errors import OutputError, StorageError
from daemon.messages import JobSummary, SlotStatus
from daemon.model_store import ModelInfo
from daemon.metrics import Metrics
from daemon.notify import Notifier
from daemon.output import write_atomic
from daemon.spool import Spool, Verdict

STATUS_FILE = "status.json"
STATUS_SECONDS = 2.0
COMPLAIN_SECONDS = 60.0


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

    def record_done(self, summary: JobSummary) -> None:
        for w in (self.window, self.total):
            w.done += 1
            w.segments += summary.segments
            w.generated_tokens += summary.tokens.generated_tokens
        for level, counts in summary.cache.items():
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


@dataclass
class Reporter:
    """Shapes the supervisor's facts into the status file (every STATUS_SECONDS), the throughput line and the
    metrics file (every `throughput_seconds`) and systemd's STATUS."""

    spool: Spool
    throughput_seconds: float
    notifier: Notifier = field(default_factory=Notifier)
    throughput: Throughput = field(default_factory=Throughput)
    metrics: Metrics | None = None
    plan: WorkerPlan | None = None
    model: ModelInfo | None = None
    last_status: float = 0.0
    last_throughput: float = field(default_factory=time.monotonic)
    pause_reason: str | None = None
    complained: dict[str, float] = field(default_factory=dict)

    def _complain(self, what: str, exc: Exception) -> None:
        """A report that could not be written: one line a minute per kind; the daemon goes on without it."""
        now = time.monotonic()
        if now - self.complained.get(what, -COMPLAIN_SECONDS) >= COMPLAIN_SECONDS:
            self.complained[what] = now
            logger.error("{} not written: {}; retried, one line a minute while it fails", what, exc)

    def record_done(self, summary: JobSummary) -> None:
        self.throughput.record_done(summary)
        if self.metrics:
            self.metrics.record_done(summary)

    def record_verdict(self, verdict: Verdict, reason: str) -> None:
        if verdict.action == "failed":
            self.throughput.record_failed()
            if self.metrics:
                self.metrics.record_failed(reason)
        elif verdict.action == "retry" and self.metrics:
            self.metrics.record_retry()

    def record_restart(self) -> None:
        if self.metrics:
            self.metrics.record_restart()

    def record_load(self, worker: int, seconds: float) -> None:
        if self.metrics:
            self.metrics.record_load(worker, seconds)

    def _figures(self, slots: list[SlotStatus], inbox_depth: int) -> dict[str, Any]:
        busy = {str(s.id): s.busy for s in slots}
        return self.throughput.figures(inbox_depth, sum(1 for s in slots if s.job), busy)

    def document(self, state: str, slots: list[SlotStatus], inbox_depth: int) -> dict[str, Any]:
        return {
            "pid": os.getpid(), "state": state, "paused": self.pause_reason is not None,
            "pause_reason": self.pause_reason,
            "started": self.throughput.started, "updated": time.time(),
            "plan": {"workers": self.plan.count, "threads": self.plan.threads} if self.plan else None,
            "model": asdict(self.model) if self.model else None,
            "workers": [{"id": s.id, "pid": s.pid, "state": s.state.value, "cpus": list(s.cpus),
                         "file": s.job.name if s.job else None, "progress": s.progress, "jobs_done": s.jobs_done,
                         "host": s.host}
                        for s in slots],
            "throughput": self._figures(slots, inbox_depth),
            "cache": cache_counts(self.throughput.cache_hits, self.throughput.cache_misses),
        }

    def short(self, slots: list[SlotStatus], inbox_depth: int) -> str:
        t = self.throughput.total
        paused = f"paused ({self.pause_reason}); " if self.pause_reason else ""
        return (f"{paused}{t.done} done, {t.failed} failed, {inbox_depth} waiting, "
                f"{sum(1 for s in slots if s.job)} in flight")

    def write(self, state: str, slots: list[SlotStatus], inbox_depth: int) -> None:
        """The status file; a StorageError (state folder full, read-only) goes up: it is the host's fault."""
        self.last_status = time.monotonic()
        try:
            write_atomic(self.spool.state / STATUS_FILE, json.dumps(self.document(state, slots, inbox_depth),
                                                                    ensure_ascii=False, indent=2) + "\n")
        except StorageError:
            raise
        except OutputError as exc:
            self._complain("status file", exc)

    def due(self) -> tuple[bool, bool]:
        """Whether the status file, and the throughput line, are due."""
        now = time.monotonic()
        return now - self.last_status >= STATUS_SECONDS, now - self.last_throughput >= self.throughput_seconds

    def log_throughput(self, slots: list[SlotStatus], inbox_depth: int) -> None:
        """One throughput line, then a new window; systemd's STATUS follows it."""
        figures = self._figures(slots, inbox_depth)
        logger.bind(throughput=figures).info(
            "throughput: {files_done} done, {files_failed} failed in {window_seconds}s ({files_per_minute}/min, "
            "{segments_per_second} segments/s, {generated_tokens_per_second} tokens/s, cache hit rate "
            "{cache_hit_rate}); totals {files_done_total} done {files_failed_total} failed; inbox {inbox_depth}, "
            "in flight {in_flight}, busy {worker_busy}", **figures)
        self.throughput.new_window()
        self.last_throughput = time.monotonic()
        self.notifier.status(self.short(slots, inbox_depth))
        self.write_metrics(slots, inbox_depth)

    def write_metrics(self, slots: list[SlotStatus], inbox_depth: int) -> None:
        if self.metrics:
            try:
                self.metrics.write(slots, inbox_depth, self.spool.count("processing"), self.spool.count("failed"),
                                   self.pause_reason)
            except OSError as exc:
                self._complain(f"metrics file {self.metrics.file}", exc)


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
