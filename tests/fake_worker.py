"""`python -m tests.fake_worker CONFIG`: the real `enrichd worker` (Celery, prefork children) with the fake engine."""

import sys

from daemon.config import load_config
from daemon.remote.worker import run_worker
from tests.fakes import FAKE_FACTORY

if __name__ == "__main__":
    sys.exit(run_worker(load_config(sys.argv[1]), FAKE_FACTORY))
