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
from daemon.logs import setup_logging
from daemon.remote.app import TASK, endpoints, make_app, redacted
from daemon.messages import throttled
from daemon.remote.tasks import Child, earlier_result, first_result, run_task, set_up_child

_child: Child | None = None


def run_worker(config: Config, factory: EngineFactory) -> int:
    from celery.signals import worker_process_init, worker_process_shutdown

    setup_logging(config.logging, process="celery-worker")
    cpus = available_cpus()
    plan = host_plan(config, cpus)
    app = make_app(config)
    keep_seconds = int(config.celery.result_expires_days * 86400)

    @app.task(name=TASK, bind=True)
    def enrich_task(self: Any, **message: Any) -> dict[str, Any]:
        client = self.backend.client
        found = earlier_result(client, self.request.id)
        if found is not None:
            logger.warning("task {} delivered again after it finished; the kept result stands", self.request.id)
            return found
        assert _child is not None
        meta = {"host": _child.host, "pid": os.getpid()}
        report = throttled(lambda text: self.update_state(state="PROGRESS", meta={**meta, "progress": text}))
        return first_result(client, self.request.id, run_task(_child, message, report), keep_seconds)

    @worker_process_init.connect
    def set_up(**_: Any) -> None:
        global _child
        _child = set_up_child(config, factory, plan.cpu_sets(cpus))

    @worker_process_shutdown.connect
    def tear_down(**_: Any) -> None:
        if _child is not None and _child.context.cache is not None:
            _child.context.cache.close()

    broker = redacted(endpoints(config)["broker_url"])
    logger.info("enrichd worker on {}: {} child(ren) x {} thread(s) on CPUs {}, broker {}, queue {}", socket.gethostname(),
                plan.count, plan.threads, ",".join(map(str, cpus)), broker, config.celery.queue)
    worker = app.Worker(concurrency=plan.count, pool="prefork", queues=[config.celery.queue],
                        hostname=f"enrichd-{os.getpid()}@{socket.gethostname()}", loglevel="WARNING",
                        optimization="fair", without_mingle=True, without_gossip=True)
    worker.start()
    return int(worker.exitcode or 0)
