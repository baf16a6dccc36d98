"""One job, whatever the backend: the input's bytes (read by the supervisor at the claim, and handed to a local
worker or sent with a Celery task) to the enriched document, or the reason it failed. The document is not
written here: the supervisor checks every document against its job (output.not_of_job) and writes it."""

from __future__ import annotations

import time
from daemon.errors import StorageError, TranscriptError
from daemon.formats import parse_bytes
from daemon.messages import Done, ErrorInfo, Failed, Job, JobSummary, ProgressReport
from daemon.names import shown
from daemon.output import output_names
from daemon.pipeline import EnrichContext, enrich


def run_job(job: Job, data: bytes, context: EnrichContext, progress: ProgressReport,
            worker: int = 0) -> Done | Failed:
    """The content's faults (TranscriptError) are permanent; a folder the daemon cannot write is the host's
    fault; anything else is this job's transient failure, never the worker's end."""
    name = shown(job.name)
    limits = context.config.queue.limits
    try:
        started = time.perf_counter()
        transcript = parse_bytes(data, name, limits)
        output = enrich(transcript, context, time.perf_counter() - started, progress, job.dispatch_seconds())
    except TranscriptError as exc:
        return Failed(worker, job, ErrorInfo.of(exc), permanent=True)
    except StorageError as exc:
        return Failed(worker, job, ErrorInfo.of(exc), permanent=False, host_fault=True)
    except Exception as exc:  # anything else is this job's transient failure, not the worker's end
        return Failed(worker, job, ErrorInfo.of(exc), permanent=False)
    return Done(worker, job, JobSummary.of(output, (output_names(job.name)[0],), 0.0), output)
