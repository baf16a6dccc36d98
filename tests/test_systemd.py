"""The systemd contract: the unit verifies, and sd_notify messages arrive when they should."""

from __future__ import annotations

import os
import re
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


UNITS = sorted((ROOT / "systemd").glob("*.service"))


def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed on this machine: the units are not checked here")
    return found


def local_unit(unit: Path, tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at this checkout's enrichd (verify checks that the binary exists)."""
    text = unit.read_text().replace("/opt/enrichd/venv/bin/enrichd", str(Path(sys.executable).parent / "enrichd"))
    (tmp_path / unit.name).write_text(text)
    return tmp_path / unit.name


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_file_verifies(unit, tmp_path):
    result = subprocess.run([analyze(), "verify", str(local_unit(unit, tmp_path))], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"{unit.name}:" not in result.stderr, result.stderr


# systemd-analyze's exposure per unit, as the hardening stands: a change that loosens the sandbox fails here
EXPOSURE = {"enrichd.service": 0.3, "enrichd-worker.service": 1.1}


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_exposure_stays_at_its_level(unit, tmp_path):
    threshold = int(EXPOSURE[unit.name] * 10)
    result = subprocess.run([analyze(), "security", "--offline=yes", f"--threshold={threshold}", str(local_unit(unit, tmp_path))],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    level = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout).group(1))
    assert level <= EXPOSURE[unit.name], result.stdout[-2000:]


def _expand(group: str) -> set[str]:
    out = subprocess.run([analyze(), "syscall-filter", group], capture_output=True, text=True, check=True).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        name = line.split("#")[0].strip()
        if name:
            names |= _expand(name) if name.startswith("@") else {name}
    return names


def allowed_calls(unit: Path) -> set[str]:
    """The unit's SystemCallFilter lines applied in order: an allow list, then removals (~) and additions."""
    allowed: set[str] = set()
    for line in unit.read_text().splitlines():
        if line.startswith("SystemCallFilter="):
            value = line.split("=", 1)[1]
            names = set().union(*(_expand(n) if n.startswith("@") else {n} for n in value.lstrip("~").split()))
            allowed = allowed - names if value.startswith("~") else allowed | names
    return allowed


def test_every_system_call_of_an_end_to_end_run_passes_the_units_filter(spool):
    """strace over a real run (supervisor, workers, test model); SQLite's fchown is left out: it calls it only
    when running as root, to give its journal the database's owner, which the unit's user never is."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed on this machine: the system-call filter is not checked here")
    from tests.conftest import SIMSAMU, wait_for
    from tests.test_end_to_end import short_srt

    path, config = spool({"workers": {"count": 1, "threads": 1}})
    trace = path.parent / "trace.txt"
    command = [strace, "-f", "-qq", "-o", str(trace), sys.executable, "-m", "daemon", "run", "--config", str(path)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (config.paths.inbox / "call.srt").write_text(short_srt(SIMSAMU / "dj_2022_msn.srt", 3))
        wait_for(lambda: (config.paths.outbox / "call.enriched.json").exists(), 300, interval=1, what="output under strace")
    finally:
        subprocess.run(["pkill", "-TERM", "-f", f"daemon run --config {path}"])
        process.wait(timeout=120)
    made = {m.group(1) for m in re.finditer(r"^\d+\s+([a-z0-9_]+)\(", trace.read_text(errors="replace"), re.MULTILINE)}
    if os.geteuid() == 0:
        made.discard("fchown")
    assert len(made) > 30
    assert made - allowed_calls(ROOT / "systemd" / "enrichd.service") == set()


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
