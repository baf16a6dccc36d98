"""What every worker does before its first job, whatever runs it: a local pool's worker, a Celery child, or
`enrichd enrich` in the foreground. One function, so that the three enrich with the same engines, cache,
thresholds and prompt version."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from daemon.cache import Cache, cache_path
from daemon.config import Config
from daemon.engine import Engine, EngineFactory
from daemon.logs import setup_logging
from daemon.model_store import ModelInfo
from daemon.pipeline import EnrichContext, InForce


@dataclass
class Loaded:
    """The engines of one worker, loaded once for its life (or on first use: a whole-file cache hit needs none)."""

    config: Config
    factory: EngineFactory
    threads: int
    engines: list[Engine] = field(default_factory=list)

    def all(self) -> list[Engine]:
        """The model, then the scoring corrector's own when configured."""
        if not self.engines:
            engine, scorer = self.factory.load_all(self.config, self.threads)
            self.engines.extend([engine] if scorer is None else [engine, scorer])
        return self.engines


def open_context(config: Config, factory: EngineFactory, cpus: tuple[int, ...], *, process: str | None = None,
                 model: ModelInfo | None = None, lazy: bool = False,
                 in_force: InForce | None = None) -> tuple[EnrichContext, Loaded]:
    """A worker's context: with `process`, pinned to `cpus` and logging under that name; its models loaded now
    (a load failure is the caller's to report) unless `lazy`; its cache opened; the thresholds and prompt version
    read by the context. `model` and `in_force`: as the supervisor described and derived them (a local worker
    enriches with what its supervisor checks), else described and derived here."""
    if process is not None:
        os.sched_setaffinity(0, cpus)
        setup_logging(config.logging, process=process)
    model = model or factory.describe(config)
    loaded = Loaded(config, factory, len(cpus))
    if not lazy:
        loaded.all()
    cache = Cache(cache_path(config)) if config.cache.enabled else None
    context = EnrichContext(config, model, lambda: loaded.all()[0], cache,
                            (lambda: loaded.all()[-1]) if model.scorer else None)
    if in_force is not None:
        context.thresholds, context.prompt_version = in_force
    return context, loaded
