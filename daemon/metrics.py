"""Prometheus metrics of the daemon, in the text format node_exporter's textfile collector reads.

The supervisor sees every outcome, so it keeps the metrics; every throughput period they are written to a
file atomically (temp file + rename, by prometheus_client), and optionally served on a local HTTP port.
Names follow Prometheus conventions: `enrichd_` prefix, base units, `_total` on counters (added by the
library), `_seconds` for durations.
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server, write_to_textfile

from daemon import __version__
from daemon.messages import JobSummary, SlotStatus, WorkerState
from daemon.model_store import ModelInfo

METRICS_FILE = "enrichd.prom"
STAGES = ("dispatch", "parse", "correction", "metadata", "write", "total")
TOKEN_KINDS = ("prompt", "evaluated", "generated", "drafted", "accepted")
BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    def __init__(self, file: Path | None, model: ModelInfo, prompt_version: str):
        self.file = file
        self.registry = registry = CollectorRegistry()
        self.done = Counter("enrichd_files_done", "Files enriched: their output is in the outbox", registry=registry)
        self.failed = Counter("enrichd_files_failed", "Files moved to failed/, by error type", ["reason"], registry=registry)
        self.resolutions = Counter("enrichd_calls_resolution", "Enriched calls by the call record's resolution "
                                   "(resolved, partly, unresolved, or none when it could not be read)", ["resolution"],
                                   registry=registry)
        self.retried = Counter("enrichd_files_retried", "Transient failures put back in the inbox to be retried",
                               registry=registry)
        self.files = Gauge("enrichd_files", "Files in each spool folder", ["folder"], registry=registry)
        self.stage = Histogram("enrichd_stage_seconds", "Seconds per file and stage", ["stage"], buckets=BUCKETS,
                               registry=registry)
        self.tokens = Counter("enrichd_tokens", "Model tokens, by kind", ["kind"], registry=registry)
        self.segments = Counter("enrichd_segments", "Segments by correction outcome", ["outcome"], registry=registry)
        self.cache = Counter("enrichd_cache_lookups", "Result cache lookups by level and result", ["level", "result"],
                             registry=registry)
        self.workers = Gauge("enrichd_workers", "Worker processes alive, and busy with a file", ["state"], registry=registry)
        self.restarts = Counter("enrichd_worker_restarts", "Workers replaced after dying, hanging or overrunning",
                                registry=registry)
        self.model_load = Gauge("enrichd_model_load_seconds", "How long each worker took to load its model",
                                ["worker"], registry=registry)
        self.paused = Gauge("enrichd_paused", "1 while intake is paused, labelled with why: host_fault (a folder of "
                            "the daemon cannot be written), operator (SIGUSR1 or the pause file)", ["reason"],
                            registry=registry)
        self.last_output = Gauge("enrichd_last_output_timestamp_seconds", "When the last output was written",
                                 registry=registry)
        Gauge("enrichd_build_info", "Version, model, scorer model (if any) and prompt version of the running daemon",
              ["version", "model_sha256", "scorer_sha256", "prompt_version"], registry=registry).labels(
            __version__, model.sha256, model.scorer.sha256 if model.scorer else "", prompt_version).set(1)
        for stage in STAGES:
            self.stage.labels(stage)
        for kind in TOKEN_KINDS:
            self.tokens.labels(kind)
        self.done.inc(0)

    def serve(self, listen: str) -> None:
        """The same metrics over HTTP at `host:port` (off unless `metrics.listen` is set)."""
        host, _, port = listen.rpartition(":")
        start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)

    def record_done(self, summary: JobSummary) -> None:
        self.done.inc()
        self.resolutions.labels(summary.resolution or "none").inc()
        self.last_output.set(time.time())
        for stage in STAGES:
            if stage in summary.timings:
                self.stage.labels(stage).observe(summary.timings[stage])
        for kind, count in summary.tokens.tokens().items():
            self.tokens.labels(kind).inc(count)
        for outcome, count in summary.corrections.items():
            self.segments.labels(outcome).inc(count)
        for level, counts in summary.cache.items():
            self.cache.labels(level, "hit").inc(counts["hits"])
            self.cache.labels(level, "miss").inc(counts["misses"])

    def record_failed(self, reason: str) -> None:
        self.failed.labels(reason).inc()

    def record_retry(self) -> None:
        self.retried.inc()

    def record_restart(self) -> None:
        self.restarts.inc()

    def record_load(self, worker: int, seconds: float) -> None:
        self.model_load.labels(str(worker)).set(seconds)

    def write(self, slots: list[SlotStatus], inbox: int, processing: int, failed: int, pause_reason: str | None) -> None:
        """Refresh the gauges and write the file (prometheus_client writes a temp file and renames it)."""
        host_fault = bool(pause_reason and pause_reason.startswith("host fault"))
        self.paused.labels("host_fault").set(int(host_fault))
        self.paused.labels("operator").set(int(pause_reason is not None and not host_fault))
        self.files.labels("inbox").set(inbox)
        self.files.labels("processing").set(processing)
        self.files.labels("failed").set(failed)
        self.workers.labels("alive").set(sum(1 for s in slots if s.state is not WorkerState.STARTING))
        self.workers.labels("busy").set(sum(1 for s in slots if s.job))
        if self.file is not None:
            write_to_textfile(str(self.file), self.registry)
