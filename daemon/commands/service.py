"""The service's commands: `enrichd run` (the daemon), `enrichd worker` (a Celery worker host), `enrichd check-config`."""

from __future__ import annotations

import argparse
import sys

import yaml

from daemon.commands.common import EXIT_OK, loaded_config, validated_config
from daemon.config import config_to_dict


def cmd_check_config(args: argparse.Namespace) -> int:
    from daemon.permissions import exposure
    from daemon.secrets import redacted

    config = validated_config(args.file or args.config)
    shown = config_to_dict(config)
    for key in ("broker_url", "result_backend"):
        shown["celery"][key] = shown["celery"][key] and redacted(shown["celery"][key])
    print(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True), end="")
    for problem in exposure(config):
        print(f"warning: {problem}", file=sys.stderr)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.engine import EngineFactory, load_llama
    from daemon.model_store import describe_model
    from daemon.supervisor import run_daemon

    return run_daemon(loaded_config(args), EngineFactory(describe_model, load_llama))


def cmd_worker(args: argparse.Namespace) -> int:
    from daemon.engine import EngineFactory, load_llama
    from daemon.model_store import describe_model
    from daemon.remote.worker import run_worker

    return run_worker(loaded_config(args), EngineFactory(describe_model, load_llama))
