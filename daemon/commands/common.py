"""What every command shares: exit codes, and the configuration loaded with the checks that need other modules."""

from __future__ import annotations

import argparse

from daemon.config import Config, load_config
from daemon.errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def validated_config(path: str | None) -> Config:
    """The config plus the checks that need other modules: prompt names and the CPU split."""
    from daemon.cpus import available_cpus, plan_workers
    from daemon.prompts import prompt_problems
    from daemon.remote.app import problems as celery_problems

    config = load_config(path)
    found = prompt_problems(config.enrichment) + celery_problems(config)
    if found:
        raise ConfigError(str(config.source or "<defaults>"), found)
    plan_workers(config.workers, available_cpus())
    return config


def loaded_config(args: argparse.Namespace) -> Config:
    from daemon.logs import setup_logging

    config = validated_config(args.config)
    setup_logging(config.logging)
    return config
