"""sd_notify without a dependency: datagrams to $NOTIFY_SOCKET; a silent no-op when it is unset."""

from __future__ import annotations

import os
import socket
import time

from loguru import logger


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None
        self._last_watchdog = 0.0

    def send(self, *fields: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            logger.warning("sd_notify to {} failed: {}", self._address.replace("\0", "@"), exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def extend_timeout(self, seconds: float) -> None:
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def watchdog(self, healthy: bool) -> None:
        """Pet the watchdog at half its period, and only while everything it vouches for is healthy."""
        now = time.monotonic()
        if healthy and self.watchdog_interval and now - self._last_watchdog >= self.watchdog_interval:
            self.send("WATCHDOG=1")
            self._last_watchdog = now
