"""The systemd contract: the unit verifies, and sd_notify messages arrive when they should."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.notify import Notifier
from tests.conftest import ROOT, running_daemon


def test_unit_file_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    unit = (ROOT / "systemd" / "enrichd.service").read_text()
    # verify checks that ExecStart exists; point it at this checkout's enrichd instead of /opt/enrichd.
    local = unit.replace("/opt/enrichd/venv/bin/enrichd", str(Path(sys.executable).parent / "enrichd"))
    (tmp_path / "enrichd.service").write_text(local)
    result = subprocess.run([analyze, "verify", str(tmp_path / "enrichd.service")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "enrichd.service:" not in result.stderr, result.stderr


class Listener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []

    def collect(self, seconds: float) -> list[str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except socket.timeout:
                pass
        return [m for _, m in self.messages]

    def times(self, field: str) -> list[float]:
        return [t for t, m in self.messages if field in m.split("\n")]


def test_notifier_is_silent_without_socket_and_supports_abstract_names():
    Notifier({}).ready("nothing happens")
    listener = Listener(f"@enrichd-test-{os.getpid()}")
    Notifier({"NOTIFY_SOCKET": f"@enrichd-test-{os.getpid()}"}).ready("ok")
    assert listener.collect(0.5) == ["READY=1\nSTATUS=ok"]


def test_ready_status_watchdog_and_stopping(spool, tmp_path):
    path, config = spool()
    for i in range(3):
        (config.paths.inbox / f"backlog-{i}.txt").write_text("Agent: bonjour\nClient: SLOW-JOB ma box\n")
    listener = Listener(str(tmp_path / "notify.sock"))
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "1000000"}
    with running_daemon(path, env=env) as process:
        listener.collect(3)
        ready = [m for _, m in listener.messages if m.startswith("READY=1")]
        assert len(ready) == 1 and "3 waiting" in ready[0]
        assert any(m.startswith("STATUS=") for _, m in listener.messages[1:])
        pets = listener.times("WATCHDOG=1")
        assert len(pets) >= 3
        assert all(0.3 <= b - a <= 1.0 for a, b in zip(pets, pets[1:]))
        os.kill(process.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        listener.collect(2)
        assert not [t for t in listener.times("WATCHDOG=1") if t > stopped_at + 0.3]
        os.kill(process.pid, signal.SIGCONT)
        resumed_at = time.monotonic()
        listener.collect(1.5)
        assert [t for t in listener.times("WATCHDOG=1") if t > resumed_at]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    listener.collect(0.5)
    messages = [m for _, m in listener.messages]
    assert "STOPPING=1" in messages
    assert any(m.startswith("EXTEND_TIMEOUT_USEC=") for m in messages)
