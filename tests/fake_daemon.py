"""`python -m tests.fake_daemon CONFIG`: the real supervisor, workers and queue with the fake engine."""

import sys

from daemon.config import load_config
from daemon.logs import setup_logging
from daemon.supervisor import run_daemon
from tests.fakes import FAKE_FACTORY

if __name__ == "__main__":
    config = load_config(sys.argv[1])
    setup_logging(config.logging)
    sys.exit(run_daemon(config, FAKE_FACTORY))
