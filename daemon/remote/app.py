"""The Celery application both sides share, with every setting that matters for jobs of a minute or more.

- Late acknowledgement and reject on worker lost: a task is acknowledged when it ends, so a worker child
  killed mid-job (or a whole host lost) leaves its message to be redelivered, never dropped.
- Prefetch multiplier 1: a worker child reserves one task at a time; long jobs are not hoarded.
- Soft and hard time limits from `workers.job_timeout_seconds`; the broker's visibility timeout (set for
  the broker and the result backend, every place Celery reads it) stays well above the hard limit, or a
  long job would be delivered twice while it runs.
- No Celery-side retries, ETAs or countdowns: the supervisor owns retries and their backoff.
- JSON only on the wire: no pickle anywhere; every task and result signed (signing.py). Results hold no copy of
  the task (no `result_extended`: the transcript stays out of them), are deleted once the supervisor has settled
  them, and expire after the visibility timeout in any case. Task events are on (Flower, exporters).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from daemon.config import Config
from daemon.errors import ConfigError
from daemon.remote.signing import MIN_KEY_BYTES
from daemon.secrets import passwords, read_credentials, redacted

TASK = "enrichd.enrich"
ENVIRONMENT = {"broker_url": "ENRICHD_CELERY_BROKER_URL", "result_backend": "ENRICHD_CELERY_RESULT_BACKEND"}
SIGNING_ENVIRONMENT = "ENRICHD_CELERY_SIGNING_KEY"
# what a worker keeps of its first result for a task (a redelivery returns it, not a second run's); deleted by
# the supervisor once settled, else gone after the visibility timeout
RESULT_KEY = "enrichd:result:{}"
SCHEMES = ("redis://", "rediss://", "redis+socket://")
HARD_LIMIT_MARGIN_SECONDS = 60.0


def endpoints(config: Config) -> dict[str, str]:
    """Broker and result backend URLs: the environment, else the credentials file, else the configuration."""
    celery = config.celery
    found: dict[str, Any] = {"broker_url": celery.broker_url, "result_backend": celery.result_backend}
    if celery.credentials_file is not None:
        secret = read_credentials(celery.credentials_file)
        found.update({key: secret[key] for key in ENVIRONMENT if secret.get(key)})
    found.update({key: os.environ[variable] for key, variable in ENVIRONMENT.items() if os.environ.get(variable)})
    found["result_backend"] = found["result_backend"] or found["broker_url"]
    return found


def signing_key(config: Config) -> bytes:
    """The key every task and result is signed with (signing.py): $ENRICHD_CELERY_SIGNING_KEY, else the
    credentials file's `signing_key`. At least 32 characters, and never the broker's password."""
    celery = config.celery
    key = os.environ.get(SIGNING_ENVIRONMENT) or ""
    if not key and celery.credentials_file is not None:
        key = str(read_credentials(celery.credentials_file).get("signing_key") or "")
    source = str(celery.credentials_file or "<environment>")
    if len(key.encode()) < MIN_KEY_BYTES:
        raise ConfigError(source, [f"celery.signing_key: {'too short' if key else 'missing'}: results from workers "
                                   f"must be authenticated; put a random key of {MIN_KEY_BYTES} characters or more "
                                   f"(`openssl rand -base64 33`) as signing_key in celery.credentials_file, the same "
                                   f"on every host, or in ${SIGNING_ENVIRONMENT}"])
    if any(key in passwords(url) for url in endpoints(config).values() if url):
        raise ConfigError(source, ["celery.signing_key: is the broker's password: anyone who can reach the broker "
                                   "could sign results; use a key of its own"])
    return key.encode()


def problems(config: Config) -> list[str]:
    """What `check-config` refuses in the celery section (nothing when the backend is local)."""
    if config.workers.backend != "celery":
        return []
    found = []
    try:
        urls = endpoints(config)
        signing_key(config)
    except ConfigError as exc:
        return exc.problems
    for key, url in urls.items():
        if not url.startswith(SCHEMES):
            found.append(f"celery.{key}: {redacted(url)} is not a Redis URL ({', '.join(SCHEMES)})")
    tls = config.celery
    for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        path = getattr(tls, key)
        if path is not None and not path.is_file():
            found.append(f"celery.{key}: {path} is not a readable file")
    if (tls.tls_cert_file is None) != (tls.tls_key_file is None):
        found.append("celery.tls_cert_file and celery.tls_key_file go together: a client certificate needs its key")
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


def tls_options(config: Config) -> dict[str, Any]:
    """What kombu and the Redis result backend take for rediss://: the broker's certificate always verified
    (against tls_ca_file, else the system's CAs), and this host's own certificate where one is configured."""
    import ssl

    celery = config.celery
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    for option, path in (("ssl_ca_certs", celery.tls_ca_file), ("ssl_certfile", celery.tls_cert_file),
                         ("ssl_keyfile", celery.tls_key_file)):
        if path is not None:
            options[option] = str(path)
    return options


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
    tls = tls_options(config)
    if urls["broker_url"].startswith("rediss://"):
        app.conf.broker_use_ssl = tls
    if urls["result_backend"].startswith("rediss://"):
        app.conf.redis_backend_use_ssl = tls
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"], result_accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_soft_time_limit=config.workers.job_timeout_seconds, task_time_limit=hard_limit,
        broker_transport_options=transport, result_backend_transport_options=transport,
        result_expires=visibility, result_extended=False,
        task_track_started=True, task_send_sent_event=True, worker_send_task_events=True,
        task_default_queue=config.celery.queue, task_routes={TASK: {"queue": config.celery.queue}},
        broker_connection_retry_on_startup=True, broker_connection_max_retries=None,
        worker_hijack_root_logger=False, worker_redirect_stdouts=False,
    )
    return app

