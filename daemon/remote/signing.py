"""Every message across the broker signed with a key the broker never holds.

Anyone with the broker password can write to Redis: store a result under a task id (they are visible in the
queue), or publish a task. So the supervisor signs each task and each worker signs each result with an
HMAC-SHA256 over the task id and the message's canonical JSON, keyed by `signing_key` (the credentials file or
$ENRICHD_CELERY_SIGNING_KEY, the same on every host, never the broker password). A worker refuses an unsigned
task; the supervisor refuses an unsigned result, and that attempt fails, so the file is enriched for real.
Chosen over Celery's `auth` serializer: that one needs an X.509 key pair per host and signs only task
messages, not the results the supervisor writes to the outbox.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from daemon.errors import WireError

SIGNATURE = "signature"
MIN_KEY_BYTES = 32


def _digest(message: dict[str, Any], key: bytes, task_id: str) -> str:
    body = json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, f"{task_id}\0{body}".encode(), hashlib.sha256).hexdigest()


def signed(message: dict[str, Any], key: bytes, task_id: str) -> dict[str, Any]:
    """The message with its signature, bound to the task id (a result cannot be replayed for another task)."""
    return {**message, SIGNATURE: _digest(message, key, task_id)}


def verified(message: Any, key: bytes, task_id: str) -> dict[str, Any]:
    """The message without its signature, if the signature is this deployment's for this task; else WireError."""
    if not isinstance(message, dict):
        raise WireError(f"not an object but a {type(message).__name__}")
    body = {k: v for k, v in message.items() if k != SIGNATURE}
    given = message.get(SIGNATURE)
    if not isinstance(given, str) or not hmac.compare_digest(given, _digest(body, key, task_id)):
        raise WireError("not signed with this deployment's signing key (forged, or a host with another key)")
    return body
