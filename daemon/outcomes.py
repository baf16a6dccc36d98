"""What each finished job does, whichever backend ran it: its document written to the outbox (this process is the
only writer there), its input moved by the file queue, its figures reported, one log line.

Events about a worker rather than a file (ready, lost, could not start) are noted here too.
"""

from __future__ import annotations

import time
from dataclasses import replace

from loguru import logger

from daemon.config import Config
from daemon.errors import OutputError, StorageError
from daemon.guard import EntryGuard
from daemon.messages import Done, ErrorInfo, Event, Failed, Fatal, JobSummary, Lost, Ready
from daemon.names import shown
from daemon.output import not_of_job, write_outputs
from daemon.spool import FileQueue, Spool
from daemon.status import Reporter
from daemon.storage import StorageWatch


class Outcomes:
    def __init__(self, config: Config, spool: Spool, file_queue: FileQueue, storage: StorageWatch, reporter: Reporter,
                 guard: EntryGuard, model_identity: str, prompt_version: str):
        self.config = config
        self.model_identity = model_identity  # what every document must have been made with
        self.prompt_version = prompt_version
        self.spool = spool
        self.file_queue = file_queue
        self.storage = storage
        self.reporter = reporter
        self.guard = guard
        self.fatal: str | None = None  # a worker that could not start: the daemon stops

    def settle(self, item: Event | Lost) -> None:
        job = getattr(item, "job", None)
        if job is None:
            self._note_worker(item)
            return
        with self.guard.entry(job.name, "settling the outcome of"):
            self._settle_job(item)

    def _note_worker(self, item: Event | Lost) -> None:
        if isinstance(item, Lost):
            self.reporter.record_restart()
        elif isinstance(item, Ready):
            self.reporter.record_load(item.worker, item.load_seconds)
        elif isinstance(item, Fatal):
            self.fatal = f"worker {item.worker} could not start: {item.error.message}"
            logger.error(self.fatal)

    def _settle_job(self, item: Event | Lost) -> None:
        reporter = self.reporter
        if isinstance(item, Done):
            summary = self._write(item)
            if summary is None:
                return
            if self.file_queue.settle(item.job).action == "requeued":
                return  # the input changed after its claim: it is enriched again, and counted once then
            reporter.record_done(summary)
            s, t = summary, summary.timings
            where = f" on {s.host} (pid {s.pid})" if s.host else ""
            logger.info("done {}{}: {} segments {}, {} model calls, {} generated tokens, cache {}, dispatch {:.2f}s "
                        "parse {:.2f}s correction {:.2f}s metadata {:.2f}s total {:.2f}s -> {}", shown(item.job.name),
                        where,
                        s.segments, s.corrections, s.tokens.calls, s.tokens.generated_tokens, s.cache_result,
                        t.get("dispatch", 0), t.get("parse", 0),
                        t.get("correction", 0), t.get("metadata", 0), t.get("total", 0),
                        ", ".join(map(shown, s.outputs)))
        elif isinstance(item, Failed):
            if item.host_fault:
                self.storage.report(item.error.message)
            verdict = self.file_queue.settle(item.job, item.error, item.permanent, item.host_fault)
            reporter.record_verdict(verdict, item.error.type)
        elif isinstance(item, Lost):
            reporter.record_restart()
            error = ErrorInfo("WorkerDied", item.reason, None, item.pid)
            reporter.record_verdict(self.file_queue.settle(item.job, error), error.type)

    def _write(self, done: Done) -> JobSummary | None:
        """The document into the outbox, once it is shown to be this job's output (the bytes read at the claim, the
        file's name, this daemon's model and prompts): a document that is not is that attempt's failure, whichever
        backend sent it. The summary then names the files written and the seconds it took; None when they could
        not be written (the file's failure, or the host's)."""
        job = done.job
        problem = not_of_job(done.document, job.name, job.sha256, self.model_identity, self.prompt_version)
        if problem:
            error = ErrorInfo("MismatchedResult", problem, None, done.summary.pid)
            self.reporter.record_verdict(self.file_queue.settle(job, error), error.type)
            return None
        try:
            started = time.perf_counter()
            written = write_outputs(self.spool.outbox, job.name, done.document, self.config.output.markdown)
        except StorageError as exc:
            self.storage.report(str(exc))
            self.file_queue.settle(job, ErrorInfo.of(exc), host_fault=True)
            return None
        except OutputError as exc:
            self.reporter.record_verdict(self.file_queue.settle(job, ErrorInfo.of(exc)), type(exc).__name__)
            return None
        outputs = tuple(str(path.relative_to(self.spool.outbox)) for path in written)
        timings = {**done.summary.timings, "write": round(time.perf_counter() - started, 3)}
        return replace(done.summary, outputs=outputs, timings=timings)
