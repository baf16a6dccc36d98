"""How many CPUs this process may really use, and how to split them between workers.

os.cpu_count() ignores affinity masks and container quotas; llama.cpp collapses when its threads
outnumber the cores it gets (two workers x 2 threads on 2 cores: 1.5 tokens/s instead of 120).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from loguru import logger

from daemon.config import Config, WorkersConfig
from daemon.errors import ConfigError

TUNED_FILE = "tuned.yaml"
CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def _cgroup_limit() -> int | None:
    try:
        quota, period = CGROUP_V2_MAX.read_text().split()[:2]
        if quota != "max":
            return max(1, math.floor(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(CGROUP_V1_QUOTA.read_text())
        if quota_us > 0:
            return max(1, math.floor(quota_us / int(CGROUP_V1_PERIOD.read_text())))
    except (OSError, ValueError):
        pass
    return None


def available_cpus() -> list[int]:
    """The CPU ids this process may run on, cut to the cgroup quota."""
    cpus = sorted(os.sched_getaffinity(0))
    limit = _cgroup_limit()
    return cpus[:limit] if limit else cpus


@dataclass(frozen=True)
class WorkerPlan:
    count: int
    threads: int

    def cpu_sets(self, cpus: list[int]) -> list[list[int]]:
        """Disjoint CPU sets, one per worker."""
        return [cpus[i * self.threads:(i + 1) * self.threads] for i in range(self.count)]


def possible_plans(n_cpus: int) -> list[WorkerPlan]:
    """Every split that uses all CPUs without oversubscribing: 1 x n, 2 x n/2, ..., n x 1."""
    return [WorkerPlan(n_cpus // t, t) for t in range(n_cpus, 0, -1) if n_cpus % t == 0]


def read_tuned(state_dir: Path) -> tuple[WorkerPlan, int] | None:
    """The split and n_batch `enrichd tune --write` measured best on this machine, if any."""
    try:
        data = yaml.safe_load((state_dir / TUNED_FILE).read_text())
        return WorkerPlan(int(data["workers"]), int(data["threads"])), int(data["n_batch"])
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
        return None


def write_tuned(state_dir: Path, best: dict[str, object]) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / TUNED_FILE
    path.write_text("# written by `enrichd tune --write`; used when workers: auto\n" + yaml.safe_dump(best, sort_keys=False))
    return path


def host_plan(config: Config, cpus: list[int]) -> WorkerPlan:
    """This host's split, the same for the local pool and a Celery worker host: the configured one, or with
    `workers: auto` the one `enrichd tune --write` measured here, whose n_batch then goes into `config.model`."""
    tuned = read_tuned(config.paths.state) if config.workers.count == config.workers.threads == "auto" else None
    plan = plan_workers(config.workers, cpus, tuned[0] if tuned else None)
    if tuned and plan == tuned[0]:
        config.model.n_batch = tuned[1]
        logger.info("using the tuned split from {}: {} x {}, n_batch {}", config.paths.state / TUNED_FILE,
                    plan.count, plan.threads, tuned[1])
    return plan


def plan_workers(config: WorkersConfig, cpus: list[int], tuned: WorkerPlan | None = None) -> WorkerPlan:
    """The configured split, checked against the CPUs; `auto` prefers a measured one, else 1 thread each.

    One thread per worker is the default because it measured best here (2 x 1 gave 145 tokens/s in
    total against 122 for 1 x 2): generation is memory-bound and parallel sequences hide it.
    """
    n = len(cpus)
    if config.count == "auto" and config.threads == "auto":
        if tuned and tuned.count * tuned.threads <= n:
            return tuned
        return WorkerPlan(n, 1)
    if config.count == "auto":
        threads = int(config.threads)
        plan = WorkerPlan(max(1, n // threads), threads)
    elif config.threads == "auto":
        count = int(config.count)
        plan = WorkerPlan(count, max(1, n // count))
    else:
        plan = WorkerPlan(int(config.count), int(config.threads))
    if plan.count * plan.threads > n:
        raise ConfigError("workers", [
            f"workers.count x workers.threads = {plan.count} x {plan.threads} = {plan.count * plan.threads} "
            f"exceeds the {n} available CPUs ({','.join(map(str, cpus))}); llama.cpp slows down "
            "by orders of magnitude when oversubscribed"])
    return plan
