"""`enrichd worker`: a Celery worker on any host, one prefork child per planned worker slot.

The plan is the daemon's own (`workers.count` x `workers.threads`, oversubscription refused, or with
`workers: auto` the split `enrichd tune --write` measured on this host, as the local pool takes it); each child
pins itself to its CPU set and loads its model after the fork (tasks.py). The parent only consumes the
queue: it never loads a model.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from loguru import logger

from daemon.config import Config
from daemon.cpus import available_cpus, host_plan
from daemon.engine import EngineFactory
from daemon.errors import WireError
from daemon.logs import setup_logging
from daemon.messages import throttled
from daemon.notify import Notifier
from daemon.remote.app import TASK, endpoints, make_app, signing_key
from daemon.remote.signing import signed, verified
from daemon.remote.tasks import Child, earlier_result, first_result, refused, run_task, set_up_child
from daemon.secrets import redacted

_child: Child | None = None


def run_worker(config: Config, factory: EngineFactory) -> int:
    # SIGTERM (systemctl stop) is a cold shutdown preceded by a soft one: running jobs get
    # workers.drain_seconds to finish, as on the local pool, then go back to the queue at once (Redis restores
    # the unacknowledged messages) instead of holding the stop for a whole job or waiting out the visibility
    # timeout after a SIGKILL. billiard reads this when it is first imported, which is below.
    os.environ["REMAP_SIGTERM"] = "SIGQUIT"
    from celery.signals import worker_process_init, worker_process_shutdown, worker_ready, worker_shutting_down

    setup_logging(config.logging, process="celery-worker")
    cpus = available_cpus()
    plan = host_plan(config, cpus)
    app = make_app(config)
    app.conf.worker_soft_shutdown_timeout = config.workers.drain_seconds
    notifier = Notifier()
    keep_seconds = int(config.celery.visibility_timeout_seconds)
    key = signing_key(config)

    @app.task(name=TASK, bind=True)
    def enrich_task(self: Any, **message: Any) -> dict[str, Any]:
        client, task = self.backend.client, self.request.id
        found = earlier_result(client, task)
        if found is not None:
            logger.warning("task {} delivered again after it finished; the kept result stands", task)
            return found
        assert _child is not None
        meta = {"host": _child.host, "pid": os.getpid()}
        report = throttled(lambda text: self.update_state(state="PROGRESS", meta={**meta, "progress": text}))
        try:
            result = run_task(_child, verified(message, key, task), report)
        except WireError as exc:
            logger.error("task {} refused: {}", task, exc)
            result = refused(exc)
        return first_result(client, task, signed(result, key, task), keep_seconds)

    @worker_process_init.connect
    def set_up(**_: Any) -> None:
        global _child
        _child = set_up_child(config, factory, plan.cpu_sets(cpus))

    @worker_process_shutdown.connect
    def tear_down(**_: Any) -> None:
        if _child is not None and _child.context.cache is not None:
            _child.context.cache.close()

    @worker_ready.connect
    def ready(sender: Any, **_: Any) -> None:
        """systemd's READY=1, then the watchdog fed from the consumer's own timer while it holds a broker
        connection: a main loop that hangs, or a broker lost for good, stops the feeding and systemd restarts us."""
        notifier.ready(f"{plan.count} child(ren) on queue {config.celery.queue}")
        if notifier.watchdog_interval:
            sender.timer.call_repeatedly(notifier.watchdog_interval / 2, lambda: notifier.watchdog(
                bool(sender.connection and sender.connection.connected)))

    @worker_shutting_down.connect
    def stopping(**_: Any) -> None:
        notifier.stopping()

    broker = redacted(endpoints(config)["broker_url"])
    logger.info("enrichd worker on {}: {} child(ren) x {} thread(s) on CPUs {}, broker {}, queue {}", socket.gethostname(),
                plan.count, plan.threads, ",".join(map(str, cpus)), broker, config.celery.queue)
    worker = app.Worker(concurrency=plan.count, pool="prefork", queues=[config.celery.queue],
                        hostname=f"enrichd-{os.getpid()}@{socket.gethostname()}", loglevel="WARNING",
                        optimization="fair", without_mingle=True, without_gossip=True)
    worker.start()
    return int(worker.exitcode or 0)
