"""The Celery application both sides share, with every setting that matters for jobs of a minute or more.

- Late acknowledgement and reject on worker lost: a task is acknowledged when it ends, so a worker child
  killed mid-job (or a whole host lost) leaves its message to be redelivered, never dropped.
- Prefetch multiplier 1: a worker child reserves one task at a time; long jobs are not hoarded.
- Soft and hard time limits from `workers.job_timeout_seconds`; the broker's visibility timeout (set for
  the broker and the result backend, every place Celery reads it) stays well above the hard limit, or a
  long job would be delivered twice while it runs.
- No Celery-side retries, ETAs or countdowns: the supervisor owns retries and their backoff.
- JSON only on the wire: no pickle anywhere. Results expire. Task events are on (Flower, exporters).
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

import yaml

from daemon.config import Config
from daemon.errors import ConfigError

TASK = "enrichd.enrich"
ENVIRONMENT = {"broker_url": "ENRICHD_CELERY_BROKER_URL", "result_backend": "ENRICHD_CELERY_RESULT_BACKEND"}
SCHEMES = ("redis://", "rediss://", "redis+socket://")
HARD_LIMIT_MARGIN_SECONDS = 60.0


def redacted(url: str) -> str:
    """The URL for a log line: any password replaced."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def endpoints(config: Config) -> dict[str, str]:
    """Broker and result backend URLs: the environment, else the credentials file, else the configuration."""
    celery = config.celery
    found: dict[str, Any] = {"broker_url": celery.broker_url, "result_backend": celery.result_backend}
    if celery.credentials_file is not None:
        try:
            secret = yaml.safe_load(celery.credentials_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(str(celery.credentials_file), [f"celery.credentials_file: cannot read: {exc}"]) from exc
        found.update({key: secret[key] for key in ENVIRONMENT if secret.get(key)})
    found.update({key: os.environ[variable] for key, variable in ENVIRONMENT.items() if os.environ.get(variable)})
    found["result_backend"] = found["result_backend"] or found["broker_url"]
    return found


def problems(config: Config) -> list[str]:
    """What `check-config` refuses in the celery section (nothing when the backend is local)."""
    if config.workers.backend != "celery":
        return []
    found = []
    try:
        urls = endpoints(config)
    except ConfigError as exc:
        return exc.problems
    for key, url in urls.items():
        if not url.startswith(SCHEMES):
            found.append(f"celery.{key}: {redacted(url)} is not a Redis URL ({', '.join(SCHEMES)})")
    hard_limit = config.workers.job_timeout_seconds + HARD_LIMIT_MARGIN_SECONDS
    if config.celery.visibility_timeout_seconds <= hard_limit:
        found.append(f"celery.visibility_timeout_seconds: {config.celery.visibility_timeout_seconds:.0f} must exceed the "
                     f"job time limit ({hard_limit:.0f} s), or running jobs are delivered twice")
    return found


def job_id(name: str, input_sha256: str, model_identity: str, prompt_version: str) -> str:
    """The same file, input, model and prompts: the same job, whenever and however often it is sent. The name
    is part of it because the document carries it: two files with equal bytes are two jobs."""
    return hashlib.sha256(f"{name}\0{input_sha256}:{model_identity}:{prompt_version}".encode()).hexdigest()[:32]


def task_id(job: str, attempt: int) -> str:
    return f"{job}-{attempt}"


def make_app(config: Config) -> Any:
    from celery import Celery

    urls = endpoints(config)
    hard_limit = config.workers.job_timeout_seconds + HARD_LIMIT_MARGIN_SECONDS
    visibility = int(config.celery.visibility_timeout_seconds)
    # kombu sweeps for messages whose worker vanished every interval x throttle seconds (100 s by default):
    # every tenth of the visibility timeout instead, within 1 to 60 s
    transport = {"visibility_timeout": visibility, "unacked_restore_interval": max(1, min(60, visibility // 10)),
                 "unacked_restore_throttle": 1}
    app = Celery("enrichd", broker=urls["broker_url"], backend=urls["result_backend"])
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"], result_accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_soft_time_limit=config.workers.job_timeout_seconds, task_time_limit=hard_limit,
        broker_transport_options=transport, result_backend_transport_options=transport,
        result_expires=int(config.celery.result_expires_days * 86400), result_extended=True,
        task_track_started=True, task_send_sent_event=True, worker_send_task_events=True,
        task_default_queue=config.celery.queue, task_routes={TASK: {"queue": config.celery.queue}},
        broker_connection_retry_on_startup=True, broker_connection_max_retries=None,
        worker_hijack_root_logger=False, worker_redirect_stdouts=False,
    )
    return app

